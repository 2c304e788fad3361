"""The products task: the KL mapping onto target categories on hand-made distributions (the original
read the winning index in the wrong table), tuning on a labeled share, CBOW learning planted
synonyms without labels (the end-to-end smoke run is tests/test_pipelines.py's)."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest

from pipelines.products import ProductsOptions, cbow, mapping

TRAINING = ("Sneakers", "Sandals", "Tshirt", "Watch")  # training classes (the towers' outputs)
TARGETS = ("Clothing", "Footwear", "Timepieces")  # target categories: other names, other count


def _projections():
    """What the text tower makes of each target category NAME, over the training classes."""
    return np.array([[0.05, 0.05, 0.85, 0.05],    # Clothing   -> Tshirt
                     [0.45, 0.45, 0.05, 0.05],    # Footwear   -> Sneakers, Sandals
                     [0.05, 0.05, 0.05, 0.85]])   # Timepieces -> Watch


def test_kl_mapping_picks_the_nearest_category_and_reads_the_target_table():
    members = [mapping.Member(np.array([0.7, 0.2, 0.05, 0.05]), np.array([0.3, 0.6, 0.05, 0.05])),  # a shoe
               mapping.Member(np.array([0.1, 0.1, 0.1, 0.7]), None),  # a watch with no words: image alone
               mapping.Member(None, np.array([0.05, 0.05, 0.8, 0.1]))]  # a shirt with no usable image
    choices, divergences = mapping.assign(members, _projections(), 3, mapping.Rule(0.5, 1.0))
    assert [TARGETS[choice] for choice in choices] == ["Footwear", "Timepieces", "Clothing"]
    # the original's bug: the same index read in the TRAINING table names the wrong thing
    assert [TRAINING[choice] for choice in choices] != ["Footwear", "Timepieces", "Clothing"]
    assert [member.modalities for member in members] == ["image+text", "image", "text"]
    expected = mapping.kl_divergence(mapping.ensemble(members[0], 3, 0.5), _projections())
    assert divergences[0] == pytest.approx(expected.min())
    assert expected.argmin() == 1 and (expected >= 0).all()


def test_top_k_and_temperature():
    np.testing.assert_allclose(mapping.top_k(np.array([0.5, 0.3, 0.15, 0.05]), 2), [0.625, 0.375, 0, 0])
    softened = mapping.sharpen(np.array([[0.98, 0.01, 0.01]]), 4.0)
    assert softened[0, 0] < 0.98 and softened.sum() == pytest.approx(1.0)


def test_tuning_uses_a_labeled_share_and_reports_on_the_rest():
    members, truth, keys = [], {}, []
    for row in range(40):  # the image tower is right, the text tower points elsewhere: tuning must see it
        label = row % 3
        image, text = np.full(4, 0.05), np.full(4, 0.02)
        image[[2, 0, 3][label]] = 0.85
        text[[3, 2, 0][label]] = 0.94
        members.append(mapping.Member(image / image.sum(), text / text.sum()))
        keys.append(f"p{row}")
        truth[f"p{row}"] = label
    rule, tuned_on = mapping.tune(members, _projections(), 3, truth, keys, 0.25, seed=0)
    assert len(tuned_on) == 10 and rule.image_weight >= 0.75 and rule.zero_shot_weight == 0.0
    figures = mapping.compare(members, _projections(), 3, rule, truth, keys, tuned_on)
    assert figures["products_scored"] == 30 and figures["image_only"] == 1.0
    assert figures["ensemble"] == 1.0 and figures["text_only"] == 0.0
    # a zero-shot signal that knows the answer: tuning mixes it in when the towers are useless
    right = np.log(np.full((40, 3), 0.05))
    right[np.arange(40), [truth[key] for key in keys]] = np.log(0.9)
    useless = [mapping.Member(np.full(4, 0.25), None) for _ in members]
    rule, tuned_on = mapping.tune(useless, _projections(), 3, truth, keys, 0.25, seed=0, zero_shot=right)
    assert rule.zero_shot_weight > 0
    figures = mapping.compare(useless, _projections(), 3, rule, truth, keys, tuned_on, zero_shot=right)
    assert figures["zero_shot"] == 1.0 and figures["ensemble_with_zero_shot"] == 1.0


def test_cbow_learns_planted_synonyms_without_labels():
    rng = np.random.default_rng(0)
    contexts = {"sneaker": ["running", "sport", "lace", "sole"], "trainer": ["running", "sport", "lace", "sole"],
                "wristwatch": ["dial", "strap", "steel", "time"], "timepiece": ["dial", "strap", "steel", "time"],
                "tee": ["cotton", "sleeve", "crew", "neck"], "shirt": ["cotton", "sleeve", "crew", "neck"]}
    words = sorted({word for key, around in contexts.items() for word in [key, *around]})
    index = {word: position + 1 for position, word in enumerate(words)}  # 0 is padding
    sentences = []
    for _ in range(300):
        centre = list(contexts)[rng.integers(len(contexts))]
        around = list(rng.choice(contexts[centre], 4, replace=False))
        sentences.append(np.array([index[word] for word in around[:2] + [centre] + around[2:]]))
    embeddings = cbow.learn(sentences, len(words) + 1, dim=16, window=2, epochs=20, negatives=3, seed=0)
    vocabulary = ["", *words]  # id -> word
    for word, synonym in (("sneaker", "trainer"), ("wristwatch", "timepiece"), ("tee", "shirt")):
        neighbours = [other for other in cbow.nearest(embeddings, vocabulary, word, count=len(words))
                      if other in contexts]
        assert neighbours[0] == synonym, (word, neighbours)


def test_cbow_embeddings_are_made_once_per_data_and_settings(tmp_path):
    options = ProductsOptions(cbow_dim=8, cbow_epochs=1, vocabulary_size=50)
    texts = ["red running shoe", "blue cotton shirt", "steel watch with a strap"]
    folder = cbow.train_or_load(texts, str(tmp_path), options, seed=0)
    first = (tmp_path / folder).joinpath("embeddings.npy").stat().st_mtime_ns
    assert cbow.train_or_load(texts, str(tmp_path), options, seed=0) == folder
    assert (tmp_path / folder).joinpath("embeddings.npy").stat().st_mtime_ns == first  # reused
    other = cbow.train_or_load(texts, str(tmp_path), dataclasses.replace(options, cbow_dim=4), seed=0)
    assert other != folder and cbow.load_embeddings(other).shape[1] == 4
    vocabulary = (tmp_path / folder / "vocabulary.txt").read_text().splitlines()
    assert vocabulary[1] == "[UNK]" and "shirt" in vocabulary


def test_smoke_run_predicts_every_target_product(smoke_run):
    import json
    import pathlib

    workdir, _ = smoke_run("products")
    metrics = json.loads((workdir / "metrics.json").read_text())
    data_dir = next(line.split("=", 1)[1] for line in (workdir / "flags.txt").read_text().splitlines()
                    if line.startswith("--data_dir="))
    manifest = json.loads((pathlib.Path(data_dir) / "manifest.json").read_text())
    with open(workdir / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == metrics["test"]["rows"] > 0
    assert {row["target_category"] for row in rows} <= set(manifest["extra"]["target_categories"])
    assert all(row["modalities"] in ("image+text", "image", "text") for row in rows)


def test_a_description_without_words_still_gives_a_full_row_of_padding(tmp_path):
    import os

    import tensorflow as tf

    from pipelines.core.config import Config
    from pipelines.products import TASK
    from tests.conftest import encoded, random_image

    config = Config(data_dir=str(tmp_path), image_size=16, options=ProductsOptions(text_length=6))
    os.makedirs(os.path.dirname(cbow.vocabulary_path(config)))
    with open(cbow.vocabulary_path(config), "w") as handle:
        handle.write("\n[UNK]\nshoe\nred\n")
    image = tf.constant(encoded(random_image(0), "PNG"))
    for text, expected in (("", [0] * 6), ("red shoe, size 9", [3, 2, 1, 1, 0, 0])):
        words = TASK.features({"image_bytes": image, "text": tf.constant(text)}, config)["words"]
        assert words.numpy().tolist() == expected
