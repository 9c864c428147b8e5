"""One line per figure with its goal, in a form `bench/run_all.py` collects.

Every benchmark prints its own table; beside it, each figure that has a goal (or that the
issue asks to be reported) is printed once through `figure(...)`:

    FIGURE honour | ratio honour/plain | 0.071 | >= 0.09 | NOT met

`make bench` runs every benchmark through `bench/run_all.py`, which gathers these lines
into one summary at the end. A figure with no threshold (`op="report"`) is printed as
"report": measured and shown, judged by a reader.
"""

from __future__ import annotations

PREFIX = "FIGURE"
OPS = (">=", "<=", "report")


def met(value: float, op: str, goal: float | None) -> bool | None:
    """Whether `value` meets `op goal`; None for a figure that is only reported."""
    if op == "report" or goal is None:
        return None
    if op == ">=":
        return value >= goal
    if op == "<=":
        return value <= goal
    raise ValueError(f"unknown comparison {op!r}: use one of {', '.join(OPS)}")


def figure(bench: str, name: str, value: float, op: str, goal: float | None = None, *,
           unit: str = "", digits: int = 3) -> bool | None:
    """Print one figure against its goal; return whether it is met (None: reported only)."""
    verdict = met(value, op, goal)
    shown = f"{value:.{digits}f}{unit}"
    wanted = "report" if verdict is None else f"{op} {goal:g}{unit}"
    word = "report" if verdict is None else ("met" if verdict else "NOT met")
    print(f"{PREFIX} {bench} | {name} | {shown} | {wanted} | {word}", flush=True)
    return verdict


def parse(line: str) -> tuple[str, str, str, str, str] | None:
    """The five fields of a figure line, or None for any other line."""
    if not line.startswith(PREFIX + " "):
        return None
    parts = [p.strip() for p in line[len(PREFIX) + 1:].split("|")]
    if len(parts) != 5:
        return None
    return parts[0], parts[1], parts[2], parts[3], parts[4]
