"""Semi-supervised rounds: a teacher pseudo-labels the unlabeled split, a noisy student learns from
labeled + pseudo-labeled data and becomes the next teacher (Noisy Student, simplified).
`run_rounds` is the loop; the rest are its parts.

The whole selection rule is `select`: confidence mask -> class balance against the labeled prior ->
hard or soft targets. Balancing is what keeps pseudo-labels from collapsing onto the majority class
(spam is ~60% normal): each class gets its labeled share of the accepted total, by keeping its most
confident examples or repeating them (at most `max_duplication` times each).

Pseudo-labels are written as their own TFRecord shards with a manifest, per round, so a round can be
inspected and resumed. The validation split is never pseudo-labeled and never used for selection.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil

import numpy as np
import tensorflow as tf

from pipelines.core import context as run_context
from pipelines.core import inputs, training
from pipelines.core.config import ConfigError
from preprocess import schema


@dataclasses.dataclass(frozen=True)
class Selection:
    indices: np.ndarray  # unlabeled record positions to write, repeated for duplicated examples
    targets: np.ndarray  # (len(indices), classes): one-hot (hard) or the teacher's distribution (soft)
    confident: np.ndarray  # per class: examples above the threshold (by predicted class)
    predicted: np.ndarray  # per class: examples the teacher predicted
    written: np.ndarray  # per class: examples written after balancing

    @property
    def acceptance_rate(self) -> np.ndarray:
        return np.divide(self.confident, self.predicted, out=np.zeros(len(self.predicted)),
                         where=self.predicted > 0)


def select(probabilities: np.ndarray, prior: np.ndarray, threshold: float | np.ndarray,
           balance: bool = True, soft: bool = False, max_duplication: float = 4.0,
           top_k: int = 0, floor: float = 0.0) -> Selection:
    """The pseudo-label rule, all of it.

    1. Confidence: keep an example when its top probability reaches the threshold of its predicted
       class (`threshold` is one number or one per class); or, with `top_k` > 0 (Noisy Student's
       selection, for a teacher too unsure to pass a threshold), keep each predicted class's
       `top_k` most confident examples whose top probability reaches `floor`.
    2. Balance (optional): share the accepted total among classes as `prior` (the labeled class
       shares): a class with more confident examples than its share keeps its most confident ones;
       one with fewer repeats them, each at most `max_duplication` times.
    3. Targets: one-hot of the predicted class (hard) or the teacher's distribution (soft).
    """
    num_classes = probabilities.shape[1]
    predicted_class = np.argmax(probabilities, axis=1)
    confidence = probabilities.max(axis=1)
    if top_k > 0:
        accepted = np.zeros(len(confidence), bool)
        for label in range(num_classes):
            members = np.flatnonzero((predicted_class == label) & (confidence >= floor))
            accepted[members[np.argsort(-confidence[members], kind="stable")[:top_k]]] = True
    else:
        thresholds = np.broadcast_to(np.asarray(threshold, np.float64), (num_classes,))
        accepted = confidence >= thresholds[predicted_class]
    predicted = np.bincount(predicted_class, minlength=num_classes)
    confident = np.bincount(predicted_class[accepted], minlength=num_classes)
    chosen = []
    total = int(confident.sum())
    shares = np.asarray(prior, np.float64) / max(np.sum(prior), 1e-12)
    for label in range(num_classes):
        members = np.flatnonzero(accepted & (predicted_class == label))
        members = members[np.argsort(-confidence[members], kind="stable")]  # most confident first
        if not balance:
            chosen.append(members)
            continue
        wanted = int(round(shares[label] * total))
        if len(members) >= wanted:
            chosen.append(members[:wanted])
        elif len(members):
            repeats = min(math.ceil(wanted / len(members)), int(max_duplication))
            chosen.append(np.tile(members, repeats)[:wanted])
    indices = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    if soft:
        targets = probabilities[indices].astype(np.float32)
    else:
        targets = np.eye(num_classes, dtype=np.float32)[predicted_class[indices]]
    written = np.bincount(predicted_class[indices], minlength=num_classes)
    return Selection(indices.astype(np.int64), targets, confident, predicted, written)


def write_pseudo_shards(unlabeled_paths: list[str], selection: Selection, out_dir: str,
                        num_shards: int, info: dict) -> dict:
    """Streams the unlabeled shards once, in the order the teacher's predictions came in, and
    writes the selected records (repeats included) with their pseudo-labels; the manifest is
    written last, so a round without one is incomplete."""
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    counts = np.bincount(selection.indices, minlength=0)
    targets_by_index = {}
    for position, index in enumerate(selection.indices):
        targets_by_index.setdefault(int(index), selection.targets[position])
    total = len(selection.indices)
    num_shards = max(1, min(num_shards, total))
    per_shard = math.ceil(total / num_shards) if total else 0
    shard_files, written, shard_index = [], 0, 0
    handle = None
    for position, serialized in enumerate(inputs.serialized_records(unlabeled_paths)):
        repeats = int(counts[position]) if position < len(counts) else 0
        if not repeats:
            continue
        record = schema.parse_record(serialized.numpy())
        target = targets_by_index[position]
        pseudo = dataclasses.replace(record, labels=(int(np.argmax(target)),),
                                     soft_labels=tuple(float(value) for value in target)
                                     if info["labels"] == "soft" else ())
        data = schema.serialize(pseudo)
        for _ in range(repeats):
            if handle is None:
                name = f"pseudo-{shard_index:05d}-of-{num_shards:05d}.tfrecord"
                shard_files.append(name)
                handle = tf.io.TFRecordWriter(os.path.join(out_dir, name + ".incomplete"))
            handle.write(data)
            written += 1
            if written % per_shard == 0 or written == total:
                handle.close()
                os.replace(os.path.join(out_dir, shard_files[-1] + ".incomplete"),
                           os.path.join(out_dir, shard_files[-1]))
                handle, shard_index = None, shard_index + 1
    manifest = {**info, "records": written, "shards": shard_files}
    with open(os.path.join(out_dir, "manifest.json"), "w") as manifest_file:
        json.dump(manifest, manifest_file, indent=2)
    return manifest


def log_selection(log_dir: str, round_index: int, selection: Selection, confidences: np.ndarray,
                  class_names) -> None:
    """Per round in TensorBoard: acceptance rate and pseudo-labels written per class, the
    pseudo-label class histogram and the teacher's confidence histogram."""
    with tf.summary.create_file_writer(log_dir).as_default():
        for index, name in enumerate(class_names):
            tf.summary.scalar(f"acceptance_rate/{name}", selection.acceptance_rate[index], step=round_index)
            tf.summary.scalar(f"pseudo_labels_written/{name}", int(selection.written[index]), step=round_index)
        labels = np.argmax(selection.targets, axis=1) if len(selection.targets) else np.zeros(0)
        tf.summary.histogram("pseudo_label_classes", labels, step=round_index, buckets=len(class_names))
        tf.summary.histogram("teacher_confidence", confidences, step=round_index, buckets=20)


def format_rounds(rounds: list[dict], metric: str) -> str:
    lines = [f"{'round':>5} {'accepted':>9} {'written':>8} {'val ' + metric:>12}"]
    for entry in rounds:
        lines.append(f"{entry['round']:>5} {entry.get('accepted', '-'):>9} {entry.get('written', '-'):>8} "
                     f"{entry['val']:>12.4f}")
    return "\n".join(lines)


def labeled_prior(manifest: dict) -> np.ndarray:
    histogram = manifest["splits"]["train"]["class_histogram"]
    return np.array([histogram.get(name, 0) for name in manifest["class_names"]], np.float64)


def run_rounds(context: run_context.Context, teacher_state: dict) -> list[dict]:
    """Teacher -> pseudo-label shards -> noisy student, `config.pseudo_label_rounds` times; each
    round lives in <workdir>/pseudo/round_N/ and resumes there. Writes final.weights.h5: the round
    with the best validation objective (round 0 is the supervised teacher)."""
    config, task, manifest, class_names = context.config, context.task, context.manifest, context.class_names
    unlabeled_paths = context.paths("unlabeled")
    if not unlabeled_paths:
        raise ConfigError(f"--pseudo_label_rounds needs an unlabeled split; {config.data_dir} has none")
    metric = task.objective
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
            pseudo_manifest = _label_round(context, teacher_weights, unlabeled_paths, thresholds, round_index,
                                           pseudo_dir, log_dir)
        student_config = config.student(round_dir)
        student = run_context.build_model(context, student_config)
        pseudo_paths = [os.path.join(pseudo_dir, name) for name in pseudo_manifest["shards"]]
        data = run_context.training_data(context, student_config, pseudo_paths, pseudo_manifest["records"],
                                         strong_augmentation=config.student_randaugment)
        print(f"round {round_index}: student on {manifest['splits']['train']['records']} labeled + "
              f"{pseudo_manifest['records']} pseudo-labeled images")
        state = training.train(student_config, student, data, task, context.strategy)
        teacher_weights = os.path.join(round_dir, "checkpoints", "best.weights.h5")
        rounds.append({"round": round_index, "val": state["value"], "weights": teacher_weights,
                       "accepted": pseudo_manifest["accepted"], "written": pseudo_manifest["records"],
                       "per_class": pseudo_manifest["per_class"]})
        with tf.summary.create_file_writer(log_dir).as_default():
            tf.summary.scalar(f"teacher_val_{metric}", rounds[-2]["val"], step=round_index)
            tf.summary.scalar(f"student_val_{metric}", state["value"], step=round_index)
    best = max(rounds, key=lambda entry: entry["val"])
    shutil.copyfile(best["weights"], os.path.join(config.workdir, "checkpoints", "final.weights.h5"))
    print(format_rounds(rounds, metric))
    print(f"final model: round {best['round']} (val {metric} {best['val']:.4f})")
    return rounds


def _label_round(context, teacher_weights, unlabeled_paths, thresholds, round_index, pseudo_dir,
                 log_dir) -> dict:
    """The teacher's predictions on the unlabeled split -> `select` -> pseudo-label shards."""
    config, manifest, class_names = context.config, context.manifest, context.class_names
    teacher = run_context.build_model(context, pretrained=False)
    teacher.load_weights(teacher_weights)
    probabilities = run_context.predict(context, teacher, unlabeled_paths,
                                        f"round {round_index}: teacher").probabilities
    top_k = config.pseudo_top_k if config.pseudo_selection == "top_k" else 0
    selection = select(probabilities, labeled_prior(manifest), thresholds,
                       balance=config.pseudo_balance == "prior", soft=config.pseudo_labels == "soft",
                       max_duplication=config.pseudo_max_duplication, top_k=top_k, floor=config.pseudo_floor)
    per_class = {name: {"predicted": int(selection.predicted[index]),
                        "confident": int(selection.confident[index]),
                        "acceptance_rate": round(float(selection.acceptance_rate[index]), 4),
                        "written": int(selection.written[index])}
                 for index, name in enumerate(class_names)}
    info = {"round": round_index, "teacher_weights": teacher_weights, "thresholds": thresholds.tolist(),
            "selection": config.pseudo_selection, "top_k": top_k, "floor": config.pseudo_floor,
            "balance": config.pseudo_balance, "labels": config.pseudo_labels,
            "unlabeled": len(probabilities), "accepted": int(selection.confident.sum()), "per_class": per_class}
    log_selection(log_dir, round_index, selection, probabilities.max(axis=1), class_names)
    print(f"round {round_index}: teacher accepted {info['accepted']} of {len(probabilities)} unlabeled "
          "images; per class " + ", ".join(f"{name} {entry['confident']}->{entry['written']}"
                                           for name, entry in per_class.items()))
    if info["accepted"] < max(len(class_names), 0.01 * len(probabilities)):
        print(f"WARNING: round {round_index}: the teacher passed only {info['accepted']} of "
              f"{len(probabilities)} unlabeled images ({config.pseudo_selection} selection): this "
              "round's student learns from (almost) nothing but the labeled images. Its confidence "
              f"reaches {float(probabilities.max(axis=1).max()):.3f} at most. Lower --pseudo_threshold, "
              "or take each class's most confident images with --pseudo_selection=top_k "
              "--pseudo_top_k=K --pseudo_floor=F (Noisy Student's selection).", flush=True)
    return write_pseudo_shards(unlabeled_paths, selection, pseudo_dir, config.sharding.num_shards, info)
