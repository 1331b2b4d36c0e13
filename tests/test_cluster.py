"""Several replicas behind nginx, started by `supportbot cluster up`.

Stickiness, failover, live reload of a re-ingested corpus, and `cluster down`.

Bounded for CI (a few dozen sessions); the full-size run (100+ sessions x 10 questions,
a SIGKILL and a re-ingest mid-run) is ``python -m evals.cluster_bench``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.chat_render import SOURCE_SUFFIX
from bot.cluster import ClusterState, free_port, load_state
from bot.persistence import _query, fetch_feedback
from bot.shared_state import publish_saved_build
from evals.load import ChatSession, Exchange
from ingest.index import current_build, ingest
from tests.conftest import CORPUS, make_settings
from tests.test_security import Tab

REPO = Path(__file__).resolve().parent.parent
CODE_QUESTION = "what is error 2000637"
CODE_ENTRY = "FORTNOX_CUSTOMER_NAME_EMPTY"
FOLLOW_UP = "how do I fix it?"
NEW_QUESTION = "How do I sync gift cards to Fortnox?"
NEW_ENTRY = """
Q: How do I sync gift cards to Fortnox?
A: Gift cards are booked as a liability on account 2420 until they are redeemed.
"""
RELOAD_BOUND_S = 15.0


def _supportbot(*args: str, env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def cluster(
    real_bot: Any, real_index_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterState]:
    """`supportbot cluster up` with 2 replicas on the session's index; `down` afterwards."""
    folder = tmp_path_factory.mktemp("cluster")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SUPPORTBOT_")}
    env.pop("CHAINLIT_AUTH_SECRET", None)
    env.update(
        {
            "SUPPORTBOT_INDEX__DIR": str(real_index_dir),
            "SUPPORTBOT_INDEX__RELOAD_INTERVAL_S": "1",
            "SUPPORTBOT_CHAT__RATE_LIMIT_PER_MINUTE": "1000",
            "SUPPORTBOT_CHAT__RATE_LIMIT_PER_ADDRESS_PER_MINUTE": "100000",
            "SUPPORTBOT_LOG_LEVEL": "INFO",
        }
    )
    port = free_port()
    out = _supportbot(
        "cluster", "up", "--replicas", "2", "--port", str(port), "--dir", str(folder), env=env
    )
    assert f"http://127.0.0.1:{port}" in out
    state = load_state(folder)
    assert state is not None
    try:
        yield state
    finally:
        _supportbot("cluster", "down", "--dir", str(folder), env=env)
        # Everything it started is gone.
        for pid in [state.nginx_pid, *(r["pid"] for r in state.replicas)]:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in _status(pid)
        assert load_state(folder) is None


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "zombie"


def _ask(tab: ChatSession, question: str) -> Any:
    return tab.ask(Exchange(tab.number, 0, question, str(uuid.uuid4())))


@pytest.fixture
def code_source(merchant_source) -> str:
    """What a merchant's source panel is called after CODE_QUESTION."""
    return merchant_source(CODE_ENTRY)


@pytest.mark.model
def test_through_nginx_each_client_is_keyed_by_its_own_address_not_by_what_it_claims(
    cluster: ClusterState,
) -> None:
    # Two merchants on other loopback addresses, one claiming a third: nginx replaces
    # X-Real-IP and appends to X-Forwarded-For, and the replicas believe only that.
    claims = {"X-Real-IP": "203.0.113.9", "X-Forwarded-For": "203.0.113.9"}

    async def go() -> None:
        for peer, headers in (("127.0.0.2", claims), ("127.0.0.3", {})):
            async with Tab(cluster.url, local_addr=peer, headers=headers) as tab:
                assert (await tab.ask(CODE_QUESTION))["answers"]

    asyncio.run(go())
    sql = 'SELECT DISTINCT "client" FROM supportbot_rate_events'
    clients = {r["client"] for r in asyncio.run(_query(cluster.database_url, sql))}
    assert {"address:127.0.0.2", "address:127.0.0.3"} <= clients, clients
    assert "address:203.0.113.9" not in clients


@pytest.mark.model
def test_sessions_through_nginx_survive_the_kill_of_a_replica(
    cluster: ClusterState, code_source: str
) -> None:
    sessions = 12

    async def go() -> tuple[list[Exchange], list[Exchange], list[str], float]:
        tabs = [ChatSession(cluster.url, number=n) for n in range(sessions)]
        for tab in tabs:
            await tab.connect()
        try:
            first = list(await asyncio.gather(*(_ask(tab, CODE_QUESTION) for tab in tabs)))
            acked = [
                await tab.feedback(e, n % 2, f"tab {n}")
                for n, (tab, e) in enumerate(zip(tabs, first, strict=True))
            ]
            # Sticky by cookie: each tab's source text is fetched over plain HTTP through
            # nginx, and only the replica holding the session has it (404 elsewhere).
            texts = [
                await tab.source_text(e.source_keys[0]) for tab, e in zip(tabs, first, strict=True)
            ]
            assert all(code_source.removesuffix(SOURCE_SUFFIX) in t for t in texts)
            victim = cluster.replicas[0]["pid"]
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            # Every tab reconnects (to the survivor, for those the victim held) and asks
            # its follow-up.
            for tab in tabs:
                await tab.reconnect()
            failover_s = time.monotonic() - killed
            follow = list(await asyncio.gather(*(_ask(tab, FOLLOW_UP) for tab in tabs)))
        finally:
            for tab in tabs:
                await tab.close()
        return first, follow, acked, failover_s

    first, follow, acked, failover_s = asyncio.run(go())
    assert [e.error for e in first] == [None] * sessions
    assert [e.error for e in follow] == [None] * sessions
    # Answered in context: the follow-up cites the entry of the question before it.
    assert all(code_source in e.sources for e in follow), [e.answer[:80] for e in follow]
    assert failover_s < 30
    stored = {r["feedback_id"] for r in fetch_feedback(cluster.database_url)}
    assert set(acked) <= stored


@pytest.mark.model
def test_the_widget_without_a_cookie_sticks_by_address_and_opens_its_sources(
    cluster: ClusterState, code_source: str
) -> None:
    async def go() -> tuple[Exchange, str]:
        async with ChatSession(cluster.url, client_type="copilot", sticky_cookie=False) as tab:
            asked = await _ask(tab, CODE_QUESTION)
            # The widget fetches a source's text over HTTP: it must reach the replica
            # holding the session, with no cookie to route by.
            text = await tab.source_text(asked.source_keys[0])
        return asked, text

    asked, text = asyncio.run(go())
    assert asked.error is None
    assert code_source in asked.sources
    assert code_source.removesuffix(SOURCE_SUFFIX) in text


@pytest.mark.model
def test_a_re_ingested_corpus_reaches_every_replica_within_the_bound(
    cluster: ClusterState, real_embedder: Any, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    with (corpus / "faq.txt").open("a", encoding="utf-8") as fh:
        fh.write(NEW_ENTRY)
    index_dir = tmp_path / "elsewhere"
    from bot.service import index_config

    ingest(index_config(make_settings(index_dir, corpus)), index_dir, real_embedder)
    published = time.monotonic()
    publish_saved_build(cluster.database_url, current_build(index_dir))

    live = [r for r in cluster.replicas if Path(f"/proc/{r['pid']}").exists()]
    live = [r for r in live if "zombie" not in _status(r["pid"]).lower()]

    async def answered_by(port: int) -> float:
        while True:
            async with ChatSession(f"http://127.0.0.1:{port}") as tab:
                e = await _ask(tab, NEW_QUESTION)
            assert e.error is None, e.error
            if "2420" in e.answer:
                return time.monotonic() - published
            assert time.monotonic() - published < RELOAD_BOUND_S, e.answer
            await asyncio.sleep(0.5)

    async def go() -> list[float]:
        return list(await asyncio.gather(*(answered_by(r["port"]) for r in live)))

    took = asyncio.run(go())
    assert live
    assert max(took) < RELOAD_BOUND_S
