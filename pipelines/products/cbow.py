"""CBOW word embeddings with negative sampling, learned WITHOUT labels from product descriptions.

A Keras model: the embeddings of a centre word's context (--cbow_window words on each side) are
averaged and scored by a dot product against the output embedding of the true centre word and of
--cbow_negatives words drawn from the unigram distribution to the power 0.75 (word2vec's); a
sigmoid cross-entropy teaches the true word apart. The vocabulary is keras' TextVectorization
(padding 0, [UNK] 1, then the words by frequency). Results live in
<data_dir>/cbow/<settings>/{vocabulary.txt, embeddings.npy}: made once per data and settings,
shared by every run, trial and mode on those shards.
"""

from __future__ import annotations

import hashlib
import json
import os

import keras
import numpy as np
import tensorflow as tf

VOCABULARY = "vocabulary.txt"
EMBEDDINGS = "embeddings.npy"


def _settings(options, seed: int) -> dict:
    return {"vocabulary_size": options.vocabulary_size, "dim": options.cbow_dim, "window": options.cbow_window,
            "epochs": options.cbow_epochs, "negatives": options.cbow_negatives, "seed": seed}


def folder(data_dir: str, options, seed: int) -> str:
    key = hashlib.sha256(json.dumps(_settings(options, seed), sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(data_dir, "cbow", key)


def vocabulary_path(config) -> str:
    return os.path.join(folder(config.data_dir, config.options, config.seed), VOCABULARY)


def load_embeddings(path: str) -> np.ndarray:
    return np.load(os.path.join(path, EMBEDDINGS), allow_pickle=False)


def train_or_load(texts: list[str], data_dir: str, options, seed: int) -> str:
    """The folder holding the vocabulary and embeddings learned from `texts` (made if missing)."""
    target = folder(data_dir, options, seed)
    if os.path.exists(os.path.join(target, EMBEDDINGS)):
        return target
    vectorizer = keras.layers.TextVectorization(max_tokens=options.vocabulary_size + 2,
                                                standardize="lower_and_strip_punctuation")
    vectorizer.adapt(tf.constant(texts or [""]))
    vocabulary = vectorizer.get_vocabulary()
    ids = [row[row > 0] for row in vectorizer(tf.constant(texts)).numpy()] if texts else []
    embeddings = learn(ids, options.vocabulary_size + 2, options.cbow_dim, options.cbow_window,
                       options.cbow_epochs, options.cbow_negatives, seed)
    os.makedirs(target, exist_ok=True)
    np.save(os.path.join(target, EMBEDDINGS + ".partial.npy"), embeddings)
    with open(os.path.join(target, VOCABULARY), "w", encoding="utf-8") as handle:
        handle.write("\n".join(vocabulary) + "\n")
    with open(os.path.join(target, "settings.json"), "w") as handle:
        json.dump({**_settings(options, seed), "texts": len(texts), "words": len(vocabulary)}, handle, indent=2)
    os.replace(os.path.join(target, EMBEDDINGS + ".partial.npy"), os.path.join(target, EMBEDDINGS))
    print(f"products: CBOW embeddings of {len(vocabulary)} words learned without labels from "
          f"{len(texts)} descriptions, kept in {target}")
    return target


def training_pairs(sentences: list[np.ndarray], window: int) -> tuple[np.ndarray, np.ndarray]:
    """(contexts, centres): each word of each sentence with up to `window` words on each side,
    padded with 0 (which the model ignores)."""
    contexts, centres = [], []
    for words in sentences:
        for position, centre in enumerate(words):
            around = np.concatenate([words[max(0, position - window):position], words[position + 1:position + 1 + window]])
            if len(around):
                contexts.append(np.pad(around, (0, 2 * window - len(around))))
                centres.append(centre)
    if not centres:
        return np.zeros((0, 2 * window), np.int64), np.zeros((0,), np.int64)
    return np.stack(contexts).astype(np.int64), np.asarray(centres, np.int64)


def learn(sentences: list[np.ndarray], vocabulary_size: int, dim: int, window: int, epochs: int,
          negatives: int, seed: int) -> np.ndarray:
    """The input embeddings (vocabulary_size, dim) after CBOW training on the id sequences."""
    keras.utils.set_random_seed(seed)
    contexts, centres = training_pairs(sentences, window)
    context_in = keras.Input((2 * window,), dtype="int64", name="context")
    candidates_in = keras.Input((1 + negatives,), dtype="int64", name="candidates")
    word = keras.layers.Embedding(vocabulary_size, dim, name="word",
                                  embeddings_initializer=keras.initializers.RandomUniform(-0.5 / dim, 0.5 / dim))
    output = keras.layers.Embedding(vocabulary_size, dim, name="output", embeddings_initializer="zeros")
    mask = keras.ops.expand_dims(keras.ops.cast(keras.ops.greater(context_in, 0), "float32"), -1)
    mean = keras.ops.sum(word(context_in) * mask, axis=1) / keras.ops.maximum(keras.ops.sum(mask, axis=1), 1.0)
    logits = keras.ops.einsum("bd,bkd->bk", mean, output(candidates_in))
    model = keras.Model({"context": context_in, "candidates": candidates_in}, logits)
    model.compile(keras.optimizers.Adam(0.01), keras.losses.BinaryCrossentropy(from_logits=True))
    if len(centres):
        counts = np.bincount(centres, minlength=vocabulary_size).astype(np.float64) ** 0.75
        counts[:2] = 0  # never draw padding or [UNK]
        unigram = counts / counts.sum()
        rng = np.random.default_rng(seed)
        labels = np.zeros((len(centres), 1 + negatives), np.float32)
        labels[:, 0] = 1.0
        for _ in range(epochs):  # fresh negatives every pass
            drawn = rng.choice(vocabulary_size, size=(len(centres), negatives), p=unigram)
            candidates = np.concatenate([centres[:, None], drawn], axis=1)
            model.fit({"context": contexts, "candidates": candidates}, labels, batch_size=256,
                      epochs=1, shuffle=True, verbose=0)
    return keras.ops.convert_to_numpy(word.embeddings).astype(np.float32)


def nearest(embeddings: np.ndarray, vocabulary: list[str], word: str, count: int = 5) -> list[str]:
    """The `count` words whose embeddings are closest (cosine) to `word`'s."""
    normalised = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-9)
    scores = normalised @ normalised[vocabulary.index(word)]
    order = [index for index in np.argsort(-scores) if index >= 2 and vocabulary[index] != word]
    return [vocabulary[index] for index in order[:count]]
