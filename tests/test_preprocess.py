"""Schema round trips, image normalisation, the sharded writer's guarantees and the spam reader."""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import tensorflow as tf
from PIL import Image

from preprocess import images, jobs, readers, schema, writer
from tests.conftest import encoded, random_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- image normalisation -------------------------------------------------------------------------

def _cmyk_jpeg():
    return encoded(random_image(1).convert("CMYK"), "JPEG")


def _png16():
    pixels = (np.arange(32 * 40, dtype=np.uint16).reshape(32, 40) * 50)
    return encoded(Image.fromarray(pixels), "PNG")


def _animated_gif():
    frames = [random_image(seed).convert("P") for seed in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


FORMATS = {
    "rgb_jpeg": lambda: encoded(random_image(0), "JPEG"),
    "gray_jpeg": lambda: encoded(random_image(0, mode="L"), "JPEG"),
    "cmyk_jpeg": _cmyk_jpeg,
    "rgba_png": lambda: encoded(random_image(2, mode="RGBA"), "PNG"),
    "png16": _png16,
    "animated_gif": _animated_gif,
}


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_every_format_becomes_rgb_that_tensorflow_decodes(kind):
    data, fmt = images.normalize_image_bytes(FORMATS[kind]())
    eager = schema.decode_image(tf.constant(data)).numpy()
    mapped = next(iter(tf.data.Dataset.from_tensors(data).map(schema.decode_image))).numpy()
    assert eager.shape == (32, 40, 3) and eager.dtype == np.uint8
    np.testing.assert_array_equal(eager, mapped)
    assert fmt in ("jpeg", "png")


def test_plain_jpeg_is_stored_untouched_and_others_losslessly():
    original = FORMATS["rgb_jpeg"]()
    assert images.normalize_image_bytes(original) == (original, "jpeg")
    gif = _animated_gif()
    data, fmt = images.normalize_image_bytes(gif)
    first_frame = np.asarray(Image.open(io.BytesIO(gif)).convert("RGB"))
    assert fmt == "png"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), first_frame)


def test_alpha_is_composited_onto_white_and_16_bit_is_scaled():
    transparent = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    data, _ = images.normalize_image_bytes(encoded(transparent, "PNG"))
    assert (schema.decode_image(tf.constant(data)).numpy() == 255).all()
    data, _ = images.normalize_image_bytes(_png16())
    decoded = schema.decode_image(tf.constant(data)).numpy()
    assert decoded.max() > 200  # scaled, not clipped to 255 everywhere or shifted to black
    assert len(np.unique(decoded)) > 100


def test_max_side_shrinks_keeping_aspect():
    data, _ = images.normalize_image_bytes(encoded(random_image(0, (200, 100)), "PNG"),
                                           images.ImageOptions(max_side=50))
    assert Image.open(io.BytesIO(data)).size == (50, 25)


@pytest.mark.parametrize("payload, reason", [
    (b"", "empty file"),
    (b"this is not an image", "not a recognised image format"),
])
def test_bad_bytes_raise_image_error(payload, reason):
    with pytest.raises(images.ImageError, match=reason):
        images.normalize_image_bytes(payload)


def test_truncated_and_oversized_images_are_rejected():
    whole = encoded(random_image(0, (64, 64)), "PNG")
    with pytest.raises(images.ImageError):
        images.normalize_image_bytes(whole[: len(whole) // 2])
    with pytest.raises(images.ImageError, match="decompression bomb"):
        images.normalize_image_bytes(whole, images.ImageOptions(max_pixels=64 * 64 - 1))


def test_schema_round_trip_eager_and_in_graph():
    record = schema.Record(image=b"\x89PNG...", image_format="png", key="a.png", index=7,
                           labels=(3, 1), text="caption, with comma")
    serialized = schema.serialize(record)
    assert schema.parse_record(serialized) == record
    parsed = next(iter(tf.data.Dataset.from_tensors(serialized).map(schema.parse)))
    assert parsed["image_bytes"].numpy() == record.image
    assert parsed["labels"].numpy().tolist() == [3, 1] and int(parsed["label"]) == 3
    unlabeled = schema.serialize(schema.Record(b"x", "png", "u", 0))
    assert int(schema.parse(tf.constant(unlabeled))["label"]) == -1


# --- a messy raw spam layout --------------------------------------------------------------------

BAD_ROWS = {
    "missing.jpg": "file not found",
    "../outside.jpg": "path escapes the raw data directory",
    "empty.jpg": "empty file",
    "truncated.png": "truncated or corrupt|cannot open",
    "text.jpg": "not a recognised image format",
    "huge.png": "decompression bomb",
}


def make_messy_spam(root, labeled=48, unlabeled=8):
    """A spam layout holding every supported format and every kind of bad row, with known truth."""
    train = root / "train" / "train_data"
    test = root / "test" / "test_data"
    train.mkdir(parents=True)
    test.mkdir(parents=True)
    rows = []
    for index in range(labeled + unlabeled):
        name = f"img_{index:03d}.jpg"
        (train / name).write_bytes(encoded(random_image(index), "JPEG"))
        rows.append((name, index % 4 if index < labeled else -1))
    for kind, make in FORMATS.items():
        name = f"fmt_{kind}.{'gif' if 'gif' in kind else 'jpg' if 'jpeg' in kind else 'png'}"
        (train / name).write_bytes(make())
        rows.append((name, 0))
    (train / "empty.jpg").write_bytes(b"")
    (train / "text.jpg").write_bytes(b"hello")
    (train / "truncated.png").write_bytes(encoded(random_image(0, (64, 64)), "PNG")[:200])
    (train / "huge.png").write_bytes(encoded(Image.new("L", (3000, 3000)), "PNG"))
    (root / "outside.jpg").write_bytes(encoded(random_image(0), "JPEG"))
    rows += [(name, 1) for name in BAD_ROWS]
    lines = ["filename,annotation"] + [f"{name},{label}" for name, label in rows]
    lines += ["img_000.jpg,2", "img_001.jpg,7", "img_002.jpg", "img_003.jpg,monotone"]
    (root / "train" / "train_label").write_text("\n".join(lines) + "\n")
    for index in range(5):
        (test / f"t{index}.jpg").write_bytes(encoded(random_image(100 + index), "JPEG"))
    (test / "t5.gif").write_bytes(_animated_gif())
    (test / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    test_rows = [f"t{index}.jpg,{index % 4}" for index in range(5)] + ["t5.gif,1", "broken.jpg,0",
                                                                       "ghost.jpg,2"]
    (root / "test" / "test_label").write_text("filename,annotation\n" + "\n".join(test_rows) + "\n")
    return root


OPTIONS = writer.ShardOptions(num_shards=3, workers=1, max_pixels=4_000_000)


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    root = make_messy_spam(tmp_path_factory.mktemp("messy"))
    data_dir = tmp_path_factory.mktemp("messy_shards")
    logs = []
    manifest = jobs.build("spam", str(root), str(data_dir), OPTIONS, log=logs.append)
    return root, data_dir, manifest, logs


def _records(data_dir, split):
    paths = writer.shard_paths(str(data_dir), split)
    return [schema.parse_record(raw.numpy()) for raw in tf.data.TFRecordDataset(paths)]


def _rejects(data_dir):
    with open(os.path.join(data_dir, writer.REJECTS)) as handle:
        return list(csv.DictReader(handle))


def test_every_bad_row_is_rejected_with_its_reason_and_counts_add_up(messy):
    root, data_dir, manifest, logs = messy
    by_item = {row["item"]: row for row in _rejects(data_dir)}
    for item, reason in BAD_ROWS.items():
        assert item in by_item, item
        assert re.search(reason, by_item[item]["reason"]), by_item[item]
    reasons = [row["reason"] for row in _rejects(data_dir)]
    assert any("duplicate of train/train_label:2" in reason for reason in reasons)
    assert any("unknown label '7'" in reason for reason in reasons)
    assert any("unknown label 'monotone'" in reason for reason in reasons)
    assert any("expected 2 fields, found 1" in reason for reason in reasons)
    assert by_item["ghost.jpg"]["reason"] == "listed in test_label but not in test/test_data"
    assert by_item["broken.jpg"]["source"] == "test/test_data/broken.jpg"
    written = sum(split["records"] for split in manifest["splits"].values())
    assert written + len(reasons) == manifest["input_rows"]
    assert manifest["rejected_rows"] == len(reasons)
    assert f"{manifest['input_rows']} input rows = {written} written" in logs[-1]


def test_round_trip_keeps_bytes_labels_and_test_order(messy):
    root, data_dir, manifest, _ = messy
    records = {record.key: record for split in ("train", "val") for record in _records(data_dir, split)}
    truth = dict(line.split(",") for line in (root / "train" / "train_label").read_text().split()[1:49])
    for index in range(48):
        name = f"img_{index:03d}.jpg"
        assert records[name].image == (root / "train" / "train_data" / name).read_bytes()
        assert records[name].labels == (int(truth[name]),)
    assert len(_records(data_dir, "unlabeled")) == 8
    assert all(record.labels == () for record in _records(data_dir, "unlabeled"))
    test = _records(data_dir, "test")
    assert [record.key for record in test] == ["t0.jpg", "t1.jpg", "t2.jpg", "t3.jpg", "t4.jpg", "t5.gif"]
    assert [record.index for record in test] == [1, 2, 3, 4, 5, 6]  # broken.jpg (index 0) rejected
    assert test[0].labels == (0,)


def test_split_is_stratified_and_train_is_shuffled(messy):
    _, data_dir, manifest, _ = messy
    val = manifest["splits"]["val"]["class_histogram"]
    train = manifest["splits"]["train"]["class_histogram"]
    for name in readers.SPAM_CLASSES:
        share = val[name] / (val[name] + train[name])
        assert 0.1 <= share <= 0.3, (name, share)
    labels = [record.labels[0] for record in _records(data_dir, "train")]
    assert labels != sorted(labels)


def test_same_input_gives_identical_shards_whatever_the_worker_count(messy, tmp_path):
    root, data_dir, manifest, _ = messy
    again = tmp_path / "again"
    jobs.build("spam", str(root), str(again), writer.ShardOptions(num_shards=3, workers=2,
                                                                  max_pixels=4_000_000),
               log=lambda message: None)
    for split in manifest["splits"]:
        for first, second in zip(writer.shard_paths(str(data_dir), split),
                                 writer.shard_paths(str(again), split)):
            assert open(first, "rb").read() == open(second, "rb").read()
    assert (data_dir / "manifest.json").read_text() == (again / "manifest.json").read_text()


def test_rerun_on_unchanged_input_is_skipped_and_a_change_rebuilds(messy, tmp_path):
    root, _, _, _ = messy
    data_dir = tmp_path / "data"
    quiet = lambda message: None
    first = jobs.build("spam", str(root), str(data_dir), OPTIONS, log=quiet)
    logs = []
    jobs.build("spam", str(root), str(data_dir), OPTIONS, log=logs.append)
    assert len(logs) == 1 and "up to date" in logs[0]
    changed = writer.ShardOptions(num_shards=2, workers=1, max_pixels=4_000_000)
    second = jobs.build("spam", str(root), str(data_dir), changed, log=quiet)
    assert second["fingerprint"] != first["fingerprint"]
    assert sorted(os.listdir(data_dir / "tfrecords")) == sorted(
        shard["file"] for split in second["splits"].values() for shard in split["shards"])


def test_interrupted_run_leaves_only_complete_shards_and_resumes(messy, tmp_path, monkeypatch):
    root, clean_dir, _, _ = messy
    data_dir = tmp_path / "data"
    calls = {"count": 0}
    real = images.load_images

    def interrupted(paths, options):
        calls["count"] += 1
        if calls["count"] == 3:
            raise KeyboardInterrupt
        return real(paths, options)

    monkeypatch.setattr(images, "load_images", interrupted)
    with pytest.raises(KeyboardInterrupt):
        jobs.build("spam", str(root), str(data_dir), OPTIONS, log=lambda message: None)
    monkeypatch.setattr(images, "load_images", real)
    shard_dir = data_dir / "tfrecords"
    finished = sorted(name for name in os.listdir(shard_dir) if name.endswith(".tfrecord"))
    progress = json.loads((shard_dir / "_progress.json").read_text())
    assert finished and sorted(progress["shards"]) == finished
    assert not glob.glob(str(shard_dir / "*.incomplete"))
    assert not (data_dir / "manifest.json").exists()
    logs = []
    jobs.build("spam", str(root), str(data_dir), OPTIONS, log=logs.append)
    assert any(f"resuming, {len(finished)} of" in line for line in logs)
    for name in os.listdir(clean_dir / "tfrecords"):
        assert (shard_dir / name).read_bytes() == (clean_dir / "tfrecords" / name).read_bytes()


def test_killed_worker_process_fails_clearly_and_rerun_finishes(tmp_path):
    raw = tmp_path / "raw"
    (raw / "train" / "train_data").mkdir(parents=True)
    rows = ["filename,annotation"]
    for index in range(240):
        image = Image.fromarray(np.full((384, 384, 3), index % 256, np.uint8))
        image.save(raw / "train" / "train_data" / f"{index}.png", compress_level=9)
        rows.append(f"{index}.png,{index % 4}")
    (raw / "train" / "train_label").write_text("\n".join(rows) + "\n")
    data_dir = tmp_path / "data"
    command = [sys.executable, "-m", "preprocess.spam", f"--raw_dir={raw}", f"--data_dir={data_dir}",
               "--workers=2", "--num_shards=4"]
    job = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    parent = psutil.Process(job.pid)
    deadline = time.monotonic() + 60
    victim = None
    while victim is None and time.monotonic() < deadline and job.poll() is None:
        # Direct children are the forkserver and resource tracker; the workers are forked below them.
        workers = [child for child in parent.children(recursive=True) if child.ppid() != job.pid]
        victim = workers[0] if workers else None
        time.sleep(0.02)
    assert victim is not None, "no worker process appeared"
    victim.send_signal(signal.SIGKILL)
    _, stderr = job.communicate(timeout=120)
    assert job.returncode != 0
    assert "worker process died" in stderr
    shard_dir = data_dir / "tfrecords"
    progress_file = shard_dir / "_progress.json"
    listed = json.loads(progress_file.read_text())["shards"] if progress_file.exists() else {}
    assert sorted(name for name in os.listdir(shard_dir) if name.endswith(".tfrecord")) == sorted(listed)
    rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "240 input rows = 240 written" in rerun.stdout


def test_malformed_label_file_names_the_file_and_the_expected_columns(tmp_path):
    (tmp_path / "train" / "train_data").mkdir(parents=True)
    (tmp_path / "train" / "train_label").write_text("name,label\na.jpg,0\n")
    with pytest.raises(readers.LayoutError, match=r"train_label: expected a header with the columns "
                                                  r"filename,annotation"):
        readers.read_spam(str(tmp_path))
    with pytest.raises(readers.LayoutError, match="file not found"):
        readers.read_spam(str(tmp_path / "nowhere"))


def test_cli_reports_layout_errors_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "preprocess.spam", f"--raw_dir={tmp_path}",
                             f"--data_dir={tmp_path / 'out'}"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert "error:" in result.stderr and "Traceback" not in result.stderr
    assert "train_label: file not found" in result.stderr


def test_symlinked_data_folder_is_followed(messy, tmp_path):
    root, _, manifest, _ = messy
    linked = tmp_path / "linked"
    (linked / "train").mkdir(parents=True)
    (linked / "train" / "train_data").symlink_to(root / "train" / "train_data")
    (linked / "train" / "train_label").write_text((root / "train" / "train_label").read_text())
    inventory = readers.read_spam(str(linked))
    assert len(inventory.labeled) == len(readers.read_spam(str(root)).labeled) > 0


def test_a_run_that_writes_nothing_says_why(tmp_path):
    (tmp_path / "train" / "train_data").mkdir(parents=True)
    (tmp_path / "train" / "train_label").write_text("filename,annotation\na.jpg,0\nb.jpg,1\n")
    logs = []
    manifest = jobs.build("spam", str(tmp_path), str(tmp_path / "data"), OPTIONS, log=logs.append)
    assert manifest["splits"] == {} and manifest["rejected_rows"] == 2
    assert "no row was written; most common reasons: file not found (2x)" in logs[-1]


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_serving_decode_composites_transparency_onto_white_like_preprocessing(mode):
    """A raw transparent sticker sent to the serving signature must look like its shard image."""
    rng = np.random.default_rng(3)
    channels = {"RGBA": 4, "LA": 2}[mode]
    pixels = rng.integers(0, 256, (12, 10, channels)).astype(np.uint8)
    pixels[:4, ..., -1] = 0  # fully transparent rows (their stored colour must not show)
    pixels[4:8, ..., -1] = 128  # half transparent
    raw = encoded(Image.fromarray(pixels, mode), "PNG")
    served = schema.decode_image(tf.constant(raw)).numpy()
    in_graph = next(iter(tf.data.Dataset.from_tensors(raw).map(schema.decode_image))).numpy()
    sharded, _ = images.normalize_image_bytes(raw)
    preprocessed = np.asarray(Image.open(io.BytesIO(sharded)))
    assert served.shape == (12, 10, 3) and served.dtype == np.uint8
    np.testing.assert_array_equal(served[:4], 255)  # transparent -> white
    assert np.abs(served.astype(int) - preprocessed.astype(int)).max() <= 1  # rounding only
    np.testing.assert_array_equal(served, in_graph)


def test_rows_with_groups_are_split_by_whole_groups():
    items = [writer.Item(f"s:{row}", "", f"k{row}", (row % 3,), group=f"package{row // 10}")
             for row in range(200)]
    inventory = writer.Inventory("stickers", ("a", "b", "c"), items, {}, [], len(items), ())
    for seed in range(3):
        splits = writer.split_rows(inventory, writer.ShardOptions(val_fraction=0.2, seed=seed))
        train_groups = {item.group for item in splits["train"]}
        val_groups = {item.group for item in splits["val"]}
        assert not train_groups & val_groups and len(val_groups) >= 1
        assert 30 <= len(splits["val"]) <= 50  # about 20% of 200 rows, in whole packages of 10
