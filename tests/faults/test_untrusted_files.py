"""Untrusted files: a model file cannot run code when loaded, no loader in the code base can,
file names from CSVs cannot leave their root, and output CSVs cannot run as spreadsheet formulas.

(Third-party weights: models/torch_state.py resolves only an allowlist of pickle globals;
tests/test_efficientnet_lite.py::test_reader_refuses_a_pickle_that_would_run_code covers it.)"""

from __future__ import annotations

import csv
import os
import re

import keras
import pytest

from pipelines.core import outputs
from preprocess import csv_cells, readers
from tests.conftest import ROOT
from tests.faults.conftest import build

# --- model files ------------------------------------------------------------------------------------


def test_keras_file_with_a_lambda_layer_is_refused(tmp_path):
    """A .keras file whose Lambda layer would write a file when run: loading refuses it (Keras
    safe_mode, on by default) and the code never runs."""
    marker = tmp_path / "pwned"
    os.environ["FAULTS_MARKER"] = str(marker)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(
        # where a hostile file's lambda could do anything, this one leaves a marker file
        lambda x: x if open(__import__("os").environ["FAULTS_MARKER"], "w").close() is None else x)])
    model(keras.ops.zeros((1, 2)))  # the layer works, and would write the marker
    assert marker.exists()
    marker.unlink()
    path = tmp_path / "model.keras"
    model.save(path)
    with pytest.raises(ValueError, match="safe_mode"):
        keras.saving.load_model(path)
    assert not marker.exists()


UNSAFE = {
    r"safe_mode\s*=\s*False": "a Keras load with safe_mode off",
    r"enable_unsafe_deserialization": "Keras' global unsafe switch",
    r"allow_pickle\s*=\s*True": "numpy loading pickles",
    r"\bpickle\.loads?\(|\bcloudpickle\.|\bdill\.|\bjoblib\.load\(": "unpickling",
    r"\btorch\.load\(": "torch.load (a pickle)",
    r"\byaml\.load\(|\bmarshal\.loads?\(|\bshelve\.open\(": "a loader that can build objects",
    r"(?<![\w.])(eval|exec)\(": "eval/exec",
}


def test_no_loader_in_the_code_base_can_run_code_from_a_file():
    """Every module the pipelines, models, tuning and preprocessing ship: none calls a loader
    that runs code from its input. (models/torch_state.py subclasses pickle.Unpickler with an
    allowlist; that is the one pickle reader, tested in tests/test_efficientnet_lite.py.)"""
    found = []
    for package in ("pipelines", "models", "tuning", "preprocess"):
        for folder, _, names in os.walk(os.path.join(ROOT, package)):
            for name in names:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as handle:
                    for number, line in enumerate(handle, 1):
                        code = line.split("#", 1)[0]
                        for pattern, what in UNSAFE.items():
                            if re.search(pattern, code):
                                found.append(f"{os.path.relpath(path, ROOT)}:{number}: {what}")
    assert not found, "\n".join(found)


# --- file names from CSVs ---------------------------------------------------------------------------

def _outside(tmp_path, raw):
    """A real image outside the raw folder, so a row naming it is rejected for escaping, not for
    being missing."""
    from tests.conftest import random_image

    random_image(1).save(tmp_path / "outside.png")
    random_image(1).save(tmp_path / "outside.jpg")
    return os.path.relpath(tmp_path / "outside.png", raw)


def _reasons(data_dir) -> dict[str, str]:
    with open(os.path.join(data_dir, "rejects.csv"), newline="") as handle:
        return {csv_cells.restore(row["item"]): csv_cells.restore(row["reason"]) for row in csv.DictReader(handle)}


ESCAPES = "path escapes the raw data directory"


def test_spam_file_names_cannot_escape(make_raw, tmp_path):
    raw = make_raw("spam")
    label = raw / "train" / "train_label"
    _outside(tmp_path, raw)
    names = ["../../../outside.png", str(tmp_path / "outside.png"), "..", "./../../../outside.jpg"]
    label.write_text(label.read_text() + "".join(f"{name},0\n" for name in names))
    build("spam", raw, tmp_path / "data")
    reasons = _reasons(tmp_path / "data")
    assert all(reasons[name] == ESCAPES for name in names), reasons


def test_memes_image_paths_cannot_escape(make_raw, tmp_path):
    raw = make_raw("memes")
    _outside(tmp_path, raw)
    rows = [("e1", "../outside.png"), ("e2", str(tmp_path / "outside.png")), ("e3", "img/../../outside.png")]
    with open(raw / "train.csv", "a", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows((key, path, 0, "text") for key, path in rows)
    build("memes", raw, tmp_path / "data")
    reasons = _reasons(tmp_path / "data")
    assert all(reasons[path] == ESCAPES for _, path in rows), reasons


def test_products_ids_and_target_images_cannot_escape(make_raw, tmp_path):
    raw = make_raw("products")
    _outside(tmp_path, raw)
    with open(raw / "styles.csv", newline="") as handle:
        header = next(csv.reader(handle))
    style = {column: "x" for column in header}
    style.update(id="../../outside", subCategory="Watches")
    with open(raw / "styles.csv", "a", newline="") as handle:
        csv.DictWriter(handle, header, lineterminator="\n").writerow(style)
    with open(raw / "target" / "products.csv", "a", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(
            [("t1", "../../outside.png", "a text"), ("t2", str(tmp_path / "outside.png"), "a text")])
    build("products", raw, tmp_path / "data")
    reasons = _reasons(tmp_path / "data")
    assert reasons["../../outside.jpg"] == ESCAPES
    assert reasons["../../outside.png"] == ESCAPES and reasons[str(tmp_path / "outside.png")] == ESCAPES


def test_stickers_ids_cannot_name_a_path(make_raw, tmp_path):
    """Sticker files are images/<package_id>/<sticker_id>.png: an id with a slash is refused, and
    `..` alone cannot leave the layout (images/../..png stays under train_data)."""
    raw = make_raw("stickers")
    csv_path = raw / "train" / "train_data" / "train_with_valid_tags.csv"
    tag = (raw / "train" / "train_data" / "tag.tsv").read_text().splitlines()[1].split("\t")[0]
    rows = [("../../..", "outside", tag), ("1", "../../../../outside", tag), ("/tmp", "outside", tag), ("..", "..", tag)]
    with open(csv_path, "a", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)
    manifest = build("stickers", raw, tmp_path / "data")
    reasons = _reasons(tmp_path / "data")
    for package, sticker, _ in rows[:3]:
        assert reasons[f"{package}/{sticker}"] == "package_id and sticker_id must not contain '/'"
    assert reasons["images/../...png"] == "file not found"  # train_data/...png: inside the layout
    assert manifest["rejected_rows"] >= 4


# --- spreadsheet formulas in output CSVs ------------------------------------------------------------

def test_output_csv_cells_cannot_be_formulas(tmp_path):
    """OWASP CSV injection: text starting with = + - @ TAB CR is written with a leading quote;
    numbers (also "-0.5" as text) stay numbers; reading back with csv_cells.restore gives the
    original text."""
    cells = ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx", "'quoted",
             "plain.jpg", -0.5, "-0.5", 3, "1e-3", "-"]
    path = tmp_path / "table.csv"
    outputs.write_csv(str(path), ("cell",), [(cell,) for cell in cells])
    with open(path, newline="") as handle:
        written = [row[0] for row in csv.reader(handle)][1:]
    assert written[:7] == ["'" + cell for cell in cells[:7]]
    assert written[7:12] == ["plain.jpg", "-0.5", "-0.5", "3", "1e-3"]
    assert written[12] == "'-"
    assert [csv_cells.restore(cell) for cell in written] == [str(cell) for cell in cells]


def test_rejects_csv_neutralises_formulas_and_outputs_still_match_them(make_raw, tmp_path):
    """A test file named like a formula: rejects.csv quotes it, and the pipeline's reader of
    rejects.csv (outputs.test_rejections) still finds it under its real name."""
    raw = make_raw("spam")
    (raw / "test" / "test_data" / "=cmd.jpg").write_bytes(b"not an image")
    build("spam", raw, tmp_path / "data")
    with open(tmp_path / "data" / "rejects.csv", newline="") as handle:
        items = [row["item"] for row in csv.DictReader(handle)]
    assert "'=cmd.jpg" in items and "=cmd.jpg" not in items
    assert "=cmd.jpg" in outputs.test_rejections(str(tmp_path / "data"), "test/")


def test_every_task_writes_its_tables_through_write_csv():
    """So the neutralising above covers every task's output tables."""
    offenders = []
    for task in ("spam", "stickers", "memes", "products"):
        folder = os.path.join(ROOT, "pipelines", task)
        for name in os.listdir(folder):
            if name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf-8") as handle:
                    text = handle.read()
                if re.search(r"csv\.writer|csv\.DictWriter|\.to_csv\(", text):
                    offenders.append(f"pipelines/{task}/{name}")
    assert not offenders, offenders
