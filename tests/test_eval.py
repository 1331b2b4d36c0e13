"""The eval set as a regression test: the bot must keep these figures on evals/questions.jsonl.

The thresholds are the ones this bot reaches today (see the README's Evals section);
a change that lowers any of them fails CI.
"""

import json
import re

import pytest

from evals.runner import (
    check_thresholds,
    load_questions,
    normalize_label,
    run_questions,
    summarize,
)
from tests.conftest import REPO

pytestmark = pytest.mark.model

QUESTIONS = REPO / "evals" / "questions.jsonl"
THRESHOLDS = {
    "hit@1": 0.96,
    "mrr": 0.97,
    # Below the 0.9 target: "related but not covered" questions (Salesforce API limits,
    # switching the app's language) still find a plausible entry. See the README.
    "abstention_recall": 0.78,
    "false_abstention": 0.03,
}


@pytest.fixture(scope="module")
def results(real_bot):
    return run_questions(real_bot, load_questions(QUESTIONS))


def test_eval_set_is_large_and_covers_every_entry(real_bot):
    items = load_questions(QUESTIONS)
    assert len(items) >= 150
    assert sum("oos" in q.tags for q in items) >= 25
    assert sum(bool(q.history) for q in items) >= 5
    expected = {normalize_label(e) for q in items for e in q.expected}
    labels = {normalize_label(e.code or e.title) for e in real_bot.index.entries}
    assert labels <= expected, f"entries without an eval question: {labels - expected}"
    assert expected <= labels, f"expected labels that are not entries: {expected - labels}"


def test_eval_meets_thresholds(results):
    summary = summarize(results)
    failures = check_thresholds(summary, THRESHOLDS)
    assert not failures, json.dumps(summary.metrics, indent=1)
    assert summary.metrics["fact_recall"] >= 0.9


def test_threshold_check_fails_when_metric_drops(results):
    summary = summarize(results)
    raised = {name: 1.01 for name in THRESHOLDS if name != "false_abstention"}
    assert len(check_thresholds(summary, raised)) == len(raised)
    assert check_thresholds(summary, {"false_abstention": -0.01})


def test_results_lines_follow_the_ask_contract(results):
    line = results[0].to_json()
    assert {"id", "question", "answer", "citations", "abstained", "latency_ms", "hit_rank"} <= set(
        line
    )
    json.dumps(line, ensure_ascii=False)


def test_compare_and_report_side_by_side(real_bot, tmp_path, capsys):
    from evals.runner import run_cli

    subset = tmp_path / "subset.jsonl"
    lines = QUESTIONS.read_text(encoding="utf-8").splitlines()
    subset.write_text("\n".join(lines[:12] + lines[-6:]) + "\n", encoding="utf-8")
    output = tmp_path / "results.jsonl"
    ok = run_cli(
        real_bot,
        subset,
        output=output,
        compare=True,
        report=tmp_path / "report",
        thresholds={"hit@1": 1.01},
    )
    assert ok is False  # an unreachable threshold fails the run (non-zero exit in the CLI)
    printed = capsys.readouterr().out
    for mode in ("bm25", "dense", "hybrid"):
        assert mode in printed
    assert "FAIL" in printed
    report = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "| hybrid |" in report
    assert "Worst misses" in report
    for chart in ("retrievers.png", "tags.png", "latency.png"):
        assert (tmp_path / "report" / chart).read_bytes().startswith(b"\x89PNG")
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 18
    assert all("hit_rank" in row for row in rows)


def test_a_threshold_sweep_shows_the_abstention_trade_off(real_bot, tmp_path, capsys):
    from evals.runner import load_questions, run_cli, sweep_confidence

    subset = tmp_path / "subset.jsonl"
    lines = QUESTIONS.read_text(encoding="utf-8").splitlines()
    in_scope = [line for line in lines if '"expected": []' not in line]
    out_of_scope = [line for line in lines if '"expected": []' in line]
    subset.write_text("\n".join(in_scope[:8] + out_of_scope[:4]) + "\n", encoding="utf-8")
    swept = sweep_confidence(real_bot, load_questions(subset), [-10.0, 10.0, 10, 0.8, 0.8000001])
    # Repeats run once; values that differ only in a late digit keep their own column.
    assert list(swept) == ["-10.0", "10.0", "0.8", "0.8000001"]
    never, always = swept["-10.0"].metrics, swept["10.0"].metrics
    # Never abstaining answers every out-of-scope question; always abstaining refuses every
    # real question except exact lookups (an error code or message is never refused).
    assert never["abstention_recall"] == 0.0
    assert never["false_abstention"] == 0.0
    assert always["abstention_recall"] == 1.0
    assert 0.0 < always["false_abstention"] < 1.0
    # The sweep leaves the bot's own setting alone.
    assert real_bot.settings.retrieval.min_confidence == 0.8

    assert run_cli(real_bot, subset, sweep=[0.8, 10.0], report=tmp_path / "report")
    printed = "".join(capsys.readouterr().out.split())  # rich wraps titles to the table
    assert "Abstentionthresholdmin_confidence(hybrid;setnow:0.8)" in printed
    # The report keeps the sweep, one row per threshold.
    report = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    section = report.split("## Abstention threshold min_confidence (hybrid)")[1].split("##")[0]
    assert "| 0.8 | " in section
    assert "| 10.0 | " in section


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"id": "a", "question": "vat"}\nnot json\n', ":2: not a valid eval item"),
        (b"[1, 2]\n", "an eval item is a JSON object"),
        (b'{"id": "a"}\n', "missing 'question'"),
        (b'{"id": "a", "question": ["x"]}\n', '"question" must be a string'),
        (b'{"id": "a", "question": "vat", "expected": "FORTNOX_VAT"}\n', '"expected" must be'),
        (b'{"id": "a", "question": "vat", "history": [1]}\n', '"history" must be a list'),
        (b'{"id": "a", "question": "x"}\n{"id": "a", "question": "y"}\n', "duplicate id"),
        (b"\xff\xfe\x00garbage", "is not UTF-8 text"),
        (b"\n\n", "holds no questions"),
    ],
)
def test_malformed_eval_files_are_one_clear_error(tmp_path, content, message):
    from evals.runner import EvalError

    path = tmp_path / "questions.jsonl"
    path.write_bytes(content)
    with pytest.raises(EvalError, match=re.escape(message)):
        load_questions(path)


def test_eval_file_that_is_a_folder_or_missing(tmp_path):
    from evals.runner import EvalError

    with pytest.raises(EvalError, match="is not a file"):
        load_questions(tmp_path)
    with pytest.raises(EvalError, match="does not exist"):
        load_questions(tmp_path / "missing.jsonl")


def test_unwritable_destinations_fail_before_the_run(real_bot, tmp_path):
    from evals.runner import EvalError, run_cli

    questions = tmp_path / "one.jsonl"
    questions.write_text('{"id": "a", "question": "vat error fortnox"}\n', encoding="utf-8")
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me", encoding="utf-8")

    class NeverAsked:
        settings = real_bot.settings

        def with_retrieval_mode(self, mode):
            raise AssertionError("the eval ran although its output cannot be written")

    cases = [
        ({"output": tmp_path}, "it is a folder"),
        ({"output": blocker / "results.jsonl"}, f"{blocker} is a file"),
        ({"report": blocker}, "it is a file"),
        ({"report": blocker / "report"}, f"{blocker} is a file"),
    ]
    for destination, message in cases:
        with pytest.raises(EvalError, match=re.escape(message)):
            run_cli(NeverAsked(), questions, **destination)
    assert blocker.read_text(encoding="utf-8") == "keep me"
