"""Exports the trained model twice: a .keras file (for Keras users) and a SavedModel whose serving
signature takes encoded image bytes, so serving needs no Python preprocessing at all."""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from pipelines import inputs


def export_model(model: keras.Model, workdir: str, image_size: int) -> dict:
    export_dir = os.path.join(workdir, "export")
    os.makedirs(export_dir, exist_ok=True)
    keras_path = os.path.join(export_dir, "model.keras")
    model.save(keras_path)

    def serve(image_bytes):
        images = tf.map_fn(lambda data: inputs.decode_and_resize(data, image_size), image_bytes,
                           fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.uint8))
        probabilities = tf.cast(model(tf.cast(images, tf.float32), training=False), tf.float32)
        return {"probabilities": probabilities, "class_id": tf.argmax(probabilities, axis=-1)}

    saved_model_path = os.path.join(export_dir, "saved_model")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serving_default", fn=serve,
                         input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    archive.write_out(saved_model_path, verbose=False)
    return {"keras": keras_path, "saved_model": saved_model_path}
