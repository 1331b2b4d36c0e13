"""Answer data shapes shared by the CLI, the chat app and the eval runner.

``Answer.to_json`` is the public JSON contract of ``supportbot ask --json``:
other tools rely on it, so fields are only ever added, never renamed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ingest.entries import Entry

Role = Literal["user", "assistant"]
# answer: the knowledge base answers it; suggest: it may not, the closest entries are
# offered; none: nothing related. Only "answer" cites entries as the answer.
Outcome = Literal["answer", "suggest", "none"]
DraftStyle = Literal["default", "shorter", "formal", "shorter+formal"]


@dataclass(frozen=True)
class Turn:
    """One earlier message of a conversation."""

    role: Role
    content: str
    # Entry ids the assistant cited in this turn; lets follow-ups stay on topic.
    cited: tuple[str, ...] = ()


@dataclass(frozen=True)
class Filters:
    """Optional restrictions on what may be retrieved (all case-insensitive)."""

    severity: tuple[str, ...] = ()
    system: tuple[str, ...] = ()
    kind: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        """True when nothing is filtered."""
        return not (self.severity or self.system or self.kind)


@dataclass(frozen=True)
class Citation:
    """A cited knowledge-base entry with the retrieval score that brought it in."""

    entry: Entry
    score: float

    def to_json(self) -> dict[str, Any]:
        """The citation object of the ``ask --json`` contract."""
        e = self.entry
        return {
            "code": e.code,
            "title": e.title,
            "kind": e.kind,
            "severity": e.severity,
            "source": f"{e.source}:{e.line}",
            "section": e.section,
            "score": round(float(self.score), 4),
        }


def _outcome_of(abstained: bool, related: tuple[Citation, ...]) -> Outcome:
    if not abstained:
        return "answer"
    return "suggest" if related else "none"


@dataclass(frozen=True)
class Answer:
    """What the bot says, what it cites, and whether it abstained.

    ``outcome`` is "answer", "suggest" or "none" (``abstained`` is true for the last two);
    ``related`` are the entries suggested when the knowledge base may not cover the
    question, for the user to open.
    """

    question: str
    text: str
    citations: tuple[Citation, ...] = ()
    abstained: bool = False
    # Short user-facing remarks, e.g. that an over-long question was truncated.
    notices: tuple[str, ...] = field(default=())
    related: tuple[Citation, ...] = ()
    outcome: Outcome | None = None
    # A greeting or thanks, answered in kind: not a question the knowledge base lacks.
    small_talk: bool = False

    def __post_init__(self) -> None:
        if self.outcome is None:
            object.__setattr__(self, "outcome", _outcome_of(self.abstained, self.related))

    def to_json(self) -> dict[str, Any]:
        """The stable ``ask --json`` object."""
        return {
            "question": self.question,
            "answer": self.text,
            "outcome": self.outcome,
            "citations": [c.to_json() for c in self.citations],
            "related": [c.to_json() for c in self.related],
            "abstained": self.abstained,
        }


@dataclass(frozen=True)
class Draft:
    """A support agent's ready-to-send reply plus the entries to check it against."""

    ticket: str
    reply: str
    citations: tuple[Citation, ...] = ()
    abstained: bool = False
    notices: tuple[str, ...] = field(default=())
    # Entries the agent may check when the ticket is not answered (outcome "suggest").
    related: tuple[Citation, ...] = ()
    outcome: Outcome | None = None

    def __post_init__(self) -> None:
        if self.outcome is None:
            object.__setattr__(self, "outcome", _outcome_of(self.abstained, self.related))

    def to_json(self) -> dict[str, Any]:
        """JSON form used by ``supportbot draft --json``."""
        return {
            "ticket": self.ticket,
            "reply": self.reply,
            "outcome": self.outcome,
            "citations": [c.to_json() for c in self.citations],
            "related": [c.to_json() for c in self.related],
            "abstained": self.abstained,
            "notices": list(self.notices),
        }


def format_citation(entry: Entry) -> str:
    """The inline citation for an entry, e.g. ``[FORTNOX_FISCAL_YEAR]``."""
    if entry.kind == "faq":
        return f"[FAQ: {entry.title}]"
    if entry.kind == "guide":
        return f"[Guide: {entry.title}]"
    return f"[{entry.label}]"
