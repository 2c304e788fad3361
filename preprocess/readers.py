"""One reader per raw layout (../shared/TASKS.md): raw files -> writer.Inventory.

Readers only look at metadata and the file system (no decoding): each CSV row becomes an Item or a
Rejected with its file, line and reason. An Item's `index` is its row's position among the data
rows of its input (rejected rows counted), so outputs can be written in input order, with a
fallback in the rows of rejected items. A file that is malformed as a whole (missing, no header,
wrong columns) raises LayoutError naming the file and what was expected.
"""

from __future__ import annotations

import collections
import csv
import os
from typing import Iterator

from preprocess.writer import Inventory, Item, Rejected

SPAM_CLASSES = ("normal", "monotone", "screenshot", "unknown")
MEMES_CLASSES = ("not_hateful", "hateful")
UNLABELED = -1
_MAX_FIELD_CHARS = 1 << 30  # csv's per-field limit: a 100 MB caption is read (then truncated), not fatal


class LayoutError(ValueError):
    """The raw layout or one of its metadata files is not what the task expects."""


class _Rows:
    """Collects items and rejections for one reader so the accounting cannot drift."""

    def __init__(self, root: str):
        self.root = root
        self.rejected: list[Rejected] = []
        self.input_rows = 0
        self._seen: dict[str, str] = {}

    def reject(self, source: str, item: str, reason: str) -> None:
        self.rejected.append(Rejected(source, item, reason))

    def claim_key(self, source: str, key: str) -> bool:
        """False (and a rejection) when the key was already used by an earlier row."""
        if key in self._seen:
            self.reject(source, key, f"duplicate of {self._seen[key]}")
            return False
        self._seen[key] = source
        return True

    def image_path(self, source: str, base: str, relative: str) -> str | None:
        """The file under `base` that a row names, or None (and a rejection) if unusable."""
        if not relative:
            self.reject(source, relative, "empty image path")
            return None
        normalized = os.path.normpath(relative)
        if os.path.isabs(relative) or normalized == ".." or normalized.startswith(".." + os.sep):
            self.reject(source, relative, "path escapes the raw data directory")
            return None
        # Lexical only: a data folder symlinked to another disk is a normal layout; what must not
        # happen is a row naming a file outside the layout.
        path = os.path.join(base, normalized)
        if not os.path.isfile(path):
            self.reject(source, relative, "file not found")
            return None
        return path

    def source(self, path: str, line: int) -> str:
        return f"{os.path.relpath(path, self.root)}:{line}"


def _csv_rows(path: str, required: tuple[str, ...], delimiter: str = ",",
              exact: bool = False) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """Header check + (line number, fields) for every data row (line numbers as an editor shows)."""
    if not os.path.isfile(path):
        raise LayoutError(f"{path}: file not found (expected a table with columns {','.join(required)})")
    # Bytes that are not UTF-8 become U+FFFD instead of failing the whole file: a bad path then
    # rejects its own row (file not found), a bad caption is counted by its reader.
    handle = open(path, newline="", encoding="utf-8-sig", errors="replace")
    # csv's default 128 KiB field limit would end a whole job on one huge caption with a traceback;
    # readers truncate long texts themselves (MAX_CAPTION_CHARS) and say so in the manifest's notes.
    csv.field_size_limit(_MAX_FIELD_CHARS)
    reader = csv.reader(handle, delimiter=delimiter)
    try:
        header = [column.strip() for column in next(reader, [])]
    except csv.Error as error:
        handle.close()
        raise LayoutError(f"{path}:1: unreadable header ({error})") from None
    missing = [column for column in required if column not in header]
    if not header or missing or (exact and header != list(required)):
        handle.close()
        raise LayoutError(
            f"{path}: expected a header with the columns {delimiter.join(required)}"
            f"{' (exactly)' if exact else ''}, found {delimiter.join(header) or 'an empty file'}"
        )

    def rows():
        with handle:
            line = reader.line_num
            while True:
                try:
                    fields = next(reader)
                except StopIteration:
                    return
                except csv.Error as error:  # e.g. a field beyond _MAX_FIELD_CHARS
                    raise LayoutError(f"{path}:{line + 1}: {error}") from None
                start, line = line + 1, reader.line_num
                if not any(field.strip() for field in fields):
                    continue  # blank lines are not rows
                yield start, fields

    return header, rows()


def _fields(rows: _Rows, source: str, header: list[str], fields: list[str]) -> dict[str, str] | None:
    if len(fields) != len(header):
        rows.reject(source, ",".join(fields)[:80],
                    f"malformed row: expected {len(header)} fields, found {len(fields)}")
        return None
    return {column: value.strip() for column, value in zip(header, fields)}


def _int_label(value: str, allowed: range | set) -> int | None:
    try:
        label = int(value)
    except ValueError:
        return None
    return label if label in allowed else None


def read_spam(raw_dir: str) -> Inventory:
    """train/train_label (filename,annotation) + train/train_data/, test/test_data/ [+ test/test_label].

    annotation -1 rows go to the unlabeled split. Every file in test/test_data is a test row, in
    file-name order, labeled from test/test_label when that file exists.
    """
    rows = _Rows(raw_dir)
    label_path = os.path.join(raw_dir, "train", "train_label")
    train_dir = os.path.join(raw_dir, "train", "train_data")
    allowed = set(range(len(SPAM_CLASSES))) | {UNLABELED}
    labeled, unlabeled = [], []
    header, data = _csv_rows(label_path, ("filename", "annotation"), exact=True)
    for row, (line, fields) in enumerate(data):
        rows.input_rows += 1
        source = rows.source(label_path, line)
        values = _fields(rows, source, header, fields)
        if values is None:
            continue
        label = _int_label(values["annotation"], allowed)
        if label is None:
            rows.reject(source, values["filename"], f"unknown label {values['annotation']!r} "
                        "(expected 0 normal, 1 monotone, 2 screenshot, 3 unknown, -1 unlabeled)")
            continue
        path = rows.image_path(source, train_dir, values["filename"])
        if path is None or not rows.claim_key(source, values["filename"]):
            continue
        item = Item(source, path, values["filename"], () if label == UNLABELED else (label,), index=row)
        (unlabeled if label == UNLABELED else labeled).append(item)

    test = _spam_test_rows(raw_dir, rows, allowed)
    return Inventory(
        task="spam", class_names=SPAM_CLASSES, labeled=labeled,
        fixed={"test": test, "unlabeled": unlabeled}, rejected=rows.rejected,
        input_rows=rows.input_rows, metadata_files=_existing(label_path, _spam_test_label(raw_dir)),
    )


def _spam_test_label(raw_dir: str) -> str:
    return os.path.join(raw_dir, "test", "test_label")


def spam_test_files(raw_dir: str) -> list[str]:
    """The file names the submission must cover: every visible file in test/test_data, sorted."""
    test_dir = os.path.join(raw_dir, "test", "test_data")
    if not os.path.isdir(test_dir):
        return []
    return sorted(name for name in os.listdir(test_dir)
                  if not name.startswith(".") and os.path.isfile(os.path.join(test_dir, name)))


def _spam_test_rows(raw_dir: str, rows: _Rows, allowed: set) -> list[Item]:
    test_dir = os.path.join(raw_dir, "test", "test_data")
    names = spam_test_files(raw_dir)
    truth: dict[str, int] = {}
    label_path = _spam_test_label(raw_dir)
    if os.path.exists(label_path):
        header, data = _csv_rows(label_path, ("filename", "annotation"), exact=True)
        present = set(names)
        for line, fields in data:
            source = rows.source(label_path, line)
            values = _fields(rows, source, header, fields)
            label = None if values is None else _int_label(values["annotation"], allowed)
            if values is not None and label is None:
                rows.reject(source, values["filename"], f"unknown label {values['annotation']!r}")
            elif values is not None and values["filename"] not in present:
                rows.reject(source, values["filename"], "listed in test_label but not in test/test_data")
            elif values is not None and values["filename"] in truth:
                rows.reject(source, values["filename"], "duplicate label row")
            elif values is not None:
                truth[values["filename"]] = label
                continue
            rows.input_rows += 1  # a label row that could not be merged into its file's row
    items = []
    for index, name in enumerate(names):
        rows.input_rows += 1
        label = truth.get(name, UNLABELED)
        items.append(Item(f"test/test_data/{name}", os.path.join(test_dir, name), name,
                          () if label == UNLABELED else (label,), index=index))
    return items


def read_stickers(raw_dir: str) -> Inventory:
    """train/train_data/{tag.tsv, train_with_valid_tags.csv, images/<package>/<sticker>.png}.

    Class index = the tag's row in tag.tsv; an item's labels are all its tags, the first being the
    main one (the test label). An optional test/test_data/{test.csv, images/} gives the test split.
    """
    rows = _Rows(raw_dir)
    train_dir = os.path.join(raw_dir, "train", "train_data")
    tag_path = os.path.join(train_dir, "tag.tsv")
    header, data = _csv_rows(tag_path, ("tag",), delimiter="\t")
    tags, tag_names = [], []
    for line, fields in data:
        values = dict(zip(header, (field.strip() for field in fields)))
        if not values.get("tag") or values["tag"] in tags:
            raise LayoutError(f"{tag_path}:{line}: empty or repeated tag id {values.get('tag')!r}")
        tags.append(values["tag"])
        tag_names.append(values.get("name", ""))
    tag_index = {tag: index for index, tag in enumerate(tags)}

    def read(csv_path: str, base: str, need_tags: bool) -> list[Item]:
        items = []
        header, data = _csv_rows(csv_path, ("package_id", "sticker_id") + (("tags",) if need_tags else ()))
        for row, (line, fields) in enumerate(data):
            rows.input_rows += 1
            source = rows.source(csv_path, line)
            values = _fields(rows, source, header, fields)
            if values is None:
                continue
            key = f"{values['package_id']}/{values['sticker_id']}"
            raw_tags = [tag.strip() for tag in values.get("tags", "").split(",") if tag.strip()]
            unknown = [tag for tag in raw_tags if tag not in tag_index]
            if unknown:
                rows.reject(source, key, f"unknown tag id(s) {','.join(unknown)} (not in tag.tsv)")
                continue
            if need_tags and not raw_tags:
                rows.reject(source, key, "no tags")
                continue
            if "/" in values["package_id"] or "/" in values["sticker_id"]:
                rows.reject(source, key, "package_id and sticker_id must not contain '/'")
                continue
            path = rows.image_path(source, base, os.path.join("images", key + ".png"))
            if path is None or not rows.claim_key(source, key):
                continue
            labels = tuple(dict.fromkeys(tag_index[tag] for tag in raw_tags))
            items.append(Item(source, path, key, labels, index=row, group=values["package_id"]))
        return items

    labeled = read(os.path.join(train_dir, "train_with_valid_tags.csv"), train_dir, need_tags=True)
    test_dir = os.path.join(raw_dir, "test", "test_data")
    test_csv = os.path.join(test_dir, "test.csv")
    test = read(test_csv, test_dir, need_tags=False) if os.path.exists(test_csv) else []
    return Inventory(
        task="stickers", class_names=tuple(tags), labeled=labeled, fixed={"test": test},
        rejected=rows.rejected, input_rows=rows.input_rows, multi_label=True,
        metadata_files=_existing(tag_path, os.path.join(train_dir, "train_with_valid_tags.csv"), test_csv),
        extra={"tag_names": tag_names},
    )


def stickers_test_keys(raw_dir: str) -> list[str]:
    """The key (`package_id/sticker_id`) of every data row of test/test_data/test.csv, in row order:
    the submission has one entry per row, whatever became of the row. A malformed row's key is
    its row number in brackets (no sticker can be named that)."""
    path = os.path.join(raw_dir, "test", "test_data", "test.csv")
    if not os.path.exists(path):
        return []
    header, data = _csv_rows(path, ("package_id", "sticker_id"))
    keys = []
    for row, (_, fields) in enumerate(data):
        values = dict(zip(header, (field.strip() for field in fields)))
        well_formed = len(fields) == len(header)
        keys.append(f"{values['package_id']}/{values['sticker_id']}" if well_formed else f"[row {row}]")
    return keys


MAX_CAPTION_CHARS = 2000  # far beyond any tokenizer's sequence length; keeps records small


def _caption(text: str, repairs: collections.Counter) -> str:
    """A meme caption or product text as stored: bytes that were not UTF-8 stay U+FFFD, a text
    longer than MAX_CAPTION_CHARS is truncated; each repair is counted for the manifest's notes
    (the row is still written, never dropped)."""
    if "\ufffd" in text:
        repairs["not valid UTF-8 (bytes replaced with U+FFFD)"] += 1
    if len(text) > MAX_CAPTION_CHARS:
        repairs[f"longer than {MAX_CAPTION_CHARS:,} characters (truncated)"] += 1
        text = text[:MAX_CAPTION_CHARS]
    if not text:
        repairs["empty"] += 1
    return text


def read_memes(raw_dir: str) -> Inventory:
    """train.csv [+ dev.csv as the validation split] [+ test.csv]; columns id,img,label,text.

    A shipped dev.csv is used as validation as it is (never the test file: the original system
    picked its threshold on test data). test.csv may have no label column (the competition's
    test files have none); its labels may come from an optional test_labels.csv (id,label).
    Captions that are empty, longer than MAX_CAPTION_CHARS (truncated) or not valid UTF-8
    (replaced with U+FFFD) are kept and counted in the manifest's notes.
    """
    rows = _Rows(raw_dir)
    splits: dict[str, list[Item]] = {}
    repairs = collections.Counter()
    test_truth = _memes_test_labels(raw_dir)
    for split, file_name in (("train", "train.csv"), ("val", "dev.csv"), ("test", "test.csv")):
        path = os.path.join(raw_dir, file_name)
        if split != "train" and not os.path.exists(path):
            continue
        header, data = _csv_rows(path, ("id", "img", "text") if split == "test" else ("id", "img", "label", "text"))
        items = splits.setdefault(split, [])
        for row, (line, fields) in enumerate(data):
            rows.input_rows += 1
            source = rows.source(path, line)
            values = _fields(rows, source, header, fields)
            if values is None:
                continue
            raw_label = values.get("label", test_truth.get(values["id"], "") if split == "test" else "")
            label = _int_label(raw_label, {0, 1})
            if label is None and not (split == "test" and raw_label == ""):
                rows.reject(source, values["id"], f"unknown label {raw_label!r} (expected 0 or 1)")
                continue
            image_path = rows.image_path(source, raw_dir, values["img"])
            if image_path is None or not rows.claim_key(source, values["id"]):
                continue
            text = _caption(values["text"], repairs)
            labels = () if label is None else (label,)
            items.append(Item(source, image_path, values["id"], labels, text, row))
    fixed = {split: items for split, items in splits.items() if split != "train"}
    notes = [f"{count} caption(s) {what}" for what, count in sorted(repairs.items())]
    return Inventory(
        task="memes", class_names=MEMES_CLASSES, labeled=splits["train"], fixed=fixed,
        rejected=rows.rejected, input_rows=rows.input_rows,
        metadata_files=_existing(*(os.path.join(raw_dir, name)
                                   for name in ("train.csv", "dev.csv", "test.csv", "test_labels.csv"))),
        extra={"notes": notes} if notes else {},
    )


def _memes_test_labels(raw_dir: str) -> dict[str, str]:
    """id -> label from test_labels.csv, when the test labels are shipped apart from test.csv."""
    path = os.path.join(raw_dir, "test_labels.csv")
    if not os.path.exists(path):
        return {}
    header, data = _csv_rows(path, ("id", "label"))
    return {values["id"]: values["label"] for values in
            (dict(zip(header, (field.strip() for field in fields))) for _, fields in data)}


def read_products(raw_dir: str) -> Inventory:
    """styles.csv (id, subCategory = label, productDisplayName = text) + images/<id>.jpg, and an
    optional target/ folder: products.csv (id,image,text) + categories.txt, which becomes the test
    split (the products to assign to target categories) with the category names in the manifest.
    Texts are kept like meme captions (_caption: truncated, U+FFFD, counted in the notes).
    """
    rows = _Rows(raw_dir)
    repairs = collections.Counter()
    styles = os.path.join(raw_dir, "styles.csv")
    header, data = _csv_rows(styles, ("id", "subCategory", "productDisplayName"))
    parsed = []
    for row, (line, fields) in enumerate(data):
        rows.input_rows += 1
        source = rows.source(styles, line)
        values = _fields(rows, source, header, fields)
        if values is None:
            continue
        if not values["subCategory"]:
            rows.reject(source, values["id"], "empty subCategory")
            continue
        path = rows.image_path(source, os.path.join(raw_dir, "images"), values["id"] + ".jpg")
        if path is None or not rows.claim_key(source, values["id"]):
            continue
        parsed.append((source, path, values, row))
    class_names = tuple(sorted({values["subCategory"] for _, _, values, _ in parsed}))
    class_index = {name: index for index, name in enumerate(class_names)}
    labeled = [Item(source, path, values["id"], (class_index[values["subCategory"]],),
                    _caption(values["productDisplayName"], repairs), row)
               for source, path, values, row in parsed]

    target_dir = os.path.join(raw_dir, "target")
    target_csv = os.path.join(target_dir, "products.csv")
    categories_path = os.path.join(target_dir, "categories.txt")
    test, extra = [], {}
    if os.path.isdir(target_dir):
        if not os.path.isfile(categories_path):
            raise LayoutError(f"{categories_path}: file not found (expected one target category per line)")
        with open(categories_path, encoding="utf-8-sig") as handle:
            extra["target_categories"] = [line.strip() for line in handle if line.strip()]
        header, data = _csv_rows(target_csv, ("id", "image", "text"))
        for row, (line, fields) in enumerate(data):
            rows.input_rows += 1
            source = rows.source(target_csv, line)
            values = _fields(rows, source, header, fields)
            if values is None:
                continue
            path = rows.image_path(source, target_dir, values["image"])
            if path is None or not rows.claim_key(source, "target/" + values["id"]):
                continue
            test.append(Item(source, path, values["id"], (), _caption(values["text"], repairs), row))
    notes = [f"{count} product text(s) {what}" for what, count in sorted(repairs.items())]
    if notes:
        extra["notes"] = notes
    return Inventory(
        task="products", class_names=class_names, labeled=labeled, fixed={"test": test},
        rejected=rows.rejected, input_rows=rows.input_rows,
        metadata_files=_existing(styles, target_csv, categories_path), extra=extra,
    )


READERS = {"spam": read_spam, "stickers": read_stickers, "memes": read_memes, "products": read_products}


def _existing(*paths: str) -> tuple[str, ...]:
    return tuple(path for path in paths if os.path.exists(path))
