"""The pseudo-label selection rule on hand-made probabilities, and one smoke round end to end."""

from __future__ import annotations

import glob
import json

import numpy as np
import pytest
import tensorflow as tf

from pipelines.core import inputs, pseudo_label
from preprocess import schema, writer
from tests.test_spam_pipeline import SHORT, _run


def _probabilities(rows):
    return np.array(rows, np.float64)


def test_threshold_keeps_only_confident_predictions_without_balance():
    probabilities = _probabilities([[0.95, 0.05], [0.6, 0.4], [0.1, 0.9], [0.3, 0.7]])
    selection = pseudo_label.select(probabilities, prior=[1, 1], threshold=0.9, balance=False)
    assert selection.indices.tolist() == [0, 2]
    assert selection.targets.tolist() == [[1, 0], [0, 1]]
    assert selection.predicted.tolist() == [2, 2] and selection.confident.tolist() == [1, 1]
    assert selection.acceptance_rate.tolist() == [0.5, 0.5]


def test_per_class_thresholds():
    probabilities = _probabilities([[0.8, 0.2], [0.2, 0.8], [0.97, 0.03]])
    selection = pseudo_label.select(probabilities, [1, 1], threshold=[0.95, 0.75], balance=False)
    assert selection.indices.tolist() == [1, 2]


def test_balance_caps_the_majority_to_its_most_confident_and_repeats_the_minority():
    # 8 confident "class 0" predictions, 1 confident "class 1"; labeled prior 50/50.
    majority = [[0.91 + 0.01 * rank, 0.09 - 0.01 * rank] for rank in range(8)]
    probabilities = _probabilities(majority + [[0.05, 0.95]])
    selection = pseudo_label.select(probabilities, prior=[10, 10], threshold=0.9, max_duplication=3)
    # 9 accepted -> round(4.5) = 4 wanted per class: the majority keeps 4, the minority's single
    # example is repeated only max_duplication = 3 times.
    assert selection.written.tolist() == [4, 3]
    kept_majority = sorted(set(selection.indices.tolist()) - {8})
    assert kept_majority == [4, 5, 6, 7]  # the four most confident
    assert selection.indices.tolist().count(8) == 3  # duplicated, at most max_duplication times


def test_balance_follows_an_imbalanced_prior():
    probabilities = _probabilities([[0.99, 0.01]] * 10 + [[0.01, 0.99]] * 10)
    selection = pseudo_label.select(probabilities, prior=[60, 40], threshold=0.9)
    assert selection.written.tolist() == [12, 8]


def test_soft_labels_are_the_teacher_distribution():
    probabilities = _probabilities([[0.92, 0.08], [0.5, 0.5]])
    selection = pseudo_label.select(probabilities, [1, 1], threshold=0.9, balance=False, soft=True)
    np.testing.assert_allclose(selection.targets, [[0.92, 0.08]], rtol=1e-6)


def test_nothing_confident_selects_nothing():
    selection = pseudo_label.select(_probabilities([[0.5, 0.5]]), [1, 1], threshold=0.9)
    assert selection.indices.size == 0 and selection.targets.shape == (0, 2)


def test_pseudo_shards_follow_the_prediction_order(demo_shards, tmp_path):
    paths = writer.shard_paths(str(demo_shards), "unlabeled")
    keys = inputs.read_split(paths).keys
    probabilities = np.tile([[0.01, 0.02, 0.03, 0.94]], (len(keys), 1))
    probabilities[3] = [0.97, 0.01, 0.01, 0.01]
    selection = pseudo_label.select(probabilities, [1, 1, 1, 1], threshold=0.95, balance=False, soft=True)
    manifest = pseudo_label.write_pseudo_shards(paths, selection, str(tmp_path), 2, {"labels": "soft"})
    records = [schema.parse_record(raw.numpy()) for raw in
               tf.data.TFRecordDataset([str(tmp_path / name) for name in manifest["shards"]])]
    assert [record.key for record in records] == [keys[3]]
    assert records[0].labels == (0,) and records[0].soft_labels[0] == pytest.approx(0.97)


def test_one_pseudo_label_round_end_to_end(demo_root, demo_shards, tmp_path):
    result = _run([*SHORT, f"--raw_dir={demo_root}", f"--data_dir={demo_shards}", f"--workdir={tmp_path}",
                   "--pseudo_label_rounds=1", "--pseudo_threshold=0.3", "--mode=train"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    pseudo_manifest = json.loads((tmp_path / "pseudo" / "round_1" / "pseudo_labels" / "manifest.json").read_text())
    assert pseudo_manifest["round"] == 1 and pseudo_manifest["unlabeled"] > 0
    assert set(pseudo_manifest["per_class"]) == {"normal", "monotone", "screenshot", "unknown"}
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    rounds = metrics["pseudo_label_rounds"]
    assert [entry["round"] for entry in rounds] == [0, 1]
    assert rounds[1]["written"] == pseudo_manifest["records"]
    assert (tmp_path / "checkpoints" / "final.weights.h5").exists()
    assert "round  accepted  written" in result.stdout and "final model: round" in result.stdout
    event_files = glob.glob(str(tmp_path / "tensorboard" / "pseudo_labels" / "events.out.tfevents.*"))
    tags = {value.tag for path in event_files for event in tf.compat.v1.train.summary_iterator(path)
            for value in event.summary.value}
    assert {"acceptance_rate/normal", "teacher_confidence", "pseudo_label_classes",
            "student_val_gm_f1", "teacher_val_gm_f1"} <= tags, tags


def test_top_k_selection_takes_each_class_most_confident_above_the_floor():
    probabilities = _probabilities([[0.6, 0.4], [0.55, 0.45], [0.7, 0.3], [0.35, 0.65], [0.45, 0.55]])
    assert pseudo_label.select(probabilities, [1, 1], threshold=0.9).indices.size == 0  # too unsure
    selection = pseudo_label.select(probabilities, [1, 1], threshold=0.9, balance=False, top_k=2, floor=0.56)
    assert selection.indices.tolist() == [0, 2, 3]  # class 0: 0.7 and 0.6; class 1: 0.65 (0.55 < floor)
    assert selection.confident.tolist() == [2, 1]
