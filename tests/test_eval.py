"""The eval set as a regression test: the bot must keep these figures on evals/questions.jsonl.

The thresholds are the ones this bot reaches today (see the README's Evals section);
a change that lowers any of them fails CI.
"""

import json

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
    "hit@1": 0.95,
    "mrr": 0.95,
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
