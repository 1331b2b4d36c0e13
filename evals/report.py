"""Markdown report with PNG charts for an eval run (``supportbot eval --report DIR``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bot.safe_text import utf8_safe

if TYPE_CHECKING:
    from evals.runner import Result, Summary

QUALITY = ("hit@1", "hit@3", "mrr", "fact_recall", "citation_precision", "abstention_recall")


def _charts(
    out: Path,
    runs: dict[str, list[Result]],
    summaries: dict[str, Summary],
    by_tag: dict[str, Summary],
) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers or CI
    import matplotlib.pyplot as plt
    import numpy as np

    names: list[str] = []

    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / max(len(summaries), 1)
    x = np.arange(len(QUALITY))
    for i, (mode, summary) in enumerate(summaries.items()):
        ax.bar(x + i * width, [summary.metrics[m] for m in QUALITY], width, label=mode)
    ax.set_xticks(x + width * (len(summaries) - 1) / 2, QUALITY, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_title("Quality per retriever")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "retrievers.png", dpi=100)
    plt.close(fig)
    names.append("retrievers.png")

    fig, ax = plt.subplots(figsize=(9, 4))
    tags = list(by_tag)
    ax.bar(tags, [by_tag[t].metrics["hit@1"] for t in tags], label="hit@1")
    ax.plot(tags, [by_tag[t].metrics["abstention_recall"] for t in tags], "o", label="abstention")
    ax.set_ylim(0, 1.05)
    ax.set_title("hit@1 per tag")
    ax.tick_params(axis="x", rotation=45)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "tags.png", dpi=100)
    plt.close(fig)
    names.append("tags.png")

    fig, ax = plt.subplots(figsize=(9, 4))
    for mode, results in runs.items():
        ax.hist([r.latency_ms for r in results], bins=40, alpha=0.5, label=mode)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("questions")
    ax.set_title("Answer latency")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=100)
    plt.close(fig)
    names.append("latency.png")
    return names


def _table(summaries: dict[str, Summary], first: str) -> list[str]:
    from evals.runner import METRIC_ORDER, format_metric

    lines = [
        f"| {first} | " + " | ".join(METRIC_ORDER) + " | n |",
        "|---" * (len(METRIC_ORDER) + 2) + "|",
    ]
    for name, s in summaries.items():
        cells = " | ".join(format_metric(m, s.metrics[m]) for m in METRIC_ORDER)
        lines.append(f"| {name} | {cells} | {s.n} |")
    return lines


def write_report(
    out: Path,
    runs: dict[str, list[Result]],
    summaries: dict[str, Summary],
    by_tag: dict[str, Summary],
    main_mode: str,
    sweep: dict[str, Summary] | None = None,
) -> Path:
    """Write ``report.md`` and charts into ``out``; returns the report's path.

    ``sweep`` holds the summaries of an abstention-threshold sweep, if one was run.
    """
    from evals.runner import worst_misses

    out.mkdir(parents=True, exist_ok=True)
    charts = _charts(out, runs, summaries, by_tag)
    lines = ["# supportbot eval report", "", "## Per retriever", ""]
    lines += _table(summaries, "retriever")
    lines += ["", f"## Per tag ({main_mode})", ""]
    lines += _table(by_tag, "tag")
    if sweep:
        lines += ["", f"## Abstention threshold min_confidence ({main_mode})", ""]
        lines += _table(sweep, "min_confidence")
    lines += ["", "## Charts", ""]
    lines += [f"![{name}]({name})" for name in charts]
    lines += ["", f"## Worst misses ({main_mode})", ""]
    lines += ["| id | question | expected | cited |", "|---|---|---|---|"]
    for r in worst_misses(runs[main_mode]):
        cited = ", ".join(c.entry.label for c in r.answer.citations) or "(abstained)"
        expected = ", ".join(r.item.expected) or "(out of scope)"
        question = r.item.question.replace("|", "\\|").replace("\n", " ")[:120]
        lines.append(f"| {r.item.id} | {question} | {expected} | {cited} |")
    path = out / "report.md"
    # Questions and answers are user text; a lone surrogate must not cost the whole report.
    path.write_text(utf8_safe("\n".join(lines) + "\n"), encoding="utf-8")
    return path
