"""Image backbones by name: the real ones and, right beside them, small ones for tests and CPU demos.

Every backbone maps raw pixels in [0, 255] to a pooled feature vector. Its own input scaling is part
of the model (the original sticker system forgot to normalise inputs at inference; here that cannot
happen), and it is built as one nested model named "backbone" so training phases can freeze it.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from typing import Callable

import keras

WEIGHTS_HOST = "storage.googleapis.com"
WEIGHTS_URL = f"https://{WEIGHTS_HOST}/keras-applications/"


class WeightsUnavailableError(ValueError):
    """Pretrained weights were asked for but cannot be had; the message says how to provide them."""


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone. `blocks` lists, bottom to top, the layer-name prefixes of each
    block, for unfreezing only the top N blocks."""

    build: Callable[[int], keras.Model]  # image_size -> headless model with pooled output
    scale: Callable[[], keras.layers.Layer | None]  # raw [0, 255] pixels -> the range it expects
    blocks: tuple[tuple[str, ...], ...]
    imagenet_file: str | None = None  # the notop weights file Keras publishes


def _resnet50v2(image_size: int) -> keras.Model:
    return keras.applications.ResNet50V2(include_top=False, weights=None, pooling="avg",
                                         input_shape=(image_size, image_size, 3), name="backbone")


def _efficientnetb0(image_size: int) -> keras.Model:
    # EfficientNet rescales and normalises its [0, 255] input itself.
    return keras.applications.EfficientNetB0(include_top=False, weights=None, pooling="avg",
                                             input_shape=(image_size, image_size, 3), name="backbone")


def _small_cnn(widths: tuple[int, ...], convs_per_block: int) -> Callable[[int], keras.Model]:
    """A plain conv-BN-ReLU network: `tiny` for tests (builds in milliseconds), `small` for CPU demos."""

    def build(image_size: int) -> keras.Model:
        inputs = keras.Input((image_size, image_size, 3))
        features = inputs
        for block, width in enumerate(widths, start=1):
            for conv in range(convs_per_block):
                features = keras.layers.Conv2D(width, 3, padding="same", use_bias=False,
                                               name=f"block{block}_conv{conv + 1}")(features)
                # momentum 0.9, not 0.99: trained from scratch for a few hundred steps, the moving
                # statistics must converge within the run or inference-mode outputs are garbage.
                features = keras.layers.BatchNormalization(momentum=0.9,
                                                           name=f"block{block}_bn{conv + 1}")(features)
                features = keras.layers.ReLU(name=f"block{block}_relu{conv + 1}")(features)
            if block < len(widths):
                features = keras.layers.MaxPooling2D(name=f"block{block}_pool")(features)
        pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
        return keras.Model(inputs, pooled, name="backbone")

    return build


def _unit_scale() -> keras.layers.Layer:
    return keras.layers.Rescaling(1 / 255.0, name="scale_pixels")


BACKBONES: dict[str, BackboneSpec] = {
    "resnet50v2": BackboneSpec(
        build=_resnet50v2,
        scale=lambda: keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="scale_pixels"),
        blocks=(("conv1_",), ("conv2_",), ("conv3_",), ("conv4_",), ("conv5_", "post_")),
        imagenet_file="resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "efficientnetb0": BackboneSpec(
        build=_efficientnetb0,
        scale=lambda: None,
        blocks=(("stem_",), ("block1",), ("block2",), ("block3",), ("block4",), ("block5",),
                ("block6",), ("block7", "top_")),
        imagenet_file="efficientnetb0_notop.h5",
    ),
    # Used for CPU demos: ~290k parameters, learns the demo classes in minutes.
    "small": BackboneSpec(build=_small_cnn((32, 64, 128, 192), 2), scale=_unit_scale,
                          blocks=tuple((f"block{index}_",) for index in range(1, 5))),
    # Used for testing only: ~6k parameters, builds and trains a step in well under a second.
    "tiny": BackboneSpec(build=_small_cnn((8, 16, 32), 1), scale=_unit_scale,
                         blocks=tuple((f"block{index}_",) for index in range(1, 4))),
}


def get_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]


def keras_cache_path(file_name: str) -> str:
    """Where keras.utils.get_file keeps downloaded application weights."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models", file_name)


def _host_reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_weights(name: str, weights: str | None) -> str | None:
    """Checks the --weights value before any expensive work; returns a local file path, "imagenet"
    (to download on build), or None (random initialisation)."""
    spec = get_spec(name)
    if weights in (None, "", "none"):
        return None
    if weights != "imagenet":
        if not os.path.isfile(weights):
            raise WeightsUnavailableError(f"weights file {weights} not found")
        return weights
    if spec.imagenet_file is None:
        raise WeightsUnavailableError(f"backbone {name!r} has no ImageNet weights; use --weights=none")
    cached = keras_cache_path(spec.imagenet_file)
    if os.path.isfile(cached):
        return cached
    if _host_reachable(WEIGHTS_HOST):
        return "imagenet"
    raise WeightsUnavailableError(
        f"ImageNet weights for {name} are not cached at {cached} and {WEIGHTS_HOST} cannot be "
        f"reached (offline?). Download {WEIGHTS_URL}{spec.imagenet_file} elsewhere, then pass "
        f"--weights=/path/to/{spec.imagenet_file} or copy the file to {cached}; "
        "or train from scratch with --weights=none."
    )


def build_backbone(name: str, image_size: int, weights: str | None = None) -> keras.Model:
    """The headless backbone, named "backbone", with `weights` from resolve_weights loaded.

    Always built with weights=None and then loaded from a file, so a local file and the download
    take the same path."""
    spec = get_spec(name)
    backbone = spec.build(image_size)
    if weights == "imagenet":
        weights = keras.utils.get_file(spec.imagenet_file, WEIGHTS_URL + spec.imagenet_file,
                                       cache_subdir="models")
    if weights:
        backbone.load_weights(weights)
    return backbone
