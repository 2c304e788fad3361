"""The spam task: review images -> normal / monotone / screenshot / unknown.

Checkpoints are chosen on the competition metric, the geometric mean of the F1 of the three spam
classes; the plateau rules watch their arithmetic mean (the geometric mean stays 0 until every
spam class has one right prediction). The submission is `filename,y_pred` for EVERY file of
test/test_data: the scorer gives 0 when the file set differs.
"""

from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np

from pipelines.core import evaluation, outputs
from pipelines.core.task import ImageClassificationTask
from preprocess import readers
from preprocess.config_flags import field

SCORED = (1, 2, 3)  # monotone, screenshot, unknown: the spam classes the metric scores


@dataclasses.dataclass(frozen=True)
class SpamOptions:
    fallback_class: int = field(0, "Class written for test files that cannot be decoded.")


class SpamTask(ImageClassificationTask):
    name = "spam"
    Options = SpamOptions
    objective = "gm_f1"
    plateau = "mean_f1"

    def scores(self, y_true, y_pred, num_classes):
        return {"gm_f1": evaluation.geometric_mean_f1(y_true, y_pred, SCORED, num_classes),
                "mean_f1": evaluation.mean_f1(y_true, y_pred, SCORED, num_classes)}

    def report(self, truth, probabilities, class_names, decision):
        return evaluation.classification_report(truth.main_labels, np.argmax(probabilities, axis=-1),
                                                class_names, SCORED)

    def write_outputs(self, config, manifest, model, predictions, decision):
        """submission.csv with `filename,y_pred` for EVERY file of test/test_data; files that could
        not be decoded get --fallback_class and are listed with their reason in
        prediction_failures.csv. Scores itself when test/test_label exists."""
        fallback = config.options.fallback_class
        predicted = dict(zip(predictions.keys, np.argmax(predictions.probabilities, axis=-1).tolist()))
        reasons = outputs.test_rejections(config.data_dir, "test/test_data/")
        if config.raw_dir:
            names = readers.spam_test_files(config.raw_dir)
        else:  # shards only: the test files are those written plus those rejected
            names = sorted(set(predicted) | set(reasons))
        submission = os.path.join(config.workdir, "submission.csv")
        failures = os.path.join(config.workdir, "prediction_failures.csv")
        rows, failed = [], []
        for name in names:
            if name in predicted:
                rows.append((name, predicted[name]))
            else:
                rows.append((name, fallback))
                failed.append((name, reasons.get(name, "not found in the test shards"), fallback))
        outputs.write_csv(submission, ("filename", "y_pred"), rows)
        outputs.write_csv(failures, ("filename", "reason", "fallback_class"), failed)
        result = {"submission": submission, "files": len(rows), "fallback_predictions": len(failed),
                  "failures": failures}
        print(f"spam: wrote {len(rows)} predictions to {submission} ({len(failed)} with the fallback "
              f"class {fallback}, listed in {failures})")
        truth_path = os.path.join(config.raw_dir, "test", "test_label") if config.raw_dir else ""
        if truth_path and os.path.exists(truth_path):
            result["score"] = score_submission(submission, truth_path)
            print(f"spam: test geometric-mean F1 {result['score']['geometric_mean_f1']:.4f} "
                  f"(accuracy {result['score']['accuracy']:.4f}) against {truth_path}")
        return result


def score_submission(submission_path: str, truth_path: str) -> dict:
    """Scores like the competition: the file sets must match exactly, else 0."""
    predicted = _read_label_table(submission_path, "y_pred")
    truth = _read_label_table(truth_path, "annotation")
    if set(predicted) != set(truth):
        missing, extra = len(set(truth) - set(predicted)), len(set(predicted) - set(truth))
        return {"geometric_mean_f1": 0.0, "accuracy": 0.0,
                "error": f"file sets differ ({missing} missing, {extra} extra)"}
    names = sorted(truth)
    y_true = np.array([truth[name] for name in names])
    y_pred = np.array([predicted[name] for name in names])
    report = evaluation.classification_report(y_true, y_pred, readers.SPAM_CLASSES, SCORED)
    return {"geometric_mean_f1": report["geometric_mean_f1"], "accuracy": report["accuracy"],
            "examples": report["examples"]}


def _read_label_table(path: str, column: str) -> dict[str, int]:
    with open(path, newline="") as handle:
        return {row["filename"]: int(row[column]) for row in csv.DictReader(handle)
                if row.get(column, "").strip().lstrip("-").isdigit() and int(row[column]) >= 0}


TASK = SpamTask()
