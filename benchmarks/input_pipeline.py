"""Input throughput: our training input against the usual alternatives, on the same photos, in one run.

    .venv/bin/python -m benchmarks.input_pipeline [--images=5000 --image_size=224 --batch_size=32
        --repeats=3 --workdir=/tmp/bench_input --wait_quiet=60]

The set: --images photo-like 256x256 JPEGs (benchmarks/photo_set.py), written once. Every candidate
delivers (batch, 224, 224, 3) batches ready for the model's first layer, augmented the same way
(flip + zoom + shift, our batched window; the model casts uint8 itself, floats pass as they are):
1. ours: `pipelines.core.inputs.train_dataset` exactly as the pipelines call it, on shards that
   the preprocessing job stored at the model's size (`--max_side=224`), decoded images cached in
   memory (they fit: the pipelines' default); "ours, streamed" re-reads and decodes the shards
   every epoch (--nocache, what a split too big for the cache gets); "ours, original-size shards"
   resizes 256 -> 224 every epoch;
2. `keras.utils.image_dataset_from_directory` over the same JPEG files (shuffled, bilinear resize);
3. `tf.data.Dataset.from_generator` over PIL loading (open, convert, resize, numpy): what the
   original competition systems did;
4. the decode-only limit: an in-graph loop that only decodes the original JPEG files' bytes, one
   image after another on one core, times the number of cores.
Rates are images/s over whole epochs after one warm-up epoch; candidates take turns (--repeats)
and the median is kept. Also the peak memory (RSS) of streaming ours over 1x and 4x the data, each
in a fresh process. Ends with one JSON line: {"ours": ..., "image_dataset_from_directory": ...,
"pil_generator": ..., "decode_limit": ...} (images/s), plus the extra figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks import photo_set  # noqa: E402
from pipelines.core import inputs  # noqa: E402
from pipelines.core.config import Config  # noqa: E402
from pipelines.spam import TASK  # noqa: E402
from preprocess import writer  # noqa: E402

AUTOTUNE = tf.data.AUTOTUNE


def images_per_second(dataset: tf.data.Dataset, epochs: int = 1) -> float:
    """Whole passes after a warm-up pass (file cache, tf.data autotuning, a cache filled)."""
    for _ in dataset:
        pass
    count, started = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in dataset:
            images = batch[0]["image"] if isinstance(batch[0], dict) else batch[0]
            count += int(images.shape[0])
    return count / (time.perf_counter() - started)


def ours(data_dir: str, config: Config, augmenter, cache: bool, repeat_files: int = 1,
         epochs: int = 1) -> tf.data.Dataset:
    manifest = writer.read_manifest(data_dir)
    paths = writer.shard_paths(data_dir, "train", manifest) * repeat_files
    records = manifest["splits"]["train"]["records"] * repeat_files
    return inputs.train_dataset(paths, lambda raw: TASK.features(raw, config),
                                lambda record: TASK.target(record, config, len(photo_set.CLASSES)),
                                config.batch_size, records, augmenter, seed=0,
                                cache_max_bytes=2**40 if cache else 0, end_epoch=epochs)


def _augmented(dataset: tf.data.Dataset, augmenter) -> tf.data.Dataset:
    """The same batched augmentation as ours, on uint8 (as ours gets it)."""
    seeds = tf.data.Dataset.random(seed=0, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(dataset, seeds).map(
        lambda example, seed: (augmenter(tf.cast(tf.clip_by_value(tf.round(example[0]), 0, 255), tf.uint8), seed),
                               example[1]), num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def from_directory(folder: str, size: int, batch_size: int, augmenter) -> tf.data.Dataset:
    import keras

    dataset = keras.utils.image_dataset_from_directory(
        folder, labels="inferred", label_mode="categorical", image_size=(size, size),
        batch_size=batch_size, shuffle=True, seed=0, verbose=False)
    return _augmented(dataset, augmenter)


def pil_generator(items: list[tuple[str, int]], size: int, batch_size: int, augmenter) -> tf.data.Dataset:
    def load():
        for path, label in items:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
            yield pixels, label

    dataset = tf.data.Dataset.from_generator(load, output_signature=(
        tf.TensorSpec((size, size, 3), tf.uint8), tf.TensorSpec((), tf.int32)))
    return _augmented(dataset.shuffle(1024, seed=0).batch(batch_size, drop_remainder=True)
                      .map(lambda images, labels: (tf.cast(images, tf.float32), labels)), augmenter)


@tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
def _decode_all(encoded):
    def body(index, total):
        pixels = tf.io.decode_jpeg(encoded[index], channels=3)
        return index + 1, total + tf.cast(pixels[0, 0, 0], tf.int64)
    return tf.while_loop(lambda index, _: index < tf.shape(encoded)[0], body,
                         (tf.constant(0), tf.constant(0, tf.int64)), parallel_iterations=1)


def decode_limit(items: list[tuple[str, int]], count: int = 1000) -> float:
    """Decoding alone, one image after another in one graph loop (one core), times the cores."""
    contents = tf.constant([open(path, "rb").read() for path, _ in items[:count]])
    _decode_all(contents[:8])
    started = time.perf_counter()
    _decode_all(contents)
    return len(contents) / (time.perf_counter() - started) * os.cpu_count()


def peak_memory_mb(data_dir: str, size: int, batch_size: int, repeat_files: int) -> float:
    """Peak RSS growth of one pass of ours, streamed, over `repeat_files` x the shards (a fresh process)."""
    command = [sys.executable, "-m", "benchmarks.input_pipeline", "--memory_probe", data_dir,
               f"--image_size={size}", f"--batch_size={batch_size}", f"--repeat_files={repeat_files}"]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])["peak_growth_mb"]


def _memory_probe(args) -> None:
    """RSS sampled every 10 batches of one streamed pass, minus RSS after the first batch."""
    import psutil

    config = Config(image_size=args.image_size, batch_size=args.batch_size)
    dataset = ours(args.memory_probe, config, inputs.make_augmenter(True, 0.2, 0.1, 0), cache=False,
                   repeat_files=args.repeat_files)
    process = psutil.Process()
    baseline = peak = None
    for step, _ in enumerate(dataset):
        if step % 10 == 0:
            rss = process.memory_info().rss
            baseline = rss if baseline is None else baseline
            peak = max(peak or rss, rss)
    print(json.dumps({"peak_growth_mb": round((peak - baseline) / 2**20, 1), "batches": step + 1}))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--source_size", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default="/tmp/bench_input")
    parser.add_argument("--wait_quiet", type=float, default=60.0, help="Seconds to wait for an idle CPU first.")
    parser.add_argument("--skip_memory", action="store_true")
    parser.add_argument("--memory_probe", help=argparse.SUPPRESS)
    parser.add_argument("--repeat_files", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_probe:
        return _memory_probe(args)

    from benchmarks.preprocess_throughput import wait_for_quiet

    size = args.image_size
    items = photo_set.make_photos(args.workdir, args.images, args.source_size)
    stored_at_size = photo_set.shard_photos(items, args.workdir, max_side=size)
    stored_original = photo_set.shard_photos(items, args.workdir, max_side=None)
    config = Config(image_size=size, batch_size=args.batch_size)
    augmenter = inputs.make_augmenter(flip=True, zoom=0.2, shift=0.1, seed=0)
    folder = os.path.join(args.workdir, "by_class")
    candidates = {
        "ours": lambda: ours(stored_at_size, config, augmenter, cache=True),
        "ours_streamed": lambda: ours(stored_at_size, config, augmenter, cache=False),
        "ours_original_size_shards": lambda: ours(stored_original, config, augmenter, cache=False),
        "ours_without_augmentation": lambda: ours(stored_at_size, config, None, cache=True),
        "image_dataset_from_directory": lambda: from_directory(folder, size, args.batch_size, augmenter),
        "pil_generator": lambda: pil_generator(items, size, args.batch_size, augmenter),
    }
    quiet = wait_for_quiet(args.wait_quiet)
    print(f"{len(items)} images {args.source_size}x{args.source_size} -> {size} px, batch {args.batch_size}, "
          f"{os.cpu_count()} cores; CPU before start: {quiet}", flush=True)
    rates: dict[str, list[float]] = {name: [] for name in candidates}
    limits = []
    for repeat in range(args.repeats):
        for name, make in candidates.items():
            rates[name].append(images_per_second(make()))
            print(f"  round {repeat + 1}: {name} {rates[name][-1]:,.0f} images/s", flush=True)
        limits.append(decode_limit(items))
        print(f"  round {repeat + 1}: decode_limit {limits[-1]:,.0f} images/s", flush=True)
    results = {name: round(statistics.median(values), 1) for name, values in rates.items()}
    results["decode_limit"] = round(statistics.median(limits), 1)
    if not args.skip_memory:
        for repeat_files in (1, 4):
            results[f"streamed_peak_memory_mb_{repeat_files}x"] = peak_memory_mb(
                stored_at_size, size, args.batch_size, repeat_files)

    print(f"\n| input ({len(items)} photos, {size} px, batch {args.batch_size}, {os.cpu_count()} cores) "
          "| images/s | ours / it |\n|---|---|---|")
    for name in list(candidates) + ["decode_limit"]:
        print(f"| {name} | {results[name]:,.0f} | {results['ours'] / results[name]:.2f} |")
    for key in sorted(key for key in results if key.startswith("streamed_peak")):
        print(f"{key}: {results[key]} MB")
    summary = {"ours": results["ours"], "image_dataset_from_directory": results["image_dataset_from_directory"],
               "pil_generator": results["pil_generator"], "decode_limit": results["decode_limit"]}
    os.makedirs(args.workdir, exist_ok=True)
    with open(os.path.join(args.workdir, "results.json"), "w") as handle:
        json.dump({"images": len(items), "image_size": size, "batch_size": args.batch_size,
                   "cpus": os.cpu_count(), "quiet": quiet, "rounds": rates, "results": results}, handle, indent=2)
    print(json.dumps({**summary, **{key: value for key, value in results.items() if key not in summary}}))


if __name__ == "__main__":
    main()
