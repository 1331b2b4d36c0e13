"""Keyword side of retrieval: tokenisation and an Okapi BM25 index.

Tokens are stored in ``chunks.json`` and the BM25 statistics are recomputed on
load (cheap for a knowledge base of this size), so nothing needs pickling and
the index and the query use the very same tokeniser.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from importlib import resources

import numpy as np

# \w is Unicode-aware, so å ä ö ø stay inside words; underscores split codes
# like FORTNOX_FISCAL_YEAR into words a merchant would type.
_WORD = re.compile(r"[^\W_]+", re.UNICODE)

STOPWORDS = frozenset(
    """
    a an and are as at be been but by can could do does did for from has have how i if in into
    is it its me my no not of on or our so some that the their them then there these this to
    was we were what when where which who why will with you your yes also any all may might
    should would am get got getting help please hi hello hey thanks thank just still keep keeps
    again dont don't im i'm ive it's cant can't wont won't
    och det att en är som på för med inte av till den har jag vad ska gör hur er kan ett min
    mitt mina vi från om de ikke jeg hva hvordan være vår våra når när hvorfor varför
    """.split()
)


def normalize_text(text: str) -> str:
    """Unicode-normalise and casefold; the basis of every comparison we make."""
    return unicodedata.normalize("NFKC", text).casefold()


def _stem(token: str) -> str:
    # A deliberately light English stemmer: enough to join "orders"/"order" and
    # "syncing"/"sync" without mangling product names or Swedish words.
    for suffix in ("ing", "es", "s", "ed"):
        if len(token) > len(suffix) + 3 and token.endswith(suffix):
            return token[: -len(suffix)]
    return token


def tokenize(text: str) -> list[str]:
    """Split into lowercase, lightly stemmed word tokens, stopwords removed."""
    return [token for _, token in word_tokens(text)]


def word_tokens(text: str) -> list[tuple[str, str]]:
    """(word, token) pairs of :func:`tokenize`: each token with the word it was stemmed from."""
    words = _WORD.findall(normalize_text(text))
    return [(w, _stem(w)) for w in words if w not in STOPWORDS]


class BM25:
    """Okapi BM25 over pre-tokenised documents."""

    def __init__(self, docs: list[list[str]], k1: float = 1.5, b: float = 0.75) -> None:
        self.k1 = k1
        self.b = b
        self.size = len(docs)
        self.lengths = np.array([len(d) for d in docs], dtype=np.float32)
        self.avg_length = float(self.lengths.mean()) if self.size else 0.0
        self.term_freqs = [Counter(d) for d in docs]
        df: Counter[str] = Counter()
        for doc in docs:
            df.update(set(doc))
        # The "+1" form of idf keeps every weight positive, even for common terms.
        self.idf = {t: math.log(1 + (self.size - n + 0.5) / (n + 0.5)) for t, n in df.items()}
        postings: dict[str, list[int]] = {}
        for i, tf in enumerate(self.term_freqs):
            for term in tf:
                postings.setdefault(term, []).append(i)
        self.postings = postings

    def scores(self, query_tokens: list[str]) -> np.ndarray:
        """BM25 score of every document for the query."""
        out = np.zeros(self.size, dtype=np.float32)
        if not self.size:
            return out
        norm = self.k1 * (1 - self.b + self.b * self.lengths / max(self.avg_length, 1e-9))
        for term in set(query_tokens):
            idf = self.idf.get(term)
            if idf is None:
                continue
            for i in self.postings[term]:
                tf = self.term_freqs[i][term]
                out[i] += idf * tf * (self.k1 + 1) / (tf + norm[i])
        return out


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


# Words at least this frequent in the English word list (counted in subtitles) are
# everyday words ("now", "way", "says") that never name what a question is about.
EVERYDAY_WORD_COUNT = 300_000


@lru_cache(maxsize=1)
def english_words() -> dict[str, int]:
    """Lowercase English words with their frequency (pyspellchecker's list, ~160,000 words).

    A typo corrector must leave real words alone: "theme" is not a misspelt "three".
    The list ships inside the pyspellchecker package as gzipped JSON; it is read on
    first use (~0.2 s), which only questions with a word the corpus lacks ever need.
    """
    raw = resources.files("spellchecker").joinpath("resources/en.json.gz").read_bytes()
    counts: dict[str, int] = json.loads(gzip.decompress(raw))
    return counts


def is_english_word(word: str) -> bool:
    """True for a word of the English word list (casefolded)."""
    return word.casefold() in english_words()


def is_everyday_word(word: str) -> bool:
    """True for a very frequent English word, which says nothing about a question's topic."""
    return english_words().get(word.casefold(), 0) >= EVERYDAY_WORD_COUNT


class TypoCorrector:
    """Maps a misspelt word to a known one within one edit (symmetric-delete lookup).

    One edit is a missing, extra (doubled), wrong or swapped letter. ``difflib`` compares
    against every word and took hundreds of milliseconds on long pasted log lines; the
    delete index answers in microseconds. Words for which ``protected`` is true (real
    English words) are never changed.
    """

    def __init__(
        self,
        vocabulary: set[str] | frozenset[str],
        min_length: int = 4,
        protected: Callable[[str], bool] | None = None,
    ) -> None:
        self.vocabulary = frozenset(vocabulary)
        self.min_length = min_length
        self.protected = protected
        index: dict[str, set[str]] = {}
        for word in self.vocabulary:
            if len(word) < min_length:
                continue
            for variant in _deletes(word) | {word}:
                index.setdefault(variant, set()).add(word)
        self._index = index

    def correct(self, token: str) -> str:
        """The token itself if known or too short, else the closest known word, else the token."""
        if token in self.vocabulary or len(token) < self.min_length or token.isdigit():
            return token
        candidates: set[str] = set()
        for variant in _deletes(token) | {token}:
            candidates |= self._index.get(variant, set())
        if not candidates or (self.protected is not None and self.protected(token)):
            return token
        # Prefer the same length (a substitution or transposition), then alphabetical for
        # determinism.
        return min(candidates, key=lambda w: (abs(len(w) - len(token)), w))
