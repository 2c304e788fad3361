"""Exports the trained model twice: a .keras file (for Keras users) and a SavedModel whose serving
signature takes the task's RAW inputs (encoded image bytes, caption strings), so serving needs
no Python preprocessing and cannot preprocess differently from training: both run the task's
`features`. The decision rule fixed on validation (e.g. a threshold) is part of the signature."""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

from pipelines.core.config import Config


def export_model(model: keras.Model, task, config: Config, decision: dict) -> dict:
    export_dir = os.path.join(config.workdir, "export")
    os.makedirs(export_dir, exist_ok=True)
    keras_path = os.path.join(export_dir, "model.keras")
    model.save(keras_path)
    with open(os.path.join(export_dir, "decision.json"), "w") as handle:
        json.dump(decision, handle, indent=2)

    raw_spec = {name: tf.TensorSpec([], tf.string) for name in task.serving_inputs}
    one_record = tf.function(lambda raw: task.features(raw, config)).get_concrete_function(raw_spec)
    feature_spec = tf.nest.map_structure(lambda tensor: tf.TensorSpec(tensor.shape, tensor.dtype),
                                         one_record.structured_outputs)

    def serve(*raw_batch):
        raw = dict(zip(task.serving_inputs, raw_batch))
        features = tf.map_fn(lambda record: task.features(record, config), raw,
                             fn_output_signature=feature_spec)  # uint8 images: the model casts
        probabilities = tf.cast(model(features, training=False), tf.float32)
        return task.serving_outputs(probabilities, decision)

    saved_model_path = os.path.join(export_dir, "saved_model")
    archive = keras.export.ExportArchive()
    archive.track(model)
    for layer in task.feature_layers(config):  # e.g. a tokenizer's lookup table
        archive.track(layer)
    archive.add_endpoint(name="serving_default", fn=serve,
                         input_signature=[tf.TensorSpec([None], tf.string, name=name)
                                          for name in task.serving_inputs])
    archive.write_out(saved_model_path, verbose=False)
    return {"keras": keras_path, "saved_model": saved_model_path}
