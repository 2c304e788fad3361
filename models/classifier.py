"""Image classifier = backbone (with its input scaling) -> dropout -> float32 head, and the helpers
that freeze and unfreeze the backbone between training phases."""

from __future__ import annotations

import keras

from models import backbones


def build_image_classifier(backbone: str, num_classes: int, image_size: int, dropout: float = 0.2,
                           weights: str | None = None, multi_label: bool = False,
                           name: str | None = None) -> keras.Model:
    """Input {"image": float32 (None, image_size, image_size, 3) raw pixels in [0, 255]}; output
    `probs`: softmax, or independent sigmoids when `multi_label`. `weights` is a value
    backbones.resolve_weights returned.

    The head is float32 even under a mixed_float16 policy: softmax in float16 loses precision and
    the loss must see float32 probabilities.
    """
    inputs = keras.Input((image_size, image_size, 3), name="image")
    features = backbones.build_backbone(backbone, image_size, weights)(inputs)
    features = keras.layers.Dropout(dropout, name="head_dropout")(features)
    logits = keras.layers.Dense(num_classes, name="head_logits", dtype="float32")(features)
    activation = "sigmoid" if multi_label else "softmax"
    probabilities = keras.layers.Activation(activation, name="probs", dtype="float32")(logits)
    # Inputs as a dict: the pipelines feed every model a dict of named features.
    return keras.Model({"image": inputs}, probabilities, name=name or f"{backbone}_classifier")


def backbone_of(model: keras.Model) -> keras.Model:
    return model.get_layer("backbone")


def _blocks(model: keras.Model) -> tuple[tuple[str, ...], ...]:
    return backbones.get_spec(backbones.backbone_name(backbone_of(model))).blocks


def backbone_block_count(model: keras.Model) -> int:
    return len(_blocks(model))


def freeze_backbone(model: keras.Model) -> None:
    """Head-only training. In Keras 3 a non-trainable BatchNormalization runs in inference mode, so
    the backbone's statistics are not disturbed by the new head's large early gradients."""
    backbone_of(model).trainable = False


def unfreeze_backbone(model: keras.Model, top_blocks: int | None = None, train_batchnorm: bool = True) -> int:
    """Makes the whole backbone trainable (top_blocks None or 0), or only its top `top_blocks`
    blocks; returns the number of trainable weight tensors of the model, head included.

    In a partial unfreeze, or with train_batchnorm=False, the BatchNorm layers stay frozen
    (inference mode): their statistics were learned on far more data than fine-tuning batches
    show, and small batches make them noisy (a 116-tag sticker model measured: first-tag top-1
    0.50 after the head phase fell to 0.25 when a whole unfreeze let BatchNorm train).
    Recompile the model after calling this."""
    backbone = backbone_of(model)
    prefixes = ()
    if top_blocks:
        blocks = _blocks(model)
        if not 0 < top_blocks <= len(blocks):
            raise ValueError(f"top_blocks={top_blocks}: {backbones.backbone_name(backbone)} has "
                             f"{len(blocks)} blocks")
        prefixes = tuple(prefix for block in blocks[-top_blocks:] for prefix in block)
    backbone.trainable = True
    # Then every layer explicitly: on TensorFlow, setting `trainable` to the value it already has
    # is skipped (the setter that would pass it on to the layers inside never runs), so after a
    # partial unfreeze `backbone.trainable = True` alone would leave the lower blocks frozen.
    for layer in backbone.layers:
        batchnorm = isinstance(layer, keras.layers.BatchNormalization)
        if prefixes:
            layer.trainable = layer.name.startswith(prefixes) and not batchnorm
        else:
            layer.trainable = train_batchnorm or not batchnorm
    return len(model.trainable_weights)
