"""Sharding throughput and memory: the preprocessing job against a plain single-process loop.

    .venv/bin/python benchmarks/preprocess_throughput.py [--images=5000 --big=50000
        --workdir=/tmp/bench_preprocess --repeats=5 --wait_quiet=60 --skip_big
        --no_parallel_reference]
    (or: .venv/bin/python -m benchmarks.preprocess_throughput ...)

1. Images/s of `python -m preprocess.spam --workers=0` (one decoding process per core) against a
   plain loop in one process (read the file, Pillow open + full decode/validation exactly as the
   job's workers do it with preprocess.images.normalize_image_bytes, one tf.train.Example with the
   bytes and the label written by ONE tf.io.TFRecordWriter), on the same generated photo-like
   256x256 JPEGs (quality 90). Both run as subprocesses of this script, so both pay the same
   interpreter + TensorFlow start-up; the table gives the end-to-end wall time of each subprocess
   and the rate each one measures itself around the image work (the job's final progress line
   "sharding: N/N images in H:MM:SS (R images/s)", the loop's own timer after its imports).
   Pairs of runs alternate (loop-job, job-loop, ...; --repeats) and medians are compared. On a
   shared machine each run first waits (up to --wait_quiet s) for other programs to leave the CPU
   idle, the CPU other programs used during each run is measured, and pairs where it exceeded
   --disturbed cores are left out of the medians (all are kept in results.json).
   Reference (each round, unless --no_parallel_reference): as many independent loops as the job has
   workers, side by side on disjoint parts of the images, started together after their imports:
   what this machine gives that many processes that share nothing, i.e. the ceiling for the job.
   (On small shared VMs the cores are often not equal: the loop's rate depends on where it runs.)
2. The job's peak RSS at --images and at --big images: the job process and, separately, the sum
   over all its descendants (forkserver, resource tracker, decoding workers), sampled with psutil
   every 0.1 s, plus ru_maxrss from wait4 (the job process and the children it reaped; the
   workers are the forkserver's children and are not in it) and getrusage(RUSAGE_CHILDREN).ru_maxrss
   of this script (a running maximum over all the children it has waited for, loops included).
   The big layout hard-links each of the --images generated files several times under distinct
   names, so generation stays cheap but every image is still read and decoded.

The figures are printed as a markdown table and written to <workdir>/results.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from typing import Callable

import numpy as np
import psutil
from PIL import Image, ImageDraw, ImageFilter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `python benchmarks/preprocess_throughput.py` puts benchmarks/ first, not the root
    sys.path.insert(0, ROOT)

SIZE = 256
QUALITY = 90
_GENERATOR_VERSION = "photo-v2"
_JOB_RATE = re.compile(r"sharding: (\d+)/(\d+) images in ([\d:]+) \(([\d,.]+) images/s\)")
_LOOP_RATE = re.compile(r"baseline: (\d+)/(\d+) images in ([\d.]+)s \(([\d.]+) images/s\)"
                        r" cpu [\d.]+s epoch ([\d.]+)\.\.([\d.]+)")


# ----------------------------------------------------------------------------------------------
# Data: photo-like JPEGs in the spam raw layout.


def photo(rng: np.random.Generator, size: int = SIZE) -> Image.Image:
    """Photo-like content: smooth colour regions, multi-scale luminance texture, a lighting
    gradient, a few hard-edged objects, slight blur and sensor noise (about 25 KiB at q90)."""

    def field(cells: int, channels: int) -> np.ndarray:  # smooth random field, unit variance
        coarse = rng.normal(0, 1, (cells, cells, channels)).astype(np.float32)
        return np.stack([np.asarray(Image.fromarray(coarse[..., channel], mode="F")
                                    .resize((size, size), Image.Resampling.BICUBIC))
                         for channel in range(channels)], axis=-1)

    pixels = np.zeros((size, size, 3), np.float32) + rng.uniform(60, 200, 3)
    for cells, amplitude in ((4, 70), (12, 30)):  # colour regions
        pixels += amplitude * field(cells, 3)
    for cells, amplitude in ((32, 26), (96, 20), (256, 10)):  # luminance texture, finer is weaker
        pixels += amplitude * field(cells, 1)
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:size, 0:size] / size
    pixels += (np.cos(angle) * x + np.sin(angle) * y)[..., None] * rng.uniform(-80, 80, 3)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 9))):
        x0, y0 = (int(v) for v in rng.integers(-size // 4, size, 2))
        width, height = (int(v) for v in rng.integers(12, size // 2, 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x0 + width, y0 + height], fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 0.6))))
    pixels = np.asarray(image, dtype=np.float32)
    pixels += rng.normal(0, rng.uniform(2.0, 6.0), pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def generate_distinct(directory: str, count: int, seed: int = 0) -> list[str]:
    """`count` distinct JPEGs (generated once; an existing complete set is reused)."""
    stamp = os.path.join(directory, "_complete.json")
    wanted = {"count": count, "seed": seed, "size": SIZE, "quality": QUALITY,
              "generator": _GENERATOR_VERSION}
    paths = [os.path.join(directory, f"{index:06d}.jpg") for index in range(count)]
    if os.path.exists(stamp):
        with open(stamp) as handle:
            if json.load(handle) == wanted and all(os.path.exists(path) for path in paths):
                return paths
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    started = time.perf_counter()
    for index, path in enumerate(paths):
        photo(np.random.default_rng([seed, index])).save(path, format="JPEG", quality=QUALITY)
    with open(stamp, "w") as handle:
        json.dump(wanted, handle)
    print(f"generated {count} JPEGs in {time.perf_counter() - started:.1f}s", flush=True)
    return paths


def make_layout(raw: str, originals: list[str], images: int, seed: int = 0) -> None:
    """<raw>/train/train_data/NNNNNN.jpg (hard links, each original images/len(originals) times)
    + <raw>/train/train_label (filename,annotation with random labels 0..3)."""
    label_path = os.path.join(raw, "train", "train_label")
    stamp = os.path.join(raw, "_complete.json")
    wanted = {"images": images, "originals": originals[0] if originals else "", "distinct": len(originals),
              "seed": seed, "generator": _GENERATOR_VERSION}
    if os.path.exists(stamp) and os.path.exists(label_path):
        with open(stamp) as handle:
            if json.load(handle) == wanted:
                return
    shutil.rmtree(raw, ignore_errors=True)
    data = os.path.join(raw, "train", "train_data")
    os.makedirs(data)
    rng = np.random.default_rng(seed + 1)
    labels = rng.integers(0, 4, images)
    with open(label_path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["filename", "annotation"])
        for index in range(images):
            name = f"{index:06d}.jpg"
            os.link(originals[index % len(originals)], os.path.join(data, name))
            writer.writerow([name, int(labels[index])])
    with open(stamp, "w") as handle:
        json.dump(wanted, handle)


def make_parts(raw: str, parts: int) -> list[str]:
    """`parts` layouts that split `raw`'s rows (every parts-th row each), hard-linked: for the
    reference of `parts` independent loops running side by side."""
    with open(os.path.join(raw, "train", "train_label"), newline="") as handle:
        rows = list(csv.reader(handle))
    header, rows = rows[0], rows[1:]
    roots = []
    for part in range(parts):
        root = f"{raw}_part{part + 1}of{parts}"
        label_path = os.path.join(root, "train", "train_label")
        mine = rows[part::parts]
        if not (os.path.exists(label_path) and os.path.getmtime(label_path) >= os.path.getmtime(
                os.path.join(raw, "train", "train_label"))):
            shutil.rmtree(root, ignore_errors=True)
            os.makedirs(os.path.join(root, "train", "train_data"))
            for name, _ in mine:
                os.link(os.path.join(raw, "train", "train_data", name),
                        os.path.join(root, "train", "train_data", name))
            with open(label_path, "w", newline="") as handle:
                csv.writer(handle, lineterminator="\n").writerows([header] + mine)
        roots.append(root)
    return roots


def warm_cache(paths: list[str]) -> int:
    """Reads every file once so neither contender pays for cold disk reads."""
    total = 0
    for path in paths:
        with open(path, "rb") as handle:
            total += len(handle.read())
    return total


# ----------------------------------------------------------------------------------------------
# The plain single-process loop (runs in a subprocess: `--baseline RAW OUTPUT`).


def baseline_loop(raw: str, output: str, barrier: str | None = None) -> None:
    """The loop; with `barrier` (a folder) it says it is ready after its imports and waits for "go"."""
    import tensorflow as tf

    from preprocess import images

    options = images.ImageOptions()
    with open(os.path.join(raw, "train", "train_label"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    data_dir = os.path.join(raw, "train", "train_data")
    if barrier:
        with open(os.path.join(barrier, f"ready.{os.getpid()}"), "w") as handle:
            handle.write(repr(time.process_time()))  # CPU spent before the start, for the parent
        while not os.path.exists(os.path.join(barrier, "go")):
            time.sleep(0.001)
    epoch_started = time.time()
    started = time.perf_counter()
    cpu_started = time.process_time()
    with tf.io.TFRecordWriter(output) as writer:
        for row in rows:
            with open(os.path.join(data_dir, row["filename"]), "rb") as handle:
                data = handle.read()
            # Pillow open + full decode + mode/EXIF/size checks: the work the job's workers do.
            encoded, _ = images.normalize_image_bytes(data, options)
            feature = {
                "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(row["annotation"])])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    print(f"baseline: {len(rows)}/{len(rows)} images in {elapsed:.3f}s ({len(rows) / elapsed:.1f} images/s)"
          f" cpu {cpu:.3f}s epoch {epoch_started:.4f}..{time.time():.4f}", flush=True)


# ----------------------------------------------------------------------------------------------
# Measuring a subprocess: wall time, CPU, peak RSS of it and of its descendants.


def _busy_cpu_seconds() -> float:
    times = psutil.cpu_times()
    return sum(getattr(times, name, 0.0) for name in
               ("user", "nice", "system", "irq", "softirq", "steal"))


def run_measured(command: list[str], log_path: str) -> dict:
    """Runs `command` from the repository root; samples RSS every 0.1 s until it exits (wait4)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    load_before = os.getloadavg()
    busy_before = _busy_cpu_seconds()
    self_before = time.process_time()
    started = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    watched = psutil.Process(process.pid)
    peak_parent = peak_descendants = peak_worker = peak_processes = 0
    samples = 0
    descendant_cpu: dict[tuple[int, float], float] = {}  # (pid, create_time) -> last CPU seconds seen
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        try:
            parent_rss = watched.memory_info().rss
            descendants = watched.children(recursive=True)
        except psutil.NoSuchProcess:
            parent_rss, descendants = 0, []
        total = 0
        for child in descendants:
            try:
                rss = child.memory_info().rss
                times = child.cpu_times()
                descendant_cpu[(child.pid, child.create_time())] = times.user + times.system
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += rss
            peak_worker = max(peak_worker, rss)
        peak_parent = max(peak_parent, parent_rss)
        peak_descendants = max(peak_descendants, total)
        peak_processes = max(peak_processes, len(descendants))
        samples += 1
        time.sleep(0.1)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    # wait4 counts the process and the children it reaped, but not the decoding workers: they are
    # children of the forkserver, which nobody waits for. Their CPU comes from the samples.
    own_cpu = usage.ru_utime + usage.ru_stime
    sampled_cpu = sum(descendant_cpu.values())
    foreign = (_busy_cpu_seconds() - busy_before) - own_cpu - sampled_cpu - (time.process_time() - self_before)
    with open(log_path) as log:
        output = log.read()
    if process.returncode:
        raise RuntimeError(f"{shlex.join(command)} failed ({process.returncode}):\n{output[-3000:]}")
    return {
        "command": shlex.join(command),
        "wall_s": wall,
        "cpu_s": own_cpu + sampled_cpu,
        "process_cpu_s": own_cpu,
        "descendants_cpu_s": sampled_cpu,
        "output": output,
        "peak_parent_mib": peak_parent / 2**20,
        "peak_descendants_mib": peak_descendants / 2**20,
        "peak_single_descendant_mib": peak_worker / 2**20,
        "descendant_processes": peak_processes,
        "rss_samples": samples,
        "ru_maxrss_wait4_mib": usage.ru_maxrss / 1024,  # KiB on Linux; largest of it + reaped children
        "ru_maxrss_children_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "load_before": [round(value, 2) for value in load_before],
        "load_after": [round(value, 2) for value in os.getloadavg()],
        "foreign_cpu_cores": max(foreign, 0.0) / wall,  # other programs' CPU during the run, in cores
    }


def run_loop(raw: str, workdir: str, tag: str) -> dict:
    output = os.path.join(workdir, "baseline.tfrecord")
    result = run_measured([sys.executable, os.path.abspath(__file__), "--baseline", raw, output],
                          os.path.join(workdir, f"log_loop_{tag}.txt"))
    os.remove(output)
    match = _LOOP_RATE.search(result["output"])
    if not match:
        raise RuntimeError(f"no rate in the loop's output:\n{result['output'][-2000:]}")
    result["images"] = int(match.group(1))
    result["work_s"] = float(match.group(3))
    result["rate"] = float(match.group(4))
    return result


def run_parallel_loops(parts: list[str], workdir: str, tag: str) -> dict:
    """len(parts) independent loops side by side, started together after their imports (a file
    barrier): what N processes that share nothing get from this machine, i.e. the best a job with
    N decoding processes could do. Rate = all images / (last end - common start)."""
    barrier = os.path.join(workdir, f"barrier_{tag}")
    shutil.rmtree(barrier, ignore_errors=True)
    os.makedirs(barrier)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    spawned = time.perf_counter()
    logs, processes = [], []
    for index, raw in enumerate(parts):
        log_path = os.path.join(workdir, f"log_parallel_{tag}_{index}.txt")
        with open(log_path, "w") as log:
            processes.append(subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--baseline", raw,
                 os.path.join(workdir, f"parallel_{index}.tfrecord"), "--barrier", barrier],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env))
        logs.append(log_path)
    while len([name for name in os.listdir(barrier) if name.startswith("ready.")]) < len(parts):
        if any(process.poll() is not None for process in processes):
            break
        time.sleep(0.01)
    busy_before, self_before = _busy_cpu_seconds(), time.process_time()
    open(os.path.join(barrier, "go"), "w").close()
    go_at = time.perf_counter()
    cpu = 0.0
    for process in processes:
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        cpu += usage.ru_utime + usage.ru_stime
    ready_cpu = 0.0
    for name in os.listdir(barrier):
        if name.startswith("ready."):
            with open(os.path.join(barrier, name)) as handle:
                ready_cpu += float(handle.read() or 0)
    outputs = []
    for log_path in logs:
        with open(log_path) as log:
            outputs.append(log.read())
    shutil.rmtree(barrier, ignore_errors=True)
    for index in range(len(parts)):
        path = os.path.join(workdir, f"parallel_{index}.tfrecord")
        if os.path.exists(path):
            os.remove(path)
    matches = [_LOOP_RATE.search(output) for output in outputs]
    if any(process.returncode for process in processes) or not all(matches):
        raise RuntimeError("a parallel loop failed:\n" + "\n".join(output[-1500:] for output in outputs))
    start = min(float(match.group(5)) for match in matches)
    end = max(float(match.group(6)) for match in matches)
    images = sum(int(match.group(1)) for match in matches)
    foreign = (_busy_cpu_seconds() - busy_before) - (cpu - ready_cpu) - (time.process_time() - self_before)
    wall = end - start
    return {"command": f"{len(parts)} x " + shlex.join([sys.executable, os.path.abspath(__file__),
                                                         "--baseline", parts[0], "OUTPUT"]),
            "rate": images / wall, "work_s": wall, "wall_s": time.perf_counter() - spawned,
            "cpu_s": cpu, "images": images,
            "per_process_rates": [float(match.group(4)) for match in matches],
            "foreign_cpu_cores": max(foreign, 0.0) / (time.perf_counter() - go_at),
            "load_before": [round(value, 2) for value in os.getloadavg()],
            "load_after": [round(value, 2) for value in os.getloadavg()]}


def run_job(raw: str, workdir: str, tag: str, workers: int, num_shards: int) -> dict:
    data_dir = os.path.join(workdir, f"data_{tag}")
    result = run_measured([sys.executable, "-m", "preprocess.spam", f"--raw_dir={raw}",
                           f"--data_dir={data_dir}", f"--workers={workers}",
                           f"--num_shards={num_shards}", "--force"],
                          os.path.join(workdir, f"log_job_{tag}.txt"))
    shutil.rmtree(data_dir, ignore_errors=True)
    matches = _JOB_RATE.findall(result["output"])
    if not matches:
        raise RuntimeError(f"no final sharding line in the job's output:\n{result['output'][-2000:]}")
    done, total, _, rate = matches[-1]
    if done != total:
        raise RuntimeError(f"the job stopped at {done}/{total} images")
    result["images"] = int(total)
    result["rate"] = float(rate.replace(",", ""))
    result["final_line"] = [line for line in result["output"].splitlines() if "sharding:" in line][-1].strip()
    return result


# ----------------------------------------------------------------------------------------------


def wait_for_quiet(max_wait_s: float, threshold_cores: float = 0.15) -> dict:
    """Waits (up to max_wait_s) until other programs use less than `threshold_cores` over 2 s."""
    started = time.perf_counter()
    while True:
        before = _busy_cpu_seconds()
        time.sleep(2.0)
        busy = (_busy_cpu_seconds() - before) / 2.0
        waited = time.perf_counter() - started
        if busy < threshold_cores or waited >= max_wait_s:
            return {"waited_s": round(waited, 1), "busy_cores_before": round(busy, 2),
                    "quiet": busy < threshold_cores}


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def _summary(run: dict) -> dict:
    return {key: (round(value, 3) if isinstance(value, float) else value)
            for key, value in run.items() if key != "output"}


def _memory(runs: list[dict]) -> dict:
    return {
        "parent_mib": round(max(run["peak_parent_mib"] for run in runs), 1),
        "descendants_mib": round(max(run["peak_descendants_mib"] for run in runs), 1),
        "largest_descendant_mib": round(max(run["peak_single_descendant_mib"] for run in runs), 1),
        "descendant_processes": max(run["descendant_processes"] for run in runs),
        "ru_maxrss_wait4_mib": round(max(run["ru_maxrss_wait4_mib"] for run in runs), 1),
        "ru_maxrss_children_mib": round(runs[-1]["ru_maxrss_children_mib"], 1),
        "job_images_per_s": round(_median(runs, "rate"), 1),
        "job_wall_s": round(_median(runs, "wall_s"), 2),
    }


def _say(name: str, run: dict) -> None:
    memory = (f", peak RSS parent {run['peak_parent_mib']:.0f} MiB + descendants "
              f"{run['peak_descendants_mib']:.0f} MiB" if "final_line" in run else "")
    print(f"{name}: {run['rate']:.1f} images/s, {run['wall_s']:.2f}s end to end, CPU {run['cpu_s']:.2f}s, "
          f"load {run['load_before'][0]}, other programs {run['foreign_cpu_cores']:.2f} cores "
          f"(waited {run['quiet']['waited_s']}s for quiet){memory}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000, help="distinct generated JPEGs")
    parser.add_argument("--big", type=int, default=50000, help="images of the memory run")
    parser.add_argument("--workdir", default="/tmp/bench_preprocess")
    parser.add_argument("--skip_big", action="store_true", help="skip the --big memory run")
    parser.add_argument("--repeats", type=int, default=5, help="loop/job pairs on --images")
    parser.add_argument("--workers", type=int, default=0, help="the job's --workers (0: one per core)")
    parser.add_argument("--num_shards", type=int, default=8, help="the job's --num_shards")
    parser.add_argument("--wait_quiet", type=float, default=60.0,
                        help="before each timed run, wait up to this many seconds for other programs "
                             "to leave the CPU idle (shared machines); 0: do not wait")
    parser.add_argument("--disturbed", type=float, default=0.25,
                        help="a run during which other programs used more cores than this is "
                             "left out of the headline medians (when at least one pair is clean)")
    parser.add_argument("--no_parallel_reference", action="store_true",
                        help="skip the reference of N independent loops side by side")
    parser.add_argument("--baseline", nargs=2, metavar=("RAW", "OUTPUT"), help=argparse.SUPPRESS)
    parser.add_argument("--barrier", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        baseline_loop(*args.baseline, barrier=args.barrier)
        return

    python = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(ROOT + os.sep) else sys.executable
    command = shlex.join([python, os.path.relpath(os.path.abspath(__file__), ROOT)] + sys.argv[1:])
    os.makedirs(args.workdir, exist_ok=True)
    originals = generate_distinct(os.path.join(args.workdir, f"distinct_{args.images}"), args.images)
    small = os.path.join(args.workdir, f"raw_{args.images}")
    make_layout(small, originals, args.images)
    megabytes = warm_cache(originals) / 2**20
    print(f"{args.images} JPEGs, {SIZE}x{SIZE} q{QUALITY}, {megabytes:.1f} MiB "
          f"({megabytes * 1024 / args.images:.1f} KiB each)", flush=True)

    def timed(run: Callable[[], dict]) -> dict:
        quiet = wait_for_quiet(args.wait_quiet) if args.wait_quiet > 0 else {"waited_s": 0}
        result = run()
        result["quiet"] = quiet
        result["disturbed"] = result["foreign_cpu_cores"] > args.disturbed
        return result

    workers = args.workers or os.cpu_count() or 1
    parts = make_parts(small, workers) if workers > 1 and not args.no_parallel_reference else []
    contenders = ["loop", "job"] + (["parallel"] if parts else [])
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    for repeat in range(args.repeats):  # rotate the order, so no contender always runs first
        for contender in contenders[repeat % len(contenders):] + contenders[:repeat % len(contenders)]:
            if contender == "loop":
                result = timed(lambda: run_loop(small, args.workdir, f"{repeat}"))
            elif contender == "job":
                result = timed(lambda: run_job(small, args.workdir, f"{args.images}_{repeat}",
                                               args.workers, args.num_shards))
            else:
                result = timed(lambda: run_parallel_loops(parts, args.workdir, f"{repeat}"))
            runs[contender].append(result)
            _say(f"{contender:8s} {repeat}", result)
    loops, jobs, parallel = runs["loop"], runs["job"], runs.get("parallel", [])

    clean = [index for index in range(args.repeats)
             if not any(runs[name][index]["disturbed"] for name in contenders)]
    chosen = clean or list(range(args.repeats))
    loop_runs, job_runs = [loops[index] for index in chosen], [jobs[index] for index in chosen]
    loop_rate, job_rate = _median(loop_runs, "rate"), _median(job_runs, "rate")
    loop_wall, job_wall = _median(loop_runs, "wall_s"), _median(job_runs, "wall_s")
    memory = {str(args.images): _memory(jobs)}
    big_run = None
    if not args.skip_big:
        big = os.path.join(args.workdir, f"raw_{args.big}")
        make_layout(big, originals, args.big)
        big_run = timed(lambda: run_job(big, args.workdir, f"{args.big}", args.workers, args.num_shards))
        _say("job  big", big_run)
        memory[str(args.big)] = _memory([big_run])

    results = {
        "command": command,
        "cores": os.cpu_count(),
        "job_workers": args.workers or os.cpu_count(),
        "images": args.images,
        "image": f"{SIZE}x{SIZE} JPEG q{QUALITY}, {megabytes * 1024 / args.images:.1f} KiB average",
        "repeats": args.repeats,
        "pairs_used": len(chosen),
        "pairs_undisturbed": len(clean),
        "loop_images_per_s": round(loop_rate, 1),
        "job_images_per_s": round(job_rate, 1),
        "speedup": round(job_rate / loop_rate, 2),
        "loop_wall_s": round(loop_wall, 2),
        "job_wall_s": round(job_wall, 2),
        "speedup_end_to_end": round(loop_wall / job_wall, 2),
        "loop_cpu_s": round(_median(loop_runs, "cpu_s"), 2),
        "job_cpu_s": round(_median(job_runs, "cpu_s"), 2),
        "speedups_per_pair": [round(job["rate"] / loop["rate"], 2) for loop, job in zip(loops, jobs)],
        "other_programs_cores_per_round": [{name: round(runs[name][index]["foreign_cpu_cores"], 2)
                                            for name in contenders} for index in range(args.repeats)],
        "peak_rss": memory,
        "load_average_1min": {
            "min": min(run["load_before"][0] for run in loops + jobs),
            "max": max(run["load_after"][0] for run in loops + jobs),
        },
        "runs": {**{name: [_summary(run) for run in runs[name]] for name in contenders},
                 "big": _summary(big_run) if big_run else None},
    }
    if parallel:
        parallel_runs = [parallel[index] for index in chosen]
        results["parallel_loops_images_per_s"] = round(_median(parallel_runs, "rate"), 1)
        results["parallel_loops_speedup"] = round(results["parallel_loops_images_per_s"] / loop_rate, 2)
        results["job_share_of_parallel_loops"] = round(job_rate / results["parallel_loops_images_per_s"], 2)
        results["parallel_loops_per_round"] = [round(run["rate"], 1) for run in parallel]
        results["parallel_loops_wall_s"] = round(_median(parallel_runs, "wall_s"), 2)
        results["parallel_loops_cpu_s"] = round(_median(parallel_runs, "cpu_s"), 2)
    if big_run:
        small_memory, big_memory = memory[str(args.images)], memory[str(args.big)]
        results["rss_growth"] = {
            key: round(big_memory[key] / small_memory[key] - 1, 3)
            for key in ("parent_mib", "descendants_mib", "largest_descendant_mib", "ru_maxrss_wait4_mib")
        }
        results["big_job_speedup_vs_loop"] = round(big_run["rate"] / loop_rate, 2)
    with open(os.path.join(args.workdir, "results.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    print(table(results, loops, jobs, parallel))


def table(results: dict, loops: list[dict], jobs: list[dict], parallel: list[dict]) -> str:
    used = (f"medians of the {results['pairs_used']} of {results['repeats']} rounds that other "
            "programs did not disturb" if results["pairs_undisturbed"] else
            f"medians of {results['repeats']} rounds, ALL disturbed by other programs")
    lines = [
        "",
        f"Sharding throughput: {results['images']} photo-like {results['image']}, "
        f"{results['cores']} cores ({used})",
        "",
        "| contender | images/s (own timer, after imports) | end-to-end wall s (Python + TF start-up included) "
        "| CPU s (all processes) |",
        "|---|---|---|---|",
        f"| plain loop: 1 process, Pillow decode/validate + one TFRecordWriter | {results['loop_images_per_s']} "
        f"| {results['loop_wall_s']} | {results['loop_cpu_s']} |",
        f"| `python -m preprocess.spam --workers=0` ({results['job_workers']} workers) "
        f"| {results['job_images_per_s']} | {results['job_wall_s']} | {results['job_cpu_s']} |",
        f"| **speedup job / loop** | **{results['speedup']}x** | {results['speedup_end_to_end']}x | |",
    ]
    if parallel:
        lines += [
            f"| reference: {results['job_workers']} independent loops side by side, each on 1/"
            f"{results['job_workers']} of the images (what this machine gives {results['job_workers']} "
            f"processes) | {results['parallel_loops_images_per_s']} "
            f"(= {results['parallel_loops_speedup']}x the loop; the job gets "
            f"{results['job_share_of_parallel_loops']:.0%} of it) | {results['parallel_loops_wall_s']} "
            f"| {results['parallel_loops_cpu_s']} |",
        ]
    lines += [
        "",
        f"per round, job rate / loop rate: {', '.join(f'{value}x' for value in results['speedups_per_pair'])}"
        + (f"; parallel loops images/s: {', '.join(str(v) for v in results['parallel_loops_per_round'])}"
           if parallel else ""),
        "other programs' CPU during each run, cores: "
        + "; ".join(", ".join(f"{name} {value}" for name, value in entry.items())
                    for entry in results["other_programs_cores_per_round"]),
        "",
        "| job peak RSS | parent | descendants, summed (processes) | largest descendant "
        "| ru_maxrss, wait4 of the job | getrusage(RUSAGE_CHILDREN).ru_maxrss (running max) "
        "| job images/s | job wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size, memory in results["peak_rss"].items():
        lines.append(f"| {int(size):,} images | {memory['parent_mib']} MiB | {memory['descendants_mib']} MiB "
                     f"({memory['descendant_processes']}) | {memory['largest_descendant_mib']} MiB "
                     f"| {memory['ru_maxrss_wait4_mib']} MiB | {memory['ru_maxrss_children_mib']} MiB "
                     f"| {memory['job_images_per_s']} | {memory['job_wall_s']} |")
    if "rss_growth" in results:
        growth = results["rss_growth"]
        lines.append(f"| growth | {growth['parent_mib']:+.1%} | {growth['descendants_mib']:+.1%} "
                     f"| {growth['largest_descendant_mib']:+.1%} | {growth['ru_maxrss_wait4_mib']:+.1%} | | | |")
    load = results["load_average_1min"]
    lines += [
        "",
        f"load average (1 min) around the runs: {load['min']}..{load['max']}",
        f"command: cd {ROOT} && {results['command']}",
        f"job command: {jobs[0]['command']}",
        f"loop command: {loops[0]['command']}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
