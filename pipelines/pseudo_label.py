"""Semi-supervised rounds: a teacher pseudo-labels the unlabeled split, a noisy student learns from
labeled + pseudo-labeled data and becomes the next teacher (Noisy Student, simplified).

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

from pipelines import inputs
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
           balance: bool = True, soft: bool = False, max_duplication: float = 4.0) -> Selection:
    """The pseudo-label rule, all of it.

    1. Confidence: keep an example when its top probability reaches the threshold of its predicted
       class (`threshold` is one number or one per class).
    2. Balance (optional): share the accepted total among classes as `prior` (the labeled class
       shares): a class with more confident examples than its share keeps its most confident ones;
       one with fewer repeats them, each at most `max_duplication` times.
    3. Targets: one-hot of the predicted class (hard) or the teacher's distribution (soft).
    """
    num_classes = probabilities.shape[1]
    predicted_class = np.argmax(probabilities, axis=1)
    confidence = probabilities.max(axis=1)
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
