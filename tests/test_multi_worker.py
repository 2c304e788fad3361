"""--strategy=multi_worker with real processes: two workers on 127.0.0.1, each with its own
TF_CONFIG, train every task's smoke flagfile for a few steps (pipelines/core/multi_worker.py).

What must hold: both finish; they trained together (the same global loss and validation figures
each epoch, each reading its own training shard); the chief's workdir has everything a run
leaves; the other worker wrote nothing outside its scratch folder, which it removed; a killed
pair resumes from the chief's backup at the same epoch; a bad cluster or too few shards is a
clear error. No GPU: CUDA_VISIBLE_DEVICES is empty.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys

import pytest

from pipelines import TASK_MODULES
from pipelines.core.config import ConfigError
from tests.conftest import ROOT, run_module

# A few steps: one epoch per phase, two steps each.
FEW_STEPS = ["--flagfile=smoke.flags", "--strategy=multi_worker", "--head_epochs=1", "--full_epochs=1",
             "--steps_per_epoch=2"]
OUTPUTS = {"spam": "submission.csv", "stickers": "submission.csv", "memes": "solution.csv",
           "products": "predictions.csv"}
TIMEOUT = 300


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _tf_config(ports, index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                       "task": {"type": "worker", "index": index}})


def _start_pair(task: str, args_of, scratch_root) -> list[subprocess.Popen]:
    """Worker 0 (the chief) and worker 1, each `python -m pipelines.<task> args_of(index)`; worker
    i's temporary files go to scratch_root/i."""
    ports = _free_ports(2)
    jobs = []
    for index in range(2):
        temp = scratch_root / str(index)
        temp.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, TF_CONFIG=_tf_config(ports, index), CUDA_VISIBLE_DEVICES="", CI="1",
                   TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", TMPDIR=str(temp))
        jobs.append(subprocess.Popen([sys.executable, "-m", f"pipelines.{task}", *args_of(index)], cwd=ROOT,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return jobs


def _finish(jobs) -> list[str]:
    outputs = []
    try:
        for job in jobs:
            outputs.append(job.communicate(timeout=TIMEOUT)[0])
    finally:
        for job in jobs:
            if job.poll() is None:
                job.kill()
                job.wait()
    return outputs


def _epoch_figures(output: str) -> list[str]:
    """The per-epoch summaries (loss and validation figures, without timings) in order."""
    return [" ".join(re.findall(r"\b[a-z_][a-z_0-9]*: [-+0-9.e]+", line))
            for line in output.splitlines() if " loss: " in line and "/step" in line]


@pytest.fixture(scope="module")
def raw_dirs(demo_root, tmp_path_factory):
    """Each task's small generated demo in its raw layout (the chief shards it)."""
    from preprocess import demo

    made = {"spam": demo_root}

    def raw(task):
        if task not in made:
            made[task] = tmp_path_factory.mktemp(f"{task}_mw_demo") / task
            demo.make_demo(task, str(made[task]), seed=0, scale=0.25)
        return made[task]

    return raw


@pytest.mark.parametrize("task", sorted(TASK_MODULES))
def test_two_workers_train_together_and_only_the_chief_writes(task, raw_dirs, tmp_path):
    data_dir, chief_dir, other_dir = tmp_path / "data", tmp_path / "chief", tmp_path / "worker1"

    def args(index):  # the same flags but --workdir, so a write by worker 1 would show
        return [*FEW_STEPS, f"--raw_dir={raw_dirs(task)}", f"--data_dir={data_dir}",
                f"--workdir={chief_dir if index == 0 else other_dir}"]

    outputs = _finish(_start_pair(task, args, tmp_path / "tmp"))
    for index, output in enumerate(outputs):
        assert f"worker {index} of 2: 1 training shard(s)" in output, output[-3000:]
        assert "Traceback" not in output, output[-3000:]
        assert "weights have diverged" not in output  # each predicted validation with its own weights
    chief, other = outputs
    assert "2 replica(s) (CollectiveAllReduceStrategy)" in chief  # MultiWorkerMirroredStrategy's class
    assert "worker 1 of 2 trained; the chief evaluates" in other
    # One training: the global loss and the (chief's) validation figures agree, epoch by epoch.
    figures = _epoch_figures(chief)
    assert len(figures) == 2 and all("val_" in line for line in figures), chief[-3000:]
    assert figures == _epoch_figures(other)

    metrics = json.loads((chief_dir / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["workers"] == 2 and "validation" in metrics and "test" in metrics
    for path in ("checkpoints/best.weights.h5", "checkpoints/best.json", "checkpoints/head.done",
                 "checkpoints/full.done", "flags.txt", OUTPUTS[task], "export/model.keras"):
        assert (chief_dir / path).exists(), path
    assert list((chief_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert not (chief_dir / "backup").exists() or not list((chief_dir / "backup").rglob("*.h5"))
    # Worker 1 wrote nothing: not its --workdir, not the chief's shards; its scratch folder is gone.
    assert not other_dir.exists()
    assert not list((tmp_path / "tmp" / "1").iterdir())
    assert len(list((data_dir / "tfrecords").glob("train-*"))) == 2


def test_killed_workers_resume_from_the_chiefs_backup(raw_dirs, tmp_path):
    data_dir, chief_dir = tmp_path / "data", tmp_path / "chief"

    def args(index):
        return ["--flagfile=smoke.flags", "--strategy=multi_worker", "--head_epochs=1", "--full_epochs=4",
                "--steps_per_epoch=1", "--mode=train", f"--raw_dir={raw_dirs('spam')}",
                f"--data_dir={data_dir}", f"--workdir={chief_dir if index == 0 else tmp_path / 'worker1'}"]

    jobs = _start_pair("spam", args, tmp_path / "tmp")
    seen = []
    try:
        for line in jobs[0].stdout:
            seen.append(line)
            if line.startswith("Epoch 3/5"):  # the head phase and full epoch 2 are done and backed up
                break
    finally:
        for job in jobs:
            job.send_signal(signal.SIGKILL)
            job.wait(timeout=60)
    assert jobs[0].returncode == -signal.SIGKILL, "".join(seen[-30:])
    assert json.loads((chief_dir / "backup" / "full" / "training_metadata.json").read_text())["epoch"] >= 2

    resumed = _finish(_start_pair("spam", args, tmp_path / "tmp2"))
    for output in resumed:
        assert "phase head: already complete, skipped" in output, output[-3000:]
        # Worker 1 validates with its own weights: without the chief's restored ones it would differ.
        assert "weights have diverged" not in output, output[-3000:]
        epochs = [line.split()[1] for line in output.splitlines() if line.startswith("Epoch ")]
        assert epochs and epochs[0] == "3/5", output[-3000:]
    assert _epoch_figures(resumed[0]) == _epoch_figures(resumed[1])
    assert (chief_dir / "checkpoints" / "full.done").exists()


def test_fewer_training_shards_than_workers_is_a_clear_error(raw_dirs, tmp_path):
    def args(index):
        return [*FEW_STEPS, "--num_shards=1", f"--raw_dir={raw_dirs('spam')}", f"--data_dir={tmp_path / 'data'}",
                f"--workdir={tmp_path / f'worker{index}'}"]

    jobs = _start_pair("spam", args, tmp_path / "tmp")
    outputs = _finish(jobs)
    for job, output in zip(jobs, outputs):
        assert job.returncode == 2, output[-3000:]
        assert "error: --strategy=multi_worker shards the training split by file: 2 workers need at least " \
               "2 training shards, the data has 1" in output, output[-3000:]
        assert "Traceback" not in output


def test_multi_worker_without_tf_config_is_a_clear_error(tmp_path):
    env = {"TF_CONFIG": "", "CUDA_VISIBLE_DEVICES": ""}
    result = run_module("pipelines.spam", [*FEW_STEPS, f"--data_dir={tmp_path / 'data'}",
                                           f"--workdir={tmp_path / 'run'}"], timeout=120, env=env)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "error: --strategy=multi_worker needs the cluster in the TF_CONFIG environment variable" in result.stderr
    assert "Traceback" not in result.stderr


# --- the pure parts, in this process ------------------------------------------------------------

def test_tf_config_roles_and_errors():
    from pipelines.core import multi_worker

    two = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    assert multi_worker.parse_tf_config(json.dumps(two)) == multi_worker.Cluster(2, 1, "worker", 1)
    with_chief = {"cluster": {"chief": ["c:1"], "worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}
    cluster = multi_worker.parse_tf_config(json.dumps(with_chief))
    assert (cluster.workers, cluster.rank, cluster.is_chief) == (3, 1, False)
    assert multi_worker.parse_tf_config(json.dumps({**with_chief, "task": {"type": "chief", "index": 0}})).is_chief
    bad = {"": "needs the cluster", "{": "not valid JSON", "[]": "needs a \"cluster\"",
           json.dumps({**two, "task": {"type": "worker", "index": 2}}): "is not in the cluster",
           json.dumps({"cluster": {"worker": ["a:1"], "ps": ["p:1"]}, "task": {"type": "worker"}}): "not ps",
           json.dumps({"cluster": {"worker": ["nohost"]}, "task": {"type": "worker"}}): "host:port"}
    for text, message in bad.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            multi_worker.parse_tf_config(text)


def test_worker_input_splits_files_and_agrees_on_steps():
    from pipelines.core import multi_worker

    shards = [{"file": f"train-{index}", "records": records} for index, records in enumerate([40, 30, 40, 10])]
    first, second = (multi_worker.worker_input(shards, multi_worker.Cluster(2, rank, "worker", rank), 2, 16, None)
                     for rank in range(2))
    assert first.files == ("train-0", "train-2") and second.files == ("train-1", "train-3")
    assert (first.records, second.records, first.replica_batch) == (80, 40, 8)
    assert first.steps_per_epoch == second.steps_per_epoch == 5  # the poorer worker's 40 // 8
    assert multi_worker.worker_input(shards, multi_worker.Cluster(2, 0, "worker", 0), 2, 16, 3).steps_per_epoch == 3
    with pytest.raises(ConfigError, match="5 workers need at least 5 training shards, the data has 4"):
        multi_worker.worker_input(shards, multi_worker.Cluster(5, 0, "worker", 0), 5, 15, None)
    with pytest.raises(ConfigError, match="multiple of the 2 replicas"):
        multi_worker.worker_input(shards, multi_worker.Cluster(2, 0, "worker", 0), 2, 15, None)
    with pytest.raises(ConfigError, match="lower --batch_size"):
        multi_worker.worker_input(shards, multi_worker.Cluster(2, 0, "worker", 0), 2, 128, None)


def test_what_multi_worker_does_not_do_is_refused_before_connecting():
    from pipelines.core import multi_worker
    from pipelines.core.config import Config
    from pipelines.spam import TASK

    config = Config(task="spam", strategy="multi_worker", workdir="unused", data_dir="unused")
    multi_worker.check_supported(config, TASK)
    for changes, message in (({"mode": "predict"}, "run --mode=predict on one host"),
                             ({"pseudo_label_rounds": 1}, "--pseudo_label_rounds is not supported")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            multi_worker.check_supported(Config(**{**config.__dict__, **changes}), TASK)
