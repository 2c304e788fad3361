"""Preprocessing killed with SIGKILL (no cleanup handler runs) at several points, then rerun: the
final shards are byte-identical to an uninterrupted run's, and no file under a final shard name
ever holds anything but the complete shard (shards are written as *.incomplete, then renamed)."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, tree_digests
from tests.faults.conftest import FINAL_SHARD, build

NUM_SHARDS = 16


def _start(task, raw, data_dir):
    return subprocess.Popen(
        [sys.executable, "-m", f"preprocess.{task}", f"--raw_dir={raw}", f"--data_dir={data_dir}",
         "--workers=2", f"--num_shards={NUM_SHARDS}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


def _watch(process, shard_dir, reference, kill_after_shards=None, kill_after_seconds=None):
    """Polls the shard folder while the job runs: every file seen under a final shard name must
    already be the complete shard (its sha256 equals the reference run's). Kills the job's process
    group with SIGKILL once `kill_after_shards` final shards exist or `kill_after_seconds` passed.
    Returns (whether it was killed while running, final shards seen at the kill)."""
    started, verified = time.monotonic(), set()
    while process.poll() is None:
        names = os.listdir(shard_dir) if os.path.isdir(shard_dir) else []
        for name in names:
            if FINAL_SHARD.match(name) and name not in verified:
                try:
                    with open(os.path.join(shard_dir, name), "rb") as handle:
                        digest = hashlib.sha256(handle.read()).hexdigest()
                except FileNotFoundError:
                    continue  # a stale shard being removed
                assert digest == reference[os.path.join("tfrecords", name)], f"partial or wrong {name} visible"
                verified.add(name)
        final = sum(bool(FINAL_SHARD.match(name)) for name in names)
        if ((kill_after_shards is not None and final >= kill_after_shards)
                or (kill_after_seconds is not None and time.monotonic() - started >= kill_after_seconds)):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return True, final
        time.sleep(0.001)
    return False, None


# (task, raw scale, kill points): spam is interrupted three times in a row in the same data_dir
# (after the first shard, mid-way, at a seeded random moment); the other readers once each.
CASES = [
    ("spam", 0.5, [("shards", 1), ("shards", NUM_SHARDS // 2), ("seconds", None)]),
    ("stickers", 0.25, [("shards", 2)]),
    ("memes", 0.25, [("shards", 2)]),
    ("products", 0.25, [("shards", 2)]),
]


@pytest.mark.parametrize("task,scale,kills", CASES, ids=[case[0] for case in CASES])
def test_sigkill_then_rerun_gives_the_uninterrupted_shards(task, scale, kills, make_raw, tmp_path):
    raw = make_raw(task, scale)
    build(task, raw, tmp_path / "reference", num_shards=NUM_SHARDS)
    reference = tree_digests(tmp_path / "reference")
    data_dir = tmp_path / "interrupted"
    shard_dir = str(data_dir / "tfrecords")
    rng = random.Random(f"{task}-kill")
    landed_mid_run = 0
    for kind, value in kills:
        process = _start(task, raw, data_dir)
        if kind == "shards":
            killed, seen = _watch(process, shard_dir, reference, kill_after_shards=value)
        else:
            killed, seen = _watch(process, shard_dir, reference, kill_after_seconds=rng.uniform(0.5, 6.0))
        assert killed or process.returncode == 0, process.stdout.read().decode()[-2000:]
        landed_mid_run += bool(killed and seen and not os.path.exists(data_dir / "manifest.json"))
        process.stdout.close()
    assert landed_mid_run, "no kill landed while shards were being written: the test tested nothing"

    process = _start(task, raw, data_dir)
    assert _watch(process, shard_dir, reference) == (False, None)
    output = process.stdout.read().decode()
    process.stdout.close()
    assert process.returncode == 0, output[-3000:]
    assert "Traceback" not in output
    assert tree_digests(data_dir) == reference  # shards, manifest.json, rejects.csv; no leftovers
