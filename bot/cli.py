"""The ``supportbot`` command line: ingest, ask, draft, eval, chat, feedback, gaps, handoffs.

Only argument handling and printing live here; each command builds the
settings once and calls the same functions the chat app uses.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from bot.answer_types import Answer, Filters
from bot.config import REPO_ROOT, Settings, SettingsError, load_settings
from bot.safe_text import (
    CliConsole,
    display_safe,
    display_safe_data,
    looks_binary,
    one_line,
    utf8_safe,
    utf8_safe_data,
)

logger = logging.getLogger(__name__)

app = typer.Typer(
    help="Junipeer support bot: grounded answers with citations from the knowledge base.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Typer's rich panels fold usage errors at the terminal width; scripts reading them
    # get click's plain one-line messages instead.
    rich_markup_mode="rich" if sys.stderr.isatty() else None,
)
console = CliConsole(stderr=True)


def _settings(**overrides: object) -> Settings:
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        raise _fail(str(exc), 2) from None
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return settings


def _fail(message: str, code: int = 1) -> typer.Exit:
    # Messages quote user input and paths: brackets in them are text, not rich markup.
    console.print(f"[red]Error:[/red] {escape(message)}")
    return typer.Exit(code)


class _EmbeddingProgress:
    """A progress bar that appears only once embedding actually starts."""

    def __init__(self) -> None:
        self._bar: Progress | None = None
        self._task = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            self._bar = Progress(
                TextColumn("Embedding chunks"), BarColumn(), MofNCompleteColumn(), console=console
            )
            self._bar.start()
            self._task = self._bar.add_task("embed", total=total)
        self._bar.update(self._task, completed=done, total=total)

    def __enter__(self) -> _EmbeddingProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def _load_bot(settings: Settings):  # noqa: ANN202 - imported lazily to keep --help fast
    from bot.llm import LLMConfigError
    from bot.service import SupportBot
    from ingest.embedding import ModelNotFoundError
    from ingest.index import CorpusError, IndexUnavailableError

    try:
        with _EmbeddingProgress() as progress:
            return SupportBot.from_settings(settings, progress=progress)
    except (IndexUnavailableError, CorpusError, ModelNotFoundError, LLMConfigError) as exc:
        raise _fail(str(exc)) from None


def _read_database(settings: Settings, *reads):  # noqa: ANN002, ANN202
    """Each read's rows from the chat database, or a clear error when it cannot be used."""
    from bot.persistence import DatabaseError, create_schema

    url = settings.chat.database_url
    try:
        # Before the chat has ever run there are no tables yet: that is "no rows", not an error.
        create_schema(url)
        return tuple(read(url) for read in reads)
    except DatabaseError as exc:
        raise _fail(str(exc)) from None


def _guarded(call, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
    """Run an answering call, turning a model that cannot load into a clear error."""
    from ingest.embedding import ModelNotFoundError

    try:
        return call(*args, **kwargs)
    except ModelNotFoundError as exc:
        raise _fail(str(exc)) from None


def _read_text_arg(text: str | None, what: str = "question") -> str:
    """The argument, or standard input when it is '-' or missing (undecodable bytes replaced).

    Empty input and input that is not text (a program, an image) are refused with a usage
    error rather than answered: there is nothing to answer.
    """
    if text is not None and text != "-":
        # Arguments that were not valid UTF-8 arrive with surrogate escapes; replace them.
        try:
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
            text = utf8_safe(text)
    else:
        text = sys.stdin.buffer.read().decode("utf-8", errors="replace")
        # `supportbot draft < /bin/ls`: an answer to a program's bytes helps nobody.
        if looks_binary(text):
            raise _fail(f"Standard input is not text (a binary file?): give the {what} as text.", 2)
    if not display_safe(text).replace("\ufffd", "").strip():
        raise _fail(f"No {what} given: pass it as an argument or on standard input.", 2)
    return text


def _print_notices(notices: tuple[str, ...] | list[str]) -> None:
    """Notices (e.g. a long question cut) to stderr, in plain words."""
    from bot.chat_render import plain_notice

    for notice in notices:
        console.print(f"[yellow]{escape(plain_notice(notice))}[/yellow]")


def _filters(severity: list[str], system: list[str], kind: list[str]) -> Filters | None:
    from ingest.entries import KINDS, SEVERITIES

    for value in kind:
        if value not in KINDS:
            raise _fail(f"Unknown kind {value!r}; choose from {', '.join(KINDS)}.", 2)
    for value in severity:
        if value.casefold() not in {s.casefold() for s in SEVERITIES}:
            raise _fail(f"Unknown severity {value!r}; choose from {', '.join(SEVERITIES)}.", 2)
    filters = Filters(tuple(severity), tuple(system), tuple(kind))
    return None if filters.is_empty() else filters


def _json_line(data: object) -> str:
    """One JSON line that always encodes (user text may hold lone surrogates)."""
    return json.dumps(utf8_safe_data(data), ensure_ascii=False, default=str)


def _echo_json_document(data: object) -> None:
    """Print an export (feedback, gaps, hand-offs) as indented JSON that always encodes."""
    typer.echo(json.dumps(utf8_safe_data(data), ensure_ascii=False, default=str, indent=1))


def _print_answer(answer: Answer) -> None:
    out = CliConsole()
    _print_notices(answer.notices)
    out.print(answer.text, markup=False, highlight=False)
    for title, citations in (("Citations", answer.citations), ("Suggestions", answer.related)):
        if not citations:
            continue
        out.print(f"\n{title}:", markup=False)
        for c in citations:
            e = c.entry
            out.print(
                f"  - {e.label} ({e.kind}, {e.source}:{e.line}, score {c.score:.3f})",
                markup=False,
                highlight=False,
            )


SeverityOpt = Annotated[
    list[str], typer.Option("--severity", help="Only entries of this severity (repeatable).")
]
SystemOpt = Annotated[
    list[str], typer.Option("--system", help="Only entries about this system (repeatable).")
]
KindOpt = Annotated[
    list[str],
    typer.Option(
        "--kind", help="Only entries of this kind: error_code, error_pattern, faq, guide."
    ),
]


@app.command()
def ingest(
    corpus: Annotated[Path | None, typer.Option(help="Corpus folder.")] = None,
    out: Annotated[Path | None, typer.Option(help="Index folder.")] = None,
) -> None:
    """Parse the knowledge documents, embed them and write the index."""
    from ingest.embedding import ModelNotFoundError
    from ingest.index import CorpusError, IndexUnavailableError
    from ingest.index import ingest as run_ingest

    settings = _settings()
    # A batch job: let torch use every core (answering uses one thread; see the settings).
    settings.embedding.threads = 0
    if corpus:
        settings.corpus.dir = corpus
    if out:
        settings.index.dir = out
    from bot.service import index_config, load_embedder

    started = time.perf_counter()
    embedder = load_embedder(settings)
    try:
        with _EmbeddingProgress() as progress:
            index = run_ingest(index_config(settings), settings.index.dir, embedder, progress)
    except (CorpusError, IndexUnavailableError, ModelNotFoundError) as exc:
        raise _fail(f"{exc} The previous index, if any, is unchanged.") from None
    for issue in index.issues:
        console.print(f"[yellow]{escape(str(issue))}[/yellow]")
    kinds = index.manifest["entries_per_kind"]
    typer.echo(
        f"Entries: {len(index.entries)} ({', '.join(f'{k}: {v}' for k, v in kinds.items())})"
    )
    typer.echo(f"Chunks: {len(index.chunks)}")
    typer.echo(f"Index: {settings.index.dir}")
    if settings.index.publish:
        _publish(settings)
    typer.echo(f"Took {time.perf_counter() - started:.1f} s")


def _publish(settings: Settings) -> None:
    """Publish the new build to the chat database, where every replica looks for it."""
    from bot.persistence import DatabaseError
    from bot.shared_state import publish_saved_build
    from ingest.index import current_build

    try:
        name = publish_saved_build(settings.chat.database_url, current_build(settings.index.dir))
    except DatabaseError as exc:
        # The build on disk is complete and servers sharing this disk load it; say plainly
        # that replicas elsewhere will not.
        console.print(
            f"[yellow]Not published to the chat database, so only servers reading "
            f"{escape(str(settings.index.dir))} get this build: {escape(str(exc))}[/yellow]"
        )
        return
    typer.echo(f"Published: build {name} (running chat servers switch to it)")


@app.command()
def ask(
    question: Annotated[str | None, typer.Argument(help="The question; '-' reads stdin.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    k: Annotated[int | None, typer.Option("-k", help="Entries to retrieve at most.")] = None,
    severity: SeverityOpt = [],  # noqa: B006 - typer needs a literal default
    system: SystemOpt = [],  # noqa: B006
    kind: KindOpt = [],  # noqa: B006
) -> None:
    """Answer a question with citations (builds the index on first use)."""
    settings = _settings()
    filters = _filters(severity, system, kind)
    if k is not None and not 1 <= k <= 20:
        raise _fail("-k must be between 1 and 20.", 2)
    if question is None and sys.stdin.isatty():
        _interactive(_load_bot(settings), filters, k)
        return
    # Read (and refused if empty or binary) before the model loads for seconds.
    text = _read_text_arg(question)
    bot = _load_bot(settings)
    answer = _guarded(bot.answer, text, filters=filters, k=k)
    if as_json:
        # The JSON object is a fixed contract; notices (e.g. truncation) go to stderr.
        _print_notices(answer.notices)
        typer.echo(_json_line(answer.to_json()))
    else:
        _print_answer(answer)


def _interactive(bot, filters: Filters | None, k: int | None) -> None:  # noqa: ANN001
    from bot.answer_types import Turn

    history: list[Turn] = []
    console.print("Ask about a Junipeer error or the FAQ (empty line to quit).")
    while True:
        try:
            question = utf8_safe(input("> ")).strip()
        except EOFError:
            break
        if not question:
            break
        answer = _guarded(bot.answer, question, history=history[-8:], filters=filters, k=k)
        _print_answer(answer)
        history += [
            Turn("user", question),
            Turn("assistant", answer.text, tuple(c.entry.id for c in answer.citations)),
        ]


@app.command()
def draft(
    ticket: Annotated[
        str | None, typer.Argument(help="Ticket text; '-' or none reads stdin.")
    ] = None,
    style: Annotated[
        str,
        typer.Option(help="default, shorter, formal or shorter+formal (both refinements)."),
    ] = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Draft a reply to a merchant's ticket, with the entries to check it against."""
    from bot.chat_render import plain_notice
    from bot.drafting import STYLES

    if style not in STYLES:
        raise _fail(f"--style must be {', '.join(STYLES[:-1])} or {STYLES[-1]}.", 2)
    settings = _settings()
    text = _read_text_arg(ticket, "ticket")
    bot = _load_bot(settings)
    result = _guarded(bot.draft, text, style=style)
    _print_notices(result.notices)
    if as_json:
        data = result.to_json()
        data["notices"] = [plain_notice(n) for n in result.notices]
        typer.echo(_json_line(data))
        return
    out = CliConsole()
    out.print(result.reply, markup=False, highlight=False)
    out.print("\nCited entries to check:", markup=False)
    for c in result.citations:
        out.print(f"  - {c.entry.label} ({c.entry.source}:{c.entry.line})", markup=False)
    if not result.citations:
        out.print("  (none: no entry matched; the reply hands over to a specialist)", markup=False)
    if result.related:
        out.print("\nClosest entries (not answered from; check before replying):", markup=False)
        for c in result.related:
            out.print(f"  - {c.entry.label} ({c.entry.source}:{c.entry.line})", markup=False)


@app.command("eval")
def eval_command(
    file: Annotated[Path, typer.Option("--file", help="Questions JSONL.")] = REPO_ROOT
    / "evals"
    / "questions.jsonl",
    output: Annotated[
        Path | None, typer.Option(help="Write per-question results (JSONL) of the main run here.")
    ] = None,
    retriever: Annotated[str, typer.Option(help="hybrid, bm25 or dense.")] = "hybrid",
    compare: Annotated[bool, typer.Option(help="Run bm25, dense and hybrid side by side.")] = False,
    report: Annotated[Path | None, typer.Option(help="Write a markdown report + charts.")] = None,
    min_hit1: Annotated[float | None, typer.Option(help="Fail below this hit@1.")] = None,
    min_mrr: Annotated[float | None, typer.Option(help="Fail below this MRR.")] = None,
    min_abstention_recall: Annotated[float | None, typer.Option(help="Fail below this.")] = None,
    max_false_abstention: Annotated[float | None, typer.Option(help="Fail above this.")] = None,
    sweep_confidence: Annotated[
        str,
        typer.Option(
            help=(
                "Also run with these abstention thresholds, e.g. 0.7,0.75,0.8 (calibration); "
                "printed, and kept in --report."
            )
        ),
    ] = "",
) -> None:
    """Run the eval set through the answer path and print the metrics."""
    from evals.runner import EvalError, EvalRunError, run_cli

    settings = _settings()
    if retriever not in ("hybrid", "bm25", "dense"):
        raise _fail("--retriever must be hybrid, bm25 or dense.", 2)
    try:
        sweep = [float(v) for v in sweep_confidence.split(",") if v.strip()]
    except ValueError:
        message = "--sweep-confidence takes numbers separated by commas, e.g. 0.7,0.8."
        raise _fail(message, 2) from None
    if len(sweep) > 20:
        raise _fail("--sweep-confidence takes at most 20 thresholds.", 2)
    bot = _load_bot(settings)
    try:
        ok = run_cli(
            bot,
            file,
            output=output,
            retriever=retriever,
            compare=compare,
            report=report,
            thresholds={
                "hit@1": min_hit1,
                "mrr": min_mrr,
                "abstention_recall": min_abstention_recall,
                "false_abstention": max_false_abstention,
            },
            sweep=sweep,
        )
    except EvalRunError as exc:
        raise _fail(str(exc), 1) from None
    except EvalError as exc:
        raise _fail(str(exc), 2) from None
    if not ok:
        raise typer.Exit(1)


@app.command()
def chat(
    host: Annotated[str | None, typer.Option(help="Interface to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to serve on.", min=1, max=65535)] = None,
    merchant: Annotated[
        bool, typer.Option("--merchant", help="Serve merchants only (no login, no agent profile).")
    ] = False,
) -> None:
    """Serve the Chainlit chat (and the help widget); builds the index on first use."""
    settings = _settings()
    if merchant:
        settings.chat.agent_profile = False
    # Build or check the index here, with a progress bar, rather than silently in the server;
    # likewise open the database, whose errors the server would only log.
    _load_bot(settings)
    _read_database(settings)
    from bot.app import ChatConfigError, chat_command, chat_environment

    try:
        env = chat_environment(settings)
    except ChatConfigError as exc:
        raise _fail(str(exc)) from None
    command = chat_command(host or settings.chat.host, port or settings.chat.port)
    sys.stdout.flush()
    sys.stderr.flush()
    # Become the server: the bot loaded above for the check (~200 MB) goes with this
    # process image instead of staying beside the server for its whole life.
    os.execve(command[0], command, env)


# A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: object) -> object:
    """A CSV cell a spreadsheet shows as text: formula-like text gets a leading quote."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


@app.command()
def feedback(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV with a header row.")] = False,
) -> None:
    """Export thumbs up/down with the question, the answer and its citations."""
    from bot.persistence import fetch_feedback

    settings = _settings()
    (rows,) = _read_database(settings, fetch_feedback)
    # Comments and questions are typed by anyone: no NUL, bell or right-to-left override
    # reaches the reader's terminal, spreadsheet or JSON tools.
    rows = display_safe_data(rows)
    if as_csv:
        import csv

        fields = ["created_at", "value", "comment", "question", "answer", "citations", "thread_id"]
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            cited = "; ".join(str(c.get("code") or c.get("title")) for c in row["citations"] or [])
            out = utf8_safe_data({**row, "citations": cited})
            writer.writerow({k: spreadsheet_safe(v) for k, v in out.items()})
        return
    if as_json:
        _echo_json_document(rows)
        return
    if not rows:
        typer.echo("No feedback yet.")
    for row in rows:
        verdict = "👍" if row["value"] else "👎"
        cited = ", ".join(str(c.get("code") or c.get("title")) for c in row["citations"] or [])
        comment = f' — "{one_line(row["comment"])}"' if row.get("comment") else ""
        if row.get("answer_missing"):
            # A rating kept by a crash that lost its answer: shown, so it is not lost twice.
            when = row["created_at"] or "(time unknown)"
            line = f"{when} {verdict} (answer not stored: step {row['step_id']}){comment}"
            typer.echo(utf8_safe(line))
            continue
        line = f"{row['created_at']} {verdict} {one_line(row['question'])!r} [{cited}]{comment}"
        typer.echo(utf8_safe(line))


@app.command()
def gaps(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
    vocabulary: Annotated[
        bool,
        typer.Option(
            "--vocabulary",
            help="Only the candidate words for corpus/synonyms.txt (a JSON array with --json).",
        ),
    ] = False,
) -> None:
    """Content-gap report: abstentions and thumbs-down answers grouped by cited entry.

    Also proposes words for the synonyms file: words frequent in unanswered questions
    that the knowledge base never uses.
    """
    from bot.persistence import fetch_abstentions, fetch_feedback, gap_report

    settings = _settings()
    feedback_rows, abstentions = _read_database(settings, fetch_feedback, fetch_abstentions)
    report = display_safe_data(gap_report(feedback_rows, abstentions))
    candidates: list[dict[str, object]] | None = None
    if vocabulary or not as_json:
        candidates = _vocabulary_candidates(settings, [row["question"] for row in abstentions])
    if vocabulary:
        if as_json:
            if candidates is None:
                raise _fail("Candidate words need a current index: run `supportbot ingest` first.")
            _echo_json_document(candidates)
            return
        _print_candidates(candidates)
        return
    if as_json:
        _echo_json_document(report)
        return
    if not report:
        typer.echo("No gaps found: no abstentions and no thumbs-down answers yet.")
    for group in report:
        label = group["label"]
        typer.echo(
            f"{group['count']:4d}  {label}  (thumbs down: {group['thumbs_down']}, "
            f"not answered: {group['abstained']})"
        )
        questions = zip(group["questions"], group["asked"], strict=True)
        _print_some([f"{q} (asked {n} times)" if n > 1 else q for q, n in questions], "- {}")
        _print_some(group["comments"], 'comment: "{}"')
    _print_candidates(candidates)


# Questions and comments listed per group of the gap report; the rest are counted.
GAP_LISTED = 5


def _print_some(texts: list[str], template: str) -> None:
    """The first :data:`GAP_LISTED` texts, one line each, then how many more there are."""
    for text in texts[:GAP_LISTED]:
        # A multi-line ticket stays on its line of the listing.
        typer.echo("        " + template.format(one_line(text)))
    if len(texts) > GAP_LISTED:
        typer.echo(f"        …and {len(texts) - GAP_LISTED} more")


def _vocabulary_candidates(
    settings: Settings, questions: list[str]
) -> list[dict[str, object]] | None:
    """Candidate words for the synonyms file from the unanswered questions.

    None when there is no current index to compare with: a report never builds one.
    """
    if not questions:
        return []
    from bot.service import SupportBot
    from ingest.index import CorpusError, IndexUnavailableError
    from ingest.synonyms import candidate_words

    settings = settings.model_copy(deep=True)
    settings.index.auto_rebuild = False
    try:
        retriever = SupportBot.from_settings(settings).retriever
    except (IndexUnavailableError, CorpusError) as exc:
        logger.debug("No index for candidate words: %s", exc)
        return None
    return display_safe_data(
        candidate_words(
            questions, retriever.uncovered_words, written_in_words=retriever.written_in_words
        )
    )


def _print_candidates(candidates: list[dict[str, object]] | None) -> None:
    if candidates is None:
        typer.echo("Candidate words need a current index: run `supportbot ingest` first.")
        return
    if not candidates:
        typer.echo("No candidate words: no word recurs in unanswered questions.")
        return
    typer.echo(
        "\nWords unanswered questions use and the knowledge base never does "
        "(candidates for corpus/synonyms.txt):"
    )
    for c in candidates:
        examples = "; ".join(repr(one_line(q)) for q in c["examples"])  # type: ignore[union-attr]
        typer.echo(utf8_safe(f"{c['questions']:4d}  {c['word']}  e.g. {examples}"))


cluster_app = typer.Typer(
    help="Several replicas on this machine: PostgreSQL, N chat replicas and nginx in front.",
    no_args_is_help=True,
)
app.add_typer(cluster_app, name="cluster")
ClusterDir = Annotated[
    Path,
    typer.Option("--dir", help="Folder for the cluster's database, logs and nginx config."),
]


@cluster_app.command("up")
def cluster_up(
    replicas: Annotated[int, typer.Option(help="Chat replicas.", min=1, max=16)] = 2,
    port: Annotated[int, typer.Option(help="Port nginx listens on.", min=1, max=65535)] = 8080,
    folder: ClusterDir = REPO_ROOT / "data" / "cluster",
) -> None:
    """Start PostgreSQL, the replicas (merchant mode) and nginx on 127.0.0.1."""
    from bot.cluster import ClusterError
    from bot.cluster import cluster_up as start

    settings = _settings()
    # Builds the index once here, so the replicas only load it.
    _load_bot(settings)
    try:
        state = start(folder, replicas=replicas, port=port)
    except ClusterError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"Chat: {state.url}  (widget demo: {state.url}/public/widget-demo.html)")
    typer.echo(f"Database: {state.database_url}")
    for n, replica in enumerate(state.replicas, 1):
        typer.echo(f"Replica {n}: http://127.0.0.1:{replica['port']} (pid {replica['pid']})")
    typer.echo(f"Logs in {folder}; stop with: supportbot cluster down --dir {folder}")


@cluster_app.command("down")
def cluster_down(folder: ClusterDir = REPO_ROOT / "data" / "cluster") -> None:
    """Stop nginx, the replicas and PostgreSQL started by ``cluster up``."""
    from bot.cluster import ClusterError
    from bot.cluster import cluster_down as stop

    try:
        stopped = stop(folder)
    except ClusterError as exc:
        raise _fail(str(exc)) from None
    typer.echo("Cluster stopped." if stopped else f"No cluster is up in {folder}.")


@app.command()
def handoffs(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
    thread: Annotated[
        str | None,
        typer.Option("--thread", help="Print this conversation (the ID in the e-mail)."),
    ] = None,
) -> None:
    """Conversations handed off to a human ("Talk to a human"), oldest first."""
    from bot.persistence import fetch_handoffs, fetch_transcript

    settings = _settings()
    if thread is not None:
        # The hand-off e-mail gives the conversation's ID: this is the whole conversation.
        (messages,) = _read_database(settings, lambda url: fetch_transcript(url, thread))
        messages = display_safe_data(messages)
        if as_json:
            _echo_json_document(messages)
            return
        if not messages:
            raise _fail(f"No conversation {thread!r} in the chat database.")
        for message in messages:
            typer.echo(f"{message['created_at']}  {message['role']}:")
            typer.echo(message["text"])
            typer.echo("")
        return
    (rows,) = _read_database(settings, fetch_handoffs)
    rows = display_safe_data(rows)
    if as_json:
        _echo_json_document(rows)
        return
    if not rows:
        typer.echo("No hand-offs yet.")
    for row in rows:
        error = " — ".join(str(x) for x in (row.get("code"), row.get("message")) if x)
        question = one_line(row["question"] or "")
        error = f"  [{one_line(error)}]" if error else ""
        typer.echo(f"{row['created_at']}  {question!r}{error}")
        if row.get("follow_up"):
            typer.echo(f"        then asked: {one_line(row['follow_up'])!r}")
        if row.get("seen"):
            typer.echo(f"        saw: {one_line(row['seen'])}")
        typer.echo(f"        suggested: {one_line(row.get('suggested') or '') or '-'}")
        typer.echo(f"        conversation: {row.get('link') or row['thread_id']}")
        typer.echo(f"        transcript: supportbot handoffs --thread {row['thread_id']}")


def _unexpected(exc: BaseException) -> int:
    """Report a failure no command anticipated in one line (the traceback goes to the log)."""
    logger.debug("Unexpected failure", exc_info=exc)
    reason = utf8_safe(str(exc)) or type(exc).__name__
    console.print(
        f"[red]Error:[/red] the command failed unexpectedly ({escape(type(exc).__name__)}: "
        f"{escape(reason)}). Run it again with SUPPORTBOT_LOG_LEVEL=DEBUG for details."
    )
    return 1


def main() -> None:
    """Entry point of the ``supportbot`` command and ``python -m bot.cli``."""
    # Whatever slips past the commands' own checks (text from a database or a file with
    # lone surrogates, say) is written with a replacement character rather than crashing
    # the write halfway through.
    for stream, errors in ((sys.stdout, "replace"), (sys.stderr, "backslashreplace")):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors=errors)
    try:
        app()
    except SystemExit as exc:
        code = exc.code
    except Exception as exc:  # noqa: BLE001 - the last line of defence against a traceback
        code = _unexpected(exc)
    else:  # pragma: no cover - typer always exits
        code = 0
    if "torch" in sys.modules:
        # Tearing torch down at interpreter exit takes ~1.4 s on 2 cores, a seventh of a
        # whole ingest; by now everything is written, synced and closed.
        if code is not None and not isinstance(code, int):
            sys.stderr.write(f"{code}\n")  # what SystemExit would have printed
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code if isinstance(code, int) else (0 if code is None else 1))
    raise SystemExit(code)


if __name__ == "__main__":
    main()
