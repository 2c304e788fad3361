"""`--runner=beam`: the Beam pipeline (Beam's local runner, in process) writes exactly what the local job
writes, for every task; its pipeline arguments reach Beam; bad use is a one-line error."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from preprocess import cli, demo, jobs, writer
from preprocess.shard_options import RunnerOptions
from tests.conftest import ROOT, tree_digests
from tests.test_preprocess import make_messy_spam

pytest.importorskip("apache_beam")  # installed by `make` (requirements.txt); BUILD.md "Apache Beam"

from preprocess import beam_job  # noqa: E402  (after the skip: it imports apache_beam)

OPTIONS = writer.ShardOptions(num_shards=3, workers=1, max_pixels=4_000_000)
BEAM = RunnerOptions("beam", ("--direct_num_workers=1", "--direct_running_mode=in_memory"))
QUIET = lambda message: None  # noqa: E731


def _raw(task, root):
    """Generated demo data for one task; spam gets the messy layout (every kind of bad row)."""
    raw = root / "raw"
    if task == "messy_spam":
        return "spam", make_messy_spam(raw)
    demo.make_demo(task, str(raw), seed=3, scale=0.1)
    return task, raw


@pytest.mark.parametrize("case", ["messy_spam", "spam", "stickers", "memes", "products"])
def test_beam_writes_the_same_shards_manifest_and_rejects_as_the_local_job(case, tmp_path):
    task, raw = _raw(case, tmp_path)
    local = jobs.build(task, str(raw), str(tmp_path / "local"), OPTIONS, log=QUIET)
    logs = []
    beam = jobs.build(task, str(raw), str(tmp_path / "beam"), OPTIONS, log=logs.append, runner=BEAM)
    assert any("Beam pipeline on FnApiRunner" in line for line in logs), logs
    # Every file, byte for byte: shards, manifest.json (no runner-specific field), rejects.csv;
    # nothing of the Beam run's work folder is left behind.
    assert tree_digests(tmp_path / "beam") == tree_digests(tmp_path / "local")
    assert beam == local
    written = sum(split["records"] for split in beam["splits"].values())
    assert written + beam["rejected_rows"] == beam["input_rows"] > 0
    if case == "messy_spam":
        assert beam["rejected_rows"] >= 10  # decode failures counted through the Beam side too
    # Same fingerprint: switching runners never rebuilds up-to-date shards, either way round.
    again = []
    jobs.build(task, str(raw), str(tmp_path / "beam"), OPTIONS, log=again.append)
    jobs.build(task, str(raw), str(tmp_path / "local"), OPTIONS, log=again.append, runner=BEAM)
    assert len(again) == 2 and all("up to date" in line for line in again), again


def test_an_interrupted_beam_run_resumes_from_the_shards_it_finished(tmp_path, monkeypatch):
    _, raw = _raw("messy_spam", tmp_path)
    jobs.build("spam", str(raw), str(tmp_path / "local"), OPTIONS, log=QUIET)
    data_dir = tmp_path / "beam"

    def launcher_dies(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "finish", launcher_dies)  # the pipeline ran, the launcher died
    with pytest.raises(KeyboardInterrupt):
        jobs.build("spam", str(raw), str(data_dir), OPTIONS, log=QUIET, runner=BEAM)
    monkeypatch.undo()
    work_dir = data_dir / "tfrecords" / beam_job.WORK_DIR
    results = sorted(name for name in os.listdir(work_dir) if name.endswith(".tfrecord.json"))
    assert len(results) == 6 and not (data_dir / "manifest.json").exists()
    os.remove(work_dir / results[0])  # as if that shard's bundle had not finished
    logs = []
    jobs.build("spam", str(raw), str(data_dir), OPTIONS, log=logs.append, runner=BEAM)
    assert any("resuming, 5 of 6 shards" in line for line in logs), logs
    assert any("into 1 shards" in line for line in logs), logs
    assert tree_digests(data_dir) == tree_digests(tmp_path / "local")


class _Stop(Exception):
    pass


def test_beam_pipeline_args_reach_the_pipeline_options(tmp_path, monkeypatch):
    _, raw = _raw("messy_spam", tmp_path)
    seen = []

    def spy(options, *args):  # records what the pipeline would run with, and stops there
        seen.append(options.get_all_options())
        raise _Stop

    monkeypatch.setattr(beam_job, "_run", spy)
    args = cli.split_args(["--job_name=args-test --direct_num_workers=1", "--runner=DataflowRunner",
                           "--labels='team=vision'"])
    assert args == ("--job_name=args-test", "--direct_num_workers=1", "--runner=DataflowRunner",
                    "--labels=team=vision")
    for given in (args, ("--job_name=default-runner",)):
        with pytest.raises(_Stop):
            jobs.build("spam", str(raw), str(tmp_path / "out"), OPTIONS, log=QUIET,
                       runner=RunnerOptions("beam", given))
    named, default = seen
    assert named["job_name"] == "args-test" and named["runner"] == "DataflowRunner"  # never replaced
    assert named["direct_num_workers"] == 1 and named["labels"] == ["team=vision"]
    # No runner named: Beam's in-process runner, not DirectRunner, which would first try to
    # download its Prism binary from the network.
    assert default["job_name"] == "default-runner" and default["runner"] == beam_job.LOCAL_RUNNER


def test_cli_runs_beam_with_repeated_and_quoted_pipeline_args(tmp_path):
    raw = make_messy_spam(tmp_path / "raw")
    result = subprocess.run(
        [sys.executable, "-m", "preprocess.spam", f"--raw_dir={raw}", f"--data_dir={tmp_path / 'out'}",
         "--num_shards=2", "--runner=beam", "--beam_pipeline_args=--job_name=cli-test --direct_num_workers=2",
         "--beam_pipeline_args=--direct_running_mode=multi_threading"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Beam pipeline on FnApiRunner" in result.stdout
    assert '"job_name": "cli-test"' in result.stdout and '"direct_running_mode": "multi_threading"' in result.stdout
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["input_rows"] == 80


@pytest.mark.parametrize("args, message", [
    (["--beam_pipeline_args=--runner=DataflowRunner"], "error: --beam_pipeline_args needs --runner=beam"),
    (["--runner=spark"], "error: "),
])
def test_cli_bad_runner_use_is_a_one_line_error(tmp_path, args, message):
    result = subprocess.run([sys.executable, "-m", "preprocess.spam", f"--raw_dir={tmp_path}",
                             f"--data_dir={tmp_path / 'out'}", *args],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_runner_options_validate_and_the_local_path_never_imports_beam():
    with pytest.raises(ValueError, match="needs --runner=beam"):
        RunnerOptions("local", ("--runner=DirectRunner",))
    with pytest.raises(ValueError, match="--runner must be one of local, beam"):
        RunnerOptions("flink")
    with pytest.raises(ValueError, match="--beam_pipeline_args: No closing quotation"):
        cli.split_args(["--job_name='unterminated"])  # the command line prints it as `error: ...`
    code = ("import sys; from preprocess import cli, jobs, writer; "
            "assert 'apache_beam' not in sys.modules, 'the local path imported apache_beam'")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
