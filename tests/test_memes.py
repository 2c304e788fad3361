"""The memes task: the threshold sweep on validation, a tiny Hugging Face-format text encoder folder
made here and read by keras-hub, fusion models that see both inputs, and the exported serving
signature on image bytes + caption strings (the end-to-end smoke run is tests/test_pipelines.py's)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tensorflow as tf

from models import text_encoders
from pipelines.core.config import Config
from pipelines.core.splits import Split
from pipelines.memes import TASK, MemesOptions

HIDDEN, INTERMEDIATE, LAYERS, POSITIONS = 8, 16, 1, 32


def _truth(labels):
    return Split([str(row) for row in range(len(labels))], np.arange(len(labels)), [(label,) for label in labels])


def test_threshold_is_swept_on_validation_for_accuracy():
    labels = [0, 0, 0, 1, 1, 1]
    scores = np.array([[0.10], [0.42], [0.44], [0.46], [0.60], [0.90]])
    decision = TASK.decide(_truth(labels), scores, Config())
    assert 0.44 < decision["threshold"] <= 0.46 and decision["val_accuracy"] == 1.0
    report = TASK.report(_truth(labels), scores, ("not_hateful", "hateful"), decision)
    assert report["accuracy_at_threshold"] == 1.0 and report["accuracy"] == pytest.approx(5 / 6)  # 0.46 < 0.5
    assert report["auroc"] == 1.0 and report["f1_at_threshold"] == 1.0


def _tiny_hugging_face_folder(folder) -> None:
    """config.json, tokenizer_config.json, vocab.txt and model.safetensors of a 1-layer BERT with
    random weights under Hugging Face's names."""
    from safetensors.numpy import save_file

    vocabulary = text_encoders.TINY_VOCABULARY
    (folder / "vocab.txt").write_text("\n".join(vocabulary) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}))
    (folder / "config.json").write_text(json.dumps({
        "model_type": "bert", "architectures": ["BertModel"], "vocab_size": len(vocabulary),
        "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": 2,
        "intermediate_size": INTERMEDIATE, "max_position_embeddings": POSITIONS, "type_vocab_size": 2,
        "hidden_act": "gelu", "layer_norm_eps": 1e-12, "pad_token_id": 0}))
    rng = np.random.default_rng(0)
    shapes = {"embeddings.word_embeddings.weight": (len(vocabulary), HIDDEN),
              "embeddings.position_embeddings.weight": (POSITIONS, HIDDEN),
              "embeddings.token_type_embeddings.weight": (2, HIDDEN),
              "embeddings.LayerNorm.weight": (HIDDEN,), "embeddings.LayerNorm.bias": (HIDDEN,),
              "pooler.dense.weight": (HIDDEN, HIDDEN), "pooler.dense.bias": (HIDDEN,)}
    for layer in range(LAYERS):
        prefix = f"encoder.layer.{layer}."
        for part in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            shapes[prefix + part + ".weight"], shapes[prefix + part + ".bias"] = (HIDDEN, HIDDEN), (HIDDEN,)
        shapes[prefix + "intermediate.dense.weight"] = (INTERMEDIATE, HIDDEN)
        shapes[prefix + "intermediate.dense.bias"] = (INTERMEDIATE,)
        shapes[prefix + "output.dense.weight"], shapes[prefix + "output.dense.bias"] = (HIDDEN, INTERMEDIATE), (HIDDEN,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[prefix + norm + ".weight"], shapes[prefix + norm + ".bias"] = (HIDDEN,), (HIDDEN,)
    save_file({name: rng.normal(0, 0.05, shape).astype(np.float32) for name, shape in shapes.items()},
              str(folder / "model.safetensors"))


def test_a_hugging_face_checkpoint_folder_is_read_by_keras_hub(tmp_path):
    _tiny_hugging_face_folder(tmp_path)
    assert text_encoders.resolve(str(tmp_path)) == str(tmp_path)
    encoder, preprocessor = text_encoders.build(str(tmp_path), sequence_length=12)
    tokens = preprocessor(tf.constant(["a cat, a dog!", ""]))
    assert tokens["token_ids"].shape == (2, 12)
    vectors = encoder({name: tf.cast(value, tf.int32) for name, value in tokens.items()})
    assert vectors.shape == (2, 12, HIDDEN)
    from safetensors.numpy import load_file

    stored = load_file(str(tmp_path / "model.safetensors"))["embeddings.word_embeddings.weight"]
    embedding = next(weight for weight in encoder.weights if "token_embedding" in weight.path)
    np.testing.assert_allclose(embedding.numpy(), stored)  # the folder's weights, not random ones


def test_missing_encoder_says_what_to_do(tmp_path):
    from models.backbones import WeightsUnavailableError

    with pytest.raises(WeightsUnavailableError, match="config.json"):
        text_encoders.resolve(str(tmp_path))


@pytest.mark.parametrize("fusion", ["mlp", "bilinear", "late"])
def test_each_fusion_sees_both_inputs(fusion):
    config = Config(backbone="tiny", image_size=32, options=MemesOptions(
        text_encoder="tiny", sequence_length=8, input_size=16, fusion=fusion))
    model = TASK.build_model(config, 2, None)
    assert sorted(model.input) == ["image", "padding_mask", "segment_ids", "token_ids"]
    assert all(model.input[name].dtype == "int32" for name in ("padding_mask", "segment_ids", "token_ids"))
    assert [layer.name for layer in TASK.encoders(model)] == ["backbone", "text_encoder"]
    features = {name: tf.stack([TASK.features({"image_bytes": tf.constant(_png()), "text": tf.constant(text)},
                                              config)[name] for text in ("a cat", "a dog")])
                for name in model.input}
    features["image"] = tf.cast(features["image"], tf.float32)
    probability = model(features).numpy()
    assert probability.shape == (2, 1) and ((probability > 0) & (probability < 1)).all()
    assert not np.isclose(probability[0], probability[1])  # the caption changes the output


def _png() -> bytes:
    from PIL import Image
    import io

    buffer = io.BytesIO()
    Image.new("RGBA", (20, 20), (200, 10, 10, 128)).save(buffer, "PNG")
    return buffer.getvalue()


def test_smoke_run_serves_image_bytes_and_captions_and_covers_every_test_row(smoke_run):
    workdir, _ = smoke_run("memes")
    decision = json.loads((workdir / "export" / "decision.json").read_text())
    import tensorflow_text  # noqa: F401  (the tokenizer's ops, which the SavedModel uses)

    served = tf.saved_model.load(str(workdir / "export" / "saved_model")).signatures["serving_default"]
    outputs = served(image_bytes=tf.constant([_png(), _png()]), text=tf.constant(["when you see it", ""]))
    probability = outputs["probability"].numpy()
    assert probability.shape == (2,)
    np.testing.assert_array_equal(outputs["label"].numpy(), (probability >= decision["threshold"]).astype(int))
    with open(workdir / "solution.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert list(rows[0]) == ["id", "label"] and len(rows) == metrics["test"]["rows"] > 0
    assert {row["label"] for row in rows} <= {"0", "1"}
