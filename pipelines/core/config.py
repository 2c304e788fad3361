"""The frozen configuration every pipeline function takes, and the single source of its flags.

Each setting is one field here, with its default and help text: pipelines/core/flags.py generates
the command-line flags from these dataclasses (preprocess/config_flags.py), and a task's own
settings are a dataclass of the task's (`Task.Options`), flattened into the same flags.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from preprocess.config_flags import field
from preprocess.shard_options import ShardOptions

OPTIMIZERS = ("adamw", "sgd")
STRATEGIES = ("auto", "mirrored", "one_device", "multi_worker")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
MODES = ("all", "train", "evaluate", "predict")
CLASS_BALANCE = ("none", "class_weights")
PSEUDO_BALANCE = ("prior", "none")
PSEUDO_SELECTION = ("threshold", "top_k")
PSEUDO_LABELS = ("hard", "soft")


class ConfigError(ValueError):
    """A flag value that cannot work; the message names the flag."""


@dataclasses.dataclass(frozen=True)
class Phase:
    """One training phase: its own optimizer, learning rate and epochs."""

    epochs: int = field(1, "epochs (0 skips the phase).")
    learning_rate: float = field(1e-3, "learning rate.")
    optimizer: str = field("adamw", "optimizer.", choices=OPTIMIZERS)
    weight_decay: float = field(1e-4, "AdamW weight decay.")
    momentum: float = field(0.9, "SGD momentum.")

    def validate(self, name: str) -> None:
        if self.epochs < 0:
            raise ConfigError(f"--{name}_epochs must be >= 0, got {self.epochs}")
        if self.learning_rate <= 0:
            raise ConfigError(f"--{name}_learning_rate must be > 0, got {self.learning_rate}")


@dataclasses.dataclass(frozen=True)
class Config:
    task: str = field("", "", flag=False)
    options: Any = field(None, "", flag=False)  # the task's own settings (Task.Options)
    raw_dir: str = field("", "Raw data in the task's layout (see ../shared/TASKS.md).")
    data_dir: str = field("", "Shards (made from --raw_dir when missing or stale; default <workdir>/data).")
    workdir: str = field("", "Run directory: flags, checkpoints, TensorBoard, metrics, outputs.")
    mode: str = field("all", "all = train + evaluate + predict; evaluate/predict use the workdir's best "
                      "model.", choices=MODES)
    # model
    backbone: str = field("resnet50v2", "Image backbone name from models/backbones.py.")
    weights: str | None = field(None, "imagenet | none | path to a local .h5/.weights.h5 file.")
    image_size: int = field(256, "Square model input size in pixels.")
    dropout: float = field(0.2, "Dropout before the classification head.")
    # training
    batch_size: int = field(128, "Global batch size (over all replicas).")
    head: Phase = field(Phase(epochs=3, learning_rate=1e-3), "Head phase (frozen encoders): ",
                        flag_prefix="head_")
    full: Phase = field(Phase(epochs=10, learning_rate=1e-4), "Full phase (fine-tuning): ",
                        flag_prefix="full_")
    unfreeze_top_blocks: int = field(0, "Full phase: train only the top N image-backbone blocks "
                                     "(0 = the whole backbone).")
    freeze_batchnorm: bool = field(False, "Full phase: keep the image backbone's BatchNorm layers in "
                                   "inference mode (what fine-tuning a pretrained backbone on few images "
                                   "usually wants; a partial unfreeze always does).")
    label_smoothing: float = field(0.0, "Label smoothing of the loss.")
    class_balance: str = field("class_weights", "Counter class imbalance with inverse-frequency class "
                               "weights (single-label tasks).", choices=CLASS_BALANCE)
    steps_per_epoch: int | None = field(None, "Cap on training steps per epoch (smoke runs); default: "
                                        "the whole split.")
    reduce_lr_patience: int = field(3, "ReduceLROnPlateau patience: epochs without progress of the "
                                    "task's plateau metric (spam: the validation mean F1).")
    early_stopping_patience: int = field(5, "EarlyStopping patience, in epochs, on the same metric.")
    # input
    flip: bool = field(True, "Random horizontal flips in training.")
    zoom: float = field(0.2, "Random zoom in training: each image is a window of itself up to this "
                        "share of the side smaller, resized back (0 = off).")
    shift: float = field(0.1, "Random shift in training: windows are this share of the side smaller "
                         "than the image and move anywhere inside it (0 = off).")
    cache: bool = field(True, "Keep the decoded training images in memory after the first epoch when "
                        "they fit in --cache_max_gb (else they are streamed from the shards each epoch).")
    cache_max_gb: float = field(4.0, "Memory the decoded-image cache may use.")
    skip_corrupt_records: bool = field(False, "Go on when a shard fails its checksums: use the records "
                                       "before the damage (copied into the workdir) and say how many were lost; "
                                       "off: stop with an error naming the shard.")
    profile_batch: str = field("", "Write a TensorBoard profiler trace of these training steps of the "
                               "first epoch: one step (5) or a range (5,8); off when empty.")
    # distribution
    strategy: str = field("auto", "auto: MirroredStrategy over every visible GPU, else one device.",
                          choices=STRATEGIES)
    precision: str = field("auto", "auto: mixed_float16 on a GPU that supports it, float32 on CPU.",
                           choices=PRECISIONS)
    seed: int = field(0, "Seed of the split, shuffling, augmentation and initialisation.")
    # preprocessing, when the shards are missing or stale (the split's seed is --seed)
    sharding: ShardOptions = field(ShardOptions(), "Preprocessing: ", flag_exclude=("seed",))
    # semi-supervised rounds (pipelines/core/pseudo_label.py)
    pseudo_label_rounds: int = field(0, "Teacher -> noisy student rounds on the unlabeled split (0 = off).")
    pseudo_threshold: float = field(0.9, "Keep a pseudo-label when the teacher's top probability "
                                    "reaches this.")
    pseudo_class_thresholds: tuple[float, ...] = field((), "One threshold per class (overrides "
                                                       "--pseudo_threshold).")
    pseudo_selection: str = field("threshold", "threshold: keep predictions at or above "
                                  "--pseudo_threshold; top_k: each class's --pseudo_top_k most confident "
                                  "above --pseudo_floor (Noisy Student).", choices=PSEUDO_SELECTION)
    pseudo_top_k: int = field(100, "top_k selection: images kept per predicted class.")
    pseudo_floor: float = field(0.3, "top_k selection: the least top probability kept.")
    pseudo_balance: str = field("prior", "prior: share pseudo-labels among classes as in the labeled "
                                "data (cap / duplicate).", choices=PSEUDO_BALANCE)
    pseudo_labels: str = field("hard", "Student targets: the teacher's class (hard) or its distribution "
                               "(soft).", choices=PSEUDO_LABELS)
    pseudo_max_duplication: float = field(4.0, "Balancing repeats an example of a scarce class at most "
                                          "this many times.")
    student_randaugment: bool = field(True, "Noise for students: RandAugment on top of the usual "
                                      "augmentation.")
    student_dropout: float | None = field(None, "Students' dropout (default: --dropout).")
    student_epochs: int | None = field(None, "Students' full-phase epochs (default: --full_epochs).")
    student_steps_per_epoch: int | None = field(None, "Cap on a student's steps per epoch (default: "
                                                "--steps_per_epoch).")

    @property
    def profile_steps(self) -> tuple[int, int] | None:
        """--profile_batch as Keras' TensorBoard(profile_batch=(first, last)), or None."""
        if not self.profile_batch.strip():
            return None
        try:
            steps = [int(part) for part in self.profile_batch.split(",")]
        except ValueError:
            steps = []
        if len(steps) not in (1, 2) or min(steps) < 1 or steps[-1] < steps[0]:
            raise ConfigError(f"--profile_batch must be a step or a range such as 5,8 (steps count from 1), "
                              f"got {self.profile_batch!r}")
        return steps[0], steps[-1]

    @property
    def shard_options(self) -> ShardOptions:
        return dataclasses.replace(self.sharding, seed=self.seed)

    def student(self, workdir: str) -> "Config":
        """The config a pseudo-label student trains with: its own workdir, noise and schedule."""
        full = self.full if self.student_epochs is None else dataclasses.replace(
            self.full, epochs=self.student_epochs)
        return dataclasses.replace(
            self, workdir=workdir, full=full,
            dropout=self.dropout if self.student_dropout is None else self.student_dropout,
            steps_per_epoch=self.student_steps_per_epoch or self.steps_per_epoch)

    def validate(self) -> "Config":
        """Every check of a value against others or against a range, in one place (choices are
        checked by the flags; this also guards configs built in code)."""
        choices = {"strategy": STRATEGIES, "precision": PRECISIONS, "mode": MODES,
                   "class_balance": CLASS_BALANCE, "pseudo_balance": PSEUDO_BALANCE,
                   "pseudo_selection": PSEUDO_SELECTION,
                   "pseudo_labels": PSEUDO_LABELS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"--{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name, phase in (("head", self.head), ("full", self.full)):
            if phase.optimizer not in OPTIMIZERS:
                raise ConfigError(f"--{name}_optimizer must be one of {', '.join(OPTIMIZERS)}, "
                                  f"got {phase.optimizer!r}")
            phase.validate(name)
        self.profile_steps  # raises on a malformed --profile_batch
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
        if self.pseudo_top_k < 1 or not 0 <= self.pseudo_floor < 1:
            raise ConfigError("--pseudo_top_k must be >= 1 and --pseudo_floor in [0, 1)")
        if self.pseudo_max_duplication < 1:
            raise ConfigError(f"--pseudo_max_duplication must be >= 1, got {self.pseudo_max_duplication}")
        if self.mode in ("all", "train") and self.total_epochs == 0:
            raise ConfigError("--head_epochs and --full_epochs are both 0: nothing to train")
        return self

    @property
    def total_epochs(self) -> int:
        return self.head.epochs + self.full.epochs
