"""What the chat shows, tested as plain data (bot/chat_render.py), plus the launcher."""

from __future__ import annotations

import json
import re

import pytest

from bot import chat_render as render
from bot.answer_types import Answer, Citation, Draft, Filters, Turn
from ingest.entries import Entry, SubError

CODE_ENTRY = Entry(
    id="FORTNOX_CUSTOMER_NAME_EMPTY",
    kind="error_code",
    title="FORTNOX_CUSTOMER_NAME_EMPTY",
    source="error-codes.txt",
    line=31,
    code="FORTNOX_CUSTOMER_NAME_EMPTY",
    systems=("Fortnox",),
    systems_text="Fortnox",
    severity="Error",
    message="Customer name cannot be empty (2000637)",
    cause="The order has no billing address or customer name.",
    solution="Set a default customer name under Configure > Settings > Customer Settings.",
    section="Fortnox Error Codes",
)
FAQ_ENTRY = Entry(
    id="faq:how-does-junipeer-pricing-work",
    kind="faq",
    title="How does Junipeer pricing work?",
    source="faq.txt",
    line=12,
    text="Pricing is per integration and month.",
    section="Billing",
)
GROUPED_ENTRY = Entry(
    id="COMMON_FORTNOX_ERRORS_EXPLAINED",
    kind="error_code",
    title="COMMON_FORTNOX_ERRORS_EXPLAINED",
    source="error-codes.txt",
    line=6,
    code="COMMON_FORTNOX_ERRORS_EXPLAINED",
    severity="Error",
    text="Two common Swedish-language Fortnox errors:",
    parts=(
        SubError(
            "Kunde inte hämta/hitta moms",
            "Could not retrieve/find VAT",
            "VAT rates are not configured in Fortnox.",
            "Create the missing VAT rate.",
        ),
    ),
)

ANSWER_TEXT = (
    "**FORTNOX_CUSTOMER_NAME_EMPTY** (severity: Error)\n"
    'You may see the message: "Customer name cannot be empty (2000637)"\n\n'
    "**What to do:**\n1. Set a default customer name.\n\n"
    "Source: [FORTNOX_CUSTOMER_NAME_EMPTY]"
)


def _answer(text: str = ANSWER_TEXT, *entries: Entry, abstained: bool = False) -> Answer:
    citations = tuple(Citation(e, 0.9) for e in (entries or (CODE_ENTRY,)))
    return Answer("what is error 2000637", text, () if abstained else citations, abstained)


# -- answers -----------------------------------------------------------------------


def test_agent_answer_links_its_inline_citation_to_the_source_element() -> None:
    rendered = render.render_answer(_answer(), profile=render.AGENT)

    assert [e.name for e in rendered.elements] == ["FORTNOX_CUSTOMER_NAME_EMPTY"]
    # "[CODE]" is unbracketed so Chainlit turns the name into a link to the element.
    assert "Source: FORTNOX_CUSTOMER_NAME_EMPTY" in rendered.content
    assert "[FORTNOX_CUSTOMER_NAME_EMPTY]" not in rendered.content
    # Every source is named in the text, so no extra sources line.
    assert "**Sources:**" not in rendered.content


def test_agent_answer_keeps_the_markdown_and_its_line_breaks() -> None:
    content = render.render_answer(_answer(), profile=render.AGENT).content

    assert "**What to do:**" in content
    assert "1. Set a default customer name." in content
    # A single newline would be joined into one line by markdown: it gets a hard break.
    assert "(severity: Error)  \nYou may see" in content


def test_sources_not_named_in_the_text_get_a_sources_line() -> None:
    answer = _answer(
        "Pricing is per integration. [FAQ: How does Junipeer pricing work?]", FAQ_ENTRY
    )
    linked = render.render_answer(answer, profile=render.AGENT)
    assert "FAQ: How does Junipeer pricing work?" in linked.content
    assert "**Sources:**" not in linked.content

    unnamed = render.render_answer(
        _answer("An answer that names nothing.", CODE_ENTRY, FAQ_ENTRY), profile=render.AGENT
    )
    assert unnamed.content.endswith(
        "**Sources:** FORTNOX_CUSTOMER_NAME_EMPTY · How does Junipeer pricing work?"
    )


def test_answer_metadata_records_question_citations_and_abstention() -> None:
    meta = render.render_answer(_answer()).metadata

    assert meta["kind"] == "answer"
    assert meta["profile"] == render.MERCHANT
    assert meta["question"] == "what is error 2000637"
    assert meta["abstained"] is False
    (cited,) = meta["citations"]
    assert cited["id"] == cited["label"] == cited["code"] == "FORTNOX_CUSTOMER_NAME_EMPTY"
    assert cited["source"] == "error-codes.txt:31"
    json.dumps(meta)  # stored as JSON in the step's metadata


def test_abstained_answer_has_no_elements_and_says_so_in_metadata() -> None:
    text = "I could not find this in the Junipeer knowledge base.\n\n- Email: support@junipeer.io"
    rendered = render.render_answer(_answer(text, abstained=True))

    assert rendered.elements == ()
    assert rendered.metadata["abstained"] is True
    assert "support@junipeer.io" in rendered.content


def test_notices_come_first_in_italics() -> None:
    answer = Answer("q", "Text.", (), False, ("Your message was long.",))
    assert render.render_answer(answer).content.startswith("*Your message was long.*\n\nText.")


# -- source elements ----------------------------------------------------------------------


def test_source_element_shows_the_whole_entry_with_its_provenance() -> None:
    (element,) = render.source_elements([Citation(CODE_ENTRY, 0.91)])
    content = element.content

    assert element.entry_id == "FORTNOX_CUSTOMER_NAME_EMPTY"
    for expected in (
        "### FORTNOX_CUSTOMER_NAME_EMPTY",
        "**Code:** `FORTNOX_CUSTOMER_NAME_EMPTY`",
        "**Severity:** Error",
        "**Systems:** Fortnox",
        "**Message:** “Customer name cannot be empty (2000637)”",
        "**Cause:** The order has no billing address",
        "Configure > Settings > Customer Settings",
        "*Source: error-codes.txt, line 31 · match score 0.910*",
    ):
        assert expected in content


def test_grouped_entry_element_lists_each_sub_error() -> None:
    (element,) = render.source_elements([Citation(GROUPED_ENTRY, 1.0)])

    assert "#### “Kunde inte hämta/hitta moms” (Could not retrieve/find VAT)" in element.content
    assert "**Cause:** VAT rates are not configured in Fortnox." in element.content
    assert "**Solution:** Create the missing VAT rate." in element.content


def test_element_names_are_unique_and_safe_for_chainlit_links() -> None:
    twin = Entry(id="other", kind="faq", title="FORTNOX_CUSTOMER_NAME_EMPTY", source="f", line=1)
    weird = Entry(id="w", kind="faq", title="Why [does] `this` *fail*?", source="f", line=2)
    names = [
        e.name for e in render.source_elements([Citation(e, 1) for e in (CODE_ENTRY, twin, weird)])
    ]

    assert names == [
        "FORTNOX_CUSTOMER_NAME_EMPTY",
        "FORTNOX_CUSTOMER_NAME_EMPTY (2)",
        "Why does this fail?",
    ]


# -- HTML is never rendered -------------------------------------------------------------------


def test_neutralize_html_escapes_tags_outside_code_only() -> None:
    text = (
        'Hi <script>alert("x")</script> <img src=x onerror=alert(1)>\n'
        "Inline `<b>code</b>` stays.\n"
        "```html\n<div>block</div>\n```\n"
        "After <b>bold</b>"
    )
    out = render.neutralize_html(text)

    assert "<script>" not in out
    assert "<img" not in out
    assert "&lt;script>" in out
    assert "`<b>code</b>`" in out
    assert "```html\n<div>block</div>\n```" in out
    assert out.endswith("After &lt;b>bold&lt;/b>")


def test_html_from_the_corpus_is_neutralised_in_answers_and_elements() -> None:
    entry = Entry(
        id="x",
        kind="faq",
        title="<b>Bold</b> title",
        source="faq.txt",
        line=3,
        text="Click <a href='javascript:alert(1)'>here</a>",
    )
    rendered = render.render_answer(_answer("<iframe src=evil></iframe> [FAQ: Bold title]", entry))

    assert "<iframe" not in rendered.content
    assert "<a " not in rendered.elements[0].content
    assert "<b>" not in rendered.elements[0].content


def test_user_text_echoed_back_is_neutralised() -> None:
    answer = Answer("q", "x", (), True, ("You wrote <script>bad()</script>",))
    assert "<script>" not in render.render_answer(answer).content
    contacts = render.render_contacts("- Email: <support@junipeer.io>")
    assert "<support" not in contacts.content


# -- drafts ---------------------------------------------------------------------------------------

REPLY = (
    "Hi,\n\nThe error you are seeing is [FORTNOX_CUSTOMER_NAME_EMPTY].\n\n"
    "To fix it:\n1. Set a default customer name.\n\nBest regards,\nJunipeer Support"
)


def test_draft_reply_is_a_verbatim_copyable_code_block() -> None:
    draft = Draft("ticket text", REPLY, (Citation(CODE_ENTRY, 1.0),))
    rendered = render.render_draft(draft)

    assert f"```text\n{REPLY}\n```" in rendered.content
    assert rendered.content.startswith("**Draft reply** — copy it with the button:")


def test_draft_source_names_never_occur_in_the_reply() -> None:
    # Chainlit links element names even inside code blocks; the copied reply must stay clean.
    rendered = render.render_draft(Draft("t", REPLY, (Citation(CODE_ENTRY, 1.0),)))
    (element,) = rendered.elements

    assert element.name == "FORTNOX_CUSTOMER_NAME_EMPTY" + render.SOURCE_SUFFIX
    assert element.name not in REPLY
    # What the agent checks sits beside the reply, with the code and score.
    assert f"**Check before sending:**\n- {element.name} — severity Error" in rendered.content
    assert "match score 1.00" in rendered.content


def test_draft_style_label_and_metadata() -> None:
    rendered = render.render_draft(Draft("the ticket", REPLY, ()), style="formal")

    assert rendered.content.startswith("**Draft reply (more formal)**")
    assert rendered.metadata == {
        "kind": "draft",
        "profile": render.AGENT,
        "style": "formal",
        "question": "the ticket",
        "outcome": "answer",
        "citations": [],
        "related": [],
        "abstained": False,
    }


def test_abstained_draft_tells_the_agent_to_check() -> None:
    rendered = render.render_draft(Draft("t", "Hi,\n\nWe will look into it.", (), True))
    assert "No knowledge-base entry matches this ticket" in rendered.content


def test_code_block_fence_outgrows_backticks_in_the_text() -> None:
    block = render.code_block("use ```this``` here")
    assert block.startswith("````text\n")
    assert block.endswith("\n````")


def test_markdown_in_a_draft_is_not_neutralised() -> None:
    draft = Draft("t", "Amount < 0 & <b>", ())
    assert "Amount < 0 & <b>" in render.render_draft(draft).content


# -- helpers ------------------------------------------------------------------------------------


def test_hard_line_breaks_skip_blank_lines_and_code() -> None:
    text = "a\nb\n\nc\n```\nx\ny\n```\nd"
    assert render.hard_line_breaks(text) == "a  \nb\n\nc\n```\nx\ny\n```\nd"


def test_stream_chunks_rebuild_the_text() -> None:
    text = "**Why it happens:** The order\n\n1. Set   a name."
    chunks = list(render.stream_chunks(text, words=2))
    assert "".join(chunks) == text
    assert len(chunks) > 2


def test_stream_chunks_are_bounded_in_number_for_long_answers() -> None:
    text = " ".join(f"word{n}" for n in range(1000))
    chunks = render.stream_chunks(text, words=3, max_chunks=40)
    assert "".join(chunks) == text
    assert len(chunks) <= 40
    short = render.stream_chunks("one two three four five six seven", words=3, max_chunks=40)
    assert short == ["one two three ", "four five six ", "seven"]


def test_history_keeps_cited_ids_and_is_bounded() -> None:
    history: list[Turn] = []
    for n in range(10):
        history = render.add_turns(history, f"q{n}", _answer())
    assert len(history) == render.MAX_HISTORY_TURNS
    assert history[-1] == Turn("assistant", ANSWER_TEXT, ("FORTNOX_CUSTOMER_NAME_EMPTY",))
    assert history[-2] == Turn("user", "q9")


def test_history_survives_the_json_user_session() -> None:
    turns = [Turn("user", "q"), Turn("assistant", "a", ("X", "Y"))]
    stored = json.loads(json.dumps(render.turns_to_session(turns)))
    assert render.turns_from_session(stored) == turns
    assert render.turns_from_session([None, {"role": "system"}]) == []


def test_resumed_thread_history_comes_from_steps() -> None:
    steps = [
        {"type": "run", "output": ""},
        {"type": "user_message", "output": "what is 2000637"},
        {
            "type": "assistant_message",
            "output": "answer",
            "metadata": json.dumps({"kind": "answer", "citations": [{"id": "E1"}]}),
        },
        {"type": "assistant_message", "output": "contacts", "metadata": {"kind": "handoff"}},
    ]
    assert render.turns_from_steps(steps) == [
        Turn("user", "what is 2000637"),
        Turn("assistant", "answer", ("E1",)),
    ]


def test_filters_from_chat_settings() -> None:
    assert render.filters_from_settings(None) is None
    assert render.filters_from_settings({"severity": "Any", "system": "Any"}) is None
    assert render.filters_from_settings({"severity": "Critical", "system": "Any"}) == Filters(
        severity=("Critical",)
    )
    both = render.filters_from_settings({"severity": "Error", "system": "Fortnox"})
    assert both == Filters(severity=("Error",), system=("Fortnox",))
    assert render.filter_notice(both) == "*Filtered to severity Error and system Fortnox.*"
    assert render.filter_notice(None) == ""


def test_filter_choices_start_with_any() -> None:
    assert render.severity_choices() == ["Any", "Critical", "Error", "Warning", "Info"]
    assert render.system_choices(["All platforms", "Fortnox", "Shopify"]) == [
        "Any",
        "Fortnox",
        "Shopify",
    ]


def test_rate_limit_sliding_window() -> None:
    times: list[float] = []
    for second in range(3):
        wait, times = render.rate_limit(times, 100.0 + second, per_minute=3)
        assert wait == 0
    wait, times = render.rate_limit(times, 110.0, per_minute=3)
    assert wait == pytest.approx(50.0)
    assert len(times) == 3
    wait, _ = render.rate_limit(times, 160.5, per_minute=3)
    assert wait == 0
    assert "wait 50 seconds" in render.rate_limited_text(49.6)


def test_merchant_starters_and_welcome() -> None:
    labels = [label for label, _ in render.MERCHANT_STARTERS]
    assert labels[:3] == [
        "Fiscal year not available",
        "My integration stopped syncing",
        "How does pricing work?",
    ]
    assert len(labels) == 4
    assert "error codes" in render.MERCHANT_WELCOME


def test_contacts_message() -> None:
    rendered = render.render_contacts("- Email: support@junipeer.io\n- Phone: +46 8 480 014 30")
    assert rendered.content.startswith("**Talk to a human:**")
    assert "support@junipeer.io" in rendered.content
    assert rendered.metadata == {"kind": "handoff"}


# -- the launcher (imports Chainlit) ------------------------------------------------


def test_agent_mode_needs_a_password_and_an_auth_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot import app
    from bot.config import Settings

    merchant = Settings(_env_file=None, chat={"agent_profile": False, "agent_password": "pw"})
    no_password = Settings(_env_file=None)
    agent = Settings(_env_file=None, chat={"agent_password": "pw"})

    assert not app.agent_mode(merchant)
    assert not app.agent_mode(no_password)
    assert app.agent_mode(agent)

    env = app.chat_environment(merchant, base={})
    assert env["CHAINLIT_APP_ROOT"] == str(app.REPO_ROOT)
    # The server process gets the chat settings it must run with.
    assert env["SUPPORTBOT_CHAT__AGENT_PROFILE"] == "False"
    assert env["SUPPORTBOT_CHAT__AGENT_PASSWORD"] == "pw"
    assert env["SUPPORTBOT_CHAT__DATABASE_URL"] == merchant.chat.database_url
    for name, value in env.items():
        if name.startswith("SUPPORTBOT_"):
            monkeypatch.setenv(name, value)
    assert not app.agent_mode(Settings(_env_file=None))  # what the server will load
    with pytest.raises(app.ChatConfigError, match="CHAINLIT_AUTH_SECRET"):
        app.chat_environment(agent, base={})
    assert app.chat_environment(agent, base={"CHAINLIT_AUTH_SECRET": "s"})


def test_chat_command_runs_chainlit_headless_on_the_app_file() -> None:
    from bot import app

    command = app.chat_command("0.0.0.0", 8123)
    assert command[1:4] == ["-m", "chainlit", "run"]
    assert re.search(r"bot[/\\]app\.py$", command[4])
    assert command[5:] == ["--headless", "--host", "0.0.0.0", "--port", "8123"]


def test_the_rate_limit_client_is_the_proxy_header_only_from_a_trusted_proxy() -> None:
    trusted = ["127.0.0.1", "::1"]
    via_nginx = {"x-real-ip": "203.0.113.7", "x-forwarded-for": "10.9.9.9, 203.0.113.7"}
    assert render.client_address("127.0.0.1", via_nginx, trusted) == "203.0.113.7"
    # Without X-Real-IP the entry the trusted proxy appended (the last) counts, not a
    # value the client wrote itself.
    forwarded = {"x-forwarded-for": "6.6.6.6, 203.0.113.7"}
    assert render.client_address("::1", forwarded, trusted) == "203.0.113.7"
    # A direct client cannot choose its own key with headers.
    assert render.client_address("198.51.100.2", via_nginx, trusted) == "198.51.100.2"
    assert render.client_address(None, {}, trusted) == "unknown"
    assert render.client_address("127.0.0.1", {}, trusted) == "127.0.0.1"


def test_the_rate_limit_keys_a_tab_or_a_user_and_the_address() -> None:
    assert render.rate_limit_keys("tab-1", None, "203.0.113.7") == (
        "session:tab-1",
        "address:203.0.113.7",
    )
    # A logged-in agent is one conversation key whatever the tab.
    assert render.rate_limit_keys("tab-2", "agent", "10.0.0.1")[0] == "user:agent"
    assert render.choice_index(["Any", "Error"], "Error") == 1
    assert render.choice_index(["Any", "Error"], "Gone") == 0
