"""What several chat replicas share through the chat database, beyond Chainlit's tables.

* **Conversation state**: the follow-up history and the filters of a conversation,
  keyed by Chainlit's session id (one browser tab; it survives reconnects, and a
  failover to another replica, where Chainlit starts a new thread id). Any replica
  can continue the conversation, for anonymous merchants too.
* **Rate limit**: one row per accepted message and client, so the limit holds across
  reconnects and replicas.
* **Index builds**: ``supportbot ingest`` publishes each build (manifest and files) so
  replicas on machines without a shared disk can load it (see :mod:`bot.index_watch`).

The tables are created with the rest of the schema (:data:`bot.persistence.SCHEMA`).
One class serves SQLite and PostgreSQL; :func:`open_shared_state` picks the subclass
by URL (PostgreSQL serialises a client's rate-limit check with an advisory lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import time
import weakref
import zipfile
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.persistence import _sync, create_schema_async, is_sqlite, make_engine
from ingest.index import build_files

log = logging.getLogger(__name__)

RATE_WINDOW_S = 60.0
# Published builds kept in the database; older ones are deleted when a new one arrives.
KEEP_BUILDS = 3


class KeyedLocks:
    """One ``asyncio.Lock`` per key, kept only while some task holds or awaits it."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[Any, asyncio.Lock] = weakref.WeakValueDictionary()

    def __call__(self, key: Any) -> asyncio.Lock:
        """The lock of ``key`` (the caller's reference keeps it alive while it waits)."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock


class SharedState:
    """Conversation state, rate-limit counters and published index builds in one database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # One check per client at a time in this process. Checks of one client are
        # serialised in the database anyway (see PostgresSharedState); queueing them here
        # keeps the waiting out of the connection pool. Without it, a busy key (every
        # merchant behind one office address) held every pooled connection waiting for
        # its lock, and conversation reads and saves timed out behind them.
        self._client_lock = KeyedLocks()

    async def close(self) -> None:
        """Close the connection pool."""
        await self.engine.dispose()

    # -- conversations ------------------------------------------------------------------

    async def load_conversation(self, session_id: str) -> dict[str, Any] | None:
        """The stored state of a conversation (``history``, ``filters``), or None."""
        sql = 'SELECT "state" FROM supportbot_conversations WHERE "session_id" = :sid'
        async with self.engine.connect() as conn:
            row = (await conn.execute(text(sql), {"sid": session_id})).first()
        if row is None:
            return None
        try:
            state = json.loads(row[0])
        except (TypeError, json.JSONDecodeError):
            log.warning("Stored conversation state of %s is unreadable; starting fresh", session_id)
            return None
        return state if isinstance(state, dict) else None

    async def save_conversation(
        self, session_id: str, thread_id: str | None, state: dict[str, Any]
    ) -> None:
        """Store (replace) a conversation's state."""
        sql = """INSERT INTO supportbot_conversations
            ("session_id", "thread_id", "state", "updated_at")
            VALUES (:sid, :tid, :state, :now)
            ON CONFLICT ("session_id") DO UPDATE
            SET "thread_id" = :tid, "state" = :state, "updated_at" = :now"""
        params = {
            "sid": session_id,
            "tid": thread_id,
            "state": json.dumps(state, ensure_ascii=False),
            "now": time.time(),
        }
        async with self.engine.begin() as conn:
            await conn.execute(text(sql), params)

    # -- rate limit --------------------------------------------------------------------------

    async def _lock_client(self, conn: Any, client: str) -> None:
        """Serialise concurrent checks of one client (SQLite serialises every writer)."""

    async def admit(self, client: str, limit: int, now: float | None = None) -> float:
        """Count one message of ``client`` if under ``limit`` per minute.

        Returns:
            0 when admitted (and counted); otherwise the seconds until the oldest message
            of the window leaves it, when the client may send again.
        """
        return await self.admit_all({client: limit}, now)

    async def admit_all(self, limits: dict[str, int], now: float | None = None) -> float:
        """Count one message against every client of ``limits`` (client -> per minute).

        One transaction: the message is counted for all of them, or, when any is at its
        limit, for none (a message refused by the address limit no longer uses up the
        conversation's allowance).

        Returns:
            0 when admitted; otherwise the longest wait among the clients at their limit.
        """
        now = time.time() if now is None else now
        async with contextlib.AsyncExitStack() as held:
            # Always in the same order, so two checks sharing clients cannot deadlock.
            for client in sorted(limits):
                await held.enter_async_context(self._client_lock(client))
            return await self._admit(limits, now)

    async def _admit(self, limits: dict[str, int], now: float) -> float:
        since = now - RATE_WINDOW_S
        wait = 0.0
        async with self.engine.begin() as conn:
            for client in sorted(limits):
                await self._lock_client(conn, client)
                await conn.execute(
                    text(
                        'DELETE FROM supportbot_rate_events WHERE "client" = :c AND "at" <= :since'
                    ),
                    {"c": client, "since": since},
                )
                row = (
                    await conn.execute(
                        text(
                            'SELECT COUNT(*), MIN("at") FROM supportbot_rate_events '
                            'WHERE "client" = :c AND "at" > :since'
                        ),
                        {"c": client, "since": since},
                    )
                ).first()
                count, oldest = (int(row[0]), row[1]) if row else (0, None)
                if count >= limits[client] and oldest is not None:
                    wait = max(wait, float(oldest) + RATE_WINDOW_S - now, 0.001)
            if wait:
                return wait
            await conn.execute(
                text('INSERT INTO supportbot_rate_events ("client", "at") VALUES (:c, :now)'),
                [{"c": client, "now": now} for client in sorted(limits)],
            )
        return 0.0

    # -- index builds ------------------------------------------------------------------------

    async def publish_build(self, build: str, manifest: dict[str, Any], files: dict[str, bytes]):
        """Store a build (its manifest and files); keeps the newest :data:`KEEP_BUILDS`."""
        sql = """INSERT INTO supportbot_index_builds ("build", "published_at", "manifest", "files")
            VALUES (:build, :now, :manifest, :files)
            ON CONFLICT ("build") DO NOTHING"""
        params = {
            "build": build,
            "now": time.time(),
            "manifest": json.dumps(manifest, ensure_ascii=False),
            "files": pack_files(files),
        }
        async with self.engine.begin() as conn:
            await conn.execute(text(sql), params)
            names = await conn.execute(
                text('SELECT "build" FROM supportbot_index_builds ORDER BY "published_at" DESC')
            )
            for (name,) in names.all()[KEEP_BUILDS:]:
                await conn.execute(
                    text('DELETE FROM supportbot_index_builds WHERE "build" = :b'), {"b": name}
                )

    async def latest_build(self) -> str | None:
        """The name of the newest published build, or None."""
        sql = 'SELECT "build" FROM supportbot_index_builds ORDER BY "published_at" DESC LIMIT 1'
        async with self.engine.connect() as conn:
            row = (await conn.execute(text(sql))).first()
        return None if row is None else str(row[0])

    async def fetch_build(self, build: str) -> tuple[dict[str, Any], dict[str, bytes]] | None:
        """A published build's manifest and files, or None when it is gone."""
        sql = 'SELECT "manifest", "files" FROM supportbot_index_builds WHERE "build" = :b'
        async with self.engine.connect() as conn:
            row = (await conn.execute(text(sql), {"b": build})).first()
        if row is None:
            return None
        return json.loads(row[0]), unpack_files(bytes(row[1]))


class PostgresSharedState(SharedState):
    """PostgreSQL: a transaction-scoped advisory lock per client for the rate limit."""

    async def _lock_client(self, conn: Any, client: str) -> None:
        await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:c))"), {"c": client})


def open_shared_state(
    url: str, pool_size: int = 5, engine: AsyncEngine | None = None
) -> SharedState:
    """The shared state on the chat database at ``url`` (tables from ``create_schema``).

    Args:
        url: The chat database.
        pool_size: Connections of its own pool (when no ``engine`` is given).
        engine: An engine on ``url`` to share (the chat server's one pool for its own
            queries, see :class:`bot.web_guard.GuardStore`).
    """
    engine = engine if engine is not None else make_engine(url, pool_size)
    return SharedState(engine) if is_sqlite(url) else PostgresSharedState(engine)


def publish_saved_build(url: str, build: Path) -> str:
    """Publish a build saved on disk to the chat database at ``url``; returns its name.

    Raises:
        bot.persistence.DatabaseError: The database cannot be used (one line).
    """
    manifest, files = build_files(build)
    name = str(manifest.get("build") or build.name)

    async def publish() -> None:
        await create_schema_async(url)
        state = open_shared_state(url, pool_size=1)
        try:
            await state.publish_build(name, manifest, files)
        finally:
            await state.close()

    _sync(url, publish)
    return name


def pack_files(files: dict[str, bytes]) -> bytes:
    """The files of a build as one zip (stored, not compressed; never pickle)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, data in sorted(files.items()):
            archive.writestr(name, data)
    return out.getvalue()


def unpack_files(blob: bytes, max_bytes: int = 512_000_000) -> dict[str, bytes]:
    """The files of :func:`pack_files`; raises ``ValueError`` when the blob is not one."""
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            infos = archive.infolist()
            if sum(i.file_size for i in infos) > max_bytes:
                raise ValueError("the published build is too large")
            return {i.filename: archive.read(i) for i in infos}
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ValueError(f"the published build is not readable ({exc})") from exc
