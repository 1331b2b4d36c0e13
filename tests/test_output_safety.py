r"""Output that scripts read: never folded at the terminal width, never lost to unencodable text.

Commands run as real processes with a long temporary path and ``COLUMNS=40`` (the shape that
once folded "is not a file" across two lines), and with user text holding lone surrogates
(JSON escapes such as ``\ud800``, which real eval exports and chat clients do send).
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.persistence import create_schema_async, fetch_abstentions, fetch_feedback, make_data_layer
from bot.safe_text import CliConsole, utf8_safe, utf8_safe_data
from evals.runner import EvalRunError, load_questions, run_cli
from tests.test_cli import _console_script
from tests.test_persistence import _step, _use_chainlit_context

REPLACEMENT = "\ufffd"
# Ends up in folder names: far longer than any terminal, so any folding shows.
LONG = "a-very-long-folder-name-" * 6

# User text as it reaches exports: lone surrogates (both halves, and a pair split in two),
# controls, bidi overrides, markup, CSV and SQL metacharacters, Nordic letters, emoji.
HOSTILE = {
    "lone-high": "Fiscal year \ud800 not available",
    "lone-low": "\udfff",
    "split-pair": "smile \ud83d\ude00 please",
    "undecodable-argv": b"\xff\xfe order 1001".decode("utf-8", "surrogateescape"),
    "controls": "tab\there\x00nul\x1b[31mred\x1b[0m\r\nline",
    "bidi": "\u202eerror 2000637\u202c",
    "markup": "[red]not markup[/red] <b>bold</b> **stars**",
    "csv": '=HYPERLINK("http://x/?"&A1,"y"), "quoted", semi;colon',
    "sql": "'; DROP TABLE steps; --",
    "nordic": "Räkenskapsår saknas – Kundens navn mangler",
    "emoji": "😀" * 50,
    "empty": "",
}


def _script(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed ``supportbot`` command with a 40-column terminal width."""
    return _console_script(cwd, *args, **{"COLUMNS": "40", **env})


@pytest.fixture
def deep(tmp_path: Path) -> Path:
    folder = tmp_path / LONG / LONG
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def deep_index(deep: Path, real_bot, real_index_dir: Path) -> Path:
    target = deep / "vectorstore"
    shutil.copytree(real_index_dir, target, symlinks=True)
    return target


def _one_line_with(output: str, *parts: str) -> str:
    """The single line holding every part (so nothing was folded between them)."""
    lines = [line for line in output.splitlines() if all(p in line for p in parts)]
    assert len(lines) == 1, output
    return lines[0]


# -- terminal width ---------------------------------------------------------------------


def test_console_is_unbounded_off_a_terminal_and_fitted_on_one() -> None:
    piped = CliConsole(file=io.StringIO())
    piped.print("word " * 100)
    assert len(piped.file.getvalue().splitlines()) == 1
    terminal = CliConsole(file=io.StringIO(), force_terminal=True, width=40)
    terminal.print("word " * 100)
    assert len(terminal.file.getvalue().splitlines()) > 1


@pytest.mark.model
def test_commands_print_whole_lines_with_a_long_path_and_40_columns(deep: Path, deep_index: Path):
    env = {"SUPPORTBOT_INDEX__DIR": str(deep_index)}

    folder = _script(deep, "eval", "--file", str(deep), **env)
    assert folder.returncode == 2, folder.stderr
    _one_line_with(folder.stderr, str(deep), "is not a file")

    questions = deep / "one.jsonl"
    questions.write_text('{"id": "a", "question": "vat error fortnox"}\n', encoding="utf-8")
    dest = _script(deep, "eval", "--file", str(questions), "--output", str(deep), **env)
    assert dest.returncode == 2, dest.stderr
    _one_line_with(dest.stderr, str(deep), "it is a folder")

    # Rich folds a table's title to the table's width: the path must still be whole.
    ran = _script(deep, "eval", "--file", str(questions), **env)
    assert ran.returncode == 0, ran.stderr
    _one_line_with(ran.stdout, f"Eval: {questions} (1 questions)")

    asked = _script(deep, "ask", "Fiscal year not available", **env)
    assert asked.returncode == 0, asked.stderr
    line = _one_line_with(asked.stdout, "FORTNOX_FISCAL_YEAR (error_code,")
    assert re.search(r"error-codes\.txt:\d+, score \d\.\d{3}\)$", line), line

    empty = deep / "empty-corpus"
    empty.mkdir()
    ingest = _script(deep, "ingest", "--corpus", str(empty), "--out", str(deep / "other"), **env)
    assert ingest.returncode == 1, ingest.stderr
    _one_line_with(ingest.stderr, "No entries found", str(empty))

    database = f"sqlite+aiosqlite:///{questions}/chat.db"
    unusable = _script(deep, "feedback", SUPPORTBOT_CHAT__DATABASE_URL=database, **env)
    assert unusable.returncode == 1, unusable.stderr
    _one_line_with(unusable.stderr, "Cannot use the chat database", str(questions))

    bogus = _script(deep, "ask", "--no-such-option", "x", **env)
    assert bogus.returncode == 2
    _one_line_with(bogus.stderr, "No such option: --no-such-option")
    for result in (folder, dest, asked, ingest, unusable, bogus):
        assert "Traceback" not in result.stderr


def test_eval_table_rows_are_not_folded_in_process(tmp_path: Path) -> None:
    # CliRunner output is not a terminal either: a long path in the table title stays whole.
    bad = tmp_path / LONG / "missing.jsonl"
    result = CliRunner().invoke(app, ["eval", "--file", str(bad)], env={"COLUMNS": "40"})
    assert result.exit_code == 2
    _one_line_with(result.output, str(bad), "does not exist")


# -- lone surrogates and hostile text in eval files ---------------------------------------


def _eval_file(path: Path, questions: dict[str, str]) -> Path:
    lines = [
        json.dumps({"id": name, "question": text, "tags": [name]}, ensure_ascii=True)
        for name, text in questions.items()
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_eval_file_with_surrogates_is_loaded_with_replacements(tmp_path: Path, caplog) -> None:
    items = load_questions(_eval_file(tmp_path / "q.jsonl", HOSTILE))
    assert [i.id for i in items] == list(HOSTILE)
    by_id = {i.id: i for i in items}
    assert by_id["lone-high"].question == f"Fiscal year {REPLACEMENT} not available"
    assert by_id["split-pair"].question == "smile 😀 please"
    for item in items:
        item.question.encode("utf-8")
    assert "q.jsonl:1: characters that cannot be written as UTF-8" in caplog.text


@pytest.mark.model
def test_eval_with_a_lone_surrogate_writes_every_line_and_the_report(tmp_path: Path, real_bot):
    # The case that used to die with a UnicodeEncodeError halfway through writing results.
    questions = _eval_file(
        tmp_path / "export.jsonl",
        {"before": "Fiscal year not available", "bad": "what is \ud800 error 2000637", **HOSTILE},
    )
    out, report = tmp_path / "results.jsonl", tmp_path / "report"
    run_cli(real_bot, questions, output=out, report=report)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["before", "bad", *HOSTILE]
    bad = json.loads(lines[1])
    assert bad["question"] == f"what is {REPLACEMENT} error 2000637"
    assert bad["citations"][0]["code"] == "FORTNOX_CUSTOMER_NAME_EMPTY"
    assert f"what is {REPLACEMENT} error 2000637" in (report / "report.md").read_text("utf-8")


@pytest.mark.model
def test_eval_console_script_with_a_surrogate_exits_0_and_says_so(tmp_path: Path, deep_index):
    questions = _eval_file(tmp_path / "q.jsonl", {"a": "Fiscal year \ud800 not available"})
    out = tmp_path / "out.jsonl"
    done = _script(
        tmp_path,
        "eval",
        "--file",
        str(questions),
        "--output",
        str(out),
        SUPPORTBOT_INDEX__DIR=str(deep_index),
        SUPPORTBOT_LOG_LEVEL="DEBUG",
    )
    assert done.returncode == 0, done.stderr
    assert "lone surrogates" in done.stderr
    assert "Traceback" not in done.stderr
    assert "Logging error" not in done.stderr
    assert (
        json.loads(out.read_text("utf-8"))["question"] == f"Fiscal year {REPLACEMENT} not available"
    )


class _FailsOn:
    """A bot that answers like the real one but raises on one question."""

    def __init__(self, bot, question: str) -> None:
        self._bot, self._question = bot, question
        self.settings = bot.settings

    def with_retrieval_mode(self, mode: str) -> _FailsOn:
        return _FailsOn(self._bot.with_retrieval_mode(mode), self._question)

    def answer(self, question: str, **kwargs):
        if question == self._question:
            raise RuntimeError("the index went away")
        return self._bot.answer(question, **kwargs)


@pytest.mark.model
def test_a_failing_question_keeps_the_lines_already_answered(tmp_path: Path, real_bot) -> None:
    questions = _eval_file(
        tmp_path / "q.jsonl",
        {"one": "Fiscal year not available", "two": "error 2000637", "three": "boom", "four": "x"},
    )
    out = tmp_path / "results.jsonl"
    with pytest.raises(EvalRunError, match="'three' could not be answered"):
        run_cli(_FailsOn(real_bot, "boom"), questions, output=out)
    kept = [json.loads(line)["id"] for line in out.read_text("utf-8").splitlines()]
    assert kept == ["one", "two"]


@pytest.mark.model
def test_a_failing_question_exits_1_with_one_line(tmp_path: Path, monkeypatch, real_bot) -> None:
    questions = _eval_file(tmp_path / "q.jsonl", {"one": "Fiscal year not available", "two": "x"})
    out = tmp_path / "results.jsonl"
    monkeypatch.setattr("bot.cli._load_bot", lambda settings: _FailsOn(real_bot, "x"))
    result = CliRunner().invoke(app, ["eval", "--file", str(questions), "--output", str(out)])
    assert result.exit_code == 1, result.output
    assert "Question 'two' could not be answered (RuntimeError: the index went away)" in (
        result.output
    )
    assert len(out.read_text("utf-8").splitlines()) == 1


def test_an_unexpected_failure_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    # In a process of its own: main() leaves through os._exit once torch is loaded.
    code = (
        "import bot.cli as cli\n"
        "def explode():\n"
        "    raise RuntimeError('disk on fire \\ud800')\n"
        "cli.app = explode\n"
        "cli.main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "failed unexpectedly (RuntimeError: disk on fire" in done.stderr
    assert "Traceback" not in done.stderr


# -- exports of chat data: feedback and gaps -----------------------------------------------


async def test_hostile_chat_text_is_stored_and_exported_whole(tmp_path: Path) -> None:
    """Every hostile message, thread name and comment is saved, and every export encodes."""
    from chainlit.types import Feedback

    _use_chainlit_context()
    url = f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}"
    await create_schema_async(url)
    layer = make_data_layer(url)
    for n, (name, text) in enumerate(HOSTILE.items()):
        thread_id = str(uuid.uuid4())
        await layer.update_thread(thread_id, name=text or name, tags=["Merchant"])
        asked = _step(thread_id, "user_message", text, createdAt=f"2026-01-01T10:{n:02d}:00Z")
        abstained = _step(
            thread_id,
            "assistant_message",
            f"I could not find this: {text}",
            createdAt=f"2026-01-01T10:{n:02d}:01Z",
            metadata={"kind": "answer", "question": text or name, "abstained": True},
        )
        for step in (asked, abstained):
            await layer.create_step(step)
        await layer.upsert_feedback(
            Feedback(forId=abstained["id"], threadId=thread_id, value=0, comment=text)
        )
    await layer.close()

    stored = {row["question"] for row in fetch_abstentions(url)}
    assert stored == {utf8_safe(text or name) for name, text in HOSTILE.items()}
    feedback = fetch_feedback(url)
    assert sorted(row["comment"] for row in feedback) == sorted(
        utf8_safe(t) for t in HOSTILE.values()
    )
    assert feedback == utf8_safe_data(feedback)

    runner, env = CliRunner(), {"SUPPORTBOT_CHAT__DATABASE_URL": url, "COLUMNS": "40"}
    as_json = runner.invoke(app, ["feedback", "--json"], env=env)
    assert as_json.exit_code == 0, as_json.output
    assert len(json.loads(as_json.stdout)) == len(HOSTILE)
    as_csv = runner.invoke(app, ["feedback", "--csv"], env=env)
    assert as_csv.exit_code == 0, as_csv.output
    assert len(list(csv.DictReader(io.StringIO(as_csv.stdout)))) == len(HOSTILE)
    plain = runner.invoke(app, ["feedback"], env=env)
    assert plain.exit_code == 0, plain.output
    assert f"Fiscal year {REPLACEMENT} not available" in plain.stdout
    gaps_json = runner.invoke(app, ["gaps", "--json"], env=env)
    assert gaps_json.exit_code == 0, gaps_json.output
    (group,) = json.loads(gaps_json.stdout)
    assert group["count"] == len(HOSTILE)
    assert len(group["questions"]) == len(HOSTILE)
    gaps = runner.invoke(app, ["gaps"], env=env)
    assert gaps.exit_code == 0, gaps.output
    for result in (as_json, as_csv, plain, gaps_json, gaps):
        result.stdout.encode("utf-8")
        assert "Traceback" not in result.output


@pytest.mark.model
def test_ask_json_with_hostile_questions_prints_one_encodable_object(deep_index: Path) -> None:
    runner = CliRunner()
    env = {"SUPPORTBOT_INDEX__DIR": str(deep_index), "SUPPORTBOT_LOG_LEVEL": "WARNING"}
    for name, text in HOSTILE.items():
        result = runner.invoke(app, ["ask", "--json", text or "-"], env=env, input="")
        if name in ("empty", "lone-low"):
            # Nothing left to answer (a lone surrogate is replaced, then dropped as noise).
            assert result.exit_code == 2, (name, result.output)
            assert "No question given" in result.stderr
            continue
        assert result.exit_code == 0, (name, result.output)
        (line,) = [line for line in result.stdout.splitlines() if line.strip()]
        data = json.loads(line)
        line.encode("utf-8")
        assert data["question"] == utf8_safe(data["question"])
