"""Four tasks on one core: each pipelines/<task>/ holds a Task (its __init__) and its entry point
(its __main__: `python -m pipelines.<task>`); pipelines/core/ is the library they share.

`TASK_MODULES` is the explicit list of task modules, by name, for code that picks a task by name
(tuning, tests); importing this package imports none of them.
"""

import importlib

TASK_MODULES = {"spam": "pipelines.spam", "stickers": "pipelines.stickers", "memes": "pipelines.memes",
                "products": "pipelines.products"}


def load_task(name: str):
    """The Task object of the task `name` (imports its module, and TensorFlow with it)."""
    if name not in TASK_MODULES:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(TASK_MODULES))}")
    return importlib.import_module(TASK_MODULES[name]).TASK
