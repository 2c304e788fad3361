"""The one sharded TFRecord writer every task uses: split, decode in worker processes, shard, account.

A reader (preprocess/readers.py) turns a raw layout into an `Inventory` of rows; `write_shards`
turns that into <data_dir>/tfrecords/{split}-NNNNN-of-NNNNN.tfrecord + manifest.json + rejects.csv.

Why it is built this way:
- Worker processes only decode/validate images with Pillow; the parent serialises and writes. Workers
  never import TensorFlow, so they start fast and stay small. (A forkserver child re-imports the
  caller's __main__ module: entry points therefore import TensorFlow inside their main guard.)
- A bounded window of chunks is in flight, so memory does not grow with the number of images.
- Shards are written under a temporary name and renamed when complete; each completed shard is
  recorded in _progress.json, so an interrupted run resumes from the first unfinished shard.
- Output depends only on the input and the flags (not on the number of workers or timing), so the
  same input gives byte-identical shards, and an unchanged input is detected and skipped.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import errno
import hashlib
import json
import math
import multiprocessing
import os
import random
import sys
from typing import Callable, Iterator

import tensorflow as tf

from preprocess import csv_cells, images, schema
from preprocess.shard_options import ShardOptions
from preprocess.progress import Progress

MANIFEST = "manifest.json"
REJECTS = "rejects.csv"
SHARD_DIR = "tfrecords"
_PROGRESS = "_progress.json"
_CHUNK = 32


@dataclasses.dataclass(frozen=True)
class Item:
    """One input row that names an image. `source` says where the row came from, for rejects.csv."""

    source: str
    path: str
    key: str
    labels: tuple[int, ...] = ()
    text: str = ""
    index: int = 0
    group: str = ""  # rows of one group (a sticker package) are never split between train and val


@dataclasses.dataclass(frozen=True)
class Rejected:
    source: str
    item: str
    reason: str


@dataclasses.dataclass
class Inventory:
    """What a reader found in a raw layout, before splitting and decoding.

    `labeled` rows are split into train/val by the writer; `fixed` holds splits the layout defines
    itself (test, unlabeled, and val when the layout ships one).
    """

    task: str
    class_names: tuple[str, ...]
    labeled: list[Item]
    fixed: dict[str, list[Item]]
    rejected: list[Rejected]
    input_rows: int
    metadata_files: tuple[str, ...]
    multi_label: bool = False
    extra: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class _Shard:
    split: str
    name: str
    items: tuple[Item, ...]


class WorkerDied(RuntimeError):
    pass


def split_rows(inventory: Inventory, options: ShardOptions) -> dict[str, list[Item]]:
    """Seeded split of the labeled rows into train/val, stratified on the main (first) label, or,
    when rows have groups, by whole groups (a sticker package never sits on both sides: the real
    test set is new packages, so validation must be too).

    Every class with at least two rows keeps at least one in train; val keeps input order and train
    is shuffled with the seed so each shard holds a mix of classes. Fixed splits keep their order
    (test order is the submission order), except unlabeled, which is shuffled like train.
    """
    rng = random.Random(options.seed)
    splits: dict[str, list[Item]] = {"train": [], "val": []}
    has_own_val = bool(inventory.fixed.get("val"))
    val_ids: set[int] = set()
    if has_own_val or options.val_fraction == 0:
        pass
    elif any(item.group for item in inventory.labeled):
        val_ids = _group_split(inventory.labeled, options.val_fraction, rng)
    else:
        by_class: dict[int, list[Item]] = collections.defaultdict(list)
        for item in inventory.labeled:
            by_class[item.labels[0] if item.labels else -1].append(item)
        for label in sorted(by_class):
            members = by_class[label]
            order = list(range(len(members)))
            rng.shuffle(order)
            count = round(len(members) * options.val_fraction)
            count = min(count, len(members) - 1) if len(members) > 1 else 0
            val_ids.update(id(members[position]) for position in order[:count])
    for item in inventory.labeled:
        splits["val" if id(item) in val_ids else "train"].append(item)
    rng.shuffle(splits["train"])
    for split, items in inventory.fixed.items():
        items = list(items)
        if split == "unlabeled":
            rng.shuffle(items)
        splits[split] = splits.get(split, []) + items
    return {split: items for split, items in splits.items() if items}


def _group_split(items: list[Item], val_fraction: float, rng: random.Random) -> set[int]:
    """ids of the items of the groups sent to val: groups in a seeded order, taken until val holds
    about `val_fraction` of the rows (at least one group; never all of them)."""
    groups: dict[str, list[Item]] = collections.defaultdict(list)
    for item in items:
        groups[item.group].append(item)
    names = sorted(groups)
    rng.shuffle(names)
    wanted, chosen = val_fraction * len(items), []
    for name in names[:-1]:
        if chosen and sum(len(groups[taken]) for taken in chosen) + len(groups[name]) / 2 > wanted:
            break
        chosen.append(name)
    return {id(item) for name in chosen for item in groups[name]}


def write_shards(
    inventory: Inventory,
    data_dir: str,
    options: ShardOptions = ShardOptions(),
    force: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Writes the shards, manifest.json and rejects.csv; returns the manifest.

    A rerun on unchanged input and options does nothing and says so (force=True rebuilds).
    """
    job = plan(inventory, options)
    if not force:
        current = up_to_date(inventory, data_dir, job, log)
        if current:
            return current
    shard_dir = os.path.join(data_dir, SHARD_DIR)
    os.makedirs(shard_dir, exist_ok=True)
    progress_path = os.path.join(shard_dir, _PROGRESS)
    done = {} if force else completed_shards(data_dir, job)
    if done:
        log(f"{inventory.task}: resuming, {len(done)} of {len(job.shards)} shards already complete")
    todo = [shard for shard in job.shards if shard.name not in done]
    _write_all(todo, shard_dir, options, done, progress_path, job.fingerprint, inventory.task)
    return finish(inventory, data_dir, options, job, done, log)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a job writes, fixed by the input and the options alone: the splits, every shard with its
    items in order, and the fingerprint. Every runner (the worker processes here, Beam in
    preprocess/beam_job.py) writes exactly these shards, so their outputs are byte-identical."""

    splits: dict[str, list[Item]]
    shards: tuple[_Shard, ...]
    fingerprint: str


def plan(inventory: Inventory, options: ShardOptions) -> Plan:
    splits = split_rows(inventory, options)
    return Plan(splits, tuple(_plan_shards(splits, options.num_shards)),
                _fingerprint(inventory, splits, options))


def up_to_date(inventory: Inventory, data_dir: str, job: Plan, log: Callable[[str], None]) -> dict | None:
    """The manifest in `data_dir` when its shards are intact and were made from this input and
    these options (then says so), else None."""
    current = read_manifest(data_dir, missing_ok=True)
    if current and current.get("fingerprint") == job.fingerprint and _shards_intact(data_dir, current):
        log(f"{inventory.task}: shards in {data_dir} are up to date with the input; nothing to do "
            "(pass --force to rebuild)")
        return current
    return None


def completed_shards(data_dir: str, job: Plan) -> dict:
    """Shards an interrupted run of this same job finished: {name: its entry in _progress.json}."""
    shard_dir = os.path.join(data_dir, SHARD_DIR)
    return _completed_shards(os.path.join(shard_dir, _PROGRESS), job.fingerprint, shard_dir)


def finish(inventory: Inventory, data_dir: str, options: ShardOptions, job: Plan, done: dict,
           log: Callable[[str], None] = print) -> dict:
    """After every shard of `job` is written (`done`: name -> records, bytes, sha256, histogram,
    rejected): checks the row accounting, writes rejects.csv and manifest.json, removes shards of
    older plans, logs the summary and returns the manifest. Shared by every runner."""
    shard_dir = os.path.join(data_dir, SHARD_DIR)
    shards = job.shards
    rejected = list(inventory.rejected)
    for shard in shards:
        rejected.extend(Rejected(**entry) for entry in done[shard.name]["rejected"])
    manifest = _manifest(inventory, options, job.fingerprint, job.splits, shards, done, len(rejected))
    written = sum(split["records"] for split in manifest["splits"].values())
    if written + len(rejected) != inventory.input_rows:
        raise RuntimeError(
            f"row accounting is off: {inventory.input_rows} input rows but {written} written + "
            f"{len(rejected)} rejected; this is a bug, please report it"
        )
    _write_rejects(os.path.join(data_dir, REJECTS), rejected)
    _atomic_write_text(os.path.join(data_dir, MANIFEST), json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    _remove_stale_shards(shard_dir, {shard.name for shard in shards})
    progress_path = os.path.join(shard_dir, _PROGRESS)
    if os.path.exists(progress_path):
        os.remove(progress_path)
    for note in inventory.extra.get("notes", ()):
        log(f"{inventory.task}: note: {note}")
    per_split = ", ".join(f"{name} {split['records']}" for name, split in manifest["splits"].items())
    log(f"{inventory.task}: {inventory.input_rows} input rows = {written} written ({per_split}) + "
        f"{len(rejected)} rejected (see {os.path.join(data_dir, REJECTS)})")
    if rejected and not written:
        common = collections.Counter(entry.reason for entry in rejected).most_common(3)
        log(f"{inventory.task}: warning: no row was written; most common reasons: "
            + "; ".join(f"{reason} ({count}x)" for reason, count in common))
    return manifest


def read_manifest(data_dir: str, missing_ok: bool = False) -> dict | None:
    path = os.path.join(data_dir, MANIFEST)
    if not os.path.exists(path):
        if missing_ok:
            return None
        raise FileNotFoundError(f"{path} not found: run the preprocessing job for this data_dir first")
    with open(path) as handle:
        manifest = json.load(handle)
    if manifest.get("schema_version") != schema.SCHEMA_VERSION:
        if missing_ok:
            return None
        raise ValueError(f"{path} has schema version {manifest.get('schema_version')}, this code "
                         f"reads {schema.SCHEMA_VERSION}: rerun preprocessing with --force")
    return manifest


def shard_paths(data_dir: str, split: str, manifest: dict | None = None) -> list[str]:
    """Paths of one split's shards in writing order (empty when the split has no records)."""
    manifest = manifest or read_manifest(data_dir)
    split_info = manifest["splits"].get(split)
    if not split_info:
        return []
    return [os.path.join(data_dir, SHARD_DIR, shard["file"]) for shard in split_info["shards"]]


def _plan_shards(splits: dict[str, list[Item]], num_shards: int) -> list[_Shard]:
    """num_shards for train; other splits get shards in proportion to their size (at least one)."""
    reference = max(len(splits.get("train", [])), 1)
    shards = []
    for split, items in splits.items():
        count = num_shards if split == "train" else math.ceil(num_shards * len(items) / reference)
        count = max(1, min(count, len(items)))
        bounds = [round(position * len(items) / count) for position in range(count + 1)]
        for index in range(count):
            name = f"{split}-{index:05d}-of-{count:05d}.tfrecord"
            shards.append(_Shard(split, name, tuple(items[bounds[index]:bounds[index + 1]])))
    return shards


def _write_all(todo, shard_dir, options, done, progress_path, fingerprint, task):
    total = sum(len(shard.items) for shard in todo)
    if not total:
        _save_progress(progress_path, fingerprint, done)
        return
    progress = Progress(total, f"{task}: sharding")
    results = _decoded(todo, options)
    try:
        for shard in todo:
            done[shard.name] = _write_shard(shard, shard_dir, results, progress)
            _save_progress(progress_path, fingerprint, done)
    finally:
        results.close()
    progress.close()


def _write_shard(shard: _Shard, shard_dir: str, results: Iterator, progress: Progress) -> dict:
    final_path = os.path.join(shard_dir, shard.name)
    temp_path = final_path + ".incomplete"
    histogram: collections.Counter = collections.Counter()
    rejected = []
    records = 0
    try:
        with tf.io.TFRecordWriter(temp_path) as writer:
            for item in shard.items:
                outcome = next(results)
                progress.update()
                if isinstance(outcome, str):
                    rejected.append(dataclasses.asdict(Rejected(item.source, item.key, outcome)))
                    continue
                image_bytes, image_format = outcome
                if image_bytes is None:  # stored as it is on disk (see images.load_images)
                    with open(item.path, "rb") as handle:
                        image_bytes = handle.read()
                writer.write(schema.serialize(schema.Record(
                    image=image_bytes, image_format=image_format, key=item.key,
                    index=item.index, labels=item.labels, text=item.text)))
                histogram[item.labels[0] if item.labels else -1] += 1
                records += 1
    except BaseException as error:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        if isinstance(error, tf.errors.OpError):  # TensorFlow's file errors (a full disk, EIO)
            code = errno.ENOSPC if "No space left" in error.message else errno.EIO
            raise OSError(code, f"{os.strerror(code)} while writing shard {shard.name} "
                          f"({error.message})", final_path) from None
        raise
    os.replace(temp_path, final_path)
    return {
        "records": records,
        "bytes": os.path.getsize(final_path),
        "sha256": _sha256_file(final_path),
        "histogram": {str(label): count for label, count in sorted(histogram.items())},
        "rejected": rejected,
    }


def _decoded(shards: list[_Shard], options: ShardOptions):
    """Yields one decode outcome per item, in plan order, keeping a bounded window in flight."""
    paths = [item.path for shard in shards for item in shard.items]
    chunks = [paths[start:start + _CHUNK] for start in range(0, len(paths), _CHUNK)]
    image_options = options.image_options()
    workers = options.workers or os.cpu_count() or 1
    if workers == 1:
        for chunk in chunks:
            yield from images.load_images(chunk, image_options)
        return
    context = multiprocessing.get_context("forkserver" if sys.platform != "win32" else "spawn")
    if hasattr(context, "set_forkserver_preload"):
        # Keep the server light: the default would re-import the caller's __main__ (and TensorFlow).
        context.set_forkserver_preload(["preprocess.images"])
    window = 4 * workers
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        pending: collections.deque = collections.deque()
        chunk_iter = iter(chunks)
        try:
            for chunk in chunk_iter:
                pending.append(pool.submit(images.load_images, chunk, image_options))
                if len(pending) >= window:
                    yield from _result(pending.popleft())
            while pending:
                yield from _result(pending.popleft())
        finally:
            for future in pending:
                future.cancel()


def _result(future):
    try:
        return future.result()
    except concurrent.futures.process.BrokenProcessPool:
        raise WorkerDied(
            "a worker process died (killed, or out of memory); completed shards are kept, "
            "rerun the same command to continue from the first unfinished shard"
        ) from None


def _fingerprint(inventory: Inventory, splits: dict[str, list[Item]], options: ShardOptions) -> str:
    """Hash of everything the output depends on: rows, image file stats, metadata files, options."""
    digest = hashlib.sha256()
    settings = dataclasses.asdict(options)
    settings.pop("workers")  # output does not depend on the number of workers
    header = {"schema": schema.SCHEMA_VERSION, "task": inventory.task, "options": settings,
              "classes": inventory.class_names, "extra": inventory.extra}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for path in inventory.metadata_files:
        digest.update(path.encode())
        digest.update(_sha256_file(path).encode() if os.path.exists(path) else b"missing")
    for split, items in splits.items():
        for item in items:
            size, mtime = images.file_signature(item.path)
            digest.update(json.dumps([split, item.path, item.key, item.labels, item.text,
                                      item.index, item.group, size, mtime]).encode())
    for rejected in inventory.rejected:
        digest.update(json.dumps(dataclasses.astuple(rejected)).encode())
    return digest.hexdigest()


def _manifest(inventory, options, fingerprint, splits, shards, done, rejected_count) -> dict:
    split_info = {}
    for split in splits:
        split_shards = [shard for shard in shards if shard.split == split]
        histogram: collections.Counter = collections.Counter()
        for shard in split_shards:
            histogram.update({int(label): count for label, count in done[shard.name]["histogram"].items()})
        split_info[split] = {
            "records": sum(done[shard.name]["records"] for shard in split_shards),
            "class_histogram": {_class_name(inventory.class_names, label): count
                                for label, count in sorted(histogram.items())},
            "shards": [{"file": shard.name, "records": done[shard.name]["records"],
                        "bytes": done[shard.name]["bytes"], "sha256": done[shard.name]["sha256"]}
                       for shard in split_shards],
        }
    settings = dataclasses.asdict(options)
    settings.pop("workers")
    return {
        "schema_version": schema.SCHEMA_VERSION,
        "task": inventory.task,
        "fingerprint": fingerprint,
        "options": settings,
        "class_names": list(inventory.class_names),
        "multi_label": inventory.multi_label,
        "input_rows": inventory.input_rows,
        "rejected_rows": rejected_count,
        "splits": split_info,
        **({"extra": inventory.extra} if inventory.extra else {}),
    }


def _class_name(class_names, label: int) -> str:
    return class_names[label] if 0 <= label < len(class_names) else "unlabeled"


def _shards_intact(data_dir: str, manifest: dict) -> bool:
    for split in manifest.get("splits", {}).values():
        for shard in split["shards"]:
            path = os.path.join(data_dir, SHARD_DIR, shard["file"])
            if not os.path.exists(path) or os.path.getsize(path) != shard["bytes"]:
                return False
    return os.path.exists(os.path.join(data_dir, REJECTS))


def _completed_shards(progress_path: str, fingerprint: str, shard_dir: str) -> dict:
    """Shards a previous, interrupted run of the same job finished (and that are still intact)."""
    if not os.path.exists(progress_path):
        return {}
    with open(progress_path) as handle:
        progress = json.load(handle)
    if progress.get("fingerprint") != fingerprint:
        return {}
    return {name: info for name, info in progress["shards"].items()
            if os.path.exists(os.path.join(shard_dir, name))
            and os.path.getsize(os.path.join(shard_dir, name)) == info["bytes"]}


def _save_progress(path: str, fingerprint: str, done: dict) -> None:
    _atomic_write_text(path, json.dumps({"fingerprint": fingerprint, "shards": done}, sort_keys=True))


def _remove_stale_shards(shard_dir: str, keep: set[str]) -> None:
    for name in os.listdir(shard_dir):
        if (name.endswith(".tfrecord") or name.endswith(".incomplete")) and name not in keep:
            os.remove(os.path.join(shard_dir, name))


def _write_rejects(path: str, rejected: list[Rejected]) -> None:
    temp_path = path + ".incomplete"
    with open(temp_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source", "item", "reason"])
        for entry in rejected:  # item names come from the input: no spreadsheet formulas
            writer.writerow([csv_cells.neutralize(cell) for cell in (entry.source, entry.item, entry.reason)])
    os.replace(temp_path, path)


def _atomic_write_text(path: str, text: str) -> None:
    temp_path = path + ".incomplete"
    with open(temp_path, "w") as handle:
        handle.write(text)
    os.replace(temp_path, path)


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
