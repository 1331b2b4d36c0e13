r"""Text that can always be written: lone surrogates replaced, console output that never wraps.

User text reaches us with lone surrogates (JSON escapes such as ``"\ud800"`` in exports from
other tools, undecodable argv bytes); UTF-8 encoders refuse them, so every place that writes
user-supplied text goes through :func:`utf8_safe` or :func:`utf8_safe_data` first.
"""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console, ConsoleDimensions

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")

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
