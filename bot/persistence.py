"""Chat history and feedback storage for the Chainlit app, and reports read from it.

The chat app persists through Chainlit's own ``SQLAlchemyDataLayer``; this module
adds what that layer leaves to the project:

* the schema (``CREATE TABLE IF NOT EXISTS``, the columns the 2.12 layer reads and
  writes), created idempotently at start-up, with WAL mode on SQLite;
* a ``sqlite3`` adapter storing Python lists and dicts as JSON. Chainlit binds the
  thread ``tags`` (the chat profile, auto-tagged) as a list: PostgreSQL takes it as
  ``TEXT[]`` but SQLite cannot bind it, and the layer swallows the error, so without
  the adapter the thread row is silently not saved;
* a tiny storage client keeping the (small, text-only) citation elements inline as
  ``data:`` URLs, so resumed threads still show their sources without S3;
* synchronous readers for the CLI: :func:`fetch_feedback`, :func:`fetch_abstentions`,
  :func:`fetch_handoffs` and the pure :func:`gap_report`.

The answer steps carry what the reports need in their metadata (see
``bot/chat_render.py``): ``question``, ``citations`` and ``abstained``.

The same code runs on PostgreSQL: pass ``postgresql+asyncpg://user:pass@host/db``.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import logging
import re
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.safe_text import utf8_safe_data

T = TypeVar("T")

log = logging.getLogger(__name__)

# The schema of chainlit 2.12's SQLAlchemyDataLayer (its SQL in
# chainlit/data/sql_alchemy.py and the documented schema), idempotent. Types are
# PostgreSQL's; SQLite accepts any type name, so one script serves both.
SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS users (
        "id" UUID PRIMARY KEY,
        "identifier" TEXT NOT NULL UNIQUE,
        "metadata" JSONB NOT NULL,
        "createdAt" TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS threads (
        "id" UUID PRIMARY KEY,
        "createdAt" TEXT,
        "name" TEXT,
        "userId" UUID,
        "userIdentifier" TEXT,
        "tags" TEXT[],
        "metadata" JSONB,
        FOREIGN KEY ("userId") REFERENCES users("id") ON DELETE CASCADE
    )""",
    """CREATE TABLE IF NOT EXISTS steps (
        "id" UUID PRIMARY KEY,
        "name" TEXT NOT NULL,
        "type" TEXT NOT NULL,
        "threadId" UUID NOT NULL,
        "parentId" UUID,
        "streaming" BOOLEAN NOT NULL,
        "waitForAnswer" BOOLEAN,
        "isError" BOOLEAN,
        "metadata" JSONB,
        "tags" TEXT[],
        "input" TEXT,
        "output" TEXT,
        "createdAt" TEXT,
        "command" TEXT,
        "modes" JSONB,
        "start" TEXT,
        "end" TEXT,
        "generation" JSONB,
        "showInput" TEXT,
        "language" TEXT,
        "indent" INT,
        "defaultOpen" BOOLEAN,
        "autoCollapse" BOOLEAN,
        FOREIGN KEY ("threadId") REFERENCES threads("id") ON DELETE CASCADE
    )""",
    """CREATE TABLE IF NOT EXISTS elements (
        "id" UUID PRIMARY KEY,
        "threadId" UUID,
        "type" TEXT,
        "url" TEXT,
        "chainlitKey" TEXT,
        "name" TEXT NOT NULL,
        "display" TEXT,
        "objectKey" TEXT,
        "size" TEXT,
        "page" INT,
        "language" TEXT,
        "forId" UUID,
        "mime" TEXT,
        "props" JSONB,
        "autoPlay" BOOLEAN,
        "playerConfig" JSONB,
        FOREIGN KEY ("threadId") REFERENCES threads("id") ON DELETE CASCADE
    )""",
    """CREATE TABLE IF NOT EXISTS feedbacks (
        "id" UUID PRIMARY KEY,
        "forId" UUID NOT NULL,
        "threadId" UUID NOT NULL,
        "value" INT NOT NULL,
        "comment" TEXT,
        FOREIGN KEY ("threadId") REFERENCES threads("id") ON DELETE CASCADE
    )""",
    'CREATE INDEX IF NOT EXISTS steps_thread_idx ON steps ("threadId")',
    'CREATE INDEX IF NOT EXISTS threads_user_idx ON threads ("userId")',
    'CREATE INDEX IF NOT EXISTS feedbacks_for_idx ON feedbacks ("forId")',
    # The project's own tables: what several replicas must share beyond Chainlit's.
    # A conversation's follow-up state, keyed by Chainlit's session id (the browser tab,
    # which survives reconnects and failover; the thread id changes on another replica).
    """CREATE TABLE IF NOT EXISTS supportbot_conversations (
        "session_id" TEXT PRIMARY KEY,
        "thread_id" TEXT,
        "state" TEXT NOT NULL,
        "updated_at" DOUBLE PRECISION NOT NULL
    )""",
    # One row per accepted message, for the rate limit every replica applies.
    """CREATE TABLE IF NOT EXISTS supportbot_rate_events (
        "client" TEXT NOT NULL,
        "at" DOUBLE PRECISION NOT NULL
    )""",
    'CREATE INDEX IF NOT EXISTS supportbot_rate_idx ON supportbot_rate_events ("client", "at")',
    # Index builds published by `supportbot ingest`, for replicas without a shared disk.
    """CREATE TABLE IF NOT EXISTS supportbot_index_builds (
        "build" TEXT PRIMARY KEY,
        "published_at" DOUBLE PRECISION NOT NULL,
        "manifest" TEXT NOT NULL,
        "files" BYTEA NOT NULL
    )""",
    # The security layer's (bot/web_guard.py): failed logins and revoked tokens, shared by
    # every replica so lockouts and logouts hold wherever the next request lands.
    """CREATE TABLE IF NOT EXISTS login_failures (
        "key" TEXT NOT NULL,
        "at" DOUBLE PRECISION NOT NULL
    )""",
    'CREATE INDEX IF NOT EXISTS login_failures_key_idx ON login_failures ("key", "at")',
    """CREATE TABLE IF NOT EXISTS revoked_tokens (
        "digest" TEXT PRIMARY KEY,
        "expires" DOUBLE PRECISION NOT NULL
    )""",
)

# Any fixed number: the PostgreSQL advisory lock serialising schema creation. Replicas
# starting together would otherwise race in CREATE TABLE IF NOT EXISTS, which is not
# safe concurrently there (a duplicate-key error on the system catalogue).
SCHEMA_LOCK_KEY = 7_201_326_517

# Seconds a SQLite writer waits for a lock before failing ("database is locked").
SQLITE_BUSY_TIMEOUT_S = 15
# Seconds a statement may wait for the process's one SQLite connection before failing.
SQLITE_POOL_TIMEOUT_S = 60
# Tries at creating the schema on SQLite, where concurrent creators can fail at once.
SQLITE_SCHEMA_ATTEMPTS = 10
# Seconds a feedback may take to be stored, its thread waited for and failed attempts
# retried (see make_data_layer); then it is refused. Under the clients' 30 s.
FEEDBACK_DEADLINE_S = 20.0
# Seconds to connect to PostgreSQL, and for one statement, before giving up.
PG_CONNECT_TIMEOUT_S = 5
PG_COMMAND_TIMEOUT_S = 15
# Largest element kept inline as a data: URL; citation texts are a few kB.
MAX_INLINE_ELEMENT_BYTES = 256_000

_adapters_registered = False


def register_sqlite_adapters() -> None:
    """Let sqlite3 bind Python lists and dicts, storing them as JSON text.

    Chainlit passes thread ``tags`` as a list (and a message's ``modes`` as a dict);
    the sqlite3 module rejects both. The adapters are process-wide and idempotent.
    """
    global _adapters_registered
    if not _adapters_registered:
        sqlite3.register_adapter(list, _to_json)
        sqlite3.register_adapter(dict, _to_json)
        _adapters_registered = True


def _to_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def is_sqlite(url: str) -> bool:
    """True for ``sqlite`` URLs (any driver)."""
    return make_url(url).get_backend_name() == "sqlite"


def connect_args(url: str) -> dict[str, Any]:
    """Driver arguments: a generous lock timeout on SQLite, bounded waits on PostgreSQL.

    A PostgreSQL server that cannot be reached fails a connect within
    :data:`PG_CONNECT_TIMEOUT_S` (asyncpg waits 60 s by default), so start-up reports it
    promptly and a replica keeps answering while the database is gone.
    """
    if is_sqlite(url):
        return {"timeout": SQLITE_BUSY_TIMEOUT_S}
    return {"timeout": PG_CONNECT_TIMEOUT_S, "command_timeout": PG_COMMAND_TIMEOUT_S}


def _ensure_sqlite_folder(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        folder = Path(database).expanduser().parent
        blocker = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            # mkdir would say "File exists", which reads as if the database were fine.
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(blocker))
        folder.mkdir(parents=True, exist_ok=True)


def engine_options(url: str, pool_size: int = 5) -> dict[str, Any]:
    """Keyword arguments for ``create_async_engine``: driver arguments and pool size.

    ``pool_size`` is the connections one process keeps open to PostgreSQL (as many again
    may be opened under bursts); an engine on SQLite keeps one connection.
    """
    options: dict[str, Any] = {"connect_args": connect_args(url)}
    if not is_sqlite(url):
        # pool_pre_ping: a connection the server dropped (restart, failover) is replaced
        # instead of failing the next query.
        options.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
    else:
        # SQLite has one writer at a time. Several connections of one process only wait
        # for each other in SQLite's busy handler, which sleeps in steps of up to 100 ms
        # whatever frees the lock sooner, and every overflow connection was a new thread
        # opened and closed per burst. One connection queues the process's statements in
        # the pool instead: 50 chat sessions' replies waited 1.3 s at the rate check with
        # the stock pool (5 + 10 overflow per engine, two engines); see README.
        options.update(pool_size=1, max_overflow=0, pool_timeout=SQLITE_POOL_TIMEOUT_S)
    return options


def make_engine(url: str, pool_size: int = 5) -> AsyncEngine:
    """An async engine for the chat database (SQLite folder created, adapters set)."""
    if is_sqlite(url):
        register_sqlite_adapters()
        _ensure_sqlite_folder(url)
    return create_async_engine(url, **engine_options(url, pool_size))


def _engine(url: str) -> AsyncEngine:
    return make_engine(url, pool_size=1)


class DatabaseError(RuntimeError):
    """The chat database cannot be opened or read (the message names it and says why)."""


def shown_url(url: str) -> str:
    """The database URL as it may be printed: without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparseable URL is shown by its scheme only
        return url.split(":", 1)[0] + ":…"


def _sync(url: str, factory: Callable[[], Awaitable[T]]) -> T:
    """:func:`_run` with driver, URL and file errors turned into :class:`DatabaseError`."""
    try:
        return _run(factory)
    except (SQLAlchemyError, OSError, ValueError, ImportError) as exc:
        raise DatabaseError(describe_error(url, exc)) from exc


def describe_error(url: str, exc: BaseException) -> str:
    """One line naming the database (without password) and why it cannot be used."""
    reason = getattr(exc, "orig", None) or exc
    first_line = (str(reason).strip().splitlines() or [""])[0] or type(reason).__name__
    if isinstance(exc, ImportError):
        first_line = f"its driver is not installed ({first_line})"
    if not url:
        return first_line
    return f"Cannot use the chat database {shown_url(url)}: {first_line}"


def _run(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, even inside a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())  # type: ignore[arg-type]
    result: dict[str, Any] = {}

    def worker() -> None:
        try:
            result["value"] = asyncio.run(factory())  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=worker, name="supportbot-db")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


# -- schema ---------------------------------------------------------------------


# Every table and index SCHEMA creates, by name.
SCHEMA_OBJECTS = frozenset(re.findall(r"IF NOT EXISTS (\w+)", "\n".join(SCHEMA)))


async def _schema_present(conn: Any) -> bool:
    """Whether every table and index of :data:`SCHEMA` exists (PostgreSQL; no table locks)."""
    sql = (
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema()"
    )
    names = {row[0] for row in await conn.exec_driver_sql(sql)}
    return SCHEMA_OBJECTS <= names


async def create_schema_async(url: str) -> None:
    """Create the tables if missing (idempotent); SQLite is switched to WAL mode.

    On PostgreSQL a schema already there is left alone: ``CREATE INDEX IF NOT EXISTS``
    takes a lock on its table even when the index exists, and a re-ingest publishing its
    build while the replicas write under load waited behind their writes (and they behind
    it) until it timed out. (SQLite's one writer at a time makes that moot.)
    """
    engine = _engine(url)
    try:
        if not is_sqlite(url):
            async with engine.connect() as conn:
                if await _schema_present(conn):
                    return
        for attempt in range(SQLITE_SCHEMA_ATTEMPTS):
            try:
                await _create_tables(engine, url)
                return
            except OperationalError as exc:
                # Two SQLite connections that both read the schema and then both want to
                # write it would deadlock, so SQLite fails one at once ("database is
                # locked") without waiting out the busy timeout: 2 in 30 starts of 8 at
                # once. The statements are idempotent; try again.
                if not is_sqlite(url) or "locked" not in str(exc):
                    raise
                if attempt == SQLITE_SCHEMA_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))
    finally:
        await engine.dispose()


async def _create_tables(engine: AsyncEngine, url: str) -> None:
    async with engine.begin() as conn:
        if is_sqlite(url):
            await conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        else:
            # Held until this transaction ends: one replica creates, the others wait
            # and then find every table there.
            await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})")
        for statement in SCHEMA:
            await conn.exec_driver_sql(statement)


def create_schema(url: str) -> None:
    """Synchronous :func:`create_schema_async` (usable from a running event loop too)."""
    _sync(url, lambda: create_schema_async(url))


# -- the Chainlit data layer -------------------------------------------------------


def _inline_storage_client() -> Any:
    """A ``BaseStorageClient`` keeping small text elements inline as ``data:`` URLs."""
    from chainlit.data.storage_clients.base import BaseStorageClient

    class InlineTextStorage(BaseStorageClient):
        """Stores an element's bytes in its own ``url`` column; nothing to delete."""

        async def upload_file(
            self,
            object_key: str,
            data: bytes | str,
            mime: str = "application/octet-stream",
            overwrite: bool = True,
            content_disposition: str | None = None,
        ) -> dict[str, Any]:
            raw = data.encode("utf-8") if isinstance(data, str) else data
            if len(raw) > MAX_INLINE_ELEMENT_BYTES:
                return {}
            if mime.startswith("text/") and "charset" not in mime:
                mime = f"{mime};charset=utf-8"
            url = f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"
            # An empty object key makes the layer serve the stored url as is.
            return {"url": url, "object_key": ""}

        async def delete_file(self, object_key: str) -> bool:
            return True

        async def get_read_url(self, object_key: str) -> str:
            return object_key

        async def close(self) -> None:
            return None

    return InlineTextStorage()


def _upsert_by_id(table: str, params: dict[str, Any]) -> Any:
    """The stock layer's insert-or-update of a row by ``id``, for the given columns."""
    columns = ", ".join(f'"{key}"' for key in params)
    values = ", ".join(f":{key}" for key in params)
    updates = ", ".join(f'"{key}" = :{key}' for key in params if key != "id")
    return text(
        f"INSERT INTO {table} ({columns}) VALUES ({values}) "
        f'ON CONFLICT ("id") DO UPDATE SET {updates}'
    )


def make_data_layer(
    url: str, pool_size: int = 5, feedback_engine: AsyncEngine | None = None
) -> Any:
    """Chainlit's ``SQLAlchemyDataLayer`` for the URL, ready for SQLite or PostgreSQL.

    Feedback is acknowledged only once it is committed: it waits for the thread it rates
    (Chainlit writes threads in background tasks, and PostgreSQL's foreign key would
    refuse it), retries what fails within :data:`FEEDBACK_DEADLINE_S`, and then fails its
    request (the merchant sees it was not saved) instead of being acknowledged and lost;
    the stock layer swallows database errors and answers with an id either way. Each
    attempt is one short transaction on ``feedback_engine`` (the server's own pool) when
    given, so ratings do not queue behind Chainlit's backlog of step writes.

    Call :func:`create_schema` (or :func:`create_schema_async`) before first use.
    """
    from chainlit.data.sql_alchemy import SQLAlchemyDataLayer
    from chainlit.data.utils import queue_until_user_message
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import sessionmaker

    class SupportDataLayer(SQLAlchemyDataLayer):
        """The stock layer with a sized pool, safe text and reported feedback failures.

        Lone surrogates are replaced in everything it writes: both sqlite3 and asyncpg
        refuse them, and Chainlit only logs the failure, so a message, a thread name or a
        feedback comment holding one was silently not saved.
        """

        async def execute_sql(self, query: str, parameters: dict) -> Any:
            # The stock method's transaction and results (rows as dicts, else the row
            # count; None after an error, logged), on a plain connection instead of an ORM
            # session: every step of every reply is written through here, and the session's
            # bookkeeping was a third of the chat server's CPU under load.
            try:
                async with self.engine.begin() as conn:
                    result = await conn.execute(text(query), utf8_safe_data(parameters))
                    if result.returns_rows:
                        return self.clean_result([dict(row._mapping) for row in result])
                    return result.rowcount
            except Exception as exc:  # noqa: BLE001 - the stock layer's contract: logged
                log.warning("Chat history statement failed: %s", describe_error("", exc))
                return None

        async def _ensure_thread(self, conn: Any, thread_id: str) -> None:
            # What the stock update_thread(thread_id) writes for a conversation not yet
            # stored (its id, creation time and empty metadata), and nothing if it is.
            await conn.execute(
                text(
                    'INSERT INTO threads ("id", "createdAt", "metadata") '
                    'VALUES (:id, :createdAt, :metadata) ON CONFLICT ("id") DO NOTHING'
                ),
                {
                    "id": thread_id,
                    "createdAt": await self.get_current_timestamp(),
                    "metadata": "{}",
                },
            )

        @queue_until_user_message()
        async def create_step(self, step_dict: Any) -> None:
            # The stock statement in one transaction with the conversation's row: the stock
            # method first read the thread in a transaction of its own, two per step and
            # five steps a reply (the merchant's message, the run, the answer, the run's
            # update), all in a row on SQLite's one connection.
            if "showInput" in step_dict:
                step_dict["showInput"] = str(step_dict.get("showInput", "")).lower()
            params = {
                key: value
                for key, value in step_dict.items()
                if value is not None and not (isinstance(value, dict) and not value)
            }
            params["metadata"] = json.dumps(step_dict.get("metadata", {}))
            params["generation"] = json.dumps(step_dict.get("generation", {}))
            params = utf8_safe_data(params)
            upsert = _upsert_by_id("steps", params)
            try:
                async with self.engine.begin() as conn:
                    await self._ensure_thread(conn, step_dict["threadId"])
                    await conn.execute(upsert, params)
            except Exception as exc:  # noqa: BLE001 - as the stock method: logged
                log.warning(
                    "Chat history step %s not stored: %s",
                    step_dict.get("id"),
                    describe_error("", exc),
                )

        async def create_element(self, element: Any) -> Any:
            # Chainlit writes an answer's sources in tasks of their own, which may run
            # before the task that creates the conversation's row: PostgreSQL's foreign
            # key then refused them and Chainlit only logged it, so a conversation resumed
            # later (or on another replica) had lost its sources. Creating the row first
            # is what the stock layer already does for steps.
            if element.for_id and element.thread_id:
                async with self.engine.begin() as conn:
                    await self._ensure_thread(conn, element.thread_id)
            return await super().create_element(element)

        async def upsert_feedback(self, feedback: Any) -> str:
            from dataclasses import asdict

            feedback.id = feedback.id or str(uuid.uuid4())
            # The stock layer's statement, but its errors propagate (HTTP 500 to the UI).
            params = utf8_safe_data({k: v for k, v in asdict(feedback).items() if v is not None})
            sql = _upsert_by_id("feedbacks", params)
            probe = text('SELECT 1 FROM threads WHERE "id" = :t')
            thread = {"t": str(feedback.threadId)}
            engine = feedback_engine or self.engine

            async def attempt() -> bool:
                async with engine.begin() as conn:
                    if (await conn.execute(probe, thread)).first() is None:
                        return False  # not written yet; nothing stored, nothing to undo
                    await conn.execute(sql, params)
                return True  # committed

            deadline = time.monotonic() + FEEDBACK_DEADLINE_S
            pause, failure, attempts = 0.1, None, 0
            while (left := deadline - time.monotonic()) > 0:
                attempts += 1
                try:
                    # A cut-off attempt may still have committed: the retry is an upsert
                    # by id, so nothing is stored twice.
                    if await asyncio.wait_for(attempt(), left):
                        if attempts > 1:
                            log.info("Feedback %s stored at attempt %d", feedback.id, attempts)
                        return str(feedback.id)
                    failure = None
                except Exception as exc:  # noqa: BLE001 - retried until the deadline
                    failure = exc
                    log.warning(
                        "Feedback %s not stored yet: %s", feedback.id, describe_error("", exc)
                    )
                await asyncio.sleep(min(pause, max(deadline - time.monotonic(), 0)))
                pause = min(pause * 2, 1.0)
            log.error(
                "Feedback %s could not be stored within %.0f s (%s)",
                feedback.id,
                FEEDBACK_DEADLINE_S,
                describe_error("", failure) if failure else "its conversation was never stored",
            )
            if failure is not None:
                raise failure
            raise TimeoutError(f"the conversation {feedback.threadId} was not stored in time")

    layer = SupportDataLayer(
        conninfo=url,
        connect_args=connect_args(url),
        storage_provider=_inline_storage_client(),
    )
    # The stock layer builds its engine with default pool arguments; use ours. On SQLite
    # the server's own engine is shared, so the process has one connection (see
    # engine_options).
    if feedback_engine is not None and is_sqlite(url):
        layer.engine = feedback_engine
    else:
        layer.engine = make_engine(url, pool_size)
    layer.async_session = sessionmaker(  # type: ignore[call-overload]
        bind=layer.engine, expire_on_commit=False, class_=AsyncSession
    )
    return layer


# -- reading back (for the CLI) ---------------------------------------------------------


def _json(value: Any, default: Any) -> Any:
    if value is None:
        return default
    if isinstance(value, str):
        try:
            # Chainlit writes metadata with ASCII escapes, so a lone surrogate survives as
            # "\\ud800" and comes back out of json.loads; exports must still encode.
            return utf8_safe_data(json.loads(value))
        except json.JSONDecodeError:
            return default
    return value


async def _query(url: str, sql: str, params: dict[str, Any] | None = None) -> list[dict]:
    engine = _engine(url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text(sql), params or {})
            return [utf8_safe_data(dict(row._mapping)) for row in result]
    finally:
        await engine.dispose()


# Chainlit 2 puts the thumbs on the "run" step wrapping ``on_message``; the answer is
# its child assistant message (the run's parent is the user's message). Feedback given
# straight on a message (older UIs, the tests) is read from that message itself.
# The step is joined with LEFT JOIN: Chainlit writes steps in fire-and-forget tasks, so a
# crash can keep a feedback whose step never reached the database. That rating is still
# shown (with its answer marked missing), never silently dropped.
_FEEDBACK_SQL = """
SELECT f."id" AS feedback_id, f."value" AS value, f."comment" AS comment,
       f."forId" AS feedback_for, f."threadId" AS feedback_thread,
       s."id" AS for_id, s."type" AS for_type, s."threadId" AS thread_id,
       s."output" AS for_output, s."metadata" AS for_metadata, s."createdAt" AS for_created,
       q."output" AS parent_output,
       c."id" AS child_id, c."output" AS child_output, c."metadata" AS child_metadata,
       c."createdAt" AS child_created,
       t."userIdentifier" AS user_identifier
FROM feedbacks f
LEFT JOIN steps s ON s."id" = f."forId"
LEFT JOIN steps q ON q."id" = s."parentId"
LEFT JOIN steps c ON c."parentId" = s."id" AND c."type" = 'assistant_message'
LEFT JOIN threads t ON t."id" = f."threadId"
ORDER BY s."createdAt", c."createdAt", f."id"
"""

_ABSTENTION_SQL = """
SELECT s."id" AS step_id, s."threadId" AS thread_id, s."output" AS answer,
       s."metadata" AS metadata, s."createdAt" AS created_at
FROM steps s
WHERE s."type" = 'assistant_message' AND CAST(s."metadata" AS TEXT) LIKE '%"abstained": true%'
ORDER BY s."createdAt"
"""


def _answer_of(rows: list[dict[str, Any]]) -> tuple[str, dict[str, Any], Any, str | None]:
    """(step id, metadata, created time, text) of the answer a feedback is about.

    The text is None when the answer's step is not in the database.
    """
    first = rows[0]
    if first["for_id"] is None:
        return str(first["feedback_for"]), {}, None, None
    if first["for_type"] != "run":
        return (
            str(first["for_id"]),
            _json(first["for_metadata"], {}),
            first["for_created"],
            first["for_output"],
        )
    children = [r for r in rows if r["child_id"] is not None]
    answers = [r for r in children if _json(r["child_metadata"], {}).get("kind")]
    chosen = (answers or children or [None])[-1]
    if chosen is None:
        return str(first["for_id"]), {}, first["for_created"], None
    meta = _json(chosen["child_metadata"], {})
    return str(chosen["child_id"]), meta, chosen["child_created"], chosen["child_output"]


async def fetch_feedback_async(url: str) -> list[dict[str, Any]]:
    """Every thumbs up/down with its question, answer and citations, oldest first."""
    by_feedback: dict[str, list[dict[str, Any]]] = {}
    for row in await _query(url, _FEEDBACK_SQL):
        by_feedback.setdefault(str(row["feedback_id"]), []).append(row)
    out = []
    for feedback_id, rows in by_feedback.items():
        first = rows[0]
        step_id, meta, created_at, answer = _answer_of(rows)
        question = meta.get("question")
        if question is None and first["for_type"] == "run":
            question = first["parent_output"]
        out.append(
            {
                "feedback_id": feedback_id,
                "thread_id": str(first["thread_id"] or first["feedback_thread"]),
                "step_id": step_id,
                "created_at": created_at,
                "user": first["user_identifier"],
                "kind": meta.get("kind", "answer"),
                "profile": meta.get("profile"),
                "value": int(first["value"]),
                "comment": first["comment"] or "",
                "question": question or "",
                "answer": answer or "",
                "citations": list(meta.get("citations") or []),
                "abstained": bool(meta.get("abstained", False)),
                "answer_missing": answer is None,
            }
        )
    return out


def fetch_feedback(url: str) -> list[dict[str, Any]]:
    """Synchronous :func:`fetch_feedback_async`.

    Each row: ``feedback_id, thread_id, step_id, created_at`` (the answer's time),
    ``user, kind, profile, value`` (1 up, 0 down), ``comment, question, answer``,
    ``citations`` (dicts with ``id, label, code, title, kind, severity, source,
    section, score``), ``abstained`` and ``answer_missing`` (True when the rated answer
    was never stored, e.g. after a crash: ``question`` and ``answer`` are then empty).
    """
    return _sync(url, lambda: fetch_feedback_async(url))


async def fetch_abstentions_async(url: str) -> list[dict[str, Any]]:
    """Answers where the bot abstained (not in the knowledge base), oldest first."""
    out = []
    for row in await _query(url, _ABSTENTION_SQL):
        meta = _json(row["metadata"], {})
        # A draft redone in another style ("make it shorter") is not a new question, nor
        # is a greeting or thanks a question the knowledge base lacks.
        if not meta.get("abstained") or meta.get("refinement") or meta.get("small_talk"):
            continue
        out.append(
            {
                "thread_id": str(row["thread_id"]),
                "step_id": str(row["step_id"]),
                "created_at": row["created_at"],
                "kind": meta.get("kind", "answer"),
                "question": meta.get("question", ""),
                "answer": row["answer"] or "",
            }
        )
    return out


def fetch_abstentions(url: str) -> list[dict[str, Any]]:
    """Synchronous :func:`fetch_abstentions_async`.

    Each row: ``thread_id, step_id, created_at, kind, question, answer``.
    """
    return _sync(url, lambda: fetch_abstentions_async(url))


_HANDOFF_SQL = """
SELECT s."id" AS step_id, s."threadId" AS thread_id, s."metadata" AS metadata,
       s."createdAt" AS created_at
FROM steps s
WHERE s."type" = 'assistant_message' AND CAST(s."metadata" AS TEXT) LIKE '%"kind": "handoff"%'
ORDER BY s."createdAt"
"""


async def fetch_handoffs_async(url: str) -> list[dict[str, Any]]:
    """Hand-offs to a human ("Talk to a human"), oldest first."""
    out, seen = [], set()
    for row in await _query(url, _HANDOFF_SQL):
        meta = _json(row["metadata"], {})
        record = meta.get("handoff") if meta.get("kind") == "handoff" else None
        if not isinstance(record, dict):
            continue
        # One hand-off per answer: a second click (say, on another replica before the
        # button was gone) is the same request.
        key = (str(row["thread_id"]), record.get("answer_id"))
        if key[1] and key in seen:
            continue
        seen.add(key)
        out.append(
            {
                "thread_id": str(row["thread_id"]),
                "step_id": str(row["step_id"]),
                "created_at": row["created_at"],
                **{k: record.get(k) for k in _HANDOFF_FIELDS},
            }
        )
    return out


_HANDOFF_FIELDS = (
    "email",
    "question",
    "follow_up",
    "code",
    "message",
    "seen",
    "suggested",
    "link",
    "answer_id",
)


def fetch_handoffs(url: str) -> list[dict[str, Any]]:
    """Synchronous :func:`fetch_handoffs_async`.

    Each row: ``thread_id, step_id, created_at, email, question`` (the merchant's first
    question about the answer handed off), ``follow_up`` (the question it answered, when
    another), ``code, message, seen`` (the message in the merchant's words, with the
    English), ``suggested, link`` (the agent instance's view, or None) and ``answer_id``.
    One row per answer handed off.
    """
    return _sync(url, lambda: fetch_handoffs_async(url))


_TRANSCRIPT_SQL = """
SELECT s."type" AS type, s."output" AS output, s."createdAt" AS created_at
FROM steps s
WHERE CAST(s."threadId" AS TEXT) = :thread AND s."type" IN ('user_message', 'assistant_message')
ORDER BY s."createdAt"
"""


async def fetch_transcript_async(url: str, thread_id: str) -> list[dict[str, Any]]:
    """A conversation's messages, oldest first (see :func:`fetch_transcript`)."""
    rows = await _query(url, _TRANSCRIPT_SQL, {"thread": thread_id})
    return [
        {
            "role": "merchant" if row["type"] == "user_message" else "assistant",
            "created_at": row["created_at"],
            "text": row["output"] or "",
        }
        for row in rows
    ]


def fetch_transcript(url: str, thread_id: str) -> list[dict[str, Any]]:
    """Synchronous :func:`fetch_transcript_async`: what an agent reads of a hand-off.

    Each row: ``role`` (``merchant`` or ``assistant``), ``created_at`` and ``text``.
    """
    return _sync(url, lambda: fetch_transcript_async(url, thread_id))


# -- gap report (pure) -------------------------------------------------------------------

NOT_IN_KB = "(not in the knowledge base)"


def _citation_key(citation: dict[str, Any]) -> tuple[str, str]:
    label = citation.get("label") or citation.get("code") or citation.get("title") or "?"
    return str(citation.get("id") or label), str(label)


def gap_report(
    rows: Iterable[dict[str, Any]], abstentions: Iterable[dict[str, Any]] = ()
) -> list[dict[str, Any]]:
    """Group thumbs-down answers and abstentions by cited entry, most frequent first.

    Args:
        rows: Feedback rows as from :func:`fetch_feedback` (only ``value == 0`` count).
        abstentions: Rows as from :func:`fetch_abstentions`.

    Returns:
        One dict per entry: ``entry`` (its id, or None for answers citing nothing),
        ``label``, ``count`` (distinct answers), ``thumbs_down``, ``abstained``,
        ``questions`` (distinct, most asked first), ``asked`` (how often each of them
        was) and ``comments`` (non-empty).
        Abstentions, which cite nothing, are grouped under ``entry=None``.
    """
    groups: dict[str | None, dict[str, Any]] = {}

    def group(key: str | None, label: str) -> dict[str, Any]:
        return groups.setdefault(
            key,
            {
                "entry": key,
                "label": label,
                "steps": set(),
                "thumbs_down": 0,
                "abstained": 0,
                "questions": Counter(),
                "comments": [],
            },
        )

    def add(g: dict[str, Any], step_id: str, question: str) -> bool:
        if step_id and step_id in g["steps"]:
            return False
        g["steps"].add(step_id or f"anon-{len(g['steps'])}")
        if question.strip():
            g["questions"][question.strip()] += 1
        return True

    for row in rows:
        if int(row.get("value", 1)) != 0:
            continue
        citations: Sequence[dict[str, Any]] = row.get("citations") or ()
        keys = [_citation_key(c) for c in citations] or [(None, NOT_IN_KB)]
        for key, label in keys:
            g = group(key, label)
            if add(g, str(row.get("step_id") or ""), str(row.get("question") or "")):
                g["thumbs_down"] += 1
            if row.get("comment"):
                g["comments"].append(str(row["comment"]))
    for row in abstentions:
        g = group(None, NOT_IN_KB)
        if add(g, str(row.get("step_id") or ""), str(row.get("question") or "")):
            g["abstained"] += 1

    report = []
    for g in groups.values():
        report.append(
            {
                "entry": g["entry"],
                "label": g["label"],
                "count": len(g["steps"]),
                "thumbs_down": g["thumbs_down"],
                "abstained": g["abstained"],
                "questions": [q for q, _ in g["questions"].most_common()],
                # How often each of ``questions`` was asked: a count of 10 may be 5 questions.
                "asked": [n for _, n in g["questions"].most_common()],
                "comments": g["comments"],
            }
        )
    report.sort(key=lambda r: (-r["count"], r["entry"] is None, r["label"].casefold()))
    return report
