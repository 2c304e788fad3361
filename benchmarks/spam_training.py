"""Training images/s: the pipeline's TFRecord input against keras.utils.image_dataset_from_directory.

    python -m benchmarks.spam_training --raw_dir=demo_data/spam --data_dir=demo_data/spam_shards

Same model (the demo's `small` CNN), same images (the train split of the shards, linked into the
class-per-folder layout image_dataset_from_directory needs), same batch size and augmentation, one
process. Each input is timed alone (input only) and feeding model.fit, after one warm-up epoch.
Run `make demo` first to have the demo data and its shards.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from models import classifier  # noqa: E402
from pipelines.core import inputs  # noqa: E402
from pipelines.core.config import Config  # noqa: E402
from pipelines.spam import TASK  # noqa: E402
from preprocess import readers, writer  # noqa: E402


def class_folders(raw_dir: str, keys: list[str], labels, out_dir: str) -> str:
    """image_dataset_from_directory wants <dir>/<class>/<file>: symbolic links to the raw files."""
    for key, label in zip(keys, labels):
        folder = os.path.join(out_dir, readers.SPAM_CLASSES[int(label)])
        os.makedirs(folder, exist_ok=True)
        link = os.path.join(folder, key)
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(os.path.join(raw_dir, "train", "train_data", key)), link)
    return out_dir


def time_input(dataset, epochs: int) -> float:
    images = 0
    for _ in dataset:  # warm-up pass (file caches, tf.data autotuning)
        pass
    started = time.perf_counter()
    for _ in range(epochs):
        for batch, _labels in dataset:
            images += int(batch["image"].shape[0])
    return images / (time.perf_counter() - started)


def time_training(dataset, image_size: int, epochs: int) -> float:
    keras.utils.set_random_seed(0)
    model = classifier.build_image_classifier("small", len(readers.SPAM_CLASSES), image_size)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="categorical_crossentropy")
    model.fit(dataset, epochs=1, verbose=0)  # warm-up: tracing, autotuning
    images = sum(int(batch["image"].shape[0]) for batch, _ in dataset) * epochs
    started = time.perf_counter()
    model.fit(dataset, epochs=epochs, verbose=0)
    return images / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw_dir", default="demo_data/spam")
    parser.add_argument("--data_dir", default="demo_data/spam_shards")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workdir", default="/tmp/bench_training")
    args = parser.parse_args()

    manifest = writer.read_manifest(args.data_dir)
    paths = writer.shard_paths(args.data_dir, "train", manifest)
    truth = inputs.read_split(paths)
    keys, labels = truth.keys, truth.main_labels
    folders = class_folders(args.raw_dir, keys, labels, os.path.join(args.workdir, "by_class"))
    augmenter = inputs.make_augmenter(flip=True, zoom=0.2, shift=0.1, seed=0)
    size = args.image_size

    def pipeline(cache: bool):
        config = Config(image_size=size)
        return inputs.train_dataset(paths, lambda raw: TASK.features(raw, config),
                                    lambda record: TASK.target(record, config, len(readers.SPAM_CLASSES)),
                                    args.batch_size, len(keys), augmenter, seed=0, cache=cache)

    def from_directory():
        dataset = keras.utils.image_dataset_from_directory(
            folders, labels="inferred", label_mode="categorical", class_names=list(readers.SPAM_CLASSES),
            image_size=(size, size), batch_size=args.batch_size, shuffle=True, seed=0, verbose=False)
        dataset = dataset.map(lambda images, labels: ({"image": augmenter(images, training=True)}, labels),
                              num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.prefetch(tf.data.AUTOTUNE)

    candidates = {"pipeline (TFRecord shards)": lambda: pipeline(False),
                  "pipeline (TFRecord shards, --cache)": lambda: pipeline(True),
                  "image_dataset_from_directory": from_directory}
    results = {}
    for name, make in candidates.items():
        results[name] = {"input_only_images_per_s": round(time_input(make(), args.epochs), 1),
                         "training_images_per_s": round(time_training(make(), size, args.epochs), 1)}
        print(name, results[name], flush=True)
    os.makedirs(args.workdir, exist_ok=True)
    with open(os.path.join(args.workdir, "results.json"), "w") as handle:
        json.dump({"images": len(keys), "image_size": size, "batch_size": args.batch_size,
                   "cpus": os.cpu_count(), "results": results}, handle, indent=2)
    print(f"\n| input ({len(keys)} train images, {size} px, batch {args.batch_size}) "
          "| input only, images/s | training, images/s |\n|---|---|---|")
    for name, figures in results.items():
        print(f"| {name} | {figures['input_only_images_per_s']} | {figures['training_images_per_s']} |")


if __name__ == "__main__":
    main()
