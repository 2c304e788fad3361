"""The pipeline entry points' flags, generated from Config and the task's Options, and their
conversion into a frozen, validated Config.

Order of precedence (tf-models style): Config defaults -> flagfile(s) -> command-line flags. The
effective flags are written to <workdir>/flags.txt, so `--flagfile=<workdir>/flags.txt` repeats a
run. Imports no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from absl import app, flags

from pipelines.core.config import Config, ConfigError
from preprocess import config_flags, errors

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLAGS = flags.FLAGS


def define(options_class: type | None = None, flag_values: flags.FlagValues = FLAGS) -> list[str]:
    """Defines Config's flags and those of a task's Options dataclass; returns the names of every
    flag that describes a run (what flags.txt records)."""
    names = config_flags.define(Config, flag_values, module_name=__name__)
    if options_class is not None:
        names += config_flags.define(options_class, flag_values, module_name=__name__)
    return names


def config_from_flags(task: str, options_class: type | None = None,
                      flag_values: flags.FlagValues = FLAGS) -> Config:
    """The parsed flags as a validated Config; a bad value is a ConfigError naming its flag."""
    try:
        options = config_flags.build(options_class, flag_values) if options_class is not None else None
        config = config_flags.build(Config, flag_values, task=task, options=options)
    except ValueError as error:  # ShardOptions and FlagValueError name the flag
        raise ConfigError(str(error)) from None
    if not config.workdir:
        raise ConfigError("--workdir is required")
    if not config.data_dir and not config.raw_dir:
        raise ConfigError("give --data_dir (shards) and/or --raw_dir (raw layout to shard)")
    if not config.data_dir:
        config = dataclasses.replace(config, data_dir=os.path.join(config.workdir, "data"))
    return config.validate()


def effective_flags(names: list[str]) -> str:
    """The run's flags as a flagfile (every flag, defaults included, so later default changes
    cannot silently change a repeated run)."""
    return "".join(FLAGS[name].serialize() + "\n" for name in names if FLAGS[name].value is not None)


def resolve_flagfiles(argv: list[str], task: str, _including_dir: str | None = None,
                      origins: dict[str, str] | None = None) -> list[str]:
    """Expands every --flagfile argument in place, recursively.

    A flagfile name is looked up as given, then beside the file that includes it, then in
    experiments/<task>/, so `--flagfile=v1.flags` works from any directory and a demo flagfile can
    nest `--flagfile=v1.flags`. Later flags override earlier ones, as with absl's own flagfiles.
    `origins`, when given, gets each argument that came from a flagfile -> that file's path.
    """
    expanded = []
    for arg in argv:
        if not arg.startswith("--flagfile="):
            expanded.append(arg)
            continue
        path = _find_flagfile(arg.split("=", 1)[1], task, _including_dir)
        with open(path) as handle:
            lines = [line.strip() for line in handle]
        contents = [line for line in lines if line and not line.startswith("#")]
        nested = resolve_flagfiles(contents, task, os.path.dirname(path), origins)
        if origins is not None:
            origins.update({line: origins.get(line, path) for line in nested})
        expanded.extend(nested)
    return expanded


def run(main, task: str) -> None:
    """absl's app.run with --flagfile arguments expanded first; a flagfile that is not there is
    an error message and exit status 2, not a traceback; so is a flag that is not defined, naming
    the flagfile it came from."""
    origins: dict[str, str] = {}
    try:
        argv = resolve_flagfiles(sys.argv, task, origins=origins)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    app.run(main, argv=argv,
            flags_parser=lambda args: errors.parse_flags_or_exit(args, FLAGS, origins))


def _find_flagfile(name: str, task: str, including_dir: str | None) -> str:
    candidates = [name]
    if including_dir:
        candidates.append(os.path.join(including_dir, name))
    candidates.append(os.path.join(REPO_ROOT, "experiments", task, name))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise ConfigError(f"flagfile {name!r} not found (looked in: {', '.join(candidates)})")
