"""Sharding throughput and memory: the preprocessing job against a plain single-process loop.

    python -m benchmarks.preprocess_throughput [--images=5000 --big=50000 --workdir=/tmp/bench_preprocess]

1. Images/s of `python -m preprocess.spam` (all cores) against a loop of Pillow validation + one
   tf.io.TFRecordWriter, on the same generated 256x256 JPEGs, both as subprocesses in one run.
2. The job's peak RSS (parent, and its workers summed) at --images and at --big images; the big set
   lists each generated file several times through hard links, so every image is still read and
   decoded but generation stays cheap.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import psutil
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_layout(root: str, images: int, distinct: int, seed: int = 0) -> None:
    """The spam raw layout with `images` rows over `distinct` generated photo-like JPEGs."""
    data = os.path.join(root, "train", "train_data")
    if os.path.exists(os.path.join(root, "train", "train_label")):
        return
    os.makedirs(data, exist_ok=True)
    rng = np.random.default_rng(seed)
    source = os.path.join(os.path.dirname(root), f"distinct_{distinct}")
    os.makedirs(source, exist_ok=True)
    rows = []
    grid = np.linspace(0, 1, 256)
    for index in range(images):
        original = os.path.join(source, f"{index % distinct:06d}.jpg")
        if index < distinct and not os.path.exists(original):
            low, high = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
            pixels = low + (high - low) * grid[:, None, None] * np.ones((1, 256, 1))
            pixels += rng.normal(0, 12, (256, 256, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(original, quality=90)
        name = f"{index:06d}.jpg"
        os.link(original, os.path.join(data, name))
        rows.append(f"{name},{rng.integers(0, 4)}")
    with open(os.path.join(root, "train", "train_label"), "w") as handle:
        handle.write("filename,annotation\n" + "\n".join(rows) + "\n")


def baseline_loop(raw: str, output: str) -> None:
    """The plain alternative: one process, Pillow validation, one TFRecordWriter. Prints its rate."""
    import csv

    import tensorflow as tf

    started = time.perf_counter()
    with open(os.path.join(raw, "train", "train_label"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    with tf.io.TFRecordWriter(output) as writer:
        for row in rows:
            path = os.path.join(raw, "train", "train_data", row["filename"])
            with open(path, "rb") as image_file:
                data = image_file.read()
            with Image.open(path) as image:
                image.load()  # full decode: the same validation the job does
            feature = {
                "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(row["annotation"])])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    elapsed = time.perf_counter() - started
    print(f"baseline: {len(rows)} images in {elapsed:.2f}s ({len(rows) / elapsed:.1f} images/s)")


def run_measured(command: list[str]) -> dict:
    """Runs a command, sampling the RSS of the process and of its descendants every 0.1 s."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    watched = psutil.Process(process.pid)
    peak_parent = peak_workers = 0
    while process.poll() is None:
        try:
            peak_parent = max(peak_parent, watched.memory_info().rss)
            workers = 0
            for child in watched.children(recursive=True):
                try:
                    workers += child.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            peak_workers = max(peak_workers, workers)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    output = process.stdout.read()
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output[-3000:]}")
    return {"wall_s": time.perf_counter() - started, "output": output,
            "peak_parent_mib": peak_parent / 2**20, "peak_workers_mib": peak_workers / 2**20}


def _rate(output: str, pattern: str) -> float:
    match = re.search(pattern, output)
    if not match:
        raise RuntimeError(f"no rate in output:\n{output[-2000:]}")
    return float(match.group(1).replace(",", ""))


def job(raw: str, data_dir: str) -> dict:
    result = run_measured([sys.executable, "-m", "preprocess.spam", f"--raw_dir={raw}",
                           f"--data_dir={data_dir}", "--workers=0", "--num_shards=16", "--force"])
    result["rate"] = _rate(result["output"], r"sharding: \d+/\d+ images in [\d:]+ \(([\d,.]+) images/s\)")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--big", type=int, default=50000)
    parser.add_argument("--workdir", default="/tmp/bench_preprocess")
    parser.add_argument("--skip_big", action="store_true")
    parser.add_argument("--baseline", nargs=2, metavar=("RAW", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        baseline_loop(*args.baseline)
        return

    small = os.path.join(args.workdir, f"raw_{args.images}")
    make_layout(small, args.images, args.images)
    loop = run_measured([sys.executable, __file__, "--baseline", small,
                         os.path.join(args.workdir, "baseline.tfrecord")])
    loop["rate"] = _rate(loop["output"], r"\(([\d.]+) images/s\)")
    sharded = job(small, os.path.join(args.workdir, f"data_{args.images}"))
    results = {
        "cores": os.cpu_count(), "load_average_before": os.getloadavg()[0], "images": args.images,
        "loop_images_per_s": round(loop["rate"], 1), "job_images_per_s": round(sharded["rate"], 1),
        "speedup": round(sharded["rate"] / loop["rate"], 2),
        "loop_wall_s": round(loop["wall_s"], 1), "job_wall_s": round(sharded["wall_s"], 1),
        "peak_rss_mib": {args.images: {"parent": round(sharded["peak_parent_mib"]),
                                       "workers": round(sharded["peak_workers_mib"])}},
    }
    if not args.skip_big:
        big = os.path.join(args.workdir, f"raw_{args.big}")
        make_layout(big, args.big, args.images)
        large = job(big, os.path.join(args.workdir, f"data_{args.big}"))
        results["peak_rss_mib"][args.big] = {"parent": round(large["peak_parent_mib"]),
                                             "workers": round(large["peak_workers_mib"])}
        results["big_job_images_per_s"] = round(large["rate"], 1)
    os.makedirs(args.workdir, exist_ok=True)
    with open(os.path.join(args.workdir, "results.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    print(f"| measure | value |\n|---|---|")
    print(f"| single-process loop (Pillow + one TFRecordWriter) | {results['loop_images_per_s']} images/s |")
    print(f"| preprocess.spam, {os.cpu_count()} cores | {results['job_images_per_s']} images/s "
          f"(speedup {results['speedup']}x) |")
    for size, rss in results["peak_rss_mib"].items():
        print(f"| peak RSS at {size} images | parent {rss['parent']} MiB, workers {rss['workers']} MiB |")
    print(f"command: python -m benchmarks.preprocess_throughput --images={args.images} --big={args.big}")


if __name__ == "__main__":
    main()
