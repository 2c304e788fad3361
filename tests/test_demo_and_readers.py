"""Demo data makers (layout, determinism) and every reader on its own demo layout."""

from __future__ import annotations

import csv
import os

import pytest
import tensorflow as tf
from PIL import Image

from preprocess import demo, jobs, readers, schema, writer
from tests.conftest import tree_digests


def test_demo_is_deterministic_by_seed(tmp_path):
    for seed, name in ((0, "a"), (0, "b"), (1, "c")):
        demo.make_demo("stickers", str(tmp_path / name), seed=seed, scale=0.05)
    assert tree_digests(tmp_path / "a") == tree_digests(tmp_path / "b")
    assert tree_digests(tmp_path / "a") != tree_digests(tmp_path / "c")


def test_spam_demo_layout_has_gif_animation_corrupt_file_and_unlabeled(demo_root):
    test_files = readers.spam_test_files(str(demo_root))
    assert any(name.endswith(".gif") for name in test_files)
    assert getattr(Image.open(demo_root / "test" / "test_data" / "anim_0000.gif"), "n_frames", 1) > 1
    with pytest.raises(Exception):
        Image.open(demo_root / "test" / "test_data" / "corrupt_0000.jpg").load()
    with open(demo_root / "train" / "train_label", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["annotation"] for row in rows} == {"-1", "0", "1", "2", "3"}
    assert all((demo_root / "train" / "train_data" / row["filename"]).exists() for row in rows)


def test_demo_cli_writes_every_task(tmp_path, capsys):
    demo.main(["--task=all", f"--out={tmp_path}", "--scale=0.03"])
    assert sorted(os.listdir(tmp_path)) == sorted(demo.TASKS)
    assert "demo products" in capsys.readouterr().out


def _build(task, tmp_path, scale=0.1):
    raw = tmp_path / "raw"
    demo.make_demo(task, str(raw), seed=3, scale=scale)
    data_dir = tmp_path / "data"
    manifest = jobs.build(task, str(raw), str(data_dir), writer.ShardOptions(num_shards=2, workers=1),
                          log=lambda message: None)
    records = {split: [schema.parse_record(raw_record.numpy()) for raw_record in
                       tf.data.TFRecordDataset(writer.shard_paths(str(data_dir), split, manifest))]
               for split in manifest["splits"]}
    written = sum(split["records"] for split in manifest["splits"].values())
    assert written + manifest["rejected_rows"] == manifest["input_rows"]
    return raw, manifest, records


def test_stickers_reader_keeps_every_tag_with_the_first_as_main(tmp_path):
    raw, manifest, records = _build("stickers", tmp_path)
    assert manifest["multi_label"] and len(manifest["class_names"]) == 12
    assert manifest["class_names"][0] == "101" and manifest["extra"]["tag_names"][0] == "happy"
    with open(raw / "train" / "train_data" / "train_with_valid_tags.csv", newline="") as handle:
        truth = {f"{row['package_id']}/{row['sticker_id']}": [int(tag) - 101 for tag in row["tags"].split(",")]
                 for row in csv.DictReader(handle)}
    labeled = records["train"] + records["val"]
    assert len(labeled) == len(truth)
    assert all(list(record.labels) == truth[record.key] for record in labeled)
    assert [record.index for record in records["test"]] == list(range(len(records["test"])))
    pixels = schema.decode_image(tf.constant(records["train"][0].image)).numpy()
    assert (pixels[0, 0] == 255).all()  # transparent corner composited onto white


def test_memes_reader_uses_dev_as_validation_and_keeps_captions(tmp_path):
    raw, manifest, records = _build("memes", tmp_path)
    with open(raw / "dev.csv", newline="") as handle:
        dev = list(csv.DictReader(handle))
    assert [record.key for record in records["val"]] == [row["id"] for row in dev]
    assert [record.text for record in records["val"]] == [row["text"] for row in dev]
    assert manifest["splits"]["train"]["records"] == sum(1 for _ in open(raw / "train.csv")) - 1


def test_products_reader_rejects_the_malformed_row_and_keeps_target_categories(tmp_path):
    raw, manifest, records = _build("products", tmp_path)
    rejects = list(csv.DictReader(open(tmp_path / "data" / writer.REJECTS)))
    assert len(rejects) == 1 and "expected 10 fields, found 11" in rejects[0]["reason"]
    assert rejects[0]["source"].startswith("styles.csv:")
    assert manifest["extra"]["target_categories"] == list(demo.TARGET_CATEGORIES)
    assert manifest["class_names"] == sorted(demo.PRODUCT_CLASSES)
    assert all(record.labels == () and record.text for record in records["test"])
    assert all(record.text for record in records["train"])


def test_memes_unknown_label_and_missing_image_are_rejected(tmp_path):
    raw = tmp_path / "raw"
    demo.make_demo("memes", str(raw), seed=0, scale=0.05)
    with open(raw / "train.csv", "a") as handle:
        handle.write('99998,img/nothere.png,1,"no image"\n99999,img/00000.png,maybe,"bad label"\n')
    inventory = readers.read_memes(str(raw))
    reasons = {rejected.item: rejected.reason for rejected in inventory.rejected}
    assert reasons == {"img/nothere.png": "file not found", "99999": "unknown label 'maybe' (expected 0 or 1)"}


def test_memes_test_csv_without_labels_and_broken_captions_are_kept_and_counted(tmp_path):
    raw = tmp_path / "raw"
    (raw / "img").mkdir(parents=True)
    for name in ("a", "b", "c", "d"):
        Image.new("RGB", (8, 8), (10, 20, 30)).save(raw / "img" / f"{name}.png")
    (raw / "train.csv").write_bytes(
        b"id,img,label,text\n"
        b"a,img/a.png,1,caf\xe9 in latin-1 bytes\n"  # not valid UTF-8
        b"b,img/b.png,0,\n"  # empty caption
        + b"c,img/c.png,0," + b"long " * 1000 + b"\n")
    (raw / "test.csv").write_text("id,img,text\nd,img/d.png,no label column here\n")
    (raw / "test_labels.csv").write_text("id,label\nd,1\n")
    inventory = readers.read_memes(str(raw))
    assert inventory.rejected == [] and inventory.input_rows == 4
    texts = {item.key: item.text for item in inventory.labeled}
    assert "\ufffd" in texts["a"] and texts["b"] == "" and len(texts["c"]) == readers.MAX_CAPTION_CHARS
    assert inventory.fixed["test"][0].labels == (1,)  # from test_labels.csv
    notes = inventory.extra["notes"]
    assert any("1 caption(s) not valid UTF-8" in note for note in notes)
    assert any("1 caption(s) empty" in note for note in notes)
    assert any("truncated" in note for note in notes)
