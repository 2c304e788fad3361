"""Backbones and the classifier: shapes, float32 head, freezing, partial unfreezing, weights files."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from models import backbones, classifier


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("name", sorted(backbones.BACKBONES))
def test_every_backbone_builds_a_classifier_with_probabilities(name):
    model = classifier.build_image_classifier(name, num_classes=5, image_size=64)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    probabilities = model.predict(pixels, verbose=0)
    assert probabilities.shape == (2, 5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert model.get_layer("backbone") is classifier.backbone_of(model)


def test_head_stays_float32_under_mixed_precision(mixed_precision):
    model = classifier.build_image_classifier("tiny", 3, 32)
    assert model.get_layer("backbone").compute_dtype == "float16"
    assert model.output.dtype == "float32"
    assert model.get_layer("head_logits").compute_dtype == "float32"


def test_multi_label_head_is_sigmoid():
    model = classifier.build_image_classifier("tiny", 4, 32, multi_label=True)
    probabilities = model.predict(np.full((1, 32, 32, 3), 128, np.float32), verbose=0)
    assert not np.isclose(probabilities.sum(), 1.0)
    assert ((probabilities > 0) & (probabilities < 1)).all()


def test_frozen_backbone_trains_only_the_head_and_keeps_batchnorm_statistics():
    keras.utils.set_random_seed(0)
    model = classifier.build_image_classifier("tiny", 3, 32)
    classifier.freeze_backbone(model)
    assert {weight.path.split("/")[0] for weight in model.trainable_weights} == {"head_logits"}
    bn = model.get_layer("backbone").get_layer("block1_bn1")
    before = keras.ops.convert_to_numpy(bn.moving_mean)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    images = np.random.default_rng(1).uniform(0, 255, (16, 32, 32, 3)).astype(np.float32)
    model.fit(images, np.eye(3)[np.arange(16) % 3], epochs=2, verbose=0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.moving_mean), before)


def test_unfreeze_whole_backbone_or_only_its_top_blocks():
    model = classifier.build_image_classifier("tiny", 3, 32)
    classifier.freeze_backbone(model)
    head_only = len(model.trainable_weights)
    top = classifier.unfreeze_backbone(model, top_blocks=1)
    backbone = model.get_layer("backbone")
    trainable = {layer.name for layer in backbone.layers if layer.trainable and layer.weights}
    assert trainable == {"block3_conv1"}  # BatchNorm stays frozen in a partial unfreeze
    everything = classifier.unfreeze_backbone(model)
    assert head_only < top < everything == len(model.weights) - 2 * 3  # minus BN moving stats
    assert classifier.backbone_block_count(model) == 3


def test_resolve_weights_errors_and_local_file_round_trip(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown backbone 'nope'"):
        backbones.resolve_weights("nope", None)
    with pytest.raises(backbones.WeightsUnavailableError, match="not found"):
        backbones.resolve_weights("tiny", str(tmp_path / "missing.weights.h5"))
    with pytest.raises(backbones.WeightsUnavailableError, match="no ImageNet weights"):
        backbones.resolve_weights("tiny", "imagenet")
    assert backbones.resolve_weights("tiny", "none") is None

    source = backbones.build_backbone("tiny", 32)
    path = str(tmp_path / "tiny.weights.h5")
    source.save_weights(path)
    assert backbones.resolve_weights("tiny", path) == path
    loaded = backbones.build_backbone("tiny", 32, weights=path)
    for expected, actual in zip(source.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(expected, actual)


def test_imagenet_offline_error_says_how_to_give_a_local_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(backbones, "_host_reachable", lambda host, port=443, timeout=3.0: False)
    with pytest.raises(backbones.WeightsUnavailableError) as error:
        backbones.resolve_weights("resnet50v2", "imagenet")
    message = str(error.value)
    assert "--weights=/path/to/resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert str(tmp_path / "models") in message
    cached = tmp_path / "models" / "efficientnetb0_notop.h5"
    cached.parent.mkdir()
    cached.write_bytes(b"h5")
    assert backbones.resolve_weights("efficientnetb0", "imagenet") == str(cached)
