"""CSV cells a spreadsheet cannot run as formulas (CSV injection, OWASP "CSV Injection").

File names, ids and captions come from untrusted input and end up in rejects.csv and the tasks'
output tables, which people open in spreadsheets. A cell that starts with = + - @ TAB or CR is
a formula there (`=HYPERLINK(...)`, `@SUM(...)`), so it is written with a leading single quote,
as OWASP recommends; a spreadsheet shows such a cell as the plain text.

Exceptions and inverses, so that nothing is lost:
- numbers stay numbers: an int or float, or a string that is a plain decimal number such as
  "-0.5" or "-1" (a spreadsheet reads it as a number, never as a formula);
- a cell that itself starts with a quote gets one more, so `restore(neutralize(x)) == x` for every
  string x, and code that reads our own CSVs back (outputs.test_rejections) uses `restore`.
"""

from __future__ import annotations

import re

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_QUOTE = "'"
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def neutralize(value):
    """The cell to write for `value`: strings that a spreadsheet would evaluate get a quote."""
    if not isinstance(value, str):
        return value  # numbers, None, numpy scalars: csv writes their repr, never a formula
    if value.startswith(_QUOTE) or (value.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(value)):
        return _QUOTE + value
    return value


def restore(cell: str) -> str:
    """Inverse of `neutralize` for a cell read back from a CSV this project wrote."""
    return cell[1:] if cell.startswith(_QUOTE) else cell
