"""Find the knowledge-base entries that answer a question, or decide none does.

Order of work, cheapest and most certain first:
1. exact lookups (error codes in any spelling, numeric codes, pasted error
   messages with concrete values where the document has placeholders), because
   neither keyword nor vector search is reliable on identifiers;
2. hybrid search: BM25 and dense (MiniLM) rankings fused per entry;
3. one of three outcomes when no exact lookup fired: *answer* (confident), *suggest*
   (the knowledge base may not cover it: the closest entries are offered, not
   answered from) or *none* (nothing related).

The maintainers' synonyms (``corpus/synonyms.txt``) widen both the exact lookups
and the search; pasted messages are matched despite typos, but a real English
word is never "corrected" into a knowledge-base word.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from langchain_core.embeddings import Embeddings

from bot.answer_types import Filters, Outcome
from bot.config import RetrievalSettings
from bot.glossary import expand_query, translate_query
from ingest.entries import Entry
from ingest.index import KnowledgeIndex, embed_query
from ingest.keyword import (
    STOPWORDS,
    TypoCorrector,
    is_english_word,
    is_everyday_word,
    normalize_text,
    tokenize,
    word_tokens,
)
from ingest.synonyms import Synonyms

# Words that say "error" without saying which one: a message made only of these
# (like ERROR_MESSAGE's "Error message:") is too generic for an exact lookup.
GENERIC_WORDS = frozenset({"error", "errors", "message", "messages", "failed", "fail", "warning"})
_QUOTED = re.compile(r"[\"“”]([^\"“”]{3,})[\"“”]")
_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)
_DIGITS = re.compile(r"\b\d{4,}\b")
_WORD_RE = re.compile(r"[^\W_]+", re.UNICODE)
# What is left of "isn't", "don't", … once the apostrophe splits the word.
_CONTRACTED = frozenset("isn aren wasn weren don doesn didn won can couldn shouldn wouldn".split())
_CONTRACTED |= frozenset("haven hasn hadn ain".split())
# Words that place a question in time, report who said it or hedge a number: they say
# nothing about its topic, so the knowledge base not using them is no sign of a near miss
# ("nothing has synced since this morning", "the customer writes: … roughly 850").
_TOPIC_FREE = frozenset(
    """
    today tonight yesterday tomorrow morning mornings afternoon afternoons evening evenings
    night nights midnight noon weekend weekends week weeks weekly month months monthly year
    years yearly hour hours hourly minute minutes day days daily ago earlier lately recently
    monday mondays tuesday tuesdays wednesday wednesdays thursday thursdays friday fridays
    saturday saturdays sunday sundays january february march april june july august
    september october november december
    says said say saying writes wrote write writing tells told tell asks asked ask reports
    reported mentions mentioned claims claimed explains explained complains complained
    replies replied answers answered answering responds responded
    roughly approximately around about nearly almost exactly circa some several whole single
    every none each suddenly
    overnight lunch lunchtime breakfast tonight anymore completely entirely totally
    altogether certain particular
    """.split()
)
# Words that report something going wrong: a question with one is about a problem, never
# a general fact ("What does the error … mean?").
_PROBLEM_WORDS = frozenset(
    """
    fail fails failed failing failure failures error errors stop stops stopped stopping halt
    halts halted halting stuck broken breaks broke crash crashes crashed missing wrong
    incorrect rejected rejects refuses refused nothing never disappeared vanished
    """.split()
)
# A question that names nobody involved (no merchant, no Junipeer) and asks for a fact is
# general knowledge, even when it shares a word with an entry: "Which countries use the
# euro?", "What are the Shopify API rate limits?".
_FACT_QUESTION = re.compile(
    r"^\s*(?:what|which|who|whom|whose|when|how\s+(?:many|much|long|far|often|does|do|is|are)"
    r"|is\s+there|are\s+there)\b",
    re.IGNORECASE,
)
# Words of a follow-up that asks the same again elsewhere: "same thing on Business Central?".
_SAME_WORDS = frozenset(
    "same thing things case happens happen there too instead else business one net".split()
)
# A question asking whether something got across ("did yesterday's orders make it across?",
# "has order 5521 landed yet?") without reporting a problem asks how to check a sync's
# status: the knowledge base answers "did it sync?" with where to look.
_STATUS_QUESTION = re.compile(
    r"^\s*(?:did|has|have|had|was|were)\b"
    r"|\b(?:see|tell|know|check|confirm|verify|find\s+out|sure)\s+(?:whether|if|that)\b",
    re.IGNORECASE,
)
_SYNC_STATE_WORDS = frozenset(
    """
    sync synced syncs arrive arrived arrives created exported imported transferred reached
    received sent posted
    """.split()
)
# A report that everything fails ("not one order gets through", "every task fails") and the
# entries that describe that scope ("all syncs fail", "All syncs stop"): a failure of one
# record and a failure of everything have different causes.
_TOTALITY = re.compile(
    r"\b(?:all|every|everything|nothing|none|whole|entire|entirely|completely"
    r"|not\s+(?:one|a\s+single|any)|no\s+(?:orders?|syncs?|tasks?|data))\b"
)
_TOTAL_FAILURE = re.compile(
    r"\b(?:all|every)\s+(?:\w+\s+)?(?:syncs?|tasks?)\b[^.]{0,40}?\b(?:fail|stop)", re.IGNORECASE
)
TOTAL_FAILURE_TERMS = "all syncs fail at once, stopped syncing"
STATUS_TERMS = "how do I check if it has been synced, sync status"
# What a merchant calls theirs: "my subscription", "our plan".
_OWN_THING = re.compile(r"\b(my|our)\s+([^\W\d_]{3,})", re.IGNORECASE)
_PEOPLE = frozenset(
    """
    i i'm im i've ive me my mine we we're our ours us you your yours junipeer merchant
    merchants customer customers store stores shop webshop integration integrations
    """.split()
)


_CLOSEST = 5  # how many of the best-ranked entries a retrieval reports as closest


@dataclass(frozen=True)
class Hit:
    """One retrieved entry with the signals behind it."""

    entry: Entry
    score: float
    dense: float = 0.0
    bm25: float = 0.0
    exact: str | None = None  # "code", "numeric" or "message" for exact lookups


@dataclass(frozen=True)
class Retrieval:
    """The outcome of one retrieval: ranked hits, or an abstention with its reason.

    ``outcome`` is "answer" (``hits`` answer the question), "suggest" (not answered:
    ``related`` are the closest entries, offered for the user to open) or "none".
    ``uncovered`` lists the question's words the knowledge base never uses.
    """

    query: str
    hits: tuple[Hit, ...]
    abstained: bool
    reason: str = ""
    signals: dict[str, float] = field(default_factory=dict)
    outcome: Outcome | None = None
    related: tuple[Hit, ...] = ()
    uncovered: tuple[str, ...] = ()
    # Ids of the best-ranked entries whatever the outcome, best first: what the question
    # points at, even when nothing answers it.
    closest: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.outcome is None:
            object.__setattr__(self, "outcome", "none" if self.abstained else "answer")


def _words(text: str) -> list[str]:
    return [w for w in _NON_WORD.split(normalize_text(text).replace("_", " ")) if w]


def system_names_of(entry: Entry) -> tuple[str, ...]:
    """Systems an entry concerns, including the system its section is about."""
    names = list(entry.systems)
    if entry.kind == "error_code" and entry.section:
        first = entry.section.split()[0]
        if first.lower() not in ("general", "common") and first not in names:
            names.append(first)
    return tuple(names)


def systems_of(entries: Iterable[Entry]) -> list[str]:
    """Distinct named systems across entries (sorted), for filter menus."""
    found: dict[str, str] = {}
    for e in entries:
        for name in system_names_of(e):
            if name and name[0].isupper() and len(name) < 30:
                found.setdefault(name.casefold(), name)
    return sorted(found.values(), key=str.casefold)


def matches_filters(entry: Entry, filters: Filters | None) -> bool:
    """True when the entry passes every given filter (case-insensitive)."""
    if filters is None or filters.is_empty():
        return True
    if filters.kind and entry.kind not in {k.casefold() for k in filters.kind}:
        return False
    if filters.severity and (entry.severity or "").casefold() not in {
        s.casefold() for s in filters.severity
    }:
        return False
    if filters.system:
        haystack = " ".join((*system_names_of(entry), entry.systems_text or "")).casefold()
        if not any(s.casefold() in haystack for s in filters.system):
            return False
    return True


@dataclass(frozen=True)
class _Template:
    entry_id: str
    pattern: re.Pattern[str]
    words: int
    own: bool  # the entry's own message, not one quoted inside a grouped entry
    # Entries whose own message is this grouped error's message or translation: the
    # dedicated entry for the same error, which should come first.
    dedicated: tuple[str, ...] = ()
    words_of: tuple[str, ...] = ()  # the message's words, towards which typos are corrected
    # Words any match must contain: a text lacking one is skipped without running the regex.
    required: frozenset[str] = frozenset()


def _required_words(message: str) -> frozenset[str]:
    """The words of a document message that every match contains (not X, a/b or (123))."""
    required: set[str] = set()
    for token in normalize_text(message).split():
        if re.fullmatch(r"\(\d{4,}\)", token) or "/" in token:
            continue
        required.update(w for w in _words(token) if w != "x")
    return frozenset(required)


def _template_pattern(message: str) -> re.Pattern[str] | None:
    """Compile a document message into a tolerant pattern over normalised words.

    ``X`` in the document is a placeholder for a concrete value; ``a/b`` accepts
    either word or both; punctuation, case and spacing are ignored.
    """
    raw = normalize_text(message)
    parts: list[str] = []
    optional = ""
    for token in raw.split():
        if re.fullmatch(r"\(\d{4,}\)", token):
            # "Customer name cannot be empty (2000637)": merchants retype the words without
            # the number (the number alone is its own exact lookup).
            optional += rf"(?:\s+{token[1:-1]})?"
            continue
        token = token.strip(".,:;!?()\"'“”")
        if not token:
            continue
        if token == "x":
            parts.append(r"\S+")
        elif "/" in token:
            alts = [re.escape(" ".join(_words(a))) for a in token.split("/") if _words(a)]
            parts.append("(?:" + "|".join([*alts, r"\s".join(alts)]) + ")")
        else:
            words = _words(token)
            if words:
                parts.append(r"\s".join(re.escape(w) for w in words))
    content = [w for w in _words(message) if w != "x" and w not in GENERIC_WORDS]
    if len(parts) < 2 or not [w for w in content if w not in STOPWORDS]:
        return None
    return re.compile(r"(?<!\w)" + r"\s+".join(parts) + optional + r"(?!\w)")


def _is_translation(message: str) -> bool:
    # A gloss is an English translation only when the message itself is Nordic
    # (ERROR_MESSAGE's "(followed by details)" is a remark, not something merchants see).
    return any(not ch.isascii() and ch.isalpha() for ch in message)


def _messages_of(entry: Entry) -> list[tuple[str, bool]]:
    """Every message merchants may paste for an entry, flagged True when it is the entry's own."""
    found: list[tuple[str, bool]] = []
    if entry.message:
        found.append((entry.message, True))
        if entry.message_gloss and _is_translation(entry.message):
            found.append((entry.message_gloss, True))
    for part in entry.parts:
        found.append((part.message, False))
        if part.gloss and _is_translation(part.message):
            found.append((part.gloss, False))
    # Pattern titles often quote the message itself: "Invalid grant", "Loaded 0 Articles".
    found.extend((m.group(1), True) for m in _QUOTED.finditer(entry.title))
    return found


class HybridRetriever:
    """Exact lookup, then BM25 + dense fusion, then abstention."""

    def __init__(
        self, index: KnowledgeIndex, embedder: Embeddings, settings: RetrievalSettings
    ) -> None:
        self.index = index
        self.embedder = embedder
        self.settings = settings
        self.entries = index.entries
        self._chunk_entry = np.array(
            [self._entry_pos[c.entry_id] for c in index.chunks], dtype=np.int64
        )
        self._vocabulary_set = frozenset(t for tokens in index.chunk_tokens for t in tokens)
        # An English word is what the merchant meant, even when it is one letter away
        # from a knowledge-base word ("theme" is not "three").
        self._typos = TypoCorrector(self._vocabulary_set, protected=is_english_word)
        self.synonyms = Synonyms(index.synonyms)
        self._vectors: dict[str, np.ndarray] = {}

    @cached_property
    def _raw_vocabulary(self) -> frozenset[str]:
        """Every unstemmed word of the knowledge base (entries as chunked)."""
        return frozenset(w for c in self.index.chunks for w in _words(c.text))

    @cached_property
    def _message_typos(self) -> TypoCorrector:
        """Corrects words of a pasted message towards the words of the documents' messages."""
        words = {w for t in self._templates for w in t.words_of}
        words |= {w for _, spaced, _ in self._code_words for w in spaced.split()}
        return TypoCorrector(
            frozenset(w for w in words if not w.isdigit()), protected=is_english_word
        )

    def correct_message(self, text: str) -> str:
        """The text (as spaced words) with misspelt words replaced by message words."""
        vocabulary = self._raw_vocabulary
        corrector = self._message_typos
        return " ".join(
            w if w in vocabulary or w in corrector.vocabulary else corrector.correct(w)
            for w in text.split()
        )

    @cached_property
    def _entry_pos(self) -> dict[str, int]:
        return {e.id: i for i, e in enumerate(self.entries)}

    @cached_property
    def _code_words(self) -> list[tuple[str, str, str]]:
        """(entry id, code as spaced words, code tail without its system prefix)."""
        out = []
        for e in self.entries:
            if e.code:
                words = " ".join(_words(e.code))
                tail = " ".join(_words(e.code)[1:])
                out.append((e.id, words, tail))
        return out

    @cached_property
    def _templates(self) -> list[_Template]:
        own_messages: dict[str, list[str]] = {}
        for e in self.entries:
            if e.message:
                own_messages.setdefault(" ".join(_words(e.message)), []).append(e.id)
        out = []
        for e in self.entries:
            for message, own in _messages_of(e):
                pattern = _template_pattern(message)
                if pattern is None:
                    continue
                dedicated: list[str] = []
                if not own:
                    for part in e.parts:
                        if message in (part.message, part.gloss):
                            for variant in filter(None, (part.message, part.gloss)):
                                dedicated += own_messages.get(" ".join(_words(variant)), [])
                words = tuple(_words(message))
                out.append(
                    _Template(
                        e.id,
                        pattern,
                        len(words),
                        own,
                        tuple(dedicated),
                        words,
                        _required_words(message),
                    )
                )
        return out

    # -- exact lookups -------------------------------------------------------

    def exact_lookup(self, query: str) -> list[tuple[str, str]]:
        """Entry ids found by identifier or message, strongest evidence first."""
        text = " ".join(_words(query))
        found: list[tuple[str, str, int]] = []  # (entry id, how, strength)
        underscored = {" ".join(_words(t)) for t in re.findall(r"\w+_\w+", normalize_text(query))}
        for entry_id, words, tail in self._code_words:
            if set(words.split()) <= GENERIC_WORDS:
                # ERROR_MESSAGE spelt as words ("an error message about …") is ordinary
                # English; only its underscored form identifies the code.
                if words in underscored:
                    found.append((entry_id, "code", 1000))
                continue
            if re.search(rf"(?<!\w){re.escape(words)}(?!\w)", text):
                found.append((entry_id, "code", 1000))
            elif tail.count(" ") >= 1 and tail in underscored:
                # "fiscal_year error": the underscore marks it as a code fragment.
                found.append((entry_id, "code", 900))
        numbers = set(_DIGITS.findall(query))
        for e in self.entries:
            if e.numeric_code and e.numeric_code in numbers:
                found.append((e.id, "numeric", 950))
        messages = self._match_messages([text])
        if not messages:
            # The message as retyped: with the maintainers' synonyms ("HTTP 429" is "Too many
            # requests") and with misspelt words corrected. Only when the text as typed
            # matched no message, so that a clean paste costs nothing more.
            corrected = self.correct_message(text)
            texts = [*self.synonyms.variants(text), corrected]
            if corrected != text:
                texts += self.synonyms.variants(corrected)
            messages = self._match_messages([t for t in dict.fromkeys(texts) if t != text])
        found += messages
        best: dict[str, tuple[str, int]] = {}
        for entry_id, how, strength in found:
            if entry_id not in best or strength > best[entry_id][1]:
                best[entry_id] = (how, strength)
        ranked = sorted(best.items(), key=lambda kv: -kv[1][1])
        return [(entry_id, how) for entry_id, (how, _) in ranked]

    def _match_messages(self, texts: list[str]) -> list[tuple[str, str, int]]:
        """(entry id, "message", strength) for every document message found in the texts."""
        found: list[tuple[str, str, int]] = []
        word_sets = [set(text.split()) for text in texts]
        for t in self._templates:
            if any(
                t.required <= words and t.pattern.search(text)
                for text, words in zip(texts, word_sets, strict=True)
            ):
                # Longer messages are more specific; an entry's own message beats the same
                # message quoted in a grouped entry.
                found.append((t.entry_id, "message", 500 + 2 * t.words + (1 if t.own else 0)))
                for entry_id in t.dedicated:
                    found.append((entry_id, "message", 500 + 2 * t.words + 1))
        return found

    def rest_of_question(self, query: str, entries: Sequence[Entry]) -> str:
        """The question without the words that identified ``entries`` (code, number, message)."""
        named: set[str] = set()
        for e in entries:
            for text in (e.code or "", e.numeric_code or "", *(m for m, _ in _messages_of(e))):
                named.update(_words(text))
        # A word retyped with a typo, or a synonym of a message's word, named it too.
        synonyms = self.synonyms.covered_words(query)
        return " ".join(
            w
            for w in _words(query)
            if w not in named and self.correct_message(w) not in named and w not in synonyms
        )

    def _also_asked(
        self, query: str, hits: list[Hit], k: int, filters: Filters | None
    ) -> list[Hit]:
        """Entries the rest of the question asks about, beside the ones it names exactly.

        "What's the difference between an Invalid grant error and token expiration?"
        names one error by its message and another in words. The rest of the question is
        searched like any question, abstention included, and only when it still says
        something (a pasted message with a timestamp around it does not).
        """
        if len(hits) >= k:
            return []
        rest = self.rest_of_question(query, [h.entry for h in hits])
        if rest == " ".join(_words(query)):
            return []  # nothing identified by its words: searching it again finds the same
        # "Create invoice failed for order 1042:" is the log line around a message, not a
        # question: numbers and words like "error" or "failed" do not count.
        content = [t for t in tokenize(rest) if not t.isdigit() and t not in GENERIC_WORDS]
        if len(content) < self.settings.also_asked_min_words:
            return []
        found = self.retrieve(rest, k=k, filters=filters)
        if found.abstained or found.reason != "search":
            return []
        # Context around a pasted message ("export order 10458 failed") often passes the
        # ordinary bar; an addition to an answer already found must be clearly asked for.
        # BM25-only search has no confidence figure, so it adds nothing here.
        if found.signals.get("confidence", 0.0) < self.settings.also_asked_min_confidence:
            return []
        named = {h.entry.id for h in hits}
        return [h for h in found.hits if h.entry.id not in named][: k - len(hits)]

    # -- search ---------------------------------------------------------------

    def _search_tokens(self, text: str) -> list[str]:
        """The text's tokens, unknown (likely misspelt) ones mapped to close vocabulary words.

        A real English word is left alone even when its stem is not one: "nothing" is
        stemmed to "noth", which is not a misspelt "both".
        """
        return [
            t if t in self._vocabulary_set or is_english_word(w) else self._typos.correct(t)
            for w, t in word_tokens(text)
        ]

    def _query_vector(self, query: str) -> np.ndarray:
        # A follow-up embeds the same texts again (alone, then with its context); the
        # embedding is the one costly step of a search, so recent ones are kept.
        vector = self._vectors.get(query)
        if vector is None:
            vector = embed_query(self.embedder, query)
            if len(self._vectors) >= 256:
                self._vectors.pop(next(iter(self._vectors)))
            self._vectors[query] = vector
        return vector

    def clear_cache(self) -> None:
        """Forget cached query vectors (benchmarks measure uncached answers)."""
        self._vectors.clear()

    def _entry_scores(self, query: str, tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Best dense and BM25 score per entry (max over the entry's chunks)."""
        n = len(self.entries)
        dense = np.full(n, -1.0, dtype=np.float32)
        bm25 = np.zeros(n, dtype=np.float32)
        if self.settings.mode != "bm25":
            vector = self._query_vector(query)
            np.maximum.at(dense, self._chunk_entry, self.index.dense_scores(vector))
            dense = np.maximum(dense, self.index.title_scores(vector))
        # BM25 is computed in every mode: it costs microseconds and feeds abstention.
        chunk_bm25 = self.index.bm25.scores(tokens)
        np.maximum.at(bm25, self._chunk_entry, chunk_bm25)
        return dense, bm25

    def _keyword(self, bm25: np.ndarray) -> np.ndarray:
        """BM25 scaled to 0..1 (saturating), so it can be added to cosine similarity."""
        return np.minimum(bm25 / self.settings.bm25_saturation, 1.0)

    def _fuse(self, dense: np.ndarray, bm25: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        """Combine the per-entry dense and BM25 scores (disallowed entries get -inf)."""
        s = self.settings
        use_dense, use_bm25 = s.mode != "bm25", s.mode != "dense"
        if s.fusion == "weighted":
            fused = np.zeros(len(self.entries), dtype=np.float64)
            if use_dense:
                fused += s.dense_weight * dense
            if use_bm25:
                fused += s.bm25_weight * self._keyword(bm25)
            return np.where(allowed, fused, -np.inf)
        fused = np.zeros(len(self.entries), dtype=np.float64)
        for scores, weight, used in ((dense, s.dense_weight, use_dense), (bm25, 1.0, use_bm25)):
            if not used or weight == 0:
                continue
            masked = np.where(allowed, scores, -np.inf)
            order = np.argsort(-masked, kind="stable")[: s.candidates]
            for rank, pos in enumerate(order):
                if np.isfinite(masked[pos]) and (scores is dense or scores[pos] > 0):
                    fused[pos] += weight / (s.rrf_k + rank + 1)
        return np.where(allowed, fused, -np.inf)

    def known_share(self, tokens: list[str]) -> float:
        """Share of the question's words that occur anywhere in the knowledge base."""
        if not tokens:
            return 0.0
        return sum(1 for t in tokens if t in self._vocabulary_set) / len(tokens)

    def retrieve(
        self,
        query: str,
        k: int | None = None,
        filters: Filters | None = None,
        prefer: Sequence[str] = (),
        context: str = "",
    ) -> Retrieval:
        """Rank entries for ``query``.

        ``context`` is the conversation's previous question and ``prefer`` the entries
        cited so far; both only weigh in, the new question counts most.
        """
        s = self.settings
        k = k or s.top_k
        if k <= 0:
            raise ValueError(f"k must be a positive number of entries, not {k}.")
        allowed = np.array([matches_filters(e, filters) for e in self.entries], dtype=bool)
        exact = [
            (self._entry_pos[eid], how)
            for eid, how in self.exact_lookup(query)
            if allowed[self._entry_pos[eid]]
        ]
        if exact:
            # Identifiers and messages settle it: no embedding needed (nor model loading),
            # unless the rest of the question asks about something more.
            hits = [Hit(self.entries[pos], 1.0, exact=how) for pos, how in exact[:k]]
            hits += self._also_asked(query, hits, k, filters)
            return Retrieval(query, tuple(hits), False, "exact", {"exact": len(exact)})

        # BM25 gets the original words plus English ones (the guide quotes Swedish messages)
        # and the terms the maintainers' synonyms map them to; the English-only MiniLM model
        # gets the English rendering, synonyms included.
        searched = self.synonyms.expand(query)
        status = self.asks_sync_status(searched)
        total_failure = not status and self.reports_total_failure(searched)
        if status:
            # Where the data should have gone is not the topic: the system-specific entries
            # are problems, and a status question reports none.
            searched = " ".join(w for w in _words(searched) if w not in self._system_words)
            searched = f"{searched} ({STATUS_TERMS})"
        elif total_failure:
            searched = f"{searched} ({TOTAL_FAILURE_TERMS})"
        tokens = self._search_tokens(expand_query(searched))
        dense, bm25 = self._entry_scores(translate_query(searched), tokens)
        if context:
            # The new question counts twice as much as the earlier one: "and if we have two
            # stores?" after a pricing question is about stores, within pricing.
            context = self.synonyms.expand(context)
            context_tokens = self._search_tokens(expand_query(context))
            c_dense, c_bm25 = self._entry_scores(translate_query(context), context_tokens)
            own_dense, own_bm25 = dense, bm25
            dense = (2 * dense + c_dense) / 3
            bm25 = (2 * bm25 + c_bm25) / 3
            # The entries the conversation is about: those its last answer cited and the
            # ones its earlier question ranks closest (a follow-up may correct a wrong
            # first answer: "how big a date range should I start with?").
            about = {self._entry_pos[i] for i in prefer if i in self._entry_pos}
            c_fused = self._fuse(c_dense, c_bm25, allowed)
            about.update(int(p) for p in np.argsort(-c_fused, kind="stable")[: s.suggestions])
        fused = self._fuse(dense, bm25, allowed)
        for entry_id in prefer:
            pos = self._entry_pos.get(entry_id)
            if pos is not None and allowed[pos]:
                # Conversation context: the entry the conversation is about stays in front
                # unless the new question clearly points elsewhere.
                fused[pos] += s.follow_up_boost
                if self._asks_same_for_system(query, self.entries[pos]):
                    # "and what if it's in Visma?" about an entry that lists Visma: the same
                    # question for another of the entry's systems, so the entry stays first.
                    fused[pos] = max(fused[pos], float(np.max(fused)) + s.follow_up_boost)

        order = [int(p) for p in np.argsort(-fused, kind="stable") if np.isfinite(fused[p])]
        if not order:
            return Retrieval(query, (), True, "nothing matches the filters")
        if not context and (total_failure or status):
            # Among the entries that answer about as well as the best (those cited with it),
            # those fitting the kind of question come first: for a failure of everything,
            # the ones describing it; for a status question, which reports no problem, the
            # ones not about a problem (where to check) before those about one ("Why are
            # some orders missing …?").
            close = [p for p in order if fused[p] >= s.related_ratio * fused[order[0]]]
            if total_failure:
                fitting = [p for p in close if self._describes_total_failure[p]]
            else:
                fitting = [p for p in close if not self.reports_problem(self.entries[p].title)]
            order = fitting + [p for p in order if p not in fitting]
        best_fused = fused[order].max()  # the best score, whichever entry now comes first
        # A follow-up is as answerable as the conversation it continues, but only about
        # what the conversation is about: moving to another entry, the question is judged
        # on its own words, as if asked first ("Is there a discount for non-profits?" after
        # a fiscal-year error is not lifted by the fiscal-year answer's confidence).
        follow_up = bool(context) and order[0] in about
        if follow_up:
            signal_dense, signal_bm25 = np.maximum(dense, c_dense), np.maximum(bm25, c_bm25)
        elif context:
            signal_dense, signal_bm25 = own_dense, own_bm25
        else:
            signal_dense, signal_bm25 = dense, bm25
        closest = tuple(self.entries[p].id for p in order[:_CLOSEST])
        scale = self._score_scale()

        def hit(pos: int) -> Hit:
            return Hit(
                entry=self.entries[pos],
                # One 0..1 scale with exact hits (1.0): the fused score over its maximum.
                score=float(min(max(fused[pos] / scale, 0.0), 1.0)),
                dense=float(dense[pos]),
                bm25=float(bm25[pos]),
            )

        # Signals are taken from all entries passing the filters, whatever the ranking mode,
        # so that one calibration serves hybrid, dense and BM25 ranking alike.
        best_dense = float(np.max(np.where(allowed, signal_dense, -1.0)))
        best_keyword = float(np.max(np.where(allowed, self._keyword(signal_bm25), 0.0)))
        uncovered = self.uncovered_words(query)
        signals = {
            "fused": float(best_fused),
            "dense": best_dense,
            "keyword": best_keyword,
            "known": self.known_share_of(f"{query} {context}" if follow_up else query),
            "uncovered": float(len(uncovered)),
            "general": float(self.asks_general_fact(query)),
            "named": float(bool(set(_words(query)) & (self._system_words | {"junipeer"}))),
        }
        outcome, reason = self._decide(signals, follow_up)
        if outcome == "answer":
            hits = [hit(order[0])]
            for pos in order[1:k]:
                if best_fused > 0 and fused[pos] >= s.related_ratio * best_fused:
                    hits.append(hit(pos))
            return Retrieval(
                query, tuple(hits), False, "search", signals, "answer", (), uncovered, closest
            )
        related = ()
        if outcome == "suggest":
            related = tuple(hit(pos) for pos in order[: s.suggestions])
        elif not context and (implied := self._about_junipeer(query)):
            # "Can I cancel my subscription?" asked of Junipeer's support is about the
            # merchant's Junipeer subscription: a near miss to name, with the closest
            # entries, not nothing. Read that way it may at most be suggested: the
            # question itself did not say so.
            found = self.retrieve(implied, k=k, filters=filters)
            if found.outcome != "none" and found.reason != "exact":
                related = (found.related or found.hits)[: s.suggestions]
                reason = f"{reason}; read as about Junipeer: {found.reason or 'answered'}"
                return Retrieval(
                    query, (), True, reason, signals, "suggest", related, uncovered, closest
                )
        return Retrieval(query, (), True, reason, signals, outcome, related, uncovered, closest)

    def _about_junipeer(self, query: str) -> str:
        """The question with "Junipeer" before what the merchant calls theirs, or "".

        Only for a question naming the merchant's own things ("my subscription", "our
        plan") and neither Junipeer nor a system the documents name.
        """
        words = set(_words(query))
        if "junipeer" in words or words & self._system_words:
            return ""
        implied, count = _OWN_THING.subn(r"\g<1> Junipeer \g<2>", query, count=1)
        return implied if count else ""

    def _score_scale(self) -> float:
        """The highest fused score possible, which maps to 1.0."""
        s = self.settings
        use_dense, use_bm25 = s.mode != "bm25", s.mode != "dense"
        if s.fusion == "weighted":
            top = s.dense_weight * use_dense + s.bm25_weight * use_bm25
        else:
            top = (s.dense_weight * use_dense + 1.0 * use_bm25) / (s.rrf_k + 1)
        top += s.follow_up_boost
        return top if top > 0 else 1.0

    def known_share_of(self, text: str) -> float:
        """Share of the text's words the knowledge base knows, synonyms counting as known."""
        translated = translate_query(text)
        covered = set(tokenize(" ".join(self.synonyms.covered_words(translated))))
        tokens = self._search_tokens(translated)
        if not tokens:
            return 0.0
        return sum(1 for t in tokens if t in self._vocabulary_set or t in covered) / len(tokens)

    def written_in_words(self, text: str) -> bool:
        """True when the text is language: two words or more, two in three of them real.

        Real: in the English word list or the knowledge base. "asdfgh qwerty" is not, nor
        is "asdf qwerty hjkl" (one real word, as keyboard mash often has: "qwerty").
        """
        words = _WORD_RE.findall(normalize_text(translate_query(text)))
        if len(words) < 2:
            return False
        real = sum(1 for w in words if w in self._raw_vocabulary or is_english_word(w))
        return real * 3 >= len(words) * 2

    def uncovered_words(self, text: str) -> tuple[str, ...]:
        """Words of the question the knowledge base never uses, even allowing for typos.

        "How do I cancel my Junipeer subscription?" → ("subscription",). Words a synonym
        maps onto the documents, numbers and short words do not count.
        """
        translated = translate_query(text)
        covered = self.synonyms.covered_words(translated)
        out: dict[str, None] = {}
        for word in _WORD_RE.findall(normalize_text(translated)):
            if len(word) < 3 or word.isdigit() or word in STOPWORDS or word in covered:
                continue
            # Cheapest first: the English word list is only read when it is needed.
            if word in self._raw_vocabulary or word in _CONTRACTED:
                continue
            token = tokenize(word)
            if token and self._typos.correct(token[0]) in self._vocabulary_set:
                continue
            if word in _TOPIC_FREE or is_everyday_word(word):
                continue
            out[word] = None
        return tuple(out)

    @cached_property
    def _system_words(self) -> frozenset[str]:
        """Words that name a system ("visma", "fortnox", "central"), not "business" or "net"."""
        generic = {"business", "one", "net", "junipeer"}
        return frozenset(
            w
            for name in systems_of(self.entries)
            if not name.casefold().startswith("all ")  # "All OAuth-based connectors"
            for w in _words(name)
            if w not in generic
        )

    def _asks_same_for_system(self, query: str, entry: Entry) -> bool:
        """True when the query only names a system the entry lists ("and in Visma?").

        Words that say nothing but "the same, there" may come with it; anything else
        ("and what about refunds in Visma?") asks something new.
        """
        words = [w for w in _words(query) if len(w) > 1 and w not in STOPWORDS]
        named = {w for w in words if w in self._system_words}
        if not named:
            return False
        listed = set(_words(" ".join((*system_names_of(entry), entry.systems_text or ""))))
        rest = [
            w
            for w in words
            if w not in self._system_words and w not in _TOPIC_FREE and w not in _SAME_WORDS
        ]
        return bool(named & listed) and not rest

    @staticmethod
    def reports_problem(text: str) -> bool:
        """True when the question reports something going wrong ("every sync fails")."""
        return any(w in _PROBLEM_WORDS for w in _WORD_RE.findall(normalize_text(text)))

    @cached_property
    def _describes_total_failure(self) -> list[bool]:
        """Per entry: does it describe every sync failing at once?"""
        return [
            bool(_TOTAL_FAILURE.search(" ".join(filter(None, (e.cause, e.solution, e.text)))))
            for e in self.entries
        ]

    @staticmethod
    def reports_total_failure(text: str) -> bool:
        """True when the question reports that everything fails ("every task fails")."""
        text = normalize_text(translate_query(text))
        # "error" names a thing as often as it reports one ("a list of all error codes").
        words = set(_WORD_RE.findall(text)) - {"error", "errors"}
        return bool(words & _PROBLEM_WORDS) and bool(_TOTALITY.search(text))

    @staticmethod
    def asks_sync_status(text: str) -> bool:
        """True when the question asks whether something synced and reports no problem."""
        if not _STATUS_QUESTION.search(normalize_text(text)):
            return False
        words = set(_WORD_RE.findall(normalize_text(text)))
        return bool(words & _SYNC_STATE_WORDS) and not HybridRetriever.reports_problem(text)

    @staticmethod
    def asks_general_fact(text: str) -> bool:
        """True for a question after a fact that names nobody involved.

        "Which countries use the euro as their currency?" asks about the world, not about
        a merchant's integration, so an entry sharing its words does not answer it.
        A question reporting a problem is never one.
        """
        if not _FACT_QUESTION.match(text):
            return False
        words = re.findall(r"[\w']+", normalize_text(text).replace("’", "'"))
        return not any(w in _PEOPLE for w in words) and not HybridRetriever.reports_problem(text)

    def confidence(self, signals: dict[str, float]) -> float:
        """How sure we are that the knowledge base answers the question (not a probability)."""
        s = self.settings
        dense = max(signals["dense"], 0.0)
        return dense + s.bm25_weight * signals["keyword"] + s.known_weight * signals["known"]

    def _decide(self, signals: dict[str, float], follow_up: bool) -> tuple[Outcome, str]:
        """The outcome of a search and, unless it answers, why.

        Below ``min_confidence`` the knowledge base may not cover the question: the
        closest entries are suggested down to ``suggest_min_confidence``, below which
        nothing is related. A question with words the knowledge base never uses is a
        near miss ("cancel my subscription" finds the pricing entry) unless the
        confidence clears the higher ``uncovered_min_confidence``. A question after a general
        fact that names nobody involved ("which countries use the euro?") needs that
        higher bar too, and ``unnamed_fact_min_confidence`` when it names neither Junipeer
        nor a system the documents cover ("What is the VAT rate in Germany?"). A follow-up is
        judged with its conversation, by the first bars.
        """
        s = self.settings
        if s.mode == "bm25":
            # No embedding in BM25-only mode: judge by the keyword signals alone.
            if signals["keyword"] < 0.35 or signals["known"] < 0.5:
                return "none", "too few of the question's words match any entry"
            return "answer", ""
        confidence = self.confidence(signals)
        signals["confidence"] = confidence
        if confidence < s.suggest_min_confidence:
            return "none", f"confidence {confidence:.2f} is below {s.suggest_min_confidence}"
        if confidence < s.min_confidence:
            return "suggest", f"confidence {confidence:.2f} is below {s.min_confidence}"
        if (
            not follow_up
            and signals.get("general")
            and not signals.get("named")
            and confidence < s.unnamed_fact_min_confidence
        ):
            # A fact about the world ("What is the VAT rate in Germany?"): an entry that
            # shares its words is about a merchant's integration, not about Germany.
            return "suggest", (
                "the question asks a general fact and names neither Junipeer nor a system "
                f"the documents cover; confidence {confidence:.2f} is below "
                f"{s.unnamed_fact_min_confidence}"
            )
        if follow_up or confidence >= s.uncovered_min_confidence:
            return "answer", ""
        if signals["uncovered"]:
            return "suggest", (
                f"the question has words no entry uses and confidence {confidence:.2f} is "
                f"below {s.uncovered_min_confidence}"
            )
        if signals.get("general"):
            return "suggest", (
                f"the question asks a general fact and confidence {confidence:.2f} is "
                f"below {s.uncovered_min_confidence}"
            )
        return "answer", ""
