"""tf.data input functions, one per purpose: training, prediction (evaluation predicts too), and
the truth of a split (keys, input rows, labels; no decoding).

What a record becomes is the task's: `features(record)` -> a dict of model inputs (the decoded
image, token ids...) and `target(record)` -> its target; these functions only arrange them.
Fixed order (DESIGN.md): interleave shards -> parse -> features (decode+resize) -> (cache) ->
shuffle -> batch -> map (augment the batch's image) -> prefetch. Departure: no repeat(); each Keras epoch is one full pass over the
split (steps_per_epoch caps it in smoke runs via take()), which keeps BackupAndRestore's epoch
numbering exact. Augmentation runs on whole batches (vectorised) and never on val/test. Every
dataset knows its number of batches (from the manifests' record counts).
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from pipelines.core.splits import Split
from preprocess import schema

AUTOTUNE = tf.data.AUTOTUNE


def serialized_records(paths: list[str], shuffle_seed: int | None = None) -> tf.data.Dataset:
    """Serialized records from several shards read in parallel. Unshuffled, the order is fixed and
    shared by every input function here (predictions line up with read_split and with
    anything else that streams the same shards through this function)."""
    if not paths:
        raise ValueError("no shards to read: the split is empty")
    files = tf.data.Dataset.from_tensor_slices(paths)
    if shuffle_seed is not None:
        files = files.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)
    return files.interleave(tf.data.TFRecordDataset, cycle_length=min(len(paths), 8),
                            num_parallel_calls=AUTOTUNE, deterministic=shuffle_seed is None)


def records(paths: list[str], shuffle_seed: int | None = None) -> tf.data.Dataset:
    """Parsed records (schema.parse) of the shards, in the order of serialized_records."""
    return serialized_records(paths, shuffle_seed).map(schema.parse, num_parallel_calls=AUTOTUNE,
                                                       deterministic=shuffle_seed is None)


def decode_and_resize(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """Encoded bytes -> uint8 (size, size, 3). uint8 keeps a cache 4x smaller than float32.

    Antialiased when shrinking (thin UI strokes in screenshots alias badly otherwise; it halves
    decode+resize throughput on a CPU); images already at the model size skip the resize."""
    image = schema.decode_image(image_bytes)

    def resized():
        scaled = tf.image.resize(image, [image_size, image_size], antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(scaled), 0, 255), tf.uint8)

    same_size = tf.reduce_all(tf.shape(image)[:2] == image_size)
    image = tf.cond(same_size, lambda: image, resized)
    image.set_shape([image_size, image_size, 3])
    return image


def make_augmenter(flip: bool, zoom: float, shift: float, seed: int,
                   randaugment: bool = False) -> keras.Sequential | None:
    """The train-only augmentation (flip, zoom, shift) as Keras layers applied to float batches;
    `randaugment` adds the strong noise that pseudo-label students learn under."""
    layers = []
    if flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if zoom:
        layers.append(keras.layers.RandomZoom((-zoom, zoom), fill_mode="reflect", seed=seed + 1))
    if shift:
        layers.append(keras.layers.RandomTranslation(shift, shift, fill_mode="reflect", seed=seed + 2))
    if randaugment:
        layers.append(keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.5, seed=seed + 3))
    return keras.Sequential(layers, name="augment") if layers else None


FeatureFn = Callable[[dict], dict]


def _features(features: FeatureFn) -> FeatureFn:
    """A task's features() applied to a parsed record (its raw fields are image bytes and text)."""
    return lambda record: features({"image_bytes": record["image_bytes"], "text": record["text"]})


def float_image(batch: dict) -> dict:
    """Images travel as uint8 (a cache 4x smaller) and become float32 per batch, for the model."""
    if "image" not in batch:
        return batch
    return {**batch, "image": tf.cast(batch["image"], tf.float32)}


def train_dataset(paths: list[str], features: FeatureFn, target: Callable[[dict], tf.Tensor],
                  batch_size: int, records_count: int, augmenter=None, seed: int = 0,
                  cache: bool = False, steps: int | None = None,
                  label_weights: np.ndarray | None = None) -> tf.data.Dataset:
    """(features, target) batches, shuffled, the images augmented; (features, target, weight)
    when `label_weights` (one per class) weighs each record by its main label.

    `records_count` (the shards' record count, from their manifest) gives the dataset its true
    number of batches, so Keras shows real step counts instead of "Unknown"; a count that does
    not match the shards is an error at the end of the first epoch."""
    batches = records_count // batch_size
    if batches == 0:
        raise ValueError(f"{records_count} training records make no whole batch of {batch_size}: "
                         "lower --batch_size")
    to_features = _features(features)
    if label_weights is None:
        example = lambda record: (to_features(record), target(record))  # noqa: E731
    else:
        table = tf.constant(label_weights, tf.float32)
        example = lambda record: (to_features(record), target(record),  # noqa: E731
                                  tf.gather(table, tf.maximum(record["label"], 0)))
    dataset = records(paths, shuffle_seed=seed).map(example, num_parallel_calls=AUTOTUNE)
    if cache:
        dataset = dataset.cache()
    dataset = dataset.shuffle(max(4 * batch_size, 1024), seed=seed, reshuffle_each_iteration=True)
    # drop_remainder: every replica gets an equal slice under MirroredStrategy.
    dataset = dataset.batch(batch_size, drop_remainder=True, num_parallel_calls=AUTOTUNE)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
    if steps:
        dataset = dataset.take(steps)
    dataset = dataset.map(lambda batch, *rest: (float_image(batch), *rest), num_parallel_calls=AUTOTUNE)
    if augmenter is not None and "image" in dataset.element_spec[0]:
        dataset = dataset.map(
            lambda batch, *rest: ({**batch, "image": augmenter(batch["image"], training=True)}, *rest),
            num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)


def predict_dataset(paths: list[str], features: FeatureFn, batch_size: int, records_count: int) -> tf.data.Dataset:
    """Features only, in shard order (the order `read_split` returns), in whole batches: the last
    one is padded with all-zero records up to `batch_size`. Keep the first `records_count`
    outputs (`without_padding`).

    Why the padding: a distribution strategy splits each global batch among its replicas, and
    how tf.data rebatches depends on the graph: a short last batch of 8 at batch 16 over 2
    replicas was split [8, 0], leaving a replica with an EMPTY batch (measured), and
    TensorFlow's oneDNN Conv2D (on by default on CPUs with AVX512-VNNI or AMX) returns a wrongly
    shaped result for an empty input, which crashes the next layer. With whole batches no replica
    is ever empty, on any CPU or GPU."""
    padding = -records_count % batch_size
    dataset = records(paths).map(_features(features), num_parallel_calls=AUTOTUNE)
    if padding:
        zeros = dataset.take(1).map(lambda example: tf.nest.map_structure(tf.zeros_like, example))
        dataset = dataset.concatenate(zeros.repeat(padding))
    dataset = dataset.batch(batch_size, drop_remainder=True, num_parallel_calls=AUTOTUNE)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality((records_count + padding) // batch_size))
    return dataset.map(float_image, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def without_padding(outputs, records_count: int) -> np.ndarray:
    """The model outputs of the `records_count` real records of a `predict_dataset`, as float32."""
    if len(outputs) < records_count:
        raise RuntimeError(f"{len(outputs)} predictions for {records_count} records")
    return np.asarray(outputs[:records_count], np.float32)


def read_split(paths: list[str]) -> Split:
    """The truth of the shards' records (keys, input rows, labels) in shard order, without
    decoding a single image."""
    keys, indices, labels = [], [], []
    fields = records(paths).map(lambda record: (record["key"], record["index"], record["labels"]))
    for key, index, label_ids in fields.ragged_batch(4096):
        keys.extend(value.decode() for value in key.numpy())
        indices.append(index.numpy())
        labels.extend(tuple(int(value) for value in row) for row in label_ids.to_list())
    return Split(keys, np.concatenate(indices) if indices else np.zeros([0], np.int64), labels)


def class_weights(histogram: dict[str, int], class_names) -> np.ndarray:
    """Inverse-frequency weights, normalised so that the average example weighs 1."""
    counts = np.array([histogram.get(name, 0) for name in class_names], np.float64)
    return np.divide(counts.sum(), len(counts) * counts, out=np.zeros_like(counts), where=counts > 0)
