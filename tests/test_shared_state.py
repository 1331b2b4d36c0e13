"""State several replicas share, on SQLite and PostgreSQL; live index reload."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from bot.index_watch import check_for_new_build
from bot.persistence import create_schema_async
from bot.service import SupportBot, index_config
from bot.shared_state import RATE_WINDOW_S, KeyedLocks, open_shared_state, publish_saved_build
from ingest.index import current_build, ingest
from tests.conftest import CORPUS, make_settings

NEW_ENTRY = """
Q: How do I sync gift cards to Fortnox?
A: Gift cards are booked as a liability on account 2420 until they are redeemed.
"""


async def _two_replicas(url: str):  # noqa: ANN202
    await create_schema_async(url)
    return open_shared_state(url, 2), open_shared_state(url, 2)


async def test_a_conversation_saved_by_one_replica_is_continued_by_another(
    database_url: str,
) -> None:
    a, b = await _two_replicas(database_url)
    try:
        assert await b.load_conversation("tab-1") is None
        state = {
            "history": [
                {"role": "user", "content": "what is error 2000637", "cited": []},
                {"role": "assistant", "content": "…", "cited": ["FORTNOX_CUSTOMER_NAME_EMPTY"]},
            ],
            "chat_settings": {"severity": "Error", "system": "Any"},
        }
        await a.save_conversation("tab-1", "thread-1", state)
        assert await b.load_conversation("tab-1") == state
        # Saved again (the next turn) it replaces the old state.
        await b.save_conversation("tab-1", "thread-2", {"history": [], "chat_settings": {}})
        assert await a.load_conversation("tab-1") == {"history": [], "chat_settings": {}}
        assert await a.load_conversation("tab-2") is None
    finally:
        await a.close()
        await b.close()


async def test_the_rate_limit_holds_across_replicas(database_url: str) -> None:
    a, b = await _two_replicas(database_url)
    try:
        now = 1_000_000.0
        assert [await a.admit("session:x", 3, now + i) for i in range(3)] == [0, 0, 0]
        # The same client on the other replica (after a reconnect or a failover).
        wait = await b.admit("session:x", 3, now + 10)
        assert wait == pytest.approx(RATE_WINDOW_S - 10)
        assert await a.admit("session:x", 3, now + 11) > 0
        # Another client is not affected; the window reopens after a minute.
        assert await b.admit("session:y", 3, now + 11) == 0
        assert await b.admit("session:x", 3, now + RATE_WINDOW_S + 0.5) == 0

        # Messages arriving together on both replicas: exactly the limit gets through.
        later = now + 1000
        results = await asyncio.gather(
            *(s.admit("address:10.0.0.1", 5, later) for s in (a, b) * 10)
        )
        assert sum(1 for w in results if w == 0) == 5
    finally:
        await a.close()
        await b.close()


async def test_a_message_is_counted_against_all_its_limits_or_none(database_url: str) -> None:
    a, b = await _two_replicas(database_url)
    try:
        now = 1_000_000.0
        office = "address:10.0.0.9"
        assert await a.admit_all({"session:x": 2, office: 3}, now) == 0
        assert await b.admit_all({"session:x": 2, office: 3}, now + 1) == 0
        # The conversation is at its limit: refused, and the address is not counted.
        assert await a.admit_all({"session:x": 2, office: 3}, now + 2) == pytest.approx(
            RATE_WINDOW_S - 2
        )
        assert await b.admit_all({"session:y": 5, office: 3}, now + 3) == 0
        # Now the address is at its limit: a new conversation behind it is refused and
        # not counted, so alone it still has its whole allowance.
        assert await a.admit_all({"session:z": 5, office: 3}, now + 4) == pytest.approx(
            RATE_WINDOW_S - 4
        )
        assert [await b.admit("session:z", 5, now + 5 + i) for i in range(5)] == [0] * 5
        # Both at their limits: the longer wait.
        assert await a.admit_all({"session:x": 2, office: 3}, now + 10) == pytest.approx(
            RATE_WINDOW_S - 10
        )
        assert await a.admit_all({"session:z": 5, office: 3}, now + 10) == pytest.approx(
            RATE_WINDOW_S - 10 + 5
        )

        # Checks sharing a client, on both replicas at once, with their clients named in
        # either order: none waits on another for ever, and exactly the limit gets through.
        later = now + 1000
        checks = [
            s.admit_all(
                {f"session:{n}": 100, "address:shared": 6}
                if n % 2
                else {"address:shared": 6, f"session:{n}": 100},
                later,
            )
            for n, s in enumerate((a, b) * 10)
        ]
        results = await asyncio.wait_for(asyncio.gather(*checks), 60)
        assert sum(1 for w in results if w == 0) == 6
    finally:
        await a.close()
        await b.close()


# -- live index reload -------------------------------------------------------------------------


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    shutil.copytree(CORPUS, folder)
    return folder


def _bot(index_dir: Path, corpus: Path, **overrides: object) -> SupportBot:
    settings = make_settings(index_dir, corpus, **overrides)
    embedder = DeterministicFakeEmbedding(size=64)
    index = ingest(index_config(settings), index_dir, embedder)
    return SupportBot(settings, index, embedder)


def _add_entry(corpus: Path) -> None:
    with (corpus / "faq.txt").open("a", encoding="utf-8") as fh:
        fh.write(NEW_ENTRY)


def _rebuild(index_dir: Path, corpus: Path, **overrides: object) -> Path:
    settings = make_settings(index_dir, corpus, **overrides)
    ingest(index_config(settings), index_dir, DeterministicFakeEmbedding(size=64))
    return current_build(index_dir)


async def test_a_new_build_on_disk_is_swapped_in_and_older_ones_are_not(
    tmp_path: Path, corpus: Path
) -> None:
    index_dir = tmp_path / "vectorstore"
    bot = _bot(index_dir, corpus)
    first = bot.index.manifest["build"]
    before = bot.answer("How do I sync gift cards to Fortnox?")
    assert "gift" not in before.text.lower() or before.abstained

    _add_entry(corpus)
    new = _rebuild(index_dir, corpus)
    refused: set[str] = set()
    assert await check_for_new_build(bot, None, refused) == new.name
    assert bot.index.manifest["build"] == new.name != first
    after = bot.answer("How do I sync gift cards to Fortnox?")
    assert "2420" in after.text
    # Nothing newer: nothing happens.
    assert await check_for_new_build(bot, None, refused) is None


async def test_a_build_published_to_the_database_reaches_a_replica_without_the_disk(
    tmp_path: Path, corpus: Path, database_url: str
) -> None:
    # The replica has its own index folder and corpus copy (another machine).
    replica = _bot(tmp_path / "replica-index", corpus)
    shared = open_shared_state(database_url, 1)
    try:
        other_corpus = tmp_path / "ingest-corpus"
        shutil.copytree(corpus, other_corpus)
        _add_entry(other_corpus)
        build = _rebuild(tmp_path / "ingest-index", other_corpus)
        assert await asyncio.to_thread(publish_saved_build, database_url, build) == build.name

        assert await check_for_new_build(replica, shared, set()) == build.name
        assert "2420" in replica.answer("How do I sync gift cards to Fortnox?").text
    finally:
        await shared.close()


async def test_a_corrupt_or_mismatched_published_build_is_refused_and_the_old_one_kept(
    tmp_path: Path, corpus: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from sqlalchemy import text

    replica = _bot(tmp_path / "replica-index", corpus)
    held = replica.index.manifest["build"]
    shared = open_shared_state(database_url, 1)
    try:
        _add_entry(corpus)
        # Built with other chunking: the replica cannot serve it.
        mismatched = _rebuild(tmp_path / "other-index", corpus, index={"chunk_tokens": 64})
        await asyncio.to_thread(publish_saved_build, database_url, mismatched)
        refused: set[str] = set()
        assert await check_for_new_build(replica, shared, refused) is None
        assert replica.index.manifest["build"] == held
        assert mismatched.name in refused
        assert "does not fit this server" in caplog.text

        # A build whose bytes were damaged in the database.
        good = _rebuild(tmp_path / "third-index", corpus)
        await asyncio.to_thread(publish_saved_build, database_url, good)
        async with shared.engine.begin() as conn:
            await conn.execute(
                text('UPDATE supportbot_index_builds SET "files" = :f WHERE "build" = :b'),
                {"f": b"PK\x03\x04 not a zip at all", "b": good.name},
            )
        assert await check_for_new_build(replica, shared, refused) is None
        assert replica.index.manifest["build"] == held
        assert good.name in refused
        assert "Refused index build" in caplog.text

        # A valid-JSON edit of a published manifest (files untouched): only the manifest's
        # own checksum shows it.
        edited = _rebuild(tmp_path / "fourth-index", corpus)
        await asyncio.to_thread(publish_saved_build, database_url, edited)
        async with shared.engine.begin() as conn:
            (raw,) = (
                await conn.execute(
                    text('SELECT "manifest" FROM supportbot_index_builds WHERE "build" = :b'),
                    {"b": edited.name},
                )
            ).one()
            manifest = json.loads(raw)
            manifest["entries"] = manifest["entries"] + 1
            await conn.execute(
                text('UPDATE supportbot_index_builds SET "manifest" = :m WHERE "build" = :b'),
                {"m": json.dumps(manifest), "b": edited.name},
            )
        assert await check_for_new_build(replica, shared, refused) is None
        assert replica.index.manifest["build"] == held
        assert edited.name in refused
        assert "does not match its checksum" in caplog.text
        # The old build still answers.
        assert not replica.answer("what is error 2000637").abstained
    finally:
        await shared.close()


async def test_the_gatekeeper_and_the_shared_state_share_one_pool_of_the_configured_size(
    database_url: str,
) -> None:
    from bot.web_guard import GuardStore

    await create_schema_async(database_url)
    store = GuardStore(database_url, pool_size=3)
    shared = open_shared_state(database_url, engine=store.engine)
    try:
        assert shared.engine is store.engine
        if not database_url.startswith("sqlite"):
            # The hot-path lookups (every message id, every feedback's step) are not
            # queued behind one connection.
            assert store.engine.pool.size() == 3
        lookups = [store.step_thread(f"00000000-0000-4000-8000-{n:012d}") for n in range(12)]
        admitted = [shared.admit(f"client-{n}", 5) for n in range(12)]
        results = await asyncio.gather(*lookups, *admitted)
        assert results == [None] * 12 + [0.0] * 12
    finally:
        await store.close()


async def test_keyed_locks_serialise_one_key_only_and_are_dropped_when_unused() -> None:
    import gc

    locks = KeyedLocks()
    inside = {"a": 0, "b": 0}
    most_a, b_beside_a = 0, False

    async def hold(key: str) -> None:
        nonlocal most_a, b_beside_a
        async with locks(key):
            inside[key] += 1
            most_a = max(most_a, inside["a"])
            b_beside_a = b_beside_a or (inside["a"] > 0 and inside["b"] > 0)
            await asyncio.sleep(0.01)
            inside[key] -= 1

    await asyncio.gather(*(hold("a") for _ in range(5)), hold("b"))
    assert most_a == 1  # one holder of "a" at a time
    assert b_beside_a  # "b" did not wait for "a"
    gc.collect()
    assert len(locks._locks) == 0  # no lock kept once nobody holds or awaits it
