"""Mutation run: how many planted bugs in the core modules the fast tests catch.

    .venv/bin/python -m evals.mutation [--only ID ...] [--json evals/mutation.json]

Each mutant is one small, deliberate bug in ``ingest/parse.py``, ``ingest/chunking.py``,
``ingest/index.py``, ``bot/retrieval.py``, ``bot/answer.py`` or ``bot/drafting.py``
(among them the bugs a review of the suite once planted by hand: a solution cut to its
first line, the sub-errors' steps of a grouped entry dropped, the checksum check switched
off, the abstention threshold moved by 0.05, the wrong entry cited). For each, the repository
is copied to a temporary folder, the mutant is applied there, and the module's tests
run with ``pytest -x`` in that copy (``PYTHONPATH`` points at it, so subprocesses such
as the ``supportbot`` command run the mutant too). A mutant is *killed* when a test
fails. The run prints every mutant with its outcome and the kill rate, and exits 1
when a mutant survives or no longer applies (the code it mutates has changed).

Before the mutants, the same tests run on the unmodified copy: a failing baseline
would make every mutant look killed, so the run stops there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
# Copied into the scratch folder: what the tests need, nothing built or installed.
COPIED = ("bot", "ingest", "evals", "tests", "corpus", "public", ".chainlit", "chainlit.md")
COPIED_FILES = ("pyproject.toml", ".env.example", "README.md")
# A mutant whose tests run longer than this counts as killed (e.g. an endless loop).
TIMEOUT_S = 900

# The fast tests that guard each module, quickest first (pytest -x stops at the first
# failure). The eval regression test, the load and browser tests are left out: they
# take minutes and are not what a mutant in these modules should need to be caught by.
TESTS = {
    "ingest/parse.py": ["tests/test_parse.py", "tests/test_chunking.py"],
    "ingest/chunking.py": ["tests/test_chunking.py", "tests/test_index.py", "tests/test_answer.py"],
    "ingest/index.py": ["tests/test_index.py"],
    "bot/retrieval.py": [
        "tests/test_retrieval.py",
        "tests/test_answer.py",
        "tests/test_hostile.py",
    ],
    "bot/answer.py": ["tests/test_answer.py", "tests/test_hostile.py", "tests/test_app_render.py"],
    "bot/drafting.py": [
        "tests/test_drafting.py",
        "tests/test_answer.py",
        "tests/test_chat_view.py",
    ],
}


@dataclass(frozen=True)
class Mutant:
    """One planted bug: ``old`` (which must occur exactly once) replaced by ``new``."""

    id: str
    path: str
    old: str
    new: str
    what: str


MUTANTS: tuple[Mutant, ...] = (
    # -- ingest/parse.py -------------------------------------------------------------
    Mutant(
        "parse-solution-first-line",
        "ingest/parse.py",
        '        name = draft.last if draft.last in ("cause", "solution", "text") else "text"\n'
        "        _append(draft.fields, name, line)\n",
        '        name = draft.last if draft.last in ("cause", "solution", "text") else "text"\n'
        '        if name != "solution":\n'
        "            _append(draft.fields, name, line)\n",
        "a solution keeps only its first line",
    ),
    Mutant(
        "parse-drop-sub-error-solution",
        "ingest/parse.py",
        '                        solution=part.fields.get("solution"),\n',
        "                        solution=None,\n",
        "the sub-errors of a grouped entry lose their solution",
    ),
    Mutant(
        "parse-drop-gloss",
        "ingest/parse.py",
        '                draft.fields["message_gloss"] = gloss\n',
        "                pass\n",
        "the English gloss of a Swedish message is dropped",
    ),
    Mutant(
        "parse-no-numeric-code",
        "ingest/parse.py",
        "                numeric_code=numeric[1] if numeric else None,\n",
        "                numeric_code=None,\n",
        "numeric codes such as 2000637 are not extracted",
    ),
    Mutant(
        "parse-drop-severity",
        "ingest/parse.py",
        '                severity=values.get("severity"),\n',
        "                severity=None,\n",
        "the severity is not kept",
    ),
    # -- ingest/chunking.py ----------------------------------------------------------
    Mutant(
        "chunk-drop-solution",
        "ingest/chunking.py",
        '        lines.append(f"Solution: {entry.solution}")\n',
        "        pass\n",
        "the embedded text of an entry leaves out its solution",
    ),
    Mutant(
        "chunk-drop-sub-error-cause",
        "ingest/chunking.py",
        '            lines.append(f"Cause: {part.cause}")\n',
        "            pass\n",
        "the embedded text of a grouped entry leaves out the sub-errors' causes",
    ),
    Mutant(
        "chunk-bound-doubled",
        "ingest/chunking.py",
        "    if total <= max_tokens:\n",
        "    if total <= 2 * max_tokens:\n",
        "an entry up to twice the token bound stays one chunk",
    ),
    Mutant(
        "chunk-no-title",
        "ingest/chunking.py",
        '        piece = f"{head}\\n{body}"\n',
        "        piece = body\n",
        "later chunks of a long entry lose the entry's title line",
    ),
    # -- ingest/index.py -------------------------------------------------------------
    Mutant(
        "index-checksum-off",
        "ingest/index.py",
        "        if sha256_bytes(raw[name]) != files.get(name):\n",
        "        if False:\n",
        "the index files' checksums are not checked",
    ),
    Mutant(
        "index-manifest-checksum-off",
        "ingest/index.py",
        "    if manifest.get(MANIFEST_CHECKSUM) != manifest_checksum(manifest):\n",
        "    if False:\n",
        "the manifest's own checksum is not checked",
    ),
    Mutant(
        "index-corpus-change-not-stale",
        "ingest/index.py",
        '        "corpus": {f.name: f.sha256 for f in files},\n        "chunking": {"max_tokens": '
        'config.chunk_tokens, "encoding": config.encoding},\n    }\n',
        '        "chunking": {"max_tokens": config.chunk_tokens, "encoding": config.encoding},\n'
        "    }\n",
        "an index built from another corpus is not stale",
    ),
    Mutant(
        "index-dimension-unchecked",
        "ingest/index.py",
        "        or vectors.d != dimension\n        or titles.d != dimension\n",
        "",
        "vectors of another dimension than the manifest's are accepted",
    ),
    Mutant(
        "index-old-builds-kept",
        "ingest/index.py",
        "    _remove_old_builds(out_dir, keep=build.name)\n",
        "",
        "old builds are never removed",
    ),
    # -- bot/retrieval.py ------------------------------------------------------------
    Mutant(
        "retrieval-threshold-plus-0.05",
        "bot/retrieval.py",
        "        if confidence < s.min_confidence:\n",
        "        if confidence < s.min_confidence + 0.05:\n",
        "the abstention threshold moved up by 0.05",
    ),
    Mutant(
        "retrieval-threshold-minus-0.05",
        "bot/retrieval.py",
        "        if confidence < s.min_confidence:\n",
        "        if confidence < s.min_confidence - 0.05:\n",
        "the abstention threshold moved down by 0.05",
    ),
    Mutant(
        "retrieval-no-numeric-lookup",
        "bot/retrieval.py",
        "            if e.numeric_code and e.numeric_code in numbers:\n",
        "            if False:\n",
        "numeric codes are not looked up exactly",
    ),
    Mutant(
        "retrieval-filters-ignored",
        "bot/retrieval.py",
        "        allowed = np.array([matches_filters(e, filters) for e in self.entries], "
        "dtype=bool)\n",
        "        allowed = np.ones(len(self.entries), dtype=bool)\n",
        "severity/system filters are ignored",
    ),
    Mutant(
        "retrieval-related-unbounded",
        "bot/retrieval.py",
        "            if best_fused > 0 and fused[pos] >= s.related_ratio * best_fused:\n",
        "            if True:\n",
        "every runner-up is cited as related, however weak",
    ),
    Mutant(
        "retrieval-bm25-weight-halved",
        "bot/retrieval.py",
        "                fused += s.bm25_weight * self._keyword(bm25)\n",
        "                fused += 0.5 * s.bm25_weight * self._keyword(bm25)\n",
        "the BM25 fusion weight halved",
    ),
    Mutant(
        "retrieval-follow-up-boost-off",
        "bot/retrieval.py",
        "                # unless the new question clearly points elsewhere.\n"
        "                fused[pos] += s.follow_up_boost\n",
        "                # unless the new question clearly points elsewhere.\n"
        "                pass\n",
        "a follow-up no longer favours the entry the conversation is about",
    ),
    # -- bot/answer.py ---------------------------------------------------------------
    Mutant(
        "answer-solution-first-line",
        "bot/drafting.py",
        '    for raw in solution.split("\\n"):\n',
        '    for raw in solution.split("\\n")[:1]:\n',
        "an answer keeps only the first line of a solution",
    ),
    Mutant(
        "answer-drop-sub-error-steps",
        "bot/answer.py",
        '            lines.append("What to do:")\n'
        "            lines.extend(solution_lines(part.solution))\n",
        '            lines.append("What to do:")\n',
        'the "What to do" steps of a grouped entry\'s sub-errors are dropped',
    ),
    Mutant(
        "answer-cites-wrong-entry",
        "bot/answer.py",
        "    citations = tuple(Citation(h.entry, h.score) for h in result.hits)\n"
        "    text = format_answer(",
        "    citations = tuple(\n"
        "        Citation(h.entry, h.score) for h in result.hits[1:] or result.hits\n"
        "    )\n"
        "    text = format_answer(",
        "an answer cites the runner-up instead of the entry it shows",
    ),
    Mutant(
        "draft-uses-last-hit",
        "bot/answer.py",
        "    entry = result.hits[0].entry\n",
        "    entry = result.hits[-1].entry\n",
        "a draft is written from the last retrieved entry, not the first",
    ),
    Mutant(
        "answer-controls-kept",
        "bot/answer.py",
        '    question = _CONTROL.sub(" ", question)\n',
        "",
        "control characters and lone surrogates are not cleaned from questions",
    ),
    Mutant(
        "answer-no-truncation-notice",
        "bot/answer.py",
        "    if cut or cut_early:\n",
        "    if False:\n",
        "a long question is cut without telling the user",
    ),
    Mutant(
        "answer-abstain-without-contacts",
        "bot/answer.py",
        "    lines.append(support_contacts(entries, settings))\n",
        "",
        "an abstention no longer gives the route to a human",
    ),
    Mutant(
        "answer-history-ignored",
        "bot/answer.py",
        '    if not history or result.reason == "exact":\n',
        "    if True:\n",
        "follow-up questions ignore the conversation",
    ),
    Mutant(
        "answer-bound-ignored",
        "bot/answer.py",
        "    if count(text) <= max_tokens:\n",
        "    if True:\n",
        "answers are never shortened to the token bound",
    ),
)


@dataclass
class Outcome:
    """What one mutant's test run came to."""

    id: str
    path: str
    what: str
    status: str  # killed | survived | timeout | not-applicable
    seconds: float
    killed_by: str = ""


def _copy_repo(dest: Path) -> None:
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in COPIED_FILES:
        if (REPO / name).exists():
            shutil.copy2(REPO / name, dest / name)


def _pytest(copy: Path, tests: list[str], timeout: float) -> tuple[int | None, str]:
    """Run pytest -x on ``tests`` inside the copy; (exit code or None on timeout, output)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SUPPORTBOT_")}
    # The copy's packages come before the editable install of the real checkout.
    env["PYTHONPATH"] = str(copy)
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(
            command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or ""
        return None, out if isinstance(out, str) else out.decode("utf-8", "replace")
    return done.returncode, done.stdout + done.stderr


def _first_failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" - ", 1)[0].split(" ", 1)[1]
    return ""


def run_mutant(copy: Path, mutant: Mutant, timeout: float = TIMEOUT_S) -> Outcome:
    """Apply one mutant to the copy, run its module's tests, restore the file."""
    target = copy / mutant.path
    original = target.read_text(encoding="utf-8")
    if original.count(mutant.old) != 1:
        return Outcome(mutant.id, mutant.path, mutant.what, "not-applicable", 0.0)
    target.write_text(original.replace(mutant.old, mutant.new), encoding="utf-8")
    started = time.perf_counter()
    try:
        code, output = _pytest(copy, TESTS[mutant.path], timeout)
    finally:
        target.write_text(original, encoding="utf-8")
    seconds = time.perf_counter() - started
    if code is None:
        return Outcome(mutant.id, mutant.path, mutant.what, "timeout", seconds)
    status = "survived" if code == 0 else "killed"
    killer = _first_failure(output) if code else ""
    if code not in (0, 1):
        killer = killer or f"pytest exit {code}"
    return Outcome(mutant.id, mutant.path, mutant.what, status, seconds, killer)


def main(argv: list[str] | None = None) -> int:
    """Run the baseline and every (or the selected) mutant; print outcomes and the kill rate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="Mutant ids to run.")
    parser.add_argument("--json", type=Path, default=None, help="Write the outcomes here.")
    parser.add_argument("--list", action="store_true", help="List the mutants and exit.")
    parser.add_argument(
        "--skip-baseline", action="store_true", help="Do not run the unmodified tests first."
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    mutants = [m for m in MUTANTS if args.only is None or m.id in args.only]
    if args.list:
        for m in MUTANTS:
            print(f"{m.id:34} {m.path:20} {m.what}")
        return 0
    if not mutants:
        parser.error("no mutant matches --only")

    with tempfile.TemporaryDirectory(prefix="supportbot-mutation-") as tmp:
        copy = Path(tmp)
        _copy_repo(copy)
        if not args.skip_baseline:
            tests = sorted({t for m in mutants for t in TESTS[m.path]})
            log.info("baseline: %s", " ".join(tests))
            code, output = _pytest(copy, tests, 4 * TIMEOUT_S)
            if code != 0:
                print(output[-4000:])
                print("The unmodified tests fail: fix them before measuring mutants.")
                return 1
        outcomes = []
        for mutant in mutants:
            outcome = run_mutant(copy, mutant)
            outcomes.append(outcome)
            log.info(
                "%-34s %-15s %6.1f s  %s",
                mutant.id,
                outcome.status,
                outcome.seconds,
                outcome.killed_by,
            )

    applicable = [o for o in outcomes if o.status != "not-applicable"]
    killed = [o for o in applicable if o.status in ("killed", "timeout")]
    rate = len(killed) / len(applicable) if applicable else 0.0
    print()
    for o in outcomes:
        print(f"{o.status:15} {o.id:34} {o.what}" + (f"  [{o.killed_by}]" if o.killed_by else ""))
    print(f"\nkilled {len(killed)} of {len(applicable)} mutants: kill rate {rate:.0%}")
    if args.json:
        data = {"kill_rate": rate, "outcomes": [asdict(o) for o in outcomes]}
        args.json.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 0 if len(killed) == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
