"""Shared fixtures: tiny raw layouts made in temp dirs, and the demo dataset + its shards, once."""

from __future__ import annotations

import io
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

# Two logical CPU devices for this test process, set before TensorFlow initialises its devices:
# multi-replica bugs (an empty per-replica batch, outputs gathered out of order) then show on any
# machine without a GPU. A plain strategy still uses one device.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)


def random_image(seed: int, size=(40, 32), mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = (rng.random((size[1], size[0], channels)) * 255).astype(np.uint8)
    return Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def tree_digests(root) -> dict[str, str]:
    """sha256 of every file below `root`, by relative path: the same output, byte for byte."""
    import hashlib

    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
    return found


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """The spam demo in its raw layout, small, made once per test session."""
    from preprocess import demo

    root = tmp_path_factory.mktemp("demo") / "spam"
    demo.make_demo("spam", str(root), seed=0, scale=0.25)
    return root


@pytest.fixture(scope="session")
def demo_shards(demo_root, tmp_path_factory):
    """Shards of the small spam demo, shared by every pipeline test."""
    from preprocess import jobs, writer

    data_dir = tmp_path_factory.mktemp("demo_shards")
    jobs.build("spam", str(demo_root), str(data_dir), writer.ShardOptions(num_shards=2, workers=1),
               log=lambda message: None)
    return data_dir


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(module: str, args, timeout: int = 600, env: dict | None = None, prefix=None):
    """`python -m <module> args...` from the repository root, as a real process (CI=1: one line
    per epoch). `prefix` replaces `python -m <module>` (e.g. a `python -c` script)."""
    import subprocess
    import sys

    command = [*(prefix or (sys.executable, "-m", module)), *args]
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CI="1", **(env or {}))
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=environment)


@pytest.fixture(scope="session")
def smoke_run(demo_root, demo_shards, tmp_path_factory):
    """`python -m pipelines.<task> --flagfile=smoke.flags` on the task's generated demo data, run
    once per task and session: (workdir, completed process). Every test of a task's end-to-end
    behaviour reads this one run."""
    from preprocess import demo

    runs = {}

    def run(task: str):
        if task not in runs:
            if task == "spam":
                raw, shards = demo_root, demo_shards
            else:
                raw = tmp_path_factory.mktemp(f"{task}_demo") / task
                demo.make_demo(task, str(raw), seed=0, scale=0.25)
                shards = tmp_path_factory.mktemp(f"{task}_shards")
            workdir = tmp_path_factory.mktemp(f"{task}_smoke")
            result = run_module(f"pipelines.{task}", ["--flagfile=smoke.flags", f"--raw_dir={raw}",
                                                      f"--data_dir={shards}", f"--workdir={workdir}"])
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            runs[task] = (workdir, result)
        return runs[task]

    return run
