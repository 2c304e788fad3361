"""The stickers task: first-tag metrics against hand-computed values, targets per label mode, tag
weights, and the submission's order and length when a sticker is missing (the end-to-end smoke run
is in tests/test_pipelines.py)."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from pipelines.core.config import Config
from pipelines.core.splits import Predictions, Split
from pipelines.stickers import TASK, StickersOptions

CLASSES = ("101", "102", "103", "104", "105", "106")


def _split(tag_lists):
    return Split([f"p/{row}" for row in range(len(tag_lists))], np.arange(len(tag_lists)),
                 [tuple(tags) for tags in tag_lists])


def test_first_tag_metrics_match_hand_computed_values():
    # first tags: 0 0 0 1 2 3 ; the model's ranking per row (best first) is written beside it
    truth = _split([(0, 4), (0,), (0, 5), (1, 0), (2,), (3, 1)])
    rankings = [[0, 4, 1, 2, 3, 5],   # top-1 right
                [4, 0, 1, 2, 3, 5],   # top-1 wrong, top-5 right
                [0, 5, 4, 1, 2, 3],   # right
                [0, 2, 3, 4, 5, 1],   # true tag ranked 6th: top-5 wrong
                [2, 0, 1, 3, 4, 5],   # right
                [1, 3, 0, 2, 4, 5]]   # top-1 wrong, top-5 right
    probabilities = np.zeros((6, 6))
    for row, ranking in enumerate(rankings):
        probabilities[row, ranking] = np.linspace(0.9, 0.1, 6)
    values = TASK.metrics(truth, probabilities, CLASSES)
    assert values["top1"] == pytest.approx(3 / 6)
    assert values["top5"] == pytest.approx(5 / 6)
    # tag 0 alone makes half the rows: the head; the tail is rows 3, 4, 5 (one right)
    assert values["tail_top1"] == pytest.approx(1 / 3)
    report = TASK.report(truth, probabilities, CLASSES, {})
    assert report["head_tags"] == ["101"] and report["majority_top1"] == pytest.approx(0.5)
    assert report["most_frequent_tags"][0] == {"tag": "101", "rows": 3, "top1": pytest.approx(2 / 3)}
    assert "first-tag top-1 0.5000" in TASK.format_report(report, CLASSES)


@pytest.mark.parametrize("mode, expected", [("multi_label", [0, 0.5, 0, 1, 0, 0.5]),
                                            ("first_tag", [0, 0, 0, 1, 0, 0])])
def test_targets_are_every_tag_or_only_the_first(mode, expected):
    config = Config(options=StickersOptions(label_mode=mode))
    record = {"labels": tf.constant([3, 1, 5], tf.int64)}
    np.testing.assert_array_equal(TASK.target(record, config, 6).numpy(), expected)


def test_tag_weights_are_min_one_k_over_count():
    manifest = {"class_names": list(CLASSES[:3]),
                "splits": {"train": {"class_histogram": {"101": 1000, "102": 250, "103": 10}}}}
    config = Config(options=StickersOptions(tag_weight_k=500))
    np.testing.assert_allclose(TASK.class_weights(config, manifest), [0.5, 1.0, 1.0])
    assert TASK.class_weights(dataclasses.replace(config, class_balance="none"), manifest) is None


def test_submission_follows_the_metadata_rows_with_a_fallback_for_a_missing_sticker(tmp_path):
    raw, data, workdir = tmp_path / "raw", tmp_path / "data", tmp_path / "run"
    (raw / "test" / "test_data").mkdir(parents=True)
    data.mkdir()
    workdir.mkdir()
    rows = [("7", "70"), ("7", "71"), ("8", "80"), ("8", "81")]  # 8/80's image is missing
    with open(raw / "test" / "test_data" / "test.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("package_id", "sticker_id"), *rows])
    with open(data / "rejects.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("source", "item", "reason"),
                                      ("test/test_data/test.csv:4", "8/80", "file not found")])
    manifest = {"class_names": list(CLASSES), "extra": {"tag_names": ["a", "b", "c", "d", "e", "f"]},
                "splits": {"train": {"class_histogram": {"103": 9, "101": 2}}}}
    # the shards stream records out of row order; each carries its row
    predictions = Predictions(["8/81", "7/70", "7/71"], np.array([3, 0, 1]),
                              np.eye(6, dtype=np.float32)[[5, 0, 1]] * 0.9 + 0.01)
    config = Config(task="stickers", raw_dir=str(raw), data_dir=str(data), workdir=str(workdir),
                    options=StickersOptions())
    result = TASK.write_outputs(config, manifest, None, predictions, {})
    submission = np.load(workdir / "submission.npy")
    assert submission.shape == (4,) and submission.dtype == np.int64
    assert submission.tolist() == [101, 102, 103, 106]  # row order; the missing one: most frequent tag
    assert result["fallback_predictions"] == 1
    with open(workdir / "prediction_failures.csv", newline="") as handle:
        failures = list(csv.DictReader(handle))
    assert failures == [{"row": "2", "key": "8/80", "reason": "file not found", "fallback_tag_id": "103"}]
    with open(workdir / "submission.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [row["key"] for row in table] == ["7/70", "7/71", "8/80", "8/81"]
    assert table[0]["tag_name"] == "a" and len(table[0]["top5_tag_ids"].split()) == 5


def test_tag_crossentropy_is_summed_over_tags():
    from pipelines.stickers import TagCrossentropy

    y_true = np.array([[1.0, 0.0, 0.0, 0.0]], np.float32)
    y_pred = np.array([[0.6, 0.1, 0.2, 0.3]], np.float32)
    expected = -(np.log(0.6) + np.log(0.9) + np.log(0.8) + np.log(0.7))
    assert float(TagCrossentropy()(y_true, y_pred)) == pytest.approx(expected, rel=1e-4)
