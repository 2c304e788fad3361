"""Image classifier = input scaling -> backbone -> dropout -> float32 head, plus the phase helpers."""

from __future__ import annotations

import keras

from models import backbones


def build_image_classifier(backbone: str, num_classes: int, image_size: int, dropout: float = 0.2,
                           weights: str | None = None, multi_label: bool = False) -> keras.Model:
    """Input `image`: float (None, size, size, 3) raw pixels in [0, 255]; output `probs`.

    The head is float32 even under a mixed_float16 policy: softmax in float16 loses precision and
    the loss must see float32 probabilities.
    """
    spec = backbones.get_spec(backbone)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    scale = spec.scale()
    features = backbones.build_backbone(backbone, image_size, weights)(
        scale(inputs) if scale is not None else inputs)
    features = keras.layers.Dropout(dropout, name="head_dropout")(features)
    logits = keras.layers.Dense(num_classes, name="head_logits", dtype="float32")(features)
    activation = "sigmoid" if multi_label else "softmax"
    probabilities = keras.layers.Activation(activation, name="probs", dtype="float32")(logits)
    return keras.Model(inputs, probabilities, name=f"{backbone}_classifier")


def backbone_of(model: keras.Model) -> keras.Model:
    return model.get_layer("backbone")


def freeze_backbone(model: keras.Model) -> None:
    """Head-only training. In Keras 3 a non-trainable BatchNormalization runs in inference mode, so
    the backbone's statistics are not disturbed by the new head's large early gradients."""
    backbone_of(model).trainable = False


def unfreeze_backbone(model: keras.Model, top_blocks: int | None = None) -> int:
    """Makes the whole backbone trainable, or only its top `top_blocks` blocks; returns the number of
    trainable weight tensors. With a partial unfreeze the BatchNorm layers stay frozen: their
    statistics were learned on far more data than a fine-tuning batch shows."""
    backbone = backbone_of(model)
    backbone.trainable = True
    prefixes = ()
    if top_blocks:
        spec = backbones.get_spec(model.name.removesuffix("_classifier"))
        prefixes = tuple(prefix for block in spec.blocks[-top_blocks:] for prefix in block)
    # Set on every layer: a Functional model's own `trainable` does not reach layers that were
    # changed one by one before (a partial unfreeze).
    for layer in backbone.layers:
        layer.trainable = not prefixes or (layer.name.startswith(prefixes) and
                                           not isinstance(layer, keras.layers.BatchNormalization))
    return len(model.trainable_weights)


def backbone_block_count(model: keras.Model) -> int:
    return len(backbones.get_spec(model.name.removesuffix("_classifier")).blocks)
