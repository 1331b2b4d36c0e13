"""The Chainlit front end: merchant chat, support-agent drafts and the help widget.

A thin layer: what to show is decided in :mod:`bot.chat_render` (pure, tested
without a browser); answers come from :class:`bot.service.SupportBot`; history and
feedback go through :mod:`bot.persistence`.

One file, two modes, chosen by the settings at start-up (see ``docs/chainlit.md``):

* **merchant** (``SUPPORTBOT_CHAT__AGENT_PROFILE=false`` or no agent password): no
  login at all, the "Merchant" profile only. Serves the public chat and the widget.
* **agent** (``agent_profile`` on and ``SUPPORTBOT_CHAT__AGENT_PASSWORD`` set): password
  login (needs ``CHAINLIT_AUTH_SECRET``), profiles "Merchant" and "Support agent",
  conversation history in the sidebar.

Chainlit cannot mix anonymous and logged-in users in one server, hence two
instances of this same file. Start one with :func:`run_chat` or::

    CHAINLIT_APP_ROOT=<repo> chainlit run bot/app.py --headless --host H --port N
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from bot import chat_render as render
from bot.answer_types import DraftStyle, Turn
from bot.config import REPO_ROOT, Settings, load_settings
from bot.persistence import DatabaseError, create_schema_async, describe_error, make_data_layer
from bot.shared_state import KeyedLocks, SharedState, open_shared_state
from bot.web_guard import (
    MESSAGE_REFUSED,
    NOT_YOURS,
    GuardRequest,
    GuardStore,
    SecurityMiddleware,
    clean_client_message,
    client_of,
    trusted_proxies_of,
)

# Chainlit fixes its app root (.chainlit/, public/, .files/) from this variable or the
# current folder when first imported. `chainlit run` (see run_chat) gets it in its env;
# this covers importing this module elsewhere, e.g. the CLI calling run_chat, which would
# otherwise leave .chainlit/ and .files/ in whatever folder the CLI was started from.
os.environ.setdefault("CHAINLIT_APP_ROOT", str(REPO_ROOT))

import chainlit as cl  # noqa: E402
import chainlit.config as _chainlit_config  # noqa: E402
from chainlit.auth.jwt import decode_jwt  # noqa: E402
from chainlit.config import config as chainlit_config  # noqa: E402
from chainlit.context import init_ws_context  # noqa: E402
from chainlit.input_widget import Select  # noqa: E402
from chainlit.server import app as chainlit_app  # noqa: E402
from chainlit.server import sio  # noqa: E402
from chainlit.session import WebsocketSession  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.middleware.cors import CORSMiddleware  # noqa: E402

if TYPE_CHECKING:
    from bot.service import SupportBot

log = logging.getLogger(__name__)


def use_own_files_folder() -> Path:
    """Give this server process a Chainlit files folder no other instance uses.

    Chainlit writes every element of a session (our sources) under
    ``<app root>/.files/<session>`` and deletes the whole ``.files`` folder when a server
    stops. Two instances started from one checkout (merchant and agent) would share it,
    and stopping one would break every answer with sources on the other. Each process
    therefore gets a fresh folder of its own under the system's temporary folder
    (``TMPDIR``), which Chainlit still deletes when this process stops.

    Returns:
        The folder now used for this process's session files.
    """
    folder = Path(tempfile.mkdtemp(prefix="supportbot-files-"))
    _chainlit_config.FILES_DIRECTORY = folder
    # chainlit.server copied the name at import (used at shutdown to delete the folder).
    if (server := sys.modules.get("chainlit.server")) is not None:
        server.FILES_DIRECTORY = folder  # type: ignore[attr-defined]
    return folder


def agent_mode(settings: Settings) -> bool:
    """True when this instance offers the support-agent profile (and so requires login)."""
    chat = settings.chat
    return chat.agent_profile and bool(chat.agent_password.get_secret_value())


# -- process-wide singletons ----------------------------------------------------------

SETTINGS = load_settings()
AGENT_MODE = agent_mode(SETTINGS)
_bot: SupportBot | None = None
_bot_lock = threading.Lock()
# Conversation state and rate-limit counters every replica shares (the chat database).
_shared: SharedState | None = None
# Seconds a shared-state read or write may take before this replica carries on without
# it (answers must not wait for a database that is gone).
SHARED_STATE_TIMEOUT_S = 2.0
# The same for a conversation's state: longer, because a conversation continued without
# it answers the next follow-up out of context (measured: under a failover storm, reads
# and saves of 0.5-2 s were cut off at 2 s and those follow-ups lost their context).
CONVERSATION_TIMEOUT_S = 6.0
# What _shared_call returns when the database did not answer (None can be an answer).
UNAVAILABLE = object()


def get_bot() -> SupportBot:
    """The one SupportBot of this process, loaded on first use (blocking, ~8 s)."""
    global _bot
    with _bot_lock:
        if _bot is None:
            from bot.service import SupportBot

            _bot = SupportBot.from_settings(SETTINGS)
            _bot.warm_up()
            log.info("Support bot loaded (%d entries).", len(_bot.index.entries))
        return _bot


async def bot() -> SupportBot:
    """:func:`get_bot` without blocking the event loop."""
    return _bot if _bot is not None else await asyncio.to_thread(get_bot)


@cl.on_app_startup
async def _startup() -> None:
    global _shared
    log.info("Session files of this instance go to %s", use_own_files_folder())
    url = SETTINGS.chat.database_url
    try:
        await create_schema_async(url)
    except Exception as exc:  # noqa: BLE001 - any driver error: one line, then stop
        message = exc if isinstance(exc, DatabaseError) else describe_error(url, exc)
        # Not a traceback from the server's start-up: one line saying what to fix.
        sys.stderr.write(f"{message}\n")
        sys.stderr.flush()
        os._exit(3)
    # One pool for this process's own queries (the gatekeeper's and the shared state's).
    _shared = open_shared_state(url, engine=GUARD_STORE.engine)
    # Chainlit runs this before the server accepts connections: loading the model and the
    # index here means that once the server is up, the first answer comes at once.
    await asyncio.to_thread(get_bot)
    if SETTINGS.index.reload_interval_s > 0:
        from bot.index_watch import watch_index

        task = asyncio.create_task(watch_index(get_bot(), _shared, SETTINGS))
        _background.add(task)


# Strong references to background tasks (the event loop keeps only weak ones).
_background: set[asyncio.Task] = set()


# Chainlit's page links Google Fonts and a KaTeX stylesheet on a CDN (and preconnects to
# both). Offline they fail, and for EU merchants they hand the merchant's address to a
# third party: the fonts come from public/theme.json instead, and KaTeX is not used
# (latex = false).
_EXTERNAL_LINK = re.compile(r"\s*<link\b[^>]*\bhref=\"(?:https?:)?//[^\"]*\"[^>]*>", re.I)


def local_only_html(html: str) -> str:
    """The page without ``<link>`` tags pointing at another host."""
    return _EXTERNAL_LINK.sub("", html)


def _serve_local_only() -> None:
    from chainlit import server

    original = server.get_html_template
    if getattr(original, "local_only", False):
        return

    def get_html_template(root_path: str) -> str:
        return local_only_html(original(root_path))

    get_html_template.local_only = True  # type: ignore[attr-defined]
    server.get_html_template = get_html_template


_serve_local_only()


# Seconds a reply waits for its conversation's title to be written (see _title_thread).
TITLE_WAIT_S = 1.0
# Titles this process gave conversations (thread id -> title), newest last, bounded.
_TITLES: dict[str, str] = {}
_MAX_TITLES = 10_000


@cl.data_layer
def _data_layer() -> Any:
    # Feedback is written through this server's own pool (GUARD_STORE's), not behind
    # Chainlit's backlog of step writes in the layer's pool.
    layer = make_data_layer(
        SETTINGS.chat.database_url,
        SETTINGS.chat.database_pool_size,
        feedback_engine=GUARD_STORE.engine,
    )
    update_thread = layer.update_thread
    limit = SETTINGS.security.max_thread_name_chars

    naming = KeyedLocks()

    async def update_thread_named_within_limit(*args: Any, **kwargs: Any) -> Any:
        if not isinstance(kwargs.get("name"), str):
            return await update_thread(*args, **kwargs)
        # Chainlit names a conversation after its whole first message, in a background task
        # that may run before or after _title_thread: the title given there stays. A
        # conversation's named updates go one at a time, so the later call is also the
        # later write. Per conversation: one lock for all of them queued every new
        # conversation's first answer behind the others' writes (10-14 s for each tab of
        # a failed replica arriving at once).
        thread_id = args[0] if args else kwargs.get("thread_id")
        async with naming(thread_id):
            kwargs["name"] = _TITLES.get(thread_id) or render.collapse(kwargs["name"], limit)
            return await update_thread(*args, **kwargs)

    layer.update_thread = update_thread_named_within_limit
    return layer


async def _shared_call(
    what: str,
    call: Callable[[SharedState], Awaitable[Any]],
    timeout: float = SHARED_STATE_TIMEOUT_S,
    unavailable: Any = None,
) -> Any:
    """A shared-state call, or ``unavailable`` when the database is not there (logged)."""
    if _shared is None:
        return unavailable
    try:
        return await asyncio.wait_for(call(_shared), timeout)
    except Exception as exc:  # noqa: BLE001 - the chat goes on without the database
        log.warning("Shared state unavailable (%s): %s", what, describe_error("", exc))
        return unavailable


if AGENT_MODE:

    @cl.on_shared_thread_view
    async def _agent_views_conversation(thread: dict, viewer: cl.User | None) -> bool:
        # The hand-off e-mail links a merchant's conversation here (see
        # _conversation_link): a logged-in agent may read any stored conversation of the
        # shared database, read-only; nobody else may (the page needs the login anyway).
        return viewer is not None

    @cl.password_auth_callback
    async def _login(username: str, password: str) -> cl.User | None:
        chat = SETTINGS.chat
        user_ok = hmac.compare_digest(username.encode(), chat.agent_username.encode())
        secret = chat.agent_password.get_secret_value().encode()
        if user_ok & hmac.compare_digest(password.encode(), secret):
            # A per-login nonce: two logins in the same second would otherwise get the same
            # token, and logging out of one (revoking it) would end the other.
            login = secrets.token_hex(8)
            return cl.User(identifier=username, metadata={"role": "agent", "login": login})
        return None


# -- the gatekeeper (limits, ownership, origins; see bot/web_guard.py) ----------------------

GUARD_STORE = GuardStore(SETTINGS.chat.database_url, SETTINGS.chat.database_pool_size)
# Behind nginx every peer is the proxy: the client is the one it names (see client_of).
TRUSTED_PROXIES = trusted_proxies_of(SETTINGS.chat.trusted_proxies)
# uvicorn believes X-Forwarded-For / X-Forwarded-Proto only from FORWARDED_ALLOW_IPS (it
# reads it after this module is loaded). Tied to the same setting, a proxy on another host
# listed there also marks a login cookie Secure over HTTPS, and a loopback peer that is not
# listed cannot rename itself through uvicorn.
os.environ["FORWARDED_ALLOW_IPS"] = ",".join(TRUSTED_PROXIES)
# How long a feedback may wait for the step it is about to be written (steps are stored
# by background tasks, so a quick thumbs can arrive first).
_STEP_WAIT_S = 3.0


def _client_address(session: WebsocketSession) -> str:
    """The address of the client that opened a socket session (behind nginx: its client)."""
    return client_of((session.environ or {}).get("asgi.scope"), TRUSTED_PROXIES)


def _token_user(token: str | None) -> str | None:
    if not token:
        return None
    try:
        return decode_jwt(token).identifier
    except Exception:  # noqa: BLE001 - an invalid token is nobody; Chainlit answers 401
        return None


async def _step_thread(step_id: object) -> str | None:
    if not isinstance(step_id, str):
        return None
    deadline = time.monotonic() + _STEP_WAIT_S
    while (thread := await GUARD_STORE.step_thread(step_id)) is None:
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.2)
    return thread


# Steps (runs, answers) each live session was sent, so a thumbs on one of them is checked
# without waiting for the background write of the step. Weak keys: gone with the session.
_ISSUED: weakref.WeakKeyDictionary[WebsocketSession, set[str]] = weakref.WeakKeyDictionary()


def _issue(*step_ids: str | None) -> None:
    """Record steps sent to the current session as ones its client may rate."""
    session = cl.context.session
    if isinstance(session, WebsocketSession):
        _ISSUED.setdefault(session, set()).update(i for i in step_ids if i)


EARLIER_THREADS = "earlier_threads"
# A conversation that failed over more often than this keeps only its newest threads.
MAX_THREADS = 20


def _thread_list(value: object) -> list[str]:
    """Thread ids as stored with a conversation: distinct, newest last, at most MAX_THREADS."""
    if not isinstance(value, list):
        return []
    return list(dict.fromkeys(t for t in value if isinstance(t, str)))[-MAX_THREADS:]


def _session_is_callers(session: WebsocketSession, request: GuardRequest) -> bool:
    """Whether a live session is the caller's.

    Agent instance: its user is the logged-in caller. Merchant instance (anonymous): it
    was opened from the caller's address.
    """
    if AGENT_MODE:
        user = _token_user(request.token)
        return session.user is not None and user is not None and session.user.identifier == user
    return _client_address(session) == request.client


async def _owns_thread(request: GuardRequest, thread_id: str, session_id: object) -> bool:
    """Whether the caller may give feedback in this thread.

    Agent instance: the thread is the logged-in user's. Merchant instance: the thread is
    that of a live session on this server opened from the caller's address (the session
    named in the request, when it names one).
    """
    if AGENT_MODE:
        user = _token_user(request.token)
        return user is not None and await GUARD_STORE.thread_owner(thread_id) == user
    from chainlit.session import ws_sessions_id

    if isinstance(session_id, str):
        candidates = [ws_sessions_id.get(session_id)]
    else:
        candidates = list(ws_sessions_id.values())
    if any(
        s is not None
        and (s.thread_id == thread_id or thread_id in _earlier_threads(s))
        and _session_is_callers(s, request)
        for s in candidates
    ):
        return True
    # The session is not (yet) on this server: its replica died and the thumbs came here
    # before the tab reconnected. The stored conversation vouches for its threads.
    stored = await _callers_stored_conversation(request, session_id)
    return stored is not None and thread_id in _thread_list(stored.get("threads"))


async def _callers_stored_conversation(
    request: GuardRequest, session_id: object
) -> dict[str, Any] | None:
    """The stored state of the caller's conversation, if it may stand for a live session.

    By the same rule as a live session: the caller names the session and has the address
    that opened it, and the conversation was active within the time a dropped session is
    kept for a reconnect (``SUPPORTBOT_SECURITY__SESSION_TIMEOUT_S``). Merchant instance.
    """
    if AGENT_MODE or not isinstance(session_id, str):
        return None
    stored = await _shared_call(
        "reading the conversation",
        lambda shared: shared.load_conversation(session_id),
        CONVERSATION_TIMEOUT_S,
    )
    if not isinstance(stored, dict) or stored.get("address") != request.client:
        return None
    saved_at = stored.get("saved_at")
    if not isinstance(saved_at, int | float):
        return None
    if time.time() - saved_at > SETTINGS.security.session_timeout_s:
        return None
    return stored


def _earlier_threads(session: WebsocketSession) -> list[str]:
    """Threads this conversation had on replicas that failed over to this one.

    An anonymous client may not name its thread when it reconnects, so the new replica
    starts a new one; the conversation store remembers the earlier ones, so answers given
    before the failover can still be rated.
    """
    from chainlit.user_session import user_sessions

    earlier = user_sessions.get(session.id, {}).get(EARLIER_THREADS)
    return earlier if isinstance(earlier, list) else []


RATEABLE = "rateable"
# Answers (run steps) of a conversation remembered with it, newest last.
MAX_RATEABLE = 40


def _rateable_list(value: object) -> list[list[str]]:
    """[step id, thread id] pairs as stored with a conversation: newest last, bounded."""
    if not isinstance(value, list):
        return []
    pairs = [
        [p[0], p[1]]
        for p in value
        if isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
    ]
    return pairs[-MAX_RATEABLE:]


async def _stored_rateable_thread(
    request: GuardRequest, step_id: object, session_id: object
) -> str | None:
    """The thread of an answer the stored conversation says this session was sent.

    For a thumbs that reaches this server while the session is elsewhere or gone (its
    replica died; the tab has not reconnected yet), when Chainlit's background write of
    the answer's step is late or was lost with the replica. Same rule as a live session:
    the caller names the session and has its address (:func:`_callers_stored_conversation`).
    """
    stored = await _callers_stored_conversation(request, session_id)
    if stored is None:
        return None
    return next((t for s, t in _rateable_list(stored.get(RATEABLE)) if s == step_id), None)


async def _rateable_thread(
    request: GuardRequest, step_id: object, session_id: object
) -> str | None:
    """The thread in which the caller may rate this step, or None."""
    session = WebsocketSession.get_by_id(session_id) if isinstance(session_id, str) else None
    if (
        session is not None
        and step_id in _ISSUED.get(session, ())
        and _session_is_callers(session, request)
    ):
        return session.thread_id
    if thread := await _stored_rateable_thread(request, step_id, session_id):
        return thread
    # An older step (a resumed conversation): ask the database.
    thread = await _step_thread(step_id)
    if thread is None or not await _owns_thread(request, thread, session_id):
        return None
    return thread


async def _authorize(request: GuardRequest) -> str | None:
    """Ownership checks Chainlit leaves out; a refusal sentence, or None to let it through."""
    body = request.json
    if AGENT_MODE and _token_user(request.token) is None:
        return None  # not logged in: Chainlit itself answers 401
    if request.path.endswith("/feedback"):
        if request.method == "PUT":
            feedback = body.get("feedback")
            if not isinstance(feedback, dict):
                return None  # Chainlit refuses the malformed body itself (422)
            thread = await _rateable_thread(request, feedback.get("forId"), body.get("sessionId"))
            if thread is None or feedback.get("threadId") not in (None, thread):
                return NOT_YOURS
            if feedback.get("id") is not None:
                # Updating by id: only a feedback on this same thread.
                if await GUARD_STORE.feedback_thread(str(feedback["id"])) != thread:
                    return NOT_YOURS
            return None
        if request.method == "DELETE":
            feedback_id = body.get("feedbackId")
            thread = (
                await GUARD_STORE.feedback_thread(feedback_id)
                if isinstance(feedback_id, str)
                else None
            )
            if thread is None or not await _owns_thread(request, thread, None):
                return NOT_YOURS
        return None
    if request.path.endswith("/project/action") and request.method == "POST":
        session = WebsocketSession.get_by_id(str(body.get("sessionId")))
        if session is None or not _session_is_callers(session, request):
            return NOT_YOURS
    return None


async def _process_message(session: WebsocketSession, payload: Any, arrived: float) -> None:
    """Chainlit's ``process_message``, with "task start" only for a slow reply.

    "Task end" still closes every reply.
    """
    from chainlit.message import ErrorMessage

    context = init_ws_context(session)
    emitter = context.emitter
    loading: list[asyncio.Task] = []

    def show_loading() -> None:
        loading.append(asyncio.ensure_future(emitter.task_start()))

    # Most replies take a few tens of milliseconds: there the loading state (stop button,
    # spinner) would only flash, and its "task start" event makes the browser re-render the
    # chat (20-40 ms on a busy machine) before it can draw the answer.
    delay = SETTINGS.chat.show_loading_after_s
    timer = asyncio.get_running_loop().call_later(delay, show_loading)
    try:
        message = await emitter.process_message(payload)
        if chainlit_config.code.on_message:
            # As Chainlit does: the tasks storing the message and its thread start first.
            await asyncio.sleep(0.001)
            await chainlit_config.code.on_message(message)
    except asyncio.CancelledError:
        pass
    except Exception:  # noqa: BLE001 - the user sees a sentence, never the exception
        log.exception("Answering failed")
        await ErrorMessage(author="Error", content=ANSWER_FAILED).send()
    finally:
        timer.cancel()
        if loading:
            await loading[0]
        # Always: socket clients (evals/load.py, tests) take "task end" as the reply's end,
        # and for the page it only confirms it is not loading.
        await emitter.task_end()
        # The whole server side of a reply, from the message's arrival on the socket to the
        # last event sent (what a socket client sees as complete); evals/browser_bench.py
        # sets it beside "Replied in" and the browser's figure.
        log.info("Reply complete in %.1f ms", (time.perf_counter() - arrived) * 1000)


def _install_guard() -> None:
    """Put the gatekeeper in front of Chainlit's server and socket (once per process)."""
    security = SETTINGS.security
    # Read by Chainlit when it issues a login token and when it drops a disconnected session.
    chainlit_config.project.user_session_timeout = security.login_lifetime_s
    chainlit_config.project.session_timeout = security.session_timeout_s
    # Socket messages larger than this are refused by the Engine.IO layer before parsing.
    sio.eio.max_http_buffer_size = security.max_socket_message_bytes
    # Chainlit's CORS would reflect any origin with credentials ("*" in config.toml);
    # only the sites embedding the widget get CORS headers, and never on the agent instance.
    origins = [] if AGENT_MODE else list(security.allowed_origins)
    chainlit_app.user_middleware = [
        Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_credentials=True,
            allow_methods=["*"],
            allow_headers=["*"],
        )
        if m.cls is CORSMiddleware
        else m
        for m in chainlit_app.user_middleware
    ]
    if not any(m.cls is SecurityMiddleware for m in chainlit_app.user_middleware):
        chainlit_app.add_middleware(
            SecurityMiddleware,
            settings=security,
            store=GUARD_STORE,
            login_required=AGENT_MODE,
            uploads_enabled=bool(
                getattr(chainlit_config.features.spontaneous_file_upload, "enabled", False)
            ),
            authorize=_authorize,
            trusted_proxies=TRUSTED_PROXIES,
        )
    handlers = sio.handlers.get("/", {})
    if getattr(handlers.get("connect"), "__wrapped_by_guard__", False):
        return
    chainlit_connect = handlers["connect"]

    # One connect at a time. Chainlit 2.12 builds a session's config with a re-entrant
    # run_until_complete (nest_asyncio) inside its connect handler, so connects arriving
    # together ran inside each other until RecursionError (every tab of a failed replica
    # reconnecting to the survivor: 25-30 a run). A crashed handler also left its socket
    # "connected", and that tab's retry was then given a new session id it never learnt:
    # its follow-up lost the conversation and every later thumbs was refused. Queued
    # here, each connect nests at most once; each takes milliseconds.
    one_at_a_time = asyncio.Lock()

    async def connect(sid: str, environ: dict, auth: Any) -> Any:
        if not isinstance(auth, dict) or not isinstance(auth.get("clientType"), str):
            raise ConnectionRefusedError("The chat could not start; please reload the page.")
        auth = dict(auth)
        if not isinstance(auth.get("sessionId"), str):
            auth["sessionId"] = str(uuid.uuid4())
        async with one_at_a_time:
            if not AGENT_MODE:
                # Anonymous clients prove nothing: a thread id they name is not theirs to
                # write into, and a session id is theirs only to resume their own dropped
                # session.
                auth["threadId"] = None
                existing = WebsocketSession.get_by_id(auth["sessionId"])
                address = client_of(environ.get("asgi.scope"), TRUSTED_PROXIES)
                if existing is not None and (
                    sio.manager.is_connected(existing.socket_id, "/")
                    or _client_address(existing) != address
                ):
                    auth["sessionId"] = str(uuid.uuid4())
            return await chainlit_connect(sid, environ, auth)

    connect.__wrapped_by_guard__ = True  # type: ignore[attr-defined]

    async def _message_id_taken(message_id: str) -> bool:
        try:
            return await GUARD_STORE.step_thread(message_id) is not None
        except Exception as exc:  # noqa: BLE001 - the database is gone for a while
            # Merchants still get answers without the database. Nothing can be
            # overwritten meanwhile either: Chainlit cannot write the message there.
            log.warning("Message id check skipped, database unavailable: %s", exc)
            return False

    async def client_message(sid: str, payload: Any) -> None:
        arrived = time.perf_counter()
        session = WebsocketSession.get(sid)
        if session is None:
            return
        cleaned, problem = clean_client_message(
            payload, session.thread_id, security.max_message_chars
        )
        if cleaned is not None and await _message_id_taken(cleaned["message"]["id"]):
            # Chainlit stores a message by upsert on its id: a reused id would overwrite
            # another step, possibly in someone else's conversation.
            cleaned, problem = None, MESSAGE_REFUSED
        if problem is not None:
            init_ws_context(session)
            await cl.Message(content=problem).send()
            # The panel must not keep the previous answer's entry beside a refusal.
            await _clear_side_panel()
            return
        # In place of Chainlit's handler (which only starts its process_message as the
        # session's task): the same, with the loading signal only for a slow reply.
        session.current_task = asyncio.create_task(_process_message(session, cleaned, arrived))

    chainlit_settings_change = handlers["chat_settings_change"]

    async def chat_settings_change(sid: str, settings: Any) -> None:
        offered = render.offered_settings(settings, (await bot()).systems())
        await chainlit_settings_change(sid, offered)

    async def ignored(sid: str, *args: Any) -> None:
        # Message editing is off in config.toml, but Chainlit's handler does not check.
        return None

    sio.on("connect", connect)
    sio.on("client_message", client_message)
    sio.on("chat_settings_change", chat_settings_change)
    if not chainlit_config.features.edit_message:
        sio.on("edit_message", ignored)


_install_guard()


def _install_client_patch() -> None:
    """Serve Chainlit's chat and widget bundles with bot/client_patch.py's fixes (once)."""
    if not SETTINGS.chat.patch_client:
        return
    from chainlit.server import build_dir, copilot_build_dir
    from starlette.responses import Response
    from starlette.routing import Route

    from bot.client_patch import PatchNotApplicable, patch_bundle, patch_widget_bundle

    root = chainlit_config.run.root_path
    if any(getattr(r, "name", "") == "supportbot_client_patch" for r in chainlit_app.router.routes):
        return
    bundles = sorted(Path(build_dir, "assets").glob("index-*.js"))
    paths = {f"{root}/assets/{b.name}": (b, patch_bundle) for b in bundles}
    paths[f"{root}/copilot/index.js"] = (Path(copilot_build_dir, "index.js"), patch_widget_bundle)
    patched: dict[str, bytes] = {}
    limit = SETTINGS.security.max_comment_chars
    for url, (file, patch) in paths.items():
        try:
            patched[url] = patch(file.read_text(encoding="utf-8"), limit).encode("utf-8")
        except (OSError, PatchNotApplicable) as exc:
            # The chat works unpatched, only slower in long conversations.
            log.warning("Chainlit client served unpatched (%s): %s", file.name, exc)

    async def serve(request: Any) -> Response:
        return Response(patched[request.url.path], media_type="text/javascript")

    # Ahead of Chainlit's own routes for these files: the first match answers.
    for url in patched:
        chainlit_app.router.routes.insert(0, Route(url, serve, name="supportbot_client_patch"))


_install_client_patch()


# -- profiles, starters, settings -----------------------------------------------------------


def _starters(pairs: tuple[tuple[str, str], ...]) -> list[cl.Starter]:
    return [cl.Starter(label=label, message=message) for label, message in pairs]


@cl.set_chat_profiles
async def _profiles(user: cl.User | None = None, language: str | None = None) -> list:
    profiles = [
        cl.ChatProfile(
            name=render.MERCHANT,
            markdown_description=render.MERCHANT_WELCOME,
            icon="/public/merchant.svg",
            default=True,
            starters=_starters(render.MERCHANT_STARTERS),
        )
    ]
    if AGENT_MODE and user is not None:
        profiles.append(
            cl.ChatProfile(
                name=render.AGENT,
                markdown_description=render.AGENT_WELCOME,
                icon="/public/agent.svg",
                starters=_starters(render.AGENT_STARTERS),
            )
        )
    return profiles


@cl.set_starters
async def _default_starters(user: cl.User | None = None, language: str | None = None) -> list:
    # Used where no chat profile is selected, e.g. in the widget.
    return _starters(render.MERCHANT_STARTERS)


def _profile() -> str:
    profile = cl.user_session.get("chat_profile")
    return render.AGENT if AGENT_MODE and profile == render.AGENT else render.MERCHANT


async def _send_settings(current: dict[str, Any] | None = None) -> None:
    systems = (await bot()).systems()
    current = current or {}
    severities = render.severity_choices()
    system_names = render.system_choices(systems)
    await cl.ChatSettings(
        [
            Select(
                id="severity",
                label="Only this severity",
                values=severities,
                initial_index=render.choice_index(severities, current.get("severity")),
            ),
            Select(
                id="system",
                label="Only this system",
                values=system_names,
                initial_index=render.choice_index(system_names, current.get("system")),
            ),
        ]
    ).send()


def _history() -> list[Turn]:
    return render.turns_from_session(cl.user_session.get("history"))


async def _set_history(turns: list[Turn], answered_in: str | None = None) -> None:
    """Keep the follow-up state in this session and in the database for other replicas.

    Args:
        turns: The conversation's history.
        answered_in: The run step the new answer goes out in (what the thumbs rate).
    """
    history = render.turns_to_session(turns)
    cl.user_session.set("history", history)
    session = cl.context.session
    threads = [*(cl.user_session.get(EARLIER_THREADS) or []), session.thread_id]
    rateable = cl.user_session.get(RATEABLE) or []
    if answered_in:
        rateable = _rateable_list([*rateable, [answered_in, session.thread_id]])
        cl.user_session.set(RATEABLE, rateable)
    state = {
        "history": history,
        "chat_settings": cl.user_session.get("chat_settings") or {},
        # Every thread of this conversation, newest last (see _earlier_threads).
        "threads": _thread_list(threads),
        # Who opened it, and which answers it was sent (see _stored_rateable_thread): a
        # thumbs may reach another replica before the tab does.
        "address": _client_address(session),
        RATEABLE: rateable,
        "saved_at": time.time(),
    }
    await _shared_call(
        "saving the conversation",
        lambda shared: shared.save_conversation(session.id, session.thread_id, state),
        CONVERSATION_TIMEOUT_S,
    )


# Set when the stored conversation could not be read at chat start; read again before
# the next answer (see _continue_conversation).
CONVERSATION_UNREAD = "conversation_unread"


async def _read_conversation() -> Any:
    """The stored state of this conversation, None, or UNAVAILABLE."""
    session_id = cl.context.session.id
    return await _shared_call(
        "reading the conversation",
        lambda shared: shared.load_conversation(session_id),
        CONVERSATION_TIMEOUT_S,
        unavailable=UNAVAILABLE,
    )


async def _restore(stored: dict[str, Any]) -> None:
    cl.user_session.set(
        "history", render.turns_to_session(render.turns_from_session(stored.get("history")))
    )
    cl.user_session.set(EARLIER_THREADS, _thread_list(stored.get("threads")))
    cl.user_session.set(RATEABLE, _rateable_list(stored.get(RATEABLE)))
    await _send_settings(stored.get("chat_settings") or {})


@cl.on_chat_start
async def _chat_start() -> None:
    # After a failover the browser reconnects to another replica with the same session
    # id: continue the conversation (history and filters) from the database.
    stored = await _read_conversation()
    if isinstance(stored, dict):
        await _restore(stored)
        return
    cl.user_session.set("history", [])
    cl.user_session.set(CONVERSATION_UNREAD, stored is UNAVAILABLE)
    await _send_settings()
    if cl.context.session.client_type == "copilot" and stored is not UNAVAILABLE:
        await _greet_in_widget()


async def _continue_conversation() -> None:
    """Read the stored conversation now if it could not be read at chat start.

    Answering a follow-up without it would answer out of context; a database still gone
    leaves the conversation as it is (answers go on), and the next message tries again.
    """
    if not cl.user_session.get(CONVERSATION_UNREAD):
        return
    stored = await _read_conversation()
    if stored is UNAVAILABLE:
        return
    cl.user_session.set(CONVERSATION_UNREAD, False)
    if isinstance(stored, dict) and not cl.user_session.get("history"):
        await _restore(stored)


async def _greet_in_widget() -> None:
    # The host page answers "page_context" (public/junipeer-widget.js) with what it shows;
    # a page that does not, or is slow, gets the plain greeting.
    try:
        context = await cl.context.emitter.send_call_fn("page_context", {}, timeout=2)
    except Exception:  # noqa: BLE001 - a page that cannot tell gets the plain greeting
        context = None
    text, suggestions = render.widget_greeting(context if isinstance(context, dict) else None)
    actions = [
        cl.Action(name=render.SUGGEST_ACTION, payload={"message": message}, label=label)
        for label, message in suggestions
    ]
    await cl.Message(content=text, actions=actions, metadata={"kind": "greeting"}).send()


@cl.action_callback(render.SUGGEST_ACTION)
async def _on_suggestion(action: cl.Action) -> None:
    message = str(action.payload.get("message") or "")[:2000]
    if not message:
        return
    asked = cl.Message(content=message, type="user_message")
    await asked.send()
    # Wrapped in the same "on_message" run a typed question gets: Chainlit puts the
    # thumbs on that run, so without it an answer to a suggestion (the widget's usual
    # first answer) could not be rated.
    async with cl.Step(name="on_message", type="run", parent_id=asked.id) as run:
        run.input = message
        _issue(run.id)
        await _guarded(lambda: _answer(message), question=message)


# The thread each live session was last resumed into (see _chat_resume).
_RESUMED: weakref.WeakKeyDictionary[WebsocketSession, Any] = weakref.WeakKeyDictionary()


@cl.on_chat_resume
async def _chat_resume(thread: dict) -> None:
    steps = thread.get("steps") or []
    await _set_history(render.turns_from_steps(steps))
    cl.user_session.set("titled", True)
    # Chainlit sends this same thread to the page once this returns: it must name the
    # profile (the header) and carry only the last answer's sources (the panel).
    profile = render.resumed_profile(thread, AGENT_MODE)
    cl.context.session.chat_profile = profile
    thread["metadata"] = render.resumed_metadata(thread, profile)
    thread["elements"] = render.resumed_elements(steps, thread.get("elements") or [])
    side = [e.get("id") for e in thread["elements"] if e.get("display") == "side"]
    cl.user_session.set("side_elements", side)
    # A resumed agent thread stays an agent thread (the profile is its tag), and its last
    # draft gets its Shorter / More formal buttons back.
    if profile == render.AGENT:
        found = render.last_draft(steps)
        last = next((st for st in reversed(steps) if st.get("type") == "assistant_message"), None)
        if found and last and last.get("id"):
            ticket, style = found
            cl.user_session.set("last_ticket", ticket)
            cl.user_session.set("last_style", style)
            # The page reconnects once it has switched its header to the thread's profile,
            # and Chainlit resumes the thread again in the same session: the page still has
            # the buttons of the first time (they were doubled).
            session = cl.context.session
            if _RESUMED.get(session) != thread.get("id"):
                _RESUMED[session] = thread.get("id")
                for action in _redraft_actions(ticket, style):
                    await action.send(for_id=str(last["id"]))
    await _send_settings()


# -- messages -------------------------------------------------------------------------------


def _elements(rendered: render.RenderedMessage) -> list[cl.Text]:
    # In the full chat, "side" elements open the side panel by themselves; only the
    # current answer's are kept there (see _stream). In the widget that panel is a modal
    # over the chat, so there sources are "page" elements, opened only when clicked.
    widget = cl.context.session.client_type == "copilot"
    display = "page" if widget else "side"
    return [cl.Text(name=e.name, content=e.content, display=display) for e in rendered.elements]


async def _clear_side_panel() -> None:
    """Take the previous answer's sources out of the side panel (they stay stored).

    Chainlit's panel lists every "side" element of the conversation under the newest
    one's name; removing the old ones from the page keeps it to the current answer and
    closes it after an answer without sources.
    """
    for element_id in cl.user_session.get("side_elements") or []:
        await cl.context.emitter.emit("remove_element", {"id": element_id})
    cl.user_session.set("side_elements", [])


async def _stream(rendered: render.RenderedMessage, actions: list[cl.Action]) -> cl.Message:
    msg = await _send(rendered, actions)
    _issue(msg.id)
    # After the reply, not before: one socket event less ahead of the answer.
    await _clear_side_panel()
    cl.user_session.set("side_elements", [e.id for e in msg.elements if e.display == "side"])
    return msg


async def _send(rendered: render.RenderedMessage, actions: list[cl.Action]) -> cl.Message:
    elements = _elements(rendered)
    if not SETTINGS.chat.stream_seconds:
        # One message, not a stream: each streamed token is a socket event and a re-render
        # of the conversation in the browser, which costs more than the answer itself.
        msg = cl.Message(content=rendered.content, elements=elements, metadata=rendered.metadata)
        # The buttons go out just before the answer they belong to (the page keeps them by
        # the answer's id): the browser then draws the answer with its buttons in one
        # render instead of drawing it twice, which under load is most of the wait.
        for action in actions:
            await action.send(for_id=msg.id)
        await msg.send()
        return msg
    msg = cl.Message(content="", elements=elements, actions=actions, metadata=rendered.metadata)
    # Answers are computed at once; streaming only paces reading, within a fixed budget.
    chunks = render.stream_chunks(rendered.content)
    pause = SETTINGS.chat.stream_seconds / max(len(chunks), 1)
    for n, chunk in enumerate(chunks):
        await msg.stream_token(chunk)
        if pause and n < len(chunks) - 1:
            await asyncio.sleep(pause)
    await msg.send()
    return msg


def _client_keys() -> tuple[str, str]:
    session = cl.context.session
    environ = getattr(session, "environ", None) or {}
    address = client_of(environ.get("asgi.scope"), TRUSTED_PROXIES)
    user = session.user.identifier if getattr(session, "user", None) else None
    return render.rate_limit_keys(session.id, user, address)


async def _rate_limit_wait() -> float:
    """Seconds the client must wait before this message is accepted (0: accepted).

    Counted in the chat database per conversation and per client address, so neither a
    reconnect nor another replica resets it. Without the database, this process's own
    per-session count applies.
    """
    chat = SETTINGS.chat
    conversation, address = _client_keys()

    limits = {
        conversation: chat.rate_limit_per_minute,
        address: chat.rate_limit_per_address_per_minute,
    }
    wait = await _shared_call("rate limit", lambda shared: shared.admit_all(limits))
    if wait is not None:
        return wait
    wait, times = render.rate_limit(
        cl.user_session.get("message_times") or [], time.time(), chat.rate_limit_per_minute
    )
    cl.user_session.set("message_times", times)
    return wait


ANSWER_FAILED = (
    "Sorry, something went wrong on our side. Please try again, or use "
    "**Talk to a human** to reach Junipeer support."
)


async def _guarded(work: Callable[[], Awaitable[None]], question: str | None = None) -> None:
    """Run one user request: rate-limited, and never showing the user a raw exception.

    Args:
        work: The request.
        question: What the merchant asked, for the hand-off offered if it fails.
    """
    if wait := await _rate_limit_wait():
        await cl.Message(content=render.rate_limited_text(wait)).send()
        await _clear_side_panel()
        return
    try:
        await work()
    except Exception:
        log.exception("Answering failed")
        failed = render.failed_handoff_payload(question) if question else None
        await cl.Message(content=ANSWER_FAILED, actions=[_handoff_action(failed)]).send()
        await _clear_side_panel()


@cl.on_message
async def _on_message(message: cl.Message) -> None:
    # The run step wrapping this call carries the thumbs in Chainlit 2.
    _issue(cl.context.current_step.id if cl.context.current_step else None)
    started = time.perf_counter()
    try:
        await _reply(message)
    finally:
        # The server's share of a reply, from the message to the answer sent in full;
        # evals/browser_bench.py compares it with what the browser waits.
        log.info("Replied in %.1f ms", (time.perf_counter() - started) * 1000)


async def _reply(message: cl.Message) -> None:
    if _profile() == render.AGENT:
        ticket = cl.user_session.get("last_ticket")
        refinement = render.refinement_of(
            message.content, cl.user_session.get("last_style") or "default"
        )
        if refinement is not None:
            # "can you make it shorter?", "write it in Swedish" act on the last draft; they
            # are not new tickets (nor gaps).
            await _guarded(lambda: _refine(ticket, refinement))
        else:
            await _guarded(lambda: _draft(message.content, "default"), question=message.content)
    else:
        await _guarded(lambda: _answer(message.content), question=message.content)


async def _title_thread(question: str, citations: tuple) -> None:
    """Name the conversation in the history by its error or topic, once."""
    if cl.user_session.get("titled"):
        return
    cl.user_session.set("titled", True)
    from chainlit.data import get_data_layer

    if (layer := get_data_layer()) is not None:
        name = render.thread_title(question, citations)
        thread_id = cl.context.session.thread_id
        _TITLES[thread_id] = name
        while len(_TITLES) > _MAX_TITLES:
            _TITLES.pop(next(iter(_TITLES)))
        # The reply ends ("task end": the chat shows the thumbs and takes the next
        # message) once the title is written or TITLE_WAIT_S has passed; the write goes on
        # in the background. Awaited in full, it queued behind Chainlit's own history
        # writes under load: up to 15 s for a conversation's first answer, which is the
        # follow-up of every tab a failed replica left. Not awaited at all, nothing slowed
        # a burst of new conversations and Chainlit's pool timed out their history writes.
        # _TITLES already holds the name, so Chainlit's own naming call writes it too.
        task = asyncio.create_task(_write_title(layer, thread_id, name))
        _background.add(task)
        task.add_done_callback(_background.discard)
        await asyncio.wait({task}, timeout=TITLE_WAIT_S)


async def _write_title(layer: Any, thread_id: str, name: str) -> None:
    try:
        await layer.update_thread(thread_id, name=name)
    except Exception as exc:  # noqa: BLE001 - a title not stored loses nothing else
        log.warning("Could not name conversation %s: %s", thread_id, exc)


def _handoff_action(answer_metadata: dict | None = None) -> cl.Action:
    # The hand-off is about the answer whose button is clicked, which may not be the last.
    payload = render.handoff_payload(answer_metadata)
    return cl.Action(
        name=render.HANDOFF_ACTION, payload=payload, label="Talk to a human", icon="life-buoy"
    )


async def _answer(question: str) -> None:
    support_bot = await bot()
    await _continue_conversation()
    history = _history()
    filters = render.filters_from_settings(
        cl.user_session.get("chat_settings"), support_bot.systems()
    )
    answer = await asyncio.to_thread(support_bot.answer, question, history, filters)
    rendered = render.render_answer(answer, profile=_profile(), history=history)
    if notice := render.filter_notice(filters):
        rendered = render.RenderedMessage(
            f"{rendered.content}\n\n{notice}", rendered.elements, rendered.metadata
        )
    # Stored before it is shown: whatever answer the merchant saw, a replica taking over
    # after a crash continues from it (a crash between the two leaves this question in it,
    # the last one the merchant asked, though its answer never arrived).
    run = cl.context.current_step.id if cl.context.current_step else None
    await _set_history(render.add_turns(history, question, answer), answered_in=run)
    await _stream(rendered, [_handoff_action(rendered.metadata)])
    cl.user_session.set("last_answer", rendered.metadata)
    await _title_thread(question, answer.citations)


_REDRAFT_ICONS = {"Shorter": "scissors", "More formal": "briefcase"}


def _redraft_actions(ticket: str, style: str = "default") -> list[cl.Action]:
    # Each button carries the style it gives this draft: refinements compose.
    return [
        cl.Action(
            name=render.REDRAFT_ACTION,
            payload={"ticket": ticket, "style": target},
            label=label,
            icon=_REDRAFT_ICONS[label],
        )
        for label, target in render.redraft_styles(style).items()
    ]


async def _refine(ticket: str | None, refinement: render.Refinement) -> None:
    """Redo the last draft as a typed request asks, and tell the agent what cannot be done."""
    if ticket and refinement.style:
        await _draft(ticket, refinement.style, refinement=True)
    note = refinement.note if ticket else render.NO_DRAFT_YET
    if note:
        # With the buttons of the draft it is about: what can be done is one click away.
        style = cl.user_session.get("last_style") or "default"
        actions = _redraft_actions(ticket, style) if ticket else []
        await _send(render.render_refinement_note(note), actions)


async def _draft(ticket: str, style: DraftStyle, refinement: bool = False) -> None:
    support_bot = await bot()
    filters = render.filters_from_settings(
        cl.user_session.get("chat_settings"), support_bot.systems()
    )
    draft = await asyncio.to_thread(support_bot.draft, ticket, style, filters)
    rendered = render.render_draft(draft, style, refinement=refinement)
    await _stream(rendered, _redraft_actions(ticket, style))
    cl.user_session.set("last_ticket", ticket)
    cl.user_session.set("last_style", style)
    await _title_thread(ticket, draft.citations)


def _conversation_link(thread_id: str) -> str:
    """Where an agent opens this conversation: the agent instance's read-only view of it.

    Not this server's own thread page: the merchant instance has no login, so it cannot
    show a stored conversation to anyone. Without ``SUPPORTBOT_CHAT__AGENT_URL`` there is
    no such page; the e-mail then gives the conversation's ID, which
    ``supportbot handoffs --thread ID`` prints in full.
    """
    agent_url = SETTINGS.chat.agent_url.strip().rstrip("/")
    return f"{agent_url}/share/{thread_id}" if agent_url else ""


# Answers each live session has handed off (their message ids): one hand-off per answer.
_HANDED_OFF: weakref.WeakKeyDictionary[WebsocketSession, set[str]] = weakref.WeakKeyDictionary()


@cl.action_callback(render.HANDOFF_ACTION)
async def _on_handoff(action: cl.Action) -> None:
    session = cl.context.session
    answer_id = str(action.forId or "")
    live = isinstance(session, WebsocketSession)
    done = _HANDED_OFF.setdefault(session, set()) if live else set()
    if answer_id and answer_id in done:
        # A second click (or a click while the first was on its way): the hand-off and its
        # e-mail link are already in the chat, and stored once.
        return

    done.add(answer_id)
    handed = False

    async def hand_off() -> None:
        nonlocal handed
        thread_id = session.thread_id
        handoff = render.build_handoff(
            (await bot()).support_contacts(),
            SETTINGS.answer.support_email,
            render.handoff_answer(action.payload) or cl.user_session.get("last_answer"),
            _conversation_link(thread_id),
            conversation=thread_id,
            answer_id=answer_id,
        )
        rendered = render.render_handoff(handoff)
        sent = await cl.Message(content=rendered.content, metadata=rendered.metadata).send()
        _issue(sent.id, cl.context.current_step.id if cl.context.current_step else None)
        # The button has done its work: it goes, so the hand-off is not asked for twice.
        await action.remove()
        handed = True

    try:
        await _guarded(hand_off)
    finally:
        if not handed:
            # Refused by the rate limit, failed or cancelled: not handed off, so the
            # merchant may click again.
            done.discard(answer_id)


@cl.action_callback(render.REDRAFT_ACTION)
async def _on_redraft(action: cl.Action) -> None:
    if _profile() != render.AGENT:
        return
    # The payload comes back from the browser: accept only the styles we offer.
    style = action.payload.get("style")
    if style not in render.STYLE_LABELS:
        style = "default"
    ticket = str(action.payload.get("ticket", ""))
    await _guarded(lambda: _draft(ticket, style, refinement=True))


# -- starting a server ---------------------------------------------------------------------------


class ChatConfigError(RuntimeError):
    """The chat cannot start with these settings (the message says why)."""


def chat_command(host: str, port: int) -> list[str]:
    """The command line that serves this app (headless)."""
    app_file = str(Path(__file__).resolve())
    return [sys.executable, "-m", "chainlit", "run", app_file, "--headless"] + [
        *("--host", host, "--port", str(port))
    ]


def chat_environment(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the server process; raises :class:`ChatConfigError` if unusable.

    The ``chat`` and ``security`` settings are passed as ``SUPPORTBOT_CHAT__*`` and
    ``SUPPORTBOT_SECURITY__*`` variables, so the server
    runs in the mode these settings decide even if they were changed in memory.
    ``CHAINLIT_APP_ROOT`` points Chainlit at the repository (``.chainlit/config.toml``,
    ``public/``, ``chainlit.md``) whatever the current folder is.
    """
    env = dict(os.environ if base is None else base)
    for section in ("chat", "security"):
        for name, value in getattr(settings, section):
            plain = value.get_secret_value() if isinstance(value, SecretStr) else value
            shown = json.dumps(plain) if isinstance(plain, list) else str(plain)
            env[f"SUPPORTBOT_{section.upper()}__{name.upper()}"] = shown
    env["CHAINLIT_APP_ROOT"] = str(REPO_ROOT)
    if agent_mode(settings) and not env.get("CHAINLIT_AUTH_SECRET"):
        raise ChatConfigError(
            "The support-agent login needs CHAINLIT_AUTH_SECRET in the environment "
            "(generate one with `chainlit create-secret`). To serve merchants only, set "
            "SUPPORTBOT_CHAT__AGENT_PROFILE=false."
        )
    return env


def run_chat(settings: Settings, host: str | None = None, port: int | None = None) -> int:
    """Serve the chat until interrupted; returns the server's exit code.

    Args:
        settings: Decide the mode (merchant or agent) and the defaults of host and port.
        host: Interface to bind, default ``settings.chat.host``.
        port: Port, default ``settings.chat.port``.

    Raises:
        ChatConfigError: Agent mode without ``CHAINLIT_AUTH_SECRET``.
    """
    env = chat_environment(settings)
    command = chat_command(host or settings.chat.host, port or settings.chat.port)
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 130
