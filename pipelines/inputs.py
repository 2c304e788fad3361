"""tf.data input functions, one per purpose: training, prediction (evaluation predicts too), and
labels only.

Fixed order (DESIGN.md): interleave shards -> parse -> decode+resize -> (cache) -> shuffle -> map
(augment) -> batch -> prefetch. Departure: no repeat(); each Keras epoch is one full pass over the
split (steps_per_epoch caps it in smoke runs via take()), which keeps BackupAndRestore's epoch
numbering exact. Augmentation runs on whole batches (vectorised) and never on val/test. Every
dataset knows its number of batches (from the manifests' record counts).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from preprocess import schema

AUTOTUNE = tf.data.AUTOTUNE


def serialized_records(paths: list[str], shuffle_seed: int | None = None) -> tf.data.Dataset:
    """Serialized records from several shards read in parallel. Unshuffled, the order is fixed and
    shared by every input function here (predictions line up with keys_and_labels and with
    anything else that streams the same shards through this function)."""
    if not paths:
        raise ValueError("no shards to read: the split is empty")
    files = tf.data.Dataset.from_tensor_slices(paths)
    if shuffle_seed is not None:
        files = files.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)
    return files.interleave(tf.data.TFRecordDataset, cycle_length=min(len(paths), 8),
                            num_parallel_calls=AUTOTUNE, deterministic=shuffle_seed is None)


def _records(paths: list[str], shuffle_seed: int | None = None) -> tf.data.Dataset:
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


def train_dataset(paths: list[str], image_size: int, batch_size: int, num_classes: int, records: int,
                  augmenter=None, seed: int = 0, cache: bool = False, steps: int | None = None) -> tf.data.Dataset:
    """(float32 images in [0, 255], target distributions) batches, shuffled and augmented.

    The target is the one-hot main label, or a teacher's soft labels where a pseudo-label shard
    has them, so labeled and pseudo-labeled shards mix in one dataset. `records` (the shards'
    record count, from their manifest) gives the dataset its true number of batches, so Keras
    shows real step counts instead of "Unknown"; a count that does not match the shards is an
    error at the end of the first epoch."""
    batches = records // batch_size
    if batches == 0:
        raise ValueError(f"{records} training records make no whole batch of {batch_size}: "
                         "lower --batch_size")
    dataset = _records(paths, shuffle_seed=seed)
    dataset = dataset.map(lambda features: (decode_and_resize(features["image_bytes"], image_size),
                                            _target(features, num_classes)),
                          num_parallel_calls=AUTOTUNE)
    if cache:
        dataset = dataset.cache()
    dataset = dataset.shuffle(max(4 * batch_size, 1024), seed=seed, reshuffle_each_iteration=True)
    # drop_remainder: every replica gets an equal slice under MirroredStrategy.
    dataset = dataset.batch(batch_size, drop_remainder=True, num_parallel_calls=AUTOTUNE)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
    if steps:
        dataset = dataset.take(steps)
    dataset = dataset.map(lambda images, labels: (tf.cast(images, tf.float32), labels),
                          num_parallel_calls=AUTOTUNE)
    if augmenter is not None:
        dataset = dataset.map(lambda images, labels: (augmenter(images, training=True), labels),
                              num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)


def _target(features: dict, num_classes: int) -> tf.Tensor:
    soft = features["soft_labels"]
    return tf.cond(tf.size(soft) == num_classes, lambda: tf.ensure_shape(soft, [num_classes]),
                   lambda: tf.one_hot(features["label"], num_classes))


def predict_dataset(paths: list[str], image_size: int, batch_size: int, records: int) -> tf.data.Dataset:
    """Images only, in shard order (the order `keys_and_labels` returns), in whole batches: the
    last one is padded with black images up to `batch_size`. Take the first `records` outputs.

    Why the padding: a distribution strategy splits each global batch among its replicas, and
    how tf.data rebatches depends on the graph: a short last batch of 8 at batch 16 over 2
    replicas was split [8, 0], leaving a replica with an EMPTY batch (measured), and
    TensorFlow's oneDNN Conv2D (on by default on CPUs with AVX512-VNNI or AMX) returns a wrongly
    shaped result for an empty input, which crashes the next layer. With whole batches no replica
    is ever empty, on any CPU or GPU."""
    padding = -records % batch_size
    images = _records(paths).map(lambda features: decode_and_resize(features["image_bytes"], image_size),
                                 num_parallel_calls=AUTOTUNE)
    if padding:
        images = images.concatenate(tf.data.Dataset.from_tensors(
            tf.zeros([image_size, image_size, 3], tf.uint8)).repeat(padding))
    dataset = images.batch(batch_size, drop_remainder=True, num_parallel_calls=AUTOTUNE)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality((records + padding) // batch_size))
    return dataset.map(lambda batch: tf.cast(batch, tf.float32)).prefetch(AUTOTUNE)


def without_padding(outputs, records: int) -> np.ndarray:
    """The model outputs of the `records` real records of a `predict_dataset`, as float32."""
    if len(outputs) < records:
        raise RuntimeError(f"{len(outputs)} predictions for {records} records")
    return np.asarray(outputs[:records], np.float32)


def keys_and_labels(paths: list[str]) -> tuple[list[str], np.ndarray]:
    """Keys and main labels of a split in shard order, without decoding a single image."""
    keys, labels = [], []
    for features in _records(paths).map(lambda features: (features["key"], features["label"])).batch(4096):
        keys.extend(key.decode() for key in features[0].numpy())
        labels.append(features[1].numpy())
    return keys, (np.concatenate(labels) if labels else np.zeros([0], np.int64))


def class_weights(histogram: dict[str, int], class_names) -> dict[int, float]:
    """Inverse-frequency weights, normalised so that the average example weighs 1."""
    counts = np.array([histogram.get(name, 0) for name in class_names], np.float64)
    total = counts.sum()
    return {index: float(total / (len(counts) * count)) if count else 0.0
            for index, count in enumerate(counts)}
