r"""Text that can always be written: lone surrogates replaced, console output that never wraps.

User text reaches us with lone surrogates (JSON escapes such as ``"\ud800"`` in exports from
other tools, undecodable argv bytes); UTF-8 encoders refuse them, so every place that writes
user-supplied text goes through :func:`utf8_safe` or :func:`utf8_safe_data` first. Reports
that show stored user text (feedback, gaps, hand-offs) also drop control and bidirectional
override characters (:func:`display_safe`), and input that is not text is recognised
(:func:`looks_binary`).
"""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console, ConsoleDimensions

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")

# C0 and C1 controls other than tab and newline (NUL, BEL, ESC, CR, …) and the bidirectional
# embedding, override, isolate and mark characters: the first ring bells, move the cursor or
# end strings in the reader's tools; the others reorder what the reader sees ("‮" can make
# "txt.exe" read "exe.txt").
_UNDISPLAYABLE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
_SPACE = re.compile(r"\s+")
# Input with more than this share of control or undecodable characters is not text.
BINARY_SHARE = 0.3

# Wide enough that no message, path or table row is ever folded when output goes to a file
# or a pipe; a person at a terminal still gets output fitted to their window.
_UNWRAPPED_WIDTH = 10_000


def utf8_safe(text: str) -> str:
    r"""The text with lone surrogates replaced by U+FFFD, so it always encodes as UTF-8.

    A high and low surrogate written next to each other (``"\ud83d\ude00"``) are one
    character split in two, and are joined rather than replaced.
    """
    if is_utf8_safe(text):
        return text
    joined = text.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")
    return _SURROGATE.sub(REPLACEMENT, joined)


def is_utf8_safe(text: str) -> bool:
    """True when the text encodes as UTF-8 as it is (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def utf8_safe_data(value: Any) -> Any:
    """A JSON-like value (dicts, lists, tuples, strings) with every string made UTF-8 safe."""
    if isinstance(value, str):
        return utf8_safe(value)
    if isinstance(value, dict):
        return {utf8_safe_data(k): utf8_safe_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(utf8_safe_data(v) for v in value)
    return value


def display_safe(text: str) -> str:
    """The text as a report may show it: UTF-8 safe, without control or bidi override characters.

    Tabs and newlines stay; listings that need one line use :func:`one_line`.
    """
    return _UNDISPLAYABLE.sub("", utf8_safe(text))


def one_line(text: str) -> str:
    """:func:`display_safe` text with every run of white space (newlines too) made one space."""
    return _SPACE.sub(" ", display_safe(text)).strip()


def display_safe_data(value: Any) -> Any:
    """A JSON-like value with every string made :func:`display_safe`."""
    if isinstance(value, str):
        return display_safe(value)
    if isinstance(value, dict):
        return {display_safe_data(k): display_safe_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(display_safe_data(v) for v in value)
    return value


def looks_binary(text: str) -> bool:
    """True when decoded input is mostly control or undecodable characters (a program, an image).

    Text with stray NULs or a few bad bytes (a log pasted through a broken terminal) is
    still text: only a share above :data:`BINARY_SHARE` counts, measured on the first 64 KB.
    """
    sample = text[:65_536]
    if not sample:
        return False
    noise = sum(
        1
        for c in sample
        if c == REPLACEMENT or (c < " " and c not in "\t\n\r") or "\x7f" <= c <= "\x9f"
    )
    return noise / len(sample) > BINARY_SHARE


class CliConsole(Console):
    """A rich console that wraps only for a person at a terminal.

    Scripts and tests read the command's output: folding a long path or message at the
    terminal width (or at ``COLUMNS``, or rich's default of 80) would split words they match.
    """

    @property
    def size(self) -> ConsoleDimensions:
        """The terminal's size, or an unbounded width when output is not a terminal."""
        size = super().size
        if self.is_terminal:
            return size
        return ConsoleDimensions(_UNWRAPPED_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]
