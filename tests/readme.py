"""The README's code, as tests run it: the blocks of a section, and their shell commands.

Tests that take a command from here run the README text itself, so a README that drifts from what
works fails a test.
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def section(heading: str) -> str:
    """The text under a `#`-heading whose title starts with `heading`, up to the next heading of its level."""
    text = README.read_text()
    match = re.search(rf"^(#+) {re.escape(heading)}.*$", text, re.MULTILINE)
    assert match, f"README.md has no heading starting {heading!r}"
    level = len(match.group(1))
    rest = text[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def code_blocks(text: str, language: str) -> list[str]:
    """The fenced blocks of `text` tagged with `language` (```sh, ```python)."""
    return [body for lang, body in _FENCE.findall(text) if lang == language]


def commands(block: str) -> list[str]:
    """A shell block's commands, one per entry: continuation lines joined, blank lines dropped."""
    joined = re.sub(r"\\\n\s*", "", block)
    return [line.strip() for line in joined.splitlines() if line.strip()]
