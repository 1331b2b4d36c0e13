"""The eval runner: questions with expected answers in, metrics out.

It calls the same ``SupportBot.answer`` the CLI and the chat use, so a number
here is a number merchants get. Thresholds given on the command line make the
exit status fail, so CI can gate on it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import Progress
from rich.table import Table

from bot.answer_types import Answer, Turn
from bot.safe_text import CliConsole, is_utf8_safe, utf8_safe, utf8_safe_data

logger = logging.getLogger(__name__)

RETRIEVERS = ("bm25", "dense", "hybrid")
OUTCOMES = ("answer", "suggest", "none")
SPLITS = ("tune", "held_out")
_QUOTES = re.compile(r"[\"'“”‘’]")


class EvalError(ValueError):
    """The eval file is missing or malformed, or a destination cannot be written."""


class EvalRunError(EvalError):
    """The run failed partway (a question could not be answered or a result written)."""


@dataclass(frozen=True)
class Question:
    """One eval item."""

    id: str
    question: str
    expected: tuple[str, ...] = ()
    facts: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    history: tuple[str, ...] = ()

    @property
    def split(self) -> str:
        """The fixed half this question belongs to (see :func:`split_of`)."""
        return split_of(self.id)


def split_of(question_id: str) -> str:
    """The fixed half of a question, "tune" or "held_out", from a hash of its id.

    Thresholds are chosen on the tune half and judged on the held-out half, so they are
    not fit to the figures they are judged by. The hash keeps every question in its half
    when questions are added or reordered.
    """
    return (
        "tune" if hashlib.sha256(question_id.encode("utf-8")).digest()[0] % 2 == 0 else "held_out"
    )


@dataclass
class Result:
    """One answered eval item."""

    item: Question
    answer: Answer
    latency_ms: float
    hit_rank: int | None = None
    facts_found: int = 0
    cited_expected: int = 0
    # Rank of the first expected entry among the suggestions (outcome "suggest").
    related_rank: int | None = None

    @property
    def outcome(self) -> str:
        """The answer's outcome: answer, suggest or none."""
        return self.answer.outcome or ("none" if self.answer.abstained else "answer")

    @property
    def found(self) -> bool:
        """An expected entry is cited or suggested (one click away)."""
        return self.hit_rank is not None or self.related_rank is not None

    def to_json(self) -> dict[str, Any]:
        """One line of the results JSONL (the ``ask --json`` fields plus the scoring)."""
        return {
            "id": self.item.id,
            "split": self.item.split,
            "question": self.item.question,
            "answer": self.answer.text,
            "outcome": self.outcome,
            "citations": [c.to_json() for c in self.answer.citations],
            "related": [c.to_json() for c in self.answer.related],
            "abstained": self.answer.abstained,
            "latency_ms": round(self.latency_ms, 2),
            "hit_rank": self.hit_rank,
            "related_rank": self.related_rank,
            "expected": list(self.item.expected),
            "tags": list(self.item.tags),
        }


@dataclass
class Summary:
    """Aggregate metrics over a set of results."""

    n: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


def normalize_label(label: str) -> str:
    """Compare labels ignoring case, quotes and whitespace."""
    return " ".join(_QUOTES.sub("", label).casefold().split())


def _strings(raw: dict[str, Any], name: str) -> tuple[str, ...]:
    """An optional list-of-strings field ("expected": "CODE" would otherwise become letters)."""
    value = raw.get(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f'"{name}" must be a list of strings')
    return tuple(value)


def _question(raw: object) -> Question:
    """One validated eval item; its strings may still hold lone surrogates."""
    if not isinstance(raw, dict):
        raise TypeError("an eval item is a JSON object")
    for name in ("id", "question"):
        if name not in raw:
            raise KeyError(name)
        if not isinstance(raw[name], (str, int)) or isinstance(raw[name], bool):
            raise TypeError(f'"{name}" must be a string')
    return Question(
        id=str(raw["id"]),
        question=str(raw["question"]),
        expected=_strings(raw, "expected"),
        facts=_strings(raw, "facts"),
        tags=_strings(raw, "tags"),
        history=_strings(raw, "history"),
    )


def load_questions(path: Path) -> list[Question]:
    """Read and validate the questions JSONL."""
    if not path.exists():
        raise EvalError(f"Eval file {path} does not exist.")
    if not path.is_file():
        raise EvalError(f"Eval file {path} is not a file.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise EvalError(f"{path} is not UTF-8 text (byte {exc.start}).") from None
    except OSError as exc:
        raise EvalError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    items: list[Question] = []
    seen: set[str] = set()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = _question(json.loads(line))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            reason = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise EvalError(f"{path}:{n}: not a valid eval item ({reason}).") from None
        if not all(is_utf8_safe(t) for t in (item.id, item.question, *item.history)):
            # Real exports do hold "\ud800"-style escapes; a result file must still encode.
            logger.warning(
                "%s:%d: characters that cannot be written as UTF-8 (lone surrogates) were "
                "replaced with U+FFFD.",
                utf8_safe(str(path)),
                n,
            )
        item = Question(**utf8_safe_data(vars(item)))
        if item.id in seen:
            raise EvalError(f"{path}:{n}: duplicate id {item.id!r}.")
        seen.add(item.id)
        items.append(item)
    if not items:
        raise EvalError(f"{path} holds no questions.")
    return items


def _labels(citations: Sequence[Any]) -> list[str]:
    return [normalize_label(c.entry.code or c.entry.title) for c in citations]


def score_result(item: Question, answer: Answer, latency_ms: float) -> Result:
    """Compare one answer with its expectations."""
    expected = {normalize_label(e) for e in item.expected}
    labels = _labels(answer.citations)
    rank = next((i for i, label in enumerate(labels, 1) if label in expected), None)
    related = _labels(answer.related)
    related_rank = next((i for i, label in enumerate(related, 1) if label in expected), None)
    text = answer.text.casefold()
    facts = sum(1 for f in item.facts if f.casefold() in text)
    cited_expected = sum(1 for label in labels if label in expected)
    return Result(item, answer, latency_ms, rank, facts, cited_expected, related_rank)


def _answer_item(bot: Any, item: Question) -> Result:
    history: list[Turn] = []
    for earlier in item.history:
        prior = bot.answer(earlier, history=history)
        history += [
            Turn("user", earlier),
            Turn("assistant", prior.text, tuple(c.entry.id for c in prior.citations)),
        ]
    started = time.perf_counter()
    answer = bot.answer(item.question, history=history)
    latency = (time.perf_counter() - started) * 1000
    return score_result(item, answer, latency)


def run_questions(
    bot: Any,
    items: Iterable[Question],
    progress: Progress | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Answer every item (replaying its history) and score it.

    ``on_result`` sees each result as soon as it is scored, so what was answered is kept
    even when a later question fails. A question that cannot be answered raises
    :class:`EvalRunError` naming it.
    """
    items = list(items)
    task = progress.add_task("eval", total=len(items)) if progress else None
    results = []
    for item in items:
        try:
            result = _answer_item(bot, item)
        except Exception as exc:
            logger.debug("Eval question %s failed", item.id, exc_info=exc)
            raise EvalRunError(
                f"Question {item.id!r} could not be answered ({type(exc).__name__}: {exc})."
            ) from exc
        results.append(result)
        if on_result is not None:
            on_result(result)
        if progress and task is not None:
            progress.advance(task)
    return results


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[pos]


def summarize(results: list[Result]) -> Summary:
    """Hit@k, MRR, fact recall, citation precision, abstention and latency."""
    in_scope = [r for r in results if r.item.expected]
    oos = [r for r in results if not r.item.expected]
    abstained = [r for r in results if r.answer.abstained]
    answered_in_scope = [r for r in in_scope if not r.answer.abstained]
    facts_total = sum(len(r.item.facts) for r in in_scope)
    cited_total = sum(len(r.answer.citations) for r in answered_in_scope)
    latencies = [r.latency_ms for r in results]

    def share(part: float, whole: float) -> float:
        return part / whole if whole else 0.0

    m = {
        "hit@1": share(sum(r.hit_rank == 1 for r in in_scope), len(in_scope)),
        "hit@3": share(
            sum(r.hit_rank is not None and r.hit_rank <= 3 for r in in_scope), len(in_scope)
        ),
        "mrr": share(sum(1 / r.hit_rank for r in in_scope if r.hit_rank), len(in_scope)),
        "fact_recall": share(sum(r.facts_found for r in in_scope), facts_total),
        "citation_precision": share(sum(r.cited_expected for r in answered_in_scope), cited_total),
        "abstention_recall": share(sum(r.answer.abstained for r in oos), len(oos)),
        "abstention_precision": share(
            sum(1 for r in abstained if not r.item.expected), len(abstained)
        ),
        "false_abstention": share(sum(r.answer.abstained for r in in_scope), len(in_scope)),
        # The three outcomes: an in-scope question should be answered, its entry at least
        # suggested; an out-of-scope one should not be answered.
        "found": share(sum(r.found for r in in_scope), len(in_scope)),
        "in_scope_suggest": share(sum(r.outcome == "suggest" for r in in_scope), len(in_scope)),
        "in_scope_none": share(sum(r.outcome == "none" for r in in_scope), len(in_scope)),
        "oos_answered": share(sum(r.outcome == "answer" for r in oos), len(oos)),
        "oos_suggest": share(sum(r.outcome == "suggest" for r in oos), len(oos)),
        "latency_p50_ms": _percentile(latencies, 0.5),
        "latency_p95_ms": _percentile(latencies, 0.95),
    }
    return Summary(len(results), m)


def summarize_by_split(results: list[Result]) -> dict[str, Summary]:
    """The summary of each fixed half, then of the whole set."""
    out = {split: summarize([r for r in results if r.item.split == split]) for split in SPLITS}
    out["all"] = summarize(results)
    return out


def outcome_counts(results: list[Result]) -> dict[str, dict[str, int]]:
    """How many questions got each outcome, for in-scope and out-of-scope questions."""
    counts = {"in_scope": dict.fromkeys(OUTCOMES, 0), "oos": dict.fromkeys(OUTCOMES, 0)}
    for r in results:
        counts["in_scope" if r.item.expected else "oos"][r.outcome] += 1
    return counts


def summarize_by_tag(results: list[Result]) -> dict[str, Summary]:
    """The summary per tag."""
    tags = sorted({t for r in results for t in r.item.tags})
    return {t: summarize([r for r in results if t in r.item.tags]) for t in tags}


def check_thresholds(summary: Summary, thresholds: dict[str, float | None]) -> list[str]:
    """Failed thresholds as sentences; rates of mistakes are maximums, others minimums."""
    failures = []
    for name, limit in thresholds.items():
        if limit is None:
            continue
        value = summary.metrics[name]
        if name in MAXIMUM_METRICS and value > limit:
            failures.append(f"{name} {value:.3f} is above {limit}")
        elif name not in MAXIMUM_METRICS and value < limit:
            failures.append(f"{name} {value:.3f} is below {limit}")
    return failures


# Metrics that count mistakes: a threshold on them is a maximum.
MAXIMUM_METRICS = frozenset(
    {"false_abstention", "in_scope_suggest", "in_scope_none", "oos_answered"}
)


METRIC_ORDER = (
    "hit@1",
    "hit@3",
    "mrr",
    "fact_recall",
    "citation_precision",
    "abstention_recall",
    "abstention_precision",
    "false_abstention",
    "found",
    "in_scope_suggest",
    "in_scope_none",
    "oos_answered",
    "oos_suggest",
    "latency_p50_ms",
    "latency_p95_ms",
)


def format_metric(name: str, value: float) -> str:
    """A metric as printed: milliseconds with one decimal, ratios with three."""
    return f"{value:.1f}" if name.endswith("_ms") else f"{value:.3f}"


def _table(title: str) -> Table:
    """A table at least as wide as its title.

    Rich folds a title to the table's width, which would split the eval file's path in
    output that scripts read.
    """
    return Table(title=title, min_width=len(title) + 4)


def summary_table(summaries: dict[str, Summary], title: str) -> Table:
    """A rich table with one column per summary (retriever)."""
    table = _table(title)
    table.add_column("metric")
    for name in summaries:
        table.add_column(name, justify="right")
    for metric in METRIC_ORDER:
        table.add_row(
            metric, *(format_metric(metric, s.metrics[metric]) for s in summaries.values())
        )
    table.add_row("questions", *(str(s.n) for s in summaries.values()))
    return table


TAG_METRICS = ("hit@1", "found", "in_scope_suggest", "in_scope_none", "oos_answered")


def tag_table(by_tag: dict[str, Summary], title: str) -> Table:
    """A rich table with one row per tag (there are too many tags for columns)."""
    table = _table(title)
    table.add_column("tag")
    for metric in TAG_METRICS:
        table.add_column(metric, justify="right")
    table.add_column("n", justify="right")
    for tag, s in by_tag.items():
        table.add_row(tag, *(format_metric(m, s.metrics[m]) for m in TAG_METRICS), str(s.n))
    return table


def outcome_table(results: list[Result], title: str) -> Table:
    """Questions per outcome, in scope and out of scope, for each half and overall."""
    table = _table(title)
    table.add_column("questions")
    for outcome in OUTCOMES:
        table.add_column(outcome, justify="right")
    for split in (*SPLITS, "all"):
        part = [r for r in results if split == "all" or r.item.split == split]
        for scope, counts in outcome_counts(part).items():
            table.add_row(f"{split} {scope}", *(str(counts[o]) for o in OUTCOMES))
    return table


def sweep_confidence(
    bot: Any,
    items: list[Question],
    values: Sequence[float],
    mode: str = "hybrid",
    progress: Progress | None = None,
) -> dict[str, Summary]:
    """The eval summary at each distinct abstention threshold, keyed by the threshold.

    Keys are the shortest exact spelling of each value, so thresholds that differ only
    in a late digit stay apart.
    """
    current = bot.settings.retrieval
    out = {}
    for value in dict.fromkeys(float(v) for v in values):
        # The other bars move with it, keeping their distance from the answer bar.
        swept = bot.with_retrieval(
            mode=mode,
            min_confidence=value,
            suggest_min_confidence=min(current.suggest_min_confidence, value),
            uncovered_min_confidence=value
            + current.uncovered_min_confidence
            - current.min_confidence,
            unnamed_fact_min_confidence=value
            + current.unnamed_fact_min_confidence
            - current.min_confidence,
        )
        out[repr(value)] = summarize(run_questions(swept, items, progress))
    return out


def run_cli(
    bot: Any,
    file: Path,
    output: Path | None = None,
    retriever: str = "hybrid",
    compare: bool = False,
    report: Path | None = None,
    thresholds: dict[str, float | None] | None = None,
    sweep: Sequence[float] = (),
) -> bool:
    """What ``supportbot eval`` does; returns False when a threshold fails.

    ``sweep`` lists abstention thresholds (``retrieval.min_confidence``) to run the
    set with as well, side by side: the trade-off between answering out-of-scope
    questions and refusing real ones, for calibrating that setting.
    """
    items = load_questions(file)
    # Unwritable destinations are reported before the run, not after it.
    for path in (output, report):
        if path is not None:
            _check_writable(path, folder=path is report)
    out = CliConsole()
    modes = RETRIEVERS if compare else (retriever,)
    main_mode = "hybrid" if compare else retriever
    runs: dict[str, list[Result]] = {}
    with (
        ResultWriter(output) as writer,
        Progress(console=CliConsole(stderr=True), transient=True) as progress,
    ):
        for mode in modes:
            runs[mode] = run_questions(
                bot.with_retrieval_mode(mode),
                items,
                progress,
                on_result=writer.write if mode == main_mode else None,
            )
    summaries = {mode: summarize(results) for mode, results in runs.items()}
    out.print(summary_table(summaries, f"Eval: {file} ({len(items)} questions)"))
    by_split = summarize_by_split(runs[main_mode])
    out.print(summary_table(by_split, f"Per half ({main_mode}; thresholds are tuned on 'tune')"))
    out.print(outcome_table(runs[main_mode], f"Outcomes ({main_mode})"))
    by_tag = summarize_by_tag(runs[main_mode])
    out.print(tag_table(by_tag, f"Per tag ({main_mode})"))
    swept: dict[str, Summary] = {}
    if sweep:
        current = bot.settings.retrieval.min_confidence
        with Progress(console=CliConsole(stderr=True), transient=True) as progress:
            swept = sweep_confidence(bot, items, sweep, main_mode, progress)
        title = f"Abstention threshold min_confidence ({main_mode}; set now: {current!r})"
        out.print(summary_table(swept, title))
    if report:
        from evals.report import write_report

        try:
            path = write_report(report, runs, summaries, by_tag, main_mode, swept)
        except OSError as exc:
            raise EvalError(
                f"Cannot write the report in {report}: {exc.strerror or exc}."
            ) from None
        out.print(f"Report written to {path}")
    failures = check_thresholds(summaries[main_mode], thresholds or {})
    for failure in failures:
        out.print(f"[red]FAIL[/red] {failure}")
    return not failures


class ResultWriter:
    """Writes each result as one JSON line the moment it is scored (or nothing without a path).

    Every line is flushed, so a run that fails at question 57 leaves the 56 answered ones.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fh = None
        self.written = 0

    def __enter__(self) -> ResultWriter:
        if self.path is not None:
            try:
                self._fh = self.path.open("w", encoding="utf-8")
            except OSError as exc:
                raise EvalError(f"Cannot write {self.path}: {exc.strerror or exc}.") from None
        return self

    def write(self, result: Result) -> None:
        """Append one result line and flush it."""
        if self._fh is None:
            return
        line = json.dumps(utf8_safe_data(result.to_json()), ensure_ascii=False) + "\n"
        try:
            self._fh.write(line)
            self._fh.flush()
        except OSError as exc:
            raise EvalRunError(
                f"Cannot write {self.path} after {self.written} results: {exc.strerror or exc}."
            ) from None
        self.written += 1

    def __exit__(self, *exc: object) -> None:
        if self._fh is None:
            return
        try:
            self._fh.close()
        except OSError as error:
            raise EvalRunError(f"Cannot write {self.path}: {error.strerror or error}.") from None
        if exc[0] is not None and self.written:
            logger.warning("The %d results answered so far are in %s.", self.written, self.path)


def _check_writable(path: Path, folder: bool) -> None:
    """Raise EvalError unless ``path`` can be written as a file (or a folder)."""
    if path.is_dir() and not folder:
        raise EvalError(f"Cannot write {path}: it is a folder.")
    if path.exists() and not path.is_dir() and folder:
        raise EvalError(f"Cannot write the report in {path}: it is a file.")
    parent = path if folder else path.parent
    blocker = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise EvalError(f"Cannot write {path}: {blocker} is a file.")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EvalError(f"Cannot write {path}: {exc.strerror or exc}.") from None


def worst_misses(results: list[Result], limit: int = 15) -> list[Result]:
    """In-scope misses (no expected entry cited) and false abstentions, then wrong abstentions."""
    misses = [r for r in results if r.item.expected and r.hit_rank != 1]
    misses.sort(key=lambda r: (r.hit_rank is not None, r.hit_rank or 0))
    leaks = [r for r in results if not r.item.expected and not r.answer.abstained]
    return (misses + leaks)[:limit]
