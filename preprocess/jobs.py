"""The preprocessing job as a library call: raw layout -> shards. Pipelines call this directly."""

from __future__ import annotations

from typing import Callable

from preprocess import readers, writer


def build(task: str, raw_dir: str, data_dir: str, options: writer.ShardOptions = writer.ShardOptions(),
          force: bool = False, log: Callable[[str], None] = print) -> dict:
    """Reads `raw_dir` with the task's reader and writes shards to `data_dir`; returns the manifest."""
    if task not in readers.READERS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(sorted(readers.READERS))}")
    inventory = readers.READERS[task](raw_dir)
    return writer.write_shards(inventory, data_dir, options, force=force, log=log)
