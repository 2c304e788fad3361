"""Claiming a run directory: it must be a folder we can write, and one this task and this version
of the pipeline made (or a new one), because its checkpoints are resumed and its best weights are
evaluated: another task's weights, or an older layout's, would fail deep inside Keras or, worse,
load into a model of the same shape and mean nothing.

<workdir>/run.json records who made it: {"task": ..., "format": FORMAT}. A workdir without that
record but with flags.txt (made before the record existed) is accepted when every flag it
records is a flag of this task; otherwise it is refused, naming the flags that differ.
Recovery in every case: a new --workdir, or delete the old folder.
"""

from __future__ import annotations

import json
import os

from pipelines.core.config import ConfigError
from preprocess import errors

RECORD = "run.json"
# The workdir layout (checkpoint names, flags.txt, outputs). Bump it when a change makes an older
# workdir unusable; claim() then refuses old workdirs instead of mixing them with new files.
FORMAT = 1


def claim(workdir: str, task) -> None:
    """Creates `workdir` or checks that this task may use it; ConfigError says what is wrong."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f"--workdir={workdir} is an existing file, not a folder: give a folder path")
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"--workdir={workdir} cannot be created: {errors.describe(error)}") from None
    record_path = os.path.join(workdir, RECORD)
    wanted = {"task": task.name, "format": FORMAT}
    if os.path.exists(record_path):
        try:
            with open(record_path, encoding="utf-8") as handle:
                found = json.load(handle)
        except (OSError, ValueError) as error:
            raise ConfigError(f"{record_path} is unreadable ({error}): not a workdir of this pipeline? "
                              "Use another --workdir or delete this one") from None
        differences = [f"{key} {found.get(key)!r} (this run: {value!r})"
                       for key, value in wanted.items() if found.get(key) != value]
        if differences:
            raise ConfigError(f"--workdir={workdir} was made by another task or version of the pipeline: "
                              f"{'; '.join(differences)}. Use another --workdir, or delete this one to "
                              "start over")
        return
    foreign = _foreign_flags(os.path.join(workdir, "flags.txt"), task)
    if foreign:
        raise ConfigError(f"--workdir={workdir} was made by another task or version of the pipeline: its "
                          f"flags.txt records flags that pipelines.{task.name} does not have "
                          f"({', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}). Use another "
                          "--workdir, or delete this one to start over")
    with open(record_path + ".incomplete", "w", encoding="utf-8") as handle:
        json.dump(wanted, handle)
    os.replace(record_path + ".incomplete", record_path)


def _foreign_flags(flags_path: str, task) -> list[str]:
    """Flags in an existing flags.txt that this task's entry point does not define."""
    if not os.path.exists(flags_path):
        return []
    from absl import flags as absl_flags

    from pipelines.core import flags as pipeline_flags

    known = set(pipeline_flags.define(getattr(task, "Options", None), absl_flags.FlagValues()))
    foreign = []
    with open(flags_path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if not line.startswith("--"):
                continue
            name = line[2:].split("=", 1)[0].strip()
            if name not in known and not (name.startswith("no") and name[2:] in known):
                foreign.append("--" + name)
    return foreign
