"""Small pieces every task's `write_outputs` uses: CSV tables, and the rows preprocessing rejected
(so every input row still gets an output, and a reason where it got the fallback)."""

from __future__ import annotations

import csv
import os

from preprocess import csv_cells, writer


def write_csv(path: str, header, rows) -> None:
    """Writes a table whose text cells cannot run as spreadsheet formulas (preprocess/csv_cells.py:
    a cell starting with = + - @ TAB CR gets a leading quote; numbers, "-0.5" included, stay as
    they are)."""
    with open(path, "w", newline="") as handle:
        table = csv.writer(handle)
        table.writerow([csv_cells.neutralize(cell) for cell in header])
        table.writerows([csv_cells.neutralize(cell) for cell in row] for row in rows)


def test_rejections(data_dir: str, source_prefix: str) -> dict[str, str]:
    """item -> reason for the rows of rejects.csv whose source starts with `source_prefix`
    (the task's test metadata file or folder)."""
    path = os.path.join(data_dir, writer.REJECTS)
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as handle:
        return {csv_cells.restore(row["item"]): csv_cells.restore(row["reason"])
                for row in csv.DictReader(handle)
                if csv_cells.restore(row["source"]).startswith(source_prefix)}
