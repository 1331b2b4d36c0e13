"""supportbot's retrieval as a langchain ``BaseRetriever``, for chains built on langchain.

Kept apart from ``bot/retrieval.py`` because importing langchain's runnables costs a
few hundred milliseconds that answering questions does not need.
"""

from __future__ import annotations

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from bot.answer_types import Filters
from bot.retrieval import Hit, HybridRetriever
from ingest.chunking import render_entry


def hit_to_document(hit: Hit) -> Document:
    """A langchain Document for an entry hit; metadata hold the entry's fields."""
    metadata = hit.entry.to_dict()
    metadata.update(score=hit.score, dense=hit.dense, bm25=hit.bm25, exact=hit.exact)
    return Document(page_content=render_entry(hit.entry), metadata=metadata, id=hit.entry.id)


class KnowledgeRetriever(BaseRetriever):
    """langchain ``BaseRetriever`` over supportbot's hybrid retrieval.

    Returns no documents when the retriever abstains, so chains built on it
    cannot answer from irrelevant entries.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: HybridRetriever
    k: int = 3
    filters: Filters | None = None

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        result = self.retriever.retrieve(query, k=self.k, filters=self.filters)
        return [hit_to_document(h) for h in result.hits]
