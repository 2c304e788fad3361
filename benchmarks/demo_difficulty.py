"""How hard is the spam demo data? A colour-statistics baseline on the generated and realistic kinds.

    .venv/bin/python -m benchmarks.demo_difficulty [--seed=0 --scale=1 --workdir=/tmp/bench_demo_difficulty]
    .venv/bin/python -m benchmarks.demo_difficulty --raw_dir=/data/spam_holdout   (any raw layout instead)

Data that colour statistics separate says little about a CNN recipe, so each kind of demo data
(preprocess.demo, `--kind`) is scored with cheap baselines: a logistic regression on colour histograms
or on 16x16 thumbnails, and a random forest on the histograms (alone, and with the thumbnails).
Each is trained on 80% of the labeled training images and scored with the task metric (geometric mean
of the F1 of monotone, screenshot and unknown) on (a) the other 20% ("val": the same source pictures
as training) and (b) the test split (for realistic data: other source pictures), so the gap between
the two shows what recognising the sources is worth. Undecodable test files count as predicted
"normal", as the pipeline's fallback does. No TensorFlow; about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import os
import time

import numpy as np
from PIL import Image
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from preprocess import demo

SPAM_CLASSES = (1, 2, 3)
BASELINES = (("logreg", "histogram"), ("logreg", "thumbnail"), ("forest", "histogram"), ("forest", "both"))


def geometric_mean_f1(y_true, y_pred) -> tuple[float, list[float]]:
    """The task metric (as pipelines.core.evaluation computes it) and the three F1s."""
    f1 = f1_score(y_true, y_pred, labels=list(SPAM_CLASSES), average=None, zero_division=0)
    return float(np.prod(f1) ** (1 / len(f1))), [round(float(value), 3) for value in f1]


def features(path: str) -> dict[str, np.ndarray] | None:
    """Colour histograms (RGB 4x4x4 joint + 16-bin grey + 8-bin HSV saturation), a 16x16 thumbnail."""
    try:
        with Image.open(path) as image:
            image.seek(0)
            rgba = image.convert("RGBA")
    except (OSError, SyntaxError, ValueError):
        return None
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, rgba).convert("RGB")
    small = np.asarray(rgb.resize((64, 64), Image.Resampling.BILINEAR), np.int64)
    joint = np.bincount(((small[..., 0] // 64) * 16 + (small[..., 1] // 64) * 4 + small[..., 2] // 64).ravel(),
                        minlength=64) / small[..., 0].size
    grey = np.histogram(small.mean(axis=2), bins=16, range=(0, 256))[0] / small[..., 0].size
    saturation = np.asarray(rgb.resize((64, 64)).convert("HSV"))[..., 1]
    sat = np.histogram(saturation, bins=8, range=(0, 256))[0] / saturation.size
    histogram = np.concatenate([joint, grey, sat, [small.std() / 128]])
    thumbnail = np.asarray(rgb.resize((16, 16), Image.Resampling.BILINEAR), np.float64).ravel() / 255
    return {"histogram": histogram, "thumbnail": thumbnail, "both": np.concatenate([histogram, thumbnail])}


def load(raw: str, split: str):
    folder, table = (("train/train_data", "train/train_label") if split == "train" else
                     ("test/test_data", "test/test_label"))
    with open(os.path.join(raw, table), newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["annotation"] != "-1"]
    return [(features(os.path.join(raw, folder, row["filename"])), int(row["annotation"])) for row in rows]


def score(train, evaluate, model_name, name, seed):
    x = np.stack([feats[name] for feats, _ in train])
    y = np.array([label for _, label in train])
    if model_name == "logreg":
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced"))
    else:
        model = RandomForestClassifier(300, class_weight="balanced", random_state=seed, n_jobs=2)
    model.fit(x, y)
    fallback = np.zeros(len(x[0]))
    rows = [feats[name] if feats is not None else None for feats, _ in evaluate]
    predictions = model.predict(np.stack([row if row is not None else fallback for row in rows]))
    predictions = [int(p) if row is not None else 0 for p, row in zip(predictions, rows, strict=True)]
    return geometric_mean_f1([label for _, label in evaluate], predictions)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--workdir", default="/tmp/bench_demo_difficulty")
    parser.add_argument("--raw_dir", help="score this spam raw layout (with test/test_label) instead of demo data")
    args = parser.parse_args(argv)
    print("kind       model  features   val gm-F1 (F1 1/2/3)         test gm-F1 (F1 1/2/3)")
    for kind in (("raw_dir",) if args.raw_dir else demo.KINDS):
        raw = args.raw_dir or os.path.join(args.workdir, kind)
        start = time.time()
        if not args.raw_dir:
            demo.make_demo("spam", raw, args.seed, args.scale, kind=kind)
        made = time.time() - start
        labeled, test = load(raw, "train"), load(raw, "test")
        order = np.random.default_rng(args.seed).permutation(len(labeled))
        cut = len(labeled) // 5
        val, train = [labeled[i] for i in order[:cut]], [labeled[i] for i in order[cut:]]
        for model_name, name in BASELINES:
            (val_score, val_f1), (test_score, test_f1) = (score(train, val, model_name, name, args.seed),
                                                          score(train, test, model_name, name, args.seed))
            print(f"{kind:10s} {model_name:6s} {name:10s} {val_score:.3f} {str(val_f1):22s} "
                  f"{test_score:.3f} {test_f1}")
        print(f"{kind:10s} (made in {made:.1f} s: {len(labeled)} labeled, {len(test)} test images)")


if __name__ == "__main__":
    main()
