"""Hyperparameter search over a pipeline's two-phase training:

    python -m tuning.search --pipeline=spam --flagfile=demo.flags --raw_dir=RAW --data_dir=DATA \\
        --tuner=random|bayesian|hyperband --max_trials=N --directory=DIR

Every pipeline flag works (a bare --flagfile name is looked up in experiments/<pipeline>/): they
make the base run, whose values are the defaults of the search space and its first trial. Outputs
go to DIR/<project> (project: --project_name, default <pipeline>_<tuner>): trial_<id>/ (each
trial's pipeline workdir, beside keras-tuner's trial.json), tensorboard/<id>/ (HParams), best.flags
(the best trial as a flagfile; its --workdir is this command's --workdir, default
DIR/<project>/best). Rerun the same command to resume an interrupted search, or with a larger
--max_trials to extend a finished one.

A tuning cluster (KerasTuner's distributed mode, tuning/cluster.py): run this same command in
every process with KERASTUNER_TUNER_ID (chief, or tuner0, tuner1, ... for the workers),
KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT (the chief's address) set. The chief prepares the
data, hands out --max_trials trials in all (its own flag counts) and writes the table and
best.flags; the workers train. All of them use the same --directory (a shared filesystem).
"""

import os
import sys

from absl import app, flags, logging

from pipelines import TASK_MODULES, load_task
from pipelines.core import flags as pipeline_flags
from tuning import cluster

flags.DEFINE_enum("pipeline", None, list(TASK_MODULES), "The pipeline whose training is tuned.")
flags.DEFINE_enum("tuner", "random", ["random", "bayesian", "hyperband"],
                  "hyperband: the full phase's epochs are its budget, up to --full_epochs.")
flags.DEFINE_integer("max_trials", 10, "Trials in all, earlier runs of the search included.")
flags.DEFINE_string("directory", None, "Where searches keep their projects.")
flags.DEFINE_string("project_name", None, "Project folder in --directory (default <pipeline>_<tuner>).")
flags.DEFINE_integer("num_initial_points", None,
                     "bayesian: random trials before the Gaussian process (default 3 per hyperparameter).")
flags.mark_flags_as_required(["pipeline", "directory"])
FLAGS = flags.FLAGS


def main(task, run_flags: list[str]):
    def search(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        if FLAGS.max_trials < 1:
            raise app.UsageError(f"--max_trials must be >= 1, got {FLAGS.max_trials}")
        try:  # before anything slow: a half-configured cluster is an error, not a lone search
            role = cluster.role_from_env()
        except cluster.ClusterError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        logging.set_verbosity(logging.WARNING)
        # TensorFlow is imported here, not at the top: preprocessing workers re-import this module.
        from pipelines.core import cli
        from tuning import hypermodel

        project_name = FLAGS.project_name or f"{FLAGS.pipeline}_{FLAGS.tuner}"
        if not FLAGS.workdir:  # the best trial's flagfile trains in it
            FLAGS.workdir = os.path.join(FLAGS.directory, project_name, "best")
        try:
            config = pipeline_flags.config_from_flags(task.name, task.Options)
            hypermodel.search(config, task, pipeline_flags.effective_flags(run_flags), FLAGS.tuner,
                              FLAGS.max_trials, FLAGS.directory, project_name,
                              num_initial_points=FLAGS.num_initial_points, role=role)
        except (*cli.USER_ERRORS, hypermodel.SearchError, cluster.ClusterError) as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    return search


def _pipeline(argv: list[str]) -> str:
    """--pipeline, needed before absl parses the flags: it names the task (its flags, and its
    experiments/ folder)."""
    return next((arg.split("=", 1)[1] for arg in argv if arg.startswith("--pipeline=")), "")


if __name__ == "__main__":
    name = _pipeline(sys.argv)
    task = load_task(name) if name in TASK_MODULES else None  # only the chosen task is imported
    run_flags = pipeline_flags.define(task.Options if task else None)
    pipeline_flags.run(main(task, run_flags), name)
