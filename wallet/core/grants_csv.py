"""Parse a bulk-grant CSV into validated rows, all or nothing.

docs/grants.md, "Bulk grants from CSV": UTF-8 CSV with header
`email,amount,start,cliff_months,every,months` (every is month or quarter; empty every
and months mean immediate); errors name the file's line numbers. The caller decodes the
bytes; this module sees text only.

Every row is checked before anything is returned, and every problem is counted and
reported as (line, reason) in one `RowsInvalid`, so a payroll clerk fixes the whole file in
one pass. The report keeps the first `MAX_REPORTED` problems by line and the total: a file
with 600,000 problems must not become a 66 MB page (or 100 MB of memory).
`check_grants_csv` also hands back every well-formed email with its line, valid row or
not, so that the caller can add what only the database knows (non-members, leavers) to
the same report.
Line numbers are physical lines (the header is line 1); a row whose quoted field spans
lines is reported at the line where it starts. Blank lines, and rows whose fields are all
empty (spreadsheets export those as ",,,,,"), are skipped but still counted.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import date

from wallet.core.errors import AmountInvalid, Malformed, RowsInvalid, shown
from wallet.core.money import parse_amount
from wallet.core.vesting import Schedule, make_schedule

HEADER = ("email", "amount", "start", "cliff_months", "every", "months")
MAX_EMAIL_CHARS = 254  # RFC 5321 path limit less the angle brackets
MAX_REPORTED = 100  # problems listed in a report; the rest are counted

_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# Six digits is far past any valid month count, and keeps int() away from huge strings.
_COUNT_RE = re.compile(r"[0-9]{1,6}")


@dataclass(frozen=True, slots=True)
class GrantRow:
    """One valid row of a grants file."""

    line: int  # physical line number in the file where the row starts (header is line 1)
    email: str  # stripped, lower-cased
    amount: int  # micros
    schedule: Schedule


@dataclass(frozen=True, slots=True)
class CheckedFile:
    """What checking a grants file found: valid rows, the first problems, every email."""

    rows: list[GrantRow]
    problems: list[tuple[int, str]]  # the first MAX_REPORTED by line
    total: int  # every problem found, reported or not
    emails: list[tuple[int, str]]  # (line, email) of every row with a well-formed email


def parse_grants_csv(text: str, *, today: date, max_rows: int = 100_000) -> list[GrantRow]:
    """Parse and validate every row, or raise `RowsInvalid` with the first problems."""
    checked = check_grants_csv(text, today=today, max_rows=max_rows)
    if checked.total:
        raise RowsInvalid(checked.problems, total=checked.total)
    return checked.rows


def check_grants_csv(text: str, *, today: date, max_rows: int = 100_000) -> CheckedFile:
    """Check every row; never raises: problems (first ones, and a count) are returned."""
    # newline="" hands the csv module the raw line endings, as its documentation requires,
    # so a quoted "\r\n" inside a field survives and line_num counts physical lines.
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)

    header: list[str] | None = None
    try:
        header = next(reader)
    except StopIteration:
        got = "an empty file"
    except csv.Error as exc:
        got = _csv_problem(exc)
    else:
        got = ",".join(header) or "an empty first line"
    if header is None or [name.strip() for name in header] != list(HEADER):
        return _refused(1, f"header must be exactly: {','.join(HEADER)} (got: {_cut(got)})")

    report = _Report()
    rows: list[GrantRow] = []
    emails: list[tuple[int, str]] = []
    seen: dict[tuple[str, int, Schedule], int] = {}
    count = 0
    while True:
        line = reader.line_num + 1  # where this row starts, even if a quote spans lines
        fields: list[str] | None = None
        malformed = ""
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            # The reader resumes at the next physical line, so later rows are still checked.
            malformed = _csv_problem(exc)
        else:
            if all(not field.strip() for field in fields):
                continue
        count += 1
        if count > max_rows:
            return _refused(line, f"too many rows: a file may hold at most {max_rows:,} rows;"
                                  " split it")
        if fields is None:
            report.add(line, malformed)
            continue
        if len(fields) != len(HEADER):
            report.add(line, f"expected {len(HEADER)} fields, got {len(fields)}")
            continue
        row, email, reasons = _parse_row(line, [field.strip() for field in fields], today)
        if email is not None:
            emails.append((line, email))
        if row is None:
            for reason in sorted(reasons):
                report.add(line, reason)
            continue
        first = seen.setdefault((row.email, row.amount, row.schedule), line)
        if first != line:
            report.add(line, f"duplicates line {first}")
            continue
        rows.append(row)

    if not rows and not report.total:
        return _refused(1, "file has no rows")
    return CheckedFile(rows, report.problems, report.total, emails)


class _Report:
    """The first MAX_REPORTED problems (added in line order) and how many there were."""

    def __init__(self) -> None:
        self.problems: list[tuple[int, str]] = []
        self.total = 0

    def add(self, line: int, reason: str) -> None:
        self.total += 1
        if len(self.problems) < MAX_REPORTED:
            self.problems.append((line, reason))


def _refused(line: int, reason: str) -> CheckedFile:
    """A problem with the whole file: nothing else is checked."""
    return CheckedFile([], [(line, reason)], 1, [])


def _csv_problem(exc: csv.Error) -> str:
    reason = str(exc)
    if "unexpected end of data" in reason:
        reason = "a quoted field is never closed"
    return f"malformed CSV: {reason}"


def _parse_row(line: int, fields: list[str],
               today: date) -> tuple[GrantRow | None, str | None, list[str]]:
    """The row (None if invalid), its email if well-formed, and the row's problems."""
    email_text, amount_text, start_text, cliff_text, every, months_text = fields
    reasons: list[str] = []

    email = email_text.lower()
    email_problem = _email_problem(email)
    if email_problem:
        reasons.append(email_problem)
    good_email = None if email_problem else email

    amount = 0
    if not amount_text:
        reasons.append("amount is required")
    else:
        try:
            amount = parse_amount(amount_text)
        except AmountInvalid as exc:
            reasons.append(exc.message)

    # Check the schedule even when email or amount is bad, so one pass finds everything.
    schedule_reasons: list[str] = []
    start = today
    if start_text:
        parsed = _parse_date(start_text)
        if parsed is None:
            schedule_reasons.append(
                f"start {shown(start_text)} is not a valid date in the form YYYY-MM-DD"
            )
        else:
            start = parsed
    cliff = _parse_count("cliff_months", cliff_text, schedule_reasons)
    months = _parse_count("months", months_text, schedule_reasons)
    if every not in ("", "month", "quarter"):
        schedule_reasons.append(f'every must be empty, "month" or "quarter" (got {shown(every)})')
    if not schedule_reasons:
        try:
            schedule = make_schedule(start=start, cliff_months=cliff, every=every, months=months)
        except Malformed as exc:
            schedule_reasons.append(exc.message)
    reasons += schedule_reasons
    if reasons:
        return None, good_email, reasons
    return GrantRow(line=line, email=email, amount=amount, schedule=schedule), good_email, []


def _email_problem(email: str) -> str | None:
    if not email:
        return "email is required"
    if len(email) > MAX_EMAIL_CHARS:
        return f"email is longer than {MAX_EMAIL_CHARS} characters"
    local, at, domain = email.partition("@")
    if (
        not at
        or not local
        or not domain
        or "@" in domain
        or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in email)
    ):
        return f"email {shown(email)} is not an address such as ada@example.com"
    return None


def _parse_date(text: str) -> date | None:
    # date.fromisoformat also takes "20250131" and "2025-W05-5"; the file format does not.
    if _DATE_RE.fullmatch(text) is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _parse_count(name: str, text: str, reasons: list[str]) -> int | None:
    if not text:
        return None
    if _COUNT_RE.fullmatch(text) is None:
        if text.isascii() and text.isdigit():
            reasons.append(f"{name} {shown(text)} is too large")
        else:
            reasons.append(f"{name} must be a whole number such as 12 (got {shown(text)})")
        return None
    return int(text)


def _cut(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."
