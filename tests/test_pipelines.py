"""Every task's pipeline end to end in smoke mode (experiments/<task>/smoke.flags), one real
process per task: what every task's run must leave behind, whatever the task."""

from __future__ import annotations

import glob
import json
import os

import pytest
import tensorflow as tf

from pipelines import TASK_MODULES, load_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _event_tags(directory) -> set[str]:
    paths = glob.glob(os.path.join(str(directory), "**", "events.out.tfevents.*"), recursive=True)
    return {value.tag for path in paths for event in tf.compat.v1.train.summary_iterator(path)
            for value in event.summary.value}


@pytest.mark.parametrize("name", sorted(TASK_MODULES))
def test_every_task_has_a_smoke_flagfile_that_runs_end_to_end(name, smoke_run):
    assert os.path.isfile(os.path.join(ROOT, "experiments", name, "smoke.flags"))
    task = load_task(name)
    workdir, result = smoke_run(name)
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["task"] == name and metrics["precision"] == "float32" and metrics["replicas"] == 1
    assert "validation" in metrics and "test" in metrics and "decision" in metrics
    best = json.loads((workdir / "checkpoints" / "best.json").read_text())
    assert best["monitor"] == f"val_{task.objective}" and 0.0 <= best["value"] <= 1.0
    record = (workdir / "flags.txt").read_text().splitlines()
    assert "--backbone=tiny" in record and "--mode=all" in record
    tags = _event_tags(workdir / "tensorboard")
    assert {"confusion_matrix", "training_inputs", "epoch_loss", f"epoch_{task.objective}",
            f"epoch_{task.plateau_metric}", "epoch_learning_rate"} <= tags, tags
    # Keras knows every dataset's step count; no warning about the way the data is fed.
    assert "Unknown" not in result.stdout
    for noise in ("shuffle=True", "ran out of data", "doesn't match the expected structure"):
        assert noise not in result.stderr, noise
    assert (workdir / "export" / "model.keras").exists() and (workdir / "export" / "saved_model").is_dir()
