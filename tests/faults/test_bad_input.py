"""Bad input ends in one clear line, `error: ...` with exit status 2 (naming the file, row or flag),
or in a documented recovery; never a traceback, never a silently dropped row. Entry points run as
real processes on tiny generated data, only as far as the error."""

from __future__ import annotations

import csv
import json
import os

import pytest

from tests.conftest import run_module
from tests.faults.conftest import TASKS, build, records, shard_digests


def _pipeline(task, raw, workdir, *extra):
    return run_module(f"pipelines.{task}", ["--flagfile=smoke.flags", f"--raw_dir={raw}",
                                            f"--workdir={workdir}", *extra], timeout=300)


def _assert_user_error(result, *fragments):
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert error_lines, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in error_lines[-1], error_lines[-1]


# --- the workdir and the data_dir -----------------------------------------------------------------

def test_workdir_that_is_an_existing_file(make_raw, tmp_path):
    """Found 2026-11-29: a FileExistsError traceback from os.makedirs."""
    in_the_way = tmp_path / "workdir"
    in_the_way.write_text("not a folder")
    _assert_user_error(_pipeline("spam", make_raw("spam"), in_the_way), str(in_the_way), "existing file")


def test_workdir_that_cannot_be_created(make_raw, tmp_path):
    """Not writable: a path below a regular file fails for every user, root included (chmod does
    not stop root, and the suite may run as root)."""
    blocked = tmp_path / "a_file" / "workdir"
    (tmp_path / "a_file").write_text("")
    _assert_user_error(_pipeline("spam", make_raw("spam"), blocked), str(blocked), "cannot be created")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 0o500; covered by the path-below-a-file test")
def test_workdir_without_write_permission(make_raw, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        _assert_user_error(_pipeline("spam", make_raw("spam"), locked / "workdir"), "Permission denied")
    finally:
        locked.chmod(0o700)


def test_preprocessing_data_dir_that_is_a_file(make_raw, tmp_path):
    (tmp_path / "data").write_text("")
    result = run_module("preprocess.spam", [f"--raw_dir={make_raw('spam')}", f"--data_dir={tmp_path / 'data'}",
                                            "--workers=1"])
    _assert_user_error(result, str(tmp_path / "data"), "Not a directory")


def test_unknown_backbone(make_raw, tmp_path):
    """Found 2026-11-29: a ValueError traceback from models/backbones.get_spec."""
    result = _pipeline("spam", make_raw("spam"), tmp_path / "workdir", "--backbone=resnet9000")
    _assert_user_error(result, "unknown backbone 'resnet9000'", "resnet50v2")
    assert not os.path.exists(tmp_path / "workdir" / "data" / "manifest.json")  # failed before preprocessing


def test_flagfile_naming_an_unknown_flag(make_raw, tmp_path):
    """absl said "FATAL Flags parsing error" with exit status 1; now the flag and its flagfile."""
    flagfile = tmp_path / "typo.flags"
    flagfile.write_text("# a typo of --head_epochs\n--head_epoch=2\n")
    result = _pipeline("spam", make_raw("spam"), tmp_path / "workdir", f"--flagfile={flagfile}")
    _assert_user_error(result, "head_epoch", str(flagfile))


def test_preprocessing_unknown_flag():
    _assert_user_error(run_module("preprocess.memes", ["--raw_dir=x", "--data_dir=y", "--shards=3"]), "shards")


def test_workdir_of_another_task_is_refused(make_raw, tmp_path):
    """A memes run in a spam workdir would resume spam's checkpoints into a memes model: refused,
    naming what differs (the run record <workdir>/run.json)."""
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    (workdir / "run.json").write_text(json.dumps({"task": "spam", "format": 1}))
    _assert_user_error(_pipeline("memes", make_raw("memes"), workdir), "another task or version", "'spam'",
                       "'memes'")


def test_workdir_of_another_pipeline_version_is_refused(make_raw, tmp_path):
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    (workdir / "run.json").write_text(json.dumps({"task": "spam", "format": 0}))
    _assert_user_error(_pipeline("spam", make_raw("spam"), workdir), "format 0", "delete")


def test_workdir_from_before_run_records_with_foreign_flags_is_refused(make_raw, tmp_path):
    """An older workdir has flags.txt but no run.json: it is refused when its flags are not this
    task's (here a memes flags.txt, with --text_encoder, given to spam)."""
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    (workdir / "flags.txt").write_text("--backbone=tiny\n--text_encoder=tiny\n--noflip\n")
    _assert_user_error(_pipeline("spam", make_raw("spam"), workdir), "--text_encoder")


def test_empty_training_split(make_raw, tmp_path):
    """A label file with only its header: the job says there are no training records and where the
    reasons are (it used to complain about a missing validation split)."""
    raw = make_raw("spam")
    label = raw / "train" / "train_label"
    label.write_text(label.read_text().splitlines()[0] + "\n")
    _assert_user_error(_pipeline("spam", raw, tmp_path / "workdir"), "no training records", "rejects.csv")


def test_class_without_examples_trains_and_says_so(make_raw, tmp_path):
    """No monotone rows at all: the run completes, warns, and still predicts every test file."""
    raw = make_raw("spam")
    label = raw / "train" / "train_label"
    kept = [line for line in label.read_text().splitlines() if not line.endswith(",1")]
    label.write_text("\n".join(kept) + "\n")
    result = _pipeline("spam", raw, tmp_path / "workdir", "--head_epochs=1", "--full_epochs=0",
                       "--steps_per_epoch=1")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "no training examples (monotone)" in result.stdout
    with open(tmp_path / "workdir" / "submission.csv", newline="") as handle:
        submitted = [row["filename"] for row in csv.DictReader(handle)]
    assert sorted(submitted) == sorted(os.listdir(raw / "test" / "test_data"))


# --- what readers make of odd files (every task's reader, in this process) ---------------------------

LABEL_FILES = {"spam": ["train/train_label"],
               "stickers": ["train/train_data/train_with_valid_tags.csv", "train/train_data/tag.tsv",
                            "test/test_data/test.csv"],
               "memes": ["train.csv", "dev.csv", "test.csv"],
               "products": ["styles.csv", "target/products.csv"]}


@pytest.mark.parametrize("task", TASKS)
def test_label_files_with_bom_and_crlf_give_the_same_shards(task, make_raw, tmp_path):
    """Files saved by Excel on Windows (UTF-8 byte-order mark, CRLF line ends) read the same."""
    raw = make_raw(task)
    build(task, raw, tmp_path / "plain")
    for name in LABEL_FILES[task]:
        path = raw / name
        text = path.read_bytes().decode("utf-8").replace("\r\n", "\n")
        path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    build(task, raw, tmp_path / "windows")
    assert shard_digests(tmp_path / "windows") == shard_digests(tmp_path / "plain")
    assert (tmp_path / "windows" / "rejects.csv").read_bytes() == (tmp_path / "plain" / "rejects.csv").read_bytes()


def _first_data_row(path, column, value):
    """Rewrites `column` of the first data row of a CSV file (bytes, so `value` may be any bytes)."""
    lines = path.read_bytes().split(b"\n")
    header = lines[0].decode().split(",")
    fields = next(csv.reader([lines[1].decode()]))
    fields[header.index(column)] = "\0"
    row = ",".join('"%s"' % field.replace('"', '""') for field in fields).encode()
    lines[1] = row.replace(b"\0", value)
    path.write_bytes(b"\n".join(lines))
    return fields[header.index("id")]


TEXT_COLUMNS = {"memes": ("train.csv", "text"), "products": ("styles.csv", "productDisplayName")}


@pytest.mark.parametrize("task", sorted(TEXT_COLUMNS))
@pytest.mark.parametrize("kind", ["not_utf8", "100_mb"])
def test_odd_caption_is_written_repaired_and_noted(task, kind, make_raw, tmp_path):
    """A caption with bytes that are not UTF-8, or of 100 MB (csv's 128 KiB field limit used to
    end the job with a traceback): the row is written, its text repaired (U+FFFD) or truncated
    to MAX_CAPTION_CHARS, and the manifest's notes count it. Nothing is dropped."""
    from preprocess import readers

    raw = make_raw(task)
    file_name, column = TEXT_COLUMNS[task]
    value = b"caf\xe9 \xff ok" if kind == "not_utf8" else b"x" * (100 * 1024 * 1024)
    key = _first_data_row(raw / file_name, column, value)
    manifest = build(task, raw, tmp_path / "data")
    assert manifest["input_rows"] == manifest["rejected_rows"] + sum(
        split["records"] for split in manifest["splits"].values())
    notes = " ".join(manifest["extra"]["notes"])
    assert ("not valid UTF-8" if kind == "not_utf8" else "truncated") in notes
    found = [record for path in sorted((tmp_path / "data" / "tfrecords").glob("*.tfrecord"))
             for record in records(path) if record.key == key]
    assert len(found) == 1, f"row {key} not written"
    expected = "caf\ufffd \ufffd ok" if kind == "not_utf8" else "x" * readers.MAX_CAPTION_CHARS
    assert found[0].text == expected


def test_non_utf8_file_name_is_rejected_with_its_line(make_raw, tmp_path):
    """spam and stickers have no text column: bytes that are not UTF-8 in a file name reject that
    row (with file and line), the other rows are written."""
    raw = make_raw("spam")
    label = raw / "train" / "train_label"
    label.write_bytes(label.read_bytes() + b"bad\xff\xfe.jpg,0\n")
    line = label.read_bytes().count(b"\n")
    build("spam", raw, tmp_path / "data")
    with open(tmp_path / "data" / "rejects.csv", newline="") as handle:
        rejected = {row["source"]: row for row in csv.DictReader(handle)}
    assert rejected[f"train/train_label:{line}"]["reason"] == "file not found"


def test_header_only_split_files_are_not_an_error_for_the_job(make_raw, tmp_path):
    """An empty dev/test file is a split with no rows: preprocessing writes what there is and
    accounts for every row (the pipeline, not the job, decides that training needs rows)."""
    raw = make_raw("memes")
    for name in ("dev.csv", "test.csv"):
        (raw / name).write_text((raw / name).read_text().splitlines()[0] + "\n")
    manifest = build("memes", raw, tmp_path / "data")
    assert set(manifest["splits"]) == {"train", "val"}  # the writer's own split replaces the empty dev
    assert manifest["input_rows"] == manifest["rejected_rows"] + sum(
        split["records"] for split in manifest["splits"].values())
