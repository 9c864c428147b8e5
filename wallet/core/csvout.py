"""CSV for finance exports: cells made safe for spreadsheets, rows written as UTF-8 bytes.

Formula injection (OWASP, "CSV Injection"): a spreadsheet evaluates a cell that begins
with `=`, `+`, `-` or `@` as a formula, and a leading tab or carriage return can hide
such a start. Every cell of every export, whatever its column, goes through `neutralise`,
which puts a single quote `'` in front of such a cell, so the spreadsheet shows it as
text. There is no exemption for "trusted" columns: an exemption is where an injected
value slips through once a column's contents change.

Amounts are plain decimal strings ("12.50") formatted by us from integer micros, and
the exports are shaped so that they are never negative: a transfer has a source, a
destination and a positive amount; a person's movements say in a separate column
whether money came in or went out. A negative figure that does reach a cell (none of
today's columns should produce one) is quoted like any other cell, `'-12.50`: text in
a spreadsheet rather than a number, which is safe and visibly odd, where leaving it bare
would make `-` an exemption to the rule.

Full-width forms of the four characters (U+FF1D, U+FF0B, U+FF0D, U+FF20) are quoted
too: some spreadsheet programs fold them to their ASCII forms on input, and a quote in
front of a cell that starts with one costs nothing.

Output is UTF-8 without a byte order mark, a header row first, RFC 4180 quoting (the
`csv` module's `excel` dialect: commas, quotes and line breaks inside a cell are quoted
and survive a round trip) and CRLF line endings.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence

# Cells are text; whole numbers (counts, token numbers) and None (empty) are accepted too.
Cell = str | int | None

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
QUOTE = "'"
ROWS_PER_CHUNK = 500


def neutralise(value: Cell) -> str:
    """Return a cell's text, quote-prefixed if a spreadsheet would read it as a formula."""
    text = "" if value is None else value if isinstance(value, str) else str(int(value))
    if text.startswith(FORMULA_STARTS):
        return QUOTE + text
    return text


def encode_rows(rows: Iterable[Sequence[Cell]]) -> bytes:
    """Write rows (every cell neutralised) as CSV, UTF-8 encoded."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, dialect="excel")
    for row in rows:
        writer.writerow([neutralise(cell) for cell in row])
    return buffer.getvalue().encode("utf-8")


def stream(header: Sequence[str], rows: Iterable[Sequence[Cell]], *,
           chunk: int = ROWS_PER_CHUNK) -> Iterator[bytes]:
    """Yield a CSV document in pieces: the header row first (always), then `chunk` rows
    at a time, so an export of any size holds one piece in memory, never the whole file."""
    yield encode_rows([header])
    pending: list[Sequence[Cell]] = []
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a row has {len(row)} cells, the header {len(header)}")
        pending.append(row)
        if len(pending) >= chunk:
            yield encode_rows(pending)
            pending = []
    if pending:
        yield encode_rows(pending)


def document(header: Sequence[str], rows: Iterable[Sequence[Cell]]) -> bytes:
    """Return a whole CSV document (small exports and tests)."""
    return b"".join(stream(header, rows))
