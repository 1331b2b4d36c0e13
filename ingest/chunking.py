"""Turn entries into token-bounded chunks (pure functions).

One chunk per entry; an entry whose rendered text exceeds the token bound is
split at line, then sentence, then word boundaries, and every piece repeats
the entry's title line so it still says what it is about when retrieved alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import tiktoken

from ingest.entries import Entry

TokenCounter = Callable[[str], int]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Chunk:
    """A searchable piece of one entry."""

    id: str
    entry_id: str
    text: str
    tokens: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


@lru_cache(maxsize=4)
def get_encoding(name: str) -> tiktoken.Encoding:
    """Load a tiktoken encoding once per process (loading parses a large BPE file)."""
    return tiktoken.get_encoding(name)


def token_counter(encoding_name: str) -> TokenCounter:
    """Return a function counting tokens of a text with the named encoding."""
    encoding = get_encoding(encoding_name)
    return lambda text: len(encoding.encode(text, disallowed_special=()))


def truncate_tokens(text: str, max_tokens: int, encoding_name: str) -> tuple[str, bool]:
    """Cut ``text`` to at most ``max_tokens`` tokens; returns the text and whether it was cut."""
    encoding = get_encoding(encoding_name)
    tokens = encoding.encode(text, disallowed_special=())
    if len(tokens) <= max_tokens:
        return text, False
    return encoding.decode(tokens[:max_tokens]), True


def title_line(entry: Entry) -> str:
    """The line that names an entry at the top of each of its chunks."""
    if entry.kind == "faq":
        return f"FAQ ({entry.section}): {entry.title}" if entry.section else f"FAQ: {entry.title}"
    if entry.kind == "guide":
        return f"Guide: {entry.title}"
    return entry.title


def heading_text(entry: Entry) -> str:
    """What an entry is called, as a merchant would ask for it: embedded as its title vector."""
    if entry.kind == "error_code" and entry.message:
        return f"{entry.code}: {entry.message}"
    return entry.title


def render_entry(entry: Entry) -> str:
    """Render an entry as the plain text that is embedded and keyword-indexed."""
    lines = [title_line(entry)]
    if entry.code and entry.code != entry.title:
        lines.append(f"Code: {entry.code}")
    if entry.systems_text:
        lines.append(f"Systems: {entry.systems_text}")
    if entry.severity:
        lines.append(f"Severity: {entry.severity}")
    if entry.message:
        gloss = f" ({entry.message_gloss})" if entry.message_gloss else ""
        lines.append(f'Message: "{entry.message}"{gloss}')
    if entry.text:
        lines.append(entry.text)
    for part in entry.parts:
        gloss = f" ({part.gloss})" if part.gloss else ""
        lines.append(f'Message: "{part.message}"{gloss}')
        if part.cause:
            lines.append(f"Cause: {part.cause}")
        if part.solution:
            lines.append(f"Solution: {part.solution}")
    if entry.cause:
        lines.append(f"Cause: {entry.cause}")
    if entry.solution:
        lines.append(f"Solution: {entry.solution}")
    return "\n".join(lines)


def _split_to_fit(text: str, budget: int, count: TokenCounter) -> list[str]:
    """Split one line into pieces of at most ``budget`` tokens, sentences first, then words."""
    if count(text) <= budget:
        return [text]
    units = _SENTENCE_END.split(text)
    if len(units) == 1:
        units = text.split(" ")
        if len(units) == 1:
            # A single unbroken token run: cut by characters as the last resort.
            half = max(1, len(text) // 2)
            return _split_to_fit(text[:half], budget, count) + _split_to_fit(
                text[half:], budget, count
            )
    pieces: list[str] = []
    current = ""
    for unit in units:
        candidate = f"{current} {unit}".strip()
        if count(candidate) <= budget:
            current = candidate
            continue
        if current:
            pieces.append(current)
        if count(unit) <= budget:
            current = unit
        else:
            pieces.extend(_split_to_fit(unit, budget, count))
            current = ""
    if current:
        pieces.append(current)
    return pieces


def chunk_entry(entry: Entry, max_tokens: int, count: TokenCounter) -> list[Chunk]:
    """Chunk one entry so that no chunk exceeds ``max_tokens`` tokens.

    Every chunk starts with the entry's title line and carries the entry id.
    """
    text = render_entry(entry)
    total = count(text)
    if total <= max_tokens:
        return [Chunk(id=f"{entry.id}#0", entry_id=entry.id, text=text, tokens=total)]

    head = title_line(entry)
    # Leave at least 8 tokens of body per chunk: an overlong title is cut, not the bound.
    head_limit = max_tokens - 9
    if count(head) > head_limit:
        words = head.split(" ")
        while len(words) > 1 and count(" ".join(words) + " …") > head_limit:
            words.pop()
        head = " ".join(words) + " …"
    # Newline joining the head and the body costs at most one token.
    budget = max(8, max_tokens - count(head) - 1)
    body_lines = text.split("\n")[1:]
    units: list[str] = []
    for line in body_lines:
        units.extend(_split_to_fit(line, budget, count))

    bodies: list[str] = []
    current: list[str] = []
    for unit in units:
        if current and count("\n".join([*current, unit])) > budget:
            bodies.append("\n".join(current))
            current = []
        current.append(unit)
    if current:
        bodies.append("\n".join(current))

    chunks = []
    for n, body in enumerate(bodies):
        piece = f"{head}\n{body}"
        chunks.append(
            Chunk(id=f"{entry.id}#{n}", entry_id=entry.id, text=piece, tokens=count(piece))
        )
    return chunks


def chunk_entries(entries: list[Entry], max_tokens: int, count: TokenCounter) -> list[Chunk]:
    """Chunk every entry, in order."""
    return [chunk for entry in entries for chunk in chunk_entry(entry, max_tokens, count)]
