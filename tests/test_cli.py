from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app

pytestmark = pytest.mark.model

KINDS = {"error_code", "error_pattern", "faq", "guide"}
CITATION_TYPES = {
    "code": (str, type(None)),
    "title": str,
    "kind": str,
    "severity": (str, type(None)),
    "source": str,
    "section": (str, type(None)),
    "score": float,
}


@pytest.fixture(autouse=True)
def _shared_model(monkeypatch: pytest.MonkeyPatch, real_embedder):
    # The CLI loads the model on every command; reuse the session's copy to stay fast.
    # The subprocess test below covers real loading.
    monkeypatch.setattr("bot.service.load_embedder", lambda settings: real_embedder)


@pytest.fixture
def prebuilt(tmp_path: Path, real_bot, real_index_dir: Path) -> Path:
    target = tmp_path / "prebuilt-index"
    shutil.copytree(real_index_dir, target, symlinks=True)
    return target


@pytest.fixture
def empty_dir(tmp_path: Path) -> Path:
    return tmp_path / "fresh-index"


def _run(index_dir: Path, *args: str, input: str | None = None, **env: str):
    environment = {
        "SUPPORTBOT_INDEX__DIR": str(index_dir),
        "SUPPORTBOT_LOG_LEVEL": "WARNING",
        **env,
    }
    return CliRunner().invoke(app, list(args), env=environment, input=input)


def _one_json(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, stdout
    return json.loads(lines[0])


def _check_contract(data: dict) -> None:
    assert set(data) == {"question", "answer", "outcome", "citations", "related", "abstained"}
    assert data["outcome"] in ("answer", "suggest", "none")
    assert data["abstained"] is (data["outcome"] != "answer")
    assert isinstance(data["related"], list)
    for suggested in data["related"]:
        assert set(suggested) == set(CITATION_TYPES)
    assert isinstance(data["question"], str)
    assert isinstance(data["answer"], str)
    assert data["answer"]
    assert isinstance(data["citations"], list)
    assert isinstance(data["abstained"], bool)
    for citation in data["citations"]:
        assert set(citation) == set(CITATION_TYPES)
        for key, types in CITATION_TYPES.items():
            assert isinstance(citation[key], types), key
        assert citation["kind"] in KINDS
        assert re.fullmatch(r"[\w.-]+\.(txt|md):\d+", citation["source"])


def test_ingest_reports_counts_and_writes_manifest(empty_dir):
    result = _run(empty_dir, "ingest")
    assert result.exit_code == 0, result.output
    match = re.search(r"^Entries: (\d+) \((.+)\)$", result.stdout, re.M)
    assert match
    total = int(match.group(1))
    assert total >= 70
    per_kind = dict(part.split(": ") for part in match.group(2).split(", "))
    assert set(per_kind) <= KINDS
    assert {"error_code", "error_pattern", "faq"} <= set(per_kind)
    assert sum(int(v) for v in per_kind.values()) == total
    assert re.search(r"^Chunks: \d+$", result.stdout, re.M)
    manifest = json.loads((empty_dir / "current" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["entries"] == total


def test_ingest_with_empty_corpus_fails_cleanly(empty_dir, tmp_path):
    corpus = tmp_path / "empty-corpus"
    corpus.mkdir()
    # Brackets in a file name are printed as they are, not read as terminal markup.
    (corpus / "blank[v2].txt").write_text("", encoding="utf-8")
    result = _run(empty_dir, "ingest", "--corpus", str(corpus))
    assert result.exit_code == 1
    assert "No entries" in result.output
    assert "blank[v2].txt" in result.output
    assert "unchanged" in result.output
    assert "Traceback" not in result.output


def test_ask_json_numeric_code_follows_contract(prebuilt):
    result = _run(prebuilt, "ask", "--json", "what is error 2000637")
    assert result.exit_code == 0, result.output
    data = _one_json(result.stdout)
    _check_contract(data)
    assert data["question"] == "what is error 2000637"
    assert data["abstained"] is False
    first = data["citations"][0]
    assert first["code"] == "FORTNOX_CUSTOMER_NAME_EMPTY"
    assert first["kind"] == "error_code"
    assert first["source"].startswith("error-codes.txt:")
    assert "[FORTNOX_CUSTOMER_NAME_EMPTY]" in data["answer"]


def test_ask_json_message_cites_fiscal_year(prebuilt):
    result = _run(prebuilt, "ask", "--json", "Fiscal year not available")
    assert result.exit_code == 0, result.output
    data = _one_json(result.stdout)
    _check_contract(data)
    assert data["citations"][0]["code"] == "FORTNOX_FISCAL_YEAR"
    assert data["citations"][0]["severity"] == "Error"


def test_ask_json_faq_citation_has_no_code(prebuilt):
    result = _run(prebuilt, "ask", "--json", "How does payment date priority work?")
    data = _one_json(result.stdout)
    _check_contract(data)
    first = data["citations"][0]
    assert first["kind"] == "faq"
    assert first["code"] is None
    assert first["source"].startswith("faq.txt:")


def test_ask_json_out_of_scope_abstains(prebuilt):
    result = _run(prebuilt, "ask", "--json", "what's the weather in Paris tomorrow?")
    assert result.exit_code == 0, result.output
    data = _one_json(result.stdout)
    _check_contract(data)
    assert data["abstained"] is True
    assert data["outcome"] == "none"
    assert data["citations"] == []
    assert data["related"] == []
    assert "support@junipeer.io" in data["answer"]


def test_ask_reads_stdin(prebuilt):
    result = _run(prebuilt, "ask", "--json", "-", input="Fiscal year not available\n")
    assert result.exit_code == 0, result.output
    assert _one_json(result.stdout)["citations"][0]["code"] == "FORTNOX_FISCAL_YEAR"


def test_ask_plain_text_lists_citations(prebuilt):
    result = _run(prebuilt, "ask", "Fiscal year not available")
    assert result.exit_code == 0, result.output
    assert "**FORTNOX_FISCAL_YEAR**" in result.stdout
    assert "Citations:" in result.stdout
    assert re.search(r"- FORTNOX_FISCAL_YEAR \(error_code, error-codes\.txt:\d+", result.stdout)


def test_ask_severity_filter_applies(prebuilt):
    result = _run(prebuilt, "ask", "--json", "--severity", "Warning", "stock sync problems")
    data = _one_json(result.stdout)
    assert data["citations"]
    assert {c["severity"] for c in data["citations"]} == {"Warning"}


def test_ask_builds_missing_index(empty_dir):
    assert not empty_dir.exists()
    result = _run(empty_dir, "ask", "--json", "Fiscal year not available")
    assert result.exit_code == 0, result.output
    assert _one_json(result.stdout)["citations"][0]["code"] == "FORTNOX_FISCAL_YEAR"
    assert (empty_dir / "current" / "manifest.json").is_file()


def test_ask_without_index_and_auto_rebuild_off_fails_cleanly(empty_dir):
    result = _run(
        empty_dir, "ask", "--json", "Fiscal year not available", SUPPORTBOT_INDEX__AUTO_REBUILD="0"
    )
    assert result.exit_code == 1
    assert "supportbot ingest" in result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--severity", "Bogus"), "Unknown severity 'Bogus'"),
        (("--kind", "recipe"), "Unknown kind 'recipe'"),
        (("-k", "0"), "-k must be between 1 and 20"),
    ],
)
def test_ask_bad_options_exit_2_without_traceback(prebuilt, args, message):
    result = _run(prebuilt, "ask", *args, "Fiscal year not available")
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_draft_prints_reply_and_citations(prebuilt):
    ticket = "Our orders fail with 'Fiscal year not available' since January. What now?"
    result = _run(prebuilt, "draft", ticket)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Hi,")
    assert "[FORTNOX_FISCAL_YEAR]" not in result.stdout
    assert "Cited entries to check:" in result.stdout
    assert re.search(r"- FORTNOX_FISCAL_YEAR \(error-codes\.txt:\d+\)", result.stdout)


def test_draft_json_and_bad_style(prebuilt):
    result = _run(prebuilt, "draft", "--json", "--style", "formal", "Fiscal year not available")
    data = _one_json(result.stdout)
    assert data["reply"].startswith("Dear")
    assert data["citations"][0]["code"] == "FORTNOX_FISCAL_YEAR"
    bad = _run(prebuilt, "draft", "--style", "rude", "Fiscal year not available")
    assert bad.exit_code == 2
    assert "--style" in bad.output


@pytest.mark.parametrize("command", ["ask", "draft"])
@pytest.mark.parametrize("stdin", ["", " \n\t\x00 \n"], ids=["empty", "blank"])
def test_empty_input_is_an_error_not_an_answer(prebuilt, command, stdin):
    what = "ticket" if command == "draft" else "question"
    for args in ([command], [command, "--json", "-"], [command, ""]):
        result = _run(prebuilt, *args, input=stdin)
        assert result.exit_code == 2, result.output
        assert f"No {what} given" in result.stderr
        # Nothing a script could take for an answer or a draft to send.
        assert result.stdout == ""
        assert "Please type a question" not in result.output


@pytest.mark.parametrize("command", ["ask", "draft"])
def test_binary_input_is_refused(prebuilt, command):
    for data in (Path("/bin/ls").read_bytes()[:200_000], os.urandom(4096)):
        result = CliRunner().invoke(
            app,
            [command, "--json", "-"],
            env={"SUPPORTBOT_INDEX__DIR": str(prebuilt), "SUPPORTBOT_LOG_LEVEL": "WARNING"},
            input=data,
        )
        assert result.exit_code == 2, result.output
        assert "Standard input is not text" in result.stderr
        assert result.stdout == ""


@pytest.mark.parametrize("command", ["ask", "draft"])
def test_a_long_paste_is_said_to_be_cut_in_plain_words(prebuilt, command):
    paste = "Fiscal year not available. " + "Here is the whole log of the night. " * 620
    assert len(paste) > 22_000
    for args in ([command, "-"], [command, "--json", "-"]):
        result = _run(prebuilt, *args, input=paste)
        assert result.exit_code == 0, result.output
        assert "only its beginning" in result.stderr
        assert "token" not in result.output.casefold()


def test_draft_styles_compose_on_the_command_line(prebuilt):
    ticket = 'Hej, all our orders fail with "Räkenskapsår saknas" since yesterday … /Anna'
    formal = _one_json(_run(prebuilt, "draft", "--json", "--style", "formal", ticket).stdout)
    both = _run(prebuilt, "draft", "--json", "--style", "shorter+formal", ticket)
    assert both.exit_code == 0, both.output
    reply = _one_json(both.stdout)["reply"]
    assert reply.startswith("Dear Anna,")
    assert len(reply) <= len(formal["reply"]) / 2
    assert "> Räkenskapsår saknas" in formal["reply"]


def _console_script(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the installed ``supportbot`` command in a fresh process, settings from ``env`` only."""
    script = Path(sys.executable).parent / "supportbot"
    assert script.is_file()
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("SUPPORTBOT_")}
    return subprocess.run(
        [str(script), *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**clean, "SUPPORTBOT_LOG_LEVEL": "WARNING", **env},
        cwd=cwd,
        timeout=300,
        check=False,
    )


def test_real_console_script(prebuilt, tmp_path):
    # At the default log level (INFO), as a user runs it.
    completed = _console_script(
        tmp_path,
        "ask",
        "--json",
        "Fiscal year not available",
        SUPPORTBOT_INDEX__DIR=str(prebuilt),
        SUPPORTBOT_LOG_LEVEL="INFO",
    )
    assert completed.returncode == 0, completed.stderr
    data = _one_json(completed.stdout)
    _check_contract(data)
    assert data["citations"][0]["code"] == "FORTNOX_FISCAL_YEAR"
    assert "Traceback" not in completed.stderr
    # faiss's loader reports its failed AVX2 import on machines without that build: noise.
    assert "swigfaiss" not in completed.stderr
    assert "faiss.loader" not in completed.stderr


def test_faiss_loader_errors_are_still_shown(prebuilt):
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    try:
        result = _run(prebuilt, "ask", "--json", "Fiscal year not available")
        assert result.exit_code == 0, result.output
        loader = logging.getLogger("faiss.loader")
        # Its INFO chatter is off even when everything else logs at INFO; its errors are not.
        assert not loader.isEnabledFor(logging.INFO)
        assert loader.isEnabledFor(logging.WARNING)
    finally:
        root.setLevel(level)


def test_real_ingest_process_flushes_its_output_and_exit_status(tmp_path):
    # The console script skips torch's slow interpreter teardown once torch is loaded:
    # the report must still reach stdout, the index must be complete, and a failure must
    # still exit non-zero.
    out = tmp_path / "vectorstore"
    built = _console_script(tmp_path, "ingest", "--out", str(out))
    assert built.returncode == 0, built.stderr
    assert "Entries: 74" in built.stdout
    assert "Took" in built.stdout
    manifest = json.loads((out / "current" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["entries"] == 74

    empty = tmp_path / "empty-corpus"
    empty.mkdir()
    failed = _console_script(
        tmp_path, "ingest", "--corpus", str(empty), "--out", str(tmp_path / "other")
    )
    assert failed.returncode == 1
    assert "No entries found" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_real_process_failing_after_torch_loaded_keeps_its_exit_status(prebuilt, tmp_path):
    # Once torch is imported the command leaves through os._exit (skipping torch's slow
    # teardown): a failing gate must still exit 1, with its report on stdout.
    questions = tmp_path / "one.jsonl"
    questions.write_text(
        json.dumps(
            {"id": "q1", "question": "how do I contact support?", "expected": ["NOT_AN_ENTRY"]}
        )
        + "\n",
        encoding="utf-8",
    )
    failed = _console_script(
        tmp_path,
        "eval",
        "--file",
        str(questions),
        "--min-hit1",
        "0.5",
        SUPPORTBOT_INDEX__DIR=str(prebuilt),
        SUPPORTBOT_EMBEDDING__QUERY_ENCODER="sentence-transformers",
        SUPPORTBOT_LOG_LEVEL="INFO",
    )
    assert "Loaded embedding model" in failed.stderr + failed.stdout  # torch was loaded
    assert failed.returncode == 1, failed.stderr
    assert "hit@1" in failed.stdout
    assert "Traceback" not in failed.stderr


def test_eval_with_a_bad_file_or_destination_exits_2(prebuilt, tmp_path):
    questions = tmp_path / "one.jsonl"
    questions.write_text('{"id": "a", "question": "vat error fortnox"}\n', encoding="utf-8")
    for args, message in (
        (["--file", str(tmp_path)], "is not a file"),
        (["--file", str(questions), "--output", str(tmp_path)], "it is a folder"),
    ):
        result = _run(prebuilt, "eval", *args)
        assert result.exit_code == 2, result.output
        assert isinstance(result.exception, SystemExit)
        assert message in result.output


def test_chat_with_an_unusable_database_stops_before_serving(prebuilt):
    result = _run(prebuilt, "chat", "--port", "8799", SUPPORTBOT_CHAT__DATABASE_URL="nonsense://")
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Cannot use the chat database nonsense://" in result.output
