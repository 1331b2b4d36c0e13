"""supportbot's retrieval as a langchain ``BaseRetriever``, for chains built on langchain.

Kept apart from ``bot/retrieval.py`` because importing langchain's runnables costs a
few hundred milliseconds that answering questions does not need.

The contract, checked with langchain's own ``RetrieversIntegrationTests``
(``tests/test_langchain_retriever.py``):

- ``invoke(query, k=..., filters=...)`` overrides the constructor's ``k`` and
  ``filters`` for one call; ``k`` must be a positive integer;
- ``ainvoke`` runs the search in a worker thread (it is CPU-bound), so an event loop
  is never blocked;
- up to ``k`` documents: fewer on purpose when only one entry matches (an exact
  error code or message), none when the knowledge base does not answer the question;
- every document's metadata is plain JSON (lists, not tuples) with ``source`` as
  ``file:line`` (as citations have), ``score`` on one 0..1 scale for exact and searched
  hits, and the retrieval's ``outcome`` and ``reason``;
- :meth:`KnowledgeRetriever.search` returns the outcome and reason of an abstention too
  (``invoke`` then returns ``[]``), and the suggested entries of a "suggest" outcome.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, field_validator

from bot.answer_types import Filters
from bot.retrieval import Hit, HybridRetriever, Retrieval
from ingest.chunking import render_entry

FilterInput = Filters | Mapping[str, str | Sequence[str]] | None
_FILTER_KEYS = ("severity", "system", "kind")


def hit_to_document(hit: Hit, result: Retrieval | None = None) -> Document:
    """A langchain Document for an entry hit; metadata hold the entry's fields as JSON."""
    entry = hit.entry
    # A JSON round trip turns tuples into lists, so the metadata survive serialisation
    # (langchain's dumps/loads, a vector store, an HTTP API) unchanged.
    metadata: dict[str, Any] = json.loads(json.dumps(entry.to_dict(), ensure_ascii=False))
    metadata.update(
        file=entry.source,
        source=f"{entry.source}:{entry.line}",
        score=round(float(hit.score), 4),
        dense=round(float(hit.dense), 4),
        bm25=round(float(hit.bm25), 4),
        exact=hit.exact,
    )
    if result is not None:
        metadata.update(outcome=result.outcome, reason=result.reason)
    return Document(page_content=render_entry(entry), metadata=metadata, id=entry.id)


def check_k(k: object) -> int:
    """``k`` as a positive int, or ValueError (0 or a negative k must not mean "default")."""
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ValueError(f"k must be a positive integer, not {k!r}.")
    return k


def to_filters(filters: FilterInput) -> Filters | None:
    """Filters from a ``Filters`` or a mapping with the keys severity, system and kind."""
    if filters is None or isinstance(filters, Filters):
        return filters
    if not isinstance(filters, Mapping):
        raise TypeError("filters must be a Filters or a mapping of severity, system, kind.")
    unknown = set(filters) - set(_FILTER_KEYS)
    if unknown:
        raise ValueError(
            f"Unknown filter {', '.join(sorted(map(str, unknown)))}; use {', '.join(_FILTER_KEYS)}."
        )
    values: dict[str, tuple[str, ...]] = {}
    for key in _FILTER_KEYS:
        value = filters.get(key, ())
        values[key] = (value,) if isinstance(value, str) else tuple(str(v) for v in value)
    return Filters(**values)


@dataclass(frozen=True)
class RetrieverResult:
    """Documents plus what decided them: the outcome, its reason and any suggestions."""

    documents: list[Document]
    outcome: str
    reason: str
    related: list[Document]


class KnowledgeRetriever(BaseRetriever):
    """langchain ``BaseRetriever`` over supportbot's hybrid retrieval.

    Returns no documents when the retriever abstains, so chains built on it cannot
    answer from irrelevant entries; :meth:`search` says why.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: HybridRetriever
    k: int = Field(default=3, description="Most documents returned (a positive integer).")
    filters: Filters | None = None

    @field_validator("k", mode="before")
    @classmethod
    def _check_k(cls, k: object) -> int:
        return check_k(k)

    @field_validator("filters", mode="before")
    @classmethod
    def _check_filters(cls, filters: FilterInput) -> Filters | None:
        return to_filters(filters)

    def search(
        self, query: str, k: int | None = None, filters: FilterInput = None
    ) -> RetrieverResult:
        """Retrieve with the outcome: documents, or an abstention with its reason."""
        k = self.k if k is None else check_k(k)
        chosen = self.filters if filters is None else to_filters(filters)
        result = self.retriever.retrieve(query, k=k, filters=chosen)
        return RetrieverResult(
            documents=[hit_to_document(h, result) for h in result.hits],
            outcome=result.outcome or "none",
            reason=result.reason,
            related=[hit_to_document(h, result) for h in result.related],
        )

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        filters: FilterInput = None,
    ) -> list[Document]:
        return self.search(query, k, filters).documents

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        filters: FilterInput = None,
    ) -> list[Document]:
        # The search is CPU-bound (an embedding, a few vector products): a worker thread
        # keeps the caller's event loop serving other requests meanwhile.
        result = await asyncio.to_thread(self.search, query, k, filters)
        return result.documents
