"""Demo data in each task's real raw layout: small, deterministic by seed, with a learnable signal.

`python -m preprocess.demo --task=spam|stickers|memes|products|all --out=DIR [--seed=0 --scale=1]
[--kind=realistic|generated]`

Two kinds. "generated": images drawn with numpy + Pillow, no source files needed; spam classes look
like the real ones (photo-like scenes, near-uniform colour, rendered app screens, flat artwork) but are
easy to tell apart. The tests use it (`make_demo`'s default). "realistic" (every task, the
CLI's default and so `make demo`'s): preprocess/realistic_demo.py builds the spam layout from real
photos, app screenshots, icons and emoji that pip packages ship, because a recipe that scored 0.99 on
generated data scored 0.68 on real images; preprocess/realistic_stickers.py builds the stickers layout
from real Twemoji art with real multi-tags from the Unicode emoji metadata, in whole packages;
preprocess/realistic_memes.py builds the memes layout from real photos, emoji and standard-library
sentences with a label that only the picture and the caption together decide;
preprocess/realistic_products.py builds both products layouts (training styles.csv + images, target
products + category names + labels) from real Twemoji and photos and real words, under target
category names that differ from the training classes. Only numpy, Pillow and the standard library
are imported.
"""

from __future__ import annotations

import argparse
import csv
import io
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from preprocess import demo_sources, realistic_demo, realistic_memes, realistic_products, realistic_stickers

TASKS = ("spam", "stickers", "memes", "products")


# --- spam ----------------------------------------------------------------------------------------

SPAM_MIX = {0: 0.45, 1: 0.15, 2: 0.15, 3: 0.25}  # normal, monotone, screenshot, unknown


def _colour(rng, low=0, high=256):
    return tuple(int(value) for value in rng.integers(low, high, 3))


def _photo(rng, size):
    """Smooth sky/ground gradients, soft blobs and sensor noise."""
    width, height = size
    horizon = rng.uniform(0.3, 0.7) * height
    rows = np.arange(height)[:, None, None]
    sky_top, sky_low = np.array(_colour(rng, 60, 255)), np.array(_colour(rng, 60, 255))
    ground_top, ground_low = np.array(_colour(rng, 20, 200)), np.array(_colour(rng, 0, 160))
    sky = sky_top + (sky_low - sky_top) * (rows / max(horizon, 1))
    ground = ground_top + (ground_low - ground_top) * ((rows - horizon) / max(height - horizon, 1))
    pixels = np.where(rows < horizon, sky, ground) * np.ones((1, width, 1))
    layer = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(layer)
    for _ in range(rng.integers(3, 8)):
        centre = rng.uniform(0, 1, 2) * (width, height)
        radius = rng.uniform(0.05, 0.25) * width
        draw.ellipse([*(centre - radius), *(centre + radius)], fill=_colour(rng, 0, 230))
    layer = layer.filter(ImageFilter.GaussianBlur(rng.uniform(2.0, 5.0)))
    noisy = np.asarray(layer, np.float64) + rng.normal(0, rng.uniform(4, 10), (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _monotone(rng, size):
    """One colour, a faint gradient or vignette, a little noise."""
    width, height = size
    base = np.array(_colour(rng), np.float64)
    ys, xs = np.mgrid[0:height, 0:width]
    shade = rng.uniform(-12, 12) * (ys / height - 0.5)
    if rng.random() < 0.4:
        shade = shade - rng.uniform(5, 20) * (((xs / width - 0.5) ** 2 + (ys / height - 0.5) ** 2) * 2)
    pixels = base + shade[..., None] + rng.normal(0, rng.uniform(0.5, 3), (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _screenshot(rng, size):
    """A phone/app screen: status bar, rows of text-like strokes, buttons or chat bubbles."""
    width, height = size
    dark = rng.random() < 0.3
    background = _colour(rng, 15, 45) if dark else _colour(rng, 225, 256)
    ink = _colour(rng, 190, 240) if dark else _colour(rng, 20, 90)
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    bar = int(rng.integers(7, 13))
    draw.rectangle([0, 0, width, bar], fill=_colour(rng, 0, 256))
    y = bar + int(rng.integers(3, 8))
    chat = rng.random() < 0.4
    while y < height - 6:
        if chat:
            left = rng.random() < 0.5
            bubble_width = int(rng.uniform(0.3, 0.7) * width)
            x0 = 4 if left else width - 4 - bubble_width
            bubble_height = int(rng.integers(10, 20))
            draw.rounded_rectangle([x0, y, x0 + bubble_width, y + bubble_height], radius=4,
                                   fill=_colour(rng, 120, 256))
            for line_y in range(y + 3, y + bubble_height - 3, 5):
                draw.rectangle([x0 + 3, line_y, x0 + int(rng.uniform(0.4, 0.95) * bubble_width), line_y + 1],
                               fill=ink)
            y += bubble_height + int(rng.integers(3, 7))
        elif rng.random() < 0.2:
            draw.rounded_rectangle([6, y, width - 6, y + 12], radius=3, fill=_colour(rng, 0, 256))
            y += 17
        else:
            x = 6
            while x < width - 12:
                word = int(rng.integers(4, 18))
                draw.rectangle([x, y, min(x + word, width - 6), y + 2], fill=ink)
                x += word + int(rng.integers(2, 5))
            y += int(rng.integers(6, 10))
    return image


def _artwork(rng, size):
    """Flat, saturated shapes with hard edges and outlines (cartoons, logos, patterns)."""
    width, height = size
    image = Image.new("RGB", size, _colour(rng))
    draw = ImageDraw.Draw(image)
    if rng.random() < 0.35:
        stripe = int(rng.integers(6, 18))
        colour = _colour(rng)
        for offset in range(-height, width, 2 * stripe):
            draw.polygon([(offset, 0), (offset + stripe, 0), (offset + stripe + height, height),
                          (offset + height, height)], fill=colour)
    for _ in range(rng.integers(2, 6)):
        points = [tuple(point) for point in (rng.uniform(0, 1, (int(rng.integers(3, 7)), 2)) * (width, height))]
        outline = (0, 0, 0) if rng.random() < 0.6 else None
        if rng.random() < 0.5:
            box = sorted(rng.uniform(0, width, 2)), sorted(rng.uniform(0, height, 2))
            draw.ellipse([box[0][0], box[1][0], box[0][1] + 4, box[1][1] + 4], fill=_colour(rng),
                         outline=outline, width=3)
        else:
            draw.polygon(points, fill=_colour(rng), outline=outline, width=3)
    return image


SPAM_DRAW = {0: _photo, 1: _monotone, 2: _screenshot, 3: _artwork}


def _spam_size(rng):
    """Mostly 128x128, like the real 256x256 majority (scaled down), some other shapes."""
    if rng.random() < 0.8:
        return (128, 128)
    return [(96, 128), (160, 120), (128, 96)][int(rng.integers(0, 3))]


def _save(image: Image.Image, path: str, fmt: str) -> None:
    if fmt == "jpg":
        image.save(path, format="JPEG", quality=90)
    elif fmt == "png":
        image.save(path, format="PNG")
    else:
        image.convert("P", palette=Image.Palette.ADAPTIVE).save(path, format="GIF")


def _animated_gif(rng, size, path):
    frames = [SPAM_DRAW[3](rng, size).convert("P", palette=Image.Palette.ADAPTIVE) for _ in range(3)]
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _spam_labels(rng, count):
    classes = np.array(sorted(SPAM_MIX))
    counts = np.floor(np.array([SPAM_MIX[label] for label in classes]) * count).astype(int)
    counts[0] += count - counts.sum()
    labels = np.repeat(classes, counts)
    rng.shuffle(labels)
    return labels.tolist()


def make_spam(out_dir, rng, scale):
    train_dir = os.path.join(out_dir, "train", "train_data")
    test_dir = os.path.join(out_dir, "test", "test_data")
    os.makedirs(train_dir, exist_ok=True)
    os.makedirs(test_dir, exist_ok=True)
    labeled = _spam_labels(rng, max(int(800 * scale), 40))
    unlabeled = _spam_labels(rng, max(int(400 * scale), 8))
    test = _spam_labels(rng, max(int(200 * scale), 20))

    def write(directory, labels, prefix):
        rows = []
        for index, label in enumerate(labels):
            roll = rng.random()
            fmt = "gif" if roll < 0.02 else "png" if roll < 0.17 else "jpg"
            name = f"{prefix}_{index:06d}.{fmt}"
            _save(SPAM_DRAW[label](rng, _spam_size(rng)), os.path.join(directory, name), fmt)
            rows.append((name, label))
        return rows

    train_rows = write(train_dir, labeled, "img")
    train_rows += [(name, -1) for name, _ in write(train_dir, unlabeled, "u")]
    test_rows = write(test_dir, test, "test")
    _animated_gif(rng, (128, 128), os.path.join(test_dir, "anim_0000.gif"))
    test_rows.append(("anim_0000.gif", 3))
    broken = io.BytesIO()
    _photo(rng, (128, 128)).save(broken, format="JPEG", quality=90)
    with open(os.path.join(test_dir, "corrupt_0000.jpg"), "wb") as handle:
        handle.write(broken.getvalue()[:400])
    test_rows.append(("corrupt_0000.jpg", 0))
    _write_table(os.path.join(out_dir, "train", "train_label"), ("filename", "annotation"), train_rows)
    _write_table(os.path.join(out_dir, "test", "test_label"), ("filename", "annotation"), test_rows)
    return {"train_labeled": len(labeled), "unlabeled": len(unlabeled), "test": len(test_rows)}


# --- stickers ------------------------------------------------------------------------------------

STICKER_TAGS = ("happy", "sad", "love", "angry", "sleepy", "thanks", "sorry", "ok", "hello", "bye",
                "laugh", "surprised")
_SHAPES = ("circle", "square", "triangle", "diamond")


def _sticker(rng, tags, size=72):
    """Transparent background; the main tag picks shape and colour family, secondary tags add dots."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    main = tags[0]
    hue = np.array(_TAG_COLOURS[main]) + rng.integers(-25, 26, 3)
    fill = tuple(int(value) for value in np.clip(hue, 0, 255)) + (255,)
    margin = int(rng.integers(6, 14))
    box = [margin, margin, size - margin, size - margin]
    shape = _SHAPES[main % len(_SHAPES)]
    if shape == "circle":
        draw.ellipse(box, fill=fill, outline=(0, 0, 0, 255), width=2)
    elif shape == "square":
        draw.rounded_rectangle(box, radius=8, fill=fill, outline=(0, 0, 0, 255), width=2)
    elif shape == "triangle":
        draw.polygon([(size / 2, margin), (size - margin, size - margin), (margin, size - margin)],
                     fill=fill, outline=(0, 0, 0, 255))
    else:
        draw.polygon([(size / 2, margin), (size - margin, size / 2), (size / 2, size - margin),
                      (margin, size / 2)], fill=fill, outline=(0, 0, 0, 255))
    for corner, tag in enumerate(tags[1:]):
        x = 4 if corner == 0 else size - 16
        draw.ellipse([x, 4, x + 12, 16], fill=tuple(_TAG_COLOURS[tag]) + (255,))
    return image


_TAG_COLOURS = [tuple(int(value) for value in np.random.default_rng(1000 + index).integers(0, 256, 3))
                for index in range(len(STICKER_TAGS))]


def make_stickers(out_dir, rng, scale):
    train_dir = os.path.join(out_dir, "train", "train_data")
    test_dir = os.path.join(out_dir, "test", "test_data")
    tag_ids = [101 + index for index in range(len(STICKER_TAGS))]
    popularity = np.linspace(3, 1, len(tag_ids))
    popularity /= popularity.sum()

    def write(directory, count, first_package):
        rows = []
        for index in range(count):
            package = first_package + index // 20
            sticker = 5000 + first_package * 100 + index
            count_tags = int(rng.integers(1, 4))
            tags = list(dict.fromkeys(rng.choice(len(tag_ids), count_tags, p=popularity).tolist()))
            folder = os.path.join(directory, "images", str(package))
            os.makedirs(folder, exist_ok=True)
            _sticker(rng, tags).save(os.path.join(folder, f"{sticker}.png"), format="PNG")
            rows.append((package, sticker, ",".join(str(tag_ids[tag]) for tag in tags)))
        return rows

    train_rows = write(train_dir, max(int(600 * scale), 24), 1)
    test_rows = write(test_dir, max(int(120 * scale), 12), 900)
    _write_table(os.path.join(train_dir, "train_with_valid_tags.csv"), ("package_id", "sticker_id", "tags"),
                 train_rows)
    _write_table(os.path.join(test_dir, "test.csv"), ("package_id", "sticker_id", "tags"), test_rows)
    with open(os.path.join(train_dir, "tag.tsv"), "w", newline="") as handle:
        handle.write("tag\tkeywords\tlanguages\tname\n")
        for tag, name in zip(tag_ids, STICKER_TAGS):
            handle.write(f"{tag}\t{name},{name}!\ten,ja\t{name}\n")
    return {"train": len(train_rows), "test": len(test_rows), "tags": len(tag_ids)}


# --- memes ---------------------------------------------------------------------------------------

_HATEFUL_WORDS = ("vile", "grubs", "vermin", "filthy", "scum", "parasites")
_BENIGN_WORDS = ("sunny", "friends", "puppy", "garden", "picnic", "music")
_FILLER = ("when", "you", "the", "they", "see", "my", "all", "those", "people", "today", "again", "look")


def _meme(rng, label):
    """Caption and image each predict the label ~75% of the time, together more."""
    word_cue = label if rng.random() < 0.75 else 1 - label
    image_cue = label if rng.random() < 0.75 else 1 - label
    words = list(rng.choice(_FILLER, int(rng.integers(3, 10))))
    cue_words = _HATEFUL_WORDS if word_cue else _BENIGN_WORDS
    words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(cue_words)))
    text = " ".join(words)
    if rng.random() < 0.15:
        text = f'{words[0]}, "{" ".join(words[1:])}"'
    base = np.array((150, 40, 40) if image_cue else (40, 90, 150), np.float64)
    pixels = base + rng.normal(0, 30, (64, 64, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        corner = rng.uniform(0, 48, 2)
        draw.rectangle([*corner, *(corner + rng.uniform(8, 16, 2))], fill=_colour(rng))
    return image, text


def make_memes(out_dir, rng, scale):
    os.makedirs(os.path.join(out_dir, "img"), exist_ok=True)
    counts = {"train": max(int(500 * scale), 20), "dev": max(int(100 * scale), 10),
              "test": max(int(100 * scale), 10)}
    next_id = 0
    for split, count in counts.items():
        rows = []
        for _ in range(count):
            label = int(rng.random() < 0.35)
            image, text = _meme(rng, label)
            meme_id = f"{next_id:05d}"
            next_id += 1
            image.save(os.path.join(out_dir, "img", f"{meme_id}.png"), format="PNG")
            rows.append((meme_id, f"img/{meme_id}.png", label, text))
        _write_table(os.path.join(out_dir, f"{split}.csv"), ("id", "img", "label", "text"), rows)
    return counts


# --- products ------------------------------------------------------------------------------------

PRODUCT_CLASSES = {
    "Topwear": ("Tshirt", "Shirt", "Top"), "Bottomwear": ("Jeans", "Trousers", "Shorts"),
    "Shoes": ("Running Shoes", "Sneakers", "Sandals"), "Watches": ("Watch", "Chronograph", "Smartwatch"),
    "Bags": ("Handbag", "Backpack", "Tote Bag"), "Eyewear": ("Sunglasses", "Aviators", "Frames"),
    "Jewellery": ("Necklace", "Earrings", "Ring"), "Headwear": ("Cap", "Hat", "Beanie"),
}
TARGET_CATEGORIES = ("Footwear", "Clothing", "Accessories", "Timepieces", "Sunglasses")
_BRANDS = ("Nike", "Puma", "Roadster", "Fastrack", "Titan", "Lavie", "Adidas", "Wrogn")
_COLOURS = {"Blue": (40, 70, 170), "Black": (30, 30, 30), "Red": (180, 40, 40), "White": (235, 235, 235),
            "Green": (40, 140, 60), "Brown": (120, 80, 40)}


def _product_image(rng, category, colour):
    """A 60x80 class-typical silhouette on a light background."""
    image = Image.new("RGB", (60, 80), _colour(rng, 225, 256))
    draw = ImageDraw.Draw(image)
    fill = tuple(int(value) for value in np.clip(np.array(colour) + rng.integers(-20, 21, 3), 0, 255))
    shapes = {
        "Topwear": lambda: draw.polygon([(10, 20), (22, 12), (38, 12), (50, 20), (45, 30), (40, 27),
                                         (40, 65), (20, 65), (20, 27), (15, 30)], fill=fill),
        "Bottomwear": lambda: draw.polygon([(18, 10), (42, 10), (46, 70), (34, 70), (30, 30), (26, 70),
                                            (14, 70)], fill=fill),
        "Shoes": lambda: draw.polygon([(6, 50), (30, 45), (54, 55), (54, 62), (6, 62)], fill=fill),
        "Watches": lambda: (draw.rectangle([25, 5, 35, 75], fill=(60, 60, 60)),
                            draw.ellipse([15, 28, 45, 58], fill=fill, outline=(0, 0, 0), width=2)),
        "Bags": lambda: (draw.arc([18, 12, 42, 40], 180, 360, fill=(0, 0, 0), width=3),
                         draw.rectangle([10, 26, 50, 66], fill=fill)),
        "Eyewear": lambda: (draw.ellipse([6, 32, 28, 48], fill=fill), draw.ellipse([32, 32, 54, 48], fill=fill),
                            draw.line([28, 38, 32, 38], fill=(0, 0, 0), width=2)),
        "Jewellery": lambda: (draw.arc([12, 10, 48, 55], 0, 180, fill=fill, width=3),
                              draw.ellipse([26, 52, 34, 60], fill=fill)),
        "Headwear": lambda: (draw.chord([10, 20, 50, 60], 180, 360, fill=fill),
                             draw.rectangle([8, 39, 52, 43], fill=fill)),
    }
    shapes[category]()
    return image


def _product(rng, category):
    colour_name = str(rng.choice(list(_COLOURS)))
    kind = str(rng.choice(PRODUCT_CLASSES[category]))
    gender = str(rng.choice(("Men", "Women", "Unisex")))
    text = f"{rng.choice(_BRANDS)} {gender} {colour_name} {kind}"
    return _product_image(rng, category, _COLOURS[colour_name]), text, gender, colour_name, kind


def make_products(out_dir, rng, scale):
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "target", "images"), exist_ok=True)
    categories = sorted(PRODUCT_CLASSES)
    rows = []
    for index in range(max(int(600 * scale), 24)):
        category = categories[int(rng.integers(0, len(categories)))]
        image, text, gender, colour_name, kind = _product(rng, category)
        product_id = 10000 + index
        image.save(os.path.join(out_dir, "images", f"{product_id}.jpg"), format="JPEG", quality=90)
        rows.append((product_id, gender, "Apparel", category, kind, colour_name, "Summer", 2012, "Casual", text))
    header = ("id", "gender", "masterCategory", "subCategory", "articleType", "baseColour", "season",
              "year", "usage", "productDisplayName")
    path = os.path.join(out_dir, "styles.csv")
    _write_table(path, header, rows)
    with open(path, "a") as handle:  # like the real file: a name with an unquoted comma
        handle.write(f"{10000 + len(rows)},Men,Apparel,Topwear,Tshirt,Blue,Summer,2012,Casual,"
                     "Roadster Men Blue, Slim Tshirt\n")
    target_rows = []
    for index in range(max(int(150 * scale), 10)):
        category = categories[int(rng.integers(0, len(categories)))]
        image, text, *_ = _product(rng, category)
        name = f"images/t{index:04d}.jpg"
        image.save(os.path.join(out_dir, "target", name), format="JPEG", quality=90)
        target_rows.append((f"t{index:04d}", name, text))
    _write_table(os.path.join(out_dir, "target", "products.csv"), ("id", "image", "text"), target_rows)
    with open(os.path.join(out_dir, "target", "categories.txt"), "w") as handle:
        handle.write("\n".join(TARGET_CATEGORIES) + "\n")
    return {"train": len(rows) + 1, "target": len(target_rows), "target_categories": len(TARGET_CATEGORIES)}


# --- shared --------------------------------------------------------------------------------------

def _write_table(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


MAKERS = {"spam": make_spam, "stickers": make_stickers, "memes": make_memes, "products": make_products}
KINDS = ("generated", "realistic")
REALISTIC_TASKS = ("spam", "stickers", "memes", "products")
REALISTIC_MAKERS = {"spam": realistic_demo.make_spam, "stickers": realistic_stickers.make_stickers,
                    "memes": realistic_memes.make_memes, "products": realistic_products.make_products}


def make_demo(task: str, out_dir: str, seed: int = 0, scale: float = 1.0, kind: str = "generated") -> dict:
    """Writes one task's demo layout into out_dir; returns counts. Same seed (and, for "realistic",
    same installed source packages), same bytes. The default stays "generated": the tests rely on it."""
    if task not in MAKERS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
    if kind == "realistic" and task not in REALISTIC_TASKS:
        raise ValueError(f"no realistic demo data for {task!r}; only for {', '.join(REALISTIC_TASKS)}")
    os.makedirs(out_dir, exist_ok=True)
    if kind == "realistic":
        return REALISTIC_MAKERS[task](out_dir, np.random.default_rng([seed, TASKS.index(task), 1]), scale)
    rng = np.random.default_rng([seed, TASKS.index(task)])
    counts = MAKERS[task](out_dir, rng, scale)
    if task == "spam":
        realistic_demo.remove_stale(out_dir, manifest=False)
    elif task == "stickers":  # a realistic set written here before leaves images and sources.csv
        realistic_stickers.remove_stale(out_dir, manifest=False)
    elif task == "memes":  # a realistic set written here before leaves images, test_labels.csv, sources.csv
        realistic_memes.remove_stale(out_dir, manifest=False)
    elif task == "products":  # a realistic set leaves images, class_map.csv, sources.csv, target/labels.csv
        realistic_products.remove_stale(out_dir, manifest=False)
    return counts


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=TASKS + ("all",))
    parser.add_argument("--out", required=True, help="output directory (DIR/<task> with --task=all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the number of images")
    parser.add_argument("--kind", choices=KINDS, default="realistic",
                        help="realistic: real images from pip packages, for the tasks that have it (spam, "
                             "stickers, memes, products); "
                             "the others are always generated. generated: drawn images, as the tests use")
    args = parser.parse_args(argv)
    tasks = TASKS if args.task == "all" else (args.task,)
    for task in tasks:
        out_dir = os.path.join(args.out, task) if args.task == "all" else args.out
        kind = args.kind if task in REALISTIC_TASKS else "generated"
        try:
            counts = make_demo(task, out_dir, args.seed, args.scale, kind)
        except demo_sources.MissingSources as error:  # say which package, and the way out
            parser.exit(2, f"demo {task}: {error}\n(or use --kind=generated)\n")
        print(f"demo {task} ({kind}): wrote {counts} to {out_dir}")


if __name__ == "__main__":
    main()
