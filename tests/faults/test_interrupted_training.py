"""Training killed with SIGKILL mid-epoch (no cleanup handler runs), then rerun with the same
command: it resumes from the last per-phase backup, runs no finished epoch again, runs as many
epochs as planned, and (TF_DETERMINISTIC_OPS=1, fixed seeds, one CPU device) ends with the very
validation report of an uninterrupted run. Also: a kill right after an epoch's backup, and
EarlyStopping's patience across a resume.

Epochs run are counted from the "Epoch N/M" line Keras prints as each starts. The killed run goes
through tests/faults/_paused_run.py, which stops the process after step 5 of 10 of the chosen
epoch (a smoke epoch is ~60 ms: a kill aimed from outside at a progress line landed after the
epoch's backup); the backup's training_metadata.json is read before the rerun to prove the epoch
was not finished. Reference runs and reruns are the plain `python -m pipelines.spam` command.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading

import pytest

from tests.conftest import ROOT

EPOCH = re.compile(r"^Epoch (\d+)/(\d+)$")

# 160 training records / batch 16 = 10 steps an epoch. Epochs are numbered across the phases:
# head 1/2-2/2, full 3/5-5/5 (Keras' initial_epoch).
SPAM = ["--flagfile=smoke.flags", "--head_epochs=2", "--full_epochs=3", "--mode=train"]
SPAM_PLAN = ["1/2", "2/2", "3/5", "4/5", "5/5"]
# One round whose student runs 2 head + 2 full epochs; the teacher is the plan above.
PSEUDO = ["--pseudo_label_rounds=1", "--pseudo_threshold=0.3", "--student_epochs=2"]
STUDENT_PLAN = ["1/2", "2/2", "3/4", "4/4"]
PAUSE_STEP = 5


class Run:
    """One pipeline process: the epochs it started ((pseudo-label round, "N/M") in order), its
    exit status and output."""

    def __init__(self, returncode, epochs, output):
        self.returncode, self.epochs, self.output = returncode, epochs, output


def _run(task, args, pause=None, timeout=300) -> Run:
    """`python -m pipelines.<task> args` as a real process in its own process group, its output
    read as it comes. `pause` (workdir, phase, epoch[, "after_backup"]): run it through
    _paused_run instead, which stops it after step 5 of that epoch (or right after the epoch's
    backup), and SIGKILL the group there."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CI="1", TF_DETERMINISTIC_OPS="1", PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", f"pipelines.{task}", *args]
    if pause:
        workdir, phase, epoch, *where = pause
        env["FAULT_PAUSE_AT"] = json.dumps({"workdir": str(workdir), "phase": phase, "epoch": epoch,
                                            "step": PAUSE_STEP, "after_backup": where == ["after_backup"]})
        command = [sys.executable, "-m", "tests.faults._paused_run", task, *args]
    job = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, start_new_session=True)
    watchdog = threading.Timer(timeout, lambda: os.killpg(job.pid, signal.SIGKILL))
    watchdog.start()
    epochs, lines, round_index = [], [], 0
    try:
        for line in job.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            if match := re.match(r"round (\d+): student on ", line):
                round_index = int(match.group(1))
            elif match := EPOCH.match(line):
                epochs.append((round_index, f"{match.group(1)}/{match.group(2)}"))
            elif pause and line.startswith("FAULT_PAUSED"):
                os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=60)
    finally:
        watchdog.cancel()
        job.stdout.close()
    return Run(job.returncode, epochs, "\n".join(lines))


def _report(workdir) -> dict:
    """metrics.json without its timing and export paths, the workdir in paths written <workdir>."""
    metrics = json.loads((workdir / "metrics.json").read_text().replace(str(workdir), "<workdir>"))
    for key in ("seconds", "export"):
        metrics.pop(key, None)
    return metrics


def _backed_up_epoch(backup_dir) -> int:
    """The next epoch BackupAndRestore resumes at (0: no backup yet)."""
    path = backup_dir / "training_metadata.json"
    return json.loads(path.read_text())["epoch"] if path.exists() else 0


@pytest.fixture(scope="module")
def spam_args(demo_shards):
    """The spam flags on the session's tiny generated shards (preprocessed once: no run re-shards)."""
    return lambda *extra: [*SPAM, f"--data_dir={demo_shards}", *extra]


@pytest.fixture(scope="module")
def spam_reference(spam_args, tmp_path_factory):
    """One uninterrupted run: what every interrupted one must end with."""
    workdir = tmp_path_factory.mktemp("spam_uninterrupted")
    run = _run("spam", spam_args(f"--workdir={workdir}"))
    assert run.returncode == 0, run.output[-3000:]
    assert [epoch for _, epoch in run.epochs] == SPAM_PLAN, run.epochs  # no early stop in the plan
    return workdir


def _killed_run(task, args, pause):
    """A run that must end by the kill."""
    killed = _run(task, args, pause)
    assert killed.returncode == -signal.SIGKILL, "the kill never landed: " + killed.output[-3000:]
    return killed


@pytest.mark.parametrize("phase,epoch", [("head", "2/2"), ("full", "4/5")])
def test_sigkill_mid_epoch_then_rerun_resumes_and_matches(phase, epoch, spam_args, spam_reference, tmp_path):
    """A kill in each phase's 2nd epoch: the rerun starts at that epoch (head's finished epoch 1,
    or the whole head phase and full epoch 3, are not run again) and ends bit-equal to the
    uninterrupted run."""
    args = spam_args(f"--workdir={tmp_path}")
    killed = _killed_run("spam", args, (tmp_path, phase, int(epoch.split("/")[0])))
    started = [e for _, e in killed.epochs]
    assert started == SPAM_PLAN[:SPAM_PLAN.index(epoch) + 1], started
    finished = started[:-1]
    # The backup holds the epochs before the killed one, not the killed one: the kill was mid-epoch.
    first_of_phase = 0 if phase == "head" else 2
    assert _backed_up_epoch(tmp_path / "backup" / phase) == len(finished) != first_of_phase
    assert not (tmp_path / "metrics.json").exists()

    rerun = _run("spam", args)
    assert rerun.returncode == 0, rerun.output[-3000:]
    again = [e for _, e in rerun.epochs]
    assert again[0] == epoch and not set(again) & set(finished), (finished, again)
    assert finished + again == SPAM_PLAN
    if phase == "full":
        assert "phase head: already complete, skipped" in rerun.output
    assert _report(tmp_path) == _report(spam_reference)
    assert (json.loads((tmp_path / "checkpoints" / "best.json").read_text())
            == json.loads((spam_reference / "checkpoints" / "best.json").read_text()))


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "to decide (issue 16): the student's noise, keras.layers.RandAugment inside the input pipeline "
    "(inputs.Augmenter), draws from SeedGenerator state variables that no backup keeps and that "
    "take no per-batch seed, so a resumed student sees other noise and ends with another val "
    "metric (0.457 vs 0.522 measured). With the training/inputs fixes of issue 16 and "
    "--student_randaugment=false this test passes; with RandAugment it needs stateless noise "
    "seeded by (pass, batch) like Augmenter._crop_and_flip."))
def test_sigkill_mid_pseudo_label_round_then_rerun_resumes_and_matches(spam_args, tmp_path_factory):
    """A kill while round 1's student trains (its full phase's 1st epoch, epoch 3/4): the rerun
    skips the teacher's phases, reuses the round's pseudo-label shards, resumes the student at
    that epoch, and ends with the uninterrupted run's report, rounds included."""
    reference = tmp_path_factory.mktemp("pseudo_uninterrupted")
    uninterrupted = _run("spam", spam_args(f"--workdir={reference}", *PSEUDO))
    assert uninterrupted.returncode == 0, uninterrupted.output[-3000:]
    assert uninterrupted.epochs == [(0, e) for e in SPAM_PLAN] + [(1, e) for e in STUDENT_PLAN]

    workdir = tmp_path_factory.mktemp("pseudo_interrupted")
    args = spam_args(f"--workdir={workdir}", *PSEUDO)
    killed = _killed_run("spam", args, (workdir / "pseudo" / "round_1", "full", 3))
    finished = killed.epochs[:-1]
    assert killed.epochs[-1] == (1, "3/4") and finished == uninterrupted.epochs[:len(finished)]
    student = workdir / "pseudo" / "round_1"
    assert (student / "checkpoints" / "head.done").exists()
    assert _backed_up_epoch(student / "backup" / "full") == 0  # no full-phase epoch finished
    labels = (student / "pseudo_labels" / "manifest.json").read_bytes()

    rerun = _run("spam", args)
    assert rerun.returncode == 0, rerun.output[-3000:]
    assert rerun.epochs == [(1, "3/4"), (1, "4/4")], rerun.epochs
    assert rerun.output.count("already complete, skipped") == 3  # teacher head, full; student head
    assert "teacher accepted" not in rerun.output  # the round's pseudo-labels were not made again
    assert (student / "pseudo_labels" / "manifest.json").read_bytes() == labels
    assert _report(workdir) == _report(reference)


def test_sigkill_after_an_epochs_backup_before_its_best_checkpoint(spam_args, spam_reference, tmp_path):
    """A kill at the end of the last epoch (5/5, the uninterrupted run's best) right after
    BackupAndRestore saved it (it comes first in the callback list today, so the epoch's
    validation metrics and best checkpoint are not done yet): the rerun must finish the phase
    (today it fails: a dataset of no epochs) and keep that epoch's best checkpoint."""
    args = spam_args(f"--workdir={tmp_path}")
    killed = _killed_run("spam", args, (tmp_path, "full", 5, "after_backup"))
    assert [e for _, e in killed.epochs] == SPAM_PLAN
    assert _backed_up_epoch(tmp_path / "backup" / "full") == 5  # the backup says: all epochs done
    rerun = _run("spam", args)
    assert rerun.returncode == 0, rerun.output[-3000:]
    assert rerun.epochs == []  # nothing is run again
    assert (json.loads((tmp_path / "checkpoints" / "best.json").read_text())
            == json.loads((spam_reference / "checkpoints" / "best.json").read_text()))
    assert _report(tmp_path) == _report(spam_reference)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "to decide (issue 16): Keras' EarlyStopping and ReduceLROnPlateau keep their patience counters "
    "(wait, best, cooldown) in memory only; a resumed phase starts them again, so it can run more "
    "epochs than the uninterrupted run (here 3 instead of 2) and cut the learning rate later. Fix: "
    "keep their state in the phase's backup, written with it (see the report)."))
def test_sigkill_mid_epoch_keeps_early_stopping_where_it_was(spam_args, tmp_path_factory):
    """EarlyStopping with patience 1 stops the head phase after epoch 2 of 3 (its validation mean
    F1 does not move); a kill mid epoch 2 must not give the resumed run a fresh patience, so it
    also stops after epoch 2 and ends like the uninterrupted run."""
    flags = ["--head_epochs=3", "--full_epochs=0", "--early_stopping_patience=1"]
    reference = tmp_path_factory.mktemp("stopping_uninterrupted")
    uninterrupted = _run("spam", spam_args(f"--workdir={reference}", *flags))
    assert uninterrupted.returncode == 0, uninterrupted.output[-3000:]
    planned = [e for _, e in uninterrupted.epochs]
    assert planned == ["1/3", "2/3"], planned  # stopped early: the case is about that
    workdir = tmp_path_factory.mktemp("stopping_interrupted")
    args = spam_args(f"--workdir={workdir}", *flags)
    killed = _killed_run("spam", args, (workdir, "head", 2))
    assert [e for _, e in killed.epochs] == planned
    rerun = _run("spam", args)
    assert rerun.returncode == 0, rerun.output[-3000:]
    assert ["1/3"] + [e for _, e in rerun.epochs] == planned
    assert _report(workdir) == _report(reference)
