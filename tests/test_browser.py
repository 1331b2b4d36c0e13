"""End to end in a real Chromium: the Chainlit app as merchants and agents use it.

Starts ``chainlit run bot/app.py`` (the real bot, real index, temporary SQLite) once
per server kind and drives it with Playwright. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.persistence import fetch_feedback

# In CI the browser tests must run (scripts/test.sh installs chromium): no silent skip there.
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        shutil.which("chromium") is None and not os.environ.get("CI"),
        reason="Debian's chromium is not installed (apt-get install chromium); CI installs it",
    ),
]

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
START_TIMEOUT_S = 120
# The first answer after start-up may wait for the model and index to load.
ANSWER_TIMEOUT_MS = 90_000
AGENT_USER, AGENT_PASSWORD = "agent", "correct horse battery staple"

ANSWER = '[data-step-type="assistant_message"]'
SOURCE_LINK = "a.element-link"


@dataclass
class Server:
    """A running chat server."""

    url: str
    database_url: str
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"chat server exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"chat server did not answer within {START_TIMEOUT_S} s:\n{log.read_text()}")


def _start_server(tmp: Path, extra_env: dict[str, str]) -> Iterator[Server]:
    port = _free_port()
    database_url = f"sqlite+aiosqlite:///{tmp / 'chat.db'}"
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SUPPORTBOT_")}
    env.pop("CHAINLIT_AUTH_SECRET", None)
    env.update(
        {
            "SUPPORTBOT_CHAT__DATABASE_URL": database_url,
            "SUPPORTBOT_LOG_LEVEL": "INFO",
            # .chainlit/config.toml, public/ and chainlit.md live at the repository root.
            "CHAINLIT_APP_ROOT": str(REPO),
            **extra_env,
        }
    )
    command = [sys.executable, "-m", "chainlit", "run", str(REPO / "bot" / "app.py")]
    command += ["--headless", "--host", "127.0.0.1", "--port", str(port)]
    log = tmp / "server.log"
    with log.open("w") as out:
        # cwd=tmp: no developer .env is read; the server sees only the env above.
        process = subprocess.Popen(command, cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process, log)
        yield Server(url, database_url, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def merchant_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The merchant instance: no login, Merchant profile only, serves the widget."""
    env = {"SUPPORTBOT_CHAT__AGENT_PROFILE": "false"}
    yield from _start_server(tmp_path_factory.mktemp("merchant"), env)


@pytest.fixture(scope="module")
def agent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The agent instance: password login, Merchant and Support agent profiles."""
    env = {
        "SUPPORTBOT_CHAT__AGENT_USERNAME": AGENT_USER,
        "SUPPORTBOT_CHAT__AGENT_PASSWORD": AGENT_PASSWORD,
        "CHAINLIT_AUTH_SECRET": "test-only-secret-" + "x" * 40,
    }
    yield from _start_server(tmp_path_factory.mktemp("agent"), env)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-final.png"))
    context.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def wait_for_welcome(page: Any) -> None:
    """Wait until the welcome screen has faded in (it starts transparent)."""
    page.locator("#welcome-screen").wait_for()
    page.wait_for_function(
        "() => getComputedStyle(document.querySelector('#welcome-screen')).opacity === '1'"
    )


def ask(page: Any, question: str) -> Any:
    """Send a question; return the new assistant message once it is complete."""
    before = page.locator(ANSWER).count()
    page.locator("#chat-input").fill(question)
    # The composer is enabled once the session is ready (the bot may still be loading).
    page.locator("#chat-submit:not([disabled])").click(timeout=ANSWER_TIMEOUT_MS)
    answer = page.locator(ANSWER).nth(before)
    answer.wait_for(timeout=ANSWER_TIMEOUT_MS)
    # Actions are attached when the streamed message is sent in full.
    answer.locator("button").filter(has_text="Talk to a human").or_(
        answer.locator("button").filter(has_text="Shorter")
    ).first.wait_for(timeout=ANSWER_TIMEOUT_MS)
    return answer


def poll(fetch: Callable[[], list[dict]], until: Callable[[list[dict]], bool]) -> list[dict]:
    deadline = time.monotonic() + 15
    rows = fetch()
    while not until(rows) and time.monotonic() < deadline:
        time.sleep(0.3)
        rows = fetch()
    return rows


# -- the merchant chat ------------------------------------------------------------------


def test_merchant_chat_answers_with_openable_sources_and_stores_feedback(
    merchant_server: Server, page: Any
) -> None:
    page.goto(merchant_server.url)
    # No login for merchants: straight to the welcome screen with its starters.
    wait_for_welcome(page)
    assert page.locator("#password").count() == 0
    assert page.get_by_text("I'm the Junipeer support assistant").is_visible()
    assert page.locator("#starters").get_by_text("Fiscal year not available").is_visible()
    shot(page, "merchant-01-welcome")

    answer = ask(page, "what is error 2000637")
    assert "FORTNOX_CUSTOMER_NAME_EMPTY" in answer.inner_text()
    assert "Customer name cannot be empty" in answer.inner_text()
    source = answer.locator(SOURCE_LINK).filter(has_text="FORTNOX_CUSTOMER_NAME_EMPTY").first
    source.click()
    side = page.locator("#side-view-content")
    side.get_by_text("error-codes.txt, line").first.wait_for()
    assert "Customer Settings" in side.inner_text()
    shot(page, "merchant-02-answer-and-source")

    answer.locator(".negative-feedback-off").click()
    page.locator("[role=dialog] textarea").fill("Please add the Shopify steps")
    page.locator("#submit-feedback").click()
    rows = poll(
        lambda: fetch_feedback(merchant_server.database_url),
        lambda rows: any(r["comment"] == "Please add the Shopify steps" for r in rows),
    )
    (row,) = [r for r in rows if r["comment"] == "Please add the Shopify steps"]
    assert row["value"] == 0
    assert row["question"] == "what is error 2000637"
    assert "FORTNOX_CUSTOMER_NAME_EMPTY" in row["answer"]
    assert [c["id"] for c in row["citations"]] == ["FORTNOX_CUSTOMER_NAME_EMPTY"]
    shot(page, "merchant-03-feedback")

    follow_up = ask(page, "how do I fix it?")
    assert "Customer Settings" in follow_up.inner_text()


def test_out_of_scope_question_hands_off_to_a_human(merchant_server: Server, page: Any) -> None:
    page.goto(merchant_server.url)
    answer = ask(page, "what's the weather in Paris tomorrow?")
    text = answer.inner_text()
    assert "could not find this" in text
    assert "support@junipeer.io" in text
    assert answer.locator(SOURCE_LINK).count() == 0

    answer.locator("button").filter(has_text="Talk to a human").click()
    page.get_by_text("Junipeer support is happy to help").wait_for()
    shot(page, "merchant-04-handoff")


def test_html_typed_by_a_merchant_is_shown_as_text(merchant_server: Server, page: Any) -> None:
    page.goto(merchant_server.url)
    ask(page, 'Error <img src="x" onerror="window.__xss = 1"> <b>Fiscal year</b> not available')
    mine = page.locator('[data-step-type="user_message"]').last
    assert "<b>Fiscal year</b>" in mine.inner_text()
    assert mine.locator("img, b").count() == 0
    assert page.evaluate("() => window.__xss") is None


XSS_PAYLOADS = [
    "<script>window.__xss = 'script'</script> Fiscal year not available",
    "<svg onload=\"window.__xss = 'svg'\"></svg> invalid grant",
    "<iframe srcdoc=\"<script>parent.__xss = 'iframe'</script>\"></iframe> 2000637",
    "[click for help](javascript:window.__xss='link') Kunde inte hämta/hitta moms",
    "<a href=\"javascript:window.__xss='anchor'\">help</a> pricing",
    "<details open ontoggle=\"window.__xss='toggle'\">x</details> clear cache",
]


def test_no_html_or_javascript_payload_executes(merchant_server: Server, page: Any) -> None:
    page.goto(merchant_server.url)
    for payload in XSS_PAYLOADS:
        ask(page, payload)
        # Clicking whatever link the message shows must not run a javascript: URL either.
        for link in page.locator('[data-step-type="user_message"]').last.locator("a").all():
            link.click()
    assert page.locator("iframe[srcdoc], svg[onload], details[ontoggle]").count() == 0
    assert page.evaluate("() => window.__xss") is None
    shot(page, "merchant-06-xss-payloads")


def test_severity_filter_from_chat_settings_applies(merchant_server: Server, page: Any) -> None:
    page.goto(merchant_server.url)
    page.locator("#chat-settings-open-modal").click(timeout=ANSWER_TIMEOUT_MS)
    page.locator("#severity").click()
    assert page.get_by_role("option").all_inner_texts()[0] == "Any"
    page.get_by_role("option", name="Critical").click()
    shot(page, "merchant-05-filter")
    page.locator("#confirm").click()

    # 2000637 is an "Error": with only "Critical" allowed it must not be cited.
    answer = ask(page, "what is error 2000637")
    assert "Filtered to severity Critical." in answer.inner_text()
    assert answer.locator(SOURCE_LINK).filter(has_text="FORTNOX_CUSTOMER_NAME_EMPTY").count() == 0


def test_widget_on_a_merchant_page_answers_with_sources(merchant_server: Server, page: Any) -> None:
    polling: list[str] = []  # socket.io over HTTP long-polling would show up as requests
    websockets: list[str] = []
    page.on("request", lambda r: polling.append(r.url) if "/ws/socket.io" in r.url else None)
    page.on("websocket", lambda ws: websockets.append(ws.url))
    page.goto(f"{merchant_server.url}/public/widget-demo.html")
    assert "Integration settings — Shopify → Fortnox" in page.locator("h1").inner_text()
    page.locator("#chainlit-copilot-button").click()
    page.locator("#chainlit-copilot-chat").wait_for()
    shot(page, "widget-01-open")

    answer = ask(page, "Customer name cannot be empty")
    assert "FORTNOX_CUSTOMER_NAME_EMPTY" in answer.inner_text()
    answer.locator(SOURCE_LINK).first.click()
    page.get_by_text("error-codes.txt, line").first.wait_for()
    shot(page, "widget-02-answer-and-source")
    # Websocket transport only (the page sets window.transports): one connection that a
    # load balancer keeps on one replica, with no cookie needed.
    assert polling == []
    assert any("/ws/socket.io" in url and "transport=websocket" in url for url in websockets)


# -- the support agent --------------------------------------------------------------------


def test_agent_logs_in_drafts_a_reply_and_makes_it_shorter(agent_server: Server, page: Any) -> None:
    page.goto(agent_server.url)
    page.locator("#password").wait_for()
    shot(page, "agent-01-login")
    page.locator("#email").fill(AGENT_USER)
    page.locator("#password").fill(AGENT_PASSWORD)
    page.get_by_role("button", name="Sign In").click()

    page.locator("#chat-profiles").click()
    page.locator('[data-test="select-item:Support agent"]').click()
    page.get_by_text("Paste a merchant's ticket").wait_for()
    wait_for_welcome(page)
    shot(page, "agent-02-welcome")

    ticket = "Hi! Our Shopify orders fail with 'Customer name cannot be empty (2000637)'. /Erik"
    draft = ask(page, ticket)
    text = draft.inner_text()
    assert "Draft reply" in text
    assert "Configure > Settings > Customer Settings" in text
    # The reply sits in a code block with a copy button, its sources below it.
    assert draft.locator("pre").count() == 1
    assert draft.locator(SOURCE_LINK).count() == 1
    shot(page, "agent-03-draft")

    draft.locator("button").filter(has_text="Shorter").click()
    shorter = page.locator(ANSWER).nth(1)
    shorter.get_by_text("Draft reply (shorter)").wait_for(timeout=ANSWER_TIMEOUT_MS)
    assert len(shorter.locator("pre").inner_text()) < len(draft.locator("pre").inner_text())
    shot(page, "agent-04-shorter")

    # The conversation is in the agent's history.
    page.goto(agent_server.url)
    page.get_by_text(ticket[:20]).first.wait_for()
    wait_for_welcome(page)
    shot(page, "agent-05-history")


def test_merchant_text_shown_to_an_agent_fetches_nothing_from_outside(
    agent_server: Server, page: Any
) -> None:
    # A "tracker" on another port: any request reaching it is a leak.
    hits: list[str] = []

    class Tracker(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    tracker = http.server.ThreadingHTTPServer(("127.0.0.1", _free_port()), Tracker)
    threading.Thread(target=tracker.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{tracker.server_address[1]}"
    outside: list[str] = []
    page.on(
        "request",
        lambda r: outside.append(r.url) if not r.url.startswith(agent_server.url) else None,
    )
    try:
        page.goto(agent_server.url)
        page.locator("#email").fill(AGENT_USER)
        page.locator("#password").fill(AGENT_PASSWORD)
        page.get_by_role("button", name="Sign In").click()
        page.locator("#chat-profiles").click()
        page.locator('[data-test="select-item:Support agent"]').click()
        wait_for_welcome(page)
        ticket = (
            f"Orders fail with 2000637 ![logo]({base}/pixel.png) "
            f"<img src='{base}/raw.png'> see [our page]({base}/phish)"
        )
        ask(page, ticket)
        # The ticket is shown as typed: the link with its target, the image as text.
        page.get_by_text(f"[our page]({base}/phish)", exact=False).first.wait_for()
        page.get_by_text(f"![logo]({base}/pixel.png)", exact=False).first.wait_for()
        shot(page, "agent-06-ticket-with-pixel")
        page.wait_for_timeout(500)
    finally:
        tracker.shutdown()
    assert hits == []
    assert [u for u in outside if u.startswith(base)] == []
