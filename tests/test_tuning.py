"""tuning/: the search space and its defaults, the trial -> Config mapping, and `python -m
tuning.search` end to end in smoke mode (random search: best flagfile, resume, extension; Hyperband:
a trial that continues an earlier one)."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import keras
import keras_tuner
import pytest
import tensorflow as tf

from pipelines.core import flags as pipeline_flags
from pipelines.core.config import Config, Phase
from pipelines.core.context import Context
from pipelines.spam import TASK as SPAM
from tuning import hypermodel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The smoke flagfile with a short schedule: a trial in seconds.
SHORT = ["--flagfile=smoke.flags", "--full_epochs=1", "--steps_per_epoch=3"]
CLASSES = {"class_names": ["normal", "monotone", "screenshot", "unknown"]}
TINY_BLOCKS = 3


def _hypermodel(config: Config, precision: str = "float32") -> hypermodel.TaskHyperModel:
    context = Context(config, SPAM, CLASSES, weights=None, precision=precision,
                      strategy=tf.distribute.get_strategy())
    return hypermodel.TaskHyperModel(context, project_dir="/unused")


def _config(**changes) -> Config:
    return Config(task="spam", raw_dir="", data_dir="", workdir="", backbone="tiny", image_size=32, **changes)


@pytest.mark.parametrize("config, expected", [
    # The demo recipe: AdamW in the full phase, so weight decay is an active hyperparameter.
    (_config(head=Phase(1, 1e-3), full=Phase(12, 2e-3, "adamw", 1e-4)),
     {"head_learning_rate": 1e-3, "full_learning_rate": 2e-3, "head_epochs": 1, "unfreeze_top_blocks": 0,
      "full_optimizer": "adamw", "full_weight_decay": 1e-4, "dropout": 0.2, "label_smoothing": 0.0}),
    # SGD: weight decay is declared but inactive; values outside the ranges widen them.
    (_config(head=Phase(7, 1e-6, "sgd"), full=Phase(20, 1e-4, "sgd", 0.0), unfreeze_top_blocks=2,
             dropout=0.6, label_smoothing=0.1),
     {"head_learning_rate": 1e-6, "full_learning_rate": 1e-4, "head_epochs": 7, "unfreeze_top_blocks": 2,
      "full_optimizer": "sgd", "dropout": 0.6, "label_smoothing": 0.1}),
])
def test_every_hyperparameter_defaults_to_the_base_config(config, expected):
    hp = keras_tuner.HyperParameters()
    model = _hypermodel(config).build(hp)
    declared = {parameter.name: parameter.default for parameter in hp.space}
    assert declared == {"full_weight_decay": config.full.weight_decay, **expected}
    assert hp.values == expected  # a fresh HyperParameters after build = the base run
    assert model.get_layer("head_dropout").rate == expected["dropout"]
    assert hp.space[[p.name for p in hp.space].index("unfreeze_top_blocks")].max_value == TINY_BLOCKS


def test_build_restores_the_precision_policy_the_tuner_clears():
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        keras.backend.clear_session()  # what the tuner runs before each build
        model = _hypermodel(_config(), precision="mixed_bfloat16").build(keras_tuner.HyperParameters())
        assert model.get_layer("head_dropout").dtype_policy.name == "mixed_bfloat16"
        assert model.output.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_seed_zero_gives_a_repeatable_search(tmp_path):
    """KerasTuner reads seed 0 as "draw one": --seed=0 (the default) must still repeat."""
    oracles = [hypermodel.make_tuner("random", _hypermodel(_config()), 2, str(tmp_path / name), "p",
                                     tf.distribute.get_strategy(), seed=0).oracle for name in ("a", "b")]
    assert oracles[0].seed == oracles[1].seed == 1


def test_trial_config_maps_values_and_hyperband_budget():
    base = _config(head=Phase(3, 1e-3), full=Phase(10, 1e-4, "adamw", 1e-4))
    values = {"head_learning_rate": 2e-3, "full_learning_rate": 3e-4, "head_epochs": 2, "unfreeze_top_blocks": 1,
              "full_optimizer": "sgd", "dropout": 0.3, "label_smoothing": 0.05}
    config = hypermodel.trial_config(base, values, "/w/trial_0")
    assert config.workdir == "/w/trial_0" and config.head == Phase(2, 2e-3)
    assert config.full == Phase(10, 3e-4, "sgd", 1e-4)  # SGD: weight decay unused, left as it was
    assert (config.unfreeze_top_blocks, config.dropout, config.label_smoothing) == (1, 0.3, 0.05)
    assert hypermodel.flag_values(values) == values

    continued = {**values, "tuner/epochs": 9, "tuner/initial_epoch": 3, "tuner/trial_id": "4",
                 "tuner/bracket": 1, "tuner/round": 1}
    config = hypermodel.trial_config(base, continued, "/w/trial_7")
    assert config.head.epochs == 0 and config.full.epochs == 6  # the rest of Hyperband's budget
    assert hypermodel.flag_values(continued) == {**values, "full_epochs": 9}


def test_override_flags_replaces_lines_and_appends_missing_ones():
    text = "--raw_dir=/r\n--dropout=0.2\n--flip\n"
    assert hypermodel.override_flags(text, {"dropout": 0.35, "workdir": "/w"}) == \
        "--raw_dir=/r\n--dropout=0.35\n--flip\n--workdir=/w\n"


def _search(args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CI="1")
    return subprocess.run([sys.executable, "-m", "tuning.search", "--pipeline=spam", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


def _trial_files(project):
    return {path: open(path).read() for path in sorted(glob.glob(str(project / "trial_*" / "trial.json")))}


@pytest.fixture(scope="module")
def random_search(demo_root, demo_shards, tmp_path_factory):
    directory = tmp_path_factory.mktemp("tune")
    args = [*SHORT, f"--raw_dir={demo_root}", f"--data_dir={demo_shards}",
            "--tuner=random", "--max_trials=2", f"--directory={directory}"]
    result = _search(args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return directory / "spam_random", args, result


def test_search_tries_the_defaults_first_and_logs_hparams(random_search):
    project, _, result = random_search
    trials = {path: json.loads(text) for path, text in _trial_files(project).items()}
    assert len(trials) == 2 and all(trial["status"] == "COMPLETED" for trial in trials.values())
    first = json.loads((project / "trial_0" / "hyperparameters.json").read_text())
    assert first == {"head_learning_rate": 1e-3, "full_learning_rate": 3e-3, "head_epochs": 1,
                     "unfreeze_top_blocks": 0, "full_optimizer": "adamw", "full_weight_decay": 1e-4,
                     "dropout": 0.2, "label_smoothing": 0.0}  # smoke.flags
    assert (project / "trial_1" / "checkpoints" / "best.weights.h5").exists()
    table = result.stdout[result.stdout.index("trial_id"):].splitlines()
    assert "val_gm_f1" in table[0] and "status" in table[0] and table[1].startswith("0 ")
    for trial_id in ("0", "1"):
        events = glob.glob(str(project / "tensorboard" / trial_id / "events.out.tfevents.*"))
        tags = {value.tag for path in events for event in tf.compat.v1.train.summary_iterator(path)
                for value in event.summary.value}
        assert {"_hparams_/session_start_info", "val_gm_f1"} <= tags, tags


def test_best_flagfile_runs_the_pipeline(random_search, tmp_path):
    project, _, _ = random_search
    best = project / "best.flags"
    argv = pipeline_flags.resolve_flagfiles([f"--flagfile={best}"], "spam")
    assert f"--workdir={project / 'best'}" in argv and any(arg.startswith("--data_dir=") for arg in argv)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CI="1")
    result = subprocess.run([sys.executable, "-m", "pipelines.spam", f"--flagfile={best}", "--mode=train",
                             f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "checkpoints" / "best.json").exists()


def test_rerun_keeps_finished_trials_and_more_trials_extend(random_search):
    project, args, _ = random_search
    before = _trial_files(project)
    again = _search(args)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming: 2 finished trial(s) kept, not rerun" in again.stdout
    assert "Epoch " not in again.stdout and _trial_files(project) == before

    extended = _search([arg for arg in args if not arg.startswith("--max_trials")] + ["--max_trials=3"])
    assert extended.returncode == 0, extended.stdout[-3000:] + extended.stderr[-3000:]
    after = _trial_files(project)
    assert len(after) == 3 and {path: after[path] for path in before} == before
    assert extended.stdout.count("Running Trial #") == 1  # only the new trial


def test_resume_with_other_pipeline_flags_is_refused(random_search):
    _, args, _ = random_search
    result = _search(args + ["--image_size=48"])
    assert result.returncode == 2
    assert "other flags" in result.stderr and "--image_size=48" in result.stderr
    assert "Traceback" not in result.stderr


def test_hyperband_continues_its_best_trial(demo_root, demo_shards, tmp_path):
    # --full_epochs=3, factor 3: three 1-epoch trials, then the best continues to 3 epochs.
    result = _search([*SHORT, "--full_epochs=3", f"--raw_dir={demo_root}",
                      f"--data_dir={demo_shards}", "--tuner=hyperband", "--max_trials=4",
                      f"--directory={tmp_path}"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    project = tmp_path / "spam_hyperband"
    last = json.loads((project / "trial_3" / "trial.json").read_text())
    values = last["hyperparameters"]["values"]
    assert last["status"] == "COMPLETED" and values["tuner/trial_id"] in ("0", "1", "2")
    assert not (project / "trial_3" / "checkpoints" / "head.done").exists()  # started from trained weights
    best_flags = (project / "best.flags").read_text()
    best_id = best_flags.split(": trial ", 1)[1].split(",", 1)[0]
    best = json.loads((project / f"trial_{best_id}" / "trial.json").read_text())
    assert f"--full_epochs={best['hyperparameters']['values']['tuner/epochs']}\n" in best_flags
