"""Fixtures of the fault suite: tiny raw layouts of every task, made per test, and a fixed
hypothesis profile (few examples, derandomized: fast, and the same examples on every run)."""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("faults", max_examples=60, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile("faults")

TASKS = ("spam", "stickers", "memes", "products")
# The names under which shards are visible to readers (preprocess/writer.py `_plan_shards`).
FINAL_SHARD = re.compile(r"^(train|val|test|unlabeled)-\d{5}-of-\d{5}\.tfrecord$")


@pytest.fixture
def make_raw(tmp_path):
    """make_raw(task, scale=0.1) -> path of a generated raw layout of `task` (seed 0)."""
    from preprocess import demo

    def make(task: str, scale: float = 0.1, name: str | None = None):
        root = tmp_path / (name or f"raw_{task}")
        demo.make_demo(task, str(root), seed=0, scale=scale)
        return root

    return make


def build(task, raw, data_dir, **options):
    """The preprocessing job in this process (workers=1 unless given), quietly; returns the manifest."""
    from preprocess import jobs, writer

    options.setdefault("workers", 1)
    return jobs.build(task, str(raw), str(data_dir), writer.ShardOptions(**options), log=lambda message: None)


def shard_digests(data_dir) -> dict[str, str]:
    """sha256 of every final-named shard of a data_dir."""
    from tests.conftest import tree_digests

    return {name: digest for name, digest in tree_digests(os.path.join(data_dir, "tfrecords")).items()
            if FINAL_SHARD.match(name)}


def records(path) -> list:
    """Every record of one shard, parsed (preprocess/schema.py)."""
    import tensorflow as tf

    from preprocess import schema

    return [schema.parse_record(raw.numpy()) for raw in tf.data.TFRecordDataset(str(path))]
