"""The tf.Example schema: the one place that names the feature keys, writes records and parses them.

Every task uses the same record shape so that one writer and one set of input functions serve all of
them: an encoded image (always 8-bit RGB JPEG or PNG after preprocessing), a key (the file name or id
the submission needs), the row's position in its input (test order must survive sharding), the label
ids (empty when unlabeled; several for multi-label stickers, the first being the main one) and an
optional text (meme captions, product names).
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

SCHEMA_VERSION = 1

IMAGE = "image/encoded"
IMAGE_FORMAT = "image/format"
KEY = "key"
INDEX = "index"
LABELS = "labels"
SOFT_LABELS = "labels/soft"  # a teacher's class distribution (pseudo-labels); empty otherwise
TEXT = "text"

SPLITS = ("train", "val", "test", "unlabeled")


@dataclasses.dataclass(frozen=True)
class Record:
    """One decoded-and-validated input row, ready to be serialised."""

    image: bytes
    image_format: str
    key: str
    index: int
    labels: tuple[int, ...] = ()
    text: str = ""
    soft_labels: tuple[float, ...] = ()


def _bytes_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64_feature(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def serialize(record: Record) -> bytes:
    """Record -> serialized tf.train.Example (deterministic bytes for equal records)."""
    features = {
        IMAGE: _bytes_feature(record.image),
        IMAGE_FORMAT: _bytes_feature(record.image_format.encode()),
        KEY: _bytes_feature(record.key.encode()),
        INDEX: _int64_feature([record.index]),
        LABELS: _int64_feature(record.labels),
        TEXT: _bytes_feature(record.text.encode()),
    }
    if record.soft_labels:
        features[SOFT_LABELS] = tf.train.Feature(float_list=tf.train.FloatList(value=record.soft_labels))
    example = tf.train.Example(features=tf.train.Features(feature=features))
    return example.SerializeToString(deterministic=True)


_FEATURE_SPEC = {
    IMAGE: tf.io.FixedLenFeature([], tf.string),
    IMAGE_FORMAT: tf.io.FixedLenFeature([], tf.string, default_value=b""),
    KEY: tf.io.FixedLenFeature([], tf.string),
    INDEX: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    LABELS: tf.io.VarLenFeature(tf.int64),
    TEXT: tf.io.FixedLenFeature([], tf.string, default_value=b""),
    SOFT_LABELS: tf.io.VarLenFeature(tf.float32),
}


def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses one serialized example (graph-safe, for tf.data.Dataset.map).

    Returns the raw features: `labels` is a dense int64 vector (empty when unlabeled) and `label`
    the main label (the first one) or -1, so single-label tasks need no further work;
    `soft_labels` is a float vector, empty unless a teacher wrote soft pseudo-labels.
    """
    parsed = tf.io.parse_single_example(serialized, _FEATURE_SPEC)
    labels = tf.sparse.to_dense(parsed[LABELS])
    main_label = tf.cond(tf.size(labels) > 0, lambda: labels[0], lambda: tf.constant(-1, tf.int64))
    return {
        "image_bytes": parsed[IMAGE],
        "key": parsed[KEY],
        "index": parsed[INDEX],
        "labels": labels,
        "label": main_label,
        "text": parsed[TEXT],
        "soft_labels": tf.sparse.to_dense(parsed[SOFT_LABELS]),
    }


def parse_record(serialized: bytes) -> Record:
    """Eager inverse of `serialize`, for tests and inspection tools."""
    example = tf.train.Example.FromString(serialized)
    feature = example.features.feature
    return Record(
        image=feature[IMAGE].bytes_list.value[0],
        image_format=feature[IMAGE_FORMAT].bytes_list.value[0].decode(),
        key=feature[KEY].bytes_list.value[0].decode(),
        index=feature[INDEX].int64_list.value[0],
        labels=tuple(feature[LABELS].int64_list.value),
        text=feature[TEXT].bytes_list.value[0].decode(),
        soft_labels=tuple(feature[SOFT_LABELS].float_list.value) if SOFT_LABELS in feature else (),
    )


def decode_image(image_bytes: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF -> uint8 (H, W, 3), transparent pixels composited onto WHITE.

    Shards hold 8-bit RGB already (preprocessing composites alpha onto white with Pillow), but a
    served request or a raw GIF may not: a transparent sticker decoded as plain RGB shows the
    colour stored under its transparent pixels (often black). Compositing the same way here keeps
    training and serving alike. expand_animations=False takes a GIF's first frame.
    """
    image = tf.io.decode_image(image_bytes, channels=0, expand_animations=False)
    channels = tf.shape(image)[-1]
    has_alpha = tf.equal(channels % 2, 0)  # grey + alpha (2) or RGB + alpha (4)
    colour = image[..., :tf.where(has_alpha, channels - 1, channels)]
    colour = tf.cond(tf.equal(tf.shape(colour)[-1], 1), lambda: tf.tile(colour, [1, 1, 3]), lambda: colour)

    def on_white():
        alpha = tf.cast(image[..., -1:], tf.float32) / 255.0
        return tf.cast(tf.round(tf.cast(colour, tf.float32) * alpha + 255.0 * (1.0 - alpha)), tf.uint8)

    image = tf.cond(has_alpha, on_white, lambda: colour)
    image.set_shape([None, None, 3])
    return image
