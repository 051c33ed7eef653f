"""CSV that a spreadsheet opens as data: every cell on one line, and none that starts a formula
(OWASP's CSV injection guidance). Tenant names and reasons reach these cells."""

from __future__ import annotations

import csv
import io

from auditor.reports.common import one_line

# What makes a spreadsheet read a cell as a formula when it starts it (OWASP's CSV injection
# guidance; its tab and carriage return, and NUL, are gone once the cell is on one line), with
# the full-width forms some spreadsheets also take.
_FORMULA_START = ("=", "+", "-", "@", "＝", "＋", "－", "＠")


def csv_cell(text: str) -> str:
    """A cell that a spreadsheet shows as text: on one line, with no control characters (a lone
    CR would also end the row for some readers), and with a single quote before a formula."""
    cell = one_line(text)
    return "'" + cell if cell.lstrip().startswith(_FORMULA_START) else cell


class CsvWriter:
    """csv.writer whose every cell passes `csv_cell`."""

    def __init__(self, out: io.StringIO) -> None:
        self._writer = csv.writer(out, lineterminator="\n")

    def writerow(self, row: list[str]) -> None:
        self._writer.writerow([csv_cell(cell) for cell in row])
