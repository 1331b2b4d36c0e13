"""The eval set as a regression test: every question's outcome is pinned, the targets judged.

Thresholds are tuned on the set's "tune" half and the targets are judged on the
"held_out" half (``evals.runner.split_of``), so they are not fit to the figures they
are judged by. Each question must get its expected outcome: an in-scope question is
answered with an expected entry first, an out-of-scope one is not answered. Questions
that do not, today, are listed by id in ``KNOWN_MISSES``; the list must stay exact, so
a fix (or a new miss) shows up as a failure that asks for the list to be updated.
"""

import json
import re

import pytest

from evals.runner import (
    Result,
    check_thresholds,
    load_questions,
    normalize_label,
    run_questions,
    split_of,
    summarize,
)
from tests.conftest import REPO

pytestmark = pytest.mark.model

QUESTIONS = REPO / "evals" / "questions.jsonl"

# The targets (README, Evals). Rates of mistakes are maximums, the others minimums.
TARGETS = {
    "hit@1": 0.97,
    "found": 0.99,
    "oos_answered": 0.05,
    "in_scope_none": 0.01,
    "in_scope_suggest": 0.05,
}
# Figures measured on the held-out half at this commit; a change may not make them worse.
# (The held-out half has 177 questions; the 31 written before the third round of tuning
# are the hardest: on the 140 older ones hit@1 is 0.934, found 1.0, in-scope suggest 6/106
# and out of scope answered 4/34.)
HELD_OUT_FLOOR = {
    "hit@1": 0.87,
    "found": 0.96,
    "oos_answered": 0.25,
    "in_scope_none": 0.0,
    "in_scope_suggest": 0.11,
    "fact_recall": 0.91,
}
TARGETS_NOT_MET = {"hit@1", "found", "oos_answered", "in_scope_suggest"}

# id → what happens instead of the expected outcome (see the README's Evals section).
KNOWN_MISSES = {
    # in scope, suggested instead of answered
    "code-error-message-2": "suggest (ERROR_MESSAGE suggested first)",
    "faq-contact-2": "suggest (contact FAQ suggested first)",
    "faq-custom-1": "suggest (expected FAQ suggested first)",
    "faq-pricing-2": "suggest (pricing FAQ suggested first)",
    "faq-morehelp-2": "suggest (expected FAQ suggested first)",
    "faq-cache-wipe-1": "suggest (clear-cache FAQ suggested first)",
    "faq-stopped-red-1": "suggest (stopped-syncing FAQ suggested first)",
    "agent-quit-working-1": "suggest (stopped-syncing FAQ suggested first)",
    "vocab-push-over-1": "suggest (expected FAQ suggested first)",
    "niche-sitoo-key-1": "suggest (stopped-syncing FAQ suggested first)",
    "niche-tripletex-custom-1": "suggest (custom-integrations FAQ suggested first)",
    "niche-monitor-erp-1": "suggest (custom-integrations FAQ suggested third)",
    "faq-contact-ring-1": "suggest (contact FAQ not among the suggestions)",
    "faq-connectors-shipping-1": "suggest (connectors FAQ not among the suggestions)",
    "niche-pyramid-custom-1": "suggest (custom-integrations FAQ not among the suggestions)",
    "walk-cost-1": "suggest (pricing FAQ suggested first)",
    "walk-magento-1": "suggest (connectors FAQ suggested first)",
    # in scope, answered from another entry first
    "vocab-gbp-1": "answered with FORTNOX_CURRENCY_MISMATCH first",
    "faq-pricing-monthly-1": "answered with the multiple-stores billing FAQ first",
    "faq-history-last-year-1": "answered from FORTNOX_FISCAL_YEAR",
    "faq-stopped-monday-1": "answered from the Tips section",
    "faq-stopped-errors-out-1": "answered from the Tips section",
    "faq-stopped-dead-1": "answered from the Visma json-decode entry",
    "vocab-end-up-1": "answered from the Shopify draft-orders entry",
    "walk-not-syncing-1": "answered from FORTNOX_CUSTOMER_NAME_EMPTY (missing-orders FAQ third)",
    # out of scope, answered
    "oos-related-11": "answered from the clear-cache FAQ",
    "near-miss-nonprofit-1": "answered from the pricing FAQ",
    "near-miss-email-1": "answered from the contact FAQ",
    "near-miss-rename-1": "answered from the custom-integrations FAQ",
    "near-miss-statuspage-1": "answered from the contact FAQ",
    "near-miss-logs-kept-1": "answered from the historical-data FAQ",
    "near-miss-pay-method-1": "answered from the payout-fee entry",
    "near-miss-remove-user-1": "answered from the contact FAQ",
    "near-miss-switch-erp-1": 'answered from "Invalid grant"',
    "near-miss-stop-using-1": "answered from the cached-data entry",
    "near-miss-own-api-1": "answered from the custom-integrations FAQ",
    "near-miss-app-language-1": "answered from the custom-integrations FAQ",
    "near-miss-email-alert-1": "answered from the contact FAQ",
    "near-miss-delete-connector-data-1": "answered from the connectors FAQ",
    "near-miss-invoice-for-fee-1": "answered from the pricing FAQ",
    "general-fortnox-license-price-1": "answered from FORTNOX_COST_CENTER_AUTH",
    "walk-connect-setup-1": "answered from the multiple-stores billing FAQ",
    "walk-data-stored-1": "answered from the check-if-synced FAQ",
}


@pytest.fixture(scope="module")
def results(real_bot):
    return run_questions(real_bot, load_questions(QUESTIONS))


def _as_expected(r: Result) -> bool:
    if r.item.expected:
        return r.outcome == "answer" and r.hit_rank == 1
    return r.outcome != "answer"


def test_eval_set_is_large_and_covers_every_entry(real_bot):
    items = load_questions(QUESTIONS)
    assert len(items) >= 250
    assert sum("oos" in q.tags for q in items) >= 60
    assert sum(bool(q.history) for q in items) >= 5
    for tag in ("near-miss", "vocabulary", "typo-message", "general-knowledge"):
        assert sum(tag in q.tags for q in items) >= 12, tag
    expected = {normalize_label(e) for q in items for e in q.expected}
    labels = {normalize_label(e.code or e.title) for e in real_bot.index.entries}
    assert labels <= expected, f"entries without an eval question: {labels - expected}"
    assert expected <= labels, f"expected labels that are not entries: {expected - labels}"


def test_the_halves_are_fixed_and_balanced():
    items = load_questions(QUESTIONS)
    halves = {q.id: q.split for q in items}
    assert {q.split for q in items} == {"tune", "held_out"}
    # The half depends on the id alone: adding or reordering questions moves none.
    assert halves["code-fiscal-year-1"] == split_of("code-fiscal-year-1")
    for tag in ("oos", "near-miss", "vocabulary", "typo-message", "general-knowledge"):
        tagged = [q for q in items if tag in q.tags]
        assert 0.25 <= sum(q.split == "tune" for q in tagged) / len(tagged) <= 0.75, tag


def test_every_question_gets_its_outcome_except_the_known_misses(results):
    misses = {r.item.id: (r.outcome, r.hit_rank) for r in results if not _as_expected(r)}
    assert set(misses) == set(KNOWN_MISSES), {
        "new misses": {i: misses[i] for i in set(misses) - set(KNOWN_MISSES)},
        "fixed (remove from KNOWN_MISSES)": sorted(set(KNOWN_MISSES) - set(misses)),
    }


def test_retyped_messages_are_exact_hits(results):
    retyped = [r for r in results if "typo-message" in r.item.tags]
    assert retyped
    for r in retyped:
        assert r.answer.citations[0].score == 1.0, r.item.id
        assert r.hit_rank == 1, r.item.id


def test_suggestions_name_what_is_missing_and_the_route_to_a_human(results):
    by_id = {r.item.id: r for r in results}
    cancel = by_id["oos-related-2"].answer
    assert cancel.outcome == "suggest"
    assert "no information on cancelling your Junipeer subscription" in cancel.text
    assert "“subscription”" in cancel.text
    assert 2 <= len(cancel.related) <= 3
    assert "support@junipeer.io" in cancel.text
    assert by_id["oos-gibberish-1"].answer.outcome == "none"
    assert by_id["oos-gibberish-1"].answer.related == ()


@pytest.mark.parametrize("half", ["held_out", "tune"])
def test_no_worse_than_measured(results, half):
    summary = summarize([r for r in results if r.item.split == half])
    failures = check_thresholds(summary, {k: v for k, v in HELD_OUT_FLOOR.items()})
    if half == "held_out":
        assert not failures, json.dumps(summary.metrics, indent=1)
    else:
        # The tune half is what the thresholds were chosen on: it does at least as well.
        assert summary.metrics["in_scope_suggest"] <= HELD_OUT_FLOOR["in_scope_suggest"]


@pytest.mark.parametrize(
    "metric",
    [
        pytest.param(
            name,
            marks=pytest.mark.xfail(
                strict=True, reason=f"{name}: target not met yet on the held-out half (README)"
            ),
        )
        if name in TARGETS_NOT_MET
        else name
        for name in TARGETS
    ],
)
def test_target_on_the_held_out_half(results, metric):
    summary = summarize([r for r in results if r.item.split == "held_out"])
    assert not check_thresholds(summary, {metric: TARGETS[metric]}), summary.metrics[metric]


def test_threshold_check_fails_when_metric_drops(results):
    summary = summarize(results)
    raised = {name: 1.01 for name in ("hit@1", "found", "mrr")}
    assert len(check_thresholds(summary, raised)) == len(raised)
    for maximum in ("false_abstention", "oos_answered", "in_scope_suggest"):
        assert check_thresholds(summary, {maximum: -0.01})


def test_results_lines_follow_the_ask_contract(results):
    line = results[0].to_json()
    assert {
        "id",
        "split",
        "question",
        "answer",
        "outcome",
        "citations",
        "related",
        "abstained",
        "latency_ms",
        "hit_rank",
    } <= set(line)
    suggested = next(r for r in results if r.outcome == "suggest").to_json()
    assert suggested["abstained"] is True
    assert suggested["related"]
    assert set(suggested["related"][0]) == set(line["citations"][0] if line["citations"] else {})
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
    assert real_bot.settings.retrieval.min_confidence == 0.78

    assert run_cli(real_bot, subset, sweep=[0.8, 10.0], report=tmp_path / "report")
    printed = "".join(capsys.readouterr().out.split())  # rich wraps titles to the table
    assert "Abstentionthresholdmin_confidence(hybrid;setnow:0.78)" in printed
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
