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
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.persistence import fetch_abstentions, fetch_feedback, fetch_handoffs

# The browser tests always run: without Debian's chromium they fail with the fix, never
# skip (scripts/test.sh installs it).
pytestmark = pytest.mark.browser

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


def _start_server(
    tmp: Path, extra_env: dict[str, str], port: int | None = None, database: Path | None = None
) -> Iterator[Server]:
    port = port or _free_port()
    database_url = f"sqlite+aiosqlite:///{database or tmp / 'chat.db'}"
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


@dataclass
class Site:
    """A merchant's web site on another origin, serving pages that embed the widget."""

    url: str
    root: Path


@pytest.fixture(scope="module")
def merchant_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("merchant-site")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", _free_port()), Quiet)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    try:
        yield Site(f"http://127.0.0.1:{site.server_address[1]}", root)
    finally:
        site.shutdown()


@pytest.fixture(scope="module")
def agent_port() -> int:
    """The agent instance's port, known before either server starts (hand-off links)."""
    return _free_port()


@pytest.fixture(scope="module")
def chat_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The database both instances share, as in a deployment (agents read hand-offs)."""
    return tmp_path_factory.mktemp("database") / "chat.db"


@pytest.fixture(scope="module")
def merchant_server(
    tmp_path_factory: pytest.TempPathFactory,
    merchant_site: Site,
    agent_port: int,
    chat_database: Path,
) -> Iterator[Server]:
    """The merchant instance: no login, Merchant profile only, serves the widget.

    The merchant site's origin is allowed to embed the widget; hand-offs link to the
    agent instance.
    """
    env = {
        "SUPPORTBOT_CHAT__AGENT_PROFILE": "false",
        "SUPPORTBOT_SECURITY__ALLOWED_ORIGINS": f'["{merchant_site.url}"]',
        "SUPPORTBOT_CHAT__AGENT_URL": f"http://127.0.0.1:{agent_port}",
    }
    yield from _start_server(tmp_path_factory.mktemp("merchant"), env, database=chat_database)


@pytest.fixture(scope="module")
def agent_server(
    tmp_path_factory: pytest.TempPathFactory, agent_port: int, chat_database: Path
) -> Iterator[Server]:
    """The agent instance: password login, Merchant and Support agent profiles."""
    env = {
        "SUPPORTBOT_CHAT__AGENT_USERNAME": AGENT_USER,
        "SUPPORTBOT_CHAT__AGENT_PASSWORD": AGENT_PASSWORD,
        "CHAINLIT_AUTH_SECRET": "test-only-secret-" + "x" * 40,
    }
    yield from _start_server(
        tmp_path_factory.mktemp("agent"), env, port=agent_port, database=chat_database
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail(
            "Debian's chromium is not installed: run `apt-get install -y chromium` "
            "(bash scripts/test.sh does it)",
            pytrace=False,
        )
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 812}


def _new_page(browser: Any, request: pytest.FixtureRequest, viewport: dict) -> Iterator[Any]:
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(20_000)
    # Nothing may be fetched from another host: not fonts, not KaTeX, not anything.
    hosts: set[str] = set()
    page.on("request", lambda r: hosts.add(urllib.parse.urlsplit(r.url).netloc))
    yield page
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-final.png"))
    context.close()
    served = {h for h in hosts if h}
    assert len(served) == 1, f"requests went to other hosts: {sorted(served)}"
    assert next(iter(served)).startswith("127.0.0.1:"), served


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A desktop-sized page (1280×800)."""
    yield from _new_page(browser, request, DESKTOP)


@pytest.fixture
def phone(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A phone-sized page (375×812)."""
    yield from _new_page(browser, request, PHONE)


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
    return wait_for_answer(page, before)


def wait_for_answer(page: Any, before: int) -> Any:
    """The assistant message number ``before`` once it is complete (its actions shown)."""
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


def test_the_chat_and_the_widget_get_chainlits_client_with_the_redraw_fixes(
    merchant_server: Server, page: Any
) -> None:
    """The scripts the browser runs are bot/client_patch.py's, in the chat and the widget."""
    from bot.client_patch import _SAME_MESSAGE

    scripts: list[str] = []
    page.on(
        "response",
        lambda r: (
            scripts.append(r.text())
            if r.url.endswith(".js") and ("/assets/index-" in r.url or "/copilot/index.js" in r.url)
            else None
        ),
    )
    page.goto(merchant_server.url)
    wait_for_welcome(page)
    page.goto(f"{merchant_server.url}/public/widget-demo.html")
    page.locator("#chainlit-copilot-button").wait_for()
    assert len(scripts) == 2
    assert all(_SAME_MESSAGE in script for script in scripts)


def test_merchant_answer_leads_with_what_they_saw_and_follow_ups_answer_the_follow_up(
    merchant_server: Server, page: Any
) -> None:
    page.goto(merchant_server.url)
    # No login for merchants: straight to the welcome screen with its starters, light.
    wait_for_welcome(page)
    assert page.locator("#password").count() == 0
    assert page.get_by_text("I'm the Junipeer support assistant").is_visible()
    assert page.locator("#starters").get_by_text("Fiscal year not available").is_visible()
    assert page.evaluate("() => document.documentElement.classList.contains('light')")
    shot(page, "merchant-01-welcome")

    answer = ask(page, "Räkenskapsår saknas")
    text = answer.inner_text()
    assert text.startswith(
        "You saw: “Räkenskapsår saknas” — in English: “Fiscal year not available”"
    )
    assert answer.locator("h3").first.inner_text() == "Fiscal year not available"
    # Real steps: the explanation between them is prose, not a numbered step.
    steps = answer.locator("ol > li").all_inner_texts()
    assert len(steps) == 2
    assert steps[0].startswith("In Fortnox, go to Settings")
    assert steps[1].startswith("After creating the fiscal year")
    assert "This commonly occurs at the start of a new calendar year" in text
    # Codes and scores are for agents.
    assert "FORTNOX_" not in text
    assert "score" not in text
    # The source chip reads as written, not in capitals; the panel shows this answer only.
    chip = answer.locator(SOURCE_LINK).first
    assert chip.inner_text().strip() == "Fiscal year not available ↗"
    assert chip.evaluate("e => getComputedStyle(e).textTransform") == "none"
    side = page.locator("#side-view-content")
    side.get_by_text("error-codes.txt, line").first.wait_for()
    assert page.locator("#side-view-title").inner_text().startswith("Fiscal year not available")
    assert "FORTNOX_FISCAL_YEAR" not in side.inner_text()
    assert "match score" not in side.inner_text()
    shot(page, "merchant-02-answer-and-source")

    fix = ask(page, "how do I fix it?")
    assert fix.locator("ol > li").count() == 2
    assert "Why it happens" not in fix.inner_text()
    assert fix.inner_text() != answer.inner_text()
    why = ask(page, "why?")
    assert "Why it happens: The order date falls in a fiscal year" in why.inner_text()
    assert why.locator("ol > li").count() == 0
    shot(page, "merchant-03-follow-ups")

    # After an answer without sources, the panel no longer shows the old ones.
    nothing = ask(page, "what's the weather in Paris tomorrow?")
    assert "could not find this" in nothing.inner_text()
    page.wait_for_function("() => !document.querySelector('#side-view-content')")


def test_thumbs_up_needs_no_dialog_and_thumbs_down_takes_a_comment(
    merchant_server: Server, page: Any
) -> None:
    page.goto(merchant_server.url)
    answer = ask(page, "what is error 2000637")
    assert "Customer name cannot be empty" in answer.inner_text()

    answer.locator(".positive-feedback-off").click()
    answer.locator(".positive-feedback-on").wait_for()
    # No comment is asked for: the dialog closes by itself (after its closing animation).
    page.locator("[role=dialog] textarea").wait_for(state="detached", timeout=3_000)
    rows = poll(
        lambda: fetch_feedback(merchant_server.database_url),
        lambda rows: any(r["question"] == "what is error 2000637" for r in rows),
    )
    (up,) = [r for r in rows if r["question"] == "what is error 2000637"]
    assert up["value"] == 1
    assert up["comment"] == ""
    # The pencil beside the thumbs adds a comment to the 👍, which stays a 👍.
    answer.locator("button:has(svg.lucide-message-circle)").click()
    page.locator("[role=dialog] textarea").fill("Clear, thanks")
    page.locator("#submit-feedback").click()
    rows = poll(
        lambda: fetch_feedback(merchant_server.database_url),
        lambda rows: any(r["comment"] == "Clear, thanks" for r in rows),
    )
    (up,) = [r for r in rows if r["question"] == "what is error 2000637"]
    assert (up["value"], up["comment"]) == (1, "Clear, thanks")

    second = ask(page, "Invalid grant")
    second.locator(".negative-feedback-off").click()
    page.locator("[role=dialog] textarea").fill("Please add the Shopify steps")
    page.locator("#submit-feedback").click()
    rows = poll(
        lambda: fetch_feedback(merchant_server.database_url),
        lambda rows: any(r["comment"] == "Please add the Shopify steps" for r in rows),
    )
    (down,) = [r for r in rows if r["comment"] == "Please add the Shopify steps"]
    assert down["value"] == 0
    assert down["question"] == "Invalid grant"
    shot(page, "merchant-04-feedback")

    # A comment longer than the server stores: the box takes 2,000 characters and says so,
    # and the 👎 is saved with them.
    third = ask(page, "Räkenskapsår saknas")
    third.locator(".negative-feedback-off").click()
    box = page.locator("[role=dialog] textarea")
    box.fill("The steps did not work for us. " * 100)
    assert len(box.input_value()) == 2_000
    page.locator(".junipeer-comment-count").get_by_text("2000 / 2000").wait_for()
    shot(page, "merchant-04-long-comment")
    page.locator("#submit-feedback").click()
    rows = poll(
        lambda: fetch_feedback(merchant_server.database_url),
        lambda rows: any(r["question"] == "Räkenskapsår saknas" for r in rows),
    )
    (long,) = [r for r in rows if r["question"] == "Räkenskapsår saknas"]
    assert long["value"] == 0
    assert len(long["comment"]) == 2_000
    assert long["comment"].startswith("The steps did not work for us.")


def test_talk_to_a_human_opens_a_filled_in_email_and_is_recorded(
    merchant_server: Server, page: Any
) -> None:
    page.goto(merchant_server.url)
    answer = ask(page, "Customer name cannot be empty (2000637)")
    for _ in range(3):  # push the first answer's button up the page
        ask(page, "how does pricing work?")
    answer.locator("button").filter(has_text="Talk to a human").click()
    mail = page.locator('a[href^="mailto:"]').filter(has_text="E-mail support about this").last
    mail.wait_for()
    href = mail.get_attribute("href")
    url = urllib.parse.urlsplit(href)
    assert url.path == "support@junipeer.io"
    query = urllib.parse.parse_qs(url.query)
    assert query["subject"] == ["Help needed: Customer name cannot be empty (2000637)"]
    (body,) = query["body"]
    assert "Customer name cannot be empty (2000637)" in body
    assert "Error: FORTNOX_CUSTOMER_NAME_EMPTY — Customer name cannot be empty (2000637)" in body
    assert "The assistant suggested: Customer name cannot be empty — Configure a default" in body
    assert "Conversation: http://127.0.0.1:" in body
    assert "/share/" in body
    # The hand-off message does not repeat the contact list; the chat scrolls to it.
    handoff = page.locator(ANSWER).last
    assert "Source: [FAQ" not in handoff.inner_text()
    assert "support@junipeer.io" not in handoff.inner_text()
    assert handoff.inner_text().count("480 014 30") == 1
    page.wait_for_function(
        """() => { const a = [...document.querySelectorAll('a[href*="subject="]')].pop();
                   const r = a.getBoundingClientRect();
                   return r.top >= 0 && r.bottom <= window.innerHeight; }"""
    )
    shot(page, "merchant-05-handoff")

    rows = poll(
        lambda: fetch_handoffs(merchant_server.database_url),
        lambda rows: any("2000637" in (r["question"] or "") for r in rows),
    )
    (row,) = [r for r in rows if "2000637" in (r["question"] or "")]
    assert row["email"] == "support@junipeer.io"
    assert row["code"] == "FORTNOX_CUSTOMER_NAME_EMPTY"
    assert row["link"].endswith(f"/share/{row['thread_id']}")


def test_a_handoff_after_a_follow_up_is_stored_once_and_opens_for_an_agent(
    merchant_server: Server, agent_server: Server, browser: Any, page: Any
) -> None:
    page.goto(merchant_server.url)
    ask(page, "Räkenskapsår saknas")
    follow_up = ask(page, "how do I fix it?")
    button = follow_up.locator("button").filter(has_text="Talk to a human")
    button.dblclick()
    mail = page.locator('a[href^="mailto:"]').filter(has_text="E-mail support about this")
    mail.first.wait_for()
    # The button has done its work; a second click stored nothing more.
    button.wait_for(state="detached")
    page.wait_for_timeout(1_000)
    assert mail.count() == 1
    (body,) = urllib.parse.parse_qs(urllib.parse.urlsplit(mail.get_attribute("href")).query)["body"]
    # What the merchant pasted, in their language with the English, not only the follow-up.
    assert "I need help with this:\n\nRäkenskapsår saknas\n\nThen I asked: how do I fix it?" in (
        body
    )
    assert "I saw: “Räkenskapsår saknas” — in English: “Fiscal year not available”" in body
    link = next(line for line in body.splitlines() if line.startswith("Conversation: "))
    link = link.removeprefix("Conversation: ")
    assert link.startswith(f"{agent_server.url}/share/")
    thread_id = link.rsplit("/", 1)[1]
    assert f"Conversation ID: {thread_id}" in body
    rows = poll(
        lambda: [
            r for r in fetch_handoffs(merchant_server.database_url) if r["thread_id"] == thread_id
        ],
        bool,
    )
    page.wait_for_timeout(1_000)
    rows = [r for r in fetch_handoffs(merchant_server.database_url) if r["thread_id"] == thread_id]
    assert len(rows) == 1
    assert rows[0]["question"] == "Räkenskapsår saknas"
    assert rows[0]["follow_up"] == "how do I fix it?"
    shot(page, "merchant-10-handoff-after-follow-up")

    # Only for a logged-in agent: not anonymously, and never on the merchant instance.
    for server in (agent_server, merchant_server):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{server.url}/project/share/{thread_id}", timeout=10)
        assert refused.value.code in (401, 404)

    # The link opens the conversation for a logged-in agent (read-only), with its sources.
    context = browser.new_context(viewport=DESKTOP)
    agent = context.new_page()
    agent.set_default_timeout(20_000)
    try:
        _agent_login(agent, agent_server)
        agent.locator("#chat-input").wait_for()
        agent.goto(link)
        agent.locator('[data-step-type="user_message"]').get_by_text(
            "Räkenskapsår saknas"
        ).wait_for(timeout=ANSWER_TIMEOUT_MS)
        agent.locator(ANSWER).first.locator(SOURCE_LINK).first.click()
        side = agent.locator("#side-view-content")
        side.get_by_text("error-codes.txt, line").first.wait_for()
        assert "An error occurred" not in side.inner_text()
        shot(agent, "agent-07-handoff-link")
    finally:
        context.close()


def test_a_long_paste_is_collapsed_and_worded_without_jargon(
    merchant_server: Server, page: Any
) -> None:
    page.goto(merchant_server.url)
    # Longer than what is read (512 tokens) but within the 8000-character message limit.
    paste = "Fiscal year not available. " + "log line with details " * 350
    assert 7_000 < len(paste) < 8_000
    answer = ask(page, paste)
    mine = page.locator('[data-step-type="user_message"]').last
    assert mine.bounding_box()["height"] < 400
    assert "Your message was long, so I read only its beginning." in answer.inner_text()
    assert "token" not in answer.inner_text()
    shot(page, "merchant-06-long-paste")


def test_a_very_long_paste_is_answered_from_its_beginning(
    merchant_server: Server, page: Any
) -> None:
    page.goto(merchant_server.url)
    ask(page, "what is error 2000637")
    page.locator("#side-view-content").wait_for()
    # A whole e-mail thread pasted, the error in its first line: answered, not refused.
    paste = "Hi, we get Customer name cannot be empty (2000637) on every order. " + (
        "Here is the log from our shop system, line by line, as support asked. " * 300
    )
    assert 20_000 < len(paste) < 25_000
    answer = ask(page, paste)
    text = answer.inner_text()
    assert "too long" not in text
    assert "Customer name cannot be empty" in text
    assert "Your message was long, so I read only its beginning." in text
    assert "token" not in text
    # Over the hard limit (still within the socket's buffer): refused, and the panel no
    # longer shows the previous answer's entry beside the refusal.
    before = page.locator(ANSWER).count()
    page.locator("#chat-input").fill("x " * 20_000)
    page.locator("#chat-submit:not([disabled])").click(timeout=ANSWER_TIMEOUT_MS)
    refusal = page.locator(ANSWER).nth(before)
    refusal.get_by_text("too long").wait_for(timeout=ANSWER_TIMEOUT_MS)
    page.wait_for_function("() => !document.querySelector('#side-view-content')")
    shot(page, "merchant-06b-very-long-paste")


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
    shot(page, "merchant-07-xss-payloads")


def test_severity_filter_from_chat_settings_applies(merchant_server: Server, page: Any) -> None:
    page.goto(merchant_server.url)
    page.locator("#chat-settings-open-modal").click(timeout=ANSWER_TIMEOUT_MS)
    page.locator("#severity").click()
    assert page.get_by_role("option").all_inner_texts()[0] == "Any"
    page.get_by_role("option", name="Critical").click()
    shot(page, "merchant-08-filter")
    page.locator("#confirm").click()

    # 2000637 is an "Error": with only "Critical" allowed it must not be cited.
    answer = ask(page, "what is error 2000637")
    assert "Filtered to severity Critical." in answer.inner_text()
    assert "Customer name cannot be empty" not in answer.locator(SOURCE_LINK).all_inner_texts()


def _settled_box(page: Any, selector: str) -> dict:
    """The element's box once its slide-in animation is over (unchanged for 200 ms)."""
    previous = None
    for _ in range(50):
        box = page.locator(selector).bounding_box()
        if box == previous:
            return box
        previous = box
        page.wait_for_timeout(200)
    pytest.fail(f"{selector} kept moving: {previous}")


def test_the_source_panel_fits_the_desktop_window(merchant_server: Server, page: Any) -> None:
    page.goto(merchant_server.url)
    width = page.viewport_size["width"]
    for question in (
        "Räkenskapsår saknas",
        "How do I contact Junipeer support?",
        "Could not json-decode visma error response",
    ):
        ask(page, question)
        page.locator("#side-view-content").wait_for()
        panel = _settled_box(page, "#side-view-content")
        # Whole, not cut at the window's right edge, and nothing in it runs off sideways.
        assert panel["x"] >= 0
        assert panel["x"] + panel["width"] <= width, (question, panel)
        assert page.locator("#side-view-content").evaluate(
            "e => e.scrollWidth <= e.clientWidth + 1"
        )
        title = _settled_box(page, "#side-view-title")
        assert title["x"] + title["width"] <= width
        # The answer beside it keeps its own room: the panel does not cover it.
        answer = page.locator(ANSWER).last.bounding_box()
        assert answer["x"] + answer["width"] <= panel["x"] + 1
    shot(page, "merchant-09-source-panel-settled")


def test_on_a_phone_sources_open_only_on_request(merchant_server: Server, phone: Any) -> None:
    phone.goto(merchant_server.url)
    answer = ask(phone, "Kunde inte hämta/hitta moms")
    assert answer.inner_text().startswith("You saw: “Kunde inte hämta/hitta moms”")
    phone.wait_for_timeout(800)  # Chainlit would open its sheet as the sources arrive
    assert phone.locator("#side-view-content").count() == 0
    shot(phone, "phone-01-answer")
    answer.locator(SOURCE_LINK).first.click()
    phone.locator("#side-view-content").get_by_text("error-codes.txt, line").first.wait_for()
    shot(phone, "phone-02-source-on-request")


def assert_header_fits_with_the_logo(page: Any) -> None:
    """Junipeer's logo in the header, and everything in it whole, on one line, on screen."""
    width = page.viewport_size["width"]
    header = page.locator("#header")
    logo = header.evaluate("h => getComputedStyle(h.firstElementChild, '::before').backgroundImage")
    assert "logo_light.svg" in logo
    assert header.bounding_box()["height"] <= 61
    for item in header.locator("button, #chat-profiles, img").all():
        if not item.is_visible():
            continue
        box = item.bounding_box()
        assert box["x"] >= 0, (item, box)
        assert box["x"] + box["width"] <= width + 0.5, (item, box)
        assert box["y"] >= 0, (item, box)
        assert box["y"] + box["height"] <= 61, (item, box)
    # Nothing inside is cut off: no item is wider than the room it is drawn in (but for
    # text kept for screen readers only, in a 1-pixel box).
    cut = header.evaluate(
        "h => [...h.querySelectorAll('*')].filter(e => e.scrollWidth > e.clientWidth + 1"
        " && e.clientWidth > 1 && getComputedStyle(e).overflow !== 'visible')"
        ".map(e => e.outerHTML.slice(0, 120))"
    )
    assert cut == []


@pytest.mark.parametrize("size", ["page", "phone"])
def test_the_chat_header_shows_junipeer(
    merchant_server: Server, size: str, request: pytest.FixtureRequest
) -> None:
    tab = request.getfixturevalue(size)
    tab.goto(merchant_server.url)
    wait_for_welcome(tab)
    assert_header_fits_with_the_logo(tab)
    shot(tab, f"merchant-11-header-{size}")


# -- the widget ---------------------------------------------------------------------------


def test_widget_greets_with_the_error_its_page_shows(merchant_server: Server, page: Any) -> None:
    polling: list[str] = []  # socket.io over HTTP long-polling would show up as requests
    websockets: list[str] = []
    page.on("request", lambda r: polling.append(r.url) if "/ws/socket.io" in r.url else None)
    page.on("websocket", lambda ws: websockets.append(ws.url))
    page.goto(f"{merchant_server.url}/public/widget-demo.html")
    assert "Integration settings — Shopify → Fortnox" in page.locator("h1").inner_text()
    # The demo page shows the JavaScript call that passes the context.
    assert "junipeerHelp.mount(" in page.locator("#embed-code").inner_text()
    page.locator("#chainlit-copilot-button").click()
    chat = page.locator("#chainlit-copilot-chat")
    chat.wait_for()
    # Junipeer's logo and name in the header, a light theme.
    logo = chat.evaluate(
        "c => getComputedStyle(c.firstElementChild.firstElementChild, '::before').backgroundImage"
    )
    assert "logo_light.svg" in logo
    greeting = chat.locator(ANSWER).first
    greeting.get_by_text("Hi! I'm Junipeer's support assistant.").wait_for(
        timeout=ANSWER_TIMEOUT_MS
    )
    assert "this page shows the error “Customer name cannot be empty (2000637)”" in (
        greeting.inner_text()
    )
    shot(page, "widget-01-greeting")

    greeting.locator("button").filter(has_text="Explain the error on this page").click()
    answer = wait_for_answer(page, 1)
    assert "Customer name cannot be empty" in answer.inner_text()
    assert answer.locator("ol > li").count() >= 1
    answer.locator(SOURCE_LINK).first.click()
    page.get_by_text("error-codes.txt, line").first.wait_for()
    assert_source_inside_widget(page)
    shot(page, "widget-02-answer-and-source")
    # Websocket transport only (junipeer-widget.js sets window.transports): one connection
    # that a load balancer keeps on one replica, with no cookie needed.
    assert polling == []
    assert any("/ws/socket.io" in url and "transport=websocket" in url for url in websockets)


def test_widget_on_a_merchants_own_site_loads_everything_from_the_chat_server(
    merchant_server: Server, merchant_site: Site, browser: Any
) -> None:
    # The snippet of the README, on a page of another origin (allowed by the server).
    (merchant_site.root / "orders.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>Orders</title></head>"
        "<body><h1>Orders</h1>"
        f"<script src='{merchant_server.url}/public/junipeer-widget.js'></script>"
        "<script>junipeerHelp.mount({"
        f"server: '{merchant_server.url}', context: {{error: 'Fiscal year not available'}}"
        "});</script></body></html>",
        encoding="utf-8",
    )
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(20_000)
    requests: list[str] = []
    failed: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else 0)
    try:
        page.goto(f"{merchant_site.url}/orders.html")
        page.locator("#chainlit-copilot-button").click()
        chat = page.locator("#chainlit-copilot-chat")
        greeting = chat.locator(ANSWER).first
        greeting.get_by_text("Hi! I'm Junipeer's support assistant.").wait_for(
            timeout=ANSWER_TIMEOUT_MS
        )
        greeting.locator("button").filter(has_text="Explain the error on this page").click()
        answer = wait_for_answer(page, 1)
        assert "Fiscal year not available" in answer.inner_text()
        # The widget's text is drawn in Inter, from the chat server.
        page.wait_for_function("() => document.fonts.check('16px Inter')")
        shot(page, "widget-05-on-another-site")
    finally:
        context.close()
    assert failed == []
    # Only the page itself comes from the merchant's site; everything else (script, styles,
    # fonts, logo, socket) from the chat server.
    page_url = f"{merchant_site.url}/orders.html"
    socket_url = merchant_server.url.replace("http://", "ws://", 1)
    elsewhere = [
        u for u in requests if u != page_url and not u.startswith((merchant_server.url, socket_url))
    ]
    assert elsewhere == []
    assert requests.count(page_url) == 1
    assert f"{merchant_server.url}/public/fonts/inter-latin-400-normal.woff2" in requests


def test_widget_fills_a_phone_screen(merchant_server: Server, phone: Any) -> None:
    phone.goto(f"{merchant_server.url}/public/widget-demo.html")
    phone.locator("#chainlit-copilot-button").click()
    chat = phone.locator("#chainlit-copilot-chat")
    chat.wait_for()
    chat.locator(ANSWER).first.wait_for(timeout=ANSWER_TIMEOUT_MS)
    phone.wait_for_timeout(400)  # the open animation
    box = chat.bounding_box()
    assert box["x"] <= 1
    assert box["width"] >= 374
    assert box["height"] >= 800
    answer = ask(phone, "Invalid grant")
    assert "Connectors" in answer.inner_text()
    shot(phone, "widget-04-phone")
    answer.locator(SOURCE_LINK).first.click()
    phone.get_by_text("error-codes.txt, line").first.wait_for()
    assert_source_inside_widget(phone)
    shot(phone, "widget-04-phone-source")


def assert_source_inside_widget(tab: Any) -> None:
    """The source a chip opened, and its dimming, stay within the widget's frame, whole."""
    frame = tab.locator('#chainlit-copilot [role="dialog"]:has(#chainlit-copilot-chat)')
    source = tab.locator('#chainlit-copilot [role="dialog"][aria-labelledby]')
    source.get_by_text("error-codes.txt, line").first.wait_for()
    tab.wait_for_timeout(300)  # the dialog's opening animation
    assert _box_inside(source.bounding_box(), frame.bounding_box()), (
        source.bounding_box(),
        frame.bounding_box(),
    )
    overlay = source.locator("xpath=preceding-sibling::*[1]")
    assert _box_inside(overlay.bounding_box(), frame.bounding_box())
    # Its own close button is not under the widget's (full screen on a phone).
    close = source.locator("button").last.bounding_box()
    toggle = tab.locator("#chainlit-copilot-button").bounding_box()
    assert (
        close["y"] >= toggle["y"] + toggle["height"]
        or close["x"] + close["width"] <= toggle["x"]
        or toggle["y"] >= close["y"] + close["height"]
    ), (close, toggle)


def _box_inside(inner: dict, outer: dict) -> bool:
    return (
        inner["x"] >= outer["x"] - 0.5
        and inner["y"] >= outer["y"] - 0.5
        and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + 0.5
        and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + 0.5
    )


@pytest.mark.parametrize("size", ["page", "phone"])
def test_widget_answers_are_rated_inside_the_widget(
    merchant_server: Server, size: str, request: pytest.FixtureRequest
) -> None:
    tab = request.getfixturevalue(size)
    known = {r["feedback_id"] for r in fetch_feedback(merchant_server.database_url)}

    def new_rows(rows: list[dict]) -> list[dict]:
        return [r for r in rows if r["feedback_id"] not in known]

    tab.goto(f"{merchant_server.url}/public/widget-demo.html")
    tab.locator("#chainlit-copilot-button").click()
    chat = tab.locator("#chainlit-copilot-chat")
    greeting = chat.locator(ANSWER).first
    greeting.wait_for(timeout=ANSWER_TIMEOUT_MS)
    frame = tab.locator('#chainlit-copilot [role="dialog"]:has(#chainlit-copilot-chat)')

    # The answer to a suggestion can be rated like a typed one; 👍 asks for nothing.
    greeting.locator("button").filter(has_text="Explain the error on this page").click()
    first = wait_for_answer(tab, 1)
    first.locator(".positive-feedback-off").click()
    first.locator(".positive-feedback-on").wait_for()
    tab.locator("#chainlit-copilot #submit-feedback").wait_for(state="detached", timeout=3_000)
    rows = poll(lambda: new_rows(fetch_feedback(merchant_server.database_url)), bool)
    (up,) = rows
    assert up["value"] == 1
    assert up["comment"] == ""
    assert up["question"] == (
        "I get the error 'Customer name cannot be empty (2000637)'. What do I do?"
    )
    assert "Customer name cannot be empty" in up["answer"]
    # Its notice appears at the foot of the widget, not in the middle of the page.
    toast = tab.locator("#chainlit-copilot [data-sonner-toast]").first
    toast.wait_for()
    assert _box_inside(toast.bounding_box(), frame.bounding_box())

    # 👎 offers a comment box, typed inside the widget's frame.
    second = ask(tab, "Invalid grant")
    second.locator(".negative-feedback-off").click()
    box = tab.locator('#chainlit-copilot [role="dialog"]:has(#submit-feedback)')
    box.locator("textarea").wait_for()
    assert box.locator("textarea").get_attribute("maxlength") == "2000"
    tab.wait_for_timeout(300)  # the dialog's opening animation
    assert _box_inside(box.bounding_box(), frame.bounding_box()), (
        box.bounding_box(),
        frame.bounding_box(),
    )
    # Its dimming covers the widget only: the merchant's page stays as it was.
    overlay = box.locator("xpath=preceding-sibling::*[1]")
    assert _box_inside(overlay.bounding_box(), frame.bounding_box())
    shot(tab, f"widget-05-comment-{size}")
    box.locator("textarea").fill(f"Please add the Shopify steps ({size})")
    box.locator("#submit-feedback").click()
    rows = poll(
        lambda: new_rows(fetch_feedback(merchant_server.database_url)),
        lambda rows: any(r["comment"] == f"Please add the Shopify steps ({size})" for r in rows),
    )
    (down,) = [r for r in rows if r["value"] == 0]
    assert down["question"] == "Invalid grant"
    assert down["comment"] == f"Please add the Shopify steps ({size})"


# -- the support agent --------------------------------------------------------------------

TICKET = (
    "Hi, since yesterday all our Shopify orders fail. The log says "
    "'Kunde inte hämta/hitta moms'. Can you help? /Anna, Example Store AB"
)


def _agent_login(page: Any, server: Server) -> None:
    page.goto(server.url)
    page.locator("#password").wait_for()
    # Agents sign in with a username (SUPPORTBOT_CHAT__AGENT_USERNAME), not an e-mail.
    assert page.locator("label[for=email]").inner_text() == "Username"
    assert page.locator("#email").get_attribute("placeholder") == "agent"
    page.locator("#email").fill(AGENT_USER)
    page.locator("#password").fill(AGENT_PASSWORD)
    page.get_by_role("button", name="Sign In").click()


def test_agent_drafts_a_reply_ready_to_send_and_refines_it(agent_server: Server, page: Any) -> None:
    _agent_login(page, agent_server)
    page.locator("#chat-profiles").click()
    page.locator('[data-test="select-item:Support agent"]').click()
    page.get_by_text("Paste a merchant's ticket").wait_for()
    wait_for_welcome(page)
    assert_header_fits_with_the_logo(page)
    shot(page, "agent-01-welcome")

    draft = ask(page, TICKET)
    reply = draft.locator("pre").inner_text()
    assert reply.startswith("Hi Anna,")
    assert "> Kunde inte hämta/hitta moms" in reply
    assert "[" not in reply
    assert "FORTNOX_" not in reply
    # What to check sits beside the draft, with the code.
    assert "Check before sending:" in draft.inner_text()
    assert "FORTNOX_VAT_NOT_FOUND" in draft.inner_text()
    # The block wraps: nothing runs off to the side.
    assert draft.locator("pre").evaluate("e => e.scrollWidth <= e.clientWidth + 1")
    shot(page, "agent-02-draft")

    draft.locator("button").filter(has_text="Shorter").click()
    shorter = wait_for_answer(page, 1)
    shorter.get_by_text("Draft reply (shorter)").wait_for(timeout=ANSWER_TIMEOUT_MS)
    assert len(shorter.locator("pre").inner_text()) <= len(reply) / 2
    shot(page, "agent-03-shorter")

    # A typed refinement acts on the last draft; it is not a new ticket nor a gap. It
    # composes with the last one: more formal and still shorter.
    formal = ask(page, "can you make it more formal?")
    assert "Draft reply (shorter, more formal)" in formal.inner_text()
    assert formal.locator("pre").inner_text().startswith("Dear Anna,")
    assert len(formal.locator("pre").inner_text()) <= len(reply) / 2
    # One that cannot be done is said to the agent, not drafted as a ticket.
    swedish = ask(page, "can you write it in Swedish?")
    assert "I can only write drafts in English" in swedish.inner_text()
    assert not swedish.locator("pre").count()
    abstained = [r["question"] for r in fetch_abstentions(agent_server.database_url)]
    assert "can you make it more formal?" not in abstained
    assert "can you write it in Swedish?" not in abstained

    # History is titled by the error; the resumed thread keeps its profile and buttons.
    page.goto(agent_server.url)
    # The history loads after the page; on a loaded machine that can take a while.
    page.get_by_text("Could not retrieve/find VAT").first.click(timeout=ANSWER_TIMEOUT_MS)
    resumed = page.locator(ANSWER).last
    resumed.locator("button").filter(has_text="Shorter").wait_for(timeout=ANSWER_TIMEOUT_MS)
    # The header names the profile of the thread, not the default one.
    page.locator("#chat-profiles").get_by_text("Support agent").wait_for()
    assert "Merchant" not in page.locator("#chat-profiles").inner_text()
    # Its sources load from the database: only the last draft's in the panel (the last
    # message, which says what cannot be done, has none), none broken.
    side = page.locator("#side-view-content")
    side.get_by_text("error-codes.txt, line").first.wait_for()
    assert "An error occurred" not in side.inner_text()
    last_draft = page.locator(ANSWER).filter(has=page.locator("pre")).last
    chips = set(last_draft.locator(SOURCE_LINK).all_inner_texts())
    assert chips
    assert side.locator(":scope > *").count() == len(chips)
    last_draft.locator(SOURCE_LINK).first.click()
    side.get_by_text("error-codes.txt, line").first.wait_for()
    assert "An error occurred" not in side.inner_text()
    shot(page, "agent-04-resumed")
    # ... and its last draft's style: "less formal" keeps it shorter.
    again = ask(page, "less formal please")
    assert "Draft reply (shorter)" in again.inner_text()
    assert again.locator("pre").inner_text().startswith("Hi Anna,")


def test_agent_draft_wraps_on_a_phone(agent_server: Server, phone: Any) -> None:
    _agent_login(phone, agent_server)
    phone.locator("#chat-profiles").click()
    phone.locator('[data-test="select-item:Support agent"]').click()
    wait_for_welcome(phone)
    # The header holds the profile's name on one line, the logo and the avatar, on screen.
    assert phone.locator("#chat-profiles").inner_text().strip() == "Support agent"
    assert phone.locator("#chat-profiles").bounding_box()["height"] <= 40
    assert_header_fits_with_the_logo(phone)
    shot(phone, "agent-05-phone-header")
    draft = ask(phone, TICKET)
    pre = draft.locator("pre")
    assert pre.evaluate("e => e.scrollWidth <= e.clientWidth + 1")
    assert pre.bounding_box()["x"] + pre.bounding_box()["width"] <= 376
    shot(phone, "agent-05-phone-draft")


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


def test_the_chat_servers_log_has_no_faiss_import_noise(merchant_server: Server, page: Any) -> None:
    page.goto(merchant_server.url)
    ask(page, "Fiscal year not available")  # the index (and faiss) is loaded by now
    log = merchant_server.log.read_text()
    assert "Replied in" in log  # the server logs at INFO
    # faiss's failed AVX2 import on machines without that build is INFO noise.
    assert "swigfaiss" not in log
    assert "faiss.loader" not in log
