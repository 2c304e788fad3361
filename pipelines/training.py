"""The two training phases every image pipeline shares: head warm-up, then fine-tuning.

Phase 1 trains the new head on a frozen backbone (BatchNorm in inference mode); phase 2 unfreezes the
whole backbone or its top N blocks with its own optimizer and learning rate. Each phase has its own
BackupAndRestore directory, and a finished phase leaves a marker, so a killed run resumes in the right
phase at the right epoch. The best weights over both phases are chosen on the task's validation
metric computed over the whole validation set.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from models import classifier
from pipelines import callbacks as pipeline_callbacks
from pipelines.config import Config, Phase


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """What the phases need from the input side, already built by the pipeline."""

    train: tf.data.Dataset
    val: tf.data.Dataset
    val_labels: np.ndarray
    class_names: tuple[str, ...]
    class_weight: dict[int, float] | None = None
    sample_images: tf.Tensor | None = None


@dataclasses.dataclass(frozen=True)
class Objective:
    """The validation metric that picks checkpoints: name, y_true/y_pred -> float, higher is better.

    `plateau_name`/`plateau_fn`, when given, is what the learning-rate schedule and early stopping
    watch instead: a geometric mean stays at 0 while any one class is never predicted right, so
    early in training it is flat while the model improves, and a plateau rule on it would cut the
    learning rate and stop a run that is still learning (seen on the demo with 64 labels)."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    plateau_name: str | None = None
    plateau_fn: Callable[[np.ndarray, np.ndarray], float] | None = None

    def metrics(self) -> dict[str, Callable[[np.ndarray, np.ndarray], float]]:
        """Every validation metric to log, the objective first."""
        extra = {self.plateau_name: self.plateau_fn} if self.plateau_name else {}
        return {self.name: self.fn, **extra}

    @property
    def plateau_monitor(self) -> str:
        return f"val_{self.plateau_name or self.name}"


def make_optimizer(phase: Phase) -> keras.optimizers.Optimizer:
    if phase.optimizer == "sgd":
        return keras.optimizers.SGD(phase.learning_rate, momentum=phase.momentum)
    return keras.optimizers.AdamW(phase.learning_rate, weight_decay=phase.weight_decay)


def compile_for_phase(model: keras.Model, phase: Phase, label_smoothing: float) -> None:
    """Under a mixed_float16 policy Keras wraps the optimizer in a LossScaleOptimizer itself."""
    model.compile(
        optimizer=make_optimizer(phase),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )


def train(config: Config, model: keras.Model, data: TrainingData, objective: Objective,
          strategy: tf.distribute.Strategy) -> dict:
    """Runs (or resumes) both phases; returns the best checkpoint's state. Weights of the best
    epoch are left in <workdir>/checkpoints/best.weights.h5."""
    checkpoint_dir = os.path.join(config.workdir, "checkpoints")
    os.makedirs(checkpoint_dir, exist_ok=True)
    best = pipeline_callbacks.BestCheckpoint(checkpoint_dir, f"val_{objective.name}")
    phases = [("head", config.head, 0), ("full", config.full, config.head.epochs)]
    for name, phase, first_epoch in phases:
        done_marker = os.path.join(checkpoint_dir, f"{name}.done")
        last_weights = os.path.join(checkpoint_dir, f"{name}_last.weights.h5")
        if os.path.exists(done_marker):
            model.load_weights(last_weights)
            print(f"phase {name}: already complete, skipped")
            continue
        if phase.epochs == 0:
            continue
        with strategy.scope():
            if name == "head":
                classifier.freeze_backbone(model)
            else:
                classifier.unfreeze_backbone(model, config.unfreeze_top_blocks or None)
            compile_for_phase(model, phase, config.label_smoothing)
        trainable = sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
        print(f"phase {name}: epochs {first_epoch + 1}-{first_epoch + phase.epochs}, "
              f"{phase.optimizer} lr {phase.learning_rate:g}, {trainable:,} trainable parameters")
        model.fit(
            data.train,
            initial_epoch=first_epoch,
            epochs=first_epoch + phase.epochs,
            class_weight=data.class_weight,
            shuffle=False,  # the dataset shuffles itself; Keras would only warn that it cannot
            callbacks=_phase_callbacks(config, name, data, objective, best),
            verbose=2 if os.environ.get("CI") else 1,
        )
        model.save_weights(last_weights)
        with open(done_marker, "w") as handle:
            json.dump({"epochs": first_epoch + phase.epochs}, handle)
    state = best.best()
    if state is None:
        raise RuntimeError("training produced no checkpoint: no epoch reported a validation metric")
    return state


def _phase_callbacks(config, name, data, objective, best) -> list[keras.callbacks.Callback]:
    log_dir = os.path.join(config.workdir, "tensorboard", name)
    monitor = objective.plateau_monitor
    return [
        keras.callbacks.BackupAndRestore(os.path.join(config.workdir, "backup", name)),
        keras.callbacks.TerminateOnNaN(),
        # Metrics first: the callbacks after it read val_<metric> from the same logs dict.
        pipeline_callbacks.ValidationMetrics(data.val, data.val_labels, data.class_names,
                                             objective.metrics(), log_dir, data.sample_images),
        best,
        keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode="max", factor=0.2,
                                          patience=config.reduce_lr_patience, min_lr=1e-7),
        keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=config.early_stopping_patience),
        keras.callbacks.TensorBoard(log_dir=log_dir, histogram_freq=0, write_graph=False),
    ]
