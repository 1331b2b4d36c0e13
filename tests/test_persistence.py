"""Chat persistence on a real SQLite file through Chainlit's own SQLAlchemyDataLayer."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from bot.persistence import (
    NOT_IN_KB,
    create_schema,
    create_schema_async,
    fetch_abstentions,
    fetch_feedback,
    gap_report,
    is_sqlite,
    make_data_layer,
)

CITATION = {
    "id": "FORTNOX_CUSTOMER_NAME_EMPTY",
    "label": "FORTNOX_CUSTOMER_NAME_EMPTY",
    "code": "FORTNOX_CUSTOMER_NAME_EMPTY",
    "title": "FORTNOX_CUSTOMER_NAME_EMPTY",
    "kind": "error_code",
    "severity": "Error",
    "source": "error-codes.txt:31",
    "section": "Fortnox Error Codes",
    "score": 1.0,
}


@pytest.fixture
def db(database_url: str) -> tuple[str, Path | None]:
    """(URL, SQLite file or None for PostgreSQL): every test runs on both databases."""
    if not is_sqlite(database_url):
        return database_url, None
    return database_url, Path(database_url.split(":///", 1)[1])


def _use_chainlit_context() -> None:
    """A Chainlit HTTP context, so the data layer writes at once (no websocket queue).

    Set inside the test's own task: context variables do not flow out of fixtures.
    """
    from chainlit.context import ChainlitContext, context_var
    from chainlit.session import HTTPSession

    session = HTTPSession(id=str(uuid.uuid4()), client_type="webapp", thread_id=None)
    context_var.set(ChainlitContext(session))


async def _rows(url: str, sql: str, **params: Any) -> list[tuple]:
    """Rows of one query, read with a plain engine (not the code under test)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return [tuple(r) for r in await conn.execute(text(sql), params)]
    finally:
        await engine.dispose()


def _columns(url: str, table: str) -> set[str]:
    if is_sqlite(url):
        sql = f"SELECT name FROM pragma_table_info('{table}')"
    else:
        sql = f"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}'"
    return {r[0] for r in asyncio.run(_rows(url, sql))}


def _tables(url: str) -> set[str]:
    if is_sqlite(url):
        sql = "SELECT name FROM sqlite_master WHERE type='table'"
    else:
        sql = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    return {r[0] for r in asyncio.run(_rows(url, sql))}


def test_schema_is_created_idempotently_in_wal_mode(db: tuple[str, Path | None]) -> None:
    url, path = db
    create_schema(url)
    create_schema(url)  # twice: no error, nothing lost

    if path is not None:
        with sqlite3.connect(path) as con:
            assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {"users", "threads", "steps", "elements", "feedbacks"} <= _tables(url)
    assert {
        "supportbot_conversations",
        "supportbot_rate_events",
        "supportbot_index_builds",
    } <= _tables(url)
    # Columns chainlit 2.12 writes (Message.to_dict / Step.to_dict / ElementDict / Feedback).
    assert {"command", "modes", "defaultOpen", "autoCollapse", "showInput"} <= _columns(
        url, "steps"
    )
    assert {"props", "chainlitKey", "objectKey", "forId", "mime"} <= _columns(url, "elements")
    assert {"forId", "threadId", "value", "comment"} <= _columns(url, "feedbacks")
    assert is_sqlite(url) == (path is not None)
    assert not is_sqlite("postgresql+asyncpg://u:p@localhost/db")


async def test_create_schema_works_inside_a_running_loop(db: tuple[str, Path | None]) -> None:
    url, _ = db
    create_schema(url)  # sync helper called from async code runs in a worker thread
    await create_schema_async(url)
    assert "threads" in await asyncio.to_thread(_tables, url)


async def test_replicas_creating_the_schema_at_once_all_succeed(
    db: tuple[str, Path | None],
) -> None:
    # Several replicas starting together each create the schema (the chat tables and the
    # security layer's) on an empty database.
    url, path = db
    # SQLite failed one of 8 concurrent creators at once ("database is locked") in about
    # one start in 15, so it gets 30 fresh files and 16 creators each.
    rounds = [url] if path is None else [f"sqlite+aiosqlite:///{path}.{i}" for i in range(30)]
    for round_url in rounds:
        results = await asyncio.gather(
            *(create_schema_async(round_url) for _ in range(16)), return_exceptions=True
        )
        assert [r for r in results if isinstance(r, BaseException)] == []
        assert {
            "threads",
            "feedbacks",
            "supportbot_conversations",
            "login_failures",
            "revoked_tokens",
        } <= await asyncio.to_thread(_tables, round_url)


def _step(thread_id: str, step_type: str, output: str, **extra: Any) -> dict[str, Any]:
    step = {
        "id": str(uuid.uuid4()),
        "threadId": thread_id,
        "name": "Junipeer Support" if step_type == "assistant_message" else "User",
        "type": step_type,
        "output": output,
        "streaming": False,
        "createdAt": extra.pop("createdAt"),
        "metadata": {},
    }
    step.update(extra)
    return step


async def test_thread_with_tags_steps_and_feedback_round_trip(db: tuple[str, Path | None]) -> None:
    """Regression: the thread's tags list must bind on SQLite, or the thread is not saved."""
    _use_chainlit_context()
    from chainlit.element import Text
    from chainlit.types import Feedback, Pagination, ThreadFilter
    from chainlit.user import User

    url, path = db
    await create_schema_async(url)
    layer = make_data_layer(url)
    user = await layer.create_user(User(identifier="agent", metadata={"role": "agent"}))
    assert user is not None

    thread_id = str(uuid.uuid4())
    await layer.update_thread(
        thread_id, name="what is error 2000637", user_id=user.id, tags=["Merchant"]
    )

    question = _step(
        thread_id, "user_message", "what is error 2000637", createdAt="2026-01-01T10:00:00Z"
    )
    run = _step(
        thread_id,
        "run",
        "",
        name="on_message",
        parentId=question["id"],
        createdAt="2026-01-01T10:00:01Z",
    )
    answer = _step(
        thread_id,
        "assistant_message",
        "**FORTNOX_CUSTOMER_NAME_EMPTY** ...",
        parentId=run["id"],
        createdAt="2026-01-01T10:00:02Z",
        metadata={
            "kind": "answer",
            "question": "what is error 2000637",
            "citations": [CITATION],
            "abstained": False,
        },
    )
    for step in (question, run, answer):
        await layer.create_step(step)

    source = Text(
        name="FORTNOX_CUSTOMER_NAME_EMPTY",
        content="### FORTNOX_CUSTOMER_NAME_EMPTY\n\nCause: …",
        display="side",
        mime="text/plain",
        for_id=answer["id"],
        thread_id=thread_id,
    )
    await layer.create_element(source)

    # Chainlit 2's UI puts the thumbs on the run step that wraps on_message.
    feedback_id = await layer.upsert_feedback(
        Feedback(forId=run["id"], threadId=thread_id, value=0, comment="Missing Shopify steps")
    )

    thread = await layer.get_thread(thread_id)
    assert thread is not None
    tags = thread["tags"]
    assert (json.loads(tags) if isinstance(tags, str) else tags) == ["Merchant"]
    assert thread["userIdentifier"] == "agent"
    assert [s["type"] for s in thread["steps"]] == ["user_message", "run", "assistant_message"]
    run_step = next(s for s in thread["steps"] if s["id"] == run["id"])
    assert run_step["feedback"]["value"] == 0
    assert run_step["feedback"]["comment"] == "Missing Shopify steps"
    (element,) = thread["elements"]
    assert element["name"] == "FORTNOX_CUSTOMER_NAME_EMPTY"
    header, payload = element["url"].split(",", 1)
    assert header.startswith("data:text/plain")
    assert base64.b64decode(payload).decode().startswith("### FORTNOX_CUSTOMER_NAME_EMPTY")

    # The agent's history lists the thread.
    page = await layer.list_threads(Pagination(first=10), ThreadFilter(userId=user.id))
    assert [t["id"] for t in page.data] == [thread_id]
    await layer.close()

    # The CLI's export reads the question, the answer and its citations back.
    (row,) = fetch_feedback(url)
    assert row["feedback_id"] == feedback_id
    assert row["thread_id"] == thread_id
    assert row["step_id"] == answer["id"]
    assert row["value"] == 0
    assert row["comment"] == "Missing Shopify steps"
    assert row["question"] == "what is error 2000637"
    assert row["answer"].startswith("**FORTNOX_CUSTOMER_NAME_EMPTY**")
    assert row["citations"] == [CITATION]
    assert row["abstained"] is False
    assert row["user"] == "agent"
    assert row["created_at"] == "2026-01-01T10:00:02Z"

    if path is not None:  # SQLite: the list went through the JSON adapter
        with sqlite3.connect(path) as con:
            (tags,) = con.execute("SELECT tags FROM threads WHERE id = ?", (thread_id,)).fetchone()
        assert tags == '["Merchant"]'
    else:  # PostgreSQL: a real TEXT[]
        ((stored,),) = await _rows(url, 'SELECT tags FROM threads WHERE "id" = :i', i=thread_id)
        assert stored == ["Merchant"]


async def test_feedback_on_a_message_and_abstentions(db: tuple[str, Path | None]) -> None:
    _use_chainlit_context()
    from chainlit.types import Feedback

    url, _ = db
    await create_schema_async(url)
    layer = make_data_layer(url)
    thread_id = str(uuid.uuid4())
    await layer.update_thread(thread_id, name="weather", tags=["Merchant"])
    abstained = _step(
        thread_id,
        "assistant_message",
        "I could not find this in the Junipeer knowledge base…",
        createdAt="2026-01-01T11:00:00Z",
        metadata={"kind": "answer", "question": "weather in Paris?", "abstained": True},
    )
    answered = _step(
        thread_id,
        "assistant_message",
        "Pricing…",
        createdAt="2026-01-01T11:01:00Z",
        metadata={"kind": "answer", "question": "pricing?", "citations": [], "abstained": False},
    )
    # "make it shorter" redoes the last draft: an abstained refinement is not a new gap.
    refined = _step(
        thread_id,
        "assistant_message",
        "Draft reply (shorter)…",
        createdAt="2026-01-01T11:02:00Z",
        metadata={"kind": "draft", "question": "weather?", "abstained": True, "refinement": True},
    )
    for step in (abstained, answered, refined):
        await layer.create_step(step)
    await layer.upsert_feedback(Feedback(forId=answered["id"], threadId=thread_id, value=1))
    await layer.close()

    (row,) = fetch_feedback(url)
    assert (row["step_id"], row["value"], row["question"]) == (answered["id"], 1, "pricing?")
    (gap,) = fetch_abstentions(url)
    assert gap["question"] == "weather in Paris?"
    assert gap["step_id"] == abstained["id"]


async def test_feedback_whose_answer_was_never_stored_is_shown_not_dropped(
    db: tuple[str, Path | None],
) -> None:
    # Chainlit writes steps in fire-and-forget tasks and awaits PUT /feedback, so a crash can
    # keep the rating and lose the answer it rates. The rating must still be exported.
    from typer.testing import CliRunner

    from bot.cli import app

    _use_chainlit_context()
    from chainlit.types import Feedback

    url, _ = db
    await create_schema_async(url)
    layer = make_data_layer(url)
    thread_id = str(uuid.uuid4())
    await layer.update_thread(thread_id, name="lost", tags=["Merchant"])
    kept = _step(
        thread_id,
        "assistant_message",
        "Pricing…",
        createdAt="2026-01-01T11:01:00Z",
        metadata={"kind": "answer", "question": "pricing?", "citations": [], "abstained": False},
    )
    await layer.create_step(kept)
    lost_step = str(uuid.uuid4())  # never written
    await layer.upsert_feedback(Feedback(forId=kept["id"], threadId=thread_id, value=1))
    await layer.upsert_feedback(
        Feedback(forId=lost_step, threadId=thread_id, value=0, comment="wrong answer")
    )
    await layer.close()

    rows = {r["step_id"]: r for r in fetch_feedback(url)}
    assert set(rows) == {kept["id"], lost_step}
    lost = rows[lost_step]
    assert lost["answer_missing"] is True
    assert (lost["thread_id"], lost["value"], lost["comment"]) == (thread_id, 0, "wrong answer")
    assert (lost["question"], lost["answer"], lost["citations"]) == ("", "", [])
    assert rows[kept["id"]]["answer_missing"] is False
    assert rows[kept["id"]]["answer"] == "Pricing…"

    env = {"SUPPORTBOT_CHAT__DATABASE_URL": url}
    text = CliRunner().invoke(app, ["feedback"], env=env)
    assert text.exit_code == 0, text.output
    assert f"answer not stored: step {lost_step}" in text.stdout
    assert '"wrong answer"' in text.stdout
    assert "'pricing?'" in text.stdout
    exported = CliRunner().invoke(app, ["feedback", "--json"], env=env)
    assert {r["step_id"] for r in json.loads(exported.stdout)} == {kept["id"], lost_step}


def test_fetch_on_an_empty_database(db: tuple[str, Path | None]) -> None:
    url, _ = db
    create_schema(url)
    assert fetch_feedback(url) == []
    assert fetch_abstentions(url) == []


def test_gap_report_groups_thumbs_down_and_abstentions_by_entry() -> None:
    other = {**CITATION, "id": "FORTNOX_FISCAL_YEAR", "label": "FORTNOX_FISCAL_YEAR"}
    rows = [
        {
            "step_id": "a",
            "value": 0,
            "question": "2000637?",
            "comment": "wrong",
            "citations": [CITATION],
        },
        {
            "step_id": "b",
            "value": 0,
            "question": "2000637?",
            "comment": "",
            "citations": [CITATION],
        },
        {"step_id": "c", "value": 0, "question": "name empty", "citations": [CITATION, other]},
        {"step_id": "d", "value": 1, "question": "fine", "citations": [other]},
        {"step_id": "e", "value": 0, "question": "refunds?", "citations": [], "abstained": True},
    ]
    abstentions = [
        {"step_id": "e", "question": "refunds?"},  # also thumbed down: counted once
        {"step_id": "f", "question": "weather?"},
    ]
    report = gap_report(rows, abstentions)

    assert [(r["entry"], r["count"]) for r in report] == [
        ("FORTNOX_CUSTOMER_NAME_EMPTY", 3),
        (None, 2),
        ("FORTNOX_FISCAL_YEAR", 1),
    ]
    top = report[0]
    assert top["thumbs_down"] == 3
    assert top["questions"] == ["2000637?", "name empty"]
    assert top["comments"] == ["wrong"]
    gaps = report[1]
    assert gaps["label"] == NOT_IN_KB
    assert (gaps["thumbs_down"], gaps["abstained"]) == (1, 1)
    assert set(gaps["questions"]) == {"refunds?", "weather?"}
    assert gap_report([], []) == []


async def test_feedback_and_gaps_commands_read_the_database(db: tuple[str, Path | None]) -> None:
    import csv
    import io
    import json

    from typer.testing import CliRunner

    from bot.cli import app

    _use_chainlit_context()
    from chainlit.types import Feedback

    url, _ = db
    await create_schema_async(url)
    layer = make_data_layer(url)
    thread_id = str(uuid.uuid4())
    await layer.update_thread(thread_id, name="2000637", tags=["Merchant"])
    answered = _step(
        thread_id,
        "assistant_message",
        "**FORTNOX_CUSTOMER_NAME_EMPTY** …",
        createdAt="2026-01-01T11:01:00Z",
        metadata={
            "kind": "answer",
            "question": "what is error 2000637",
            "citations": [CITATION],
            "abstained": False,
        },
    )
    abstained = _step(
        thread_id,
        "assistant_message",
        "I could not find this in the Junipeer knowledge base…",
        createdAt="2026-01-01T11:02:00Z",
        metadata={"kind": "answer", "question": "can I pay by invoice?", "abstained": True},
    )
    for step in (answered, abstained):
        await layer.create_step(step)
    await layer.upsert_feedback(
        Feedback(forId=answered["id"], threadId=thread_id, value=0, comment="did not help")
    )
    await layer.close()

    runner = CliRunner()
    env = {"SUPPORTBOT_CHAT__DATABASE_URL": url}
    exported = runner.invoke(app, ["feedback", "--json"], env=env)
    assert exported.exit_code == 0, exported.output
    (row,) = json.loads(exported.stdout)
    assert (row["value"], row["comment"], row["question"]) == (
        0,
        "did not help",
        "what is error 2000637",
    )
    assert row["citations"][0]["code"] == "FORTNOX_CUSTOMER_NAME_EMPTY"

    as_csv = runner.invoke(app, ["feedback", "--csv"], env=env)
    (csv_row,) = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert csv_row["citations"] == "FORTNOX_CUSTOMER_NAME_EMPTY"

    report = runner.invoke(app, ["gaps", "--json"], env=env)
    assert report.exit_code == 0, report.output
    groups = {g["entry"]: g for g in json.loads(report.stdout)}
    assert groups[None]["abstained"] == 1
    assert "can I pay by invoice?" in groups[None]["questions"]
    (cited,) = [g for key, g in groups.items() if key is not None]
    assert cited["thumbs_down"] == 1
    assert "FORTNOX_CUSTOMER_NAME_EMPTY" in cited["label"]

    text = runner.invoke(app, ["gaps"], env=env)
    assert "can I pay by invoice?" in text.stdout
    # Plain `gaps` prints the merchants' comments too, not only --json.
    assert 'comment: "did not help"' in text.stdout


# Characters that ring the terminal's bell, end strings, or reorder what the reader sees.
UNDISPLAYABLE = ("\x00", "\x07", "\x1b", "\u202e", "\u2066")


async def test_gaps_and_feedback_listings_are_whole_one_line_and_clean(
    db: tuple[str, Path | None], tmp_path: Path
) -> None:
    import csv
    import io
    import json

    from typer.testing import CliRunner

    from bot.cli import app

    _use_chainlit_context()
    from chainlit.types import Feedback

    url, path = db
    await create_schema_async(url)
    layer = make_data_layer(url)
    thread_id = str(uuid.uuid4())
    await layer.update_thread(thread_id, name="gaps", tags=["Support agent"])
    # PostgreSQL text cannot hold NUL at all; SQLite keeps it.
    nul = "\x00" if path is not None else ""
    questions = [
        "Hi,\n\nour orders\tfail.\n\n/Anna",
        "Hi,\n\nour orders\tfail.\n\n/Anna",
        *(f"question number {n}?" for n in range(6)),
        f"bell\x07 nul{nul} \u202eevil.exe\u202c right",
    ]
    steps = [
        _step(
            thread_id,
            "assistant_message",
            "I could not find this…",
            createdAt=f"2026-01-01T12:{n:02d}:00Z",
            metadata={"kind": "answer", "question": q, "abstained": True},
        )
        for n, q in enumerate(questions)
    ]
    for step in steps:
        await layer.create_step(step)
    await layer.upsert_feedback(
        Feedback(
            forId=steps[-1]["id"],
            threadId=thread_id,
            value=0,
            comment=f"wrong\x07{nul} \u202etxt.exe\u202c\nsecond line",
        )
    )
    await layer.close()

    runner = CliRunner()
    env = {"SUPPORTBOT_CHAT__DATABASE_URL": url, "SUPPORTBOT_INDEX__DIR": str(tmp_path / "none")}
    gaps = runner.invoke(app, ["gaps"], env=env)
    assert gaps.exit_code == 0, gaps.output
    lines = gaps.stdout.splitlines()
    assert lines[0].startswith(f"   9  {NOT_IN_KB}")
    listed = [line for line in lines if line.startswith("        - ")]
    # Five listed, and the rest counted: a count of 8 does not read as 5 questions.
    assert len(listed) == 5
    assert "        …and 3 more" in lines
    # A multi-line ticket keeps to its line of the listing.
    # Asked twice: the count of 9 is 8 questions, one of them asked twice.
    assert "        - Hi, our orders fail. /Anna (asked 2 times)" in lines
    assert "        - bell nul evil.exe right" in lines
    gaps_all = runner.invoke(app, ["gaps", "--json"], env=env)
    (group,) = json.loads(gaps_all.stdout)
    assert len(group["questions"]) == 8
    assert group["asked"] == [2, 1, 1, 1, 1, 1, 1, 1]
    assert '        comment: "wrong txt.exe second line"' in lines

    plain = runner.invoke(app, ["feedback"], env=env)
    assert "'bell nul evil.exe right'" in plain.stdout
    assert '"wrong txt.exe second line"' in plain.stdout
    as_json = runner.invoke(app, ["feedback", "--json"], env=env)
    (row,) = json.loads(as_json.stdout)
    assert row["comment"] == "wrong txt.exe\nsecond line"
    as_csv = runner.invoke(app, ["feedback", "--csv"], env=env)
    (csv_row,) = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert csv_row["question"] == "bell nul evil.exe right"
    for result in (gaps, gaps_all, plain, as_json, as_csv):
        assert result.exit_code == 0, result.output
        for char in UNDISPLAYABLE:
            assert char not in result.stdout, (char, result.stdout)
        # JSON escapes are characters too, once read back.
        assert "\\u0000" not in result.stdout
        assert "\\u0007" not in result.stdout


async def test_handoffs_are_stored_and_listed_for_agents(db: tuple[str, Path]) -> None:
    import json

    from typer.testing import CliRunner

    from bot import chat_render as render
    from bot.cli import app

    _use_chainlit_context()
    url, _ = db
    await create_schema_async(url)
    layer = make_data_layer(url)
    thread_id = str(uuid.uuid4())
    await layer.update_thread(thread_id, name="2000637", tags=["Merchant"])
    handoff = render.build_handoff(
        "- Email: support@junipeer.io",
        "x@example.com",
        {
            "question": "what is error 2000637",
            "facts": {
                "code": "FORTNOX_CUSTOMER_NAME_EMPTY",
                "message": "Customer name cannot be empty (2000637)",
                "suggested": "Customer name cannot be empty — Configure a default name.",
            },
        },
        f"http://chat/thread/{thread_id}",
        conversation=thread_id,
        answer_id="answer-1",
    )
    rendered = render.render_handoff(handoff)
    asked = _step(
        thread_id, "user_message", "what is error 2000637", createdAt="2026-01-01T11:02:00Z"
    )
    await layer.create_step(asked)
    answer = _step(
        thread_id,
        "assistant_message",
        "Configure a default name.",
        createdAt="2026-01-01T11:02:30Z",
    )
    await layer.create_step(answer)
    # Clicked twice (the second on another replica, say): one hand-off.
    for at in ("2026-01-01T11:03:00Z", "2026-01-01T11:03:01Z"):
        step = _step(
            thread_id,
            "assistant_message",
            rendered.content,
            createdAt=at,
            metadata=rendered.metadata,
        )
        await layer.create_step(step)
    await layer.close()

    runner = CliRunner()
    env = {"SUPPORTBOT_CHAT__DATABASE_URL": url}
    listed = runner.invoke(app, ["handoffs", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.stdout)
    assert row["thread_id"] == thread_id
    assert row["email"] == "support@junipeer.io"
    assert row["code"] == "FORTNOX_CUSTOMER_NAME_EMPTY"
    assert row["question"] == "what is error 2000637"
    assert row["link"] == f"http://chat/thread/{thread_id}"

    text = runner.invoke(app, ["handoffs"], env=env)
    assert "'what is error 2000637'  [FORTNOX_CUSTOMER_NAME_EMPTY" in text.stdout
    assert f"conversation: http://chat/thread/{thread_id}" in text.stdout
    assert f"transcript: supportbot handoffs --thread {thread_id}" in text.stdout

    # The e-mail's conversation ID: the whole conversation, for an agent without a link.
    transcript = runner.invoke(app, ["handoffs", "--thread", thread_id], env=env)
    assert transcript.exit_code == 0, transcript.output
    lines = transcript.stdout.splitlines()
    assert lines[:2] == ["2026-01-01T11:02:00Z  merchant:", "what is error 2000637"]
    assert "Configure a default name." in lines
    assert "E-mail support about this" in transcript.stdout
    as_json = json.loads(
        runner.invoke(app, ["handoffs", "--thread", thread_id, "--json"], env=env).stdout
    )
    assert [m["role"] for m in as_json] == ["merchant", "assistant", "assistant", "assistant"]
    unknown = runner.invoke(app, ["handoffs", "--thread", "no-such-id"], env=env)
    assert unknown.exit_code == 1
    assert "No conversation 'no-such-id'" in unknown.output


def test_no_handoffs_yet(db: tuple[str, Path]) -> None:
    from typer.testing import CliRunner

    from bot.cli import app

    url, _ = db
    create_schema(url)
    result = CliRunner().invoke(app, ["handoffs"], env={"SUPPORTBOT_CHAT__DATABASE_URL": url})
    assert result.exit_code == 0
    assert "No hand-offs yet." in result.stdout


PG_URL = "postgresql+asyncpg://merchant:s3cret@127.0.0.1:1/db"


@pytest.mark.parametrize(
    ("url", "reason", "hide_driver"),
    [
        ("nonsense://", "Can't load plugin", False),
        ("not a url at all", "Could not parse", False),
        # Nothing listens there: refused at once, said in one line.
        (PG_URL, "Connect call failed", False),
        # Without the driver (hidden here, so the test does not depend on what is installed).
        (PG_URL, "driver is not installed", True),
    ],
)
def test_an_unusable_database_url_is_one_clear_error(
    url: str, reason: str, hide_driver: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.persistence import DatabaseError

    if hide_driver:
        monkeypatch.setitem(sys.modules, "asyncpg", None)
    for call in (create_schema, fetch_feedback, fetch_abstentions):
        with pytest.raises(DatabaseError, match=reason) as caught:
            call(url)
        assert "s3cret" not in str(caught.value)  # passwords are not printed
        assert "\n" not in str(caught.value)


def test_a_database_below_a_file_or_not_sqlite_is_one_clear_error(tmp_path: Path) -> None:
    from bot.persistence import DatabaseError

    blocker = tmp_path / "data"
    blocker.write_text("not a folder", encoding="utf-8")
    with pytest.raises(DatabaseError, match=r"Not a directory: '.*data'"):
        create_schema(f"sqlite+aiosqlite:///{blocker / 'chat.db'}")
    assert blocker.read_text(encoding="utf-8") == "not a folder"

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"\x00\xff" * 4096)
    with pytest.raises(DatabaseError, match="file is not a database"):
        fetch_feedback(f"sqlite+aiosqlite:///{garbage}")
    assert garbage.read_bytes() == b"\x00\xff" * 4096  # left as it was


@pytest.mark.parametrize("command", ["feedback", "gaps"])
def test_feedback_and_gaps_with_an_unusable_database_exit_cleanly(command: str) -> None:
    from typer.testing import CliRunner

    from bot.cli import app

    result = CliRunner().invoke(
        app, [command], env={"SUPPORTBOT_CHAT__DATABASE_URL": "nonsense://"}
    )
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "Cannot use the chat database nonsense://" in result.output
    assert "Traceback" not in result.output


async def test_feedback_waits_for_its_thread_and_not_for_a_busy_pool(
    db: tuple[str, Path | None],
) -> None:
    # Under load Chainlit's background writes hold every connection of the data layer's
    # pool, and a thumbs can arrive before the thread it rates is written. The feedback
    # goes through the server's own pool and is acknowledged only once it is stored.
    _use_chainlit_context()
    from chainlit.types import Feedback
    from sqlalchemy import text

    from bot.persistence import make_engine

    url, _ = db
    await create_schema_async(url)
    own = make_engine(url, 2)
    layer = make_data_layer(url, pool_size=1, feedback_engine=own)
    thread_id = str(uuid.uuid4())
    held = []
    try:
        if not is_sqlite(url):
            # Chainlit's pool (1 + 1 overflow) is taken by a backlog that outlasts the test.
            held = [await layer.engine.connect() for _ in range(2)]

        async def thread_written_later() -> None:
            await asyncio.sleep(1.0)
            async with own.begin() as conn:
                await conn.execute(
                    text('INSERT INTO threads ("id", "name") VALUES (:t, :n)'),
                    {"t": thread_id, "n": "late"},
                )

        writer = asyncio.create_task(thread_written_later())
        feedback_id = await layer.upsert_feedback(
            Feedback(forId=str(uuid.uuid4()), threadId=thread_id, value=0, comment="late")
        )
        await writer
        rows = await _rows(url, 'SELECT "id", "comment" FROM feedbacks')
        assert rows == [(uuid.UUID(feedback_id) if not is_sqlite(url) else feedback_id, "late")]
    finally:
        for conn in held:
            await conn.close()
        await layer.close()
        await own.dispose()


async def test_feedback_whose_thread_never_comes_is_refused_not_acknowledged(
    db: tuple[str, Path | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    import bot.persistence

    _use_chainlit_context()
    from chainlit.types import Feedback

    url, _ = db
    await create_schema_async(url)
    monkeypatch.setattr(bot.persistence, "FEEDBACK_DEADLINE_S", 1.0)
    layer = make_data_layer(url)
    try:
        with pytest.raises(TimeoutError, match="was not stored in time"):
            await layer.upsert_feedback(
                Feedback(forId=str(uuid.uuid4()), threadId=str(uuid.uuid4()), value=1)
            )
    finally:
        await layer.close()
    assert await _rows(url, 'SELECT "id" FROM feedbacks') == []


async def test_a_present_schema_is_not_recreated_behind_the_replicas_writes(
    postgres: Any,
) -> None:
    # `supportbot ingest` creates the schema before publishing a build, while the replicas
    # write. On PostgreSQL CREATE INDEX IF NOT EXISTS locks its table even when the index
    # exists, so it waited behind any open write (and new writes behind it).
    from sqlalchemy.ext.asyncio import create_async_engine

    url = postgres.create_database(f"present_{uuid.uuid4().hex[:8]}")

    await create_schema_async(url)
    writer = create_async_engine(url)
    try:
        async with writer.connect() as conn:
            await conn.exec_driver_sql("BEGIN")
            await conn.exec_driver_sql("LOCK TABLE feedbacks IN ROW EXCLUSIVE MODE")
            # A replica's write transaction is open on the table: creating again returns.
            await asyncio.wait_for(create_schema_async(url), 5)
            await conn.exec_driver_sql("ROLLBACK")
    finally:
        await writer.dispose()


async def test_a_source_written_before_its_conversation_row_is_kept(
    db: tuple[str, Path | None],
) -> None:
    """A source element written before its conversation's row still lands.

    Chainlit writes an answer's sources in tasks of their own, which may run before the
    task creating the conversation's row; PostgreSQL's foreign key refused them.
    """
    _use_chainlit_context()
    from chainlit.element import Text

    url, _ = db
    await create_schema_async(url)
    layer = make_data_layer(url)
    thread_id = str(uuid.uuid4())
    answer = _step(thread_id, "assistant_message", "answer", createdAt="2026-01-01T10:00:02Z")
    source = Text(
        name="FORTNOX_CUSTOMER_NAME_EMPTY",
        content="### FORTNOX_CUSTOMER_NAME_EMPTY",
        display="side",
        mime="text/plain",
        for_id=answer["id"],
        thread_id=thread_id,
    )
    await layer.create_element(source)  # before any row of its conversation
    await layer.update_thread(thread_id, name="error 2000637", tags=["Merchant"])
    await layer.create_step(answer)

    thread = await layer.get_thread(thread_id)
    await layer.close()
    assert thread is not None
    assert thread["name"] == "error 2000637"
    assert [e["name"] for e in thread["elements"]] == ["FORTNOX_CUSTOMER_NAME_EMPTY"]


async def test_a_step_is_stored_with_its_conversation_row_in_one_write(
    db: tuple[str, Path | None],
) -> None:
    """A step of a conversation not stored yet creates the row, as the stock layer did.

    The layer writes both in one transaction (the stock method read the thread first in
    a transaction of its own); what is stored must be what the stock layer stored.
    """
    _use_chainlit_context()
    url, _ = db
    await create_schema_async(url)
    layer = make_data_layer(url)
    thread_id = str(uuid.uuid4())
    question = _step(
        thread_id,
        "user_message",
        "Fiscal year not available",
        createdAt="2026-01-01T10:00:00Z",
        showInput=False,
    )
    await layer.create_step(question)
    rows = await _rows(url, 'SELECT "createdAt", "metadata", "name" FROM threads')
    assert len(rows) == 1
    created, metadata, name = rows[0]
    assert created
    assert name is None
    assert (json.loads(metadata) if isinstance(metadata, str) else metadata) == {}
    # The row is not rewritten by the conversation's later steps, nor a name lost.
    await layer.update_thread(thread_id, name="Fiscal year not available")
    question["output"] = "Fiscal year not available (edited)"
    await layer.update_step(question)
    await layer.create_step(
        _step(thread_id, "assistant_message", "answer", createdAt="2026-01-01T10:00:01Z")
    )
    thread = await layer.get_thread(thread_id)
    await layer.close()
    assert thread is not None
    assert thread["name"] == "Fiscal year not available"
    assert thread["createdAt"] == created
    steps = {s["id"]: s for s in thread["steps"]}
    assert len(steps) == 2
    assert steps[question["id"]]["output"] == "Fiscal year not available (edited)"
    assert steps[question["id"]]["showInput"] == "false"


async def test_a_failed_step_write_is_logged_not_raised(
    db: tuple[str, Path | None], caplog: pytest.LogCaptureFixture
) -> None:
    """As with the stock layer, a step that cannot be stored does not fail the reply."""
    _use_chainlit_context()
    url, _ = db
    await create_schema_async(url)
    layer = make_data_layer(url)
    broken = _step("not-a-uuid", "user_message", "hello", createdAt="2026-01-01T10:00:00Z")
    broken["name"] = None  # NOT NULL in the schema
    await layer.create_step(broken)
    assert await layer.execute_sql("SELECT nonsense FROM nowhere", {}) is None
    await layer.close()
    assert "not stored" in caplog.text
    assert "statement failed" in caplog.text


def test_sqlite_engines_keep_one_connection() -> None:
    """One SQLite connection per engine, a sized pool on PostgreSQL.

    Several SQLite connections of one process only wait for each other in SQLite's busy
    handler (sleeps of up to 100 ms).
    """
    from bot.persistence import engine_options

    sqlite = engine_options("sqlite+aiosqlite:////tmp/x/chat.db", pool_size=8)
    assert (sqlite["pool_size"], sqlite["max_overflow"]) == (1, 0)
    pg = engine_options("postgresql+asyncpg://u@h/db", pool_size=8)
    assert (pg["pool_size"], pg["max_overflow"]) == (8, 8)
