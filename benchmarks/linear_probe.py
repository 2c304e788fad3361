"""The cheapest strong baseline: frozen pretrained features + logistic regression (a "linear probe").

    python -m benchmarks.linear_probe --task=spam --data_dir=demo_data/spam_shards \
        [--backbone=efficientnet_lite0 --weights=imagenet --image_size=224]

Embeds every record of train, val and test with the backbone (global-average-pooled features,
no training), fits scikit-learn's LogisticRegression on train (standardised features, balanced
class weights, C chosen on val from a small grid), and scores val and test with the task's own
report (spam: the geometric-mean F1). A recipe that does not beat this is not done (DESIGN.md).
Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from models import backbones  # noqa: E402
from pipelines import load_task  # noqa: E402
from pipelines.core import inputs  # noqa: E402
from pipelines.core.config import Config  # noqa: E402
from pipelines.core.splits import Split  # noqa: E402
from preprocess import writer  # noqa: E402

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def embed(encoder: keras.Model, task, config: Config, paths: list[str]):
    """(truth, features) of the shards' records, in stream order."""
    truth = inputs.read_split(paths)
    dataset = inputs.predict_dataset(paths, lambda raw: task.features(raw, config), config.batch_size, len(truth))
    return truth, inputs.without_padding(encoder.predict(dataset, verbose=0), len(truth))


def probabilities_for_all_classes(model: LogisticRegression, features: np.ndarray, num_classes: int) -> np.ndarray:
    """predict_proba has a column per class seen in training; classes absent there get 0."""
    probabilities = np.zeros((len(features), num_classes), np.float32)
    probabilities[:, model.classes_] = model.predict_proba(features)
    return probabilities


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="spam")
    parser.add_argument("--data_dir", default="demo_data/spam_shards")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args()

    task = load_task(args.task)
    config = Config(task=args.task, data_dir=args.data_dir, image_size=args.image_size, batch_size=args.batch_size)
    manifest = writer.read_manifest(args.data_dir)
    class_names = manifest["class_names"]
    started = time.perf_counter()
    backbone = backbones.build_backbone(args.backbone, args.image_size,
                                        backbones.resolve_weights(args.backbone, args.weights))
    pixels = keras.Input((args.image_size, args.image_size, 3), name="image")
    encoder = keras.Model({"image": pixels}, backbone(pixels))
    splits = {split: embed(encoder, task, config, writer.shard_paths(args.data_dir, split, manifest))
              for split in ("train", "val", "test") if writer.shard_paths(args.data_dir, split, manifest)}
    embedded = time.perf_counter() - started
    scaler = StandardScaler().fit(splits["train"][1])
    scaled = {split: (truth, scaler.transform(features)) for split, (truth, features) in splits.items()}
    train_truth, train_features = scaled["train"]
    objective = task.objective
    candidates = []
    for c in C_GRID:
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=3000)
        model.fit(train_features, train_truth.main_labels)
        val_truth, val_features = scaled["val"]
        value = task.metrics(val_truth, probabilities_for_all_classes(model, val_features, len(class_names)),
                             class_names)[objective]
        candidates.append((value, -c, model))
        print(f"C={c:g}: val {objective} {value:.4f}")
    value, negative_c, model = max(candidates, key=lambda entry: entry[:2])  # ties: the smaller C
    results = {"backbone": args.backbone, "image_size": args.image_size, "C": -negative_c,
               "embedding_seconds": round(embedded, 1), "seconds": round(time.perf_counter() - started, 1)}
    for split in ("val", "test"):
        if split not in scaled:
            continue
        truth, features = scaled[split]
        labeled = np.flatnonzero(truth.main_labels >= 0)  # a test split may come without labels
        if not len(labeled):
            continue
        truth = Split([truth.keys[row] for row in labeled], truth.indices[labeled],
                      [truth.labels[row] for row in labeled])
        features = features[labeled]
        report = task.report(truth, probabilities_for_all_classes(model, features, len(class_names)),
                             class_names, {})
        print(f"\n{split}:\n{task.format_report(report, class_names)}")
        results[split] = {name: value for name, value in report.items() if isinstance(value, float)}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
