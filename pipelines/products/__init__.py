"""The product-categorization task: products (image + description) onto TARGET categories that no
training label names (TASKS.md section 3), the original method done properly.

1. Word embeddings learned WITHOUT labels (CBOW with negative sampling, `cbow.py`) on the
   descriptions of the target products and of the training products, before any model is built
   (`prepare`; kept under the data directory, shared by every run on the same shards).
2. One model, two towers trained together on the training classes with the shared two-phase
   schedule: the image backbone -> softmax, and the CBOW-initialised embeddings (averaged over a
   description's words) -> softmax. Its output is both distributions side by side.
3. Onto the target categories (`mapping.py`): each tower's distribution cut to its top k and
   renormalised, averaged with --image_weight; each target category NAME projected into the same
   class space (sharpened or softened by --temperature): by a pretrained sentence encoder's
   similarity between the name and each training class name (--projection=sentence_encoder), or
   through the text tower as the original did; the product goes to the category with the smallest
   KL(ensemble || projection), optionally mixed with the zero-shot baseline (--zero_shot_weight). A product without a usable image
   or without words is decided by the other tower alone. With target labels (target/labels.csv,
   optional), --image_weight, --temperature and --zero_shot_weight are chosen on a seeded share of them
   (--target_tuning_fraction) and accuracy is reported on the rest, beside a zero-shot baseline
   (sentence-encoder cosine between description and category name).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import os

import keras
import numpy as np
import tensorflow as tf

from models import backbones
from pipelines.core import evaluation, inputs, outputs
from pipelines.core.config import ConfigError
from pipelines.core.task import Task
from pipelines.products import cbow, mapping
from preprocess import writer
from preprocess.config_flags import field

OOV_AND_PAD = 2  # TextVectorization's ids 0 (padding) and 1 ([UNK])
PROJECTIONS = ("sentence_encoder", "text_tower")


@dataclasses.dataclass(frozen=True)
class ProductsOptions:
    vocabulary_size: int = field(5000, "Words kept for the text tower (the most frequent).")
    text_length: int = field(24, "Words of a description the text tower reads.")
    cbow_dim: int = field(64, "Word-embedding width.")
    cbow_window: int = field(2, "CBOW context: words on each side of the centre word.")
    cbow_epochs: int = field(30, "CBOW passes over the descriptions.")
    cbow_negatives: int = field(5, "Negative samples per centre word.")
    top_k: int = field(3, "Each tower's distribution is cut to its top k classes, renormalised.")
    image_weight: float = field(0.5, "The image tower's share of the ensemble (the text's: 1 - it).")
    temperature: float = field(1.0, "Category-name projections p become p**(1/T), renormalised "
                               "(T > 1 softens near one-hot projections).")
    target_tuning_fraction: float = field(0.2, "With target labels: the share of labeled target "
                                          "products that chooses --image_weight and --temperature.")
    zero_shot_encoder: str = field("minilm", "Sentence encoder (models/text_encoders.py spec) of the "
                                   "zero-shot baseline and of the name projections, or none.")
    projection: str = field("sentence_encoder", "How a category NAME becomes a distribution over the "
                            "training classes: through the text tower (the original; names whose words "
                            "no description uses project to nothing), or by the sentence encoder's "
                            "similarity of the name to each training class name.", choices=PROJECTIONS)
    zero_shot_weight: float = field(0.0, "Mix of the zero-shot baseline in the decision (0: the KL "
                                    "rule alone; tuned with the others on target labels).")


@functools.lru_cache(maxsize=4)
def _vectorizer(vocabulary_path: str, length: int) -> keras.layers.TextVectorization:
    with open(vocabulary_path, encoding="utf-8") as handle:
        vocabulary = [line.rstrip("\n") for line in handle][OOV_AND_PAD:]
    return keras.layers.TextVectorization(vocabulary=vocabulary, output_sequence_length=length,
                                          standardize="lower_and_strip_punctuation")


class ProductsTask(Task):
    name = "products"
    Options = ProductsOptions
    serving_inputs = ("image_bytes", "text")
    objective = "ensemble_accuracy"
    plateau = "ensemble_accuracy"

    def validate(self, config):
        super().validate(config)
        options = config.options
        if not 0.0 <= options.image_weight <= 1.0 or options.temperature <= 0 or options.top_k < 1:
            raise ConfigError("--image_weight must be in [0, 1], --temperature > 0 and --top_k >= 1")
        if not 0.0 <= options.zero_shot_weight <= 1.0:
            raise ConfigError("--zero_shot_weight must be in [0, 1]")
        if not 0.0 <= options.target_tuning_fraction < 1.0:
            raise ConfigError("--target_tuning_fraction must be in [0, 1)")

    # --- text: embeddings learned without labels, before the model --------------------------------
    def prepare(self, config, manifest, weights):
        texts = [text for split in ("train", "test")
                 for text in _texts(writer.shard_paths(config.data_dir, split, manifest))]
        folder = cbow.train_or_load(texts, config.data_dir, config.options, config.seed)
        return {"image": weights, "text": folder}

    def features(self, raw, config):
        with tf.init_scope():  # the vectorizer is built once, eagerly, not inside a traced graph
            vectorizer = _vectorizer(cbow.vocabulary_path(config), config.options.text_length)
        return {"image": inputs.decode_and_resize(raw["image_bytes"], config.image_size),
                # a batch of one: a single string with no words would come back with no padding
                "words": tf.cast(vectorizer(tf.reshape(raw["text"], [1]))[0], tf.int32)}

    def feature_layers(self, config):
        return [_vectorizer(cbow.vocabulary_path(config), config.options.text_length)]

    def target(self, record, config, num_classes):
        one_hot = tf.one_hot(record["label"], num_classes)
        return tf.concat([one_hot, one_hot], axis=0)  # the image tower's target, then the text's

    def resolve_weights(self, config):
        return backbones.resolve_weights(config.backbone, config.weights)

    def build_model(self, config, num_classes, weights):
        weights = weights or {}
        image = keras.Input((config.image_size, config.image_size, 3), name="image")
        words = keras.Input((config.options.text_length,), dtype="int32", name="words")
        image_features = backbones.build_backbone(config.backbone, config.image_size, weights.get("image"))(image)
        image_probs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="image_probs")(
            keras.layers.Dropout(config.dropout)(image_features))
        embeddings = cbow.load_embeddings(weights["text"]) if weights.get("text") else None
        embedding = keras.layers.Embedding(
            config.options.vocabulary_size + OOV_AND_PAD, config.options.cbow_dim, name="word_embedding",
            embeddings_initializer=keras.initializers.Constant(embeddings) if embeddings is not None else "uniform")
        mask = keras.ops.expand_dims(keras.ops.cast(keras.ops.greater(words, 1), "float32"), -1)  # real words
        vectors = embedding(words)
        text_features = keras.ops.sum(vectors * mask, axis=1) / keras.ops.maximum(keras.ops.sum(mask, axis=1), 1.0)
        text_probs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="text_probs")(
            keras.layers.Dropout(config.dropout)(text_features))
        both = keras.layers.Concatenate(name="towers", dtype="float32")([image_probs, text_probs])
        return keras.Model({"image": image, "words": words}, both, name="products_two_towers")

    def encoders(self, model):
        return [model.get_layer("backbone"), model.get_layer("word_embedding")]

    def loss(self, config):
        return TwoTowerCrossentropy(label_smoothing=config.label_smoothing)

    def metrics(self, truth, probabilities, class_names):
        image, text = _towers(probabilities)
        labels = truth.main_labels
        rows = np.arange(len(labels))
        loss = -np.mean(np.log(np.clip(image[rows, labels], 1e-7, 1)) + np.log(np.clip(text[rows, labels], 1e-7, 1)))
        return {"loss": float(loss), "image_accuracy": float(np.mean(image.argmax(1) == labels)),
                "text_accuracy": float(np.mean(text.argmax(1) == labels)),
                "ensemble_accuracy": float(np.mean((image + text).argmax(1) == labels))}

    def report(self, truth, probabilities, class_names, decision):
        image, text = _towers(probabilities)
        report = {"examples": len(truth), **self.metrics(truth, probabilities, class_names)}
        report["ensemble"] = evaluation.classification_report(truth.main_labels, (image + text).argmax(1), class_names)
        return report

    def format_report(self, report, class_names):
        return (f"training classes, validation: image tower {report['image_accuracy']:.4f}, text tower "
                f"{report['text_accuracy']:.4f}, both {report['ensemble_accuracy']:.4f} accuracy over "
                f"{report['examples']} products")

    def summaries(self, truth, probabilities, class_names, step):
        from pipelines.core import summaries

        image, text = _towers(probabilities)
        matrix = evaluation.confusion_matrix(truth.main_labels, (image + text).argmax(1), len(class_names))
        tf.summary.image("confusion_matrix", summaries.confusion_image(matrix, class_names)[None], step=step)

    def serving_outputs(self, probabilities, decision):
        image, text = tf.split(probabilities, 2, axis=-1)
        return {"image_probabilities": image, "text_probabilities": text}

    def write_outputs(self, config, manifest, model, predictions, decision):
        """predictions.csv: every target product (target/products.csv order), its category, the
        KL and each tower's top classes; accuracy against target/labels.csv when it exists."""
        options = config.options
        class_names = list(manifest["class_names"])
        categories = list(manifest.get("extra", {}).get("target_categories", []))
        if not categories:
            raise ConfigError(f"{config.data_dir}: no target categories (target/categories.txt) to map onto")
        rows = _target_rows(config.raw_dir) if config.raw_dir else \
            [(key, "") for key in predictions.in_input_order().keys]
        by_key = {key: row for row, key in enumerate(predictions.keys)}
        # predictions stream in the test shards' order, which is the order their texts read back in
        test_paths = writer.shard_paths(config.data_dir, "test", manifest) if predictions.keys else []
        text_of = dict(zip(predictions.keys, _texts(test_paths)))
        texts = [text_of.get(key, text) for key, text in rows]
        text_tower = keras.Model(model.input["words"], model.get_layer("text_probs").output)
        vectorize = _vectorizer(cbow.vocabulary_path(config), options.text_length)
        words = vectorize(tf.constant(texts or [""])).numpy()[:len(texts)]
        has_words = (words > 1).any(axis=1).tolist()
        text_probs = text_tower.predict(words, verbose=0) if texts else []
        image_probs = [_towers(predictions.probabilities[by_key[key]][None])[0][0] if key in by_key else None
                       for key, _ in rows]
        embed = _sentence_embedder(options.zero_shot_encoder)
        if options.projection == "sentence_encoder" and embed is not None:
            # the name's similarity to each training class name, as a distribution (softmax, x20)
            projections = np.exp(mapping.zero_shot_log_probabilities(embed(categories) @ embed(class_names).T))
        else:
            projections = text_tower.predict(vectorize(tf.constant(categories)), verbose=0)
        zero_shot = mapping.zero_shot_log_probabilities(embed(texts) @ embed(categories).T) \
            if embed is not None and texts else None
        members = [mapping.Member(image, text if words else None)
                   for image, text, words in zip(image_probs, text_probs, has_words)]
        truth = _target_labels(config.raw_dir, categories)
        rule, tuned_on = mapping.Rule(options.image_weight, options.temperature, options.zero_shot_weight), set()
        if truth and options.target_tuning_fraction > 0:
            rule, tuned_on = mapping.tune(members, projections, options.top_k, truth, [key for key, _ in rows],
                                          options.target_tuning_fraction, config.seed, zero_shot)
        chosen, divergences = mapping.assign(members, projections, options.top_k, rule, zero_shot)
        table = []
        for (key, _), member, choice, divergence in zip(rows, members, chosen, divergences):
            table.append((key, categories[choice], f"{divergence:.4f}", member.modalities,
                          _top(member.image, class_names), _top(member.text, class_names)))
        path = os.path.join(config.workdir, "predictions.csv")
        outputs.write_csv(path, ("id", "target_category", "kl", "modalities", "image_top_classes",
                                 "text_top_classes"), table)
        alone = sum(member.modalities != "image+text" for member in members)
        print(f"products: wrote {len(table)} target products to {path} ({alone} decided by one modality: "
              f"no usable image or no words); --image_weight {rule.image_weight:g} --temperature "
              f"{rule.temperature:g} --zero_shot_weight {rule.zero_shot_weight:g}"
              f"{' (chosen on target labels)' if tuned_on else ''}")
        result = {"predictions": path, "rows": len(table), "one_modality": alone, **dataclasses.asdict(rule),
                  "projection": options.projection if embed is not None else "text_tower"}
        if truth:
            result["target_accuracy"] = mapping.compare(members, projections, options.top_k, rule, truth,
                                                        [key for key, _ in rows], tuned_on, zero_shot)
            print(mapping.format_comparison(result["target_accuracy"]))
        return result


@keras.saving.register_keras_serializable(package="pipelines.products")
class TwoTowerCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy of each tower against the same class, summed: the output holds
    the image tower's distribution then the text tower's."""

    def __init__(self, label_smoothing: float = 0.0, name: str = "two_tower_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        true_image, true_text = keras.ops.split(y_true, 2, axis=-1)
        image, text = keras.ops.split(y_pred, 2, axis=-1)
        crossentropy = functools.partial(keras.losses.categorical_crossentropy, label_smoothing=self.label_smoothing)
        return crossentropy(true_image, image) + crossentropy(true_text, text)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def _towers(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    half = probabilities.shape[1] // 2
    return probabilities[:, :half], probabilities[:, half:]


def _top(distribution, class_names, count: int = 3) -> str:
    if distribution is None:
        return ""
    order = np.argsort(-distribution)[:count]
    return " ".join(f"{class_names[index]}:{distribution[index]:.2f}" for index in order)


def _texts(paths: list[str]) -> list[str]:
    if not paths:
        return []
    return [text.decode("utf-8", "replace") for text in
            inputs.records(paths).map(lambda record: record["text"]).as_numpy_iterator()]


def _target_rows(raw_dir: str) -> list[tuple[str, str]]:
    """(id, description) of every row of target/products.csv, in row order."""
    path = os.path.join(raw_dir, "target", "products.csv")
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
        return [((row.get("id") or "").strip(), (row.get("text") or "").strip()) for row in csv.DictReader(handle)
                if any((value or "").strip() for value in row.values())]


def _target_labels(raw_dir: str, categories: list[str]) -> dict[str, int]:
    """id -> target category index from the optional target/labels.csv (id,category)."""
    path = os.path.join(raw_dir, "target", "labels.csv") if raw_dir else ""
    if not path or not os.path.exists(path):
        return {}
    index = {name: position for position, name in enumerate(categories)}
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return {row["id"].strip(): index[row["category"].strip()] for row in csv.DictReader(handle)
                if row.get("category", "").strip() in index}


def _sentence_embedder(spec: str):
    """strings -> unit vectors with a pretrained sentence encoder (mean of its token vectors), or
    None when `spec` is none or cannot be had (said once)."""
    if spec in ("", "none"):
        return None
    from models import text_encoders
    from models.backbones import WeightsUnavailableError

    try:
        encoder, preprocessor = text_encoders.build(text_encoders.resolve(spec), 64)
    except WeightsUnavailableError as error:
        print(f"products: no sentence encoder, so no zero-shot baseline and text-tower projections: {error}")
        return None

    def embed(strings):
        tokens = {name: tf.cast(value, tf.int32) for name, value in preprocessor(tf.constant(list(strings))).items()}
        vectors = keras.ops.convert_to_numpy(text_encoders.masked_mean(encoder(tokens), tokens["padding_mask"]))
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)

    return embed


TASK = ProductsTask()
