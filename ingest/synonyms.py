"""Apply the maintainers' synonyms (``corpus/synonyms.txt``) to questions.

Merchants use words the documents never do: HTTP status codes ("401"), currency
codes ("GBP"), everyday verbs ("went through" for synced). The rules, parsed by
:func:`ingest.parse.parse_synonyms`, map them onto the documents' vocabulary. Matching
is on whole words, longest phrase first, in one pass over the question's words, so it
costs microseconds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ingest.keyword import normalize_text
from ingest.parse import SynonymRule

_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)


def words_of(text: str) -> list[str]:
    """Casefolded words, with underscores and punctuation as separators."""
    return [w for w in _NON_WORD.split(normalize_text(text).replace("_", " ")) if w]


@dataclass(frozen=True)
class SynonymMatch:
    """A rule's input phrase found at ``words[start:end]``."""

    start: int
    end: int
    phrase: str
    rule: SynonymRule

    @property
    def alternatives(self) -> tuple[str, ...]:
        """What the phrase stands for, itself excluded."""
        return tuple(t for t in self.rule.outputs if t != self.phrase)


class Synonyms:
    """The synonym rules, ready to match questions."""

    def __init__(self, rules: Iterable[SynonymRule] = ()) -> None:
        self.rules = tuple(rules)
        # First word → candidate phrases (as word tuples), longest first.
        starts: dict[str, list[tuple[tuple[str, ...], SynonymRule]]] = {}
        for rule in self.rules:
            for term in rule.inputs:
                words = tuple(words_of(term))
                if words:
                    starts.setdefault(words[0], []).append((words, rule))
        for candidates in starts.values():
            candidates.sort(key=lambda c: -len(c[0]))
        self._starts = starts

    def __bool__(self) -> bool:
        return bool(self.rules)

    def find(self, words: list[str]) -> list[SynonymMatch]:
        """Non-overlapping matches in ``words``, the longest phrase winning at each place."""
        found: list[SynonymMatch] = []
        i = 0
        while i < len(words):
            for phrase, rule in self._starts.get(words[i], ()):
                if tuple(words[i : i + len(phrase)]) == phrase:
                    found.append(SynonymMatch(i, i + len(phrase), " ".join(phrase), rule))
                    i += len(phrase)
                    break
            else:
                i += 1
        return found

    def expansions(self, text: str) -> list[str]:
        """Terms the text's phrases stand for, in order, without repeats."""
        terms: dict[str, None] = {}
        for match in self.find(words_of(text)):
            terms.update(dict.fromkeys(match.alternatives))
        return list(terms)

    def expand(self, text: str) -> str:
        """The text with the terms its phrases stand for appended (for keyword and dense search)."""
        extra = self.expansions(text)
        return f"{text} ({', '.join(extra)})" if extra else text

    def covered_words(self, text: str) -> set[str]:
        """Words of the text that some rule maps onto other terms."""
        covered: set[str] = set()
        words = words_of(text)
        for match in self.find(words):
            if match.alternatives:
                covered.update(words[match.start : match.end])
        return covered

    def variants(self, text: str, limit: int = 12) -> list[str]:
        """The text (as spaced words) with one matched phrase replaced by each alternative.

        Plus one variant with every phrase replaced by its first alternative, so that
        two rewritten words in one pasted message still match. Used by exact lookups.
        """
        words = words_of(text)
        matches = [m for m in self.find(words) if m.alternatives]
        out: dict[str, None] = {}
        for m in matches:
            for alternative in m.alternatives:
                out[" ".join([*words[: m.start], alternative, *words[m.end :]])] = None
        if len(matches) > 1:
            rewritten: list[str] = []
            last = 0
            for m in matches:
                rewritten += [*words[last : m.start], m.alternatives[0]]
                last = m.end
            out[" ".join(rewritten + words[last:])] = None
        return list(out)[:limit]


def candidate_words(
    questions: Iterable[str],
    uncovered: Callable[[str], Sequence[str]],
    min_count: int = 2,
    limit: int = 20,
    written_in_words: Callable[[str], bool] | None = None,
) -> list[dict[str, object]]:
    """Words frequent in unanswered questions that the knowledge base never uses.

    Candidates for the synonyms file (or for new entries): ``uncovered`` names a
    question's words the corpus and the synonyms lack. Each word counts once per
    distinct question; the most frequent come first, each with up to three examples.
    Only questions for which ``written_in_words`` is true count: keyboard mash
    ("asdfgh qwerty") proposes nothing, however often it is typed.
    """
    counts: dict[str, list[str]] = {}
    for question in dict.fromkeys(q.strip() for q in questions if q and q.strip()):
        if written_in_words is not None and not written_in_words(question):
            continue
        for word in dict.fromkeys(uncovered(question)):
            counts.setdefault(word, []).append(question)
    ranked = sorted(counts.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return [
        {"word": word, "questions": len(found), "examples": found[:3]}
        for word, found in ranked
        if len(found) >= min_count
    ][:limit]
