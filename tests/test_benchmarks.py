"""The throughput benchmarks run end to end on a tiny set and end with the JSON line scripts read
(their figures are measured by hand on a quiet machine: README "Input throughput")."""

from __future__ import annotations

import json

from tests.conftest import run_module


def _json_line(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_input_pipeline_benchmark_runs_on_a_tiny_set(tmp_path):
    result = run_module("benchmarks.input_pipeline", [
        "--images=96", "--image_size=32", "--source_size=40", "--batch_size=16", "--repeats=1",
        "--wait_quiet=0", f"--workdir={tmp_path}"], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = _json_line(result.stdout)
    for name in ("ours", "image_dataset_from_directory", "pil_generator", "decode_limit"):
        assert figures[name] > 0, name
    assert figures["streamed_peak_memory_mb_4x"] >= 0
    assert (tmp_path / "shards_32" / "manifest.json").exists()  # stored at the model's size


def test_train_step_benchmark_runs_on_a_tiny_set(tmp_path):
    result = run_module("benchmarks.train_step", [
        "--images=64", "--image_size=32", "--batch_size=16", "--epochs=2", "--backbones=tiny",
        f"--workdir={tmp_path}"], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = _json_line(result.stdout)
    assert set(figures) == {f"tiny/{feed}" for feed in ("ours", "ours_old_pattern", "in_memory",
                                                        "image_dataset_from_directory")}
    assert all(value > 0 for value in figures.values())
