"""`python -m pipelines.spam --flagfile=v1.flags --raw_dir=RAW --workdir=RUN` (see README.md).

A package's __main__ is not re-imported by the preprocessing job's worker processes (Python's
multiprocessing skips `*.__main__`), so the entry point may import TensorFlow at the top.
"""

from pipelines.core import cli
from pipelines.spam import TASK

if __name__ == "__main__":
    cli.run(TASK)
