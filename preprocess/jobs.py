"""The preprocessing job as a library call: raw layout -> shards. Pipelines call this directly."""

from __future__ import annotations

from typing import Callable

from preprocess import readers, writer
from preprocess.shard_options import RunnerOptions


def build(task: str, raw_dir: str, data_dir: str, options: writer.ShardOptions = writer.ShardOptions(),
          force: bool = False, log: Callable[[str], None] = print,
          runner: RunnerOptions = RunnerOptions()) -> dict:
    """Reads `raw_dir` with the task's reader and writes shards to `data_dir`; returns the manifest.

    `runner` says where decoding and shard writing run; the output is the same either way."""
    if task not in readers.READERS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(sorted(readers.READERS))}")
    beam_job = _beam_job() if runner.runner == "beam" else None  # fail before reading the input
    inventory = readers.READERS[task](raw_dir)
    if beam_job:
        return beam_job.write_shards(inventory, data_dir, options, runner.beam_pipeline_args,
                                     force=force, log=log)
    return writer.write_shards(inventory, data_dir, options, force=force, log=log)


def _beam_job():
    """preprocess.beam_job, imported only for --runner=beam (Apache Beam takes seconds to import)."""
    try:
        from preprocess import beam_job
    except ImportError as error:
        if not (error.name or "").startswith("apache_beam"):
            raise
        raise ValueError("--runner=beam needs Apache Beam, which `make install` installs "
                         f"(pip install -r requirements.txt -c constraints.txt): {error}") from None
    return beam_job
