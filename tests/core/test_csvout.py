"""CSV exports: formula injection neutralised, and every cell survives a round trip."""

from __future__ import annotations

import csv
import io

import pytest

from wallet.core.csvout import document, encode_rows, neutralise, stream
from wallet.core.money import format_amount


def read_back(data: bytes) -> list[list[str]]:
    """Parse exported bytes as a spreadsheet or a script would (UTF-8, RFC 4180)."""
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


@pytest.mark.parametrize("cell", [
    "=1+1", "=HYPERLINK(\"http://evil.example\",\"x\")", "+1", "-1", "@SUM(A1:A2)",
    "\t=1", "\r=1", "\tplain", "\rplain", "-", "=", "\uff1d1+1", "\uff0b1", "\uff0d1", "\uff20A1",
    "=cmd|' /C calc'!A0",
])
def test_a_cell_a_spreadsheet_would_evaluate_is_quoted(cell: str) -> None:
    assert neutralise(cell) == "'" + cell
    assert read_back(encode_rows([[cell]])) == [["'" + cell]]


@pytest.mark.parametrize("cell", [
    "", "plain", "12.50", "0.000001", "ada@example.test", " =1", "a=b", "'already",
    "naïve café 日本語 🚀", "wallet:ada@example.test", "{\"k\": \"=v\"}", "2026-12-07",
    "payable:https://globex.example",
])
def test_any_other_cell_is_left_as_it_is(cell: str) -> None:
    assert neutralise(cell) == cell


def test_numbers_and_empty_cells() -> None:
    assert neutralise(None) == ""
    assert neutralise(0) == "0"
    assert neutralise(42) == "42"
    assert neutralise(-3) == "'-3"


def test_negative_amounts_are_text_not_formulas() -> None:
    """The rule has no exemption: a negative amount is quoted like any other `-` cell."""
    assert neutralise(format_amount(-12_500_000)) == "'-12.50"
    assert neutralise(format_amount(12_500_000)) == "12.50"


@pytest.mark.parametrize("cell", [
    "comma, inside", 'a "quoted" word', "line\nbreak", "crlf\r\ninside", "trailing\r",
    '"', ",", "\n", "日本語,\"x\"\n=1", "tab\tinside",
])
def test_commas_quotes_and_line_breaks_round_trip(cell: str) -> None:
    assert read_back(encode_rows([["before", cell, "after"]])) == [["before", cell, "after"]]


def test_header_first_and_utf8_without_bom() -> None:
    data = document(["when", "who"], [["2026-12-07", "zoë@example.test"]])
    assert data.startswith(b"when,who\r\n")
    assert not data.startswith(b"\xef\xbb\xbf")
    assert read_back(data) == [["when", "who"], ["2026-12-07", "zoë@example.test"]]


def test_an_empty_export_still_has_its_header() -> None:
    assert read_back(document(["a", "b"], [])) == [["a", "b"]]


def test_stream_yields_bounded_pieces_in_order() -> None:
    rows = ([str(i), f"=x{i}"] for i in range(1234))
    pieces = list(stream(["n", "v"], rows, chunk=100))
    assert len(pieces) == 1 + 13  # the header, then 12 full pieces and one of 34 rows
    parsed = read_back(b"".join(pieces))
    assert parsed[0] == ["n", "v"] and len(parsed) == 1235
    assert parsed[1] == ["0", "'=x0"] and parsed[-1] == ["1233", "'=x1233"]


def test_stream_is_lazy() -> None:
    def rows() -> object:
        yield ["1"]
        raise AssertionError("read past the first piece")

    pieces = stream(["n"], rows(), chunk=1)  # type: ignore[arg-type]
    assert next(pieces) == b"n\r\n"
    assert next(pieces) == b"1\r\n"


def test_a_row_of_the_wrong_width_is_refused() -> None:
    with pytest.raises(ValueError, match="2 cells"):
        document(["a"], [["x", "y"]])
