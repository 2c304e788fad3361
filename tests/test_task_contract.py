"""The Task contract exercised by a made-up second task, end to end through the same runner as spam:
two inputs (an image, and a caption as integer token ids with an integer padding mask), multi-label
targets, a sigmoid model with two encoders frozen in the head phase, metrics on probabilities,
outputs written in the input's row order, and a serving signature on image bytes + caption text."""

from __future__ import annotations

import csv
import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from sklearn.metrics import average_precision_score

from pipelines.core import inputs, runner
from pipelines.core.config import Config, Phase
from pipelines.core.task import Task
from preprocess import writer

TAGS = ("red", "dog", "night")
VOCAB, LENGTH = 64, 6


class TagsTask(Task):
    name = "tags"
    serving_inputs = ("image_bytes", "text")
    objective = "mean_ap"
    plateau = "mean_ap"

    def features(self, raw, config):
        words = tf.strings.split(tf.strings.lower(raw["text"]))[:LENGTH]
        ids = tf.strings.to_hash_bucket_fast(words, VOCAB - 1) + 1  # 0 is padding
        padding = LENGTH - tf.shape(ids)[0]
        return {"image": inputs.decode_and_resize(raw["image_bytes"], config.image_size),
                "token_ids": tf.ensure_shape(tf.pad(ids, [[0, padding]]), [LENGTH]),
                "padding_mask": tf.ensure_shape(tf.pad(tf.ones_like(ids, tf.int32), [[0, padding]]), [LENGTH])}

    def target(self, record, config, num_classes):
        return tf.reduce_max(tf.one_hot(record["labels"], num_classes), axis=0)

    def build_model(self, config, num_classes, weights):
        image = keras.Input((config.image_size, config.image_size, 3), name="image")
        token_ids = keras.Input((LENGTH,), dtype="int64", name="token_ids")
        mask = keras.Input((LENGTH,), dtype="int32", name="padding_mask")
        from models import backbones

        image_features = backbones.build_backbone("tiny", config.image_size)(image)
        text_encoder = keras.Sequential([keras.layers.Embedding(VOCAB, 8)], name="text_encoder")
        embedded = text_encoder(token_ids)
        weights_ = keras.ops.expand_dims(keras.ops.cast(mask, "float32"), -1)
        text_features = keras.ops.sum(embedded * weights_, axis=1) / keras.ops.maximum(
            keras.ops.sum(weights_, axis=1), 1.0)
        joined = keras.layers.Concatenate()([image_features, text_features])
        probabilities = keras.layers.Dense(num_classes, activation="sigmoid", dtype="float32")(joined)
        return keras.Model({"image": image, "token_ids": token_ids, "padding_mask": mask}, probabilities)

    def encoders(self, model):
        return [model.get_layer("backbone"), model.get_layer("text_encoder")]

    def loss(self, config):
        return keras.losses.BinaryCrossentropy()

    def metrics(self, truth, probabilities, class_names):
        targets = truth.multi_hot(len(class_names))
        clipped = np.clip(probabilities, 1e-7, 1 - 1e-7)
        loss = -np.mean(targets * np.log(clipped) + (1 - targets) * np.log(1 - clipped))
        return {"loss": float(loss),
                "mean_ap": float(average_precision_score(targets, probabilities, average="macro")),
                "first_tag_top1": float(np.mean(np.argmax(probabilities, -1) == truth.main_labels))}

    def write_outputs(self, config, manifest, model, predictions, decision):
        ordered = predictions.in_input_order()
        np.save(os.path.join(config.workdir, "tags.npy"), np.argmax(ordered.probabilities, -1))
        with open(os.path.join(config.workdir, "tags.csv"), "w", newline="") as handle:
            csv.writer(handle).writerows([("key", "row"), *zip(ordered.keys, ordered.indices.tolist())])
        return {"rows": len(ordered.keys)}


def _item(directory, key: str, row: int, rng) -> writer.Item:
    """An image + caption whose tags are learnable: red (the image's red), dog (the caption),
    night (a dark image)."""
    red, dog, night = rng.random(3) < 0.5
    base = rng.uniform(20, 60 if night else 255, 3)
    if red:
        base[0] = 230 if not night else 90
    pixels = np.clip(base + rng.normal(0, 8, (24, 24, 3)), 0, 255).astype(np.uint8)
    path = os.path.join(directory, key + ".png")
    Image.fromarray(pixels).save(path)
    words = list(rng.choice(["a", "photo", "of", "my", "the", "garden", "street"], 3))
    if dog:
        words.insert(int(rng.integers(0, 3)), "dog")
    labels = tuple(index for index, flag in enumerate((red, dog, night)) if flag) or (2,)
    return writer.Item(f"made-up:{row}", path, key, labels, " ".join(words), row)


@pytest.fixture(scope="module")
def made_up_shards(tmp_path_factory):
    rng = np.random.default_rng(0)
    images = tmp_path_factory.mktemp("tags_images")
    labeled = [_item(str(images), f"l{row:03d}", row, rng) for row in range(160)]
    test = [_item(str(images), f"t{row:03d}", row, rng) for row in range(21)]
    inventory = writer.Inventory("tags", TAGS, labeled, {"test": test}, [], len(labeled) + len(test), ())
    data_dir = tmp_path_factory.mktemp("tags_shards")
    writer.write_shards(inventory, str(data_dir), writer.ShardOptions(num_shards=8, workers=1), log=lambda _: None)
    return data_dir


def test_a_two_input_multi_label_task_runs_end_to_end_on_the_shared_core(made_up_shards, tmp_path):
    task = TagsTask()
    config = Config(task="tags", data_dir=str(made_up_shards), workdir=str(tmp_path), backbone="tiny",
                    image_size=24, batch_size=16, head=Phase(1, 1e-2), full=Phase(6, 1e-2),
                    zoom=0.0, shift=0.0, strategy="one_device", precision="float32").validate()
    results = runner.train_and_evaluate(config, task)
    validation = results["validation"]
    val_truth = inputs.read_split(writer.shard_paths(str(made_up_shards), "val"))
    prevalence = float(np.mean(val_truth.multi_hot(len(TAGS)).mean(axis=0)))
    assert validation["mean_ap"] > prevalence + 0.25, (validation, prevalence)  # it learned both inputs
    assert json.loads((tmp_path / "checkpoints" / "best.json").read_text())["monitor"] == "val_mean_ap"

    # outputs in the input's row order although two shards interleave the test records
    with open(tmp_path / "tags.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["key"] for row in rows] == [f"t{row:03d}" for row in range(21)]
    assert np.load(tmp_path / "tags.npy").shape == (21,)
    stream_order = inputs.read_split(writer.shard_paths(str(made_up_shards), "test")).keys
    assert stream_order != sorted(stream_order)  # so the reordering above was needed

    # serving takes the raw inputs: encoded image bytes and caption strings
    served = tf.saved_model.load(str(tmp_path / "export" / "saved_model")).signatures["serving_default"]
    images = sorted((made_up_shards.parent).glob("tags_images*/t00*.png"))[:3]
    outputs = served(image_bytes=tf.constant([path.read_bytes() for path in images]),
                     text=tf.constant(["my dog", "the street", ""]))
    assert outputs["probabilities"].shape == (3, len(TAGS))


def test_the_head_phase_freezes_every_encoder_the_task_names():
    from pipelines.core import training

    task = TagsTask()
    model = task.build_model(Config(image_size=24), len(TAGS), None)
    training.set_phase(model, task, "head")
    assert not model.get_layer("backbone").trainable and not model.get_layer("text_encoder").trainable
    assert model.trainable_weights  # the head
    training.set_phase(model, task, "full")
    assert model.get_layer("backbone").trainable and model.get_layer("text_encoder").trainable


def test_predictions_in_input_order():
    from pipelines.core.splits import Predictions

    predictions = Predictions(["c", "a", "b"], np.array([2, 0, 1]), np.arange(6.0).reshape(3, 2))
    ordered = predictions.in_input_order()
    assert ordered.keys == ["a", "b", "c"] and ordered.indices.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(ordered.probabilities, [[2, 3], [4, 5], [0, 1]])
    assert dataclasses.is_dataclass(ordered)
