"""Backbones and the classifier: shapes, float32 head, input scaling, freezing, partial unfreezing,
and every way weights arrive (none, a local file, Keras' cache, a download), without the network."""

from __future__ import annotations

import dataclasses

import h5py
import keras
import numpy as np
import pytest
from keras.src.applications import efficientnet, resnet
from keras.src.legacy.saving import legacy_h5_format
from keras.src.utils import file_utils

from models import backbones, classifier

SIZES = {"tiny": 32, "small": 32, "resnet50v2": 64, "efficientnetb0": 64, "efficientnet_lite0": 64}


@pytest.fixture(autouse=True)
def seeded():
    keras.utils.set_random_seed(0)


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty Keras cache, and a download host that cannot be reached."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr(backbones, "_host_reachable", lambda host, port=443, timeout=3.0: False)
    return tmp_path / "keras_home" / "models"


def pixels(count: int, size: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype(np.float32)


def save_keras_notop_h5(model: keras.Model, path) -> str:
    """Writes weights in the legacy .h5 layout of the notop files keras.applications publishes."""
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)
    return str(path)


def assert_same_weights(expected: keras.Model, actual: keras.Model):
    assert len(expected.weights) == len(actual.weights)
    for want, got in zip(expected.get_weights(), actual.get_weights()):
        np.testing.assert_array_equal(want, got)


def test_sizes_cover_every_backbone():
    assert set(SIZES) == set(backbones.BACKBONES)


@pytest.mark.parametrize("name", sorted(backbones.BACKBONES))
def test_every_backbone_builds_a_classifier_of_raw_pixels(name):
    size = SIZES[name]
    model = classifier.build_image_classifier(name, num_classes=5, image_size=size)
    assert list(model.input) == ["image"]  # pipelines feed a dict of named features
    assert model.input["image"].dtype == "float32" and model.input["image"].shape == (None, size, size, 3)
    assert model.get_layer("probs").output is model.output
    assert [layer.name for layer in model.layers].count("backbone") == 1
    assert backbones.backbone_name(classifier.backbone_of(model)) == name
    probabilities = model.predict({"image": pixels(2, size)}, verbose=0)
    assert probabilities.shape == (2, 5) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_head_stays_float32_under_mixed_precision(mixed_precision):
    model = classifier.build_image_classifier("tiny", 3, 32)
    assert classifier.backbone_of(model).compute_dtype == "float16"
    assert model.get_layer("head_logits").compute_dtype == "float32"
    assert model.output.dtype == "float32"
    probabilities = model.predict({"image": pixels(2, 32)}, verbose=0)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_multi_label_head_is_sigmoid():
    model = classifier.build_image_classifier("tiny", 4, 32, multi_label=True, name="tags")
    assert model.name == "tags"
    probabilities = model.predict({"image": pixels(1, 32)}, verbose=0)
    assert not np.isclose(probabilities.sum(), 1.0)
    assert ((probabilities > 0) & (probabilities < 1)).all()


def test_resnet_scales_pixels_inside_like_its_keras_preprocessing():
    backbone = backbones.build_backbone("resnet50v2", 32)
    scale = keras.Model(backbone.input, backbone.get_layer("scale_pixels").output)
    raw = pixels(2, 32)
    expected = keras.applications.resnet_v2.preprocess_input(raw.copy())
    np.testing.assert_allclose(scale.predict(raw, verbose=0), expected, atol=1e-6)


def test_frozen_backbone_trains_only_the_head_and_keeps_batchnorm_statistics():
    model = classifier.build_image_classifier("tiny", 3, 32)
    classifier.freeze_backbone(model)
    assert {weight.path for weight in model.trainable_weights} == {"head_logits/kernel",
                                                                  "head_logits/bias"}
    batchnorms = [layer for layer in classifier.backbone_of(model).layers
                  if isinstance(layer, keras.layers.BatchNormalization)]
    means_before = [keras.ops.convert_to_numpy(layer.moving_mean) for layer in batchnorms]
    head_before = model.get_layer("head_logits").get_weights()[0]
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.fit({"image": pixels(16, 32)}, np.eye(3)[np.arange(16) % 3], batch_size=8, epochs=1, verbose=0)
    for layer, before in zip(batchnorms, means_before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.moving_mean), before)
    assert not np.allclose(model.get_layer("head_logits").get_weights()[0], head_before)


def test_unfreeze_whole_backbone_or_only_its_top_blocks():
    model = classifier.build_image_classifier("tiny", 3, 32, name="custom_name")
    backbone = classifier.backbone_of(model)
    assert classifier.backbone_block_count(model) == 3
    classifier.freeze_backbone(model)
    head_only = len(model.trainable_weights)

    top = classifier.unfreeze_backbone(model, top_blocks=1)
    trainable = {layer.name for layer in backbone.layers if layer.trainable and layer.weights}
    assert trainable == {"block3_conv1"}  # BatchNorm stays frozen in a partial unfreeze
    # After a partial unfreeze, a whole one must reach the lower blocks again.
    everything = classifier.unfreeze_backbone(model, top_blocks=None)
    assert head_only < top < everything == len(backbone.trainable_weights) + 2
    assert all(layer.trainable for layer in backbone.layers)
    assert classifier.unfreeze_backbone(model, 0) == everything
    classifier.unfreeze_backbone(model, None, train_batchnorm=False)  # --freeze_batchnorm
    frozen = {layer.name for layer in backbone.layers if not layer.trainable}
    assert frozen == {layer.name for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)}
    with pytest.raises(ValueError, match="has 3 blocks"):
        classifier.unfreeze_backbone(model, top_blocks=4)


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown backbone 'nope'; known: efficientnet_lite0, "
                                         "efficientnetb0, resnet50v2"):
        classifier.build_image_classifier("nope", 3, 32)
    with pytest.raises(ValueError, match="unknown backbone 'nope'"):
        backbones.resolve_weights("nope", None)


def test_resolve_weights_rejects_what_cannot_be_loaded(tmp_path, offline):
    assert backbones.resolve_weights("tiny", None) is None
    assert backbones.resolve_weights("tiny", "none") is None
    with pytest.raises(backbones.WeightsUnavailableError, match="missing.weights.h5 not found"):
        backbones.resolve_weights("tiny", str(tmp_path / "missing.weights.h5"))
    with pytest.raises(backbones.WeightsUnavailableError, match="not an .h5"):
        backbones.resolve_weights("tiny", str(tmp_path / "model.keras"))
    with pytest.raises(backbones.WeightsUnavailableError, match="'tiny' has no ImageNet weights"):
        backbones.resolve_weights("tiny", "imagenet")


def test_imagenet_offline_error_says_how_to_give_a_local_file(offline):
    with pytest.raises(backbones.WeightsUnavailableError) as error:
        backbones.resolve_weights("resnet50v2", "imagenet")
    message = str(error.value)
    assert "offline" in message
    assert "--weights=/path/to/resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert str(offline / "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5") in message


def test_imagenet_comes_from_keras_cache_when_intact_else_from_the_host(offline, monkeypatch):
    spec = backbones.BACKBONES["efficientnetb0"]
    cached = offline / spec.imagenet.file_name
    offline.mkdir(parents=True)
    cached.write_bytes(b"not the real file")
    with pytest.raises(backbones.WeightsUnavailableError, match="missing or incomplete"):
        backbones.resolve_weights("efficientnetb0", "imagenet")  # wrong checksum: not used

    monkeypatch.setitem(backbones.BACKBONES, "efficientnetb0", dataclasses.replace(
        spec, imagenet=dataclasses.replace(spec.imagenet, md5=backbones._md5(str(cached)))))
    assert backbones.resolve_weights("efficientnetb0", "imagenet") == str(cached)

    cached.unlink()
    monkeypatch.setattr(backbones, "_host_reachable", lambda host, port=443, timeout=3.0:
                        host == "storage.googleapis.com")
    assert backbones.resolve_weights("efficientnetb0", "imagenet") == "imagenet"


def test_imagenet_files_are_the_ones_keras_applications_fetch():
    resnet50v2 = backbones.BACKBONES["resnet50v2"].imagenet
    assert resnet50v2.origin == resnet.BASE_WEIGHTS_PATH + resnet50v2.file_name
    assert resnet50v2.md5 == resnet.WEIGHTS_HASHES["resnet50v2"][1]
    efficientnetb0 = backbones.BACKBONES["efficientnetb0"].imagenet
    assert efficientnetb0.origin == efficientnet.BASE_WEIGHTS_PATH + efficientnetb0.file_name
    assert efficientnetb0.md5 == efficientnet.WEIGHTS_HASHES["b0"][1]


def test_local_weights_file_round_trip(tmp_path):
    source = backbones.build_backbone("tiny", 32)
    path = str(tmp_path / "tiny.weights.h5")
    source.save_weights(path)
    assert backbones.resolve_weights("tiny", path) == path
    loaded = backbones.build_backbone("tiny", 32, weights=path)
    assert_same_weights(source, loaded)
    np.testing.assert_allclose(loaded.predict(pixels(2, 32), verbose=0),
                               source.predict(pixels(2, 32), verbose=0), rtol=1e-6)


def test_resnet_loads_a_keras_notop_h5_file(tmp_path):
    published = keras.applications.ResNet50V2(include_top=False, weights=None, input_shape=(64, 64, 3))
    path = save_keras_notop_h5(
        published, tmp_path / "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5")
    loaded = backbones.build_backbone("resnet50v2", 64, weights=backbones.resolve_weights(
        "resnet50v2", path))
    assert_same_weights(published, loaded)


def test_efficientnet_imagenet_weights_match_keras_own_imagenet_model(tmp_path, monkeypatch):
    """keras.applications adds a rescaling layer only when it loads the ImageNet file itself; our
    backbone must compute the same, whether that file is downloaded or given as a local path."""
    published = keras.applications.EfficientNetB0(include_top=False, weights=None,
                                                  input_shape=(64, 64, 3))
    normalization = next(layer for layer in published.layers
                         if isinstance(layer, keras.layers.Normalization))
    normalization.set_weights([np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]),
                               np.array(1)])  # what the ImageNet file holds
    path = save_keras_notop_h5(published, tmp_path / "efficientnetb0_notop.h5")
    spec = backbones.BACKBONES["efficientnetb0"]
    monkeypatch.setitem(backbones.BACKBONES, "efficientnetb0", dataclasses.replace(
        spec, imagenet=dataclasses.replace(spec.imagenet, md5=backbones._md5(path))))
    downloads = []

    def fake_get_file(fname, origin, **kwargs):
        downloads.append((fname, origin, kwargs["file_hash"], kwargs["cache_subdir"]))
        return path

    monkeypatch.setattr(file_utils, "get_file", fake_get_file)  # inside keras.applications
    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)  # in build_backbone
    reference = keras.applications.EfficientNetB0(include_top=False, weights="imagenet",
                                                  input_shape=(64, 64, 3))
    downloaded = backbones.build_backbone("efficientnetb0", 64, weights="imagenet")
    local = backbones.build_backbone("efficientnetb0", 64, weights=path)
    assert downloads[-1] == ("efficientnetb0_notop.h5", spec.imagenet.origin,
                             backbones.BACKBONES["efficientnetb0"].imagenet.md5, "models")

    def stem(model):  # the first layer the missing rescaling would change
        return keras.Model(model.input, model.get_layer("stem_conv").output).predict(
            pixels(2, 64), verbose=0)

    expected = stem(reference)
    np.testing.assert_allclose(stem(downloaded), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(stem(local), expected, rtol=1e-4, atol=1e-4)
    monkeypatch.setitem(backbones.BACKBONES, "efficientnetb0", spec)  # file not recognised now
    unscaled = backbones.build_backbone("efficientnetb0", 64, weights=path)
    assert not np.allclose(stem(unscaled), expected, rtol=1e-2, atol=1e-2)
