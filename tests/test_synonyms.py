"""The synonyms file: its pure parser (golden-tested on the real file), matching, ingest.

Also the typo corrector's promise: a real English word is never "corrected".
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ingest.index import StaleIndexError, build_index, check_manifest
from ingest.keyword import TypoCorrector, is_english_word
from ingest.parse import SYNONYMS_FILE, SynonymRule, parse_synonyms
from ingest.synonyms import Synonyms, words_of
from tests.conftest import CORPUS

GOLDEN = Path(__file__).resolve().parent / "golden" / "synonyms.json"


def test_equivalent_terms_and_explicit_mappings():
    text = "# comment\n\n401, Unauthorized , unauthorised\nmade it across, went through => synced\n"
    rules, issues = parse_synonyms(text, "s.txt")
    assert issues == []
    assert rules == (
        SynonymRule(
            ("401", "unauthorized", "unauthorised"), ("401", "unauthorized", "unauthorised"), 3
        ),
        SynonymRule(("made it across", "went through"), ("synced",), 4),
    )
    assert not rules[0].explicit
    assert rules[1].explicit


def test_escaped_comma_spaces_and_repeats():
    rules, issues = parse_synonyms("a\\,b,  c   d ,c d\n", "s.txt")
    assert issues == []
    assert rules[0].inputs == ("a,b", "c d")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a => b => c", "more than one =>"),
        (" => b", "both sides"),
        ("a =>", "both sides"),
        ("lonely", "at least two terms"),
        (",,,", "at least two terms"),
    ],
)
def test_malformed_lines_are_reported_and_skipped(line, message):
    rules, issues = parse_synonyms(f"x, y\n{line}\nz, w\n", "s.txt")
    assert [r.line for r in rules] == [1, 3]
    assert len(issues) == 1
    assert issues[0].line == 2
    assert message in issues[0].message
    assert issues[0].source == "s.txt"


def test_hostile_text_never_raises():
    for text in ("", "\x00\x01", "=>" * 1000, "é, e\u0301", "\ufeffa, b", "a, b\r\nc, d"):
        rules, issues = parse_synonyms(text, "s.txt")
        assert isinstance(rules, tuple)
        assert isinstance(issues, list)


def test_real_synonyms_file_matches_golden():
    text = (CORPUS / SYNONYMS_FILE).read_text(encoding="utf-8")
    rules, issues = parse_synonyms(text, SYNONYMS_FILE)
    assert issues == []
    assert [r.to_dict() for r in rules] == json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert all(SynonymRule.from_dict(r.to_dict()) == r for r in rules)


def test_matching_is_on_whole_words_longest_first():
    synonyms = Synonyms(
        parse_synonyms(
            "429 => too many requests\nmade it => done\nmade it across => synced\n", "s"
        )[0]
    )
    assert synonyms.expansions("Centra says HTTP 429") == ["too many requests"]
    assert synonyms.expansions("error 4290 and a4299") == []
    assert synonyms.expansions("did order 7 make it across? it made it across") == ["synced"]
    assert synonyms.expand("got 429") == "got 429 (too many requests)"
    assert synonyms.variants("HTTP 429 from Centra") == ["http too many requests from centra"]
    assert synonyms.covered_words("it made it across today") == {"made", "it", "across"}
    assert words_of("FORTNOX_FISCAL_YEAR!") == ["fortnox", "fiscal", "year"]


def test_typo_corrector_leaves_real_words_alone():
    corrector = TypoCorrector({"three", "customer", "available"}, protected=is_english_word)
    assert corrector.correct("theme") == "theme"
    assert corrector.correct("custmer") == "customer"  # missing letter
    assert corrector.correct("avaliable") == "available"  # swapped letters
    assert corrector.correct("customerr") == "customer"  # doubled letter
    assert is_english_word("subscription")
    assert not is_english_word("custmer")


def test_synonyms_file_is_ingested_and_in_the_manifest(tmp_path, settings_factory, fake_embedder):
    from bot.service import index_config

    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    config = index_config(settings_factory(corpus))
    index = build_index(config, fake_embedder)
    assert SYNONYMS_FILE in index.manifest["corpus"]
    assert (
        index.synonyms
        == parse_synonyms((corpus / SYNONYMS_FILE).read_text(encoding="utf-8"), SYNONYMS_FILE)[0]
    )
    # The synonyms file is vocabulary, never parsed as a document of entries.
    assert all(e.source != SYNONYMS_FILE for e in index.entries)
    (corpus / SYNONYMS_FILE).write_text("gbp => currency\n", encoding="utf-8")
    with pytest.raises(StaleIndexError, match="corpus"):
        check_manifest(index.manifest, config, index.manifest["model"])


def test_synonyms_survive_save_and_load(tmp_path, settings_factory, fake_embedder):
    from bot.service import index_config
    from ingest.index import load_index, save_index

    config = index_config(settings_factory())
    index = build_index(config, fake_embedder)
    save_index(index, tmp_path / "vs")
    loaded = load_index(tmp_path / "vs", config, fake_embedder)
    assert loaded.synonyms == index.synonyms
    assert loaded.synonyms


def test_gap_candidates_are_words_recurring_in_unanswered_questions():
    from ingest.synonyms import candidate_words

    vocabulary = {"how", "do", "i", "my", "junipeer", "the", "a", "can"}

    def uncovered(question: str) -> list[str]:
        return [w for w in words_of(question) if w not in vocabulary]

    questions = [
        "How do I cancel my Junipeer subscription?",
        "can I cancel the subscription",
        "can I cancel the subscription",  # the same question twice counts once
        "subscription price?",
        "a one-off word",
    ]
    found = candidate_words(questions, uncovered)
    assert [(c["word"], c["questions"]) for c in found] == [("subscription", 3), ("cancel", 2)]
    assert found[0]["examples"][0] == "How do I cancel my Junipeer subscription?"
    assert candidate_words([], uncovered) == []


@pytest.mark.model
async def test_gaps_proposes_words_of_unanswered_questions(tmp_path, real_bot, real_index_dir):
    from typer.testing import CliRunner

    from bot.cli import app
    from bot.persistence import create_schema_async, make_data_layer
    from tests.test_persistence import _step, _use_chainlit_context

    _use_chainlit_context()
    url = f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}"
    await create_schema_async(url)
    layer = make_data_layer(url)
    for n, question in enumerate(
        ["How do I cancel my Junipeer subscription?", "is there a subscription for students?"]
    ):
        step = _step(
            f"00000000-0000-0000-0000-00000000000{n}",
            "assistant_message",
            "I have no information on …",
            createdAt=f"2026-01-01T10:0{n}:00Z",
            metadata={"kind": "answer", "question": question, "abstained": True},
        )
        await layer.update_thread(step["threadId"], name=question)
        await layer.create_step(step)
    await layer.close()

    env = {"SUPPORTBOT_CHAT__DATABASE_URL": url, "SUPPORTBOT_INDEX__DIR": str(real_index_dir)}
    result = CliRunner().invoke(app, ["gaps", "--vocabulary", "--json"], env=env)
    assert result.exit_code == 0, result.output
    (candidate,) = json.loads(result.stdout)
    assert (candidate["word"], candidate["questions"]) == ("subscription", 2)
    plain = CliRunner().invoke(app, ["gaps"], env=env)
    assert plain.exit_code == 0, plain.output
    assert "candidates for corpus/synonyms.txt" in plain.stdout
    missing = {**env, "SUPPORTBOT_INDEX__DIR": str(tmp_path / "no-index")}
    no_index = CliRunner().invoke(app, ["gaps"], env=missing)
    assert no_index.exit_code == 0, no_index.output
    assert "need a current index" in no_index.stdout
    assert not (tmp_path / "no-index").exists()


@pytest.mark.model
async def test_gaps_leave_out_greetings_and_keyboard_mash(tmp_path, real_bot, real_index_dir):
    from typer.testing import CliRunner

    from bot import chat_render as render
    from bot.cli import app
    from bot.persistence import create_schema_async, make_data_layer
    from tests.test_persistence import _step, _use_chainlit_context

    _use_chainlit_context()
    url = f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}"
    await create_schema_async(url)
    layer = make_data_layer(url)
    questions = [
        "hello",
        "thanks!",
        "asdfgh qwerty",
        "qwerty asdfgh",
        "asdfgh",
        "Can Junipeer send me an SMS when an order fails?",
        "do you send an SMS alert when a sync stops?",
    ]
    for n, question in enumerate(questions):
        # What the chat stores for the answer it showed.
        metadata = render.render_answer(real_bot.answer(question)).metadata
        step = _step(
            f"00000000-0000-0000-0000-00000000001{n}",
            "assistant_message",
            "…",
            createdAt=f"2026-01-01T10:0{n}:00Z",
            metadata=metadata,
        )
        await layer.update_thread(step["threadId"], name=question)
        await layer.create_step(step)
    await layer.close()

    env = {"SUPPORTBOT_CHAT__DATABASE_URL": url, "SUPPORTBOT_INDEX__DIR": str(real_index_dir)}
    result = CliRunner().invoke(app, ["gaps", "--vocabulary", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert [c["word"] for c in json.loads(result.stdout)] == ["sms"]
    report = CliRunner().invoke(app, ["gaps", "--json"], env=env)
    listed = {q for group in json.loads(report.stdout) for q in group["questions"]}
    assert "hello" not in listed
    assert "thanks!" not in listed
    assert "asdfgh qwerty" in listed  # still not answered: a gap, just not a word to add
