"""The frozen configuration every pipeline function takes (no flags here: see pipelines/flags.py)."""

from __future__ import annotations

import dataclasses

OPTIMIZERS = ("adamw", "sgd")
STRATEGIES = ("auto", "mirrored", "one_device", "multi_worker")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
MODES = ("all", "train", "evaluate", "predict")
CLASS_BALANCE = ("none", "class_weights")
PSEUDO_BALANCE = ("prior", "none")
PSEUDO_LABELS = ("hard", "soft")


class ConfigError(ValueError):
    """A flag value that cannot work; the message names the flag."""


@dataclasses.dataclass(frozen=True)
class Phase:
    """One training phase: its own optimizer, learning rate and epochs."""

    epochs: int
    learning_rate: float
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    momentum: float = 0.9

    def validate(self, name: str) -> None:
        if self.epochs < 0:
            raise ConfigError(f"{name}: epochs must be >= 0, got {self.epochs}")
        if self.learning_rate <= 0:
            raise ConfigError(f"{name}: learning rate must be > 0, got {self.learning_rate}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"{name}: optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")


@dataclasses.dataclass(frozen=True)
class Config:
    task: str
    raw_dir: str
    data_dir: str
    workdir: str
    mode: str = "all"
    # model
    backbone: str = "resnet50v2"
    weights: str | None = None
    image_size: int = 256
    dropout: float = 0.2
    # training
    batch_size: int = 128  # global, over all replicas
    head: Phase = Phase(epochs=3, learning_rate=1e-3)
    full: Phase = Phase(epochs=10, learning_rate=1e-4)
    unfreeze_top_blocks: int = 0  # 0: the whole backbone in the full phase
    label_smoothing: float = 0.0
    class_balance: str = "class_weights"
    steps_per_epoch: int | None = None  # smoke runs cap the steps; None = the whole split
    reduce_lr_patience: int = 3
    early_stopping_patience: int = 5
    # input
    flip: bool = True
    zoom: float = 0.2
    shift: float = 0.1
    cache: bool = False  # cache decoded, resized images in memory (when they fit)
    # distribution
    strategy: str = "auto"
    precision: str = "auto"
    seed: int = 0
    # preprocessing (used when the shards are missing or stale)
    num_shards: int = 8
    val_fraction: float = 0.2
    max_side: int | None = None
    workers: int = 0
    # prediction
    fallback_class: int = 0  # for test files that cannot be decoded
    # semi-supervised rounds (pipelines/pseudo_label.py)
    pseudo_label_rounds: int = 0
    pseudo_threshold: float = 0.9
    pseudo_class_thresholds: tuple[float, ...] = ()  # one per class; overrides pseudo_threshold
    pseudo_balance: str = "prior"
    pseudo_labels: str = "hard"
    pseudo_max_duplication: float = 4.0
    student_randaugment: bool = True
    student_dropout: float | None = None  # None: the same as dropout
    student_epochs: int | None = None  # full-phase epochs of students; None: full.epochs
    student_steps_per_epoch: int | None = None  # None: steps_per_epoch

    def student(self, workdir: str) -> "Config":
        """The config a pseudo-label student trains with: its own workdir, noise and schedule."""
        full = self.full if self.student_epochs is None else dataclasses.replace(
            self.full, epochs=self.student_epochs)
        return dataclasses.replace(
            self, workdir=workdir, full=full,
            dropout=self.dropout if self.student_dropout is None else self.student_dropout,
            steps_per_epoch=self.student_steps_per_epoch or self.steps_per_epoch)

    def validate(self) -> "Config":
        choices = {"strategy": STRATEGIES, "precision": PRECISIONS, "mode": MODES,
                   "class_balance": CLASS_BALANCE, "pseudo_balance": PSEUDO_BALANCE,
                   "pseudo_labels": PSEUDO_LABELS}
        for field, allowed in choices.items():
            if getattr(self, field) not in allowed:
                raise ConfigError(f"--{field} must be one of {', '.join(allowed)}, got {getattr(self, field)!r}")
        if self.image_size < 16:
            raise ConfigError(f"--image_size must be >= 16, got {self.image_size}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.pseudo_label_rounds < 0 or not 0 < self.pseudo_threshold <= 1:
            raise ConfigError("--pseudo_label_rounds must be >= 0 and --pseudo_threshold in (0, 1]")
        if any(not 0 < value <= 1 for value in self.pseudo_class_thresholds):
            raise ConfigError(f"--pseudo_class_thresholds must be in (0, 1], got {self.pseudo_class_thresholds}")
        if self.pseudo_max_duplication < 1:
            raise ConfigError(f"--pseudo_max_duplication must be >= 1, got {self.pseudo_max_duplication}")
        self.head.validate("head phase")
        self.full.validate("full phase")
        return self

    @property
    def total_epochs(self) -> int:
        return self.head.epochs + self.full.epochs
