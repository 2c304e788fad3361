"""One set-up for every run that trains (pipeline, tuning, pseudo-label rounds), and the steps
built on it: the model, the training inputs, predictions over shards.

`prepare(config, task)` does the checks and work a run needs before its first model: pretrained
weights can be had (fail fast, before minutes of preprocessing), shards are up to date, the
precision policy and the distribution strategy are set, and says what it chose.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os

import keras
import numpy as np
import tensorflow as tf

from pipelines.core import corrupt, distribute, inputs, multi_worker, training
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

    salvaged: dict[str, str] = dataclasses.field(default_factory=dict)  # damaged shard -> readable copy

    def paths(self, split: str) -> list[str]:
        return [self.salvaged.get(path, path) for path in writer.shard_paths(self.config.data_dir, split,
                                                                              self.manifest)]


def prepare(config: Config, task) -> Context:
    task.validate(config)
    weights = task.resolve_weights(config)  # first: an unusable --weights fails before anything else
    if config.strategy == "multi_worker":
        manifest, weights, strategy = _prepare_multi_worker(config, task, weights)
    else:
        manifest = prepare_data(config)
        weights = task.prepare(config, manifest, weights)
        strategy = distribute.make_strategy(config.strategy)
    salvaged = {}
    if config.skip_corrupt_records:
        manifest, salvaged = corrupt.salvage(config.data_dir, manifest, os.path.join(config.workdir, "salvaged"))
    precision = distribute.set_precision(config.precision)
    print(f"{task.name}: {strategy.num_replicas_in_sync} replica(s) "
          f"({type(strategy).__name__}), precision {precision}")
    return Context(config, task, manifest, weights, precision, strategy, salvaged)


def _prepare_multi_worker(config: Config, task, weights):
    """The strategy first (it joins the cluster before this process runs any TensorFlow op), then
    the shards and the task's preparation (e.g. word embeddings under --data_dir): made by the
    chief alone while the others wait, then read by the others."""
    strategy = distribute.make_strategy("multi_worker")
    cluster = multi_worker.cluster_of(strategy)
    if cluster.is_chief:
        manifest = prepare_data(config)
        weights = task.prepare(config, manifest, weights)
    multi_worker.from_chief(strategy, [0])  # a barrier: the chief's shards are complete
    if not cluster.is_chief:
        manifest = writer.read_manifest(config.data_dir)
        weights = task.prepare(config, manifest, weights)
    # Every worker checks the same manifest, so a shortage stops them all with the same message.
    multi_worker.worker_input(manifest["splits"].get("train", {}).get("shards", []), cluster,
                              strategy.num_replicas_in_sync, config.batch_size, config.steps_per_epoch)
    return manifest, weights, strategy


def prepare_data(config: Config) -> dict:
    """Shards from --raw_dir when they are missing or stale (the preprocessing job decides)."""
    if config.raw_dir:
        return jobs.build(config.task, config.raw_dir, config.data_dir, config.shard_options)
    return writer.read_manifest(config.data_dir)


def build_model(context: Context, config: Config | None = None, pretrained: bool = True,
                distributed: bool = True) -> keras.Model:
    """The task's model under the run's strategy, seeded (`config` defaults to the run's);
    `pretrained=False` skips loading pretrained weights that a checkpoint will replace;
    `distributed=False` builds it outside the strategy (plain variables, on this host alone)."""
    config = config or context.config
    keras.utils.set_random_seed(config.seed)
    with context.strategy.scope() if distributed else contextlib.nullcontext():
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
    batch_size, steps = config.batch_size, config.steps_per_epoch
    steps_per_epoch = None
    cluster = multi_worker.cluster_of(context.strategy)
    if cluster is not None:
        # This worker's shards, in replica batches; the same number of steps on every worker (so
        # each pass is capped, which also means the decoded images are not cached).
        shards = manifest["splits"]["train"]["shards"]
        share = multi_worker.worker_input(shards, cluster, context.strategy.num_replicas_in_sync,
                                          config.batch_size, config.steps_per_epoch)
        train_paths = [path for path, shard in zip(context.paths("train"), shards) if shard["file"] in share.files]
        records, batch_size, steps = share.records, share.replica_batch, share.batches_per_epoch
        steps_per_epoch = share.steps_per_epoch
        print(f"worker {cluster.rank} of {cluster.workers}: {len(share.files)} training shard(s), {records} "
              f"records, {share.steps_per_epoch} steps per epoch of {config.batch_size} examples")

    def train(first_epoch: int, end_epoch: int, cache_max_bytes: int = cache_bytes):
        return inputs.train_dataset(
            train_paths, features_fn(context, config),
            functools.partial(task.target, config=config, num_classes=len(class_names)), batch_size,
            records, augmenter, config.seed, cache_max_bytes, steps, label_weights=weights,
            first_epoch=first_epoch, end_epoch=end_epoch)

    val_truth = inputs.read_split(val_paths)
    # A few augmented inputs for TensorBoard, from the first records alone, in-graph: an iterator
    # dropped half-way (next(iter(...))) blocks whichever later moment tears it down until its
    # background work ends (seconds of shuffle filling; benchmarks/train_step.py, README).
    shown = min(8, records)
    sample = inputs.predict_dataset(train_paths, features_fn(context, config), shown, shown).take(1).get_single_element()
    if "image" in sample and augmenter is not None:
        sample = {**sample, "image": augmenter(sample["image"], tf.constant([config.seed, 0], tf.int64))}
    return training.TrainingData(
        train=train, steps_per_epoch=steps_per_epoch or inputs.epoch_steps(records, batch_size, steps),
        val=inputs.predict_dataset(val_paths, features_fn(context, config), config.batch_size, len(val_truth)),
        val_truth=val_truth, class_names=class_names,
        sample_images=sample.get("image"))


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
