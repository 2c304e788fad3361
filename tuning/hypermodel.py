"""KerasTuner searches over a task pipeline's own model builder, inputs and training phases.

One trial is one pipeline training run: `pipelines.core.training.train` (head phase, then full phase) on
the base Config (flagfile + flags) with the trial's hyperparameters, in the trial's own workdir
<project>/trial_<id>/ (keras-tuner's trial.json beside the pipeline's checkpoints, BackupAndRestore
state and TensorBoard curves), so an interrupted trial resumes where it stopped. Hyperparameters
are named after the pipeline flags they set: the best trial becomes a flagfile by overriding them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import keras_tuner
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

from models import backbones
from pipelines.core import context as run_context
from pipelines.core import distribute, runner, training
from pipelines.core.config import OPTIMIZERS, Config, ConfigError
from tuning import cluster

# The search space; `SearchSpace` overrides any of these. Each range is widened to include the
# base config's value, the hyperparameter's default, so that the first trial is the flagfile run.
LEARNING_RATES = (1e-5, 1e-2)  # log scale, both phases
HEAD_EPOCHS = (0, 5)  # 0 skips the head warm-up
WEIGHT_DECAYS = (0.0, 1e-5, 1e-4, 1e-3, 1e-2)  # choices: 0 cannot be on a log scale
DROPOUTS = (0.0, 0.5)
LABEL_SMOOTHINGS = (0.0, 0.2)

TUNERS = ("random", "bayesian", "hyperband")
HYPERBAND_FACTOR = 3
# Hyperband's bookkeeping hyperparameters (budget, continued trial), not pipeline flags.
_HYPERBAND_PREFIX = "tuner/"


class SearchError(Exception):
    """A search that cannot start or finish; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """Ranges (low, high) or choices per hyperparameter, named after the flags they set."""

    head_learning_rate: tuple[float, float] = LEARNING_RATES
    full_learning_rate: tuple[float, float] = LEARNING_RATES
    head_epochs: tuple[int, int] = HEAD_EPOCHS
    full_optimizer: tuple[str, ...] = OPTIMIZERS
    full_weight_decay: tuple[float, ...] = WEIGHT_DECAYS
    dropout: tuple[float, float] = DROPOUTS
    label_smoothing: tuple[float, float] = LABEL_SMOOTHINGS


def declare_hyperparameters(hp: keras_tuner.HyperParameters, config: Config, block_count: int,
                            space: SearchSpace = SearchSpace()) -> dict:
    """Declares every hyperparameter with the base config's value as its default; returns the
    trial's values. Weight decay only exists for AdamW (SGD ignores it), so the Bayesian oracle
    does not model a dimension that changes nothing."""

    def float_range(name, bounds, default, sampling="linear"):
        low, high = min(bounds[0], default), max(bounds[1], default)
        return hp.Float(name, low, high, sampling=sampling, default=default)

    def choices(name, options, default):
        return hp.Choice(name, sorted(set(options) | {default}), default=default)

    float_range("head_learning_rate", space.head_learning_rate, config.head.learning_rate, "log")
    float_range("full_learning_rate", space.full_learning_rate, config.full.learning_rate, "log")
    hp.Int("head_epochs", min(space.head_epochs[0], config.head.epochs),
           max(space.head_epochs[1], config.head.epochs), default=config.head.epochs)
    # 0 = the whole backbone (BatchNorm included); N = its top N blocks (BatchNorm frozen).
    hp.Int("unfreeze_top_blocks", 0, block_count, default=config.unfreeze_top_blocks)
    choices("full_optimizer", space.full_optimizer, config.full.optimizer)
    with hp.conditional_scope("full_optimizer", ["adamw"]):
        choices("full_weight_decay", space.full_weight_decay, config.full.weight_decay)
    float_range("dropout", space.dropout, config.dropout)
    float_range("label_smoothing", space.label_smoothing, config.label_smoothing)
    return dict(hp.values)


def flag_values(values: dict) -> dict:
    """A trial's hyperparameter values as pipeline flags: the tuned ones, plus --full_epochs when
    Hyperband chose the trial's budget (`tuner/epochs`, counting a continued trial's epochs)."""
    flags = {name: value for name, value in values.items() if not name.startswith(_HYPERBAND_PREFIX)}
    if "tuner/epochs" in values:
        flags["full_epochs"] = values["tuner/epochs"]
    return flags


def trial_config(base: Config, values: dict, workdir: str) -> Config:
    """The Config one trial trains with. Under Hyperband the full phase gets the trial's budget;
    a trial that continues an earlier one (`tuner/trial_id`) starts from its weights and only
    trains the remaining full-phase epochs."""
    head_epochs = values.get("head_epochs", base.head.epochs)
    full_epochs = base.full.epochs
    if "tuner/epochs" in values:
        full_epochs = values["tuner/epochs"] - values["tuner/initial_epoch"]
        if values.get("tuner/trial_id"):
            head_epochs = 0
    head = dataclasses.replace(base.head, epochs=head_epochs,
                              learning_rate=values.get("head_learning_rate", base.head.learning_rate))
    full = dataclasses.replace(base.full, epochs=full_epochs,
                               learning_rate=values.get("full_learning_rate", base.full.learning_rate),
                               optimizer=values.get("full_optimizer", base.full.optimizer),
                               weight_decay=values.get("full_weight_decay", base.full.weight_decay))
    return dataclasses.replace(
        base, workdir=workdir, head=head, full=full, dropout=values.get("dropout", base.dropout),
        unfreeze_top_blocks=values.get("unfreeze_top_blocks", base.unfreeze_top_blocks),
        label_smoothing=values.get("label_smoothing", base.label_smoothing)).validate()


class TaskHyperModel(keras_tuner.HyperModel):
    """`build` = the task's model builder; `fit` = one pipeline training run.

    The tuner's own callbacks (its per-epoch checkpoint) are not used: the pipeline keeps the
    trial's best checkpoint in <project>/trial_<id>/checkpoints/ itself."""

    def __init__(self, context: run_context.Context, project_dir: str, space: SearchSpace = SearchSpace()):
        super().__init__(name=context.task.name)
        self.context = context
        self.config = context.config
        self.project_dir = project_dir
        self.space = space
        self.block_count = len(backbones.get_spec(self.config.backbone).blocks)
        if self.config.unfreeze_top_blocks > self.block_count:
            raise ConfigError(f"--unfreeze_top_blocks={self.config.unfreeze_top_blocks}: backbone "
                              f"{self.config.backbone} has {self.block_count} blocks")

    def trial_dir(self, trial_id: str) -> str:
        """keras-tuner's own folder of the trial (trial.json) is also its pipeline workdir."""
        return os.path.join(self.project_dir, f"trial_{trial_id}")

    def build(self, hp):
        values = declare_hyperparameters(hp, self.config, self.block_count, self.space)
        # The tuner calls keras.backend.clear_session() before each build, which resets Keras'
        # global dtype policy (and the seed, which build_model sets): set it again.
        distribute.set_precision(self.context.precision)
        return run_context.build_model(self.context, dataclasses.replace(self.config, dropout=values["dropout"]))

    def fit(self, hp, model, *args, trial_id: str, **kwargs):
        values = hp.values
        config = trial_config(self.config, values, self.trial_dir(trial_id))
        _claim_workdir(config.workdir, values)
        continued = values.get("tuner/trial_id")
        if continued:
            model.load_weights(runner.final_weights_path(self.trial_dir(continued)))
        data = run_context.training_data(self.context, config)
        state = training.train(config, model, data, self.context.task, self.context.strategy)
        name = objective_name(self.context.task)
        log_dir = os.path.join(self.project_dir, "tensorboard", trial_id)
        with tf.summary.create_file_writer(log_dir).as_default():
            hparams_api.hparams(flag_values(values), trial_id=trial_id)
            tf.summary.scalar(name, state["value"], step=state["epoch"])
        return {name: state["value"]}


def _claim_workdir(workdir: str, values: dict) -> None:
    """A trial resumes its workdir's checkpoints only if they were made with its own values; a
    workdir left by other values (a project whose search state was deleted) is started afresh."""
    path = os.path.join(workdir, "hyperparameters.json")
    if os.path.exists(path):
        with open(path) as handle:
            if json.load(handle) == values:
                return
        print(f"{workdir} holds another configuration's training: starting it afresh")
        for name in ("checkpoints", "backup", "tensorboard"):
            shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)
    os.makedirs(workdir, exist_ok=True)
    with open(path, "w") as handle:
        json.dump(values, handle, indent=2)


def objective_name(task) -> str:
    """The name ValidationMetrics gives the task's objective in the epoch logs."""
    return f"val_{task.objective}"


class _DefaultsFirst:
    """Oracle mixin: the first configuration tried is every hyperparameter's default, the
    flagfile's own run, so every search has its baseline in the table and a 1-trial search
    reproduces the flagfile. `_random_values` is where all three oracles of keras-tuner 1.4 draw
    new configurations (Hyperband's first round and Bayesian's initial points included)."""

    def _random_values(self):
        defaults = keras_tuner.HyperParameters()
        defaults.merge(self.hyperparameters.space)
        if not self._duplicate(defaults.values):
            return defaults.values
        return super()._random_values()


class _SavedWhenTrialsEnd:
    """Oracle mixin: saves its state once an ended trial is no longer ongoing. keras-tuner's
    end_trial saves before it lets go of the trial; a tuner in one process saves again right after,
    but a cluster's chief does not, so its oracle.json would list each worker's last trial as
    running and a resumed search would train it again."""

    @keras_tuner.synchronized
    def end_trial(self, trial):
        super().end_trial(trial)
        self.save()


class RandomSearchOracle(_SavedWhenTrialsEnd, _DefaultsFirst, keras_tuner.oracles.RandomSearchOracle):
    pass


class BayesianOptimizationOracle(_SavedWhenTrialsEnd, _DefaultsFirst,
                                 keras_tuner.oracles.BayesianOptimizationOracle):
    pass


class HyperbandOracle(_SavedWhenTrialsEnd, _DefaultsFirst, keras_tuner.oracles.HyperbandOracle):
    pass


class TwoPhaseTuner(keras_tuner.Tuner):
    """Hands each trial's id to HyperModel.fit, which names the trial's workdir after it. Hyperband
    needs nothing more from its own Tuner class: fit reads the budget and the continued trial from
    the hyperparameters.

    In a tuning cluster (tuning/cluster.py) the chief serves the oracle instead of training, and a
    worker records the trials it ran (`trials_run`), which only the chief can list."""

    def __init__(self, *args, role: cluster.Role | None = None, **kwargs):
        self.role = role
        self.trials_run: list[str] = []
        super().__init__(*args, **kwargs)

    def run_trial(self, trial, *args, **kwargs):
        self.trials_run.append(trial.trial_id)
        return super().run_trial(trial, *args, trial_id=trial.trial_id, **kwargs)

    def search(self, *args, **kwargs):
        if self.role and self.role.is_chief:
            self.save()  # as keras-tuner's chief does before serving
            cluster.serve(self.oracle, self.role)
            return
        super().search(*args, **kwargs)

    def _populate_initial_space(self):
        # A worker's space comes from the chief with each trial: skip the model builds.
        if not self._is_worker():
            super()._populate_initial_space()

    def _get_tuner_fname(self):
        # The file whose presence makes keras-tuner reload the oracle: one name for the process
        # that holds it, alone (keras-tuner's "tuner0") or as a cluster's chief (its "chief"), so
        # either mode resumes or extends a project the other started instead of numbering trials
        # from 0 again over the old ones. A worker's own file (its tuner state, empty) is apart.
        if self._is_worker():
            return os.path.join(self.project_dir, f"worker_{self.tuner_id}.json")
        return os.path.join(self.project_dir, "tuner0.json")


def make_tuner(kind: str, hypermodel: TaskHyperModel, max_trials: int, directory: str,
               project_name: str, strategy: tf.distribute.Strategy, seed: int = 0,
               num_initial_points: int | None = None, role: cluster.Role | None = None) -> TwoPhaseTuner:
    """A tuner that reloads an existing project (overwrite=False): finished trials are kept, an
    interrupted one is run again in its workdir, where the pipeline resumes it."""
    objective = keras_tuner.Objective(objective_name(hypermodel.context.task), direction="max")
    seed = seed + 1  # KerasTuner reads a seed of 0 as "none" and draws a random one: --seed=0 must repeat
    if kind == "random":
        oracle = RandomSearchOracle(objective, max_trials=max_trials, seed=seed)
    elif kind == "bayesian":
        oracle = BayesianOptimizationOracle(objective, max_trials=max_trials, seed=seed,
                                            num_initial_points=num_initial_points)
    elif kind == "hyperband":
        # Hyperband's budget is the full phase's epochs, up to the flags' --full_epochs; it sizes
        # its brackets itself, and max_trials still caps the search.
        if hypermodel.config.full.epochs < 1:
            raise SearchError("--tuner=hyperband shares out the full phase's epochs: give --full_epochs >= 1")
        oracle = HyperbandOracle(objective, max_epochs=hypermodel.config.full.epochs,
                                 factor=HYPERBAND_FACTOR, seed=seed)
        oracle.max_trials = max_trials
    else:
        raise SearchError(f"unknown tuner {kind!r}; choose one of {', '.join(TUNERS)}")
    return TwoPhaseTuner(oracle=oracle, hypermodel=hypermodel, distribution_strategy=strategy,
                         directory=directory, project_name=project_name, overwrite=False, role=role)


def search(config: Config, task, flagfile_text: str, tuner_kind: str, max_trials: int,
           directory: str, project_name: str, space: SearchSpace = SearchSpace(),
           num_initial_points: int | None = None, role: cluster.Role | None = None) -> dict:
    """Runs (or resumes, or extends) a search; prints the trial table and writes the best trial
    as <directory>/<project_name>/best.flags. `flagfile_text` is the base run's effective flags.

    `role` (tuning/cluster.py, from KerasTuner's variables): the chief prepares the data, serves
    the oracle and then does what a search in one process does at its end; a worker waits for
    the chief, reads the shards it prepared, trains the trials it is given and returns only those."""
    project_dir = os.path.join(directory, project_name)
    worker = role is not None and not role.is_chief
    if worker:  # the chief writes search.json before it serves: the check below compares with it
        cluster.wait_for_chief(role)
        config = dataclasses.replace(config, raw_dir="")  # the chief's shards, not a second writer
    search_record = _check_same_search(project_dir, tuner_kind, flagfile_text)
    if config.pseudo_label_rounds and not worker:
        print(f"note: trials tune the supervised phases only (the first teacher); best.flags keeps "
              f"--pseudo_label_rounds={config.pseudo_label_rounds}")
    context = run_context.prepare(config, task)  # the pipeline's own set-up: weights, data, precision, strategy
    print(f"{project_name}: {tuner_kind} search" + (f"; {role.describe()}" if role else ""))
    hypermodel = TaskHyperModel(context, project_dir, space)
    tuner = make_tuner(tuner_kind, hypermodel, max_trials, directory, project_name, context.strategy,
                       config.seed, num_initial_points, role)
    if worker:
        return _work(tuner, role)
    _report_resume(tuner.oracle, max_trials)
    _write_atomically(os.path.join(project_dir, "search.json"), json.dumps(search_record, indent=2))
    try:
        tuner.search()
    except RuntimeError as error:  # keras-tuner stops after consecutive failed trials
        raise SearchError(f"search stopped: {error}") from None
    trials = sorted(tuner.oracle.trials.values(), key=lambda trial: int(trial.trial_id))
    name = objective_name(task)
    print(format_trials(trials, name))
    for trial in trials:
        if trial.status == "FAILED" and trial.message:
            print(f"trial {trial.trial_id} failed: {trial.message.strip().splitlines()[-1]}")
    completed = [trial for trial in trials if trial.status == "COMPLETED"]
    if not completed:
        raise SearchError(f"no trial completed; the reasons are in {project_dir}/trial_*/trial.json")
    best = max(completed, key=lambda trial: trial.score)  # the earliest on ties: the baseline first
    best_path = os.path.join(project_dir, "best.flags")
    overrides = {**flag_values(best.hyperparameters.values), "workdir": config.workdir,
                 "data_dir": config.data_dir}
    header = (f"# Best of {len(completed)} completed trials of {project_name} ({tuner_kind} search): "
              f"trial {best.trial_id}, {name} = {best.score:.4f}.\n"
              f"# Run:    python -m pipelines.{config.task} --flagfile={best_path}\n"
              f"# Expect: {name} about {best.score:.4f} (the trial's run: same data, seed and schedule).\n")
    with open(best_path, "w") as handle:
        handle.write(header + override_flags(flagfile_text, overrides))
    print(f"best: trial {best.trial_id}, {name} {best.score:.4f}; flags in {best_path}\n"
          f"compare trials with: tensorboard --logdir {os.path.join(project_dir, 'tensorboard')} "
          "(HParams tab)")
    return {"best_trial": best.trial_id, "best_value": best.score, "best_flags": best_path,
            "trials": [{"trial_id": trial.trial_id, "values": flag_values(trial.hyperparameters.values),
                        "score": trial.score, "status": trial.status} for trial in trials]}


def _work(tuner: TwoPhaseTuner, role: cluster.Role) -> dict:
    """A worker's search: trials from the chief until it says stop. A lost chief is an error
    message; so is the chief's refusal (it stops the search after consecutive failed trials)."""
    import grpc

    try:
        tuner.search()
    except grpc.RpcError as error:
        raise SearchError(f"worker {role.tuner_id}: the chief at {role.address} failed: "
                          f"{error.code().name}: {error.details()}") from None
    ran = ", ".join(tuner.trials_run) or "none"
    print(f"worker {role.tuner_id}: ran trial(s) {ran}; the chief ranks all trials and writes best.flags")
    return {"tuner_id": role.tuner_id, "trials_run": list(tuner.trials_run)}


def _write_atomically(path: str, text: str) -> None:
    """Written under a temporary name and renamed: a worker checking the file meanwhile reads it
    whole or not at all."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def _check_same_search(project_dir: str, tuner_kind: str, flagfile_text: str) -> dict:
    """A project is resumed or extended only with the tuner and pipeline flags it started with
    (recorded in search.json): trials of different base runs must not be ranked together."""
    path = os.path.join(project_dir, "search.json")
    current = {"tuner": tuner_kind, "pipeline_flags": flagfile_text.splitlines()}
    if not os.path.exists(path):
        return current
    with open(path) as handle:
        started = json.load(handle)
    then = {f"--tuner={started['tuner']}", *started["pipeline_flags"]}
    now = {f"--tuner={tuner_kind}", *current["pipeline_flags"]}
    if then != now:
        raise SearchError(f"{project_dir} holds a search started with other flags (then: "
                          f"{' '.join(sorted(then - now))}; now: {' '.join(sorted(now - then))}); rerun "
                          "it with the same flags (only --max_trials may change), or give another "
                          "--directory or --project_name")
    return current


def _report_resume(oracle, max_trials: int) -> None:
    finished = [trial for trial in oracle.trials.values() if trial.status in ("COMPLETED", "FAILED")]
    interrupted = [trial for trial in oracle.trials.values() if trial.status == "RUNNING"]
    if not oracle.trials:
        return
    print(f"resuming: {len(finished)} finished trial(s) kept, not rerun"
          + (f"; trial(s) {', '.join(t.trial_id for t in interrupted)} resume in their workdir"
             if interrupted else ""))
    if len(oracle.trials) >= max_trials and not interrupted:
        print(f"--max_trials={max_trials} reached: raise it to run more trials")


def format_trials(trials, objective: str) -> str:
    """One row per trial: id, each hyperparameter (as its flag), the objective, the status."""
    names = list(dict.fromkeys(name for trial in trials
                               for name in flag_values(trial.hyperparameters.values)))
    header = ["trial_id", *names, objective, "status"]
    rows = []
    for trial in trials:
        values = flag_values(trial.hyperparameters.values)
        score = "" if trial.score is None else f"{trial.score:.4f}"
        rows.append([trial.trial_id, *(_short(values.get(name, "-")) for name in names), score,
                     str(trial.status)])
    widths = [max(len(row[index]) for row in [header, *rows]) for index in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in [header, *rows])


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def override_flags(flagfile_text: str, overrides: dict) -> str:
    """`flagfile_text` with the `--name=value` lines of `overrides` replaced (or appended)."""
    lines, done = [], set()
    for line in flagfile_text.splitlines():
        name = line.split("=", 1)[0][2:] if line.startswith("--") else None
        if name in overrides:
            line = f"--{name}={overrides[name]}"
            done.add(name)
        lines.append(line)
    lines += [f"--{name}={value}" for name, value in overrides.items() if name not in done]
    return "\n".join(lines) + "\n"
