"""The two training phases every pipeline shares: head warm-up, then fine-tuning.

Phase 1 trains the new head on frozen encoders (BatchNorm in inference mode); phase 2 unfreezes the
encoders (or the image backbone's top N blocks) with its own optimizer and learning rate. Each phase has its own
BackupAndRestore directory, and a finished phase leaves a marker, so a killed run resumes in the right
phase at the right epoch. The best weights over both phases are chosen on the task's validation
metric computed over the whole validation set.

On one host each phase is a `model.fit`; under --strategy=multi_worker it is
`multi_worker.fit`, a loop of our own that drives the same callbacks (Keras' fit fails under that
strategy), with the chief's workdir deciding what is done and where to resume.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from models import classifier
from pipelines.core import callbacks as pipeline_callbacks
from pipelines.core import multi_worker
from pipelines.core.config import Config, Phase
from pipelines.core.splits import Split


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """What the phases need from the input side, already built by the pipeline."""

    train: Callable[[int, int], tf.data.Dataset]  # (first, end epoch) -> inputs.train_dataset
    steps_per_epoch: int
    val: tf.data.Dataset  # a padded inputs.predict_dataset
    val_truth: Split
    class_names: tuple[str, ...]
    sample_images: tf.Tensor | None = None


def make_optimizer(phase: Phase) -> keras.optimizers.Optimizer:
    if phase.optimizer == "sgd":
        return keras.optimizers.SGD(phase.learning_rate, momentum=phase.momentum)
    return keras.optimizers.AdamW(phase.learning_rate, weight_decay=phase.weight_decay)


def compile_for_phase(model: keras.Model, task, phase: Phase, config: Config) -> None:
    """Under a mixed_float16 policy Keras wraps the optimizer in a LossScaleOptimizer itself."""
    model.compile(optimizer=make_optimizer(phase), loss=task.loss(config), metrics=task.train_metrics())


def set_phase(model: keras.Model, task, phase_name: str, unfreeze_top_blocks: int = 0,
              train_batchnorm: bool = True) -> None:
    """Head phase: the task's encoders frozen (a frozen Keras 3 BatchNormalization runs in
    inference mode). Full phase: every encoder trainable, or only the image backbone's top N
    blocks when `unfreeze_top_blocks` is set; the backbone's BatchNorm stays frozen unless
    `train_batchnorm`."""
    for encoder in task.encoders(model):
        encoder.trainable = phase_name != "head"
    if phase_name != "head" and "backbone" in {layer.name for layer in model.layers}:
        classifier.unfreeze_backbone(model, unfreeze_top_blocks or None, train_batchnorm)


def train(config: Config, model: keras.Model, data: TrainingData, task,
          strategy: tf.distribute.Strategy) -> dict:
    """Runs (or resumes) both phases; returns the best checkpoint's state. Weights of the best
    epoch are left in <workdir>/checkpoints/best.weights.h5."""
    checkpoint_dir = os.path.join(config.workdir, "checkpoints")
    os.makedirs(checkpoint_dir, exist_ok=True)
    best = pipeline_callbacks.BestCheckpoint(checkpoint_dir, f"val_{task.objective}")
    phases = [("head", config.head, 0), ("full", config.full, config.head.epochs)]
    cluster = multi_worker.cluster_of(strategy)  # None on one host
    for name, phase, first_epoch in phases:
        done_marker = os.path.join(checkpoint_dir, f"{name}.done")
        last_weights = os.path.join(checkpoint_dir, f"{name}_last.weights.h5")
        done = os.path.exists(done_marker)
        if cluster is not None:  # the chief's workdir decides, its weights are everyone's
            done = bool(multi_worker.from_chief(strategy, [done])[0])
        if done:
            if cluster is None or cluster.is_chief:
                model.load_weights(last_weights)
            if cluster is not None:
                multi_worker.broadcast_variables(strategy, model.variables)
            print(f"phase {name}: already complete, skipped")
            continue
        if phase.epochs == 0:
            continue
        with strategy.scope():
            set_phase(model, task, name, config.unfreeze_top_blocks, not config.freeze_batchnorm)
            compile_for_phase(model, task, phase, config)
        trainable = sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
        print(f"phase {name}: epochs {first_epoch + 1}-{first_epoch + phase.epochs}, "
              f"{phase.optimizer} lr {phase.learning_rate:g}, {trainable:,} trainable parameters")
        backup_dir = os.path.join(config.workdir, "backup", name)
        verbose = 2 if os.environ.get("CI") else 1
        end_epoch = first_epoch + phase.epochs
        resume_at = resume_epoch(backup_dir, first_epoch)
        if resume_at >= end_epoch:
            # Killed after the phase's last backup and before its done marker: nothing to run
            # (a fit would build a dataset of no epochs and fail), the backup is the phase's end.
            with strategy.scope():
                model.optimizer.build(model.trainable_variables)
            model.load_weights(os.path.join(backup_dir, "latest.weights.h5"))
        elif cluster is None:
            # Keras never clears the epoch a fit's BackupAndRestore restored (model._initial_epoch,
            # read as `self._initial_epoch or initial_epoch`): the next phase would start there.
            model._initial_epoch = None
            model.fit(
                data.train(resume_at, end_epoch),
                steps_per_epoch=data.steps_per_epoch,
                initial_epoch=first_epoch,
                epochs=end_epoch,
                shuffle=False,  # the dataset shuffles itself; Keras would only warn that it cannot
                callbacks=phase_callbacks(config, name, data, task, best),
                verbose=verbose,
            )
        else:  # Keras' fit fails under MultiWorkerMirroredStrategy: the same phase, our own loop
            multi_worker.fit(model, strategy, data.train, resume_at, end_epoch, data.steps_per_epoch,
                             phase_callbacks(config, name, data, task, best, strategy),
                             config.batch_size, task.train_metrics, verbose)
        pipeline_callbacks.save_weights_atomically(model, last_weights)
        with open(done_marker, "w") as handle:
            json.dump({"epochs": first_epoch + phase.epochs}, handle)
        shutil.rmtree(backup_dir, ignore_errors=True)  # kept until the done marker exists
    state = best.best()
    if state is None and cluster is not None and not cluster.is_chief:
        return {}  # a scratch workdir's record; the chief's is the run's
    if state is None:
        raise RuntimeError("training produced no checkpoint: no epoch reported a validation metric")
    return state


def resume_epoch(backup_dir: str, first_epoch: int) -> int:
    """The epoch BackupAndRestore will resume this phase at (it records the next epoch to run in
    training_metadata.json), so that the input starts at that epoch's batches."""
    try:
        with open(os.path.join(backup_dir, "training_metadata.json")) as handle:
            return max(first_epoch, int(json.load(handle)["epoch"]))
    except (OSError, ValueError, KeyError, TypeError):
        return first_epoch


def phase_callbacks(config, name, data, task, best, strategy=None) -> list[keras.callbacks.Callback]:
    """The plateau rules watch `task.plateau_metric`, the checkpoint `task.objective`: a geometric
    mean stays at 0 while any one class is never predicted right, so early in training it is flat
    while the model improves, and a plateau rule on it would cut the learning rate and stop a run
    that is still learning (seen on the spam demo with 64 labels).

    `strategy`: a MultiWorkerMirroredStrategy's workers each predict the validation split on their
    own, and then all take the chief's figures (multi_worker.AgreeWithChief)."""
    log_dir = os.path.join(config.workdir, "tensorboard", name)
    monitor = f"val_{task.plateau_metric}"
    cluster = multi_worker.cluster_of(strategy) if strategy is not None else None
    validation = pipeline_callbacks.ValidationMetrics(
        data.val, data.val_truth, task, data.class_names, log_dir, data.sample_images,
        predict=None if cluster is None else multi_worker.LocalPredictor())
    return [
        ReseedPerEpoch(),
        keras.callbacks.TerminateOnNaN(),
        # Metrics first: the callbacks after it read val_<metric> from the same logs dict.
        validation,
        *([] if cluster is None else [multi_worker.AgreeWithChief(strategy)]),
        best,
        keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode="max", factor=0.2,
                                          patience=config.reduce_lr_patience, min_lr=1e-7),
        keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=config.early_stopping_patience),
        keras.callbacks.TensorBoard(log_dir=log_dir, histogram_freq=0, write_graph=False,
                                    profile_batch=(config.profile_steps or 0) if name == _first_phase(config) else 0),
        # Last: an epoch is backed up once its validation metrics, best checkpoint and plateau
        # rules are done; the phase's end removes the backup, after its done marker (train()).
        keras.callbacks.BackupAndRestore(os.path.join(config.workdir, "backup", name),
                                         delete_checkpoint=False),
    ]


def _first_phase(config: Config) -> str:
    """The phase whose first epoch --profile_batch traces (the first one that trains)."""
    return "head" if config.head.epochs else "full"


class ReseedPerEpoch(keras.callbacks.Callback):
    """Dropout draws its masks from SeedGenerator states (a seed and a call counter) that neither
    save_weights nor BackupAndRestore keep, so a resumed run restarted the counter at 0. Setting
    the counter from the epoch at each epoch's start makes epoch e's masks the same whether or not
    the run was resumed (and whatever ran before it in the process)."""

    def on_epoch_begin(self, epoch, logs=None):
        for variable in self.model.variables:
            if variable.name == "seed_generator_state":
                seed = keras.ops.convert_to_numpy(variable)[0]
                variable.assign(np.array([seed, epoch << 20], dtype=keras.ops.convert_to_numpy(variable).dtype))
