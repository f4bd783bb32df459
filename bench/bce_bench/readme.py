"""Replacing the README's generated section, between ``<!-- bench:begin -->`` and
``<!-- bench:end -->``.

>>> replace_section("a\\n<!-- bench:begin -->\\nold\\n<!-- bench:end -->\\nb", "new")
'a\\n<!-- bench:begin -->\\nnew\\n<!-- bench:end -->\\nb'
"""

from __future__ import annotations

from pathlib import Path

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


class MarkersMissing(Exception):
    """The README has no (or an unclosed) bench section."""


def replace_section(text: str, section: str) -> str:
    """``text`` with everything between the first BEGIN and the next END replaced by ``section``."""
    start = text.find(BEGIN)
    end = text.find(END, start + len(BEGIN)) if start >= 0 else -1
    if start < 0 or end < 0:
        raise MarkersMissing(
            f"the README lacks the {BEGIN} ... {END} markers around the bench section"
        )
    return f"{text[:start]}{BEGIN}\n{section.strip()}\n{text[end:]}"


def write_section(path: Path, section: str) -> None:
    """Rewrite ``path`` with its bench section replaced; raises MarkersMissing or OSError."""
    path.write_text(replace_section(path.read_text(encoding="utf-8"), section), encoding="utf-8")
