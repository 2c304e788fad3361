"""Command line of the preprocessing jobs: `python -m preprocess.<task> --raw_dir=... --data_dir=...`."""

from __future__ import annotations

import sys

from absl import app, flags

from preprocess import config_flags, jobs, readers, writer

flags.DEFINE_string("raw_dir", None, "Raw data in the task's layout (see ../shared/TASKS.md).")
flags.DEFINE_string("data_dir", None, "Where tfrecords/, manifest.json and rejects.csv are written.")
config_flags.define(writer.ShardOptions)
flags.DEFINE_bool("force", False, "Rebuild even when the shards are up to date with the input.")
FLAGS = flags.FLAGS


def run(task: str) -> None:
    """Entry point shared by preprocess/<task>.py."""
    flags.mark_flags_as_required(["raw_dir", "data_dir"])

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        try:
            options = config_flags.build(writer.ShardOptions)  # ValueError names a bad flag value
            jobs.build(task, FLAGS.raw_dir, FLAGS.data_dir, options, force=FLAGS.force)
        except (readers.LayoutError, writer.WorkerDied, FileNotFoundError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    app.run(main)
