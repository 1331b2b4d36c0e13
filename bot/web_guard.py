"""The chat server's gatekeeper: an ASGI middleware in front of everything Chainlit serves.

Chainlit leaves a few doors open that a public support chat cannot (README, "Security
and reliability"). This module closes the ones that can be closed before a request
reaches Chainlit, without importing it:

* bodies larger than a limit are refused before they are read (``Content-Length`` and
  streamed bodies alike); file uploads are refused at once when they are off;
* the agent login is throttled per user name and per client address, with the
  failures kept in the chat database so every replica sees them;
* logout revokes the token (a revocation list in the same database);
* requests and sockets from other sites are refused unless their origin is allowed;
* every response carries a Content-Security-Policy and frame headers, and the login
  cookie is ``Secure`` over HTTPS with the configured ``SameSite``.

Checks that need Chainlit (who owns a step, which session is whose) are given as an
``authorize`` callback by ``bot/app.py``; the database queries they need are here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request

from bot.chat_render import client_address
from bot.config import SecuritySettings
from bot.persistence import is_sqlite, make_engine

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


AUTH_COOKIE = "access_token"
# The Chainlit web app's own pages and scripts are served from this server; images may
# be inline (data:, blob:) but never fetched from elsewhere, so text a merchant wrote
# (a ticket pasted by an agent, a question) cannot make a browser call a tracker. Fonts
# are the app's own (public/fonts), so no font host is allowed either. The page reads a
# stored conversation's sources from data: URLs (bot/persistence.py keeps them inline), so
# connect-src allows data: too: it reaches no host.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; "
    "script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; "
    "font-src 'self' data:; "
    "img-src 'self' data: blob:; "
    "media-src 'self' data: blob:; "
    "connect-src 'self' data:; "
    "object-src 'none'; "
    "base-uri 'self'; "
    "form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)

# What a client is told; plain sentences, never an exception's text.
TOO_LARGE = "The request is too large."
UPLOADS_OFF = "File uploads are not accepted here."
NOT_OFFERED = "This is not offered here."
OTHER_SITE = "Requests from other sites are not accepted."
LOGGED_OUT = "This login has ended. Please log in again."
NOT_YOURS = "That is not part of your conversation."
BAD_REQUEST = "The request could not be read."
SERVER_FAILED = "Something went wrong on our side. Please try again in a moment."
SERVER_FAILED_BODY = json.dumps({"detail": SERVER_FAILED}).encode()
MESSAGE_REFUSED = "That message could not be sent. Please reload the page and try again."


def message_too_long_text(limit: int) -> str:
    """What a client is told when its question is over the length limit."""
    return (
        f"Your message is too long (over {limit:,} characters). Please send the error code "
        "and the part of the message around it."
    )


def clean_client_message(
    payload: Any, thread_id: str, max_chars: int
) -> tuple[dict[str, Any] | None, str | None]:
    """A chat message from a client, rebuilt from the fields a user may set.

    The client only chooses the text and the message id; type, thread, parent, time
    and metadata are the server's. So a client cannot post a "bot answer" (or one
    flagged ``abstained`` for the gap report) nor write into another thread.

    Returns:
        ``(payload, None)`` to process, or ``(None, sentence)`` telling the user why not.
    """
    message = payload.get("message") if isinstance(payload, dict) else None
    if not isinstance(message, dict) or not isinstance(message.get("output"), str):
        return None, MESSAGE_REFUSED
    text = message["output"]
    if len(text) > max_chars:
        return None, message_too_long_text(max_chars)
    try:
        message_id = str(uuid.UUID(str(message.get("id"))))
        if uuid.UUID(message_id).version != 4:
            raise ValueError(message_id)
    except ValueError:
        return None, MESSAGE_REFUSED
    name = message.get("name")
    clean = {
        "id": message_id,
        "threadId": thread_id,
        "type": "user_message",
        "name": name[:100] if isinstance(name, str) and name else "User",
        "output": text,
        "createdAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "metadata": {},
        "streaming": False,
    }
    return {"message": clean}, None


def login_locked_text(retry_after_s: float) -> str:
    """What a locked-out login attempt is told (the wait rounded up to minutes)."""
    minutes = max(1, int(-(-retry_after_s // 60)))
    unit = "minute" if minutes == 1 else "minutes"
    return (
        "Too many failed logins for this account or from this address. "
        f"Please try again in {minutes} {unit}."
    )


def token_digest(token: str) -> str:
    """What the revocation list stores: a hash, so the table holds no usable token."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class GuardStore:
    """Login failures, revoked tokens and ownership lookups in the chat database.

    SQLite or PostgreSQL, by URL (the same database as the chat history), so all
    replicas share one view of who is locked out and which tokens are dead.

    Its lookups sit on hot paths (every message's id is checked, every feedback's step),
    so the engine is the process's own pool of ``pool_size`` connections
    (``SUPPORTBOT_CHAT__DATABASE_POOL_SIZE``), which :mod:`bot.shared_state` shares
    (:attr:`engine`), not a pool of one that every request would queue for.
    """

    def __init__(self, url: str, pool_size: int = 5) -> None:
        """Open (lazily) an engine on ``url`` keeping ``pool_size`` connections."""
        self.url = url
        self.pool_size = pool_size
        self._engine: AsyncEngine | None = None

    @property
    def engine(self) -> AsyncEngine:
        """The store's engine, created on first use."""
        if self._engine is None:
            self._engine = make_engine(self.url, self.pool_size)
        return self._engine

    async def close(self) -> None:
        """Dispose of the engine."""
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    async def _rows(self, sql: str, **params: Any) -> list[Any]:
        async with self.engine.connect() as conn:
            return list(await conn.execute(text(sql), params))

    async def _write(self, *statements: tuple[str, dict[str, Any]]) -> None:
        async with self.engine.begin() as conn:
            for sql, params in statements:
                await conn.execute(text(sql), params)

    # -- login throttling ---------------------------------------------------------

    async def login_retry_after(
        self, limits: dict[str, int], window_s: float, now: float | None = None
    ) -> float:
        """Seconds until a login is allowed again (0: allowed now).

        Args:
            limits: Failure limit per key, e.g. ``{"user:agent": 5, "addr:1.2.3.4": 20}``.
            window_s: Failures older than this no longer count.
            now: The current time (tests pass their own).
        """
        now = time.time() if now is None else now
        wait = 0.0
        for key, limit in limits.items():
            rows = await self._rows(
                'SELECT "at" FROM login_failures WHERE "key" = :key AND "at" > :since '
                'ORDER BY "at" DESC',
                key=key,
                since=now - window_s,
            )
            if len(rows) >= limit:
                # Allowed again once the limit-th most recent failure ages out.
                wait = max(wait, float(rows[limit - 1][0]) + window_s - now)
        return wait

    async def record_login_failure(
        self, keys: list[str], window_s: float, now: float | None = None
    ) -> None:
        """Count one failed login against each key (and forget failures past the window)."""
        now = time.time() if now is None else now
        await self._write(
            ('DELETE FROM login_failures WHERE "at" < :old', {"old": now - window_s}),
            *(
                (
                    'INSERT INTO login_failures ("key", "at") VALUES (:key, :at)',
                    {"key": k, "at": now},
                )
                for k in keys
            ),
        )

    async def clear_login_failures(self, keys: list[str]) -> None:
        """Forget the failures of these keys (after a successful login)."""
        await self._write(
            *(('DELETE FROM login_failures WHERE "key" = :key', {"key": k}) for k in keys)
        )

    # -- token revocation ---------------------------------------------------------------

    async def revoke(self, token: str, expires: float) -> None:
        """Put a token on the revocation list until ``expires`` (when it dies anyway)."""
        now = time.time()
        digest = token_digest(token)
        insert = (
            'INSERT OR IGNORE INTO revoked_tokens ("digest", "expires") VALUES (:d, :e)'
            if is_sqlite(self.url)
            else 'INSERT INTO revoked_tokens ("digest", "expires") VALUES (:d, :e) '
            "ON CONFLICT DO NOTHING"
        )
        await self._write(
            ('DELETE FROM revoked_tokens WHERE "expires" < :now', {"now": now}),
            (insert, {"d": digest, "e": expires}),
        )

    async def is_revoked(self, token: str) -> bool:
        """True when the token was logged out."""
        rows = await self._rows(
            'SELECT 1 FROM revoked_tokens WHERE "digest" = :d', d=token_digest(token)
        )
        return bool(rows)

    # -- ownership lookups -------------------------------------------------------------------

    async def step_thread(self, step_id: str) -> str | None:
        """The thread a step (message, run) belongs to, or None if there is no such step."""
        rows = await self._rows('SELECT "threadId" FROM steps WHERE "id" = :id', id=step_id)
        return str(rows[0][0]) if rows else None

    async def feedback_thread(self, feedback_id: str) -> str | None:
        """The thread of the step a feedback is about, or None if there is no such feedback."""
        rows = await self._rows(
            'SELECT s."threadId" FROM feedbacks f JOIN steps s ON s."id" = f."forId" '
            'WHERE f."id" = :id',
            id=feedback_id,
        )
        return str(rows[0][0]) if rows else None

    async def thread_owner(self, thread_id: str) -> str | None:
        """The identifier of the user owning a thread (None: anonymous or no such thread)."""
        rows = await self._rows(
            'SELECT "userIdentifier" FROM threads WHERE "id" = :id', id=thread_id
        )
        return rows[0][0] if rows and rows[0][0] else None


# -- requests as the guard sees them --------------------------------------------------------


@dataclass
class GuardRequest:
    """What the guard read of one request, handed to the ``authorize`` callback."""

    method: str
    path: str
    client: str
    token: str | None
    body: bytes = b""
    json: Any = field(default=None)
    username: str = ""


Authorize = Callable[[GuardRequest], Awaitable[str | None]]


def headers_of(scope: Scope) -> dict[str, str]:
    """A request's headers (HTTP or websocket ASGI scope), lower-case names."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or ()}


def trusted_proxies_of(setting: str) -> tuple[str, ...]:
    """The addresses of ``SUPPORTBOT_CHAT__TRUSTED_PROXIES`` (comma-separated)."""
    return tuple(p.strip() for p in setting.split(",") if p.strip())


def client_of(scope: Scope | None, trusted_proxies: Sequence[str]) -> str:
    """The client's address for everything keyed per client (limits, lockouts, ownership).

    The peer of the ASGI scope, unless it is a trusted proxy: then the client it names in
    ``X-Real-IP`` (else the last ``X-Forwarded-For`` entry), so that behind nginx each
    merchant has an address of their own instead of all sharing the proxy's. Never the
    ``REMOTE_ADDR`` of a Socket.IO environ: the engine.io ASGI driver fills that with
    127.0.0.1 for every peer, which would make any client a "trusted proxy".

    Args:
        scope: The request's ASGI scope (for a socket: its environ's ``asgi.scope``).
        trusted_proxies: Peers whose forwarding headers are believed.
    """
    scope = scope or {}
    peer = (scope.get("client") or (None,))[0]
    return client_address(peer, headers_of(scope), trusted_proxies)


def token_from_headers(headers: dict[str, str]) -> str | None:
    """The login token as Chainlit reads it: the cookie (or its chunks), else a bearer header."""
    cookies: dict[str, str] = {}
    if raw := headers.get("cookie"):
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(raw)
        except Exception:  # noqa: BLE001 - a malformed cookie header carries no token
            jar = SimpleCookie()
        cookies = {k: m.value for k, m in jar.items()}
    if value := cookies.get(AUTH_COOKIE):
        return value
    chunks = []
    while (chunk := cookies.get(f"{AUTH_COOKIE}_{len(chunks)}")) is not None:
        chunks.append(chunk)
    if chunks:
        return "".join(chunks)
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def same_origin(origin: str, scope: Scope, headers: dict[str, str]) -> bool:
    """True when ``origin`` is this server as the browser sees it (scheme and host).

    Behind a proxy the host may come as ``X-Forwarded-Host``; a browser cannot set that
    header on a cross-site request, so honouring it lets no other site in.
    """
    scheme = scope.get("scheme", "http")
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    hosts = {headers.get("host", ""), headers.get("x-forwarded-host", "").split(",")[0].strip()}
    origin = origin.rstrip("/").lower()
    return any(host and origin == f"{scheme}://{host}".lower() for host in hosts)


def _unused_route(method: str, path: str) -> bool:
    """Chainlit routes this app never uses, and which would widen what a client can do.

    ``/auth/jwt`` trades any valid token for a fresh one (a login would never expire);
    ``/project/element`` writes custom elements by id into any live session; ``/mcp``
    connects tool servers; ``/project/thread/share`` marks a thread shared (Chainlit does not
    check ``allow_thread_sharing``), and a shared thread would be readable from the
    merchant instance, which has no login, when both use one database.
    """
    if path.endswith(("/auth/jwt", "/project/thread/share")) or "/mcp" in path:
        return True
    return path.endswith("/project/element") and method in ("PUT", "DELETE")


async def _form_field(scope: Scope, body: bytes, name: str) -> str:
    """One field of a form body (urlencoded or multipart, as the login page sends it)."""

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        value = (await Request(scope, receive).form()).get(name)
    except Exception:  # noqa: BLE001 - an unreadable form names nobody; Chainlit refuses it
        return ""
    return value if isinstance(value, str) else ""


def _secure_cookie(value: bytes, secure: bool, samesite: str) -> bytes:
    cookie = value.decode("latin-1")
    if AUTH_COOKIE in cookie.split("=", 1)[0]:
        cookie = re.sub(r";\s*samesite=\w+", "", cookie, flags=re.IGNORECASE)
        cookie += f"; SameSite={samesite.capitalize()}"
    if secure and not re.search(r";\s*secure\b", cookie, flags=re.IGNORECASE):
        cookie += "; Secure"
    return cookie.encode("latin-1")


class SecurityMiddleware:
    """ASGI middleware enforcing :class:`SecuritySettings` on every request and socket.

    Args:
        app: The Chainlit ASGI app.
        settings: The limits.
        store: Where login failures and revoked tokens are kept.
        login_required: The agent instance (login, throttling, revocation, own origin only).
        uploads_enabled: Whether ``/project/file`` may be used at all.
        authorize: Ownership check for feedback, renames and actions; returns a refusal
            sentence or None.
        trusted_proxies: Peers (our nginx) whose ``X-Real-IP`` names the client, for the
            login throttle's address key and the ownership checks (:func:`client_of`).
    """

    def __init__(
        self,
        app: ASGIApp,
        settings: SecuritySettings,
        store: GuardStore,
        login_required: bool,
        uploads_enabled: bool = False,
        authorize: Authorize | None = None,
        trusted_proxies: Sequence[str] = (),
    ) -> None:
        """Wrap ``app``."""
        self.app = app
        self.settings = settings
        self.store = store
        self.login_required = login_required
        self.uploads_enabled = uploads_enabled
        self.authorize = authorize
        self.trusted_proxies = tuple(trusted_proxies)
        # The agent instance serves its own pages only: no other site may call it.
        self.allowed_origins = (
            set() if login_required else {o.rstrip("/").lower() for o in settings.allowed_origins}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request, then pass it on (or answer it with a refusal)."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = headers_of(scope)
        refusal = await self._refuse_early(scope, headers)
        if refusal is not None:
            await self._reply(scope, send, *refusal)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        body = b""
        if scope.get("method") in ("POST", "PUT", "PATCH", "DELETE"):
            read = await self._read_body(receive, headers)
            if read is None:
                await self._reply(scope, send, 413, TOO_LARGE)
                return
            body = read
        request = GuardRequest(
            method=scope["method"],
            path=scope.get("path", ""),
            client=client_of(scope, self.trusted_proxies),
            token=token_from_headers(headers),
            body=body,
        )
        refusal = await self._check_request(scope, request)
        if refusal is not None:
            await self._reply(scope, send, *refusal)
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        https = scope.get("scheme") == "https"

        failed = False

        async def send_guarded(message: Message) -> None:
            nonlocal failed
            if failed:
                # The failure's own body (Chainlit puts exception text in some) is dropped.
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    await send({"type": "http.response.body", "body": SERVER_FAILED_BODY})
                return
            if message["type"] == "http.response.start":
                # Booked before the client hears back, so its next attempt sees it.
                await self._after(request, message["status"])
                if message["status"] >= 500:
                    failed = True
                    message = {
                        **message,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(SERVER_FAILED_BODY)).encode()),
                        ],
                    }
                headers_out = [
                    (k, _secure_cookie(v, https, self.settings.cookie_samesite))
                    if k.lower() == b"set-cookie"
                    else (k, v)
                    for k, v in message.get("headers", [])
                ]
                present = {k.lower() for k, _ in headers_out}
                headers_out += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": headers_out}
            await send(message)

        if request.path.endswith("/logout") and request.method == "POST" and request.token:
            # Revoked before Chainlit answers: once logged out, the token is dead.
            await self._revoke(request.token)
        await self.app(scope, replay, send_guarded)

    # -- the checks --------------------------------------------------------------------

    async def _refuse_early(self, scope: Scope, headers: dict[str, str]) -> tuple | None:
        """Refusals decided from the headers alone (nothing read yet)."""
        path = scope.get("path", "")
        origin = headers.get("origin")
        if (
            origin
            and origin.rstrip("/").lower() not in self.allowed_origins
            and not same_origin(origin, scope, headers)
        ):
            # A page elsewhere may neither read (CORS) nor act (socket, POST) as our user.
            return 403, OTHER_SITE
        if path.endswith("/project/file") and not self.uploads_enabled:
            return 403, UPLOADS_OFF
        if _unused_route(scope.get("method", ""), path):
            return 403, NOT_OFFERED
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.settings.max_body_bytes:
            return 413, TOO_LARGE
        if self.login_required and not path.endswith(("/login", "/logout")):
            token = token_from_headers(headers)
            if token and await self._revoked(token):
                return 401, LOGGED_OUT
        return None

    async def _revoked(self, token: str) -> bool:
        try:
            return await self.store.is_revoked(token)
        except Exception:
            # Fail closed: a login that cannot be checked is not honoured.
            log.exception("Cannot read the token revocation list")
            return True

    async def _read_body(self, receive: Receive, headers: dict[str, str]) -> bytes | None:
        """The whole body, or None as soon as it passes the limit (the rest is not read)."""
        limit = self.settings.max_body_bytes
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(parts)

    def _login_keys(self, request: GuardRequest) -> dict[str, int]:
        s = self.settings
        return {
            f"user:{request.username[:200]}": s.login_max_failures_per_user,
            f"addr:{request.client}": s.login_max_failures_per_address,
        }

    async def _check_request(self, scope: Scope, request: GuardRequest) -> tuple | None:
        path, method = request.path, request.method
        if path.endswith("/login") and method == "POST" and self.login_required:
            request.username = await _form_field(scope, request.body, "username")
            wait = await self.store.login_retry_after(
                self._login_keys(request), self.settings.login_window_s
            )
            if wait > 0:
                log.warning("Login refused (locked out) from %s", request.client)
                return 429, login_locked_text(wait), {"retry-after": str(int(wait) + 1)}
            return None
        if path.endswith(("/feedback", "/project/thread", "/project/action")) and method in (
            "PUT",
            "DELETE",
            "POST",
        ):
            try:
                request.json = json.loads(request.body or b"null")
            except ValueError:
                return 400, BAD_REQUEST
            if not isinstance(request.json, dict):
                return 400, BAD_REQUEST
            if problem := self._too_long(path, method, request.json):
                return 413, problem
            if self.authorize is not None and (refusal := await self.authorize(request)):
                return 403, refusal
        return None

    def _too_long(self, path: str, method: str, body: dict[str, Any]) -> str | None:
        s = self.settings
        if path.endswith("/feedback") and method == "PUT":
            feedback = body.get("feedback")
            comment = feedback.get("comment") if isinstance(feedback, dict) else None
            if isinstance(comment, str) and len(comment) > s.max_comment_chars:
                return f"Please keep the comment under {s.max_comment_chars} characters."
        if path.endswith("/project/thread") and method == "PUT":
            name = body.get("name")
            if isinstance(name, str) and len(name) > s.max_thread_name_chars:
                return f"Please keep the name under {s.max_thread_name_chars} characters."
        return None

    async def _after(self, request: GuardRequest, status: int) -> None:
        """Login bookkeeping once the app decided: failures counted, success clears them."""
        try:
            if request.path.endswith("/login") and request.method == "POST":
                if not self.login_required:
                    return
                keys = list(self._login_keys(request))
                if status == 401:
                    await self.store.record_login_failure(keys, self.settings.login_window_s)
                elif status == 200:
                    await self.store.clear_login_failures(keys)
        except Exception:
            log.exception("Login bookkeeping failed")

    async def _revoke(self, token: str) -> None:
        try:
            await self.store.revoke(token, time.time() + self.settings.login_lifetime_s)
        except Exception:
            log.exception("Cannot revoke a token at logout")

    async def _reply(
        self,
        scope: Scope,
        send: Send,
        status: int,
        detail: str,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        """Answer with a plain sentence (JSON ``detail`` like FastAPI's own errors)."""
        if scope["type"] == "websocket":
            # Closing before accepting makes the server answer the handshake with 403.
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"detail": detail}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *((k.encode(), v.encode()) for k, v in (extra_headers or {}).items()),
            *SECURITY_HEADERS,
        ]
        # A refused large body is not drained; closing the connection is the cheap way out.
        if status == 413:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
