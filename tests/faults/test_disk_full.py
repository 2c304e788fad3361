"""A full disk while a shard or a checkpoint is written: the job says so in one line, leaves no
partial file under a final name, and a rerun once space is free completes with the same output.

The full disk is injected into the file write itself (TensorFlow's TFRecordWriter raising what
it raises on ENOSPC, ResourceExhaustedError; h5py's OSError), and, where this process may mount
a tmpfs (root), also made real with a tiny file system."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import run_module, tree_digests
from tests.faults.conftest import FINAL_SHARD, build

_REAL_WRITER = tf.io.TFRecordWriter


class _FillsUp(_REAL_WRITER):
    """A TFRecordWriter whose disk fills after `budget` records in all (some bytes reach the
    file first, as on a real disk)."""

    budget = 0

    def write(self, record):
        if _FillsUp.budget <= 0:
            super().write(record[: len(record) // 2])
            self.flush()
            raise tf.errors.ResourceExhaustedError(None, None, "shard; No space left on device")
        _FillsUp.budget -= 1
        super().write(record)


def test_full_disk_while_writing_a_shard_then_rerun(make_raw, tmp_path, monkeypatch):
    raw = make_raw("spam")
    build("spam", raw, tmp_path / "reference", num_shards=4)
    data_dir = tmp_path / "data"
    monkeypatch.setattr(tf.io, "TFRecordWriter", _FillsUp)
    _FillsUp.budget = 30  # the disk fills inside the second train shard
    with pytest.raises(OSError) as raised:
        build("spam", raw, data_dir, num_shards=4)
    assert raised.value.errno == errno.ENOSPC and "train-00001-of-00004.tfrecord" in str(raised.value)
    left = os.listdir(data_dir / "tfrecords")
    assert [name for name in left if FINAL_SHARD.match(name)] == ["train-00000-of-00004.tfrecord"]
    assert not [name for name in left if name.endswith(".incomplete")]
    assert not (data_dir / "manifest.json").exists()

    monkeypatch.setattr(tf.io, "TFRecordWriter", _REAL_WRITER)  # space freed
    logged = []
    from preprocess import jobs, writer
    jobs.build("spam", str(raw), str(data_dir), writer.ShardOptions(num_shards=4, workers=1), log=logged.append)
    assert any("resuming, 1 of" in line for line in logged)
    assert tree_digests(data_dir) == tree_digests(tmp_path / "reference")


def test_full_disk_message_from_the_command_line(make_raw, tmp_path):
    """The same fault through `python -m preprocess.spam`: `error: ... No space left on device
    (free some space and rerun ...)`, exit status 2, no traceback."""
    raw = make_raw("spam")
    script = ("import sys, tensorflow as tf\n"
              "from tests.faults.test_disk_full import _FillsUp\n"
              "tf.io.TFRecordWriter = _FillsUp\n"
              "from preprocess import cli\n"
              "sys.argv = ['preprocess.spam'] + sys.argv[1:]\n"
              "cli.run('spam')\n")
    result = run_module("", [f"--raw_dir={raw}", f"--data_dir={tmp_path / 'data'}", "--workers=1"],
                        prefix=[sys.executable, "-c", script])
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "error: " in result.stderr and "No space left on device" in result.stderr
    assert "rerun the same command" in result.stderr


def _mount_tmpfs(path, size):
    path.mkdir(exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def test_full_disk_for_real_on_a_tiny_tmpfs(make_raw, tmp_path):
    """A real full file system (a 192 KiB tmpfs), then enlarged (space freed) and the same command
    rerun. Needs permission to mount: skipped elsewhere; the injected tests above still run."""
    raw = make_raw("spam")
    build("spam", raw, tmp_path / "reference", num_shards=4)
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "192k"):
        pytest.skip("cannot mount a tmpfs here (needs root and a permissive container)")
    try:
        args = [f"--raw_dir={raw}", f"--data_dir={disk / 'data'}", "--workers=1", "--num_shards=4"]
        full = run_module("preprocess.spam", args)
        assert full.returncode == 2, full.stderr[-3000:]
        assert "Traceback" not in full.stderr and "No space left on device" in full.stderr
        names = os.listdir(disk / "data" / "tfrecords") if (disk / "data" / "tfrecords").exists() else []
        for name in names:  # whatever is under a final name is complete
            if FINAL_SHARD.match(name):
                assert tree_digests(disk / "data")[f"tfrecords/{name}"] == \
                    tree_digests(tmp_path / "reference")[f"tfrecords/{name}"]
        subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
        rerun = run_module("preprocess.spam", args)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert tree_digests(disk / "data") == tree_digests(tmp_path / "reference")
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_full_disk_while_writing_a_checkpoint_keeps_the_previous_best(tmp_path):
    """BestCheckpoint writes beside and renames: a save that fails half way (injected ENOSPC after
    half a file is written) leaves the earlier best.weights.h5 and best.json as they were."""
    from pipelines.core.callbacks import BestCheckpoint

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    checkpoint = BestCheckpoint(str(tmp_path), "val_score")
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"val_score": 0.5})
    before = tree_digests(tmp_path)

    real_save = model.save_weights

    def full_disk(path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"\x89HDF\r\n half a file")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    model.save_weights = full_disk
    model.layers[0].kernel.assign(np.ones((3, 2), np.float32))
    with pytest.raises(OSError):
        checkpoint.on_epoch_end(1, {"val_score": 0.9})
    assert tree_digests(tmp_path) == before  # no partial file, the old best intact

    model.save_weights = real_save  # space freed: the next better epoch is saved
    checkpoint.on_epoch_end(2, {"val_score": 0.9})
    assert checkpoint.best()["epoch"] == 3
    restored = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    restored.load_weights(str(tmp_path / "best.weights.h5"))
    np.testing.assert_array_equal(restored.layers[0].kernel.numpy(), np.ones((3, 2)))
