"""Flags shared by the pipeline entry points, and their conversion into a frozen Config.

Order of precedence (tf-models style): Config defaults -> flagfile(s) -> command-line flags. The
effective flags are written to <workdir>/flags.txt, so `--flagfile=<workdir>/flags.txt` repeats a run.
This module imports no TensorFlow: entry points stay cheap to import (worker processes re-import them).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from pipelines.config import Config, ConfigError, Phase

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEFAULTS = Config(task="", raw_dir="", data_dir="", workdir="")

flags.DEFINE_string("raw_dir", None, "Raw data in the task's layout (see ../shared/TASKS.md).")
flags.DEFINE_string("data_dir", None, "Shards (made from --raw_dir when missing or stale).")
flags.DEFINE_string("workdir", None, "Run directory: flags, checkpoints, TensorBoard, metrics, outputs.")
flags.DEFINE_enum("mode", _DEFAULTS.mode, ["all", "train", "evaluate", "predict"],
                  "all = train + evaluate + predict; evaluate/predict use the workdir's best model.")
flags.DEFINE_string("backbone", _DEFAULTS.backbone, "Backbone name from models/backbones.py.")
flags.DEFINE_string("weights", "none", "imagenet | none | path to a local .h5/.weights.h5 file.")
flags.DEFINE_integer("image_size", _DEFAULTS.image_size, "Square model input size in pixels.")
flags.DEFINE_float("dropout", _DEFAULTS.dropout, "Dropout before the classification head.")
flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size, "Global batch size (over all replicas).")
for _phase, _default in (("head", _DEFAULTS.head), ("full", _DEFAULTS.full)):
    flags.DEFINE_integer(f"{_phase}_epochs", _default.epochs, f"Epochs of the {_phase} phase.")
    flags.DEFINE_float(f"{_phase}_learning_rate", _default.learning_rate, f"{_phase} phase learning rate.")
    flags.DEFINE_enum(f"{_phase}_optimizer", _default.optimizer, ["adamw", "sgd"], f"{_phase} phase optimizer.")
    flags.DEFINE_float(f"{_phase}_weight_decay", _default.weight_decay, f"{_phase} phase AdamW weight decay.")
flags.DEFINE_integer("unfreeze_top_blocks", _DEFAULTS.unfreeze_top_blocks,
                     "Full phase: train only the top N backbone blocks (0 = the whole backbone).")
flags.DEFINE_float("label_smoothing", _DEFAULTS.label_smoothing, "Label smoothing of the loss.")
flags.DEFINE_enum("class_balance", _DEFAULTS.class_balance, ["none", "class_weights"],
                  "Counter class imbalance with inverse-frequency class weights.")
flags.DEFINE_integer("steps_per_epoch", None, "Cap on training steps per epoch (smoke runs).")
flags.DEFINE_integer("reduce_lr_patience", _DEFAULTS.reduce_lr_patience,
                     "ReduceLROnPlateau patience: epochs without progress of the task's plateau "
                     "metric (spam: the validation mean F1).")
flags.DEFINE_integer("early_stopping_patience", _DEFAULTS.early_stopping_patience,
                     "EarlyStopping patience, in epochs, on the same metric.")
flags.DEFINE_bool("flip", _DEFAULTS.flip, "Random horizontal flips in training.")
flags.DEFINE_float("zoom", _DEFAULTS.zoom, "Random zoom range in training (0 = off).")
flags.DEFINE_float("shift", _DEFAULTS.shift, "Random shift range, as a fraction of the side (0 = off).")
flags.DEFINE_bool("cache", _DEFAULTS.cache, "Cache decoded, resized images in memory.")
flags.DEFINE_enum("strategy", _DEFAULTS.strategy, ["auto", "mirrored", "one_device", "multi_worker"],
                  "auto: MirroredStrategy over every visible GPU, else one device.")
flags.DEFINE_enum("precision", _DEFAULTS.precision, ["auto", "float32", "mixed_float16", "mixed_bfloat16"],
                  "auto: mixed_float16 on a GPU that supports it, float32 on CPU.")
flags.DEFINE_integer("seed", _DEFAULTS.seed, "Seed of the split, shuffling, augmentation and init.")
flags.DEFINE_integer("num_shards", _DEFAULTS.num_shards, "Preprocessing: train shards.")
flags.DEFINE_float("val_fraction", _DEFAULTS.val_fraction, "Preprocessing: validation share.")
flags.DEFINE_integer("max_side", None, "Preprocessing: shrink larger images once.")
flags.DEFINE_integer("workers", _DEFAULTS.workers, "Preprocessing: decoding processes (0 = per core).")
flags.DEFINE_integer("fallback_class", _DEFAULTS.fallback_class,
                     "Class written for test files that cannot be decoded.")
flags.DEFINE_integer("pseudo_label_rounds", _DEFAULTS.pseudo_label_rounds,
                     "Teacher -> noisy student rounds on the unlabeled split (0 = off).")
flags.DEFINE_float("pseudo_threshold", _DEFAULTS.pseudo_threshold,
                   "Keep a pseudo-label when the teacher's top probability reaches this.")
flags.DEFINE_list("pseudo_class_thresholds", [], "One threshold per class (overrides --pseudo_threshold).")
flags.DEFINE_enum("pseudo_balance", _DEFAULTS.pseudo_balance, ["prior", "none"],
                  "prior: share pseudo-labels among classes as in the labeled data (cap / duplicate).")
flags.DEFINE_enum("pseudo_labels", _DEFAULTS.pseudo_labels, ["hard", "soft"],
                  "Student targets: the teacher's class (hard) or its distribution (soft).")
flags.DEFINE_float("pseudo_max_duplication", _DEFAULTS.pseudo_max_duplication,
                   "Balancing repeats an example of a scarce class at most this many times.")
flags.DEFINE_bool("student_randaugment", _DEFAULTS.student_randaugment,
                  "Noise for students: RandAugment on top of the usual augmentation.")
flags.DEFINE_float("student_dropout", None, "Students' dropout (default: --dropout).")
flags.DEFINE_integer("student_epochs", None, "Students' full-phase epochs (default: --full_epochs).")
flags.DEFINE_integer("student_steps_per_epoch", None,
                     "Cap on a student's steps per epoch (default: --steps_per_epoch).")
FLAGS = flags.FLAGS

# Flags that describe a run; written to <workdir>/flags.txt (absl's own flags are left out).
RUN_FLAGS = tuple(flag.name for flag in FLAGS.get_flags_for_module(__name__))


def resolve_flagfiles(argv: list[str], task: str, _including_dir: str | None = None) -> list[str]:
    """Expands every --flagfile argument in place, recursively.

    A flagfile name is looked up as given, then beside the file that includes it, then in
    experiments/<task>/, so `--flagfile=v1.flags` works from any directory and a demo flagfile can
    nest `--flagfile=v1.flags`. Later flags override earlier ones, as with absl's own flagfiles.
    """
    expanded = []
    for arg in argv:
        if not arg.startswith("--flagfile="):
            expanded.append(arg)
            continue
        path = _find_flagfile(arg.split("=", 1)[1], task, _including_dir)
        with open(path) as handle:
            lines = [line.strip() for line in handle]
        contents = [line for line in lines if line and not line.startswith("#")]
        expanded.extend(resolve_flagfiles(contents, task, os.path.dirname(path)))
    return expanded


def run(main, task: str) -> None:
    """absl's app.run with --flagfile arguments expanded first; a flagfile that is not there is
    an error message and exit status 2, not a traceback."""
    try:
        argv = resolve_flagfiles(sys.argv, task)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    app.run(main, argv=argv)


def _find_flagfile(name: str, task: str, including_dir: str | None) -> str:
    candidates = [name]
    if including_dir:
        candidates.append(os.path.join(including_dir, name))
    candidates.append(os.path.join(REPO_ROOT, "experiments", task, name))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise ConfigError(f"flagfile {name!r} not found (looked in: {', '.join(candidates)})")


def config_from_flags(task: str) -> Config:
    for required in ("workdir",):
        if not FLAGS[required].value:
            raise ConfigError(f"--{required} is required")
    if not FLAGS.data_dir and not FLAGS.raw_dir:
        raise ConfigError("give --data_dir (shards) and/or --raw_dir (raw layout to shard)")
    weights = None if FLAGS.weights in (None, "", "none") else FLAGS.weights
    phases = {
        phase: Phase(epochs=FLAGS[f"{phase}_epochs"].value,
                     learning_rate=FLAGS[f"{phase}_learning_rate"].value,
                     optimizer=FLAGS[f"{phase}_optimizer"].value,
                     weight_decay=FLAGS[f"{phase}_weight_decay"].value)
        for phase in ("head", "full")
    }
    data_dir = FLAGS.data_dir or os.path.join(FLAGS.workdir, "data")
    return Config(
        task=task, raw_dir=FLAGS.raw_dir or "", data_dir=data_dir, workdir=FLAGS.workdir,
        mode=FLAGS.mode, backbone=FLAGS.backbone, weights=weights, image_size=FLAGS.image_size,
        dropout=FLAGS.dropout, batch_size=FLAGS.batch_size, head=phases["head"], full=phases["full"],
        unfreeze_top_blocks=FLAGS.unfreeze_top_blocks, label_smoothing=FLAGS.label_smoothing,
        class_balance=FLAGS.class_balance, steps_per_epoch=FLAGS.steps_per_epoch,
        reduce_lr_patience=FLAGS.reduce_lr_patience, early_stopping_patience=FLAGS.early_stopping_patience,
        flip=FLAGS.flip, zoom=FLAGS.zoom, shift=FLAGS.shift, cache=FLAGS.cache,
        strategy=FLAGS.strategy, precision=FLAGS.precision, seed=FLAGS.seed,
        num_shards=FLAGS.num_shards, val_fraction=FLAGS.val_fraction, max_side=FLAGS.max_side,
        workers=FLAGS.workers, fallback_class=FLAGS.fallback_class,
        pseudo_label_rounds=FLAGS.pseudo_label_rounds, pseudo_threshold=FLAGS.pseudo_threshold,
        pseudo_class_thresholds=_floats("pseudo_class_thresholds"), pseudo_balance=FLAGS.pseudo_balance,
        pseudo_labels=FLAGS.pseudo_labels, pseudo_max_duplication=FLAGS.pseudo_max_duplication,
        student_randaugment=FLAGS.student_randaugment, student_dropout=FLAGS.student_dropout,
        student_epochs=FLAGS.student_epochs, student_steps_per_epoch=FLAGS.student_steps_per_epoch,
    ).validate()


def _floats(name: str) -> tuple[float, ...]:
    try:
        return tuple(float(value) for value in FLAGS[name].value)
    except ValueError:
        raise ConfigError(f"--{name} must be comma-separated numbers, got {FLAGS[name].value}") from None


def effective_flags() -> str:
    """The run's flags as a flagfile (every flag, defaults included, so later default changes
    cannot silently change a repeated run)."""
    lines = []
    for name in RUN_FLAGS:
        value = FLAGS[name].value
        if value is not None:
            lines.append(FLAGS[name].serialize())
    return "\n".join(lines) + "\n"
