"""Shared fixtures: real corpus, settings isolated from the env, embedders, a real bot."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings

from bot.config import Settings
from ingest.entries import Entry
from ingest.index import parse_corpus, read_corpus

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "corpus"
ENV_PREFIX = "SUPPORTBOT_"

SettingsFactory = Callable[..., Settings]


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def make_settings(index_dir: Path, corpus_dir: Path = CORPUS, **overrides: Any) -> Settings:
    """Settings for tests: no .env file, the given index and corpus folders, overrides on top."""
    base: dict[str, Any] = {
        "log_level": "WARNING",
        "corpus": {"dir": corpus_dir},
        "index": {"dir": index_dir},
    }
    return Settings(_env_file=None, **_deep_merge(base, overrides))


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def corpus_dir() -> Path:
    return CORPUS


@pytest.fixture(scope="session")
def entries() -> list[Entry]:
    files, issues = read_corpus(CORPUS, 5_000_000)
    assert not issues
    parsed, _ = parse_corpus(files)
    return parsed


@pytest.fixture
def fake_embedder() -> Embeddings:
    return DeterministicFakeEmbedding(size=64)


@pytest.fixture
def settings_factory(tmp_path: Path) -> SettingsFactory:
    def factory(corpus_dir: Path = CORPUS, **overrides: Any) -> Settings:
        return make_settings(tmp_path / "vectorstore", corpus_dir, **overrides)

    return factory


@pytest.fixture(scope="session")
def real_embedder() -> Embeddings:
    from ingest.embedding import load_embedder

    return load_embedder()


@pytest.fixture(scope="session")
def real_index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("real-index") / "vectorstore"


@pytest.fixture(scope="session")
def real_bot(real_embedder: Embeddings, real_index_dir: Path) -> Any:
    from bot.service import SupportBot, index_config
    from ingest.index import open_index

    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.upper().startswith(ENV_PREFIX):
                mp.delenv(name)
        settings = make_settings(real_index_dir)
    index = open_index(real_index_dir, index_config(settings), real_embedder, auto_rebuild=True)
    return SupportBot(settings, index, real_embedder)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """A throwaway PostgreSQL server (Debian's package) on a free loopback port.

    Not skipped when PostgreSQL is missing: ``scripts/test.sh`` installs it, and a run
    without it fails here with the command to install it.
    """
    from bot.cluster import start_postgres, stop_postgres

    # Not under pytest's tmp folder: that is private to root, and the server runs as
    # the postgres user.
    root = Path(tempfile.mkdtemp(prefix="supportbot-pg-"))
    pg = start_postgres(root)
    try:
        yield pg
    finally:
        stop_postgres(pg)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty chat database, once on SQLite (a file) and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'nested' / 'chat.db'}"
    pg = request.getfixturevalue("postgres")
    return pg.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def merchant_source(entries: list[Entry]) -> Callable[[str], str]:
    """The name a merchant's source panel gets for an entry: its plain title, not its code."""
    from bot.chat_render import SOURCE_SUFFIX, plain_title, safe_name

    by_id = {e.id: e for e in entries}
    return lambda entry_id: safe_name(plain_title(by_id[entry_id])) + SOURCE_SUFFIX
