"""Build, persist and load the knowledge index (FAISS + BM25 + entries + manifest).

The same module writes and reads the index, and the manifest records
everything the index depends on (model, dimension, corpus hashes, chunking),
so a stale or tampered index is detected on load instead of answering from
old data. Writes are atomic: each build goes to its own folder and the
``current`` link is switched only once the build is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from filelock import FileLock, Timeout
from langchain_core.embeddings import Embeddings

from ingest.chunking import Chunk, chunk_entries, heading_text, token_counter
from ingest.entries import Entry, ParseIssue
from ingest.keyword import BM25, tokenize
from ingest.parse import SYNONYMS_FILE, SynonymRule, parse_document, parse_synonyms

log = logging.getLogger(__name__)

# 3: synonyms.json (the corpus's synonyms file, parsed) is part of every build.
FORMAT_VERSION = 3
CURRENT_LINK = "current"
LOCK_NAME = ".ingest.lock"
CORPUS_SUFFIXES = (".txt", ".md")
INDEX_FILES = ("faiss.index", "titles.index", "entries.json", "chunks.json", "synonyms.json")

Progress = Callable[[int, int], None]


class IndexUnavailableError(RuntimeError):
    """Base of the index problems a user can fix by (re)building the index."""


class MissingIndexError(IndexUnavailableError):
    """No index has been built yet."""


class StaleIndexError(IndexUnavailableError):
    """The index was built from another corpus or configuration."""


class CorruptIndexError(IndexUnavailableError):
    """An index file is unreadable, truncated or does not match its checksum."""


class CorpusError(RuntimeError):
    """The corpus yields nothing to index."""


@dataclass(frozen=True)
class IndexConfig:
    """The parameters an index depends on; a mismatch on load means it is stale."""

    corpus_dir: Path
    model: str
    chunk_tokens: int
    encoding: str
    max_file_bytes: int = 5_000_000


@dataclass(frozen=True)
class CorpusFile:
    """One corpus file as read from disk."""

    name: str
    sha256: str
    text: str | None  # None when unreadable (binary, not UTF-8, too large)


@dataclass
class KnowledgeIndex:
    """Everything retrieval needs, in memory."""

    entries: list[Entry]
    chunks: list[Chunk]
    vectors: faiss.Index
    titles: faiss.Index  # one vector per entry (its heading), in entry order
    manifest: dict[str, Any]
    issues: list[ParseIssue] = field(default_factory=list)
    # The maintainers' vocabulary from corpus/synonyms.txt (see ingest/synonyms.py).
    synonyms: tuple[SynonymRule, ...] = ()

    def __post_init__(self) -> None:
        self.by_id = {e.id: e for e in self.entries}
        self.chunk_tokens = [tokenize(c.text) for c in self.chunks]
        self.bm25 = BM25(self.chunk_tokens)

    def dense_scores(self, query_vector: np.ndarray) -> np.ndarray:
        """Cosine similarity of the query to every chunk, in chunk order.

        The vectors are unit length, so inner product equals cosine similarity;
        with ~100 chunks an exhaustive search is both exact and fastest.
        """
        return _all_scores(self.vectors, query_vector)

    def title_scores(self, query_vector: np.ndarray) -> np.ndarray:
        """Cosine similarity of the query to every entry's heading, in entry order.

        Questions are phrased like headings (a FAQ question, an error's name), and a
        heading's vector is not diluted by the entry's long solution text.
        """
        return _all_scores(self.titles, query_vector)

    def reference_vectors(self, n: int = 3) -> tuple[list[str], np.ndarray]:
        """A few texts with the vectors this index holds for them.

        Lets a query encoder prove it embeds exactly as the index was built: ``n``
        short entry headings, plus the longest chunk, whose length exercises the
        model's later positions, which the headings never reach.
        """
        n = min(n, len(self.entries))
        texts = [heading_text(e) for e in self.entries[:n]]
        vectors = [self.titles.reconstruct_n(0, n)]
        if self.chunks:
            longest = max(range(len(self.chunks)), key=lambda i: len(self.chunks[i].text))
            texts.append(self.chunks[longest].text)
            vectors.append(self.vectors.reconstruct(longest).reshape(1, -1))
        return texts, np.vstack(vectors)


def _all_scores(index: faiss.Index, query_vector: np.ndarray) -> np.ndarray:
    q = np.asarray(query_vector, dtype=np.float32).reshape(1, -1)
    scores, ids = index.search(q, index.ntotal)
    out = np.zeros(index.ntotal, dtype=np.float32)
    out[ids[0]] = scores[0]
    return out


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_corpus(corpus_dir: Path, max_file_bytes: int) -> tuple[list[CorpusFile], list[ParseIssue]]:
    """Read every corpus file, reporting (not raising on) unreadable ones."""
    if not corpus_dir.is_dir():
        raise CorpusError(f"Corpus folder {corpus_dir} does not exist.")
    files: list[CorpusFile] = []
    issues: list[ParseIssue] = []
    for path in sorted(corpus_dir.iterdir()):
        if path.suffix.lower() not in CORPUS_SUFFIXES or not path.is_file():
            continue
        if path.stat().st_size > max_file_bytes:
            # Checked before reading, so an oversized file never sits in memory.
            issues.append(
                ParseIssue(path.name, 0, f"file is larger than {max_file_bytes} bytes", "error")
            )
            files.append(CorpusFile(path.name, _sha256_file(path), None))
            continue
        data = path.read_bytes()
        digest = sha256_bytes(data)
        if b"\x00" in data:
            issues.append(ParseIssue(path.name, 0, "file is binary, not text", "error"))
            files.append(CorpusFile(path.name, digest, None))
            continue
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            issues.append(ParseIssue(path.name, line, "file is not valid UTF-8", "error"))
            files.append(CorpusFile(path.name, digest, None))
            continue
        files.append(CorpusFile(path.name, digest, text))
    return files, issues


def parse_corpus(files: list[CorpusFile]) -> tuple[list[Entry], list[ParseIssue]]:
    """Parse every readable corpus file; duplicate entry ids are reported and dropped."""
    entries: list[Entry] = []
    issues: list[ParseIssue] = []
    seen: dict[str, Entry] = {}
    for f in files:
        if f.text is None or f.name == SYNONYMS_FILE:
            continue
        result = parse_document(f.text, f.name)
        issues.extend(result.issues)
        for entry in result.entries:
            if entry.id in seen:
                first = seen[entry.id]
                issues.append(
                    ParseIssue(
                        f.name,
                        entry.line,
                        f"duplicate entry {entry.id!r} (first at {first.source}:{first.line})",
                    )
                )
                continue
            seen[entry.id] = entry
            entries.append(entry)
    return entries, issues


def parse_corpus_synonyms(
    files: list[CorpusFile],
) -> tuple[tuple[SynonymRule, ...], list[ParseIssue]]:
    """The rules of the corpus's synonyms file (none when there is no such file)."""
    for f in files:
        if f.name == SYNONYMS_FILE and f.text is not None:
            return parse_synonyms(f.text, f.name)
    return (), []


def _normalized(vectors: list[list[float]]) -> np.ndarray:
    arr = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    # Fake or foreign embedders may not normalise; inner product needs unit vectors.
    return arr / np.maximum(norms, 1e-12)


def embed_query(embedder: Embeddings, text: str) -> np.ndarray:
    """Embed a query exactly as chunks were embedded at build time (unit length)."""
    return _normalized([embedder.embed_query(text)])[0]


def build_index(
    config: IndexConfig,
    embedder: Embeddings,
    progress: Progress | None = None,
) -> KnowledgeIndex:
    """Parse, chunk and embed the corpus into an in-memory index."""
    files, issues = read_corpus(config.corpus_dir, config.max_file_bytes)
    entries, parse_issues = parse_corpus(files)
    issues.extend(parse_issues)
    synonyms, synonym_issues = parse_corpus_synonyms(files)
    issues.extend(synonym_issues)
    if not entries:
        detail = "; ".join(str(i) for i in issues) or "no .txt/.md files"
        raise CorpusError(f"No entries found in {config.corpus_dir}: {detail}")

    chunks = chunk_entries(entries, config.chunk_tokens, token_counter(config.encoding))
    texts = [c.text for c in chunks]
    # Batches here only pace the progress bar; the model batches by embedding.batch_size.
    batch = 16
    vectors: list[list[float]] = []
    for start in range(0, len(texts), batch):
        vectors.extend(embedder.embed_documents(texts[start : start + batch]))
        if progress:
            progress(min(start + batch, len(texts)), len(texts))
    matrix = _normalized(vectors)
    index = faiss.IndexFlatIP(matrix.shape[1])
    index.add(matrix)
    titles = faiss.IndexFlatIP(matrix.shape[1])
    titles.add(_normalized(embedder.embed_documents([heading_text(e) for e in entries])))

    manifest = {
        "format_version": FORMAT_VERSION,
        "model": _model_name(embedder, config.model),
        "dimension": int(matrix.shape[1]),
        "corpus": {f.name: f.sha256 for f in files},
        "chunking": {"max_tokens": config.chunk_tokens, "encoding": config.encoding},
        "entries": len(entries),
        "chunks": len(chunks),
        "synonym_rules": len(synonyms),
        "entries_per_kind": _count_kinds(entries),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return KnowledgeIndex(entries, chunks, index, titles, manifest, issues, synonyms)


def _model_name(embedder: Embeddings, configured: str) -> str:
    from ingest.embedding import model_label

    return getattr(embedder, "name", None) or model_label(configured)


def _count_kinds(entries: list[Entry]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.kind] = counts.get(e.kind, 0) + 1
    return counts


MANIFEST_CHECKSUM = "manifest_sha256"


def manifest_checksum(manifest: dict[str, Any]) -> str:
    """Sha256 of the manifest's own content (every key but its checksum), canonical JSON.

    The manifest holds the checksums of the other files; this one covers the manifest
    itself, so that an edit that is still valid JSON (counts, dimension, file checksums) is
    detected too.
    """
    content = {k: v for k, v in manifest.items() if k != MANIFEST_CHECKSUM}
    canonical = json.dumps(content, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return sha256_bytes(canonical.encode("utf-8"))


def _write_json(path: Path, data: Any) -> bytes:
    raw = (json.dumps(data, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
    path.write_bytes(raw)
    return raw


def save_index(index: KnowledgeIndex, out_dir: Path) -> Path:
    """Write the index into a new build folder and switch ``current`` to it atomically.

    Returns the build folder. Older builds are removed after the switch.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    build = out_dir / f"index-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{time.time_ns()}"
    tmp = out_dir / f".tmp-{build.name}"
    tmp.mkdir()
    try:
        files = {}
        for name, vectors in (("faiss.index", index.vectors), ("titles.index", index.titles)):
            faiss.write_index(vectors, str(tmp / name))
            files[name] = sha256_bytes((tmp / name).read_bytes())
        files["entries.json"] = sha256_bytes(
            _write_json(tmp / "entries.json", [e.to_dict() for e in index.entries])
        )
        files["chunks.json"] = sha256_bytes(
            _write_json(tmp / "chunks.json", [c.to_dict() for c in index.chunks])
        )
        files["synonyms.json"] = sha256_bytes(
            _write_json(tmp / "synonyms.json", [r.to_dict() for r in index.synonyms])
        )
        # The build's name travels with it (also when published to the database), so
        # servers can tell which build they hold.
        manifest = {**index.manifest, "build": build.name, "files": files}
        manifest[MANIFEST_CHECKSUM] = manifest_checksum(manifest)
        # The manifest is written last: a folder without it is never a valid build.
        _write_json(tmp / "manifest.json", manifest)
        index.manifest = manifest
        for name in (*INDEX_FILES, "manifest.json"):
            _fsync(tmp / name)
        tmp.rename(build)
        link_tmp = out_dir / f".link-{build.name}"
        link_tmp.symlink_to(build.name)
        os.replace(link_tmp, out_dir / CURRENT_LINK)  # atomic switch
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _remove_old_builds(out_dir, keep=build.name)
    log.info("Index written to %s", build)
    return build


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_old_builds(out_dir: Path, keep: str) -> None:
    for child in out_dir.iterdir():
        if child.is_dir() and not child.is_symlink() and child.name != keep:
            if child.name.startswith(("index-", ".tmp-index-")):
                shutil.rmtree(child, ignore_errors=True)


def current_build(out_dir: Path) -> Path:
    """The folder the ``current`` link points at; raises MissingIndexError."""
    link = out_dir / CURRENT_LINK
    if not link.exists():
        raise MissingIndexError(
            f"No index in {out_dir}. Build it with: supportbot ingest --out {out_dir}"
        )
    return link.resolve()


def read_manifest(build: Path) -> dict[str, Any]:
    """Read and sanity-check a build's manifest."""
    path = build / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptIndexError(f"The index manifest {path} is unreadable ({exc}).") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise CorruptIndexError(f"The index manifest {path} is incomplete.")
    check_manifest_checksum(manifest, str(path))
    return manifest


def check_manifest_checksum(manifest: dict[str, Any], where: str) -> None:
    """Raise CorruptIndexError unless the manifest matches its own checksum.

    Every way a build is read (a folder on disk, a build published to the database) goes
    through this, so a valid-JSON edit of the manifest is refused wherever it is made.
    """
    if manifest.get(MANIFEST_CHECKSUM) != manifest_checksum(manifest):
        raise CorruptIndexError(
            f"The index manifest {where} does not match its checksum (edited, or written by an "
            "older version). Rebuild it with: supportbot ingest"
        )


def check_manifest(manifest: dict[str, Any], config: IndexConfig, model_name: str) -> None:
    """Raise StaleIndexError when the manifest does not match config and corpus."""
    files, _ = read_corpus(config.corpus_dir, config.max_file_bytes)
    expected = {
        "format_version": FORMAT_VERSION,
        "model": model_name,
        "corpus": {f.name: f.sha256 for f in files},
        "chunking": {"max_tokens": config.chunk_tokens, "encoding": config.encoding},
    }
    for key, value in expected.items():
        if manifest.get(key) != value:
            raise StaleIndexError(
                f"The index is stale: its {key} differs from the current {key}. "
                "Rebuild it with: supportbot ingest"
            )


def load_index(out_dir: Path, config: IndexConfig, embedder: Embeddings) -> KnowledgeIndex:
    """Load the current index, verifying checksums and the manifest.

    Raises a subclass of ``IndexUnavailableError`` with a message naming the fix.
    """
    # Follow the link once: a concurrent ingest may switch it while we read.
    build = current_build(out_dir)
    manifest = read_manifest(build)
    check_manifest(manifest, config, _model_name(embedder, config.model))
    return index_from_files(_read_build_files(build), manifest, str(build))


def _read_build_files(build: Path) -> dict[str, bytes]:
    raw: dict[str, bytes] = {}
    for name in INDEX_FILES:
        try:
            raw[name] = (build / name).read_bytes()
        except OSError as exc:
            raise CorruptIndexError(f"Index file {build / name} is missing ({exc}).") from exc
    return raw


def build_files(build: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A saved build's manifest and files, as published for other machines."""
    return read_manifest(build), _read_build_files(build)


def index_from_files(raw: dict[str, bytes], manifest: dict[str, Any], where: str) -> KnowledgeIndex:
    """The index held by a build's files, verified against its manifest.

    Args:
        raw: File name to bytes, for every name in :data:`INDEX_FILES`.
        manifest: The build's manifest (with the sha256 of every file).
        where: Where the build comes from, for messages.

    Raises:
        CorruptIndexError: A file is missing, does not match its checksum, cannot be
            decoded, or disagrees with the manifest's counts and dimension.
    """
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise CorruptIndexError(f"The index manifest of {where} is incomplete.")
    for name in INDEX_FILES:
        if name not in raw:
            raise CorruptIndexError(f"Index file {name} of {where} is missing.")
        if sha256_bytes(raw[name]) != files.get(name):
            raise CorruptIndexError(
                f"Index file {name} of {where} does not match its checksum (truncated or edited)."
            )
    try:
        vectors = faiss.deserialize_index(np.frombuffer(raw["faiss.index"], dtype=np.uint8))
        titles = faiss.deserialize_index(np.frombuffer(raw["titles.index"], dtype=np.uint8))
        entries = [Entry.from_dict(d) for d in json.loads(raw["entries.json"])]
        chunks = [Chunk(**d) for d in json.loads(raw["chunks.json"])]
        synonyms = tuple(SynonymRule.from_dict(d) for d in json.loads(raw["synonyms.json"]))
    except Exception as exc:  # any decoding failure means the same thing to the user
        raise CorruptIndexError(f"The index in {where} is unreadable ({exc}).") from exc
    dimension = manifest.get("dimension")
    if (
        vectors.ntotal != len(chunks)
        or titles.ntotal != len(entries)
        or vectors.d != dimension
        or titles.d != dimension
    ):
        raise CorruptIndexError(f"The index in {where} is inconsistent with its manifest.")
    return KnowledgeIndex(entries, chunks, vectors, titles, manifest, synonyms=synonyms)


def check_compatible(manifest: dict[str, Any], config: IndexConfig, model_name: str) -> None:
    """Raise StaleIndexError unless a build can replace the one being served.

    Unlike :func:`check_manifest`, the corpus is not compared with the local folder: a
    published build carries a newer corpus than a server on another machine has. The
    format, the model (questions are embedded by the server's model) and the chunking
    must match.
    """
    expected = {
        "format_version": FORMAT_VERSION,
        "model": model_name,
        "chunking": {"max_tokens": config.chunk_tokens, "encoding": config.encoding},
    }
    for key, value in expected.items():
        if manifest.get(key) != value:
            raise StaleIndexError(
                f"The index build {manifest.get('build', '?')} does not fit this server: "
                f"its {key} is {manifest.get(key)!r}, not {value!r}."
            )


def is_newer(candidate: dict[str, Any], current: dict[str, Any]) -> bool:
    """True when the ``candidate`` build was made after the ``current`` one.

    Builds are ordered by build time, then by name (which starts with that time and ends
    with a nanosecond stamp); a server never swaps back to an older build.
    """
    if candidate.get("build") == current.get("build"):
        return False
    return (str(candidate.get("built_at", "")), str(candidate.get("build", ""))) > (
        str(current.get("built_at", "")),
        str(current.get("build", "")),
    )


def model_name_of(embedder: Embeddings, configured: str) -> str:
    """The model name an index built with ``embedder`` records in its manifest."""
    return _model_name(embedder, configured)


def ingest(
    config: IndexConfig,
    out_dir: Path,
    embedder: Embeddings,
    progress: Progress | None = None,
    lock_timeout_s: float = 600,
    reuse_current: bool = False,
) -> KnowledgeIndex:
    """Build and save the index, serialised by a lock so concurrent runs never interleave.

    With ``reuse_current``, an index that became valid while waiting for the lock (another
    process rebuilt it) is loaded instead of being built again.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(out_dir / LOCK_NAME), timeout=lock_timeout_s)
        lock.acquire()
    except Timeout as exc:
        raise IndexUnavailableError(
            f"Another ingest is still running in {out_dir} (lock held); try again later."
        ) from exc
    except OSError as exc:
        raise _cannot_write(out_dir, exc) from exc
    try:
        if reuse_current:
            try:
                return load_index(out_dir, config, embedder)
            except IndexUnavailableError:
                pass
        index = build_index(config, embedder, progress)
        try:
            save_index(index, out_dir)
        except OSError as exc:
            raise _cannot_write(out_dir, exc) from exc
        return index
    finally:
        lock.release()


def _cannot_write(out_dir: Path, exc: OSError) -> IndexUnavailableError:
    # A path that is a file, a read-only or full disk: say so in one line, not a traceback.
    return IndexUnavailableError(f"Cannot write the index in {out_dir}: {exc.strerror or exc}.")


def open_index(
    out_dir: Path,
    config: IndexConfig,
    embedder: Embeddings,
    auto_rebuild: bool,
    progress: Progress | None = None,
) -> KnowledgeIndex:
    """Load the index, rebuilding it first when missing, stale or corrupt (if allowed)."""
    try:
        return load_index(out_dir, config, embedder)
    except IndexUnavailableError as exc:
        if not auto_rebuild:
            raise
        log.warning("%s Rebuilding the index.", exc)
    return ingest(config, out_dir, embedder, progress, reuse_current=True)
