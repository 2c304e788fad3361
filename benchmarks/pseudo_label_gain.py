"""Does pseudo-labeling help? Supervised-only against pseudo-label rounds with 10% of the labels.

    python -m benchmarks.pseudo_label_gain [--seeds=0,1,2 --keep=0.1 --rounds=2 --workdir=/tmp/bench_pseudo]

The spam demo data, with only `--keep` of the training labels kept and the rest moved to the
unlabeled split (160 labeled validation images stay, the same for both methods of a seed). Both
methods run `--flagfile` (default demo.flags: the pretrained EfficientNet-Lite0) with batch 16,
--head_epochs head epochs and early stopping after 10 epochs without progress, under the same step
budget: supervised-only may take as many full-phase steps as the teacher and the students together
(students' epochs are capped at --student_steps steps). Reports mean and spread of the validation
geometric-mean F1 over the seeds: the last student's, and the best round's (round 0 is the teacher).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAL_IMAGES = 160


def make_layout(demo_root: str, out_root: str, keep: float, seed: int) -> float:
    """Links the demo images into a layout with fewer labels; returns the val_fraction to use."""
    with open(os.path.join(demo_root, "train", "train_label"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    labeled = [row for row in rows if row["annotation"] != "-1"]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labeled))
    train_count = round((len(labeled) - VAL_IMAGES) * keep)
    kept = {labeled[index]["filename"] for index in order[:train_count + VAL_IMAGES]}
    os.makedirs(os.path.join(out_root, "train"), exist_ok=True)
    link = os.path.join(out_root, "train", "train_data")
    if not os.path.exists(link):
        os.symlink(os.path.abspath(os.path.join(demo_root, "train", "train_data")), link)
    with open(os.path.join(out_root, "train", "train_label"), "w", newline="") as handle:
        table = csv.writer(handle)
        table.writerow(["filename", "annotation"])
        for row in rows:
            table.writerow([row["filename"], row["annotation"] if row["filename"] in kept else -1])
    return VAL_IMAGES / (train_count + VAL_IMAGES)


def run(args: list[str], flagfile: str = "demo.flags") -> dict:
    command = [sys.executable, "-m", "pipelines.spam", f"--flagfile={flagfile}", "--mode=train", *args]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CI="1")
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    workdir = next(arg.split("=", 1)[1] for arg in args if arg.startswith("--workdir="))
    with open(os.path.join(workdir, "metrics.json")) as handle:
        return json.load(handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo_root", default="demo_data/spam")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--keep", type=float, default=0.1)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--teacher_epochs", type=int, default=30)
    parser.add_argument("--student_epochs", type=int, default=20)
    parser.add_argument("--student_steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--head_epochs", type=int, default=0)
    parser.add_argument("--flagfile", default="demo.flags")
    parser.add_argument("--workdir", default="/tmp/bench_pseudo")
    args = parser.parse_args()
    if not os.path.exists(os.path.join(args.demo_root, "train", "train_label")):
        from preprocess import demo

        demo.make_demo("spam", args.demo_root, kind="realistic")  # what make demo writes
    rounds = args.rounds
    results = {"supervised": [], "pseudo_last_student": [], "pseudo_best_round": [], "runs": []}
    for seed in (int(value) for value in args.seeds.split(",")):
        raw = os.path.join(args.workdir, f"raw_{seed}")
        val_fraction = make_layout(args.demo_root, raw, args.keep, seed)
        common = [f"--raw_dir={raw}", f"--data_dir={os.path.join(args.workdir, f'data_{seed}')}",
                  f"--seed={seed}", f"--val_fraction={val_fraction}", f"--head_epochs={args.head_epochs}",
                  f"--batch_size={args.batch_size}", "--early_stopping_patience=10",
                  "--reduce_lr_patience=5"]
        labeled_train = round(VAL_IMAGES / val_fraction) - VAL_IMAGES
        teacher_steps = args.teacher_epochs * (labeled_train // args.batch_size)
        budget_epochs = (teacher_steps + rounds * args.student_epochs * args.student_steps) // max(
            labeled_train // args.batch_size, 1)
        supervised = run([*common, f"--full_epochs={budget_epochs}",
                          f"--workdir={os.path.join(args.workdir, f'supervised_{seed}')}"], args.flagfile)
        pseudo = run([*common, f"--full_epochs={args.teacher_epochs}", f"--pseudo_label_rounds={rounds}",
                      f"--student_epochs={args.student_epochs}", f"--student_steps_per_epoch={args.student_steps}",
                      f"--workdir={os.path.join(args.workdir, f'pseudo_{seed}')}"], args.flagfile)
        per_round = pseudo["pseudo_label_rounds"]
        results["supervised"].append(supervised["best_checkpoint"]["value"])
        results["pseudo_last_student"].append(per_round[-1]["val"])
        results["pseudo_best_round"].append(max(entry["val"] for entry in per_round))
        results["runs"].append({"seed": seed, "supervised": supervised["best_checkpoint"],
                                "pseudo_rounds": [{key: entry.get(key) for key in ("round", "val", "accepted", "written")}
                                                  for entry in per_round]})
        print(f"seed {seed}: supervised {results['supervised'][-1]:.4f}, rounds "
              + ", ".join(f"{entry['round']}: {entry['val']:.4f}" for entry in per_round), flush=True)
    with open(os.path.join(args.workdir, "results.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    print(f"\n| method (val geometric-mean F1, {len(results['supervised'])} seeds, {args.keep:.0%} labels) "
          "| mean | std | per seed |\n|---|---|---|---|")
    for name in ("supervised", "pseudo_last_student", "pseudo_best_round"):
        values = results[name]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"| {name} | {statistics.mean(values):.4f} | {spread:.4f} | "
              + ", ".join(f"{value:.4f}" for value in values) + " |")
    print(f"command: python -m benchmarks.pseudo_label_gain --seeds={args.seeds} --keep={args.keep} "
          f"--rounds={rounds} --head_epochs={args.head_epochs} --teacher_epochs={args.teacher_epochs} "
          f"--student_epochs={args.student_epochs} --student_steps={args.student_steps} --flagfile={args.flagfile}")


if __name__ == "__main__":
    main()
