"""A tuning cluster (tuning/cluster.py): KerasTuner's distributed mode with a chief and two
workers as real `python -m tuning.search` processes on 127.0.0.1, sharing one oracle over gRPC
(then resumed by one process: the records are the same in both modes), and the clear refusal of
a half-set cluster environment."""

from __future__ import annotations

import glob
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from tuning import cluster

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The smoke flagfile with a short schedule: a trial in seconds (as tests/test_tuning.py).
SHORT = ["--flagfile=smoke.flags", "--full_epochs=1", "--steps_per_epoch=3"]
WORKERS = ("tuner0", "tuner1")
TRIALS = 3
TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(tuner_id: str, port: int, args: list[str], log_dir) -> tuple[subprocess.Popen, object]:
    """One cluster process; its output goes to a file (a full pipe would block it)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CI="1", KERASTUNER_TUNER_ID=tuner_id,
               KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(port))
    log = open(log_dir / f"{tuner_id}.log", "w+")
    process = subprocess.Popen([sys.executable, "-m", "tuning.search", "--pipeline=spam", *args], cwd=ROOT,
                               stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    return process, log


def test_chief_and_two_workers_share_one_search(demo_root, demo_shards, tmp_path):
    directory, logs = tmp_path / "tune", tmp_path / "logs"
    logs.mkdir()
    args = [*SHORT, f"--raw_dir={demo_root}", f"--data_dir={demo_shards}", "--tuner=random",
            f"--max_trials={TRIALS}", f"--directory={directory}"]
    port = _free_port()
    processes = {name: _start(name, port, args, logs) for name in ("chief", *WORKERS)}
    deadline = time.monotonic() + TIMEOUT_S
    try:  # until all have exited, one has failed (the chief would wait for its trial), or timeout
        while time.monotonic() < deadline:
            codes = [process.poll() for process, _ in processes.values()]
            if None not in codes or any(code not in (None, 0) for code in codes):
                break
            time.sleep(0.5)
    finally:
        for process, _ in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    output = {}
    for name, (process, log) in processes.items():
        log.seek(0)
        output[name] = log.read()
        log.close()
    failed = {name: process.returncode for name, (process, _) in processes.items() if process.returncode}
    assert not failed, "\n".join(  # -9: killed at the timeout, or after another one failed
        f"--- {name} exited {code}:\n{output[name][-3000:]}" for name, code in failed.items())

    # The oracle's record: every trial completed and ended exactly once.
    project = directory / "spam_random"
    records = [json.loads(open(path).read()) for path in glob.glob(str(project / "trial_*" / "trial.json"))]
    trials = {record["trial_id"]: record for record in records}
    assert sorted(trials) == [str(index) for index in range(TRIALS)]
    assert all(trial["status"] == "COMPLETED" for trial in trials.values())
    oracle = json.loads((project / "oracle.json").read_text())
    assert sorted(oracle["end_order"]) == sorted(trials) and set(oracle["run_times"].values()) == {1}

    # Shared out: each worker says which trials it trained; together, each trial once.
    ran = {}
    for name in WORKERS:
        match = re.search(rf"^worker {name}: ran trial\(s\) (.+?); ", output[name], re.MULTILINE)
        assert match, output[name][-3000:]
        ran[name] = [] if match[1] == "none" else match[1].split(", ")
    assert all(ran.values()), ran  # both workers trained
    assert sorted(ran["tuner0"] + ran["tuner1"]) == sorted(trials), ran
    for trial_id in trials:  # trained where the oracle's record is: the pipeline's own files
        assert (project / f"trial_{trial_id}" / "checkpoints" / "best.weights.h5").exists()

    # The chief served and ranked; it trained nothing; only it wrote best.flags.
    assert "Epoch " not in output["chief"]
    assert "val_gm_f1" in output["chief"] and "best: trial " in output["chief"]
    assert glob.glob(str(directory / "**" / "*.flags"), recursive=True) == [str(project / "best.flags")]
    best_id = (project / "best.flags").read_text().split(": trial ", 1)[1].split(",", 1)[0]
    assert trials[best_id]["score"] == max(trial["score"] for trial in trials.values())
    assert not any("best: trial " in output[name] for name in WORKERS)

    # The chief's records are final: the same search in one process resumes it and trains nothing.
    before = {path: open(path).read() for path in glob.glob(str(project / "trial_*" / "trial.json"))}
    env = {name: value for name, value in os.environ.items() if name not in cluster.ENV}
    again = subprocess.run([sys.executable, "-m", "tuning.search", "--pipeline=spam", *args], cwd=ROOT,
                           capture_output=True, text=True, timeout=120,
                           env=dict(env, TF_CPP_MIN_LOG_LEVEL="2", CI="1"))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"resuming: {TRIALS} finished trial(s) kept, not rerun" in again.stdout
    assert "Running Trial" not in again.stdout and "Epoch " not in again.stdout
    assert {path: open(path).read() for path in before} == before


@pytest.mark.parametrize("environment, missing", [
    ({"KERASTUNER_TUNER_ID": "chief"}, "KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT not"),
    ({"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "8000"}, "KERASTUNER_TUNER_ID not"),
])
def test_a_half_set_cluster_environment_is_refused(environment, missing):
    with pytest.raises(cluster.ClusterError, match=missing):
        cluster.role_from_env(environment)


def test_cluster_roles_and_a_bad_port():
    assert cluster.role_from_env({}) is None
    chief = cluster.role_from_env({"KERASTUNER_TUNER_ID": "chief", "KERASTUNER_ORACLE_IP": "10.0.0.1",
                                   "KERASTUNER_ORACLE_PORT": "8000"})
    assert chief.is_chief and chief.address == "10.0.0.1:8000"
    worker = cluster.role_from_env({"KERASTUNER_TUNER_ID": "tuner1", "KERASTUNER_ORACLE_IP": "::1",
                                    "KERASTUNER_ORACLE_PORT": "8000"})
    assert not worker.is_chief and worker.address == "[::1]:8000"
    with pytest.raises(cluster.ClusterError, match="port number"):
        cluster.role_from_env({"KERASTUNER_TUNER_ID": "tuner0", "KERASTUNER_ORACLE_IP": "10.0.0.1",
                               "KERASTUNER_ORACLE_PORT": "http"})


def test_the_entry_point_refuses_a_half_set_cluster_before_training(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERASTUNER_TUNER_ID="tuner0")
    for name in ("KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        env.pop(name, None)
    result = subprocess.run([sys.executable, "-m", "tuning.search", "--pipeline=spam", *SHORT,
                             f"--data_dir={tmp_path}", f"--directory={tmp_path}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "error: distributed tuning needs all of" in result.stderr and "Traceback" not in result.stderr
    assert not os.listdir(tmp_path)  # nothing started


def test_a_second_chief_on_a_taken_port_is_refused():
    """gRPC binds with SO_REUSEPORT by default: two chiefs would then share one port, each with
    its own oracle."""
    from concurrent import futures

    import grpc

    port = _free_port()
    first = grpc.server(futures.ThreadPoolExecutor(max_workers=1))  # gRPC's defaults
    first.add_insecure_port(f"127.0.0.1:{port}")
    first.start()
    errors = []

    def second_chief():
        try:
            cluster.serve(oracle=None, role=cluster.Role("chief", "127.0.0.1", port))
        except cluster.ClusterError as error:
            errors.append(error)

    try:
        thread = threading.Thread(target=second_chief, daemon=True)  # would serve forever if bound
        thread.start()
        thread.join(timeout=30)
        assert errors and f"cannot listen on 127.0.0.1:{port}" in str(errors[0])
    finally:
        first.stop(None)
