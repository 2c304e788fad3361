"""The shared image-classification run: shards -> two-phase training -> evaluation -> predictions.

A task (pipelines/spam.py, ...) supplies a `TaskSpec`: its checkpoint objective and how to turn test
predictions into its submission file. Everything else is here, once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from models import backbones, classifier
from pipelines import distribute, evaluation, export, inputs, training
from pipelines.config import Config, ConfigError
from preprocess import jobs, writer
from preprocess.progress import Progress


@dataclasses.dataclass(frozen=True)
class Predictions:
    keys: list[str]
    probabilities: np.ndarray


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    name: str
    objective: training.Objective
    scored_classes: tuple[int, ...] | None
    # (config, manifest, test predictions) -> {"submission": path, ...score fields}
    write_submission: Callable[[Config, dict, Predictions], dict]


def run(config: Config, task: TaskSpec, flagfile_text: str = "") -> dict:
    """Everything `--mode` asks for; returns what metrics.json holds."""
    started = time.monotonic()
    # Cheap checks first: an unusable --weights must fail before minutes of preprocessing.
    weights = backbones.resolve_weights(config.backbone, config.weights)
    os.makedirs(config.workdir, exist_ok=True)
    if flagfile_text:
        with open(os.path.join(config.workdir, "flags.txt"), "w") as handle:
            handle.write(flagfile_text)
    manifest = prepare_data(config)
    precision = distribute.set_precision(config.precision)
    strategy = distribute.make_strategy(config.strategy)
    print(f"{task.name}: {strategy.num_replicas_in_sync} replica(s) "
          f"({type(strategy).__name__}), precision {precision}")
    class_names = tuple(manifest["class_names"])
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = classifier.build_image_classifier(config.backbone, len(class_names), config.image_size,
                                                  dropout=config.dropout, weights=weights)
    best_weights = os.path.join(config.workdir, "checkpoints", "best.weights.h5")
    metrics_path = os.path.join(config.workdir, "metrics.json")
    results = _read_json(metrics_path) if config.mode != "all" else {}
    results.update({"task": task.name, "precision": precision,
                    "replicas": strategy.num_replicas_in_sync})

    if config.mode in ("all", "train"):
        data = _training_data(config, manifest, class_names)
        results["best_checkpoint"] = training.train(config, model, data, task.objective, strategy)
    if not os.path.exists(best_weights):
        raise FileNotFoundError(f"{best_weights} not found: train first (--mode=train or all)")
    model.load_weights(best_weights)

    if config.mode in ("all", "train", "evaluate"):
        results["validation"] = evaluate(config, model, manifest, task)
        print(evaluation.format_report(results["validation"], class_names))
    if config.mode in ("all", "predict"):
        test_paths = writer.shard_paths(config.data_dir, "test", manifest)
        predictions = predict(model, test_paths, config) if test_paths else Predictions([], np.zeros((0, len(class_names))))
        results["test"] = task.write_submission(config, manifest, predictions)
    if config.mode in ("all", "train"):
        results["export"] = export.export_model(model, config.workdir, config.image_size)
    results["seconds"] = round(time.monotonic() - started, 1)
    with open(metrics_path, "w") as handle:
        json.dump(results, handle, indent=2)
    print(f"{task.name}: outputs in {config.workdir} (metrics.json, flags.txt, checkpoints/, "
          f"tensorboard/, submission and exported model); "
          f"watch with: tensorboard --logdir {os.path.join(config.workdir, 'tensorboard')}")
    return results


def prepare_data(config: Config) -> dict:
    """Shards from --raw_dir when they are missing or stale (the preprocessing job decides)."""
    if config.raw_dir:
        options = writer.ShardOptions(num_shards=config.num_shards, val_fraction=config.val_fraction,
                                      seed=config.seed, workers=config.workers, max_side=config.max_side)
        return jobs.build(config.task, config.raw_dir, config.data_dir, options)
    return writer.read_manifest(config.data_dir)


def _training_data(config: Config, manifest: dict, class_names) -> training.TrainingData:
    train_paths = writer.shard_paths(config.data_dir, "train", manifest)
    val_paths = writer.shard_paths(config.data_dir, "val", manifest)
    if not val_paths:
        raise ConfigError(f"{config.data_dir} has no validation split: preprocess with --val_fraction > 0")
    augmenter = inputs.make_augmenter(config.flip, config.zoom, config.shift, config.seed)
    train = inputs.train_dataset(train_paths, config.image_size, config.batch_size, len(class_names),
                                 augmenter, config.seed, config.cache, config.steps_per_epoch)
    _, val_labels = inputs.keys_and_labels(val_paths)
    weights = None
    if config.class_balance == "class_weights":
        weights = inputs.class_weights(manifest["splits"]["train"]["class_histogram"], class_names)
        print("class weights: " + ", ".join(f"{name} {weights[index]:.2f}"
                                           for index, name in enumerate(class_names)))
    sample_images = next(iter(train))[0][:8]
    return training.TrainingData(
        train=train, val=inputs.predict_dataset(val_paths, config.image_size, config.batch_size),
        val_labels=val_labels, class_names=class_names, class_weight=weights,
        sample_images=sample_images)


def evaluate(config: Config, model: keras.Model, manifest: dict, task: TaskSpec) -> dict:
    val_paths = writer.shard_paths(config.data_dir, "val", manifest)
    predictions = predict(model, val_paths, config, label="evaluating val")
    _, y_true = inputs.keys_and_labels(val_paths)
    y_pred = np.argmax(predictions.probabilities, axis=-1)
    return evaluation.classification_report(y_true, y_pred, manifest["class_names"], task.scored_classes)


def predict(model: keras.Model, paths: list[str], config: Config, label: str = "predicting") -> Predictions:
    """Class probabilities for every record of the shards, with a progress line.

    model.predict, not a loop of predict_on_batch: under MirroredStrategy only predict splits
    batches across replicas and gathers the outputs correctly."""
    keys, _ = inputs.keys_and_labels(paths)
    progress = Progress(len(keys), label)
    probabilities = model.predict(inputs.predict_dataset(paths, config.image_size, config.batch_size),
                                  verbose=0, callbacks=[_ProgressCallback(progress, config.batch_size)])
    progress.close()
    if len(probabilities) != len(keys):
        raise RuntimeError(f"{len(probabilities)} predictions for {len(keys)} records")
    return Predictions(keys, np.asarray(probabilities, np.float32))


class _ProgressCallback(keras.callbacks.Callback):
    def __init__(self, progress: Progress, batch_size: int):
        super().__init__()
        self.progress, self.batch_size = progress, batch_size

    def on_predict_batch_end(self, batch, logs=None):
        self.progress.update(min(self.batch_size, self.progress.total - self.progress.done))


def _read_json(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        return json.load(handle)
