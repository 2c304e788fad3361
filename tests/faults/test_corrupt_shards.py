"""A shard with a flipped byte: the run names the shard instead of a DataLossError traceback, and
--skip_corrupt_records trains on what can be read and says how much was lost."""

from __future__ import annotations

import json
import shutil

import pytest
import tensorflow as tf

from pipelines.core import corrupt, inputs
from preprocess import writer
from tests.conftest import run_module

SHORT = ["--flagfile=smoke.flags", "--head_epochs=1", "--full_epochs=0", "--steps_per_epoch=2"]


@pytest.fixture
def damaged_shards(demo_shards, tmp_path):
    """A copy of the demo shards whose first train shard has one byte flipped in its middle."""
    data_dir = tmp_path / "shards"
    shutil.copytree(demo_shards, data_dir)
    manifest = writer.read_manifest(str(data_dir))
    path = writer.shard_paths(str(data_dir), "train", manifest)[0]
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))
    return data_dir, path, manifest["splits"]["train"]["shards"][0]["records"]


def test_a_flipped_byte_is_found_and_named(damaged_shards):
    data_dir, path, records = damaged_shards
    with pytest.raises(tf.errors.DataLossError):  # what reading meets: no file name in it
        inputs.read_split([path])
    [damage] = corrupt.find_damage(str(data_dir), writer.read_manifest(str(data_dir)))
    assert damage.path == path and damage.split == "train" and 0 < damage.readable < records == damage.expected
    assert path in corrupt.explain(str(data_dir)) and "--skip_corrupt_records" in corrupt.explain(str(data_dir))


def test_the_pipeline_names_the_damaged_shard_and_skipping_says_what_was_lost(damaged_shards, tmp_path):
    data_dir, path, records = damaged_shards
    stopped = run_module("pipelines.spam", SHORT + [f"--data_dir={data_dir}", f"--workdir={tmp_path / 'a'}"])
    assert stopped.returncode == 2, stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr and f"damaged shard(s): {path}" in stopped.stderr

    skipped = run_module("pipelines.spam", SHORT + [f"--data_dir={data_dir}", f"--workdir={tmp_path / 'b'}",
                                                    "--skip_corrupt_records"])
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    readable = corrupt.readable_records(path)[0]
    assert f"records lost per split: train {records - readable}" in skipped.stdout
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())  # the run finished its work
    assert (tmp_path / "b" / "salvaged").is_dir()
