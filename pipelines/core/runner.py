"""`train_and_evaluate(config, task)`: the one run every task's entry point makes.

shards -> two-phase training (-> pseudo-label rounds) -> validation report and decision rule ->
test outputs -> exported model, as much of it as `--mode` asks for. What differs between tasks is
the task object (pipelines/core/task.py), never a copy of this.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

from pipelines.core import context as run_context
from pipelines.core import distribute, export, inputs, multi_worker, pseudo_label, training
from pipelines.core import workdir as run_workdir
from pipelines.core.config import Config, ConfigError

DECISION = "decision.json"  # the task's decision rule, fixed on validation, beside the final weights


def train_and_evaluate(config: Config, task, flagfile_text: str = "") -> dict:
    """Everything `--mode` asks for; returns what metrics.json holds. Under
    --strategy=multi_worker every worker calls it: the chief's run is the one in --workdir, the
    others train in a scratch folder and stop after training (pipelines/core/multi_worker.py)."""
    if config.strategy == "multi_worker":
        return multi_worker.run(config, task, lambda: distribute.make_strategy(config.strategy),
                                lambda worker_config: _run(worker_config, task, flagfile_text))
    return _run(config, task, flagfile_text)


def _run(config: Config, task, flagfile_text: str) -> dict:
    started = time.monotonic()
    run_workdir.claim(config.workdir, task)  # a folder this task and pipeline version may use
    if flagfile_text:
        with open(os.path.join(config.workdir, run_record_name(config.mode)), "w") as handle:
            handle.write(flagfile_text)
    context = run_context.prepare(config, task)
    if config.mode in ("all", "train"):
        check_training_split(context.manifest, config.data_dir)
    model = run_context.build_model(context)
    metrics_path = os.path.join(config.workdir, "metrics.json")
    results = _read_json(metrics_path) if config.mode != "all" else {}
    results.update({"task": task.name, "precision": context.precision,
                    "replicas": context.strategy.num_replicas_in_sync})
    checkpoints = os.path.join(config.workdir, "checkpoints")

    if config.mode in ("all", "train"):
        data = run_context.training_data(context)
        results["best_checkpoint"] = training.train(config, model, data, task, context.strategy)
        if config.pseudo_label_rounds:
            results["pseudo_label_rounds"] = pseudo_label.run_rounds(context, results["best_checkpoint"])
        elif os.path.exists(os.path.join(checkpoints, "final.weights.h5")):
            os.remove(os.path.join(checkpoints, "final.weights.h5"))  # a stale round's choice
    cluster = multi_worker.cluster_of(context.strategy)
    if cluster is not None:
        if not cluster.is_chief:
            print(f"{task.name}: worker {cluster.rank} of {cluster.workers} trained; the chief evaluates, "
                  "predicts and exports")
            return results
        # The rest is the chief's alone: a model outside the strategy needs no other worker.
        model = run_context.build_model(context, pretrained=False, distributed=False)
        results["workers"] = cluster.workers
    final_weights = final_weights_path(config.workdir)
    if not os.path.exists(final_weights):
        raise FileNotFoundError(f"{final_weights} not found: train first (--mode=train or all)")
    model.load_weights(final_weights)

    decision_path = os.path.join(checkpoints, DECISION)
    if config.mode in ("all", "train", "evaluate"):
        truth = inputs.read_split(context.paths("val"))
        probabilities = run_context.predict(context, model, context.paths("val"), "evaluating val").probabilities
        decision = task.decide(truth, probabilities, config)
        with open(decision_path, "w") as handle:
            json.dump(decision, handle, indent=2)
        results["decision"] = decision
        results["validation"] = task.report(truth, probabilities, context.class_names, decision)
        print(task.format_report(results["validation"], context.class_names))
    else:
        decision = _read_json(decision_path)
    if config.mode in ("all", "predict"):
        predictions = run_context.predict(context, model, context.paths("test"))
        results["test"] = task.write_outputs(config, context.manifest, model, predictions, decision)
    if config.mode in ("all", "train"):
        results["export"] = export.export_model(model, task, config, decision)
    results["seconds"] = round(time.monotonic() - started, 1)
    variants = task.ablations(config) if config.mode in ("all", "train") else {}
    if variants:
        results["ablations"] = {name: train_and_evaluate(dataclasses.replace(
            variant, workdir=os.path.join(config.workdir, "ablations", name)), task)["validation"]
            for name, variant in variants.items()}
        print(format_comparison({"this run": results["validation"], **results["ablations"]}, task.compared))
    with open(metrics_path, "w") as handle:
        json.dump(results, handle, indent=2)
    print(f"{task.name}: outputs in {config.workdir} (metrics.json, flags.txt, checkpoints/, "
          f"tensorboard/, the task's outputs and export/); "
          f"watch with: tensorboard --logdir {os.path.join(config.workdir, 'tensorboard')}")
    return results


def check_training_split(manifest: dict, data_dir: str) -> None:
    """Before any model is built: no training rows at all is an error that says why (every row
    rejected, or an empty label file), not a later complaint about the validation split; a class
    without training examples is allowed (the run still predicts every test row) but said."""
    splits = manifest.get("splits", {})
    train = splits.get("train", {}).get("records", 0)
    if not train:
        raise ConfigError(
            f"{data_dir} has no training records: {manifest.get('input_rows', 0)} input rows, "
            f"{manifest.get('rejected_rows', 0)} rejected (reasons in {os.path.join(data_dir, 'rejects.csv')}); "
            "the labeled rows of --raw_dir are empty or unusable")
    present = set(splits["train"].get("class_histogram", {}))
    missing = [name for name in manifest.get("class_names", ()) if name not in present]
    if missing and not manifest.get("multi_label"):
        print(f"{manifest.get('task', '')}: warning: {len(missing)} class(es) have no training examples "
              f"({', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}): the model cannot "
              "learn them, and their validation F1 is 0")


def format_comparison(reports: dict[str, dict], figures: tuple[str, ...]) -> str:
    """Validation figures of several runs side by side (the main run and its ablations)."""
    lines = [f"{'validation':<14}" + "".join(f"{figure:>24}" for figure in figures)]
    for name, report in reports.items():
        lines.append(f"{name:<14}" + "".join(f"{report.get(figure, float('nan')):>24.4f}" for figure in figures))
    return "\n".join(lines)


def run_record_name(mode: str) -> str:
    """flags.txt records the training run (`--flagfile=<workdir>/flags.txt` repeats it); a later
    --mode=evaluate or predict in the same workdir records its flags beside it, not over it."""
    return "flags.txt" if mode in ("all", "train") else f"flags.{mode}.txt"


def final_weights_path(workdir: str) -> str:
    """The weights evaluation, prediction and export use: the best pseudo-label round's when rounds
    ran, else the best checkpoint of supervised training."""
    chosen = os.path.join(workdir, "checkpoints", "final.weights.h5")
    return chosen if os.path.exists(chosen) else os.path.join(workdir, "checkpoints", "best.weights.h5")


def _read_json(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        return json.load(handle)
