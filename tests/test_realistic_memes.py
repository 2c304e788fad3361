"""The realistic memes demo data: the challenge's layout (test.csv without labels, the truth beside it),
counts, files that decode, robustness rows, train/dev/test from disjoint sources, the same bytes for the
same seed, and the point of it: the label is an interaction of picture and caption, so either alone is
near chance while the pair decides it.

Needs the source packages of preprocess/realistic_memes.py (REQUIRED there); without them these tests
fail and say what to install rather than pass unseen."""

from __future__ import annotations

import csv
import os
import unicodedata

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.preprocessing import OneHotEncoder

from preprocess import demo, realistic_memes
from tests.conftest import tree_digests

SCALE = 0.2  # 100 train, 20 dev, 20 test memes: about 2 s a set


def _rows(path):
    with open(path, newline="", encoding="utf-8") as handle:  # strict UTF-8: a bad byte fails here
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    missing = realistic_memes.missing_sources()
    assert not missing, f"not installed: {missing}; {realistic_memes.INSTALL_HINT}"
    root = tmp_path_factory.mktemp("realistic") / "memes"
    counts = demo.make_demo("memes", str(root), seed=0, scale=SCALE, kind="realistic")
    return root, counts


def test_layout_the_challenge_has(raw):
    root, counts = raw
    tables = {split: _rows(root / f"{split}.csv") for split in ("train", "dev", "test")}
    assert list(tables["train"][0]) == ["id", "img", "label", "text"] == list(tables["dev"][0])
    assert list(tables["test"][0]) == ["id", "img", "text"]  # no label column, as a competition's test file
    truth = _rows(root / "test_labels.csv")
    assert list(truth[0]) == ["id", "label"]
    assert [row["id"] for row in truth] == [row["id"] for row in tables["test"]]
    assert {split: len(rows) for split, rows in tables.items()} == {"train": 100, "dev": 20, "test": 20}
    assert (counts["train"], counts["dev"], counts["test"]) == (100, 20, 20)
    ids = [row["id"] for rows in tables.values() for row in rows]
    assert len(set(ids)) == len(ids) and all(len(meme_id) == 5 and meme_id.isdigit() for meme_id in ids)
    listed = [row["img"] for rows in tables.values() for row in rows]
    assert sorted(os.path.basename(path) for path in listed) == sorted(os.listdir(root / "img"))
    assert all(path == f"img/{meme_id}.{path.rsplit('.', 1)[1]}" for meme_id, path in zip(ids, listed))
    assert {row["label"] for rows in (tables["train"], tables["dev"], truth) for row in rows} == {"0", "1"}


def test_images_decode_small_like_the_challenge(raw):
    root, _ = raw
    sizes, modes, formats = [], set(), set()
    for name in sorted(os.listdir(root / "img")):
        with Image.open(root / "img" / name) as image:
            image.load()
            sizes.append(image.size)
            modes.add(image.mode)
            formats.add(image.format)
    assert sizes.count((64, 64)) > 0.8 * len(sizes) and set(sizes) <= {(64, 64), (64, 48), (48, 64)}
    assert formats <= {"PNG", "JPEG"} and "PNG" in formats
    assert "RGB" in modes and modes <= {"RGB", "L", "RGBA"}


def test_labels_follow_the_rule_with_noise(raw):
    root, _ = raw
    manifest = _rows(root / "sources.csv")
    assert len(manifest) == 140
    for row in manifest:
        if row["edge"] == "empty":
            assert row["caption_group"] == "none" and row["rule_label"] == "0" and row["label"] == "0"
            continue
        assert int(row["rule_label"]) == realistic_memes.rule(row["picture_group"], row["caption_group"])
        assert int(row["label"]) == int(row["rule_label"]) ^ int(row["noise"])
    labels = [int(row["label"]) for row in manifest]
    assert 0.3 <= np.mean(labels) <= 0.45
    assert 0.05 <= np.mean([int(row["noise"]) for row in manifest]) <= 0.15
    truth = {row["id"]: row["label"] for row in _rows(root / "test_labels.csv")}
    assert truth == {row["id"]: row["label"] for row in manifest if row["split"] == "test"}
    # every group is hateful in two of its four pairings
    for picture in realistic_memes.PICTURE_GROUPS:
        assert sum(realistic_memes.rule(picture, caption) for caption in realistic_memes.CAPTION_GROUPS) == 2
    for caption in realistic_memes.CAPTION_GROUPS:
        assert sum(realistic_memes.rule(picture, caption) for picture in realistic_memes.PICTURE_GROUPS) == 2


def test_neither_picture_nor_caption_alone_decides(raw):
    """Logistic regression on the true groups: either one alone is near chance, their pair is not."""
    root, _ = raw
    manifest = _rows(root / "sources.csv")
    labels = np.array([int(row["label"]) for row in manifest])
    folds = StratifiedKFold(5, shuffle=True, random_state=0)

    def auroc(features):
        encoded = OneHotEncoder().fit_transform(features)
        scores = cross_val_predict(LogisticRegression(max_iter=1000), encoded, labels, cv=folds,
                                   method="predict_proba")[:, 1]
        return roc_auc_score(labels, scores)

    picture = auroc([[row["picture_group"]] for row in manifest])
    caption = auroc([[row["caption_group"]] for row in manifest])
    both = auroc([[row["picture_group"] + "|" + row["caption_group"]] for row in manifest])
    assert picture < 0.62 and caption < 0.62, (picture, caption)
    assert both > 0.8, both


def test_twins_are_benign_confounders(raw):
    root, _ = raw
    manifest = {row["id"]: row for row in _rows(root / "sources.csv")}
    twins = [row for row in manifest.values() if row["twin_of"]]
    assert len(twins) >= 10 and {row["twin_kind"] for row in twins} == {"picture", "caption"}
    for twin in twins:
        original = manifest[twin["twin_of"]]
        assert original["split"] == twin["split"]
        assert (original["rule_label"], twin["rule_label"]) == ("1", "0")
        if twin["twin_kind"] == "picture":  # the same picture, a caption of the other side
            assert twin["picture_sources"] == original["picture_sources"]
            assert twin["caption_group"] != original["caption_group"]
        else:  # the same sentence over a picture of the other side
            assert twin["caption_source"] == original["caption_source"]
            assert twin["picture_group"] != original["picture_group"]


def test_splits_share_no_source_picture_or_sentence(raw):
    root, _ = raw
    manifest = _rows(root / "sources.csv")
    texts = {row["id"]: row["text"] for split in ("train", "dev", "test") for row in _rows(root / f"{split}.csv")}
    pictures = {split: set() for split in ("train", "dev", "test")}
    sentences = {split: set() for split in ("train", "dev", "test")}
    for row in manifest:
        pictures[row["split"]].update(row["picture_sources"].split(";"))
        if not row["edge"]:
            sentences[row["split"]].add(texts[row["id"]].lower().rstrip("."))
    for first, second in (("train", "dev"), ("train", "test"), ("dev", "test")):
        assert not pictures[first] & pictures[second], (first, second)
        assert not sentences[first] & sentences[second], (first, second)
    assert all(pictures.values()) and all(sentences.values())
    kinds = {row["picture_kind"] for row in manifest}
    assert {"photo", "emoji"} <= kinds


def test_robustness_rows(raw):
    root, _ = raw
    manifest = {row["id"]: row for row in _rows(root / "sources.csv")}
    rows = {split: _rows(root / f"{split}.csv") for split in ("train", "dev", "test")}
    for split, table in rows.items():
        assert sum(1 for row in table if row["text"] == "") == realistic_memes.EMPTY_CAPTIONS[split]
    edges = {manifest[row["id"]]["edge"]: row["text"] for row in rows["test"] if manifest[row["id"]]["edge"]}
    assert len(edges["long"]) > 5000
    unusual = edges["unicode"]
    assert any(unicodedata.bidirectional(char) in ("R", "AL") for char in unusual)  # Hebrew, Arabic
    assert any(unicodedata.combining(char) for char in unusual)
    assert any(ord(char) > 0xFFFF for char in unusual)  # emoji and other astral-plane characters
    assert "\u200d" in unusual  # a ZWJ emoji sequence


def test_the_cli_defaults_to_realistic_and_repeats_its_bytes(raw, tmp_path):
    root, _ = raw
    demo.main(["--task=memes", f"--out={tmp_path / 'cli'}", "--seed=0", f"--scale={SCALE}"])
    assert tree_digests(tmp_path / "cli") == tree_digests(root)
    demo.make_demo("memes", str(tmp_path / "other"), seed=1, scale=SCALE, kind="realistic")
    same = set(tree_digests(tmp_path / "other").items()) & set(tree_digests(root).items())
    assert not same


def test_make_demo_stays_generated_and_switching_kinds_leaves_no_stale_file(tmp_path):
    out = tmp_path / "switch"
    demo.make_demo("memes", str(out), seed=0, scale=0.05, kind="realistic")
    demo.make_demo("memes", str(out), seed=0, scale=0.05)  # the default: generated, as conftest uses
    assert not (out / "sources.csv").exists() and not (out / "test_labels.csv").exists()
    assert "label" in _rows(out / "test.csv")[0]  # the generated layout keeps test labels in test.csv
    listed = {os.path.basename(row["img"]) for split in ("train", "dev", "test") for row in _rows(out / f"{split}.csv")}
    assert listed == set(os.listdir(out / "img"))
    demo.make_demo("memes", str(out), seed=0, scale=0.05, kind="realistic")
    listed = {os.path.basename(row["img"]) for split in ("train", "dev", "test") for row in _rows(out / f"{split}.csv")}
    assert listed == set(os.listdir(out / "img"))
