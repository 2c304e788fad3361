"""Keras callbacks the training phases share: whole-split validation metrics and best checkpoints.

Validation F1 must be computed over the whole validation set: an average of per-batch F1 is a
different (and biased) number. `ValidationMetrics` therefore predicts the full split each epoch and
writes the result into the epoch's logs, where EarlyStopping, ReduceLROnPlateau and `BestCheckpoint`
(listed after it) read it.
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import tensorflow as tf

from pipelines import evaluation, inputs


class ValidationMetrics(keras.callbacks.Callback):
    """Adds val_loss, val_accuracy, `val_<name>` for each of `metrics` ({name: fn(y_true, y_pred)})
    and the learning rate to the epoch logs from one prediction pass over the validation split (fit
    gets no validation_data, so the split is read once per epoch, not twice); logs a confusion
    matrix image and, once, a few training inputs."""

    def __init__(self, dataset, y_true, class_names, metrics, log_dir, sample_images=None):
        super().__init__()
        self.dataset = dataset
        self.y_true = np.asarray(y_true)
        self.class_names = list(class_names)
        self.metrics = dict(metrics)
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
        probabilities = inputs.without_padding(self.model.predict(self.dataset, verbose=0),
                                               len(self.y_true))
        y_pred = np.argmax(probabilities, axis=-1)
        values = {name: fn(self.y_true, y_pred) for name, fn in self.metrics.items()}
        true_probability = probabilities[np.arange(len(self.y_true)), self.y_true]
        logs["val_loss"] = float(-np.mean(np.log(np.clip(true_probability, 1e-7, 1.0))))
        logs["val_accuracy"] = float(np.mean(y_pred == self.y_true))
        logs.update({f"val_{name}": value for name, value in values.items()})
        learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        logs.setdefault("learning_rate", learning_rate)
        matrix = evaluation.confusion_matrix(self.y_true, y_pred, len(self.class_names))
        with self.writer.as_default():
            for name, value in values.items():
                tf.summary.scalar(f"epoch_{name}", value, step=epoch)
            tf.summary.scalar("epoch_learning_rate", learning_rate, step=epoch)
            tf.summary.image("confusion_matrix", confusion_image(matrix)[None], step=epoch)
        self.writer.flush()
        print("".join(f" - val_{name}: {value:.4f}" for name, value in values.items()))


def confusion_image(matrix: np.ndarray, cell: int = 24) -> np.ndarray:
    """Row-normalised confusion matrix as a uint8 heat map (white = 0, dark blue = 1), no matplotlib."""
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape, np.float64), where=totals > 0)
    white, blue = np.array([255, 255, 255.0]), np.array([8, 48, 107.0])
    colours = white + shares[..., None] * (blue - white)
    image = np.kron(colours, np.ones((cell, cell, 1)))
    image[::cell, :] = image[:, ::cell] = 160  # grid lines between cells
    return image.astype(np.uint8)


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
            self.model.save_weights(self.weights_path)
            with open(self.state_path + ".incomplete", "w") as handle:
                json.dump({"value": float(value), "epoch": epoch + 1, "monitor": self.monitor}, handle)
            os.replace(self.state_path + ".incomplete", self.state_path)
