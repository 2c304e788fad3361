"""Keras callbacks the training phases share: whole-split validation metrics and best checkpoints.

Validation metrics must be computed over the whole validation set: an average of per-batch F1
(or AUROC, or mAP) is a different (and biased) number. `ValidationMetrics` therefore predicts the
full split each epoch and writes the result into the epoch's logs, where EarlyStopping,
ReduceLROnPlateau and `BestCheckpoint` (listed after it) read it.
"""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

from pipelines.core import inputs


class ValidationMetrics(keras.callbacks.Callback):
    """Adds `val_<name>` for each of the task's validation metrics and the learning rate to the
    epoch logs from one prediction pass over the validation split (fit gets no validation_data,
    so the split is read once per epoch, not twice). Keras' TensorBoard callback, later in the
    list, writes them as scalars; the task adds its pictures (confusion matrix, curves) here, and
    a few augmented training inputs are logged once."""

    def __init__(self, dataset, truth, task, class_names, log_dir, sample_images=None, predict=None):
        """`predict(model, dataset)` -> outputs; default `model.predict` (multi-worker runs pass
        one that runs on this host alone)."""
        super().__init__()
        self.predict = predict
        self.dataset = dataset
        self.truth = truth
        self.task = task
        self.class_names = list(class_names)
        self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "validation_details"))
        self.sample_images = sample_images

    def on_train_begin(self, logs=None):
        if self.sample_images is not None:
            with self.writer.as_default():
                images = tf.cast(tf.clip_by_value(self.sample_images, 0, 255), tf.uint8)
                tf.summary.image("training_inputs", images, step=0, max_outputs=8)
            self.writer.flush()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        outputs = self.predict(self.model, self.dataset) if self.predict else self.model.predict(self.dataset, verbose=0)
        probabilities = inputs.without_padding(outputs, len(self.truth))
        values = self.task.metrics(self.truth, probabilities, self.class_names)
        logs.update({f"val_{name}": value for name, value in values.items()})
        logs.setdefault("learning_rate", float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
        with self.writer.as_default():
            self.task.summaries(self.truth, probabilities, self.class_names, step=epoch)
        self.writer.flush()


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the weights whenever the monitored value beats the best so far, across phases and
    restarts: the best value lives in a JSON file beside the weights, not in the callback."""

    def __init__(self, directory: str, monitor: str):
        super().__init__()
        self.weights_path = os.path.join(directory, "best.weights.h5")
        self.state_path = os.path.join(directory, "best.json")
        self.monitor = monitor

    def best(self) -> dict | None:
        if not os.path.exists(self.state_path):
            return None
        with open(self.state_path) as handle:
            return json.load(handle)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        best = self.best()
        if best is None or value > best["value"]:
            save_weights_atomically(self.model, self.weights_path)
            with open(self.state_path + ".incomplete", "w") as handle:
                json.dump({"value": float(value), "epoch": epoch + 1, "monitor": self.monitor}, handle)
            os.replace(self.state_path + ".incomplete", self.state_path)


def save_weights_atomically(model: keras.Model, path: str) -> None:
    """Written beside, then renamed: a full disk or a kill mid-save never leaves a half file under
    the name that evaluation and resuming read."""
    partial = path.removesuffix(".weights.h5") + ".partial.weights.h5"
    try:
        model.save_weights(partial)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
    os.replace(partial, path)
