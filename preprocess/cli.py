"""Command line of the preprocessing jobs: `python -m preprocess.<task> --raw_dir=... --data_dir=...`."""

from __future__ import annotations

import shlex
import sys

from absl import app, flags

from preprocess import config_flags, errors, jobs, readers, writer
from preprocess.shard_options import RunnerOptions

flags.DEFINE_string("raw_dir", None, "Raw data in the task's layout (see ../shared/TASKS.md).")
flags.DEFINE_string("data_dir", None, "Where tfrecords/, manifest.json and rejects.csv are written.")
config_flags.define(writer.ShardOptions)
flags.DEFINE_bool("force", False, "Rebuild even when the shards are up to date with the input.")
config_flags.define(RunnerOptions)
flags.DEFINE_multi_string(
    "beam_pipeline_args", [], "With --runner=beam: Beam pipeline options, split like a shell would, "
    "e.g. \"--runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp\"; may be repeated.")
FLAGS = flags.FLAGS


def run(task: str) -> None:
    """Entry point shared by preprocess/<task>.py."""
    flags.mark_flags_as_required(["raw_dir", "data_dir"])

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        try:
            options = config_flags.build(writer.ShardOptions)  # ValueError names a bad flag value
            runner = config_flags.build(RunnerOptions, beam_pipeline_args=split_args(FLAGS.beam_pipeline_args))
            jobs.build(task, FLAGS.raw_dir, FLAGS.data_dir, options, force=FLAGS.force, runner=runner)
        except (readers.LayoutError, writer.WorkerDied, OSError, ValueError) as error:
            # OSError: a --data_dir that is a file or not writable, a full disk (errors.describe)
            print(f"error: {errors.describe(error)}", file=sys.stderr)
            sys.exit(2)

    app.run(main, flags_parser=errors.parse_flags_or_exit)


def split_args(values: list[str]) -> tuple[str, ...]:
    """Every --beam_pipeline_args value split like a shell would, in order, so both
    `--beam_pipeline_args="--a=1 --b=2"` and the flag given once per option work."""
    try:
        return tuple(arg for value in values for arg in shlex.split(value))
    except ValueError as error:  # unbalanced quotes
        raise ValueError(f"--beam_pipeline_args: {error} in {' '.join(values)!r}") from None
