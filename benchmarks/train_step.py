"""Is training input-bound? `model.fit` images/s fed three ways, and where the time between epochs goes.

    .venv/bin/python -m benchmarks.train_step [--images=640 --image_size=224 --batch_size=32
        --epochs=3 --backbones=tiny,efficientnet_lite0 --load=0 --workdir=/tmp/bench_train_step]

Same model, optimizer, loss and batches of the same photos (benchmarks/photo_set.py), fed by:
1. ours: `inputs.train_dataset` as the pipelines use it (shards stored at the model size, decoded
   images cached after the first epoch, batched augmentation, all epochs in one dataset);
   ours_old_pattern: the same input as it was used before 2026-11-30 (a new iterator every epoch,
   a half-read one dropped at the start: the epoch-boundary stall);
2. in_memory: ONE batch of ours held in memory and repeated: no input cost at all, the ceiling;
3. image_dataset_from_directory over the same JPEG files, with the same augmentation.
ours / in_memory says whether training waits for its input (aim >= 0.95); ours / the Keras
utility must never be below 1. Each feed trains one warm-up epoch (tracing), then a fresh feed
--epochs epochs: images/s over the epochs after the first (caches filled), and over the whole fit.

A callback clocks every step: the table also gives the first step of each timed epoch against the
median step and the gap between one epoch's last step and the next one's first (the epoch
boundary: iterator teardown and start, refilling the shuffle buffer). `--load=N` runs N busy
processes beside the benchmark, the setting in which a 10-40 s stall at epoch boundaries was seen.
Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import photo_set  # noqa: E402
from benchmarks.input_pipeline import from_directory, ours  # noqa: E402
from models import classifier  # noqa: E402
from pipelines.core import inputs  # noqa: E402
from pipelines.core.config import Config  # noqa: E402


class StepClock(keras.callbacks.Callback):
    """Wall-clock times of every training step and epoch boundary."""

    def __init__(self):
        super().__init__()
        self.epochs: list[dict] = []

    def on_train_begin(self, logs=None):
        self.train_begin = time.perf_counter()

    def on_train_end(self, logs=None):
        self.train_end = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append({"begin": time.perf_counter(), "steps": []})

    def on_train_batch_begin(self, batch, logs=None):
        self._step_started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        self.epochs[-1]["steps"].append((self._step_started, now))

    def on_epoch_end(self, epoch, logs=None):
        self.epochs[-1]["end"] = time.perf_counter()


def in_memory(dataset: tf.data.Dataset) -> tf.data.Dataset:
    batch = dataset.take(1).get_single_element()  # in-graph: no half-read iterator left behind
    return tf.data.Dataset.from_tensors(batch).repeat().prefetch(2)


def old_pattern(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Ours as it was before 2026-11-30: a dataset that ends every epoch (Keras builds a new
    iterator per epoch) and a half-read iterator dropped at the start (the sample images)."""
    next(iter(dataset))
    return dataset


def measure(build, make_feed, epochs: int, steps: int, batch_size: int) -> dict:
    """Warm-up on a feed of its own (a fit that stops before its dataset ends pays for tearing the
    iterator down), then the timed fit; the time before its first epoch and after its last step
    (iterator start and teardown) is reported apart."""
    keras.utils.set_random_seed(0)
    model = build()
    model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss="categorical_crossentropy")
    model.fit(make_feed(1), epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)  # tracing
    clock = StepClock()
    collected = time.perf_counter()
    gc.collect()  # the warm-up's iterator is torn down here, not inside the timed fit
    collected = time.perf_counter() - collected
    feed = make_feed(epochs)
    started = time.perf_counter()
    model.fit(feed, epochs=epochs, steps_per_epoch=steps, verbose=0, shuffle=False, callbacks=[clock])
    returned = time.perf_counter()
    durations = [end - begin for epoch in clock.epochs for begin, end in epoch["steps"]]
    first_steps = [epoch["steps"][0][1] - epoch["begin"] for epoch in clock.epochs]
    boundaries = [later["steps"][0][1] - earlier["steps"][-1][1]
                  for earlier, later in zip(clock.epochs, clock.epochs[1:])]
    later = clock.epochs[1:] or clock.epochs  # after the first epoch: caches filled
    steady = len(later) * steps * batch_size / (later[-1]["end"] - later[0]["begin"])
    return {"images_per_s": round(steady, 1),
            "whole_fit_images_per_s": round(epochs * steps * batch_size / (returned - started), 1),
            "median_step_s": round(statistics.median(durations), 4),
            "first_step_of_epoch_s": [round(value, 3) for value in first_steps],
            "epoch_boundary_s": [round(value, 3) for value in boundaries],
            "fit_start_s": round(clock.epochs[0]["begin"] - started, 3),
            "fit_end_s": round(returned - clock.epochs[-1]["steps"][-1][1], 3),
            "gc_before_s": round(collected, 3)}


def _busy(stop_at: float) -> None:
    while time.time() < stop_at:
        sum(range(10_000))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--backbones", default="tiny,efficientnet_lite0")
    parser.add_argument("--load", type=int, default=0, help="Busy processes beside the benchmark.")
    parser.add_argument("--workdir", default="/tmp/bench_train_step")
    args = parser.parse_args(argv)

    size, batch_size = args.image_size, args.batch_size
    items = photo_set.make_photos(args.workdir, args.images, size=max(256, size))
    shards = photo_set.shard_photos(items, args.workdir, max_side=size, num_shards=8)
    config = Config(image_size=size, batch_size=batch_size)
    augmenter = inputs.make_augmenter(flip=True, zoom=0.2, shift=0.1, seed=0)
    steps = len(items) // batch_size
    loaders = []
    if args.load:
        stop_at = time.time() + 24 * 3600
        loaders = [multiprocessing.Process(target=_busy, args=(stop_at,), daemon=True) for _ in range(args.load)]
        for process in loaders:
            process.start()
    print(f"{len(items)} photos at {size} px, batch {batch_size}, {args.epochs} timed epochs of {steps} steps, "
          f"{os.cpu_count()} cores, {args.load} busy process(es) beside", flush=True)

    def strip_labels_to_images(dataset):  # idfd yields (images, labels); the model takes a dict
        return dataset.map(lambda images, labels: ({"image": images}, labels))

    feeds = {
        "ours": lambda epochs: ours(shards, config, augmenter, cache=True, epochs=epochs),
        "ours_old_pattern": lambda epochs: old_pattern(ours(shards, config, augmenter, cache=True)),
        "in_memory": lambda epochs: in_memory(ours(shards, config, augmenter, cache=True)),
        "image_dataset_from_directory": lambda epochs: strip_labels_to_images(
            from_directory(os.path.join(args.workdir, "by_class"), size, batch_size, augmenter)),
    }
    results = {}
    try:
        for backbone in args.backbones.split(","):
            def build(backbone=backbone):
                return classifier.build_image_classifier(backbone, len(photo_set.CLASSES), size)
            for name, make in feeds.items():
                results[f"{backbone}/{name}"] = figures = measure(build, make, args.epochs, steps, batch_size)
                print(f"  {backbone} fed by {name}: {figures}", flush=True)
    finally:
        for process in loaders:
            process.terminate()

    print(f"\n| model, fed by ({size} px, batch {batch_size}, {os.cpu_count()} cores, load {args.load}) "
          "| images/s | / in-memory | whole fit, images/s | median step s | first step of an epoch s "
          "| epoch boundary s | fit end s |\n|---|---|---|---|---|---|---|---|")
    for key, figures in results.items():
        ceiling = results[key.split("/")[0] + "/in_memory"]["images_per_s"]
        print(f"| {key} | {figures['images_per_s']:,.1f} | {figures['images_per_s'] / ceiling:.2f} | "
              f"{figures['whole_fit_images_per_s']:,.1f} | {figures['median_step_s']} | "
              f"{max(figures['first_step_of_epoch_s'])} | {max(figures['epoch_boundary_s'], default=0)} | "
              f"{figures['fit_end_s']} |")
    os.makedirs(args.workdir, exist_ok=True)
    with open(os.path.join(args.workdir, "results.json"), "w") as handle:
        json.dump({"images": len(items), "image_size": size, "batch_size": batch_size, "load": args.load,
                   "cpus": os.cpu_count(), "results": results}, handle, indent=2)
    print(json.dumps({key: figures["images_per_s"] for key, figures in results.items()}))


if __name__ == "__main__":
    main()
