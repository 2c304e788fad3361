"""The Task contract: everything that differs between pipelines, as one object per task.

In the spirit of tf-models' `base_task.Task`, without custom training loops: the runner
(`runner.train_and_evaluate(config, task)`), the training phases, pseudo-labeling and tuning are
the same for every task, and ask the task for

- its records' model inputs (`features`, per record, inside tf.data AND in the serving signature,
  so training and serving cannot preprocess differently) and targets (`target`);
- its model (`build_model`, the one call site for pipeline, tuning and pseudo-labeling), the
  encoders frozen in the head phase (`encoders`), its `loss`;
- its validation metrics, on probabilities (`metrics`): `objective` names the one that picks
  checkpoints, `plateau` the one the learning-rate and early-stopping rules watch;
- a decision rule fixed on validation (`decide`, e.g. a threshold), saved with the model;
- what serving returns (`serving_outputs`) and what it writes for the test split
  (`write_outputs`, given the model, the predictions with keys and row indices, the decision).

`ImageClassificationTask` implements it for single-label image classification; a task module
subclasses it (pipelines/spam/) or `Task` itself.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from models import backbones, classifier
from pipelines.core import evaluation, inputs, summaries
from pipelines.core.config import Config, ConfigError
from pipelines.core.splits import Predictions, Split


class Task:
    """The contract. Class attributes are data; methods have defaults where one is natural."""

    name: str = ""
    Options: type | None = None  # a dataclass of the task's own flags (preprocess.config_flags.field)
    serving_inputs: tuple[str, ...] = ("image_bytes",)  # raw inputs: image_bytes, text
    objective: str = "accuracy"  # the validation metric that picks checkpoints (higher is better)
    plateau: str | None = None  # what ReduceLROnPlateau / EarlyStopping watch (None: objective)
    pseudo_labels: bool = False  # whether the pseudo-label rounds apply (single-label softmax)
    compared: tuple[str, ...] = ()  # report figures printed side by side for the ablations

    def class_names(self, manifest: dict) -> tuple[str, ...]:
        """The classes' names as reports and TensorBoard show them (manifest order)."""
        return tuple(manifest["class_names"])

    @property
    def plateau_metric(self) -> str:
        return self.plateau or self.objective

    def validate(self, config: Config) -> None:
        """Checks settings that only this task constrains (ConfigError naming the flag)."""
        if config.pseudo_label_rounds and not self.pseudo_labels:
            raise ConfigError(f"--pseudo_label_rounds: the {self.name} task does not support pseudo-labels")

    # --- records -> model inputs and targets ------------------------------------------------------
    def features(self, raw: dict[str, tf.Tensor], config: Config) -> dict[str, tf.Tensor]:
        """One record's model inputs from its raw fields (`image_bytes`, `text`; scalars).
        Runs inside tf.data and inside the serving signature. Keys = the model's input names."""
        raise NotImplementedError

    def feature_layers(self, config: Config) -> list:
        """Keras layers `features` uses that hold state (a tokenizer's vocabulary table): the
        exported SavedModel tracks them so that its serving signature carries them."""
        return []

    def target(self, record: dict[str, tf.Tensor], config: Config, num_classes: int) -> tf.Tensor:
        """One record's training target from its parsed fields (schema.parse)."""
        raise NotImplementedError

    def class_weights(self, config: Config, manifest: dict) -> np.ndarray | None:
        """A weight per class, or None: each training record weighs its main label's weight (a
        sample weight from the dataset, so it works for one-hot and multi-hot targets alike).
        Default: inverse frequency of the main labels under --class_balance=class_weights."""
        if config.class_balance != "class_weights":
            return None
        return inputs.class_weights(manifest["splits"]["train"]["class_histogram"], manifest["class_names"])

    # --- model ------------------------------------------------------------------------------------
    def resolve_weights(self, config: Config):
        """Checks that the pretrained weights asked for can be had, before any expensive work;
        returns what build_model takes (backbones.WeightsUnavailableError says how to get them)."""
        return backbones.resolve_weights(config.backbone, config.weights)

    def prepare(self, config: Config, manifest: dict, weights):
        """Work on the shards before the first model is built (e.g. word embeddings learned
        without labels); returns what build_model takes. Keep results under config.data_dir,
        which every run on the same data shares (tuning trials, later modes)."""
        return weights

    def build_model(self, config: Config, num_classes: int, weights) -> keras.Model:
        raise NotImplementedError

    def encoders(self, model: keras.Model) -> list[keras.Layer]:
        """Pretrained parts frozen in the head phase and fine-tuned in the full phase."""
        return [model.get_layer("backbone")]

    def loss(self, config: Config) -> keras.losses.Loss:
        raise NotImplementedError

    def train_metrics(self) -> list[keras.metrics.Metric]:
        """Cheap per-batch metrics for the progress bar (validation metrics are `metrics`)."""
        return []

    # --- validation -------------------------------------------------------------------------------
    def metrics(self, truth: Split, probabilities: np.ndarray, class_names) -> dict[str, float]:
        """Validation metrics over a whole split; must include `objective` and `plateau`."""
        raise NotImplementedError

    def report(self, truth: Split, probabilities: np.ndarray, class_names, decision: dict) -> dict:
        """What metrics.json holds for a split."""
        return self.metrics(truth, probabilities, class_names)

    def format_report(self, report: dict, class_names) -> str:
        return "\n".join(f"{name:<24} {value:.4f}" for name, value in report.items()
                         if isinstance(value, float))

    def summaries(self, truth: Split, probabilities: np.ndarray, class_names, step: int) -> None:
        """Extra TensorBoard summaries per validation pass (images, curves), written under the
        active default writer. Scalars come from `metrics` through the epoch logs."""

    def ablations(self, config: Config) -> dict[str, Config]:
        """Other configurations trained the same way after the main run (e.g. one modality
        only), so what the main recipe adds is measured; name -> config."""
        return {}

    def decide(self, truth: Split, probabilities: np.ndarray, config: Config) -> dict:
        """A decision rule fixed on the validation split (never on test), e.g. a threshold; it is
        saved with the model and given to serving and to `write_outputs`. {} when none."""
        return {}

    # --- outputs ----------------------------------------------------------------------------------
    def serving_outputs(self, probabilities: tf.Tensor, decision: dict) -> dict[str, tf.Tensor]:
        return {"probabilities": probabilities}

    def write_outputs(self, config: Config, manifest: dict, model: keras.Model,
                      predictions: Predictions, decision: dict) -> dict:
        """Writes the task's submission for the test split; returns what metrics.json records."""
        raise NotImplementedError


class ImageClassificationTask(Task):
    """Single-label image classification: softmax over the classes, one-hot targets (or a
    teacher's soft labels in pseudo-label shards), categorical cross-entropy, accuracy."""

    pseudo_labels = True

    def features(self, raw, config):
        return {"image": inputs.decode_and_resize(raw["image_bytes"], config.image_size)}

    def target(self, record, config, num_classes):
        soft = record["soft_labels"]
        return tf.cond(tf.size(soft) == num_classes, lambda: tf.ensure_shape(soft, [num_classes]),
                       lambda: tf.one_hot(record["label"], num_classes))

    def build_model(self, config, num_classes, weights):
        return classifier.build_image_classifier(config.backbone, num_classes, config.image_size,
                                                 dropout=config.dropout, weights=weights)

    def loss(self, config):
        return keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)

    def train_metrics(self):
        return [keras.metrics.CategoricalAccuracy(name="accuracy")]

    def scores(self, y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, float]:
        """Task-specific scores of hard predictions, added to loss and accuracy."""
        return {}

    def metrics(self, truth, probabilities, class_names):
        y_true = truth.main_labels
        y_pred = np.argmax(probabilities, axis=-1)
        true_probability = probabilities[np.arange(len(y_true)), y_true]
        return {"loss": float(-np.mean(np.log(np.clip(true_probability, 1e-7, 1.0)))),
                "accuracy": float(np.mean(y_pred == y_true)),
                **self.scores(y_true, y_pred, len(class_names))}

    def report(self, truth, probabilities, class_names, decision):
        y_pred = np.argmax(probabilities, axis=-1)
        report = evaluation.classification_report(truth.main_labels, y_pred, class_names)
        report.update(self.scores(truth.main_labels, y_pred, len(class_names)))
        return report

    def format_report(self, report, class_names):
        return evaluation.format_report(report, class_names)

    def summaries(self, truth, probabilities, class_names, step):
        matrix = evaluation.confusion_matrix(truth.main_labels, np.argmax(probabilities, axis=-1),
                                             len(class_names))
        tf.summary.image("confusion_matrix", summaries.confusion_image(matrix, class_names)[None], step=step)

    def serving_outputs(self, probabilities, decision):
        return {"probabilities": probabilities, "class_id": tf.argmax(probabilities, axis=-1)}

