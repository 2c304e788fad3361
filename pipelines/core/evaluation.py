"""Classification metrics over a whole split (never averaged over batches), as plain numpy."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return matrix


def per_class_scores(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall and F1 per class; 0 where undefined (e.g. F1 of a class absent from the
    truth but predicted is 0, as the competition scorer counts it)."""
    true_positive = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    actual = matrix.sum(axis=1).astype(np.float64)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, actual, out=np.zeros_like(true_positive), where=actual > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual.astype(np.int64)}


def geometric_mean_f1(y_true, y_pred, classes=(1, 2, 3), num_classes: int = 4) -> float:
    """The spam metric: (f1_monotone * f1_screenshot * f1_unknown) ** (1/3)."""
    return float(np.prod(_f1_of(y_true, y_pred, classes, num_classes)) ** (1.0 / len(classes)))


def mean_f1(y_true, y_pred, classes=(1, 2, 3), num_classes: int = 4) -> float:
    """The arithmetic mean of the same F1s: it moves as soon as any one class improves, where the
    geometric mean stays at 0 until every class has a right prediction."""
    return float(np.mean(_f1_of(y_true, y_pred, classes, num_classes)))


def _f1_of(y_true, y_pred, classes, num_classes: int) -> np.ndarray:
    return per_class_scores(confusion_matrix(y_true, y_pred, num_classes))["f1"][list(classes)]


def classification_report(y_true, y_pred, class_names, scored_classes=None) -> dict:
    """Everything metrics.json holds: accuracy, per-class scores, confusion matrix and, when
    `scored_classes` is given, the geometric-mean F1 over those classes."""
    num_classes = len(class_names)
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    scores = per_class_scores(matrix)
    report = {
        "examples": int(matrix.sum()),
        "accuracy": float(np.trace(matrix) / max(matrix.sum(), 1)),
        "per_class": {
            name: {metric: float(scores[metric][index]) if metric != "support" else int(scores[metric][index])
                   for metric in ("precision", "recall", "f1", "support")}
            for index, name in enumerate(class_names)
        },
        "confusion_matrix": matrix.tolist(),
    }
    if scored_classes is not None:
        report["geometric_mean_f1"] = geometric_mean_f1(y_true, y_pred, scored_classes, num_classes)
    return report


def format_report(report: dict, class_names) -> str:
    """The report as a fixed-width table for the end of a run."""
    lines = [f"{'class':<12} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}"]
    for name in class_names:
        scores = report["per_class"][name]
        lines.append(f"{name:<12} {scores['precision']:>9.4f} {scores['recall']:>7.4f} "
                     f"{scores['f1']:>7.4f} {scores['support']:>8d}")
    lines.append(f"accuracy {report['accuracy']:.4f} over {report['examples']} examples")
    if "geometric_mean_f1" in report:
        lines.append(f"geometric-mean F1 (scored classes) {report['geometric_mean_f1']:.4f}")
    header = "true \\ pred " + " ".join(f"{name[:10]:>10}" for name in class_names)
    lines.append(header)
    for name, row in zip(class_names, report["confusion_matrix"]):
        lines.append(f"{name[:11]:<11} " + " ".join(f"{count:>10d}" for count in row))
    return "\n".join(lines)


def top_k_accuracy(y_true, probabilities: np.ndarray, k: int) -> float:
    """Share of rows whose true class is among the k highest probabilities (ties: lower index)."""
    y_true = np.asarray(y_true)
    if not len(y_true):
        return 0.0
    k = min(k, probabilities.shape[1])
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return float(np.mean((top == y_true[:, None]).any(axis=1)))


def mean_average_precision(targets: np.ndarray, probabilities: np.ndarray) -> float:
    """Macro average precision over the classes with at least one positive row (AP is undefined
    for a class no row has)."""
    from sklearn.metrics import average_precision_score

    present = targets.sum(axis=0) > 0
    if not present.any():
        return 0.0
    return float(average_precision_score(targets[:, present], probabilities[:, present], average="macro"))


def head_classes(y_true, share: float = 0.5) -> np.ndarray:
    """The most frequent classes of `y_true` that together cover at least `share` of its rows:
    a few frequent tags can make most of a split, so accuracy on the others (the tail) is
    reported beside the overall figure."""
    labels, counts = np.unique(np.asarray(y_true), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    covered = np.cumsum(counts[order]) / max(counts.sum(), 1)
    return labels[order[:int(np.searchsorted(covered, share)) + 1]] if len(labels) else labels
