"""Damaged shards: find them, name them, and (when asked) train on what can still be read.

A TFRecord file checksums every record (a CRC of its length and of its data). A flipped bit makes
reading stop with a DataLossError that names neither the file nor what to do; this module turns it
into a message naming the shard. TFRecord cannot resynchronise after a damaged record (the lengths
that follow it cannot be trusted), so what can be salvaged of a shard is the records before the
damage: `--skip_corrupt_records` copies those into the workdir and uses them instead, and says how
many records of which split were lost.
"""

from __future__ import annotations

import copy
import dataclasses
import os

import tensorflow as tf

from preprocess import writer


class CorruptShardError(ValueError):
    """A shard fails its checksums; the message names it and the ways on."""


@dataclasses.dataclass(frozen=True)
class Damage:
    split: str
    path: str
    readable: int  # records before the damage
    expected: int  # records the manifest says the shard holds
    reason: str


def readable_records(path: str) -> tuple[int, str | None]:
    """(records read before the first damaged one, the reader's complaint or None)."""
    count = 0
    try:
        for _ in tf.data.TFRecordDataset(path):
            count += 1
    except tf.errors.DataLossError as error:
        return count, str(error).split("[Op:")[0].split("}}")[-1].strip() or "checksum mismatch"
    return count, None


def find_damage(data_dir: str, manifest: dict) -> list[Damage]:
    """Every shard of every split that fails to read to its end (reads every byte once)."""
    damaged = []
    for split, info in manifest["splits"].items():
        for shard in info.get("shards", ()):
            path = os.path.join(data_dir, writer.SHARD_DIR, shard["file"])
            readable, reason = readable_records(path)
            if reason is not None or readable != shard["records"]:
                damaged.append(Damage(split, path, readable, shard["records"],
                                      reason or f"{readable} records where the manifest says {shard['records']}"))
    return damaged


def explain(data_dir: str, manifest: dict | None = None) -> str:
    """The message for a DataLossError met while reading `data_dir`'s shards."""
    manifest = manifest or writer.read_manifest(data_dir)
    damaged = find_damage(data_dir, manifest)
    if not damaged:
        return f"a shard under {data_dir} could not be read (checksum mismatch), but every shard reads now"
    named = "; ".join(f"{damage.path}: {damage.reason} after {damage.readable} of {damage.expected} records"
                      for damage in damaged)
    lost = sum(damage.expected - damage.readable for damage in damaged)
    return (f"damaged shard(s): {named}. Rebuild them (rerun the preprocessing job with --force, or this "
            f"run with --raw_dir and a fresh --data_dir), or pass --skip_corrupt_records to go on without "
            f"the {lost} record(s) that cannot be read")


def salvage(data_dir: str, manifest: dict, out_dir: str, log=print) -> tuple[dict, dict[str, str]]:
    """(a manifest whose counts leave out the unreadable records, {damaged shard path: the copy of
    its readable records under `out_dir`}). Reads every shard once to find the damage."""
    damaged = find_damage(data_dir, manifest)
    if not damaged:
        return manifest, {}
    manifest = copy.deepcopy(manifest)
    replacements = {}
    os.makedirs(out_dir, exist_ok=True)
    for damage in damaged:
        copy_path = os.path.join(out_dir, os.path.basename(damage.path))
        with tf.io.TFRecordWriter(copy_path) as out:
            for record in tf.data.TFRecordDataset(damage.path).take(damage.readable):
                out.write(record.numpy())
        replacements[damage.path] = copy_path
        manifest["splits"][damage.split]["records"] -= damage.expected - damage.readable
        log(f"warning: {damage.path} is damaged ({damage.reason}): {damage.expected - damage.readable} of its "
            f"{damage.expected} {damage.split} records are lost; training on the {damage.readable} before the damage")
    lost = {split: sum(d.expected - d.readable for d in damaged if d.split == split) for split in manifest["splits"]}
    log("--skip_corrupt_records: records lost per split: "
        + ", ".join(f"{split} {count}" for split, count in lost.items() if count))
    return manifest, replacements
