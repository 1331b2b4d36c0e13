r"""Concurrent chat sessions against a running Chainlit server, driven like the browser.

    .venv/bin/python -m evals.load --url http://127.0.0.1:8000 --sessions 50 --questions 20 \
        [--json out.json] [--database-url sqlite+aiosqlite:////path/chat.db]

Each simulated session is one browser tab: it connects over Socket.IO, asks its
questions one at a time (the next only when the server reports the previous task
done, as the composer does), and gives thumbs up/down on every answer through the
same HTTP call as the UI. Prints p50/p95 latency, errors and the number of feedbacks
the server acknowledged; exits 1 on any error. ``run_load`` does the same from code
and returns a :class:`LoadResult`.

**Start the server with a high rate limit.** The app limits every session to
``SUPPORTBOT_CHAT__RATE_LIMIT_PER_MINUTE`` messages a minute (default 20) and every client
address to ``SUPPORTBOT_CHAT__RATE_LIMIT_PER_ADDRESS_PER_MINUTE`` (120; all load sessions
come from one address), and a load session asks back to back, so start the server for a
load run with e.g.::

    SUPPORTBOT_CHAT__RATE_LIMIT_PER_MINUTE=1000 SUPPORTBOT_CHAT__AGENT_PROFILE=false \
    SUPPORTBOT_CHAT__RATE_LIMIT_PER_ADDRESS_PER_MINUTE=1000000 \
    SUPPORTBOT_CHAT__DATABASE_URL=sqlite+aiosqlite:////tmp/load/chat.db \
      .venv/bin/python -m chainlit run bot/app.py --headless --host 127.0.0.1 --port 8000

Rate-limited replies are counted as errors (``rate_limited`` in the result).

**Connect bursts.** Chainlit 2.12 builds a new session's config inside the socket
``connect`` handler with a re-entrant ``loop.run_until_complete(set_chat_profiles(...))``
(``chainlit/session.py`` ``get_config``, made re-entrant by ``nest_asyncio``) whenever
the tab names a chat profile and the app has ``@cl.set_chat_profiles``, which is
always the case for a browser on this app (it waits for the default profile before it
connects). Connects arriving together nested inside each other, about 37 stack frames
each, and from roughly 25-30 at once the server hit ``RecursionError`` and dropped the
surplus connections (client: "Unexpected connection error"). ``bot/app.py`` now runs
connects one at a time, so a burst (``--ramp-up 0``) connects every tab; a few seconds
of ramp-up still measures steady-state latency rather than the burst.

The protocol, as Chainlit 2.12's frontend speaks it (``chainlit/socket.py``,
``chainlit/server.py``, ``libs/react-client``):

1. ``POST /set-session-cookie {"session_id": S}`` (the frontend's sticky-session
   cookie; harmless on one server). ``S`` is a fresh UUID per tab.
2. Socket.IO at ``/ws/socket.io`` (websocket transport) with the auth dict
   ``{"clientType": "webapp", "sessionId": S, "threadId": "", "userEnv": "{}",
   "chatProfile": "<url-encoded profile>"}``. With login enabled the server also wants
   the ``access_token`` cookie set by ``POST /login``; without it the connection is
   refused.
3. Emit ``connection_successful``: the server runs ``on_chat_start`` (``task_start``,
   a ``run`` step, ``chat_settings``, ``task_end``). The session is ready after that.
4. Per question emit ``client_message`` with ``{"message": {"id": uuid4, "threadId":
   "", "name": "User", "type": "user_message", "output": text, "createdAt": iso,
   "metadata": {...}}, "fileReferences": []}``. The server answers ``task_start``;
   ``new_message`` of a ``run`` step named ``on_message`` whose ``parentId`` is our
   message id (its ``threadId`` is the thread); ``stream_start`` / ``stream_token`` of
   the answer; ``new_message`` of the final ``assistant_message`` (``parentId`` = the
   run); ``action`` / ``element``; ``update_message`` of the run; ``task_end``.
5. Feedback: the UI puts the thumbs on the *run* step (``Buttons/index.tsx``:
   ``<FeedbackButtons message={run}/>``) and sends ``PUT /feedback {"feedback":
   {"forId": run id, "threadId": thread id, "value": 0|1, "comment": ...},
   "sessionId": S}``; the answer is ``{"success": true, "feedbackId": id}``. With no
   login configured the endpoint asks for nothing else.

Latency is from emitting the question to the complete answer (the final
``new_message``), so it includes the app's deliberate word-by-word streaming pace;
``first_token`` is up to ``stream_start``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

log = logging.getLogger(__name__)

QUESTIONS_FILE = Path(__file__).resolve().parent / "questions.jsonl"
SOCKET_PATH = "/ws/socket.io"
DEFAULT_PROFILE = "Merchant"
QUESTION_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 30.0
# After a lone task_end on connect: how long to wait for on_chat_start to begin.
RESTORED_WAIT_S = 1.0
# The app's own failure reply (bot/app.py `_on_message`): an answer, but a failed one.
FAILURE_PREFIX = "Sorry, something went wrong on our side"


class SessionLost(RuntimeError):
    """The socket closed or the server stopped answering; the session cannot go on."""


def rate_limit_prefix() -> str:
    """The fixed start of the app's rate-limit reply (``chat_render.rate_limited_text``)."""
    from bot.chat_render import rate_limited_text

    return rate_limited_text(1).split("Please wait")[0].strip()


def load_questions(path: Path = QUESTIONS_FILE) -> list[str]:
    """The in-scope, single-turn questions of the eval set, in file order.

    In scope: the item expects at least one entry and is not tagged ``oos``; items with
    a ``history`` are follow-ups that only make sense after it, so they are left out.
    """
    questions = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        if item.get("expected") and "oos" not in item.get("tags", ()) and not item.get("history"):
            questions.append(str(item["question"]))
    if not questions:
        raise ValueError(f"{path} holds no in-scope questions.")
    return questions


@dataclass
class Exchange:
    """One question of one session and what came of it."""

    session: int
    index: int
    question: str
    message_id: str
    thread_id: str | None = None
    run_id: str | None = None
    answer_id: str | None = None
    answer: str = ""
    first_token_s: float | None = None
    latency_s: float | None = None
    rate_limited: bool = False
    feedback_value: int | None = None
    feedback_id: str | None = None
    error: str | None = None
    # Names of the elements (sources) the server sent with the answer, and the keys
    # their text is fetched by (GET /project/file/<key>?session_id=...).
    sources: list[str] = field(default_factory=list)
    source_keys: list[str] = field(default_factory=list)


@dataclass
class LoadResult:
    """Everything one load run measured."""

    url: str
    sessions: int
    questions: int
    exchanges: list[Exchange] = field(default_factory=list)
    # Errors not tied to one question (connect failures, lost sessions, timeouts).
    session_errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def errors(self) -> list[str]:
        """Every error, per question and per session."""
        per_question = [
            f"session {e.session} q{e.index}: {e.error}" for e in self.exchanges if e.error
        ]
        return per_question + self.session_errors

    @property
    def answered(self) -> list[Exchange]:
        """Exchanges that got a complete, non-failed, non-rate-limited answer."""
        return [e for e in self.exchanges if e.latency_s is not None and not e.error]

    @property
    def latencies(self) -> list[float]:
        """Seconds from question to complete answer, for the answered exchanges."""
        return [e.latency_s for e in self.answered if e.latency_s is not None]

    @property
    def acknowledged(self) -> list[Exchange]:
        """Exchanges whose feedback the server acknowledged (HTTP 200 with an id)."""
        return [e for e in self.exchanges if e.feedback_id]

    @property
    def rate_limited(self) -> int:
        """How many questions got the rate-limit reply instead of an answer."""
        return sum(e.rate_limited for e in self.exchanges)

    def summary(self) -> dict[str, Any]:
        """The headline figures (what the CLI prints), JSON-ready."""
        first = [e.first_token_s for e in self.answered if e.first_token_s is not None]
        return {
            "url": self.url,
            "sessions": self.sessions,
            "questions_per_session": self.questions,
            "asked": len(self.exchanges),
            "answered": len(self.answered),
            "latency_p50_s": percentile(self.latencies, 0.50),
            "latency_p95_s": percentile(self.latencies, 0.95),
            "latency_max_s": max(self.latencies, default=None),
            "first_token_p50_s": percentile(first, 0.50),
            "first_token_p95_s": percentile(first, 0.95),
            "errors": len(self.errors),
            "rate_limited": self.rate_limited,
            "feedback_acknowledged": len(self.acknowledged),
            "wall_s": self.wall_s,
            "answers_per_s": len(self.answered) / self.wall_s if self.wall_s else None,
        }

    def to_dict(self) -> dict[str, Any]:
        """Summary, errors and every exchange (answers shortened), JSON-ready."""
        exchanges = []
        for e in self.exchanges:
            row = asdict(e)
            row["answer"] = e.answer[:200]
            exchanges.append(row)
        return {"summary": self.summary(), "errors": self.errors, "exchanges": exchanges}


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _socket_client(http: Any) -> Any:
    import socketio

    # No reconnection: a load session that loses its socket is an error, not a retry.
    # The engine.io client reuses our aiohttp session, so its cookie jar goes along.
    return socketio.AsyncClient(
        reconnection=False, logger=False, engineio_logger=False, http_session=http
    )


class ChatSession:
    """One browser tab talking to the chat server (use as ``async with``)."""

    def __init__(
        self,
        url: str,
        *,
        profile: str | None = DEFAULT_PROFILE,
        cookies: dict[str, str] | None = None,
        number: int = 0,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        http_timeout: float = HTTP_TIMEOUT_S,
        client_type: str = "webapp",
        sticky_cookie: bool = True,
        local_address: str | None = None,
    ) -> None:
        # client_type="copilot" with sticky_cookie=False is the widget embedded on another
        # site, whose browser does not keep the session cookie. local_address: connect from
        # this (loopback) address, so that behind nginx each tab is a client of its own.
        self.local_address = local_address
        self.url = url.rstrip("/")
        self.client_type = client_type
        self.sticky_cookie = sticky_cookie
        self.profile = profile
        self.number = number
        self.session_id = str(uuid.uuid4())
        self.connect_timeout = connect_timeout
        self.http_timeout = http_timeout
        self._cookies = dict(cookies or {})
        self._events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._http: Any = None
        self._sio: Any = None
        self.lost: str | None = None
        # The conversation's thread, sent again on reconnect as the browser does.
        self.thread_id: str | None = None

    async def __aenter__(self) -> ChatSession:
        try:
            await self.connect()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the tab: sticky cookie, socket with the frontend's auth, on_chat_start.

        Raises:
            socketio.exceptions.ConnectionError: The server refused the connection
                (e.g. login required and no valid ``access_token`` cookie).
            SessionLost: ``on_chat_start`` did not finish within ``connect_timeout``.
        """
        import aiohttp
        from yarl import URL

        # unsafe=True: aiohttp's jar otherwise ignores cookies set by an IP address host.
        jar = aiohttp.CookieJar(unsafe=True)
        timeout = aiohttp.ClientTimeout(total=self.http_timeout)
        connector = (
            aiohttp.TCPConnector(local_addr=(self.local_address, 0)) if self.local_address else None
        )
        self._http = aiohttp.ClientSession(cookie_jar=jar, timeout=timeout, connector=connector)
        if self._cookies:
            jar.update_cookies(self._cookies, response_url=URL(self.url))
        if self.sticky_cookie:
            async with self._http.post(
                f"{self.url}/set-session-cookie", json={"session_id": self.session_id}
            ) as response:
                if response.status != 200:
                    raise SessionLost(f"set-session-cookie answered HTTP {response.status}")
        self._sio = _socket_client(self._http)
        self._sio.on("*", self._on_event)
        self._sio.on("disconnect", self._on_disconnect)
        auth = {
            "clientType": self.client_type,
            "sessionId": self.session_id,
            "threadId": self.thread_id or "",
            "userEnv": "{}",
            "chatProfile": quote(self.profile) if self.profile else "",
        }
        await self._sio.connect(
            self.url,
            auth=auth,
            transports=["websocket"],
            socketio_path=SOCKET_PATH,
            wait_timeout=self.connect_timeout,
        )
        await self._sio.emit("connection_successful")
        await self._wait_until_ready()

    async def _wait_until_ready(self) -> None:
        """Return once the server is ready for the first question of this connection.

        A new session runs ``on_chat_start``: a ``task_start`` then a ``task_end`` (after
        the lone ``task_end`` every connect gets first). Reconnecting with a thread id to a
        replica that does not hold the session, an anonymous user also gets
        ``resume_thread_error`` first, then ``on_chat_start``; a logged-in user's thread is
        resumed instead (``resume_thread``). A replica that still holds the session runs
        nothing: only the lone ``task_end`` comes, and nothing after it.
        """
        started = False
        ended_alone = False
        async with asyncio.timeout(self.connect_timeout):
            while True:
                try:
                    async with asyncio.timeout(RESTORED_WAIT_S if ended_alone else None):
                        event, _ = await self._next_event()
                except TimeoutError:
                    return
                if event == "task_start":
                    started, ended_alone = True, False
                elif event == "task_end" and started:
                    return
                elif event == "task_end":
                    ended_alone = True
                elif event == "resume_thread_error":
                    ended_alone = False  # on_chat_start follows, however slowly
                elif event == "resume_thread":
                    return

    async def source_text(self, key: str) -> str:
        """The text of a source element, fetched over HTTP as the chat UI does."""
        async with self._http.get(
            f"{self.url}/project/file/{key}", params={"session_id": self.session_id}
        ) as response:
            if response.status != 200:
                raise RuntimeError(f"source {key} answered HTTP {response.status}")
            return await response.text()

    async def reconnect(self, url: str | None = None) -> None:
        """Connect again with the same session id, as the browser does after a drop.

        Args:
            url: Another server to connect to (a failover), default the same one.
        """
        await self.close()
        self.url = (url or self.url).rstrip("/")
        self.lost = None
        self._events = asyncio.Queue()
        await self.connect()

    async def close(self) -> None:
        """Disconnect the socket and close the HTTP session (idempotent)."""
        if self._sio is not None:
            try:
                await asyncio.wait_for(self._sio.disconnect(), 5)
            except Exception as exc:  # noqa: BLE001 - closing after a failure
                log.debug("disconnect failed: %s", exc)
            self._sio = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    # Plain (not async) handlers: python-socketio then calls them inline, so events are
    # queued in the order the server sent them.
    def _on_event(self, event: str, data: Any = None) -> None:
        self._events.put_nowait((event, data))

    def _on_disconnect(self, *args: Any) -> None:
        self.lost = f"socket disconnected ({args[0] if args else 'no reason'})"
        self._events.put_nowait(("__disconnect__", None))

    async def _next_event(self) -> tuple[str, Any]:
        event, data = await self._events.get()
        if event == "__disconnect__":
            raise SessionLost(self.lost or "socket disconnected")
        return event, data

    async def ask(self, exchange: Exchange, timeout: float = QUESTION_TIMEOUT_S) -> Exchange:
        """Send the exchange's question; fill in the answer, its ids and the latency.

        Returns once the server reports the task done (``task_end``), as the composer
        waits before the next question.

        Raises:
            TimeoutError: No complete answer and task end within ``timeout``.
            SessionLost: The socket closed meanwhile.
        """
        message = {
            "threadId": "",
            "id": exchange.message_id,
            "name": "User",
            "type": "user_message",
            "output": exchange.question,
            "createdAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "metadata": {"location": f"{self.url}/"},
        }
        started = time.perf_counter()
        await self._sio.emit("client_message", {"message": message, "fileReferences": []})
        async with asyncio.timeout(timeout):
            while True:
                event, data = await self._next_event()
                data = data if isinstance(data, dict) else {}
                if event == "new_message" and data.get("type") == "run":
                    if data.get("parentId") == exchange.message_id:
                        exchange.run_id = data.get("id")
                        exchange.thread_id = data.get("threadId")
                        self.thread_id = exchange.thread_id or self.thread_id
                elif event == "stream_start" and exchange.run_id:
                    if data.get("parentId") == exchange.run_id and exchange.first_token_s is None:
                        exchange.first_token_s = time.perf_counter() - started
                elif (
                    event == "new_message"
                    and data.get("type") == "assistant_message"
                    and exchange.run_id
                    and data.get("parentId") == exchange.run_id
                    and exchange.answer_id is None
                ):
                    exchange.latency_s = time.perf_counter() - started
                    if exchange.first_token_s is None:  # sent whole, not streamed
                        exchange.first_token_s = exchange.latency_s
                    exchange.answer_id = data.get("id")
                    exchange.answer = str(data.get("output") or "")
                    if data.get("isError"):
                        exchange.error = f"server error message: {exchange.answer[:200]}"
                elif event == "element" and exchange.run_id and data.get("name"):
                    exchange.sources.append(str(data["name"]))
                    if data.get("chainlitKey"):
                        exchange.source_keys.append(str(data["chainlitKey"]))
                elif event == "task_end" and exchange.run_id:
                    break
        if exchange.answer_id is None and not exchange.error:
            exchange.error = "task ended without an answer"
        elif not exchange.error:
            if exchange.answer.startswith(FAILURE_PREFIX):
                exchange.error = "the app failed to answer (its 'something went wrong' reply)"
            elif exchange.answer.startswith(rate_limit_prefix()):
                exchange.rate_limited = True
                exchange.error = "rate limited (raise SUPPORTBOT_CHAT__RATE_LIMIT_PER_MINUTE)"
            elif not exchange.answer.strip():
                exchange.error = "empty answer"
        return exchange

    async def feedback(self, exchange: Exchange, value: int, comment: str | None = None) -> str:
        """Thumbs up (1) or down (0) on the exchange's answer, as the UI sends it.

        Returns:
            The feedback id the server acknowledged.

        Raises:
            RuntimeError: Not HTTP 200 with a feedback id.
        """
        if not exchange.run_id:
            raise RuntimeError("no run step to give feedback on")
        feedback: dict[str, Any] = {
            "forId": exchange.run_id,
            "threadId": exchange.thread_id,
            "value": value,
        }
        if comment is not None:
            feedback["comment"] = comment
        body = {"feedback": feedback, "sessionId": self.session_id}
        async with self._http.put(f"{self.url}/feedback", json=body) as response:
            text = await response.text()
            if response.status != 200:
                raise RuntimeError(f"PUT /feedback answered HTTP {response.status}: {text[:200]}")
        payload = json.loads(text)
        if not payload.get("success") or not payload.get("feedbackId"):
            raise RuntimeError(f"PUT /feedback answered {text[:200]}")
        return str(payload["feedbackId"])


async def _run_session(
    url: str,
    number: int,
    questions: list[str],
    result: LoadResult,
    *,
    question_timeout: float,
    feedback: bool,
    profile: str | None,
    cookies: dict[str, str] | None,
    on_feedback: Callable[[Exchange], None] | None,
    start_delay: float = 0.0,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    think_s: float = 0.0,
) -> None:
    await asyncio.sleep(start_delay)
    session = ChatSession(
        url, profile=profile, cookies=cookies, number=number, connect_timeout=connect_timeout
    )
    try:
        try:
            await session.connect()
        except Exception as exc:  # noqa: BLE001 - any failure to connect is one error
            result.session_errors.append(f"session {number}: connect failed: {exc!r}")
            return
        for index, question in enumerate(questions):
            if index and think_s:
                await asyncio.sleep(think_s)  # reading the answer before asking again
            exchange = Exchange(number, index, question, str(uuid.uuid4()))
            result.exchanges.append(exchange)
            try:
                await session.ask(exchange, question_timeout)
            except TimeoutError:
                exchange.error = f"no complete answer within {question_timeout:g} s"
                return  # the session's event stream is out of step now
            except SessionLost as exc:
                exchange.error = str(exc)
                return
            if not feedback or exchange.error:
                continue
            # Alternate thumbs up and down; the comment says which exchange it was.
            exchange.feedback_value = 1 if index % 2 == 0 else 0
            comment = f"load s{number} q{index}" if exchange.feedback_value == 0 else None
            try:
                exchange.feedback_id = await session.feedback(
                    exchange, exchange.feedback_value, comment
                )
            except Exception as exc:  # noqa: BLE001 - HTTP failure of one feedback
                exchange.error = f"feedback failed: {exc!r}"
                if session.lost:
                    return
                continue
            if on_feedback is not None:
                on_feedback(exchange)
    finally:
        await session.close()


async def run_load_async(
    url: str,
    sessions: int,
    questions: int,
    *,
    question_texts: Sequence[str] | None = None,
    question_timeout: float = QUESTION_TIMEOUT_S,
    overall_timeout: float | None = None,
    feedback: bool = True,
    profile: str | None = DEFAULT_PROFILE,
    cookies: dict[str, str] | None = None,
    on_feedback: Callable[[Exchange], None] | None = None,
    ramp_up_s: float = 0.0,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    think_s: float = 0.0,
) -> LoadResult:
    """:func:`run_load` in a running event loop."""
    if sessions < 1 or questions < 1:
        raise ValueError("sessions and questions must be at least 1")
    pool = list(question_texts) if question_texts else load_questions()
    if overall_timeout is None:
        # Every question may take its full timeout, plus time to connect.
        overall_timeout = (
            ramp_up_s + connect_timeout + questions * (question_timeout + HTTP_TIMEOUT_S + think_s)
        )
    result = LoadResult(url=url.rstrip("/"), sessions=sessions, questions=questions)
    tasks = []
    for number in range(sessions):
        # Sessions start at different places in the pool, so they ask different things.
        own = [pool[(number * questions + i) % len(pool)] for i in range(questions)]
        coro = _run_session(
            result.url,
            number,
            own,
            result,
            question_timeout=question_timeout,
            feedback=feedback,
            profile=profile,
            cookies=cookies,
            on_feedback=on_feedback,
            start_delay=ramp_up_s * number / sessions,
            connect_timeout=connect_timeout,
            think_s=think_s,
        )
        tasks.append(asyncio.create_task(coro))
    started = time.perf_counter()
    done, pending = await asyncio.wait(tasks, timeout=overall_timeout)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=10)
        result.session_errors.append(
            f"{len(pending)} session(s) still running after the overall timeout "
            f"({overall_timeout:g} s) were cancelled"
        )
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            result.session_errors.append(f"session crashed: {task.exception()!r}")
    result.wall_s = time.perf_counter() - started
    return result


def run_load(
    url: str,
    sessions: int,
    questions: int,
    *,
    question_texts: Sequence[str] | None = None,
    question_timeout: float = QUESTION_TIMEOUT_S,
    overall_timeout: float | None = None,
    feedback: bool = True,
    profile: str | None = DEFAULT_PROFILE,
    cookies: dict[str, str] | None = None,
    on_feedback: Callable[[Exchange], None] | None = None,
    ramp_up_s: float = 0.0,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    think_s: float = 0.0,
) -> LoadResult:
    """Run ``sessions`` concurrent chat sessions of ``questions`` questions each.

    Args:
        url: The chat server, e.g. ``http://127.0.0.1:8000``.
        sessions: Concurrent sessions (browser tabs).
        questions: Questions each session asks, one after another.
        question_texts: The pool to cycle through; default the in-scope questions of
            ``evals/questions.jsonl``.
        question_timeout: Seconds one question may take to a complete answer and task
            end; a session stops at its first timeout.
        overall_timeout: Seconds for the whole run; sessions still running are cancelled
            (an error). Default: generous for the question timeout.
        feedback: Give thumbs up/down on every answer (alternating) via ``PUT /feedback``.
        profile: Chat profile the tab selects (``None``: none).
        cookies: Extra cookies, e.g. ``{"access_token": ...}`` from ``POST /login``.
        on_feedback: Called (in the event loop) with each exchange whose feedback was
            acknowledged, as it happens.
        ramp_up_s: Spread the sessions' starts evenly over this many seconds; 0 opens
            them all at once (the worst case: see the note on connect bursts above).
        connect_timeout: Seconds a session may take to connect and run on_chat_start.
        think_s: Seconds each session waits after an answer (and its rating) before
            its next question, as a merchant reads it; 0 asks back to back.

    Returns:
        The :class:`LoadResult`; nothing raises for server-side failures, they are errors.
    """
    return asyncio.run(
        run_load_async(
            url,
            sessions,
            questions,
            question_texts=question_texts,
            question_timeout=question_timeout,
            overall_timeout=overall_timeout,
            feedback=feedback,
            profile=profile,
            cookies=cookies,
            on_feedback=on_feedback,
            ramp_up_s=ramp_up_s,
            connect_timeout=connect_timeout,
            think_s=think_s,
        )
    )


def feedback_problems(
    database_url: str, result: LoadResult, wait_s: float = 15.0, poll_s: float = 0.5
) -> list[str]:
    """Check every acknowledged feedback against the database; [] when all is well.

    Reads with :func:`bot.persistence.fetch_feedback`, which joins each feedback to its
    run step and that run's answer. Chainlit writes steps in background tasks, so the
    check polls for up to ``wait_s`` seconds before reporting what is missing or wrong:
    an acknowledged id with no row, or a row whose answer step, thread or value differs
    from what the session saw.
    """
    from bot.persistence import fetch_feedback

    expected = {e.feedback_id: e for e in result.acknowledged}
    deadline = time.monotonic() + wait_s
    while True:
        rows = {r["feedback_id"]: r for r in fetch_feedback(database_url)}
        problems = []
        for feedback_id, e in expected.items():
            row = rows.get(feedback_id)
            if row is None:
                problems.append(f"feedback {feedback_id} (session {e.session} q{e.index}) missing")
            elif row["step_id"] != e.answer_id:
                problems.append(
                    f"feedback {feedback_id}: step {row['step_id']}, expected answer {e.answer_id}"
                )
            elif row["thread_id"] != e.thread_id or row["value"] != e.feedback_value:
                problems.append(f"feedback {feedback_id}: thread/value differ: {row}")
        if not problems or time.monotonic() >= deadline:
            return problems
        time.sleep(poll_s)


def _format(value: float | None, unit: str = "s") -> str:
    return "-" if value is None else f"{value:.3f} {unit}"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code (0 only without errors)."""
    parser = argparse.ArgumentParser(
        prog="python -m evals.load",
        description="Concurrent chat sessions against a running Chainlit server. Start it "
        "with SUPPORTBOT_CHAT__RATE_LIMIT_PER_MINUTE high enough (e.g. 1000).",
    )
    parser.add_argument("--url", required=True, help="chat server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--sessions", type=int, default=50, help="concurrent sessions")
    parser.add_argument("--questions", type=int, default=20, help="questions per session")
    parser.add_argument("--question-timeout", type=float, default=QUESTION_TIMEOUT_S)
    parser.add_argument("--timeout", type=float, default=None, help="overall seconds")
    parser.add_argument(
        "--ramp-up", type=float, default=0.0, help="seconds over which sessions start (0: at once)"
    )
    parser.add_argument(
        "--think",
        type=float,
        default=0.0,
        help="seconds each session waits after an answer before its next question (0: back "
        "to back)",
    )
    parser.add_argument("--no-feedback", action="store_true", help="skip thumbs up/down")
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="chat profile to select")
    parser.add_argument("--json", type=Path, help="write summary and every exchange here")
    parser.add_argument(
        "--database-url",
        help="the server's SUPPORTBOT_CHAT__DATABASE_URL: check every acknowledged "
        "feedback is stored (problems count as errors)",
    )
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.questions < 1:
        parser.error("--sessions and --questions must be at least 1")

    result = run_load(
        args.url,
        args.sessions,
        args.questions,
        question_timeout=args.question_timeout,
        overall_timeout=args.timeout,
        feedback=not args.no_feedback,
        profile=args.profile or None,
        ramp_up_s=args.ramp_up,
        think_s=args.think,
    )
    problems = feedback_problems(args.database_url, result) if args.database_url else []
    result.session_errors.extend(problems)
    s = result.summary()
    print(
        f"{s['sessions']} sessions x {s['questions_per_session']} questions against {s['url']}: "
        f"{s['answered']}/{s['asked']} answered in {s['wall_s']:.1f} s"
    )
    print(
        f"latency p50 {_format(s['latency_p50_s'])}, p95 {_format(s['latency_p95_s'])}, "
        f"max {_format(s['latency_max_s'])} (first token p50 {_format(s['first_token_p50_s'])}, "
        f"p95 {_format(s['first_token_p95_s'])})"
    )
    print(f"feedback acknowledged: {s['feedback_acknowledged']}")
    if args.database_url:
        print(f"feedback missing or wrong in the database: {len(problems)}")
    print(f"errors: {s['errors']} (rate limited: {s['rate_limited']})")
    for error in result.errors[:10]:
        print(f"  {error}")
    if len(result.errors) > 10:
        print(f"  ... and {len(result.errors) - 10} more")
    if args.json:
        args.json.write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
