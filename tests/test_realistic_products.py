"""The realistic products demo data: both layouts read_products reads (with only the deliberate
rejections), target category names that are not training classes, a many-to-one mapping that covers
every target category, the true labels, disjoint picture sources, the deliberate missing images,
truncated image and empty descriptions, the same bytes for the same seed, and the point of it: text
and picture each carry signal onto the target categories, and neither alone is perfect.

Needs the source packages of preprocess/realistic_products.py (REQUIRED there); without them these
tests fail and say what to install rather than pass unseen."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression, RidgeClassifier

from preprocess import demo, images, readers, realistic_products
from tests.conftest import tree_digests

SCALE = 0.25  # 200 training products, 37 target products: about 1 s a set
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STYLES_HEADER = ["id", "gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "year",
                 "usage", "productDisplayName"]


def _rows(path):
    with open(path, newline="", encoding="utf-8") as handle:  # strict UTF-8: a bad byte fails here
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    missing = realistic_products.missing_sources()
    assert not missing, f"not installed: {missing}; {realistic_products.INSTALL_HINT}"
    root = tmp_path_factory.mktemp("realistic") / "products"
    counts = demo.make_demo("products", str(root), seed=0, scale=SCALE, kind="realistic")
    sources = _rows(root / "sources.csv")
    return root, counts, sources


def test_both_layouts_and_the_metadata_beside_them(raw):
    root, counts, sources = raw
    with open(root / "styles.csv", newline="", encoding="utf-8") as handle:
        styles = list(csv.reader(handle))
    assert styles[0] == STYLES_HEADER
    assert counts["train"] == len(styles) - 1 == 201 and counts["classes"] == len(realistic_products.CLASSES) == 25
    products = _rows(root / "target" / "products.csv")
    assert list(products[0]) == ["id", "image", "text"] and len(products) == counts["target"] == 37
    labels = _rows(root / "target" / "labels.csv")
    assert list(labels[0]) == ["id", "category"]
    assert [row["id"] for row in labels] == [row["id"] for row in products]  # every target product, in order
    ids = [row["id"] for row in products]
    assert len(set(ids)) == len(ids) and all(row["image"] in (f"images/{row['id']}.jpg", f"images/{row['id']}.png")
                                             for row in products)
    with open(root / "target" / "categories.txt", encoding="utf-8") as handle:
        assert [line.strip() for line in handle if line.strip()] == list(realistic_products.TARGET_CATEGORIES)
    assert list(_rows(root / "class_map.csv")[0]) == ["subCategory", "target_category", "masterCategory",
                                                      "train_designs", "target_designs"]
    assert list(sources[0]) == list(realistic_products.MANIFEST_COLUMNS)
    assert Counter(row["split"] for row in sources) == {"train": 201, "target": 37}
    # every file on disk is listed, and only the deliberately missing ones are listed and absent
    on_disk = {f"images/{name}" for name in os.listdir(root / "images")} | \
        {f"target/images/{name}" for name in os.listdir(root / "target" / "images")}
    listed = {row["path"] for row in sources}
    assert on_disk <= listed and listed - on_disk == {row["path"] for row in sources if row["state"] == "missing"}
    for row in sources:
        if row["state"] in ("ok", "malformed_row"):
            with Image.open(root / row["path"]) as image:
                image.load()
                assert image.size in ([(60, 80)] if row["split"] == "train" else [(80, 80), (100, 75)])


def test_read_products_rejects_only_the_deliberate_rows(raw):
    root, counts, sources = raw
    inventory = readers.read_products(str(root))
    by_state = {state: [row for row in sources if row["state"] == state] for state in
                ("ok", "missing", "corrupt", "malformed_row")}
    missing_train = sorted(f"{row['id']}.jpg" for row in by_state["missing"] if row["split"] == "train")
    missing_target = sorted(f"images/{os.path.basename(row['path'])}" for row in by_state["missing"]
                            if row["split"] == "target")
    assert len(missing_train) == 2 and len(missing_target) == counts["target_without_image"] == 2
    reasons = sorted((reject.item, reject.reason) for reject in inventory.rejected)
    malformed = [(item, reason) for item, reason in reasons if reason.startswith("malformed row")]
    assert len(malformed) == 1 and "found 11" in malformed[0][1]
    assert sorted(item for item, reason in reasons if reason == "file not found") == sorted(missing_train +
                                                                                            missing_target)
    assert len(reasons) == 1 + len(missing_train) + len(missing_target)
    assert inventory.input_rows == 201 + 37
    assert inventory.class_names == tuple(sorted(cls.name for cls in realistic_products.CLASSES))
    assert len(inventory.labeled) == 201 - 1 - 2 and len(inventory.fixed["test"]) == 37 - 2
    assert inventory.extra["target_categories"] == list(realistic_products.TARGET_CATEGORIES)
    truth = {row["id"]: row["subCategory"] for row in sources if row["split"] == "train"}
    assert all(inventory.class_names[item.labels[0]] == truth[item.key] for item in inventory.labeled)
    texts = {row["id"]: row["text"] for row in _rows(root / "target" / "products.csv")}
    assert all(item.text == texts[item.key] for item in inventory.fixed["test"])
    # the truncated image reaches the test split and only it fails to decode
    outcomes = images.load_images([item.path for item in inventory.fixed["test"]], images.ImageOptions())
    failed = [item.key for item, outcome in zip(inventory.fixed["test"], outcomes) if isinstance(outcome, str)]
    assert failed == [row["id"] for row in by_state["corrupt"]]


def test_target_categories_are_other_names_with_a_many_to_one_mapping_and_true_labels(raw):
    root, _, sources = raw
    categories = list(realistic_products.TARGET_CATEGORIES)
    classes = [cls.name for cls in realistic_products.CLASSES]
    assert not {name.casefold() for name in categories} & {name.casefold() for name in classes}
    mapping = {row["subCategory"]: row["target_category"] for row in _rows(root / "class_map.csv")}
    assert mapping == realistic_products.class_map() and sorted(mapping) == sorted(classes)
    assert set(mapping.values()) == set(categories)  # every target category is reached
    assert max(Counter(mapping.values()).values()) >= 3 and len(categories) < len(classes)  # many-to-one
    labels = {row["id"]: row["category"] for row in _rows(root / "target" / "labels.csv")}
    target = [row for row in sources if row["split"] == "target"]
    assert all(labels[row["id"]] == mapping[row["subCategory"]] == row["target_category"] for row in target)
    assert set(labels.values()) == set(categories)  # each category has at least one target product
    train_classes = Counter(row["subCategory"] for row in sources if row["split"] == "train")
    assert set(train_classes) == set(classes) and min(train_classes.values()) >= 3
    assert train_classes.most_common(1)[0][1] >= 4 * min(train_classes.values())  # skewed, as the real file


def test_target_pictures_come_from_other_sources(raw):
    _, _, sources = raw
    designs = {split: {row["design"] for row in sources if row["split"] == split} for split in ("train", "target")}
    assert not designs["train"] & designs["target"]
    assert all(row["held_out"] == ("1" if row["split"] == "target" else "0") for row in sources)
    backgrounds = {split: {row["background"] for row in sources if row["split"] == split} - {"plain", "dark", "photo"}
                   for split in ("train", "target")}
    assert backgrounds["train"] and backgrounds["target"] and not backgrounds["train"] & backgrounds["target"]
    cat = realistic_products.catalogue()
    for cls in realistic_products.CLASSES:  # every class has designs on both sides, and they never mix
        held = [design for design in cat.designs[cls.name] if design.held_out]
        assert held and len(held) < len(cat.designs[cls.name])
    assert any(row["design_kind"] == "photo" for row in sources if row["split"] == "train")


def test_the_deliberate_gaps_leave_the_other_modality(raw):
    root, counts, sources = raw
    target = {row["id"]: row for row in sources if row["split"] == "target"}
    products = {row["id"]: row for row in _rows(root / "target" / "products.csv")}
    missing = [key for key, row in target.items() if row["state"] == "missing"]
    corrupt = [key for key, row in target.items() if row["state"] == "corrupt"]
    empty = [key for key, text in ((key, row["text"]) for key, row in products.items()) if not text]
    assert len(missing) == 2 and len(corrupt) == 1 and len(empty) == counts["target_empty_text"] == 2
    assert all(not (root / "target" / products[key]["image"]).exists() for key in missing)
    assert not set(empty) & set(missing + corrupt)  # each product keeps one usable modality
    assert all(products[key]["text"] for key in missing + corrupt)
    assert all(target[key]["text_style"] == "empty" for key in empty)
    # and some descriptions name no product at all: the picture must say what it is
    styles = Counter(row["text_style"] for row in sources)
    assert styles["vague"] >= 10


def test_target_descriptions_speak_another_vocabulary(raw):
    root, _, sources = raw
    with open(root / "styles.csv", newline="", encoding="utf-8") as handle:
        titles = [row[-1] for row in list(csv.reader(handle))[1:]]
    texts = [row["text"] for row in _rows(root / "target" / "products.csv") if row["text"]]
    words = lambda lines: Counter(word for line in lines for word in line.lower().replace(",", " ").split())  # noqa: E731
    train_words, target_words = words(titles), words(texts)
    assert np.mean([len(text.split()) for text in texts]) > 2 * np.mean([len(title.split()) for title in titles])
    new = [word for word in target_words if word not in train_words]
    assert len(new) > 0.6 * len(target_words)
    synonyms = {word for cls in realistic_products.CLASSES for phrase in cls.synonyms for word in phrase.split()}
    assert not synonyms & set(train_words) and synonyms & set(target_words)
    with open(root / "styles.csv", newline="", encoding="utf-8") as handle:  # Kaggle's base colours, by name
        assert all(fields[5] in fields[9] for fields in list(csv.reader(handle))[1:] if len(fields) == 10)


def _baselines(root, sources):
    """Target accuracy of text alone and of the picture alone, the majority share of the target
    categories, and the picture's 4-fold accuracy on the training classes. Text: a logistic regression
    on training titles' words; picture: a ridge classifier on 16x16 thumbnails (as good as a logistic
    regression there, and a hundred times faster); the class mapped through the TRUE mapping (an upper
    bound of that route); a row without the modality gets the most frequent target category."""
    mapping = realistic_products.class_map()
    train = [row for row in sources if row["split"] == "train" and row["state"] == "ok"]
    with open(root / "styles.csv", newline="", encoding="utf-8") as handle:
        titles = {fields[0]: fields[-1] for fields in list(csv.reader(handle))[1:] if len(fields) == 10}
    y = [row["subCategory"] for row in train]
    fallback = Counter(mapping[name] for name in y).most_common(1)[0][0]
    products = _rows(root / "target" / "products.csv")
    labels = {row["id"]: row["category"] for row in _rows(root / "target" / "labels.csv")}
    truth = np.array([labels[row["id"]] for row in products])
    words = CountVectorizer(binary=True).fit([titles[row["id"]] for row in train])
    text = LogisticRegression(max_iter=2000, C=3.0).fit(words.transform([titles[row["id"]] for row in train]), y)
    text_guess = [mapping[text.predict(words.transform([row["text"]]))[0]] if row["text"] else fallback
                  for row in products]

    def thumb(path):
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB").resize((16, 16), Image.Resampling.BILINEAR), np.float32).ravel() / 255

    pixels = np.stack([thumb(root / row["path"]) for row in train])
    mean, scale = pixels.mean(0), pixels.std(0) + 1e-6
    picture = RidgeClassifier(alpha=300.0).fit((pixels - mean) / scale, y)
    image_guess = []
    for row in products:
        try:
            vector = (thumb(root / "target" / row["image"]) - mean) / scale
            image_guess.append(mapping[picture.predict(vector[None])[0]])
        except OSError:  # missing or truncated
            image_guess.append(fallback)
    majority = Counter(truth).most_common(1)[0][1] / len(truth)
    folds = np.arange(len(y)) % 4
    y = np.array(y)
    within = np.mean([np.mean(RidgeClassifier(alpha=300.0).fit((pixels[folds != fold] - mean) / scale, y[folds != fold])
                              .predict((pixels[folds == fold] - mean) / scale) == y[folds == fold]) for fold in range(4)])
    return (float(np.mean(np.array(text_guess) == truth)), float(np.mean(np.array(image_guess) == truth)), majority,
            float(within))


def test_each_modality_carries_signal_and_neither_alone_is_enough(tmp_path):
    root = tmp_path / "products"
    demo.make_demo("products", str(root), seed=0, scale=0.5, kind="realistic")  # 400 training, 75 target
    text, picture, majority, within = _baselines(root, _rows(root / "sources.csv"))
    assert majority + 0.2 < text < 0.9  # the words say a lot, not everything
    # 16x16 pixels tell the training classes apart far better than chance (1/25; the largest is 0.1)
    # but not well, and carry little over to the new pictures of the target products: that takes an
    # image model that knows what things look like (ImageNet features + a linear classifier: ~0.45)
    assert 0.15 < within < 0.5 and 1 / 11 < picture < text


def test_same_seed_same_bytes_and_the_cli_defaults_to_realistic(raw, tmp_path):
    root, _, sources = raw
    demo.main(["--task=products", f"--out={tmp_path / 'cli'}", "--seed=0", f"--scale={SCALE}"])
    assert tree_digests(tmp_path / "cli") == tree_digests(root)
    demo.make_demo("products", str(tmp_path / "other"), seed=1, scale=SCALE, kind="realistic")
    assert _rows(tmp_path / "other" / "sources.csv") != sources
    same = set(tree_digests(tmp_path / "other").items()) & set(tree_digests(root).items())
    assert {name for name, _ in same} <= {"class_map.csv", os.path.join("target", "categories.txt")}


def test_make_demo_stays_generated_and_switching_kinds_leaves_no_stale_file(tmp_path):
    out = tmp_path / "switch"
    demo.make_demo("products", str(out), seed=0, scale=0.05, kind="realistic")
    demo.make_demo("products", str(out), seed=0, scale=0.25)  # the default: generated, as the tests use
    for name in ("sources.csv", "class_map.csv", os.path.join("target", "labels.csv")):
        assert not (out / name).exists()
    with open(out / "target" / "categories.txt", encoding="utf-8") as handle:
        assert [line.strip() for line in handle if line.strip()] == list(demo.TARGET_CATEGORIES)
    with open(out / "styles.csv", newline="", encoding="utf-8") as handle:
        ids = {fields[0] for fields in list(csv.reader(handle))[1:]}
    assert {name[:-4] for name in os.listdir(out / "images")} <= ids
    listed = {row["image"] for row in _rows(out / "target" / "products.csv")}
    assert {f"images/{name}" for name in os.listdir(out / "target" / "images")} == listed
    demo.make_demo("products", str(out), seed=0, scale=0.05, kind="realistic")  # and back
    listed = {row["path"] for row in _rows(out / "sources.csv")}
    assert {f"images/{name}" for name in os.listdir(out / "images")} <= listed
    assert {f"target/images/{name}" for name in os.listdir(out / "target" / "images")} <= listed


def test_the_maker_imports_no_tensorflow(tmp_path):
    code = ("import sys, numpy as np; from preprocess import realistic_products as maker; "
            f"maker.make_products({str(tmp_path / 'bare')!r}, np.random.default_rng(0), 0.05); "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'imported TensorFlow'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
