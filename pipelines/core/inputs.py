"""tf.data input functions, one per purpose: training, prediction (evaluation predicts too), and
the truth of a split (keys, input rows, labels; no decoding).

What a record becomes is the task's: `features(record)` -> a dict of model inputs (the decoded
image, token ids...) and `target(record)` -> its target; these functions only arrange them.
Fixed order (DESIGN.md): interleave shards -> parse -> features (decode+resize) -> (cache) ->
shuffle -> batch -> map (augment the batch's image) -> prefetch. Departure: instead of repeat(),
training concatenates the run's passes, each seeded by its epoch number (one iterator for the
whole run, and a resumed run sees the same batches as an uninterrupted one). Images stay
uint8 up to the model, which casts them at its input. Augmentation runs on whole batches (one
op) and never on val/test. Prediction datasets know their number of batches (from the
manifests' record counts).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from pipelines.core.splits import Split
from preprocess import schema

AUTOTUNE = tf.data.AUTOTUNE


def serialized_records(paths: list[str], shuffle_seed: int | None = None) -> tf.data.Dataset:
    """Serialized records from several shards read in parallel, in an order fixed by the shard
    order (`shuffle_seed` shuffles the shards): predictions line up with read_split, and training
    sees the same records in the same order for the same seed."""
    if not paths:
        raise ValueError("no shards to read: the split is empty")
    files = tf.data.Dataset.from_tensor_slices(paths)
    if shuffle_seed is not None:
        files = files.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=False)
    return files.interleave(tf.data.TFRecordDataset, cycle_length=min(len(paths), 8),
                            num_parallel_calls=AUTOTUNE, deterministic=True)


def records(paths: list[str], shuffle_seed: int | None = None) -> tf.data.Dataset:
    """Parsed records (schema.parse) of the shards, in the order of serialized_records."""
    return serialized_records(paths, shuffle_seed).map(schema.parse, num_parallel_calls=AUTOTUNE)


def decode_and_resize(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """Encoded bytes -> uint8 (size, size, 3). uint8 keeps caches, prefetch buffers and the copy to
    an accelerator 4x smaller than float32; the model casts at its input.

    Shrinking uses area averaging: as fast as bilinear and as sharp as an antialiased filter at every
    factor measured (PSNR against Pillow's Lanczos on real photos, 1.14x/2x/3x smaller: area
    37.6/38.9/39.2 dB, bilinear 37.9/38.9/30.1, TensorFlow's antialiased bilinear 36.8/35.8/37.7
    at 4x the time; README "Input throughput"). Growing is bilinear; an image already at the model
    size (shards written with --max_side=<image size>) is not resized at all."""
    image = schema.decode_image(image_bytes)
    height, width = tf.shape(image)[0], tf.shape(image)[1]

    def resized():
        method = tf.cond(tf.logical_and(height >= image_size, width >= image_size),
                         lambda: tf.image.resize(image, [image_size, image_size], method="area"),
                         lambda: tf.image.resize(image, [image_size, image_size], method="bilinear"))
        return tf.cast(tf.clip_by_value(tf.round(method), 0, 255), tf.uint8)

    same_size = tf.logical_and(tf.equal(height, image_size), tf.equal(width, image_size))
    image = tf.cond(same_size, lambda: image, resized)
    image.set_shape([image_size, image_size, 3])
    return image


@dataclasses.dataclass(frozen=True)
class Augmenter:
    """Train-only augmentation of a uint8 batch (B, H, W, 3) -> uint8, seeded per batch.

    Flip, zoom and shift are ONE `crop_and_resize` per batch: each image becomes a random window
    of itself, resized back to the full size and mirrored by swapping the window's left and right
    edges. The window's side is 1 - shift - zoom * u (u uniform in [0, 1]) of the image's and it
    lies anywhere inside the image: `shift` is how far the content can move, `zoom` how much more
    it can be magnified; nothing is ever filled in. The three Keras layers this replaces cost 6x
    more (255 against 41 ms for 32 images at 224 px) and filled zoomed-out borders with
    reflections. `randaugment` adds the strong noise pseudo-label students learn under (Keras
    RandAugment, on float pixels)."""

    flip: bool
    zoom: float
    shift: float
    rand_augment: keras.layers.Layer | None = None  # built once: a layer cannot be made in a tf.function

    def __call__(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """`seed`: shape [2] int, one per batch (stateless: the same seed gives the same batch)."""
        if self.zoom or self.shift or self.flip:
            images = self._crop_and_flip(images, seed)
        if self.rand_augment is not None:
            noised = self.rand_augment(tf.cast(images, tf.float32), training=True)
            images = tf.cast(tf.clip_by_value(tf.round(noised), 0, 255), tf.uint8)
        return images

    def _crop_and_flip(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        count = tf.shape(images)[0]
        draws = tf.random.stateless_uniform([count, 4], seed)
        side = tf.maximum(1.0 - self.shift - self.zoom * draws[:, 0], 0.1)  # a share of the image's
        top, left = (1.0 - side) * draws[:, 1], (1.0 - side) * draws[:, 2]
        right = left + side
        mirrored = draws[:, 3] < 0.5 if self.flip else tf.zeros([count], tf.bool)
        boxes = tf.stack([top, tf.where(mirrored, right, left), top + side,
                          tf.where(mirrored, left, right)], axis=1)
        size = tf.shape(images)[1:3]
        # Pixel centres map to pixel centres: the box corners are the first/last pixels' centres.
        scaled = tf.image.crop_and_resize(images, boxes, tf.range(count), size)
        return tf.cast(tf.clip_by_value(tf.round(scaled), 0, 255), tf.uint8)


def make_augmenter(flip: bool, zoom: float, shift: float, seed: int,
                   randaugment: bool = False) -> Augmenter | None:
    """The train-only augmentation, or None when every part is off."""
    if not (flip or zoom or shift or randaugment):
        return None
    rand_augment = keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.5,
                                            seed=seed + 3) if randaugment else None
    return Augmenter(flip, zoom, shift, rand_augment)


FeatureFn = Callable[[dict], dict]


def _features(features: FeatureFn) -> FeatureFn:
    """A task's features() applied to a parsed record (its raw fields are image bytes and text)."""
    return lambda record: features({"image_bytes": record["image_bytes"], "text": record["text"]})


def epoch_steps(records_count: int, batch_size: int, steps: int | None = None) -> int:
    """Training steps per epoch: whole batches of one pass, capped by `steps` (smoke runs)."""
    batches = records_count // batch_size
    if batches == 0:
        raise ValueError(f"{records_count} training records make no whole batch of {batch_size}: "
                         "lower --batch_size")
    return min(steps, batches) if steps else batches


def train_dataset(paths: list[str], features: FeatureFn, target: Callable[[dict], tf.Tensor],
                  batch_size: int, records_count: int, augmenter=None, seed: int = 0,
                  cache_max_bytes: int = 0, steps: int | None = None,
                  label_weights: np.ndarray | None = None, first_epoch: int = 0,
                  end_epoch: int | None = None) -> tf.data.Dataset:
    """(features, target) batches, shuffled, the images augmented; (features, target, weight)
    when `label_weights` (one per class) weighs each record by its main label.

    Epochs `first_epoch` .. `end_epoch` - 1 (one by default) in ONE dataset: fit it with
    `steps_per_epoch=epoch_steps(...)` and Keras keeps one iterator for the whole run, so no
    epoch boundary tears a pipeline down and starts it again (a dataset that ends each epoch
    costs that at every boundary, measured in benchmarks/train_step.py). Epoch e is one pass (at
    most `steps` batches) whose order and augmentation depend only on (`seed`, e): a run resumed
    at `first_epoch` sees exactly the batches an uninterrupted run would. The decoded examples are cached in memory during the
    first pass when they take at most `cache_max_bytes` (later passes decode nothing); otherwise,
    and in runs capped by `steps` (a partial pass caches nothing), every pass streams from the
    shards and memory stays flat whatever the split's size."""
    per_epoch = epoch_steps(records_count, batch_size, steps)
    to_features = _features(features)
    if label_weights is None:
        example = lambda record: (to_features(record), target(record))  # noqa: E731
    else:
        table = tf.constant(label_weights, tf.float32)
        example = lambda record: (to_features(record), target(record),  # noqa: E731
                                  tf.gather(table, tf.maximum(record["label"], 0)))
    cached = None
    if cache_max_bytes and not steps:
        cached = records(paths).map(example, num_parallel_calls=AUTOTUNE)
        needed = records_count * example_bytes(cached.element_spec)
        if needed <= cache_max_bytes:
            cached = cached.cache()
        else:
            cached = None
            print(f"input: the decoded training split takes {needed / 2**30:.1f} GiB, more than the cache "
                  f"may use ({cache_max_bytes / 2**30:.1f} GiB, --cache_max_gb): streamed from the shards")
    buffer = min(records_count, max(4 * batch_size, 1024))

    def one_pass(epoch: int) -> tf.data.Dataset:
        pass_seed = (seed * 1_000_003 + epoch) % 2**31  # a Python int: with a global seed set,
        # tf.data's shuffle cannot take a tensor seed
        source = cached if cached is not None else records(paths, shuffle_seed=pass_seed).map(
            example, num_parallel_calls=AUTOTUNE)
        # drop_remainder: every replica gets an equal slice under MirroredStrategy.
        # Not reshuffled per iteration: a pass must be the same however often it is iterated (Keras
        # reads one batch of a fresh iterator to build the model under a strategy, then starts again).
        batches = source.shuffle(buffer, seed=pass_seed, reshuffle_each_iteration=False).batch(
            batch_size, drop_remainder=True, num_parallel_calls=AUTOTUNE)
        if steps:  # smoke runs (which never cache: a pass cut short could leave a cache unfinished)
            batches = batches.take(per_epoch)
        if augmenter is None or "image" not in batches.element_spec[0]:
            return batches
        # Stateless augmentation seeded by (pass, batch): the same whichever thread runs it.
        return batches.enumerate().map(
            lambda index, example: ({**example[0], "image": augmenter(example[0]["image"],
                                                                      tf.stack([tf.constant(pass_seed, tf.int64), index]))},
                                    *example[1:]),
            num_parallel_calls=AUTOTUNE)

    end_epoch = first_epoch + 1 if end_epoch is None else end_epoch
    passes = [one_pass(epoch) for epoch in range(first_epoch, end_epoch)]
    dataset = functools.reduce(tf.data.Dataset.concatenate, passes[1:], passes[0])
    dataset = dataset.apply(tf.data.experimental.assert_cardinality((end_epoch - first_epoch) * per_epoch))
    return dataset.prefetch(AUTOTUNE)


def example_bytes(spec) -> int:
    """Bytes one example of `spec` takes in memory (fixed-size tensors; strings and ragged parts
    count 64 bytes)."""
    total = 0
    for tensor in tf.nest.flatten(spec):
        if tensor.shape.is_fully_defined() and tensor.dtype != tf.string:
            total += tensor.shape.num_elements() * tensor.dtype.size
        else:
            total += 64
    return total


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
    return dataset.prefetch(AUTOTUNE)


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
