"""The chat server under concurrent sessions, a crash, its rate limit and its login.

Starts real ``chainlit run bot/app.py`` servers (real bot, the session's index from
``conftest.real_index_dir``, temporary SQLite) and drives them with
:mod:`evals.load`, which speaks Socket.IO and HTTP exactly as the browser does. No
browser needed.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from socketio.exceptions import ConnectionError as SocketRefused

from bot.chat_render import rate_limited_text
from bot.config import SecuritySettings, Settings
from bot.persistence import fetch_feedback
from evals.load import ChatSession, Exchange, LoadResult, feedback_problems, run_load
from tests.test_browser import _free_port, _wait_until_up

REPO = Path(__file__).resolve().parent.parent
AGENT_USER, AGENT_PASSWORD = "agent", "secret-pw"
# A load run asks back to back; the default 20 a minute per session would cut it short.
LOAD_RATE_LIMIT = "1000"
# A question whose answer always carries a source (an exact error-code lookup).
CODE_QUESTION = "what is error 2000637"


@dataclass
class ChatServer:
    """A running ``chainlit run`` process and where it keeps things."""

    url: str
    database_url: str
    db_path: Path
    log: Path
    process: subprocess.Popen


def _spawn(
    tmp: Path,
    index_dir: Path,
    extra_env: dict[str, str],
    log_name: str = "server.log",
    database_url: str | None = None,
) -> ChatServer:
    """Start a server on a free port with the database ``tmp/chat.db``; wait until up."""
    db_path = tmp / "chat.db"
    database_url = database_url or f"sqlite+aiosqlite:///{db_path}"
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SUPPORTBOT_")}
    env.pop("CHAINLIT_AUTH_SECRET", None)
    env.update(
        {
            "SUPPORTBOT_CHAT__DATABASE_URL": database_url,
            "SUPPORTBOT_INDEX__DIR": str(index_dir),
            "SUPPORTBOT_LOG_LEVEL": "INFO",
            "CHAINLIT_APP_ROOT": str(REPO),
            # Every test session comes from 127.0.0.1: the per-address limit (120 a minute
            # shared by all) would cut a load run short; tests of it set it themselves.
            "SUPPORTBOT_CHAT__RATE_LIMIT_PER_ADDRESS_PER_MINUTE": "1000000",
            **extra_env,
        }
    )
    port = _free_port()
    command = [sys.executable, "-m", "chainlit", "run", str(REPO / "bot" / "app.py")]
    command += ["--headless", "--host", "127.0.0.1", "--port", str(port)]
    log = tmp / log_name
    with log.open("w") as out:
        # cwd=tmp: no developer .env is read; the server sees only the env above.
        process = subprocess.Popen(command, cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = ChatServer(f"http://127.0.0.1:{port}", database_url, db_path, log, process)
    try:
        _wait_until_up(server.url, process, log)
    except BaseException:
        _stop(server)
        raise
    return server


def _stop(server: ChatServer) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=15)


@pytest.fixture(scope="module")
def index_dir(real_bot: Any, real_index_dir: Path) -> Path:
    """The session's index, built (by ``real_bot``) before any server looks for it."""
    return real_index_dir


def merchant_server(tmp: Path, index_dir: Path, **chat: str) -> Iterator[ChatServer]:
    """A merchant instance with the given ``SUPPORTBOT_CHAT__*`` settings (lower-case names)."""
    env = {"SUPPORTBOT_CHAT__AGENT_PROFILE": "false"}
    env.update({f"SUPPORTBOT_CHAT__{name.upper()}": value for name, value in chat.items()})
    server = _spawn(tmp, index_dir, env)
    try:
        yield server
    finally:
        _stop(server)


@pytest.fixture(scope="module")
def load_server(tmp_path_factory: pytest.TempPathFactory, index_dir: Path) -> Iterator[ChatServer]:
    """A merchant instance whose rate limit a load run does not reach."""
    yield from merchant_server(
        tmp_path_factory.mktemp("load"), index_dir, rate_limit_per_minute=LOAD_RATE_LIMIT
    )


def _sqlite_state(db_path: Path) -> tuple[str, str, set[str]]:
    """(integrity_check, journal_mode, feedback ids) read with plain sqlite3."""
    con = sqlite3.connect(db_path, timeout=15)
    try:
        integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
        mode = con.execute("PRAGMA journal_mode").fetchone()[0]
        ids = {str(row[0]) for row in con.execute('SELECT "id" FROM feedbacks')}
    finally:
        con.close()
    return integrity, mode, ids


# -- load -----------------------------------------------------------------------------------


# The guarantees of the 50 x 20 load (no error, every acknowledged feedback stored with its
# answer, one thread per session) hold at this size too; the full size is measured by
# `python -m evals.bench`, which checks the same guarantees and prints the figures.
LOAD_SESSIONS, LOAD_QUESTIONS = 12, 6


@pytest.mark.model
def test_concurrent_sessions_are_answered_and_every_acknowledged_feedback_is_stored(
    load_server: ChatServer,
) -> None:
    # Starts are spread over a second because Chainlit 2.12 drops bursts of ~25+
    # simultaneous connects (see the burst test below).
    result = run_load(
        load_server.url,
        LOAD_SESSIONS,
        LOAD_QUESTIONS,
        question_timeout=30,
        overall_timeout=120,
        ramp_up_s=1,
    )
    total = LOAD_SESSIONS * LOAD_QUESTIONS

    assert result.errors == []
    assert len(result.answered) == total
    assert len(result.acknowledged) == total
    # The server used the session's index; it did not build its own.
    assert "Rebuilding the index" not in load_server.log.read_text()

    assert feedback_problems(load_server.database_url, result) == []
    rows = {r["feedback_id"]: r for r in fetch_feedback(load_server.database_url)}
    for e in result.acknowledged:
        row = rows[e.feedback_id]
        assert (row["step_id"], row["thread_id"]) == (e.answer_id, e.thread_id)
        assert row["question"] == e.question
        assert row["answer"] == e.answer
        assert row["value"] == e.feedback_value
        assert row["comment"] == ("" if e.feedback_value else f"load s{e.session} q{e.index}")
    # Each session is one thread; every exchange of a session landed in it.
    sessions = range(LOAD_SESSIONS)
    threads = {s: {e.thread_id for e in result.exchanges if e.session == s} for s in sessions}
    assert all(len(ids) == 1 for ids in threads.values())
    assert len(set.union(*threads.values())) == LOAD_SESSIONS


def test_paced_sessions_read_each_answer_before_asking_again(load_server: ChatServer) -> None:
    """``think_s`` (the bench's paced run) waits between an answer and the next question."""
    result = run_load(load_server.url, 2, 3, think_s=0.6, feedback=False, overall_timeout=60)
    assert result.errors == []
    assert len(result.answered) == 6
    # Two pauses per session; the sessions pause side by side.
    assert result.wall_s >= 1.2


@pytest.mark.model
def test_hostile_inputs_through_the_running_server_get_their_outcome(
    load_server: ChatServer, real_bot: Any, merchant_source: Callable[[str], str]
) -> None:
    from bot.answer import EMPTY_QUESTION
    from tests.hostile_inputs import ABSTAIN, EMPTY, KNOWN_MISSES, hostile_cases

    # Through the real socket: every kind of hostile text gets its outcome, never a server
    # error. What the browser would send: valid UTF-8 (lone surrogates cannot be encoded).
    # Longer texts than the server takes get a notice instead (tests/test_security.py).
    longest = SecuritySettings().max_message_chars
    cases = [c for c in hostile_cases() if 0 < len(c.text) <= longest]
    cases = [c for c in cases[::3] if c.text.encode("utf-8", "replace").decode() == c.text]
    texts = [c.text for c in cases]
    result = run_load(
        load_server.url,
        4,
        len(texts) // 4,
        question_texts=texts,
        feedback=False,
        question_timeout=30,
        overall_timeout=240,
        ramp_up_s=1,
    )
    assert result.errors == []
    assert len(result.answered) == 4 * (len(texts) // 4)
    expected = {c.text: KNOWN_MISSES.get(c.name, c.expect) for c in cases}
    for e in result.answered:
        assert e.answer.strip()
        expect = expected[e.question]
        if expect == EMPTY:
            assert e.answer == EMPTY_QUESTION, e.question[:80]
        elif expect != ABSTAIN:
            # A merchant's source panel is named by the best source's plain title.
            assert merchant_source(expect) in e.sources, e.question[:80]


@pytest.mark.model
def test_a_burst_of_tabs_connecting_at_once_never_breaks_the_server(
    load_server: ChatServer,
) -> None:
    # E.g. every open tab reconnecting after a restart, or to the survivor after a replica
    # died. The browser always sends the default profile ("Merchant") on connect. Chainlit
    # 2.12 builds the session config with a re-entrant run_until_complete (nest_asyncio)
    # inside the connect handler, so simultaneous connects nested until RecursionError
    # (about 25-30 at once) and the surplus was refused (see evals/load.py). The app
    # queues connects: every tab of the burst connects and is answered.
    result = run_load(
        load_server.url, 60, 1, feedback=False, connect_timeout=10, overall_timeout=30
    )
    assert result.session_errors == []
    assert [e.error for e in result.exchanges if e.error] == []
    assert len(result.answered) == 60
    assert "RecursionError" not in load_server.log.read_text()
    after = run_load(load_server.url, 2, 1, feedback=False, overall_timeout=60)
    assert after.errors == []
    assert len(after.answered) == 2


@pytest.mark.model
def test_the_same_burst_without_a_chat_profile_is_fine(load_server: ChatServer) -> None:
    # Without a profile get_config returns at once: no tab is refused.
    result = run_load(
        load_server.url, 60, 1, feedback=False, profile=None, connect_timeout=10, overall_timeout=30
    )
    assert result.errors == []
    assert len(result.answered) == 60


# -- several replicas on one PostgreSQL database ------------------------------------------------

FOLLOW_UP = "how do I fix it?"


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, index_dir: Path, postgres: Any
) -> Iterator[tuple[ChatServer, ChatServer]]:
    """Two merchant replicas sharing one PostgreSQL database, 3 messages a minute each tab."""
    url = postgres.create_database(f"replicas_{uuid.uuid4().hex[:8]}")
    env = {"SUPPORTBOT_CHAT__AGENT_PROFILE": "false", "SUPPORTBOT_CHAT__RATE_LIMIT_PER_MINUTE": "3"}
    tmp = tmp_path_factory.mktemp("replicas")
    first = _spawn(tmp, index_dir, env, "replica-1.log", database_url=url)
    try:
        second = _spawn(tmp, index_dir, env, "replica-2.log", database_url=url)
    except BaseException:
        _stop(first)
        raise
    try:
        yield first, second
    finally:
        _stop(first)
        _stop(second)


@pytest.fixture
def code_source(merchant_source) -> str:
    """What a merchant's source panel is called after CODE_QUESTION."""
    return merchant_source("FORTNOX_CUSTOMER_NAME_EMPTY")


def _exchange(n: int, question: str) -> Exchange:
    return Exchange(0, n, question, str(uuid.uuid4()))


@pytest.mark.model
def test_a_follow_up_after_failover_is_answered_in_context_by_the_other_replica(
    replicas: tuple[ChatServer, ChatServer],
    code_source: str,
) -> None:
    first, second = replicas

    async def go() -> tuple[Exchange, Exchange, Exchange, str, str, str]:
        async with ChatSession(first.url) as tab:
            asked = await tab.ask(_exchange(0, CODE_QUESTION))
            feedback_id = await tab.feedback(asked, 0, "did not help")
            # The replica is gone for this tab. A thumbs may reach the other one before the
            # tab has reconnected: the stored conversation vouches for the thread...
            tab.url = second.url
            early_id = await tab.feedback(asked, 1, "rated before reconnecting")
            # ...to its own address only.
            body = {
                "feedback": {"forId": asked.run_id, "threadId": asked.thread_id, "value": 0},
                "sessionId": tab.session_id,
            }
            async with httpx.AsyncClient(base_url=second.url, timeout=30) as http:
                elsewhere = await http.put(
                    "/feedback", json=body, headers={"X-Forwarded-For": "203.0.113.77"}
                )
            assert elsewhere.status_code == 403
            await tab.reconnect(second.url)
            follow_up = await tab.ask(_exchange(1, FOLLOW_UP))
            # The answer the first replica gave can still be rated on the second.
            later_id = await tab.feedback(asked, 1, "rated after the failover")
        # The control: the same follow-up in a new conversation has nothing to go on.
        async with ChatSession(second.url) as fresh:
            alone = await fresh.ask(_exchange(0, FOLLOW_UP))
            # ...and a stranger on the second replica may not rate that answer.
            with pytest.raises(RuntimeError, match="403"):
                await fresh.feedback(asked, 0, "not mine")
        return asked, follow_up, alone, feedback_id, later_id, early_id

    asked, follow_up, alone, feedback_id, later_id, early_id = asyncio.run(go())
    assert asked.error is None
    assert code_source in asked.sources
    assert follow_up.error is None, follow_up.error
    assert code_source in follow_up.sources, follow_up.answer
    assert code_source not in alone.sources
    # The feedback given on the first replica is in the shared database.
    rows = {r["feedback_id"]: r for r in fetch_feedback(first.database_url)}
    assert rows[feedback_id]["comment"] == "did not help"
    assert rows[later_id]["comment"] == "rated after the failover"
    assert rows[early_id]["comment"] == "rated before reconnecting"


@pytest.mark.model
def test_the_rate_limit_holds_across_a_reconnect_and_another_replica(
    replicas: tuple[ChatServer, ChatServer],
) -> None:
    first, second = replicas

    async def go() -> list[Exchange]:
        asked = []
        async with ChatSession(first.url) as tab:
            for n in range(3):
                asked.append(await tab.ask(_exchange(n, CODE_QUESTION)))
            await tab.reconnect()  # same replica
            asked.append(await tab.ask(_exchange(3, CODE_QUESTION)))
            await tab.reconnect(second.url)  # another replica
            asked.append(await tab.ask(_exchange(4, CODE_QUESTION)))
        return asked

    asked = asyncio.run(go())
    assert [e.rate_limited for e in asked] == [False, False, False, True, True]
    assert all(e.answer.startswith("You're sending messages faster") for e in asked[3:])


@pytest.mark.model
def test_stopping_one_instance_leaves_the_other_answering_with_sources(
    replicas: tuple[ChatServer, ChatServer],
    code_source: str,
) -> None:
    # Last of the tests on `replicas`: it stops the first. Both run from the repository as
    # app root (as docs/chainlit.md's merchant and agent instances do). Chainlit deletes
    # its files folder when a server stops; each instance must have its own, or the
    # survivor fails every answer that carries sources.
    first, second = replicas
    before = run_load(second.url, 1, 1, feedback=False, overall_timeout=60)
    assert before.errors == []
    _stop(first)
    assert first.process.returncode is not None
    after = run_load(
        second.url, 2, 1, feedback=False, overall_timeout=60, question_texts=[CODE_QUESTION]
    )
    assert after.errors == []
    for exchange in after.exchanges:
        assert code_source in exchange.sources, exchange.answer
    assert "FileNotFoundError" not in second.log.read_text()


@pytest.mark.model
def test_supportbot_chat_becomes_the_server_instead_of_keeping_a_bot_beside_it(
    tmp_path: Path, index_dir: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SUPPORTBOT_")}
    env.pop("CHAINLIT_AUTH_SECRET", None)
    env.update(
        {
            "SUPPORTBOT_CHAT__DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}",
            "SUPPORTBOT_INDEX__DIR": str(index_dir),
        }
    )
    port = _free_port()
    command = [sys.executable, "-m", "bot.cli", "chat", "--merchant", "--port", str(port)]
    log = tmp_path / "chat.log"
    with log.open("w") as out:
        launcher = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=out)
    try:
        _wait_until_up(f"http://127.0.0.1:{port}", launcher, log)
        # The launcher's process is now the Chainlit server itself (exec): no second
        # process holding the bot it loaded to check the index.
        cmdline = Path(f"/proc/{launcher.pid}/cmdline").read_bytes().split(b"\0")
        assert b"chainlit" in cmdline
        children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text()
        assert children.split() == []
    finally:
        launcher.terminate()
        launcher.wait(timeout=30)


@pytest.mark.model
def test_a_database_that_cannot_be_reached_stops_the_server_with_one_line(
    tmp_path: Path, index_dir: Path
) -> None:
    url = f"postgresql+asyncpg://merchant:s3cret@127.0.0.1:{_free_port()}/supportbot"
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SUPPORTBOT_")}
    env.update(
        {
            "SUPPORTBOT_CHAT__DATABASE_URL": url,
            "SUPPORTBOT_CHAT__AGENT_PROFILE": "false",
            "SUPPORTBOT_INDEX__DIR": str(index_dir),
            "CHAINLIT_APP_ROOT": str(REPO),
        }
    )
    command = [sys.executable, "-m", "chainlit", "run", str(REPO / "bot" / "app.py")]
    command += ["--headless", "--host", "127.0.0.1", "--port", str(_free_port())]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 3
    errors = [line for line in done.stderr.splitlines() if "Cannot use the chat database" in line]
    assert len(errors) == 1, done.stderr
    assert "127.0.0.1" in errors[0]
    assert "s3cret" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.model
def test_losing_the_database_mid_run_keeps_answers_and_refuses_feedback_openly(
    tmp_path_factory: pytest.TempPathFactory, index_dir: Path, code_source: str
) -> None:
    import shutil
    import tempfile

    from bot.cluster import start_postgres, stop_postgres

    root = Path(tempfile.mkdtemp(prefix="supportbot-pg-lost-"))
    pg = start_postgres(root)
    env = {
        "SUPPORTBOT_CHAT__AGENT_PROFILE": "false",
        "SUPPORTBOT_CHAT__RATE_LIMIT_PER_MINUTE": "100",
    }
    try:
        url = pg.create_database("lost")
        server = _spawn(tmp_path_factory.mktemp("lost"), index_dir, env, database_url=url)
        try:

            async def go() -> dict[str, Any]:
                out: dict[str, Any] = {}
                async with ChatSession(server.url) as tab:
                    before = await tab.ask(_exchange(0, CODE_QUESTION))
                    out["ack"] = await tab.feedback(before, 1)
                    stop_postgres(pg)  # the database is gone
                    during = await tab.ask(_exchange(1, FOLLOW_UP))
                    out["during"] = during
                    try:
                        await tab.feedback(during, 0, "lost?")
                    except RuntimeError as exc:
                        out["refused"] = str(exc)
                    start_postgres(root, pg.port)  # and back
                    after = await tab.ask(_exchange(2, CODE_QUESTION))
                    out["after_ack"] = await tab.feedback(after, 0, "back")
                return out

            out = asyncio.run(go())
        finally:
            _stop(server)
        # Answers went on without the database, in context (the process kept the state).
        assert out["during"].error is None
        assert code_source in out["during"].sources
        # Feedback given meanwhile was refused, not acknowledged and lost.
        assert "HTTP 500" in out["refused"]
        stored = {r["feedback_id"] for r in fetch_feedback(url)}
        assert {out["ack"], out["after_ack"]} <= stored
        assert "Feedback" in server.log.read_text()
        assert "could not be stored" in server.log.read_text()
    finally:
        stop_postgres(pg)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.model
def test_a_conversation_unreadable_at_failover_is_read_before_the_next_answer(
    tmp_path_factory: pytest.TempPathFactory, index_dir: Path, code_source: str
) -> None:
    # The replica a tab fails over to cannot read the stored conversation when the tab
    # arrives (the database is away, or too slow under the load of every session moving
    # at once); it reads it again before answering, so the follow-up stays in context.
    import shutil
    import tempfile

    from bot.cluster import start_postgres, stop_postgres

    root = Path(tempfile.mkdtemp(prefix="supportbot-pg-unread-"))
    pg = start_postgres(root)
    env = {"SUPPORTBOT_CHAT__AGENT_PROFILE": "false"}
    tmp = tmp_path_factory.mktemp("unread")
    try:
        url = pg.create_database("unread")
        first = _spawn(tmp, index_dir, env, "first.log", database_url=url)
        second = None
        try:
            second = _spawn(tmp, index_dir, env, "second.log", database_url=url)

            async def go() -> Exchange:
                async with ChatSession(first.url) as tab:
                    asked = await tab.ask(_exchange(0, CODE_QUESTION))
                    assert code_source in asked.sources
                    stop_postgres(pg)
                    await tab.reconnect(second.url)  # the conversation cannot be read now
                    start_postgres(root, pg.port)
                    return await tab.ask(_exchange(1, FOLLOW_UP))

            follow_up = asyncio.run(go())
        finally:
            _stop(first)
            if second is not None:
                _stop(second)
        assert "Shared state unavailable (reading the conversation)" in second.log.read_text()
        assert follow_up.error is None, follow_up.error
        assert code_source in follow_up.sources, follow_up.answer
    finally:
        stop_postgres(pg)
        shutil.rmtree(root, ignore_errors=True)


# -- durability --------------------------------------------------------------------------------


@dataclass
class Crash:
    """A load cut short by SIGKILL, and a server restarted on the same database."""

    result: LoadResult
    acknowledged_at_kill: int
    wal_bytes_at_kill: int
    restarted: ChatServer


@pytest.fixture(scope="module")
def crash(tmp_path_factory: pytest.TempPathFactory, index_dir: Path) -> Iterator[Crash]:
    """20 sessions x 30 questions; SIGKILL once 60 feedbacks are acknowledged; restart."""
    tmp = tmp_path_factory.mktemp("durability")
    env = {
        "SUPPORTBOT_CHAT__AGENT_PROFILE": "false",
        "SUPPORTBOT_CHAT__RATE_LIMIT_PER_MINUTE": LOAD_RATE_LIMIT,
    }
    server = _spawn(tmp, index_dir, env, "server-1.log")
    enough = threading.Event()
    acks: list[Exchange] = []

    def on_feedback(exchange: Exchange) -> None:
        acks.append(exchange)
        if len(acks) >= 60:
            enough.set()

    outcome: dict[str, LoadResult] = {}

    def load() -> None:
        outcome["result"] = run_load(
            server.url,
            20,
            30,
            question_timeout=10,
            overall_timeout=90,
            ramp_up_s=1,
            on_feedback=on_feedback,
        )

    loader = threading.Thread(target=load, name="load", daemon=True)
    try:
        loader.start()
        assert enough.wait(60), f"only {len(acks)} feedbacks acknowledged in 60 s"
        server.process.kill()  # SIGKILL mid-run: no shutdown hooks, writes in flight
        server.process.wait(timeout=15)
        killed_at = len(acks)
        wal = Path(f"{server.db_path}-wal")
        wal_bytes = wal.stat().st_size if wal.exists() else 0
        loader.join(60)
        assert not loader.is_alive(), "the load did not stop after the server died"
    finally:
        _stop(server)

    restarted = _spawn(tmp, index_dir, env, "server-2.log")
    try:
        yield Crash(outcome["result"], killed_at, wal_bytes, restarted)
    finally:
        _stop(restarted)


@pytest.mark.model
def test_after_a_sigkill_mid_load_the_database_opens_cleanly(crash: Crash) -> None:
    # The kill cut the load short (the sessions saw their sockets close) ...
    assert crash.result.errors
    assert len(crash.result.answered) < 20 * 30
    # ... and left a write-ahead log to recover, which the restart did.
    assert crash.wal_bytes_at_kill > 0
    integrity, mode, _ = _sqlite_state(crash.restarted.db_path)
    assert integrity == "ok"
    assert mode == "wal"
    # The restarted server answers and stores feedback on the recovered database.
    after = run_load(crash.restarted.url, 1, 2, question_timeout=30, overall_timeout=60)
    assert after.errors == []
    assert feedback_problems(crash.restarted.database_url, after) == []


@pytest.mark.model
def test_every_feedback_acknowledged_before_a_sigkill_is_stored(crash: Crash) -> None:
    acknowledged = crash.result.acknowledged
    assert len(acknowledged) >= crash.acknowledged_at_kill >= 60
    _, _, stored = _sqlite_state(crash.restarted.db_path)
    missing = {e.feedback_id for e in acknowledged} - stored
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged feedbacks lost"


@pytest.mark.model
def test_every_feedback_acknowledged_before_a_sigkill_is_exported_with_its_answer_or_marked(
    crash: Crash,
) -> None:
    # Chainlit writes steps in fire-and-forget tasks (Step.send/Message._create:
    # asyncio.create_task(create_step)) while PUT /feedback is awaited, so under load a
    # feedback row can be committed before the answer it rates, and a crash in between keeps
    # the rating but loses the answer. Our guarantee: `supportbot feedback` exports every
    # acknowledged rating, with the answer the session saw or marked as not stored; never a
    # wrong answer, never dropped.
    rows = {r["feedback_id"]: r for r in fetch_feedback(crash.restarted.database_url)}
    for e in crash.result.acknowledged:
        row = rows.get(e.feedback_id)
        assert row is not None, f"feedback {e.feedback_id} dropped from the export"
        assert (row["thread_id"], row["value"]) == (e.thread_id, e.feedback_value)
        if row["answer_missing"]:
            # The question is still shown when its step was stored.
            assert row["answer"] == ""
            assert row["question"] in ("", e.question)
        else:
            assert (row["step_id"], row["answer"]) == (e.answer_id, e.answer)
            assert row["question"] == e.question


# -- rate limit --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_server(
    tmp_path_factory: pytest.TempPathFactory, index_dir: Path
) -> Iterator[ChatServer]:
    """A merchant instance allowing 3 messages per session and minute."""
    yield from merchant_server(
        tmp_path_factory.mktemp("limited"), index_dir, rate_limit_per_minute="3"
    )


@pytest.mark.model
def test_a_session_over_its_rate_limit_gets_a_polite_notice_at_once(
    limited_server: ChatServer,
) -> None:
    result = run_load(limited_server.url, 1, 5, feedback=False, overall_timeout=90)

    answers, limited = result.exchanges[:3], result.exchanges[3:]
    assert len(result.exchanges) == 5
    assert all(e.error is None and not e.rate_limited for e in answers)
    assert all(e.rate_limited for e in limited)
    for e in limited:
        wait = re.search(r"Please wait (\d+) seconds", e.answer)
        assert wait, e.answer
        assert e.answer == rate_limited_text(int(wait.group(1)))
        assert 50 <= int(wait.group(1)) <= 60  # the window opens a minute after the 1st
        assert e.latency_s is not None
        assert e.latency_s < 2.0

    # The limit is per session: a new tab is answered.
    fresh = run_load(limited_server.url, 1, 1, feedback=False, overall_timeout=60)
    assert fresh.errors == []


# -- the agent instance: nothing without a login -----------------------------------------------


@pytest.fixture(scope="module")
def agent_server(tmp_path_factory: pytest.TempPathFactory, index_dir: Path) -> Iterator[ChatServer]:
    env = {
        "SUPPORTBOT_CHAT__AGENT_USERNAME": AGENT_USER,
        "SUPPORTBOT_CHAT__AGENT_PASSWORD": AGENT_PASSWORD,
        "SUPPORTBOT_CHAT__RATE_LIMIT_PER_MINUTE": LOAD_RATE_LIMIT,
        "CHAINLIT_AUTH_SECRET": secrets.token_hex(32),  # 64 characters
    }
    server = _spawn(tmp_path_factory.mktemp("agent"), index_dir, env)
    try:
        yield server
    finally:
        _stop(server)


def _connect(url: str, cookies: dict[str, str] | None = None, profile: str = "Merchant") -> None:
    async def go() -> None:
        async with ChatSession(url, profile=profile, cookies=cookies, connect_timeout=20):
            pass

    asyncio.run(go())


@pytest.mark.model
def test_agent_instance_refuses_everything_without_a_valid_login(
    agent_server: ChatServer,
) -> None:
    url = agent_server.url
    with httpx.Client(base_url=url, timeout=20) as http:
        assert http.get("/auth/config").json()["requireLogin"] is True
        threads = {"pagination": {"first": 20, "cursor": None}, "filter": {}}
        assert http.post("/project/threads", json=threads).status_code == 401
        assert http.get("/user").status_code == 401
        assert http.get(f"/project/thread/{uuid.uuid4()}").status_code == 401
        for_id = str(uuid.uuid4())
        feedback = {"forId": for_id, "threadId": str(uuid.uuid4()), "value": 1}
        body = {"feedback": feedback, "sessionId": str(uuid.uuid4())}
        assert http.put("/feedback", json=body).status_code == 401
        # A token signed with another secret is no better than none.
        forged = jwt.encode(
            {"identifier": AGENT_USER, "metadata": {"role": "agent"}, "exp": time.time() + 600},
            secrets.token_hex(32),
            algorithm="HS256",
        )
        http.cookies.set("access_token", forged)
        assert http.post("/project/threads", json=threads).status_code == 401
        assert http.get("/user", headers={"Authorization": f"Bearer {forged}"}).status_code == 401

    # The chat socket: refused without a token, with a forged one, with garbage.
    for cookies in (None, {"access_token": forged}, {"access_token": "not-a-token"}):
        with pytest.raises(SocketRefused):
            _connect(url, cookies)
    with pytest.raises(SocketRefused):
        _connect(url, None, profile="Support agent")
    # Nothing of those attempts reached the database: no feedback, no owner-less thread.
    con = sqlite3.connect(agent_server.db_path)
    try:
        feedback_rows = 'SELECT COUNT(*) FROM feedbacks WHERE "forId" = ?'
        assert con.execute(feedback_rows, (for_id,)).fetchone()[0] == 0
        orphans = 'SELECT COUNT(*) FROM threads WHERE "userIdentifier" IS NULL'
        assert con.execute(orphans).fetchone()[0] == 0
    finally:
        con.close()


@pytest.mark.model
def test_agent_login_succeeds_with_the_password_and_fails_without(
    agent_server: ChatServer,
) -> None:
    url = agent_server.url
    with httpx.Client(base_url=url, timeout=20) as http:
        for username, password in [
            (AGENT_USER, "wrong-pw"),
            (AGENT_USER, AGENT_PASSWORD + " "),
            ("admin", AGENT_PASSWORD),
            (AGENT_USER.upper(), AGENT_PASSWORD),
        ]:
            response = http.post("/login", data={"username": username, "password": password})
            assert response.status_code == 401, (username, password)
            assert "access_token" not in response.cookies

        # An empty password is rejected by the form itself.
        empty = http.post("/login", data={"username": AGENT_USER, "password": ""})
        assert empty.status_code == 422
        assert "access_token" not in empty.cookies

        response = http.post("/login", data={"username": AGENT_USER, "password": AGENT_PASSWORD})
        assert response.status_code == 200
        token = response.cookies["access_token"]
        assert http.get("/user").json()["identifier"] == AGENT_USER
        threads = {"pagination": {"first": 20, "cursor": None}, "filter": {}}
        assert http.post("/project/threads", json=threads).status_code == 200

    # With the cookie the socket connects, and the agent's sessions are answered.
    _connect(url, {"access_token": token}, profile="Support agent")
    result = run_load(url, 2, 2, cookies={"access_token": token}, overall_timeout=90)
    assert result.errors == []
    assert feedback_problems(agent_server.database_url, result) == []
    assert {r["user"] for r in fetch_feedback(agent_server.database_url)} == {AGENT_USER}


# -- launching agent mode without the secret ---------------------------------------------


def test_agent_mode_without_auth_secret_is_refused_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bot import app

    settings = Settings(_env_file=None, chat={"agent_password": AGENT_PASSWORD})
    assert app.agent_mode(settings)
    for base in ({}, {"CHAINLIT_AUTH_SECRET": ""}):
        with pytest.raises(app.ChatConfigError) as raised:
            app.chat_environment(settings, base=base)
        message = str(raised.value)
        assert "CHAINLIT_AUTH_SECRET" in message
        assert "chainlit create-secret" in message
        assert "SUPPORTBOT_CHAT__AGENT_PROFILE=false" in message

    # run_chat refuses before starting anything.
    monkeypatch.delenv("CHAINLIT_AUTH_SECRET", raising=False)

    def no_server(*args: Any, **kwargs: Any) -> int:
        raise AssertionError("a server was started")

    monkeypatch.setattr(app.subprocess, "call", no_server)
    with pytest.raises(app.ChatConfigError, match="CHAINLIT_AUTH_SECRET"):
        app.run_chat(settings, "127.0.0.1", _free_port())
    # With the secret the environment is fine (and carries the agent settings).
    env = app.chat_environment(settings, base={"CHAINLIT_AUTH_SECRET": secrets.token_hex(32)})
    assert env["SUPPORTBOT_CHAT__AGENT_PASSWORD"] == AGENT_PASSWORD


def test_a_bare_chainlit_run_in_agent_mode_without_the_secret_exits_before_serving(
    tmp_path: Path,
) -> None:
    # Bypassing run_chat: Chainlit itself refuses to serve a login without the secret.
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SUPPORTBOT_")}
    env.pop("CHAINLIT_AUTH_SECRET", None)
    env.update(
        {
            "SUPPORTBOT_CHAT__AGENT_PASSWORD": AGENT_PASSWORD,
            "SUPPORTBOT_CHAT__DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}",
            "CHAINLIT_APP_ROOT": str(REPO),
        }
    )
    command = [sys.executable, "-m", "chainlit", "run", str(REPO / "bot" / "app.py")]
    command += ["--headless", "--host", "127.0.0.1", "--port", str(_free_port())]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "JWT secret" in done.stderr + done.stdout
