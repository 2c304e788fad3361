"""One set-up for every run that trains (pipeline, tuning, pseudo-label rounds), and the steps
built on it: the model, the training inputs, predictions over shards.

`prepare(config, task)` does the checks and work a run needs before its first model: pretrained
weights can be had (fail fast, before minutes of preprocessing), shards are up to date, the
precision policy and the distribution strategy are set, and says what it chose.
"""

from __future__ import annotations

import dataclasses
import functools

import keras
import numpy as np
import tensorflow as tf

from pipelines.core import distribute, inputs, training
from pipelines.core.config import Config, ConfigError
from pipelines.core.splits import Predictions
from preprocess import jobs, writer
from preprocess.progress import Progress


@dataclasses.dataclass(frozen=True)
class Context:
    """What a run works with once set up."""

    config: Config
    task: object  # pipelines.core.task.Task
    manifest: dict
    weights: object  # what task.resolve_weights returned: build_model takes it
    precision: str
    strategy: tf.distribute.Strategy

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.task.class_names(self.manifest)

    def paths(self, split: str) -> list[str]:
        return writer.shard_paths(self.config.data_dir, split, self.manifest)


def prepare(config: Config, task) -> Context:
    task.validate(config)
    weights = task.resolve_weights(config)  # first: an unusable --weights fails before anything else
    manifest = prepare_data(config)
    weights = task.prepare(config, manifest, weights)
    precision = distribute.set_precision(config.precision)
    strategy = distribute.make_strategy(config.strategy)
    print(f"{task.name}: {strategy.num_replicas_in_sync} replica(s) "
          f"({type(strategy).__name__}), precision {precision}")
    return Context(config, task, manifest, weights, precision, strategy)


def prepare_data(config: Config) -> dict:
    """Shards from --raw_dir when they are missing or stale (the preprocessing job decides)."""
    if config.raw_dir:
        return jobs.build(config.task, config.raw_dir, config.data_dir, config.shard_options)
    return writer.read_manifest(config.data_dir)


def build_model(context: Context, config: Config | None = None, pretrained: bool = True) -> keras.Model:
    """The task's model under the run's strategy, seeded (`config` defaults to the run's);
    `pretrained=False` skips loading pretrained weights that a checkpoint will replace."""
    config = config or context.config
    keras.utils.set_random_seed(config.seed)
    with context.strategy.scope():
        return context.task.build_model(config, len(context.class_names),
                                        context.weights if pretrained else None)


def features_fn(context: Context, config: Config | None = None):
    return functools.partial(context.task.features, config=config or context.config)


def training_data(context: Context, config: Config | None = None, extra_train_paths=(),
                  extra_records: int = 0, strong_augmentation: bool = False) -> training.TrainingData:
    """The train (plus any pseudo-label shards, `extra_records` records in all) and validation
    inputs of one training run."""
    config = config or context.config
    task, manifest, class_names = context.task, context.manifest, context.class_names
    train_paths = context.paths("train") + list(extra_train_paths)
    val_paths = context.paths("val")
    if not val_paths:
        raise ConfigError(f"{config.data_dir} has no validation split: preprocess with --val_fraction > 0")
    augmenter = inputs.make_augmenter(config.flip, config.zoom, config.shift, config.seed,
                                      randaugment=strong_augmentation)
    records = manifest["splits"]["train"]["records"] + extra_records
    weights = task.class_weights(config, manifest)
    if weights is not None:
        shown = ", ".join(f"{name} {weight:.2f}" for name, weight in list(zip(class_names, weights))[:12])
        print(f"class weights: {shown}{' ...' if len(class_names) > 12 else ''}")
    cache_bytes = int(config.cache_max_gb * 2**30) if config.cache else 0

    def train(first_epoch: int, end_epoch: int, cache_max_bytes: int = cache_bytes):
        return inputs.train_dataset(
            train_paths, features_fn(context, config),
            functools.partial(task.target, config=config, num_classes=len(class_names)), config.batch_size,
            records, augmenter, config.seed, cache_max_bytes, config.steps_per_epoch, label_weights=weights,
            first_epoch=first_epoch, end_epoch=end_epoch)

    val_truth = inputs.read_split(val_paths)
    sample = next(iter(train(0, 1, cache_max_bytes=0)))[0]  # uncached: a partial pass would fill no cache
    return training.TrainingData(
        train=train, steps_per_epoch=inputs.epoch_steps(records, config.batch_size, config.steps_per_epoch),
        val=inputs.predict_dataset(val_paths, features_fn(context, config), config.batch_size, len(val_truth)),
        val_truth=val_truth, class_names=class_names,
        sample_images=sample["image"][:8] if "image" in sample else None)


def predict(context: Context, model: keras.Model, paths: list[str], label: str = "predicting") -> Predictions:
    """Probabilities for every record of the shards, with keys and input rows, and a progress line.

    model.predict, not a loop of predict_on_batch: under MirroredStrategy only predict splits
    batches across replicas and gathers the outputs correctly."""
    truth = inputs.read_split(paths) if paths else None
    if not truth:
        return Predictions([], np.zeros([0], np.int64), np.zeros((0, len(context.class_names)), np.float32))
    batch_size = context.config.batch_size
    progress = Progress(len(truth), label)
    dataset = inputs.predict_dataset(paths, features_fn(context), batch_size, len(truth))
    probabilities = model.predict(dataset, verbose=0, callbacks=[_ProgressCallback(progress, batch_size)])
    progress.close()
    return Predictions(truth.keys, truth.indices, inputs.without_padding(probabilities, len(truth)))


class _ProgressCallback(keras.callbacks.Callback):
    def __init__(self, progress: Progress, batch_size: int):
        super().__init__()
        self.progress, self.batch_size = progress, batch_size

    def on_predict_batch_end(self, batch, logs=None):
        self.progress.update(min(self.batch_size, self.progress.total - self.progress.done))
