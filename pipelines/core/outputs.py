"""Small pieces every task's `write_outputs` uses: CSV tables, and the rows preprocessing rejected
(so every input row still gets an output, and a reason where it got the fallback)."""

from __future__ import annotations

import csv
import os

from preprocess import writer


def write_csv(path: str, header, rows) -> None:
    with open(path, "w", newline="") as handle:
        table = csv.writer(handle)
        table.writerow(header)
        table.writerows(rows)


def test_rejections(data_dir: str, source_prefix: str) -> dict[str, str]:
    """item -> reason for the rows of rejects.csv whose source starts with `source_prefix`
    (the task's test metadata file or folder)."""
    path = os.path.join(data_dir, writer.REJECTS)
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as handle:
        return {row["item"]: row["reason"] for row in csv.DictReader(handle)
                if row["source"].startswith(source_prefix)}
