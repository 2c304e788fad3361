"""End-to-end runs of `python -m pipelines.spam` in smoke mode, as real processes.

Few and small on purpose: the smoke run shared with tests/test_pipelines.py (spam's outputs checked
here), one under MirroredStrategy over two logical CPUs with mixed_float16, one killed
mid-training and resumed, and the offline-weights check.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from preprocess import readers

from tests.conftest import ROOT, run_module

# Smoke mode with a short schedule, for runs whose learning is not what they test.
SHORT = ["--flagfile=smoke.flags", "--full_epochs=1", "--steps_per_epoch=3"]

# Splits the CPU into two logical devices before TensorFlow initialises, then runs the entry point.
_TWO_CPUS = (
    "import sys, tensorflow as tf;"
    "cpu = tf.config.list_physical_devices('CPU')[0];"
    "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2);"
    "sys.argv[0] = 'pipelines.spam';"
    "from pipelines.core import cli; from pipelines.spam import TASK; cli.run(TASK)"
)


def _run(args, timeout=600, prefix=None, env=None):
    return run_module("pipelines.spam", args, timeout, env, prefix)


@pytest.fixture(scope="module")
def spam_run(smoke_run):
    return smoke_run("spam")


def test_training_learns_far_beyond_the_majority_class(spam_run, demo_shards):
    workdir, _ = spam_run
    from preprocess import writer

    validation = json.loads((workdir / "metrics.json").read_text())["validation"]
    histogram = writer.read_manifest(str(demo_shards))["splits"]["val"]["class_histogram"]
    majority_share = max(histogram.values()) / sum(histogram.values())
    # Always predicting "normal" scores accuracy = majority_share and geometric-mean F1 = 0.
    assert validation["accuracy"] > majority_share + 0.15, (validation["accuracy"], majority_share)
    assert validation["geometric_mean_f1"] > 0.4, validation["per_class"]


def test_smoke_run_writes_the_spam_report(spam_run, demo_root):
    workdir, result = spam_run
    metrics = json.loads((workdir / "metrics.json").read_text())
    validation = metrics["validation"]
    assert set(validation["per_class"]) == set(readers.SPAM_CLASSES)
    assert 0.0 <= validation["geometric_mean_f1"] <= 1.0
    assert np.array(validation["confusion_matrix"]).sum() == validation["examples"] > 0
    assert "geometric-mean F1" in result.stdout and "true \\ pred" in result.stdout
    assert (workdir / "checkpoints" / "best.weights.h5").exists()


def test_submission_covers_every_test_file_including_gif_and_corrupt(spam_run, demo_root):
    workdir, result = spam_run
    with open(workdir / "submission.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["filename", "y_pred"]
    expected = readers.spam_test_files(str(demo_root))
    assert [row["filename"] for row in rows] == expected
    assert any(name.endswith(".gif") for name in expected)
    assert all(row["y_pred"] in {"0", "1", "2", "3"} for row in rows)
    with open(workdir / "prediction_failures.csv", newline="") as handle:
        failures = list(csv.DictReader(handle))
    assert [row["filename"] for row in failures] == [name for name in expected if name.startswith("corrupt")]
    assert failures and failures[0]["reason"]
    assert "test geometric-mean F1" in result.stdout


def test_exported_saved_model_serves_encoded_bytes(spam_run, demo_root):
    workdir, _ = spam_run
    served = tf.saved_model.load(str(workdir / "export" / "saved_model")).signatures["serving_default"]
    test_dir = demo_root / "test" / "test_data"
    names = [name for name in readers.spam_test_files(str(demo_root)) if not name.startswith("corrupt")][:3]
    gif = next(name for name in readers.spam_test_files(str(demo_root)) if name.endswith(".gif"))
    payload = tf.constant([(test_dir / name).read_bytes() for name in names + [gif]])
    outputs = served(image_bytes=payload)
    assert outputs["probabilities"].shape == (4, 4)
    np.testing.assert_allclose(outputs["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-4)
    import keras

    assert keras.saving.load_model(str(workdir / "export" / "model.keras")).output_shape == (None, 4)


def test_predict_mode_reuses_the_best_checkpoint_and_keeps_earlier_metrics(spam_run, demo_root,
                                                                           demo_shards):
    workdir, _ = spam_run
    (workdir / "submission.csv").unlink()
    training_record = (workdir / "flags.txt").read_text()
    result = _run([f"--flagfile={workdir / 'flags.txt'}", "--mode=predict"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (workdir / "flags.txt").read_text() == training_record  # the training run's record is kept
    assert "--mode=predict" in (workdir / "flags.predict.txt").read_text().splitlines()
    assert "phase head" not in result.stdout  # no training
    assert len((workdir / "submission.csv").read_text().splitlines()) == \
        len(readers.spam_test_files(str(demo_root))) + 1
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert "validation" in metrics and "test" in metrics


def test_mirrored_over_two_cpus_with_mixed_float16(demo_root, demo_shards, tmp_path):
    from preprocess import writer

    splits = writer.read_manifest(str(demo_shards))["splits"]
    # Val and test both end in a short batch that 2 replicas could split as [n, 0]; oneDNN's kernels
    # (forced on, so every CPU runs the ones that crash on an empty batch) must never see one.
    batch_size = 16
    assert all(0 < splits[split]["records"] % batch_size <= batch_size // 2 for split in ("val", "test"))
    result = _run([*SHORT, f"--raw_dir={demo_root}", f"--data_dir={demo_shards}", f"--workdir={tmp_path}",
                   "--strategy=mirrored", "--precision=mixed_float16", f"--batch_size={batch_size}"],
                  prefix=(sys.executable, "-c", _TWO_CPUS), env={"TF_ENABLE_ONEDNN_OPTS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 replica(s) (MirroredStrategy), precision mixed_float16" in result.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["replicas"] == 2
    losses = [float(line.split("loss: ")[1].split()[0]) for line in result.stdout.splitlines()
              if " loss: " in line]
    # A loss multiplied by the replica count, or NaN from float16 overflow, would show here.
    assert losses and all(0 < loss < 2.5 for loss in losses), losses


def test_profile_batch_writes_a_profiler_trace_of_those_steps(demo_root, demo_shards, tmp_path):
    result = _run([*SHORT, "--head_epochs=1", "--full_epochs=0", "--profile_batch=2,3", "--mode=train",
                   f"--raw_dir={demo_root}", f"--data_dir={demo_shards}", f"--workdir={tmp_path}"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    traces = list((tmp_path / "tensorboard" / "head").rglob("plugins/profile/*/*.xplane.pb"))
    assert traces and traces[0].stat().st_size > 0  # what TensorBoard's Profile tab reads
    assert _run([*SHORT, "--profile_batch=3,2", f"--workdir={tmp_path / 'x'}"]).returncode == 2


def test_killed_training_resumes_at_the_right_epoch(demo_root, demo_shards, tmp_path):
    args = [*SHORT, "--head_epochs=1", "--full_epochs=4", f"--raw_dir={demo_root}",
            f"--data_dir={demo_shards}", f"--workdir={tmp_path}", "--mode=train"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CI="1", PYTHONUNBUFFERED="1")
    job = subprocess.Popen([sys.executable, "-m", "pipelines.spam", *args], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in job.stdout:
        seen.append(line)
        if line.startswith("Epoch 3/5"):  # the head phase and full epoch 2 are done and backed up
            job.send_signal(signal.SIGKILL)
            break
    job.wait(timeout=60)
    assert job.returncode == -signal.SIGKILL, "".join(seen[-30:])
    resumed = _run(args)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    epochs = [line.split()[1] for line in resumed.stdout.splitlines() if line.startswith("Epoch ")]
    assert "phase head: already complete, skipped" in resumed.stdout
    assert epochs and epochs[0] == "3/5", epochs


def test_imagenet_weights_offline_fail_fast_with_advice(demo_root, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", HOME=str(home), KERAS_HOME=str(home / ".keras"))
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pipelines.spam", "--flagfile=v1.flags",
                             f"--raw_dir={demo_root}", f"--workdir={tmp_path / 'run'}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2
    assert "--weights=" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "data").exists()  # failed before preprocessing
    assert time.monotonic() - started < 60
