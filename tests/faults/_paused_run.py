"""`python -m tests.faults._paused_run <task> <pipeline flags...>`: the task's entry point
(`python -m pipelines.<task>`), plus one probe for a precise kill point. With FAULT_PAUSE_AT set
(JSON: workdir, phase, epoch as Keras prints it from 1, and step from 1, or "after_backup": true),
the training process prints "FAULT_PAUSED" after that step of that epoch (mid-epoch), or at that
epoch's end right after BackupAndRestore saved it (before the validation metrics and the best
checkpoint), and stops itself (SIGSTOP) for the test to SIGKILL. Why: a smoke epoch takes ~60 ms, less than a test needs to read a progress line and send
the kill on two busy cores, so a kill aimed from outside lands after the epoch's backup."""

from __future__ import annotations

import json
import os
import runpy
import signal
import sys

import keras

from pipelines.core import training


class _PauseAt(keras.callbacks.Callback):
    def __init__(self, epoch: int, step: int | None):
        super().__init__()
        self.epoch, self.step, self.current = epoch, step, None

    def _pause(self, where: str):
        print(f"FAULT_PAUSED epoch {self.current} {where}", flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch + 1 == self.step:
            self._pause(f"step {self.step}")

    def on_epoch_end(self, epoch, logs=None):
        if self.step is None and self.current == self.epoch:
            self._pause("after its backup")


def main() -> None:
    task, args = sys.argv[1], sys.argv[2:]
    spec = json.loads(os.environ.get("FAULT_PAUSE_AT", "null"))
    if spec:
        phase_callbacks = training.phase_callbacks

        def with_pause(config, name, *rest, **kwargs):
            callbacks = phase_callbacks(config, name, *rest, **kwargs)
            if os.path.abspath(config.workdir) == os.path.abspath(spec["workdir"]) and name == spec["phase"]:
                if spec.get("after_backup"):
                    at = 1 + next(index for index, callback in enumerate(callbacks)
                                  if isinstance(callback, keras.callbacks.BackupAndRestore))
                    callbacks.insert(at, _PauseAt(spec["epoch"], None))
                else:
                    callbacks.append(_PauseAt(spec["epoch"], spec["step"]))
            return callbacks

        training.phase_callbacks = with_pause  # train() looks the name up at each phase
    sys.argv = [f"pipelines.{task}", *args]
    runpy.run_module(f"pipelines.{task}", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
