"""Command line of the preprocessing jobs: `python -m preprocess.<task> --raw_dir=... --data_dir=...`."""

from __future__ import annotations

import sys

from absl import app, flags

from preprocess import images, jobs, readers, writer

flags.DEFINE_string("raw_dir", None, "Raw data in the task's layout (see ../shared/TASKS.md).")
flags.DEFINE_string("data_dir", None, "Where tfrecords/, manifest.json and rejects.csv are written.")
flags.DEFINE_integer("num_shards", 8, "Shards for the train split; other splits in proportion.")
flags.DEFINE_float("val_fraction", 0.2, "Share of labeled rows held out for validation (stratified).")
flags.DEFINE_integer("seed", 0, "Seed of the train/val split and of the shard order.")
flags.DEFINE_integer("workers", 0, "Decoding processes; 0 = one per core, 1 = no subprocesses.")
flags.DEFINE_integer("max_side", None, "Shrink images whose longer side exceeds this, once, here.")
flags.DEFINE_integer("max_pixels", images.DEFAULT_MAX_PIXELS, "Reject images above this many pixels.")
flags.DEFINE_bool("force", False, "Rebuild even when the shards are up to date with the input.")
FLAGS = flags.FLAGS


def run(task: str) -> None:
    """Entry point shared by preprocess/<task>.py."""
    flags.mark_flags_as_required(["raw_dir", "data_dir"])

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        options = writer.ShardOptions(
            num_shards=FLAGS.num_shards, val_fraction=FLAGS.val_fraction, seed=FLAGS.seed,
            workers=FLAGS.workers, max_side=FLAGS.max_side, max_pixels=FLAGS.max_pixels)
        try:
            jobs.build(task, FLAGS.raw_dir, FLAGS.data_dir, options, force=FLAGS.force)
        except (readers.LayoutError, writer.WorkerDied, FileNotFoundError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    app.run(main)
