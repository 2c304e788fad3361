"""How a preprocessing job splits and shards (a module of its own: importing it costs no
TensorFlow, so flag definitions and worker processes can use it)."""

from __future__ import annotations

import dataclasses

from preprocess import images
from preprocess.config_flags import field


@dataclasses.dataclass(frozen=True)
class ShardOptions:
    """How a preprocessing job splits and shards; its fields are the jobs' flags
    (preprocess/cli.py) and the pipelines' preprocessing flags (pipelines/core/config.py)."""

    num_shards: int = field(8, "Shards for the train split; other splits in proportion.")
    val_fraction: float = field(0.2, "Share of labeled rows held out for validation (stratified).")
    seed: int = field(0, "Seed of the train/val split and of the shard order.")
    workers: int = field(0, "Decoding processes; 0 = one per core, 1 = no subprocesses.")
    max_side: int | None = field(None, "Shrink images whose longer side exceeds this, once, at sharding.")
    max_pixels: int = field(images.DEFAULT_MAX_PIXELS, "Reject images above this many pixels.")

    def __post_init__(self):
        if self.num_shards < 1:
            raise ValueError(f"--num_shards must be >= 1, got {self.num_shards}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"--val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.max_side is not None and self.max_side < 8:
            raise ValueError(f"--max_side must be >= 8 pixels, got {self.max_side}")

    def image_options(self) -> images.ImageOptions:
        return images.ImageOptions(max_side=self.max_side, max_pixels=self.max_pixels)


RUNNERS = ("local", "beam")


@dataclasses.dataclass(frozen=True)
class RunnerOptions:
    """Where a preprocessing job runs. Kept out of ShardOptions on purpose: ShardOptions is hashed
    into the fingerprint and written into the manifest, and every runner writes the same bytes, so
    switching runners must neither rebuild up-to-date shards nor change the manifest."""

    runner: str = field("local", "Where decoding and shard writing run: local = worker processes "
                        "on this machine; beam = an Apache Beam pipeline (Beam's in-process runner "
                        "unless --beam_pipeline_args names another).", choices=RUNNERS)
    # A flag of its own in preprocess/cli.py: repeatable, each value split like a shell would.
    beam_pipeline_args: tuple[str, ...] = field((), "Beam pipeline options.", flag=False)

    def __post_init__(self):
        if self.runner not in RUNNERS:
            raise ValueError(f"--runner must be one of {', '.join(RUNNERS)}, got {self.runner!r}")
        if self.beam_pipeline_args and self.runner != "beam":
            raise ValueError("--beam_pipeline_args needs --runner=beam")
