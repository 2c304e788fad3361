"""The command line every task's entry point runs: `python -m pipelines.<task> --flagfile=...`.

Flags come from Config and the task's Options (one source per setting); a bare --flagfile name
is looked up in experiments/<task>/; what a user can get wrong ends in `error: ...` and exit
status 2, never a traceback.
"""

from __future__ import annotations

import sys

import tensorflow as tf
from absl import app, logging

from models.backbones import UnknownBackboneError, WeightsUnavailableError
from pipelines.core import corrupt
from pipelines.core import flags as pipeline_flags
from pipelines.core import runner
from pipelines.core.config import ConfigError
from preprocess import errors
from preprocess.readers import LayoutError

# OSError: a workdir that is a file or not writable, a full disk (errors.describe says which path).
USER_ERRORS = (ConfigError, OSError, LayoutError, WeightsUnavailableError, UnknownBackboneError)


def run(task) -> None:
    run_flags = pipeline_flags.define(task.Options)

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        logging.set_verbosity(logging.WARNING)  # TensorFlow's SavedModel writer logs at INFO
        try:
            config = pipeline_flags.config_from_flags(task.name, task.Options)
            runner.train_and_evaluate(config, task, pipeline_flags.effective_flags(run_flags))
        except USER_ERRORS as error:
            print(f"error: {errors.describe(error)}", file=sys.stderr)
            sys.exit(2)
        except tf.errors.DataLossError:  # a TFRecord checksum failed: say which shard, and what to do
            print(f"error: {corrupt.explain(config.data_dir)}", file=sys.stderr)
            sys.exit(2)

    pipeline_flags.run(main, task.name)
