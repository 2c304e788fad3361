"""Spam review images: `python -m pipelines.spam --flagfile=v1.flags --raw_dir=RAW --workdir=RUN`.

A bare --flagfile name is looked up in experiments/spam/. See README.md for the outputs.
"""

import sys

from absl import app, logging

from pipelines import flags as pipeline_flags


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)  # TensorFlow's SavedModel writer logs at INFO
    # TensorFlow is imported here, not at the top: preprocessing workers re-import this module.
    from models.backbones import WeightsUnavailableError
    from pipelines import image_classification, tasks
    from pipelines.config import ConfigError
    from preprocess.readers import LayoutError

    try:
        config = pipeline_flags.config_from_flags("spam")
        image_classification.run(config, tasks.SPAM, pipeline_flags.effective_flags())
    except (ConfigError, FileNotFoundError, LayoutError, WeightsUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    pipeline_flags.run(main, "spam")
