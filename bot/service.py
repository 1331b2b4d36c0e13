"""Composition root: builds the bot's parts from Settings, once per process.

``bot/cli.py`` and ``bot/app.py`` call :meth:`SupportBot.from_settings`; every
other module receives what it needs as arguments.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from langchain_core.embeddings import Embeddings

from bot.answer import answer_question, draft_reply, support_contacts
from bot.answer_types import Answer, Draft, DraftStyle, Filters, Turn
from bot.config import Settings
from bot.retrieval import HybridRetriever, systems_of
from ingest.embedding import LazyEmbeddings
from ingest.index import IndexConfig, KnowledgeIndex, Progress, open_index

if TYPE_CHECKING:  # importing langchain's model and runnable classes costs ~0.5 s
    from langchain_core.language_models import BaseChatModel

    from bot.langchain_retriever import KnowledgeRetriever

log = logging.getLogger(__name__)


def index_config(settings: Settings) -> IndexConfig:
    """The index parameters derived from settings (used by ingest and load alike)."""
    return IndexConfig(
        corpus_dir=settings.corpus.dir,
        model=settings.embedding.model,
        chunk_tokens=settings.index.chunk_tokens,
        encoding=settings.index.encoding,
        max_file_bytes=settings.corpus.max_file_bytes,
    )


def load_embedder(settings: Settings) -> Embeddings:
    """The configured embedding model, loaded on its first use (see ``LazyEmbeddings``)."""
    e = settings.embedding
    return LazyEmbeddings(e.model, e.device, e.batch_size, e.threads, e.query_encoder)


def load_chat_model(settings: Settings) -> BaseChatModel | None:
    """The optional LLM for answer phrasing; None unless enabled in settings."""
    if not settings.llm.enabled:
        return None
    from bot.llm import build_chat_model

    return build_chat_model(settings.llm)


class SupportBot:
    """The whole answering pipeline, assembled from its parts."""

    def __init__(
        self,
        settings: Settings,
        index: KnowledgeIndex,
        embedder: Embeddings,
        chat_model: BaseChatModel | None = None,
    ) -> None:
        self.settings = settings
        self.index = index
        self.embedder = embedder
        self.chat_model = chat_model
        if isinstance(embedder, LazyEmbeddings):
            # Questions may be embedded by another implementation than the index was
            # built with: it must first reproduce some of the index's own vectors.
            embedder.expect(*index.reference_vectors())
        self.retriever = HybridRetriever(index, embedder, settings.retrieval)

    @classmethod
    def from_settings(cls, settings: Settings, progress: Progress | None = None) -> SupportBot:
        """Load the model and the index (building it if needed and allowed)."""
        embedder = load_embedder(settings)
        index = open_index(
            settings.index.dir,
            index_config(settings),
            embedder,
            auto_rebuild=settings.index.auto_rebuild,
            progress=progress,
        )
        return cls(settings, index, embedder, load_chat_model(settings))

    def swap_index(self, index: KnowledgeIndex) -> None:
        """Serve ``index`` from now on (a newer build of the same model and chunking).

        Questions being answered keep the retriever they started with; the next ones
        use the new index. Built fully before the switch, which is one assignment.
        """
        old = self.index.manifest
        if isinstance(self.embedder, LazyEmbeddings) and (
            index.manifest.get("model"),
            index.manifest.get("dimension"),
        ) != (old.get("model"), old.get("dimension")):
            self.embedder.expect(*index.reference_vectors())
        retriever = HybridRetriever(index, self.embedder, self.settings.retrieval)
        self.index, self.retriever = index, retriever

    def answer(
        self,
        question: str,
        history: Sequence[Turn] = (),
        filters: Filters | None = None,
        k: int | None = None,
    ) -> Answer:
        """Answer a merchant's question with citations, or abstain."""
        return answer_question(
            question,
            self.retriever,
            self.settings,
            history=history,
            filters=filters,
            k=k,
            chat_model=self.chat_model,
        )

    def draft(
        self,
        ticket: str,
        style: DraftStyle = "default",
        filters: Filters | None = None,
    ) -> Draft:
        """Turn a merchant's ticket into a ready-to-send reply for a support agent."""
        return draft_reply(ticket, self.retriever, self.settings, style=style, filters=filters)

    def support_contacts(self) -> str:
        """Markdown with the support contacts from the FAQ."""
        return support_contacts(self.index.entries, self.settings.answer)

    def systems(self) -> list[str]:
        """Every system named in the knowledge base, for filter menus."""
        return systems_of(self.index.entries)

    def warm_up(self) -> None:
        """Load the model and the word list and run one query now, so the first answer is fast."""
        from ingest.keyword import english_words

        # Typo correction reads the English word list on first need (~0.3 s).
        english_words()
        self.answer("warm up: how do I check if my data has been synced?")

    def with_retrieval_mode(self, mode: str) -> SupportBot:
        """The same bot (sharing model and index) searching with another method."""
        return self.with_retrieval(mode=mode)

    def with_retrieval(self, **changes: object) -> SupportBot:
        """The same bot (sharing model and index) with other retrieval settings."""
        settings = self.settings.model_copy(deep=True)
        settings.retrieval = settings.retrieval.model_validate(
            {**settings.retrieval.model_dump(), **changes}
        )
        return SupportBot(settings, self.index, self.embedder, self.chat_model)

    def as_langchain_retriever(self, k: int | None = None) -> KnowledgeRetriever:
        """The retriever as a langchain ``BaseRetriever`` (Documents with entry metadata)."""
        from bot.langchain_retriever import KnowledgeRetriever

        top_k = self.settings.retrieval.top_k if k is None else k
        return KnowledgeRetriever(retriever=self.retriever, k=top_k)
