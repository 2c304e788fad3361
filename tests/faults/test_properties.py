"""Property-based tests (hypothesis, derandomized profile in conftest.py): the CSV readers read
back any text a CSV writer can hold, and the tf.Example schema round-trips any record exactly."""

from __future__ import annotations

import csv

import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st

from preprocess import csv_cells, readers, schema
from preprocess.writer import Item

# Any text: commas, quotes, newlines (\n, \r, \r\n), tabs, NUL, emoji, right-to-left scripts.
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
ODD = st.sampled_from([",", '"', "\n", "\r", "\r\n", "\t", "\ufeff", "\x00", "é", "🙂", "ש", " "])
CELL = st.lists(st.one_of(TEXT, ODD), max_size=4).map("".join)


@given(rows=st.lists(st.lists(CELL, min_size=3, max_size=3), max_size=8),
       bom=st.booleans(), crlf=st.booleans())
def test_csv_rows_reads_back_what_was_written(tmp_path_factory, rows, bom, crlf):
    """readers._csv_rows, under every reader: each data row comes back field for field, with
    or without a byte-order mark and CRLF line ends; rows that are blank are skipped by design."""
    path = tmp_path_factory.mktemp("csv") / "table.csv"
    with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as handle:
        # QUOTE_MINIMAL quotes a field holding a character of the line terminator only: with "\n"
        # line ends a bare "\r" would go out unquoted, a file no reader can read back. Quote all then.
        writer = csv.writer(handle, lineterminator="\r\n" if crlf else "\n",
                            quoting=csv.QUOTE_MINIMAL if crlf else csv.QUOTE_ALL)
        writer.writerow(["a", "b", "c"])
        writer.writerows(rows)
    header, data = readers._csv_rows(str(path), ("a", "b", "c"))
    assert header == ["a", "b", "c"]
    assert [fields for _, fields in data] == [row for row in rows if any(cell.strip() for cell in row)]


@given(captions=st.lists(CELL, min_size=1, max_size=6))
def test_memes_reader_keeps_any_caption(tmp_path_factory, captions):
    """read_memes on arbitrary captions: every row is an item (none dropped), its text the
    caption as written, stripped and at most MAX_CAPTION_CHARS long."""
    from tests.conftest import random_image

    raw = tmp_path_factory.mktemp("memes")
    (raw / "img").mkdir()
    random_image(0).save(raw / "img" / "a.png")
    with open(raw / "train.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "img", "label", "text"])
        writer.writerows((f"m{row}", "img/a.png", row % 2, caption) for row, caption in enumerate(captions))
    inventory = readers.read_memes(str(raw))
    assert not inventory.rejected and inventory.input_rows == len(captions)
    assert [item.text for item in inventory.labeled] == [
        caption.strip()[:readers.MAX_CAPTION_CHARS] for caption in captions]


@given(cell=st.one_of(CELL, st.sampled_from(["=1+1", "+a", "-a", "@a", "\ta", "\ra", "'a", "-0.5", "-1e3"])))
def test_neutralised_cells_restore_exactly_and_never_start_a_formula(cell):
    written = csv_cells.neutralize(cell)
    assert csv_cells.restore(written) == cell
    if written == cell:  # left alone: not a formula start, or a plain number
        assert not cell.startswith(csv_cells.FORMULA_STARTS) or float(cell) == float(cell)


INT64 = st.integers(-(2 ** 63), 2 ** 63 - 1)
FLOAT32 = st.floats(allow_nan=False, width=32)


@given(image=st.binary(max_size=64), image_format=TEXT, key=TEXT, index=INT64,
       labels=st.lists(INT64, max_size=5).map(tuple), text=TEXT,
       soft_labels=st.lists(FLOAT32, max_size=5).map(tuple))
def test_record_round_trips_through_tf_example(image, image_format, key, index, labels, text, soft_labels):
    """schema.serialize -> parse_record (eager) and -> schema.parse (the graph parser tf.data
    uses) give back exactly the record: keys and texts of any Unicode, any int64, float32s."""
    record = schema.Record(image=image, image_format=image_format, key=key, index=index,
                           labels=labels, text=text, soft_labels=soft_labels)
    serialized = schema.serialize(record)
    assert schema.parse_record(serialized) == record
    parsed = schema.parse(tf.constant(serialized))
    assert parsed["image_bytes"].numpy() == image
    assert parsed["key"].numpy().decode() == key and parsed["text"].numpy().decode() == text
    assert int(parsed["index"]) == index
    assert tuple(parsed["labels"].numpy().tolist()) == labels
    assert int(parsed["label"]) == (labels[0] if labels else -1)
    assert tuple(parsed["soft_labels"].numpy().tolist()) == soft_labels
    assert schema.serialize(schema.parse_record(serialized)) == serialized  # deterministic bytes


def test_item_fields_the_writer_serialises_are_the_records():
    """The writer copies Item.key/index/labels/text into a Record (preprocess/writer.py); guard
    that the round trip above covers every field it writes."""
    assert {"key", "index", "labels", "text"} <= {field for field in Item.__dataclass_fields__}
    assert {"key", "index", "labels", "text", "soft_labels", "image", "image_format"} == set(
        schema.Record.__dataclass_fields__)
