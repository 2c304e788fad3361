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
