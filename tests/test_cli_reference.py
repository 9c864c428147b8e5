"""docs/cli.md is the commands' own help: regenerate it with `make docs-cli` when a command
changes, and this test keeps the two equal."""

from __future__ import annotations

from pathlib import Path

from wallet.cli import reference

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_docs_cli_md_is_what_the_commands_say() -> None:
    assert DOC.read_text(encoding="utf-8") == reference.markdown(), (
        "docs/cli.md is out of date: run `make docs-cli`")


def test_every_command_is_in_the_reference_once() -> None:
    text = reference.markdown()
    for line in ("## wallet note", "### wallet note verify", "### wallet settlement list",
                 "## wallet statement", "### wallet statement verify", "## wallet export"):
        assert text.count(f"\n{line}\n") == 1, line
