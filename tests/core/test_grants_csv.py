"""Bulk-grant CSV parsing: all or nothing, every problem named by its line."""

from __future__ import annotations

import time
from datetime import date

import pytest

from wallet.core.errors import RowsInvalid
from wallet.core.grants_csv import MAX_REPORTED, GrantRow, check_grants_csv, parse_grants_csv
from wallet.core.vesting import Schedule

TODAY = date(2025, 6, 1)
HEADER = "email,amount,start,cliff_months,every,months"
HEADER_RULE = "header must be exactly: email,amount,start,cliff_months,every,months"
NOT_ADDRESS = "is not an address such as ada@example.com"
NOT_DECIMAL = "is not a plain decimal with at most six fraction digits"


def csv_text(*rows: str, newline: str = "\n") -> str:
    return newline.join([HEADER, *rows]) + newline


def problems_of(text: str, **kwargs: int) -> list[tuple[int, str]]:
    with pytest.raises(RowsInvalid) as caught:
        parse_grants_csv(text, today=TODAY, **kwargs)
    assert caught.value.code == "malformed"
    return caught.value.problems


GOOD_ROWS = (
    "ada@example.com,1000,,,,",
    " Bob@Example.COM ,250.50,2025-01-15,,,",
    "carol@example.com,0.000001,2024-12-31,0,,0",
    "dan@example.com,48000.00,2025-01-15,12,month,48",
    "erin@example.com,12000,,,month,12",
    "frank@example.com,4000,2025-01-01,7,quarter,12",
    "grace@example.com,4000,2025-01-01,,quarter,12",
    '"heidi@example.com","1.5","2025-03-01","","month","3"',
)
GOOD_PARSED = [
    GrantRow(2, "ada@example.com", 1_000_000_000, Schedule(start=TODAY)),
    GrantRow(3, "bob@example.com", 250_500_000, Schedule(start=date(2025, 1, 15))),
    GrantRow(4, "carol@example.com", 1, Schedule(start=date(2024, 12, 31))),
    GrantRow(
        5,
        "dan@example.com",
        48_000_000_000,
        Schedule(start=date(2025, 1, 15), cliff_months=12, every="month", months=48),
    ),
    GrantRow(
        6, "erin@example.com", 12_000_000_000, Schedule(start=TODAY, every="month", months=12)
    ),
    GrantRow(
        7,
        "frank@example.com",
        4_000_000_000,
        Schedule(start=date(2025, 1, 1), cliff_months=7, every="quarter", months=12),
    ),
    GrantRow(
        8,
        "grace@example.com",
        4_000_000_000,
        Schedule(start=date(2025, 1, 1), every="quarter", months=12),
    ),
    GrantRow(
        9, "heidi@example.com", 1_500_000, Schedule(start=date(2025, 3, 1), every="month", months=3)
    ),
]


def test_good_file_with_every_column_combination() -> None:
    assert parse_grants_csv(csv_text(*GOOD_ROWS), today=TODAY) == GOOD_PARSED


def test_crlf_and_bom() -> None:
    text = "\ufeff" + csv_text(*GOOD_ROWS, newline="\r\n")
    assert parse_grants_csv(text, today=TODAY) == GOOD_PARSED


def test_no_final_newline() -> None:
    text = HEADER + "\nada@example.com,1000,,,,"
    assert parse_grants_csv(text, today=TODAY) == GOOD_PARSED[:1]


def test_blank_lines_are_skipped_but_counted() -> None:
    text = (
        f"{HEADER}\n"  # 1
        "\n"  # 2
        "ada@example.com,1000,,,,\n"  # 3
        "\n"  # 4
        "   \n"  # 5
        ",,,,,\n"  # 6: an empty spreadsheet row
        "bob@example.com,-5,,,,\n"  # 7
        "\r\n"  # 8
    )
    assert problems_of(text) == [(7, f"amount '-5' {NOT_DECIMAL}")]
    fixed = text.replace("-5", "5")
    assert [(row.line, row.email) for row in parse_grants_csv(fixed, today=TODAY)] == [
        (3, "ada@example.com"),
        (7, "bob@example.com"),
    ]


@pytest.mark.parametrize(
    ("text", "got"),
    [
        ("", "an empty file"),
        ("\nada@example.com,1000,,,,\n", "an empty first line"),
        ("email,amount,start,cliff_months,every\n", "email,amount,start,cliff_months,every"),
        (
            "email,amount,start,cliff_months,months,every\n",
            "email,amount,start,cliff_months,months,every",
        ),
        (
            "email,amount,start,cliff_months,every,months,note\n",
            "email,amount,start,cliff_months,every,months,note",
        ),
        (
            "Email,Amount,Start,Cliff_months,Every,Months\n",
            "Email,Amount,Start,Cliff_months,Every,Months",
        ),
        ("ada@example.com,1000,,,,\n", "ada@example.com,1000,,,,"),
        ('"email,amount\nada@example.com,1,,,,\n', "malformed CSV: a quoted field is never closed"),
    ],
)
def test_header_problems(text: str, got: str) -> None:
    assert problems_of(text) == [(1, f"{HEADER_RULE} (got: {got})")]


def test_header_problem_shows_a_shortened_header() -> None:
    [(line, reason)] = problems_of("x" * 500 + "\n")
    assert line == 1
    assert reason == f"{HEADER_RULE} (got: {'x' * 77}...)"


def test_header_tolerates_spaces_around_names() -> None:
    text = "email, amount, start, cliff_months, every, months\nada@example.com,1000,,,,\n"
    assert parse_grants_csv(text, today=TODAY) == GOOD_PARSED[:1]


@pytest.mark.parametrize(
    "text", [HEADER, HEADER + "\n", HEADER + "\r\n\r\n\n", HEADER + "\n,,,,,\n"]
)
def test_file_without_rows(text: str) -> None:
    assert problems_of(text) == [(1, "file has no rows")]


def test_max_rows() -> None:
    rows = [f"user{i}@example.com,1,,,," for i in range(4)]
    assert len(parse_grants_csv(csv_text(*rows[:3]), today=TODAY, max_rows=3)) == 3
    assert problems_of(csv_text(*rows), max_rows=3) == [
        (5, "too many rows: a file may hold at most 3 rows; split it")
    ]


def generated(count: int) -> list[str]:
    return [f"user{i}@example.com,{i + 1}.25,2025-01-01,12,month,48" for i in range(count)]


def test_ten_thousand_rows_parse_quickly() -> None:
    text = csv_text(*generated(10_000))
    began = time.perf_counter()
    rows = parse_grants_csv(text, today=TODAY)
    elapsed = time.perf_counter() - began
    assert len(rows) == 10_000
    assert rows[-1] == GrantRow(
        10_001,
        "user9999@example.com",
        10_000_250_000,
        Schedule(start=date(2025, 1, 1), cliff_months=12, every="month", months=48),
    )
    # Generous bound so a loaded machine does not fail it; quadratic work would.
    assert elapsed < 2.0


def test_one_bad_row_among_ten_thousand() -> None:
    rows = generated(10_000)
    rows[6789] = "user6789@example.com,1e3,2025-01-01,12,month,48"
    assert problems_of(csv_text(*rows)) == [(6791, f"amount '1e3' {NOT_DECIMAL}")]


def test_every_bad_row_is_reported() -> None:
    text = csv_text(
        "not-an-address,10,,,,",  # 2
        "ok1@example.com,10,,,,",  # 3
        "ok2@example.com,0,,,,",  # 4
        "ok3@example.com,10,,,yearly,12",  # 5
        "ok4@example.com,10,,,,",  # 6
        "ok5@example.com,10,2025-13-01,,,",  # 7
        "ok6@example.com,10,,,",  # 8
    )
    assert problems_of(text) == [
        (2, f"email 'not-an-address' {NOT_ADDRESS}"),
        (4, "amount must be greater than zero"),
        (5, 'every must be empty, "month" or "quarter" (got \'yearly\')'),
        (7, "start '2025-13-01' is not a valid date in the form YYYY-MM-DD"),
        (8, "expected 6 fields, got 5"),
    ]


def test_every_problem_in_one_row_is_reported() -> None:
    text = csv_text("bad address,1e3,2025-02-30,x,,twelve")
    assert problems_of(text) == [
        (2, f"amount '1e3' {NOT_DECIMAL}"),
        (2, "cliff_months must be a whole number such as 12 (got 'x')"),
        (2, f"email 'bad address' {NOT_ADDRESS}"),
        (2, "months must be a whole number such as 12 (got 'twelve')"),
        (2, "start '2025-02-30' is not a valid date in the form YYYY-MM-DD"),
    ]
    # A bad schedule is reported alongside a bad email.
    assert problems_of(csv_text("nobody,10,,,quarter,10")) == [
        (2, f"email 'nobody' {NOT_ADDRESS}"),
        (2, "months must be a multiple of 3 when every is quarter (got 10)"),
    ]


def test_quoted_field_spanning_lines_reports_the_starting_line() -> None:
    text = (
        f"{HEADER}\n"  # 1
        "ok@example.com,1,,,,\n"  # 2
        '"multi\n'  # 3
        'line@example.com",1,,,,\n'  # 4
        "bad@example.com,-5,,,,\n"  # 5
    )
    assert problems_of(text) == [
        (3, f"email 'multi\\nline@example.com' {NOT_ADDRESS}"),
        (5, f"amount '-5' {NOT_DECIMAL}"),
    ]


def test_quoted_newline_that_strips_away_is_a_good_row_at_its_first_line() -> None:
    text = f'{HEADER}\r\n"ann@example.com\r\n",1,,,,\r\nbob@example.com,2,,,,\r\n'
    rows = parse_grants_csv(text, today=TODAY)
    assert [(row.line, row.email, row.amount) for row in rows] == [
        (2, "ann@example.com", 1_000_000),
        (4, "bob@example.com", 2_000_000),
    ]


def test_unterminated_quote_reports_its_starting_line() -> None:
    text = csv_text("ok@example.com,1,,,,", '"bad@example.com,1,,,,', "next@example.com,2,,,,")
    assert problems_of(text) == [(3, "malformed CSV: a quoted field is never closed")]


def test_malformed_quote_does_not_stop_later_rows_being_checked() -> None:
    text = csv_text('a@example.com,"1"0,,,,', "b@example.com,1,,,,", "c@example.com,-1,,,,")
    assert problems_of(text) == [
        (2, "malformed CSV: ',' expected after '\"'"),
        (4, f"amount '-1' {NOT_DECIMAL}"),
    ]


@pytest.mark.parametrize(
    ("row", "count"),
    [("a@example.com,1,,,", 5), ("a@example.com,1,,,,,", 7), ("a@example.com", 1)],
)
def test_wrong_number_of_fields(row: str, count: int) -> None:
    assert problems_of(csv_text(row)) == [(2, f"expected 6 fields, got {count}")]


def test_duplicates_name_the_earlier_line() -> None:
    text = csv_text(
        "ada@example.com,1000,,,month,12",  # 2
        "ada@example.com,2000,,,month,12",  # 3: another amount is another grant
        "bob@example.com,1000,,,month,12",  # 4: another person
        "ada@example.com,1000,,,month,12",  # 5: same as 2
        "ADA@example.com,1000.00,2025-06-01,0,month,12",  # 6: same as 2 once parsed
        "ada@example.com,1000,,3,month,12",  # 7: another cliff
    )
    assert problems_of(text) == [(5, "duplicates line 2"), (6, "duplicates line 2")]


@pytest.mark.parametrize(
    ("email", "reason"),
    [
        ("", "email is required"),
        ("no-at.example.com", f"email 'no-at.example.com' {NOT_ADDRESS}"),
        ("a@b@example.com", f"email 'a@b@example.com' {NOT_ADDRESS}"),
        ('"a b@example.com"', f"email 'a b@example.com' {NOT_ADDRESS}"),
        ('"a\tb@example.com"', f"email 'a\\tb@example.com' {NOT_ADDRESS}"),
        ("@example.com", f"email '@example.com' {NOT_ADDRESS}"),
        ("ann@", f"email 'ann@' {NOT_ADDRESS}"),
        ("x" * 243 + "@example.com", "email is longer than 254 characters"),
    ],
)
def test_bad_email(email: str, reason: str) -> None:
    assert problems_of(csv_text(f"{email},10,,,,")) == [(2, reason)]


def test_longest_email_is_accepted() -> None:
    email = "x" * 242 + "@example.com"
    assert len(email) == 254
    [row] = parse_grants_csv(csv_text(f"{email},10,,,,"), today=TODAY)
    assert row.email == email


@pytest.mark.parametrize(
    ("amount", "reason"),
    [
        ("-5", f"amount '-5' {NOT_DECIMAL}"),
        ("1e3", f"amount '1e3' {NOT_DECIMAL}"),
        ("1.1234567", f"amount '1.1234567' {NOT_DECIMAL}"),
        ("0", "amount must be greater than zero"),
        ("0.000000", "amount must be greater than zero"),
        ("1,000", "expected 6 fields, got 7"),
        ('"1,000"', f"amount '1,000' {NOT_DECIMAL}"),
        ("", "amount is required"),
        ("1000000000001", "amount must not exceed 1,000,000,000,000 units"),
    ],
)
def test_bad_amount(amount: str, reason: str) -> None:
    assert problems_of(csv_text(f"ada@example.com,{amount},,,,")) == [(2, reason)]


@pytest.mark.parametrize(
    "start",
    ["2025-02-30", "2025-1-05", "20250105", "2025-W05-5", "2025-01-05T00:00", "05/01/2025", "soon"],
)
def test_bad_date(start: str) -> None:
    assert problems_of(csv_text(f"ada@example.com,10,{start},,month,12")) == [
        (2, f"start '{start}' is not a valid date in the form YYYY-MM-DD")
    ]


@pytest.mark.parametrize("every", ["monthly", "Month", "year", "weekly", "1"])
def test_bad_every(every: str) -> None:
    assert problems_of(csv_text(f"ada@example.com,10,,,{every},12")) == [
        (2, f'every must be empty, "month" or "quarter" (got \'{every}\')')
    ]


@pytest.mark.parametrize("months", ["12.0", "-3", "twelve", "1e2", "+6", "\u0661\u0662", "0x10"])
def test_non_integer_months(months: str) -> None:
    assert problems_of(csv_text(f"ada@example.com,10,,,month,{months}")) == [
        (2, f"months must be a whole number such as 12 (got {months!r})")
    ]
    assert problems_of(csv_text(f"ada@example.com,10,,{months},month,12")) == [
        (2, f"cliff_months must be a whole number such as 12 (got {months!r})")
    ]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ("2025-01-01,,month,601", "months must be at most 600 (got 601)"),
        ("2025-01-01,,month,1234567", "months '1234567' is too large"),
        ("2025-01-01,,quarter,10", "months must be a multiple of 3 when every is quarter (got 10)"),
        ("2025-01-01,,month,", "months is required when every is month: a duration from 1 to 600"),
        ("2025-01-01,,,12", "months must be empty or 0 when every is empty (an immediate grant)"),
        (
            "2025-01-01,3,,",
            "cliff_months must be empty or 0 when every is empty (an immediate grant)",
        ),
        ("2025-01-01,13,month,12", "cliff_months (13) must not exceed months (12)"),
        ("9990-01-01,,month,600", "start plus months must end no later than the year 9999"),
    ],
)
def test_bad_schedule(fields: str, reason: str) -> None:
    assert problems_of(csv_text(f"ada@example.com,10,{fields}")) == [(2, reason)]


def test_problems_message_names_lines() -> None:
    with pytest.raises(RowsInvalid) as caught:
        parse_grants_csv(csv_text("a@example.com,0,,,,", "b,1,,,,"), today=TODAY)
    assert str(caught.value) == (
        "2 problem(s): line 2: amount must be greater than zero; "
        f"line 3: email 'b' {NOT_ADDRESS}"
    )


# -- a report that stays small ---------------------------------------------------------


SIX_PROBLEMS = "x,x,x,x,x,x"  # email, amount, start, cliff, every and months all wrong


def test_six_hundred_thousand_problems_keep_the_first_hundred_and_a_count() -> None:
    import tracemalloc

    text = csv_text(*[SIX_PROBLEMS] * 100_000)
    tracemalloc.start()
    try:
        with pytest.raises(RowsInvalid) as caught:
            parse_grants_csv(text, today=TODAY)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    err = caught.value
    assert err.total == 600_000
    assert len(err.problems) == MAX_REPORTED == 100
    # The first hundred by line: six per line, from line 2 (the header is line 1).
    assert [line for line, _ in err.problems] == [2 + i // 6 for i in range(100)]
    assert str(err).startswith("600,000 problem(s): line 2: ")
    assert str(err).endswith("(and 599,997 more)")
    # Keeping every problem held ~100 MB; the report is bounded, not the file's size.
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_check_returns_rows_problems_and_every_well_formed_email() -> None:
    text = csv_text("ada@example.com,10,,,,", "bob@example.com,ten,,,,", "nobody,1,,,,",
                    "carol@example.com,1,,,")
    checked = check_grants_csv(text, today=TODAY)
    assert [r.line for r in checked.rows] == [2]
    assert checked.problems == [(3, f"amount 'ten' {NOT_DECIMAL}"),
                                (4, f"email 'nobody' {NOT_ADDRESS}"),
                                (5, "expected 6 fields, got 5")]
    assert checked.total == 3
    # Rows with other problems still name their person, to be checked against members.
    assert checked.emails == [(2, "ada@example.com"), (3, "bob@example.com")]
