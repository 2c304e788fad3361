"""The image set the throughput benchmarks share: photo-like JPEGs in two layouts.

Photo-like, because decode cost depends on content: random crops (scale, aspect, flip, colour
jitter) of the real photographs that pip packages ship (preprocess/demo_sources.py), re-encoded as
JPEG quality 90 at `size` x `size`, the shape of a typical dataset of web images. Written once
to <out>/by_class/<class>/<n>.jpg (what keras.utils.image_dataset_from_directory and a PIL
loader read) and sharded by the project's own preprocessing job into <out>/shards_<side>/ (what the
pipelines read), where `side` is the longest side the shards store (the job's --max_side).
"""

from __future__ import annotations

import os
import random

from PIL import Image, ImageEnhance

from preprocess import demo_sources, writer
from preprocess.shard_options import ShardOptions

CLASSES = ("a", "b")


def _photo_crop(photo: Image.Image, size: int, rng: random.Random) -> Image.Image:
    width, height = photo.size
    side = int(min(width, height) * rng.uniform(0.35, 1.0))
    crop_w = min(width, int(side * rng.uniform(0.8, 1.25)))
    left, top = rng.randint(0, width - crop_w), rng.randint(0, height - side)
    image = photo.crop((left, top, left + crop_w, top + side)).resize((size, size), Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.6, 1.4))
    return ImageEnhance.Brightness(image).enhance(rng.uniform(0.75, 1.25))


def make_photos(out_dir: str, count: int, size: int = 256, seed: int = 0) -> list[tuple[str, int]]:
    """Writes `count` JPEGs (skipped when already there); returns [(path, label)] in a fixed order."""
    photos = [Image.open(path).convert("RGB") for files in demo_sources.photo_groups().values() for path in files]
    if not photos:
        raise RuntimeError("no photos found: install requirements-demo.txt (scikit-image, mvtb-data...)")
    rng = random.Random(seed)
    items = []
    for number in range(count):
        label = number % len(CLASSES)
        path = os.path.join(out_dir, "by_class", CLASSES[label], f"{number:06d}.jpg")
        photo = rng.choice(photos)
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            _photo_crop(photo, size, random.Random(rng.random())).save(path, quality=90)
        else:
            rng.random()  # keep the sequence the same whichever files exist
        items.append((path, label))
    return items


def shard_photos(items: list[tuple[str, int]], out_dir: str, max_side: int | None,
                 num_shards: int = 16, quiet: bool = True) -> str:
    """Shards every photo into the train split (no validation) with the preprocessing job's writer;
    returns the data dir. An unchanged set is not rewritten (the writer's fingerprint)."""
    data_dir = os.path.join(out_dir, f"shards_{max_side or 'original'}")
    labeled = [writer.Item(source=f"{path}:1", path=path, key=os.path.basename(path), labels=(label,), index=row)
               for row, (path, label) in enumerate(items)]
    inventory = writer.Inventory(task="benchmark", class_names=CLASSES, labeled=labeled, fixed={}, rejected=[],
                                 input_rows=len(items), metadata_files=())
    options = ShardOptions(num_shards=num_shards, val_fraction=0.0, max_side=max_side)
    writer.write_shards(inventory, data_dir, options, log=(lambda message: None) if quiet else print)
    return data_dir
