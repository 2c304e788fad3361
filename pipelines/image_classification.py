"""The shared image-classification run: shards -> two-phase training -> evaluation -> predictions.

A task (pipelines/spam.py, ...) supplies a `TaskSpec`: its checkpoint objective and how to turn test
predictions into its submission file. Everything else is here, once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from models import backbones, classifier
from pipelines import distribute, evaluation, export, inputs, pseudo_label, training
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
        with open(os.path.join(config.workdir, run_record_name(config.mode)), "w") as handle:
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
    metrics_path = os.path.join(config.workdir, "metrics.json")
    results = _read_json(metrics_path) if config.mode != "all" else {}
    results.update({"task": task.name, "precision": precision,
                    "replicas": strategy.num_replicas_in_sync})

    if config.mode in ("all", "train"):
        data = training_data(config, manifest, class_names)
        results["best_checkpoint"] = training.train(config, model, data, task.objective, strategy)
        if config.pseudo_label_rounds:
            results["pseudo_label_rounds"] = pseudo_label_rounds(config, manifest, task, strategy,
                                                                 results["best_checkpoint"])
        elif os.path.exists(os.path.join(config.workdir, "checkpoints", "final.weights.h5")):
            os.remove(os.path.join(config.workdir, "checkpoints", "final.weights.h5"))  # stale round
    final_weights = final_weights_path(config.workdir)
    if not os.path.exists(final_weights):
        raise FileNotFoundError(f"{final_weights} not found: train first (--mode=train or all)")
    model.load_weights(final_weights)

    if config.mode in ("all", "train", "evaluate"):
        results["validation"] = evaluate(config, model, manifest, task)
        print(evaluation.format_report(results["validation"], class_names))
    if config.mode in ("all", "predict"):
        test_paths = writer.shard_paths(config.data_dir, "test", manifest)
        if test_paths:
            predictions = predict(model, test_paths, config)
        else:
            predictions = Predictions([], np.zeros((0, len(class_names)), np.float32))
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


def run_record_name(mode: str) -> str:
    """flags.txt records the training run (`--flagfile=<workdir>/flags.txt` repeats it); a later
    --mode=evaluate or predict in the same workdir records its flags beside it, not over it."""
    return "flags.txt" if mode in ("all", "train") else f"flags.{mode}.txt"


def prepare_data(config: Config) -> dict:
    """Shards from --raw_dir when they are missing or stale (the preprocessing job decides)."""
    if config.raw_dir:
        options = writer.ShardOptions(num_shards=config.num_shards, val_fraction=config.val_fraction,
                                      seed=config.seed, workers=config.workers, max_side=config.max_side)
        return jobs.build(config.task, config.raw_dir, config.data_dir, options)
    return writer.read_manifest(config.data_dir)


def final_weights_path(workdir: str) -> str:
    """The weights evaluation, prediction and export use: the best pseudo-label round's when rounds
    ran, else the best checkpoint of supervised training."""
    chosen = os.path.join(workdir, "checkpoints", "final.weights.h5")
    return chosen if os.path.exists(chosen) else os.path.join(workdir, "checkpoints", "best.weights.h5")


def training_data(config: Config, manifest: dict, class_names, extra_train_paths=(), extra_records: int = 0,
                  strong_augmentation: bool = False) -> training.TrainingData:
    """The train (plus any pseudo-label shards, `extra_records` records in all) and validation
    inputs of one training run."""
    train_paths = writer.shard_paths(config.data_dir, "train", manifest) + list(extra_train_paths)
    val_paths = writer.shard_paths(config.data_dir, "val", manifest)
    if not val_paths:
        raise ConfigError(f"{config.data_dir} has no validation split: preprocess with --val_fraction > 0")
    augmenter = inputs.make_augmenter(config.flip, config.zoom, config.shift, config.seed,
                                      randaugment=strong_augmentation)
    records = manifest["splits"]["train"]["records"] + extra_records
    train = inputs.train_dataset(train_paths, config.image_size, config.batch_size, len(class_names),
                                 records, augmenter, config.seed, config.cache, config.steps_per_epoch)
    _, val_labels = inputs.keys_and_labels(val_paths)
    weights = None
    if config.class_balance == "class_weights":
        weights = inputs.class_weights(manifest["splits"]["train"]["class_histogram"], class_names)
        print("class weights: " + ", ".join(f"{name} {weights[index]:.2f}"
                                           for index, name in enumerate(class_names)))
    sample_images = next(iter(train))[0][:8]
    return training.TrainingData(
        train=train, val=inputs.predict_dataset(val_paths, config.image_size, config.batch_size,
                                                len(val_labels)),
        val_labels=val_labels, class_names=class_names, class_weight=weights,
        sample_images=sample_images)


def pseudo_label_rounds(config: Config, manifest: dict, task: TaskSpec, strategy, teacher_state: dict) -> list[dict]:
    """Teacher -> pseudo-label shards -> noisy student, `config.pseudo_label_rounds` times; each
    round lives in <workdir>/pseudo/round_N/ and resumes there. Writes final.weights.h5: the round
    with the best validation objective (round 0 is the supervised teacher)."""
    unlabeled_paths = writer.shard_paths(config.data_dir, "unlabeled", manifest)
    if not unlabeled_paths:
        raise ConfigError(f"--pseudo_label_rounds needs an unlabeled split; {config.data_dir} has none")
    class_names = tuple(manifest["class_names"])
    metric = task.objective.name
    thresholds = np.array(config.pseudo_class_thresholds or [config.pseudo_threshold])
    if len(thresholds) not in (1, len(class_names)):
        raise ConfigError(f"--pseudo_class_thresholds needs {len(class_names)} values, got {len(thresholds)}")
    log_dir = os.path.join(config.workdir, "tensorboard", "pseudo_labels")
    teacher_weights = os.path.join(config.workdir, "checkpoints", "best.weights.h5")
    rounds = [{"round": 0, "val": teacher_state["value"], "weights": teacher_weights}]
    for round_index in range(1, config.pseudo_label_rounds + 1):
        round_dir = os.path.join(config.workdir, "pseudo", f"round_{round_index}")
        pseudo_dir = os.path.join(round_dir, "pseudo_labels")
        pseudo_manifest_path = os.path.join(pseudo_dir, "manifest.json")
        if os.path.exists(pseudo_manifest_path):
            with open(pseudo_manifest_path) as handle:
                pseudo_manifest = json.load(handle)
        else:
            pseudo_manifest = _write_round_labels(config, manifest, strategy, teacher_weights,
                                                  unlabeled_paths, thresholds, round_index, pseudo_dir,
                                                  log_dir)
        student_config = config.student(round_dir)
        with strategy.scope():
            student = classifier.build_image_classifier(
                config.backbone, len(class_names), config.image_size, dropout=student_config.dropout,
                weights=backbones.resolve_weights(config.backbone, config.weights))
        pseudo_paths = [os.path.join(pseudo_dir, name) for name in pseudo_manifest["shards"]]
        data = training_data(student_config, manifest, class_names, pseudo_paths, pseudo_manifest["records"],
                             strong_augmentation=config.student_randaugment)
        print(f"round {round_index}: student on {manifest['splits']['train']['records']} labeled + "
              f"{pseudo_manifest['records']} pseudo-labeled images")
        state = training.train(student_config, student, data, task.objective, strategy)
        teacher_weights = os.path.join(round_dir, "checkpoints", "best.weights.h5")
        rounds.append({"round": round_index, "val": state["value"], "weights": teacher_weights,
                       "accepted": pseudo_manifest["accepted"], "written": pseudo_manifest["records"],
                       "per_class": pseudo_manifest["per_class"]})
        with tf.summary.create_file_writer(log_dir).as_default():
            tf.summary.scalar(f"teacher_val_{metric}", rounds[-2]["val"], step=round_index)
            tf.summary.scalar(f"student_val_{metric}", state["value"], step=round_index)
    best = max(rounds, key=lambda entry: entry["val"])
    shutil.copyfile(best["weights"], os.path.join(config.workdir, "checkpoints", "final.weights.h5"))
    print(pseudo_label.format_rounds(rounds, metric))
    print(f"final model: round {best['round']} (val {metric} {best['val']:.4f})")
    return rounds


def _write_round_labels(config, manifest, strategy, teacher_weights, unlabeled_paths, thresholds,
                        round_index, pseudo_dir, log_dir) -> dict:
    class_names = tuple(manifest["class_names"])
    with strategy.scope():
        teacher = classifier.build_image_classifier(config.backbone, len(class_names), config.image_size,
                                                    dropout=config.dropout)
    teacher.load_weights(teacher_weights)
    probabilities = predict(teacher, unlabeled_paths, config, f"round {round_index}: teacher").probabilities
    selection = pseudo_label.select(probabilities, pseudo_label.labeled_prior(manifest), thresholds,
                                    balance=config.pseudo_balance == "prior",
                                    soft=config.pseudo_labels == "soft",
                                    max_duplication=config.pseudo_max_duplication)
    per_class = {name: {"predicted": int(selection.predicted[index]),
                        "confident": int(selection.confident[index]),
                        "acceptance_rate": round(float(selection.acceptance_rate[index]), 4),
                        "written": int(selection.written[index])}
                 for index, name in enumerate(class_names)}
    info = {"round": round_index, "teacher_weights": teacher_weights, "thresholds": thresholds.tolist(),
            "balance": config.pseudo_balance, "labels": config.pseudo_labels,
            "unlabeled": len(probabilities), "accepted": int(selection.confident.sum()), "per_class": per_class}
    pseudo_label.log_selection(log_dir, round_index, selection, probabilities.max(axis=1), class_names)
    print(f"round {round_index}: teacher accepted {info['accepted']} of {len(probabilities)} unlabeled "
          "images; per class " + ", ".join(f"{name} {entry['confident']}->{entry['written']}"
                                           for name, entry in per_class.items()))
    return pseudo_label.write_pseudo_shards(unlabeled_paths, selection, pseudo_dir, config.num_shards, info)


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
    dataset = inputs.predict_dataset(paths, config.image_size, config.batch_size, len(keys))
    probabilities = model.predict(dataset, verbose=0,
                                  callbacks=[_ProgressCallback(progress, config.batch_size)])
    progress.close()
    return Predictions(keys, inputs.without_padding(probabilities, len(keys)))


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
