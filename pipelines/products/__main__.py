"""`python -m pipelines.products --flagfile=v1.flags --raw_dir=RAW --workdir=RUN` (see README.md)."""

from pipelines.core import cli
from pipelines.products import TASK

if __name__ == "__main__":
    cli.run(TASK)
