"""Typed knowledge-base entries: what parsing produces and everything else consumes.

This module imports nothing of the project, so the parser, the index and the
answer layer can all depend on it without cycles.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Kind = Literal["error_code", "error_pattern", "faq", "guide"]
KINDS: tuple[str, ...] = ("error_code", "error_pattern", "faq", "guide")
SEVERITIES: tuple[str, ...] = ("Critical", "Error", "Warning", "Info")


@dataclass(frozen=True)
class SubError:
    """One error inside a grouped entry (e.g. the two Swedish Fortnox errors)."""

    message: str
    gloss: str | None
    cause: str | None
    solution: str | None


@dataclass(frozen=True)
class Entry:
    """One knowledge-base entry, with enough provenance to cite it.

    ``id`` is stable across re-ingests of the same text: the code for error
    codes, otherwise ``<kind>:<slug of title>``.  ``text`` holds free prose that
    is not cause/solution: the FAQ answer, a guide section's body, or the
    introduction of a grouped error entry.
    """

    id: str
    kind: Kind
    title: str
    source: str
    line: int
    code: str | None = None
    systems: tuple[str, ...] = ()
    systems_text: str | None = None
    severity: str | None = None
    message: str | None = None
    message_gloss: str | None = None
    numeric_code: str | None = None
    cause: str | None = None
    solution: str | None = None
    text: str | None = None
    section: str | None = None
    updated: str | None = None
    parts: tuple[SubError, ...] = field(default=())

    @property
    def label(self) -> str:
        """The name a citation shows: the code when there is one, else the title."""
        return self.code or self.title

    def messages(self) -> list[str]:
        """Every error message the merchant may see for this entry (own and grouped)."""
        found = [m for m in (self.message, self.message_gloss) if m]
        for part in self.parts:
            found.append(part.message)
            if part.gloss:
                found.append(part.gloss)
        return found

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Entry:
        """Inverse of :meth:`to_dict`; raises ``TypeError``/``KeyError`` on bad data."""
        values = dict(data)
        values["systems"] = tuple(values.get("systems") or ())
        values["parts"] = tuple(SubError(**p) for p in values.get("parts") or ())
        return cls(**values)


@dataclass(frozen=True)
class ParseIssue:
    """A problem found while parsing: reported, never fatal to the rest of the file."""

    source: str
    line: int
    message: str
    level: Literal["warning", "error"] = "warning"

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.level}: {self.message}"


@dataclass(frozen=True)
class ParseResult:
    """Entries parsed from one document plus the issues found on the way."""

    entries: tuple[Entry, ...]
    issues: tuple[ParseIssue, ...] = ()
