"""Tests for ingest.parse: format quirks on small snippets, then the real corpus vs. a golden file.

Regenerate the golden files after an intended parser change with::

    python -m tests.test_parse --update

and review the diff of ``tests/golden/`` before committing.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ingest.entries import KINDS, Entry, ParseResult
from ingest.parse import (
    _split_systems,
    parse_document,
    parse_error_guide,
    parse_faq,
    slugify,
)

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "corpus"
GOLDEN = Path(__file__).resolve().parent / "golden"
CORPUS_FILES = ("faq.txt", "error-codes.txt")
NOISE = "Was this article helpful?"


# --------------------------------------------------------------------------- helpers


def _read(name: str) -> str:
    # newline="" keeps the file's own line endings so the parser sees them as they are.
    with open(CORPUS / name, encoding="utf-8", newline="") as handle:
        return handle.read()


def _parse_corpus() -> list[Entry]:
    entries: list[Entry] = []
    for name in CORPUS_FILES:
        entries.extend(parse_document(_read(name), name).entries)
    return entries


def _as_json(entries: list[Entry]) -> list[dict[str, Any]]:
    # Round-trip through JSON so tuples compare equal to the golden's lists.
    return json.loads(json.dumps([entry.to_dict() for entry in entries], ensure_ascii=False))


def _counts(entries: list[Entry]) -> dict[str, int]:
    counter = Counter(entry.kind for entry in entries)
    return {kind: counter[kind] for kind in KINDS}


def _by_id(result: ParseResult) -> dict[str, Entry]:
    return {entry.id: entry for entry in result.entries}


def _messages(result: ParseResult) -> list[str]:
    return [issue.message for issue in result.issues]


def _guide(body: str) -> str:
    """A minimal error guide around ``body`` (one heading, then the snippet)."""
    return "Additional Error Patterns\n" + body.strip("\n") + "\n"


# --------------------------------------------------------------------------- header-line quirks


def test_severity_and_message_on_one_line() -> None:
    """``Severity: Error Message: "…" (gloss)`` is split into severity, message and gloss."""
    text = (
        "Fortnox Error Codes\n"
        "FORTNOX_SHIPPING_NOT_FOUND\n"
        'Severity: Error Message: "Kunde inte hämta/hitta leveranssätt" '
        "(Could not retrieve/find shipping method)\n"
        "Cause: A shipping method was removed.\n"
        "Solution: Re-create it.\n"
    )
    result = parse_error_guide(text, "snippet.txt")
    assert result.issues == ()
    (entry,) = result.entries
    assert entry.kind == "error_code"
    assert entry.id == entry.code == entry.title == "FORTNOX_SHIPPING_NOT_FOUND"
    assert entry.severity == "Error"
    assert entry.message == "Kunde inte hämta/hitta leveranssätt"
    assert entry.message_gloss == "Could not retrieve/find shipping method"
    assert entry.section == "Fortnox Error Codes"
    assert entry.line == 2


def test_message_on_its_own_later_line() -> None:
    """``Severity: Error`` alone, with the Message on a following line, gives the same fields."""
    text = (
        "Fortnox Error Codes\n"
        "FORTNOX_CUSTOMER_NAME_EMPTY\n"
        "Severity: Error\n"
        'Message: "Customer name cannot be empty (2000637)"\n'
        "Cause: No customer name.\n"
        "Solution: Configure a default customer name.\n"
    )
    result = parse_error_guide(text, "snippet.txt")
    assert result.issues == ()
    (entry,) = result.entries
    assert entry.severity == "Error"
    assert entry.message == "Customer name cannot be empty (2000637)"
    assert entry.message_gloss is None
    assert entry.numeric_code == "2000637"


def test_message_containing_the_word_message_stays_whole() -> None:
    """A message like ``"Error message:"`` is not split again at its own colon."""
    text = (
        "General Error Codes\n"
        "ERROR_MESSAGE\n"
        'Severity: Error Message: "Error message:" (followed by details)\n'
        "Cause: Too long.\n"
        "Solution: Shorten it.\n"
    )
    (entry,) = parse_error_guide(text, "snippet.txt").entries
    assert entry.message == "Error message:"
    assert entry.message_gloss == "followed by details"


def test_systems_and_severity_on_one_line() -> None:
    """``Systems: A → B Severity: Warning`` yields systems_text without the severity part."""
    text = _guide(
        "Credit memo VAT handling mismatch\n"
        "Systems: Business Central (ERP), Centra (e-commerce) Severity: Warning\n"
        "Cause: Settings differ.\n"
        "Solution: Align them.\n"
    )
    result = parse_error_guide(text, "snippet.txt")
    assert result.issues == ()
    (entry,) = result.entries
    assert entry.kind == "error_pattern"
    assert entry.id == "error_pattern:credit-memo-vat-handling-mismatch"
    assert entry.code is None
    assert entry.systems_text == "Business Central (ERP), Centra (e-commerce)"
    assert entry.systems == ("Business Central", "Centra")
    assert entry.severity == "Warning"
    assert entry.message is None
    assert entry.section == "Additional Error Patterns"


def test_systems_severity_and_message_on_one_line() -> None:
    """All three header fields on one line, with a non-ASCII message and a gloss."""
    text = _guide(
        "Visma Business — customer number allocation error\n"
        "Systems: Centra → Visma Business (ERP) Severity: Error Message: "
        '"Det var inte mulig å allokere nummer fra den angitte nummerserie" '
        "(Could not allocate number from the specified number series)\n"
        "Cause: The number series is exhausted.\n"
        "Solution: Extend the series.\n"
    )
    result = parse_error_guide(text, "snippet.txt")
    assert result.issues == ()
    (entry,) = result.entries
    assert entry.systems_text == "Centra → Visma Business (ERP)"
    assert entry.systems == ("Centra", "Visma Business")
    assert entry.severity == "Error"
    assert entry.message == "Det var inte mulig å allokere nummer fra den angitte nummerserie"
    assert entry.message_gloss == "Could not allocate number from the specified number series"


def test_titles_keep_quotes_and_dashes() -> None:
    """Titles are kept exactly as written; ids use the slug."""
    text = _guide(
        '"Loaded 0 Articles" — product not found in ERP\n'
        "Systems: Business Central, Visma.net (source ERP → e-commerce destination) "
        "Severity: Error\n"
        "Cause: Zero articles loaded.\n"
        "Solution: Check the product.\n"
        "Sync stops after processing 700–900 records\n"
        "Systems: WooCommerce → Fortnox, any high-volume flow Severity: Error\n"
        "Cause: Memory limits.\n"
        "Solution: Split large syncs.\n"
    )
    result = parse_error_guide(text, "snippet.txt")
    assert result.issues == ()
    first, second = result.entries
    assert first.title == '"Loaded 0 Articles" — product not found in ERP'
    assert first.id == "error_pattern:loaded-0-articles-product-not-found-in-erp"
    assert first.systems == ("Business Central", "Visma.net")
    assert second.title == "Sync stops after processing 700–900 records"
    assert second.id == "error_pattern:sync-stops-after-processing-700-900-records"
    assert second.systems == ("WooCommerce", "Fortnox", "any high-volume flow")
    assert (first.line, second.line) == (2, 6)


def test_non_ascii_is_kept_exactly() -> None:
    """Swedish/Norwegian letters and arrows survive untouched in every field."""
    text = (
        "Fortnox Error Codes\n"
        "FORTNOX_CURRENCY_NOT_FOUND\n"
        'Severity: Error Message: "Kunde inte hämta/hitta valuta"\n'
        "Cause: Currency not enabled.\n"
        "Solution: Go to Settings → Leverantörsfakturor → Valuta; Ø and æ stay too.\n"
    )
    (entry,) = parse_error_guide(text, "snippet.txt").entries
    assert entry.message == "Kunde inte hämta/hitta valuta"
    assert entry.solution == "Go to Settings → Leverantörsfakturor → Valuta; Ø and æ stay too."


def test_grouped_error_code_has_parts() -> None:
    """A code followed by intro text and quoted sub-errors becomes one entry with parts."""
    text = (
        "Fortnox Error Codes\n"
        "COMMON_FORTNOX_ERRORS_EXPLAINED\n"
        "Severity: Error\n"
        "This is a grouped reference covering two errors:\n"
        '"Kunde inte hämta/hitta moms" (Could not retrieve/find VAT)\n'
        "Cause: VAT rates are missing.\n"
        "Solution: Create the VAT rate.\n"
        '"Kunde inte hämta/hitta valuta" (Could not retrieve/find currency)\n'
        "Cause: Currency not enabled.\n"
        "Solution: Enable it.\n"
        "FORTNOX_FISCAL_YEAR\n"
        'Severity: Error Message: "Fiscal year not available"\n'
        "Cause: No fiscal year.\n"
        "Solution: Create it.\n"
    )
    result = parse_error_guide(text, "snippet.txt")
    assert result.issues == ()
    grouped, fiscal = result.entries
    assert grouped.text == "This is a grouped reference covering two errors:"
    assert (grouped.message, grouped.cause, grouped.solution) == (None, None, None)
    assert [(p.message, p.gloss) for p in grouped.parts] == [
        ("Kunde inte hämta/hitta moms", "Could not retrieve/find VAT"),
        ("Kunde inte hämta/hitta valuta", "Could not retrieve/find currency"),
    ]
    assert grouped.parts[1].cause == "Currency not enabled."
    assert grouped.parts[1].solution == "Enable it."
    assert grouped.messages() == [
        "Kunde inte hämta/hitta moms",
        "Could not retrieve/find VAT",
        "Kunde inte hämta/hitta valuta",
        "Could not retrieve/find currency",
    ]
    assert fiscal.code == "FORTNOX_FISCAL_YEAR"
    assert fiscal.parts == ()


def test_multi_line_solution_is_joined_with_newlines() -> None:
    """Lines after ``Solution:`` (a list, then more sentences) continue the solution."""
    text = (
        "Fortnox Error Codes\n"
        "FORTNOX_PAYMENT_DATE\n"
        'Severity: Error Message: "The payment date cannot precede the invoice date"\n'
        "Cause: Timing gap.\n"
        "Solution: Junipeer uses the following date priority order:\n"
        "Payment provider date (highest priority)\n"
        "Order date\n"
        "Sync date (lowest priority)\n"
        "If this error occurs frequently, check your scheduling.\n"
        "General Error Codes\n"
    )
    result = parse_error_guide(text, "snippet.txt")
    (entry,) = result.entries
    assert entry.solution == (
        "Junipeer uses the following date priority order:\n"
        "Payment provider date (highest priority)\n"
        "Order date\n"
        "Sync date (lowest priority)\n"
        "If this error occurs frequently, check your scheduling."
    )
    # The trailing heading has no content: reported, not silently swallowed.
    assert _messages(result) == ["section 'General Error Codes' is empty"]


def test_guide_sections_become_guide_entries() -> None:
    """Prose directly under a heading is a guide entry; code-only headings are not."""
    text = (
        "Overview\n"
        "First paragraph.\n"
        "Second paragraph.\n"
        "Additional Error Patterns\n"
        "The following errors appear in support cases.\n"
        "Token expiration\n"
        "Systems: All OAuth-based connectors (Fortnox, Visma.net) Severity: Critical\n"
        "Cause: Tokens expire.\n"
        "Solution: Reconnect.\n"
        "Tips\n"
        "Tip one.\n"
        "Tip two.\n"
    )
    result = parse_error_guide(text, "snippet.txt")
    assert result.issues == ()
    kinds = [(e.kind, e.id, e.line) for e in result.entries]
    assert kinds == [
        ("guide", "guide:overview", 1),
        ("guide", "guide:additional-error-patterns", 4),
        ("error_pattern", "error_pattern:token-expiration", 6),
        ("guide", "guide:tips", 10),
    ]
    entries = _by_id(result)
    assert entries["guide:overview"].text == "First paragraph.\nSecond paragraph."
    assert entries["guide:tips"].text == "Tip one.\nTip two."
    assert entries["guide:tips"].section == "Tips"


# --------------------------------------------------------------------------- malformed input


def test_missing_solution_warns_and_keeps_entry() -> None:
    """An entry without Solution is kept; the warning names source, line and entry."""
    text = _guide(
        "Cash account not found\n"
        "Systems: Fortnox Severity: Error\n"
        "Cause: Unresolvable cash account.\n"
        "Cached data preventing re-sync\n"
        "Systems: All platforms (Junipeer internal) Severity: Info\n"
        "Cause: Old cache.\n"
        "Solution: Clear the cache.\n"
    )
    result = parse_error_guide(text, "bad.txt")
    assert len(result.entries) == 2
    (issue,) = result.issues
    assert issue.level == "warning"
    assert (issue.source, issue.line) == ("bad.txt", 2)
    assert issue.message == "Cash account not found has no Solution"
    assert str(issue).startswith("bad.txt:2: warning:")
    assert result.entries[0].solution is None
    assert result.entries[1].solution == "Clear the cache."


def test_unknown_severity_warns_and_keeps_value() -> None:
    """A severity outside Critical/Error/Warning/Info is reported but kept as written."""
    text = (
        "Fortnox Error Codes\n"
        "FORTNOX_ACCOUNT_INACTIVE\n"
        'Severity: Severe Message: "The account is not active"\n'
        "Cause: Deactivated account.\n"
        "Solution: Reactivate it.\n"
    )
    result = parse_error_guide(text, "bad.txt")
    (entry,) = result.entries
    assert entry.severity == "Severe"
    assert entry.message == "The account is not active"
    (issue,) = result.issues
    assert (issue.source, issue.line, issue.level) == ("bad.txt", 3, "warning")
    assert "'Severe'" in issue.message
    assert "FORTNOX_ACCOUNT_INACTIVE" in issue.message


def test_stray_line_after_entry_is_appended_not_lost() -> None:
    """A line that belongs to no field continues the previous entry's last field."""
    text = _guide(
        "Order status filter not working\n"
        "Systems: Shopify → Fortnox Severity: Error\n"
        "Cause: Filter mismatch.\n"
        "Solution: Check the filter.\n"
        "a stray remark without a label\n"
    )
    result = parse_error_guide(text, "bad.txt")
    (entry,) = result.entries
    assert entry.solution == "Check the filter.\na stray remark without a label"


def test_stray_text_before_any_heading_is_reported() -> None:
    """Text outside every section and entry cannot be placed: a warning quotes it."""
    text = "an orphan sentence.\n" + _guide(
        "Token expiration\nSystems: Fortnox Severity: Critical\nCause: c.\nSolution: s.\n"
    )
    result = parse_error_guide(text, "bad.txt")
    assert len(result.entries) == 1
    (issue,) = result.issues
    assert (issue.source, issue.line) == ("bad.txt", 1)
    assert "an orphan sentence." in issue.message


def test_field_outside_any_entry_is_kept_with_its_section() -> None:
    """A labelled line under a heading but before any entry is reported and kept."""
    text = "Tips\nCause: lonely cause line.\n"
    result = parse_error_guide(text, "bad.txt")
    (entry,) = result.entries
    assert entry.text == "Cause: lonely cause line."
    (issue,) = result.issues
    assert issue.line == 2
    assert "outside any entry" in issue.message


def test_missing_severity_and_systems_are_reported() -> None:
    """Missing header fields produce one warning each, naming the entry."""
    text = (
        "Fortnox Error Codes\n"
        "FORTNOX_X_Y\n"
        "Cause: c.\n"
        "Solution: s.\n"
        "Pattern title\n"
        "Severity: Error\n"
        "Cause: c.\n"
        "Solution: s.\n"
    )
    result = parse_error_guide(text, "bad.txt")
    assert [e.kind for e in result.entries] == ["error_code", "error_pattern"]
    assert _messages(result) == ["FORTNOX_X_Y has no Severity", "Pattern title has no Systems"]
    assert [i.line for i in result.issues] == [2, 5]


def test_duplicate_titles_get_unique_ids() -> None:
    """Two entries with the same slug keep distinct ids and the clash is reported."""
    pattern = "Token expiration\nSystems: Fortnox Severity: Critical\nCause: c.\nSolution: s.\n"
    result = parse_error_guide(_guide(pattern + pattern), "bad.txt")
    assert [e.id for e in result.entries] == [
        "error_pattern:token-expiration",
        "error_pattern:token-expiration-2",
    ]
    assert len(result.issues) == 1
    assert "duplicate id" in result.issues[0].message


# --------------------------------------------------------------------------- FAQ


FAQ_SNIPPET = """Frequently Asked Questions

Updated May 12, 2026

Getting help

How do I contact Junipeer support?

  • Email: support@junipeer.io

  • Phone: +46 (0)8 480 014 30

Include the task ID.


Invoices and payments

How does payment date priority work?

It uses the following priority order:

  1. Payment provider date (highest priority)

  2. Order date

  3. Sync date (lowest priority)

This matters for reconciliation.

Was this article helpful?"""


def test_faq_sections_bullets_and_numbers() -> None:
    """Questions get their section; bullets become "- "; numbered items keep their numbers."""
    result = parse_faq(FAQ_SNIPPET, "faq.txt")
    assert result.issues == ()
    contact, priority = result.entries
    assert contact.id == "faq:how-do-i-contact-junipeer-support"
    assert contact.kind == "faq"
    assert contact.line == 7
    assert contact.section == "Getting help"
    assert contact.text == (
        "- Email: support@junipeer.io\n- Phone: +46 (0)8 480 014 30\nInclude the task ID."
    )
    assert priority.section == "Invoices and payments"
    assert priority.text == (
        "It uses the following priority order:\n"
        "1. Payment provider date (highest priority)\n"
        "2. Order date\n"
        "3. Sync date (lowest priority)\n"
        "This matters for reconciliation."
    )


def test_faq_noise_removed_and_update_date_kept_as_metadata() -> None:
    """The feedback prompt and the title vanish; the date moves to ``updated``."""
    result = parse_faq(FAQ_SNIPPET, "faq.txt")
    for entry in result.entries:
        assert entry.updated == "May 12, 2026"
        dumped = json.dumps(entry.to_dict(), ensure_ascii=False)
        assert "helpful" not in dumped
        assert "Updated" not in dumped
        assert "Frequently Asked Questions" not in dumped


def test_noise_glued_to_text_is_removed() -> None:
    """The feedback prompt glued to the end of an answer is cut off cleanly."""
    text = "How do I clear the cache?\n\nUse the Clear Cache button.Was this article helpful?"
    (entry,) = parse_faq(text, "faq.txt").entries
    assert entry.text == "Use the Clear Cache button."


def test_faq_short_answer_is_not_a_heading() -> None:
    """An unpunctuated one-line answer right after its question stays the answer."""
    text = "Is it free?\n\nNo\n\nCan I cancel?\n\nYes, any time."
    result = parse_faq(text, "faq.txt")
    assert [e.text for e in result.entries] == ["No", "Yes, any time."]
    assert all(e.section is None for e in result.entries)


def test_faq_bullet_variants() -> None:
    """Tight "•" bullets are normalised; a leading minus sign is not a bullet."""
    text = "What applies?\n\n•Tight bullet\n  - dash bullet\n-5% discount\n2) second item"
    (entry,) = parse_faq(text, "faq.txt").entries
    assert entry.text == "- Tight bullet\n- dash bullet\n-5% discount\n2) second item"


def test_faq_question_without_answer_warns() -> None:
    """A question directly followed by another question is kept, with a warning."""
    result = parse_faq("First question?\n\nSecond question?\n\nAn answer.", "faq.txt")
    assert [e.text for e in result.entries] == [None, "An answer."]
    (issue,) = result.issues
    assert (issue.line, issue.message) == (1, "question 'First question?' has no answer")


def test_faq_text_before_first_question_warns() -> None:
    """Prose that belongs to no question is reported with its text."""
    result = parse_faq("Some preamble.\n\nA question?\n\nAn answer.", "faq.txt")
    assert len(result.entries) == 1
    (issue,) = result.issues
    assert issue.line == 1
    assert "Some preamble." in issue.message


# --------------------------------------------------------------------------- dispatch


@pytest.mark.parametrize("text", ["", "   \n\n\t\n", "\ufeff\r\n"])
def test_empty_file_is_an_error(text: str) -> None:
    """Empty or whitespace-only text gives no entries and one error."""
    result = parse_document(text, "empty.txt")
    assert result.entries == ()
    (issue,) = result.issues
    assert (issue.level, issue.message, issue.source) == ("error", "file is empty", "empty.txt")


def test_unrecognised_file_is_an_error() -> None:
    """Text in neither format gives no entries and one error."""
    result = parse_document("Just some notes.\nNothing structured here.\n", "notes.txt")
    assert result.entries == ()
    (issue,) = result.issues
    assert issue.level == "error"
    assert issue.message == "file was not recognised as a FAQ or error-code guide"


def test_parse_document_dispatches_on_content() -> None:
    """FAQ text yields faq entries and error-guide text yields error entries."""
    assert {e.kind for e in parse_document(FAQ_SNIPPET, "x.txt").entries} == {"faq"}
    guide = _guide("Token expiration\nSystems: Fortnox Severity: Critical\nCause: c.\nSolution: s.")
    assert [e.kind for e in parse_document(guide, "y.txt").entries] == ["error_pattern"]


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_windows_line_endings_and_bom_give_the_same_parse(name: str) -> None:
    """CRLF line endings and a UTF-8 BOM change nothing, line numbers included."""
    text = _read(name)
    windows = "\ufeff" + text.replace("\n", "\r\n")
    assert parse_document(windows, name) == parse_document(text, name)


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("How do I contact Junipeer support?", "how-do-i-contact-junipeer-support"),
        ('"Invalid grant"', "invalid-grant"),
        (
            "Sync stops after processing 700–900 records",
            "sync-stops-after-processing-700-900-records",
        ),
        (
            "NoWaste → Norce shipment sync JSON parsing error",
            "nowaste-norce-shipment-sync-json-parsing-error",
        ),
        ("Kunde inte hämta/hitta leveranssätt", "kunde-inte-hamta-hitta-leveranssatt"),
        ("Det var inte mulig å allokere", "det-var-inte-mulig-a-allokere"),
        ("Søknad Ærlig", "soknad-aerlig"),
        ("the buyer's country", "the-buyers-country"),
        ("?!", ""),
    ],
)
def test_slugify(title: str, slug: str) -> None:
    """Slugs are lowercase ASCII with Nordic letters transliterated."""
    assert slugify(title) == slug


@pytest.mark.parametrize(
    ("text", "systems"),
    [
        (
            "Business Central / Trimit (ERP) → Centra (e-commerce)",
            ("Business Central", "Trimit", "Centra"),
        ),
        ("Shopify/Centra → Fortnox", ("Shopify", "Centra", "Fortnox")),
        ("Fortnox, Visma.net (OAuth-based connectors)", ("Fortnox", "Visma.net")),
        (
            "Business Central, Visma.net (source ERP → e-commerce destination)",
            ("Business Central", "Visma.net"),
        ),
        ("Centra, Brightpearl, and other platforms", ("Centra", "Brightpearl", "other platforms")),
        ("All platforms (Junipeer internal)", ("All platforms",)),
        ("Centra (source), any ERP (destination)", ("Centra", "any ERP")),
    ],
)
def test_split_systems(text: str, systems: tuple[str, ...]) -> None:
    """Systems are split on arrows, commas and slashes, without qualifiers."""
    assert _split_systems(text) == systems


# --------------------------------------------------------------------------- the real corpus


EXPECTED_CODES = [
    "COMMON_FORTNOX_ERRORS_EXPLAINED",
    "FORTNOX_ACCOUNT_INACTIVE",
    "FORTNOX_COST_CENTER_AUTH",
    "FORTNOX_CURRENCY_MISMATCH",
    "FORTNOX_CURRENCY_NOT_FOUND",
    "FORTNOX_CUSTOMER_NAME_EMPTY",
    "FORTNOX_FISCAL_YEAR",
    "FORTNOX_PAYMENT_DATE",
    "FORTNOX_SHIPPING_NOT_FOUND",
    "FORTNOX_VAT_NOT_FOUND",
    "ERROR_MESSAGE",
]
EXPECTED_FAQ_SECTIONS = [
    "Getting help",
    "Syncing and data",
    "Invoices and payments",
    "Platforms and connectors",
    "Multi-currency and cross-border",
    "Billing and pricing",
    "Troubleshooting",
]
# Lines that are deliberately in no entry: the document title, the date line
# (kept only as ``updated`` metadata) and the web page's feedback prompt.
NOT_CONTENT = {"Frequently Asked Questions", "Updated May 12, 2026", NOISE}


@pytest.fixture(scope="module")
def corpus() -> list[Entry]:
    """All entries of both corpus files, FAQ first, in document order."""
    return _parse_corpus()


@pytest.fixture(scope="module")
def by_id(corpus: list[Entry]) -> dict[str, Entry]:
    """Corpus entries keyed by id."""
    return {entry.id: entry for entry in corpus}


def test_corpus_matches_golden(corpus: list[Entry]) -> None:
    """The parse of the real corpus equals the reviewed golden files exactly."""
    golden = json.loads((GOLDEN / "entries.json").read_text(encoding="utf-8"))
    assert _as_json(corpus) == golden
    counts = json.loads((GOLDEN / "counts.json").read_text(encoding="utf-8"))
    assert _counts(corpus) == counts


def test_golden_round_trips_through_entry(corpus: list[Entry]) -> None:
    """Every golden dict loads back into the same Entry."""
    golden = json.loads((GOLDEN / "entries.json").read_text(encoding="utf-8"))
    assert [Entry.from_dict(item) for item in golden] == corpus


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_corpus_parses_without_issues(name: str) -> None:
    """The real documents are well-formed: no warnings at all."""
    assert parse_document(_read(name), name).issues == ()


def test_corpus_counts(corpus: list[Entry]) -> None:
    """Counts per kind, stated independently of the golden."""
    assert _counts(corpus) == {"error_code": 11, "error_pattern": 41, "faq": 18, "guide": 4}
    assert len({entry.id for entry in corpus}) == len(corpus)


def test_error_codes(corpus: list[Entry]) -> None:
    """The eleven formal codes, in document order, with their sections."""
    codes = [entry for entry in corpus if entry.kind == "error_code"]
    assert [entry.code for entry in codes] == EXPECTED_CODES
    assert all(entry.id == entry.title == entry.code for entry in codes)
    assert [entry.section for entry in codes] == ["Fortnox Error Codes"] * 10 + [
        "General Error Codes"
    ]
    assert all(entry.severity == "Error" for entry in codes)


def test_pattern_titles_are_the_lines_before_systems(corpus: list[Entry]) -> None:
    """Every title line above a ``Systems:`` line is one pattern, and nothing else is."""
    lines = _read("error-codes.txt").splitlines()
    expected = [lines[i - 1] for i, line in enumerate(lines) if line.startswith("Systems:")]
    patterns = [entry for entry in corpus if entry.kind == "error_pattern"]
    assert len(expected) == 41
    assert [entry.title for entry in patterns] == expected
    assert all(entry.section == "Additional Error Patterns" for entry in patterns)
    assert all(entry.systems and entry.systems_text for entry in patterns)
    assert all(entry.cause and entry.solution for entry in patterns)


def test_faq_entries(corpus: list[Entry]) -> None:
    """Eighteen questions, their sections in order, all dated."""
    faqs = [entry for entry in corpus if entry.kind == "faq"]
    assert len(faqs) == 18
    assert all(entry.title.endswith("?") and entry.text for entry in faqs)
    assert list(dict.fromkeys(entry.section for entry in faqs)) == EXPECTED_FAQ_SECTIONS
    assert {entry.updated for entry in faqs} == {"May 12, 2026"}
    assert all(entry.updated is None for entry in corpus if entry.kind != "faq")


def test_guide_entries(by_id: dict[str, Entry]) -> None:
    """The four prose sections of the error guide."""
    guides = {key: entry for key, entry in by_id.items() if entry.kind == "guide"}
    assert sorted(guides) == [
        "guide:additional-error-patterns",
        "guide:general-troubleshooting",
        "guide:overview",
        "guide:tips",
    ]
    assert guides["guide:overview"].text.count("\n") == 2
    assert guides["guide:additional-error-patterns"].text.startswith("The following errors")
    assert guides["guide:tips"].text.count("\n") == 3
    assert guides["guide:tips"].text.endswith("translations and solutions for these.")


def test_customer_name_empty(by_id: dict[str, Entry]) -> None:
    """The numeric code is extracted while the message stays as written."""
    entry = by_id["FORTNOX_CUSTOMER_NAME_EMPTY"]
    assert entry.numeric_code == "2000637"
    assert entry.message == "Customer name cannot be empty (2000637)"
    assert entry.line == 31


def test_shipping_not_found(by_id: dict[str, Entry]) -> None:
    """Swedish message and English gloss are split apart."""
    entry = by_id["FORTNOX_SHIPPING_NOT_FOUND"]
    assert entry.message == "Kunde inte hämta/hitta leveranssätt"
    assert entry.message_gloss == "Could not retrieve/find shipping method"
    assert entry.numeric_code is None


def test_error_message_code(by_id: dict[str, Entry]) -> None:
    """ERROR_MESSAGE keeps its colon and its parenthesised note."""
    entry = by_id["ERROR_MESSAGE"]
    assert (entry.message, entry.message_gloss) == ("Error message:", "followed by details")
    assert entry.section == "General Error Codes"


def test_grouped_fortnox_errors(by_id: dict[str, Entry]) -> None:
    """COMMON_FORTNOX_ERRORS_EXPLAINED carries its two Swedish errors as parts."""
    entry = by_id["COMMON_FORTNOX_ERRORS_EXPLAINED"]
    assert entry.text == (
        "This is a grouped reference covering two of the most common "
        "Swedish-language Fortnox errors:"
    )
    assert (entry.message, entry.cause, entry.solution) == (None, None, None)
    vat, currency = entry.parts
    assert (vat.message, vat.gloss) == (
        "Kunde inte hämta/hitta moms",
        "Could not retrieve/find VAT",
    )
    assert vat.cause == "VAT rates are not configured in Fortnox."
    assert vat.solution.startswith("In Fortnox, go to Settings → Bookkeeping → Moms (VAT)")
    assert currency.message == "Kunde inte hämta/hitta valuta"
    assert currency.gloss == "Could not retrieve/find currency"
    assert currency.solution.endswith("The currency name is added automatically.")


def test_norwegian_pattern(by_id: dict[str, Entry]) -> None:
    """The Norwegian message survives byte for byte, with its gloss and systems."""
    entry = by_id["error_pattern:visma-business-customer-number-allocation-error"]
    assert entry.title == "Visma Business — customer number allocation error"
    assert entry.message == "Det var inte mulig å allokere nummer fra den angitte nummerserie"
    assert entry.message_gloss == "Could not allocate number from the specified number series"
    assert entry.systems == ("Centra", "Visma Business")
    assert entry.severity == "Error"


def test_invalid_grant(by_id: dict[str, Entry]) -> None:
    """The quoted title is kept; severity and systems come from the shared line."""
    entry = by_id["error_pattern:invalid-grant"]
    assert entry.title == '"Invalid grant"'
    assert entry.severity == "Critical"
    assert entry.systems == ("Fortnox", "Visma.net")
    assert entry.systems_text == "Fortnox, Visma.net (OAuth-based connectors)"
    assert entry.code is None
    assert entry.message is None


def test_patterns_with_messages(by_id: dict[str, Entry]) -> None:
    """Exactly three patterns carry a Message, all on their Systems line."""
    with_message = {
        k: e.message for k, e in by_id.items() if e.kind == "error_pattern" and e.message
    }
    assert with_message == {
        "error_pattern:could-not-map-payout-transaction-multi-market-currency-mismatch": (
            "Could not map payout transaction: Invoice X, Unsupported currency combination"
        ),
        "error_pattern:visma-business-customer-number-allocation-error": (
            "Det var inte mulig å allokere nummer fra den angitte nummerserie"
        ),
        "error_pattern:nowaste-norce-shipment-sync-json-parsing-error": (
            "json: cannot unmarshal number 1.0 into Go struct field "
            "PickReportEventBody.body.event_data.NumberOfPallets of type int"
        ),
    }


def test_payment_date_solution_keeps_following_lines(by_id: dict[str, Entry]) -> None:
    """The priority list and the sentences after it belong to the solution."""
    solution = by_id["FORTNOX_PAYMENT_DATE"].solution
    assert (
        "\nPayment provider date (highest priority)\nOrder date\nSync date (lowest priority)\n"
        in (solution)
    )
    assert "Sync date (lowest priority)" in solution
    assert solution.endswith("in consultation with Junipeer support.")


def test_faq_payment_date_priority(by_id: dict[str, Entry]) -> None:
    """The FAQ answer keeps all three numbered priorities."""
    text = by_id["faq:how-does-payment-date-priority-work"].text
    assert "1. Payment provider date (highest priority)" in text
    assert "2. Order date — the date the order was placed" in text
    assert "3. Sync date (lowest priority)" in text
    assert text.endswith("See the Error Codes guide for resolution steps.")


def test_faq_bullets_normalised(by_id: dict[str, Entry]) -> None:
    """FAQ bullets become "- " lines and no "•" is left anywhere."""
    text = by_id["faq:how-do-i-contact-junipeer-support"].text
    assert text.splitlines()[:2] == [
        "- Email: support@junipeer.io",
        "- Phone: +46 (0)8 480 014 30",
    ]
    assert all("•" not in (entry.text or "") for entry in by_id.values())


def test_line_numbers_point_at_titles(corpus: list[Entry]) -> None:
    """Each entry's line in its source file contains its title."""
    files = {name: _read(name).splitlines() for name in CORPUS_FILES}
    for entry in corpus:
        assert entry.title in files[entry.source][entry.line - 1], entry.id


def test_noise_and_date_are_in_no_entry(corpus: list[Entry]) -> None:
    """Page chrome and the date line never leak into entry content."""
    for entry in corpus:
        values = {k: v for k, v in entry.to_dict().items() if k != "updated"}
        dumped = json.dumps(values, ensure_ascii=False)
        assert NOISE not in dumped
        assert "helpful" not in dumped
        assert "May 12, 2026" not in dumped
        assert "Frequently Asked Questions" not in dumped


def _normalise(text: str) -> str:
    text = " ".join(text.split())
    return re.sub(r"^[•]\s*", "- ", text)


def _fragments(line: str) -> list[str]:
    """The pieces of a source line that must reappear in some entry field."""
    fragments: list[str] = []
    for piece in re.split(r"(?:^|\s)(?:Systems|Severity|Message|Cause|Solution):\s*", line):
        quoted = re.match(r'^"(.*)"\s*(?:\((.*)\))?$', piece)
        if quoted:  # messages are stored without quotes, the gloss without parentheses
            fragments.extend(group for group in quoted.groups() if group)
        elif piece:
            fragments.append(piece)
    return fragments


def _haystack(entries: list[Entry]) -> str:
    """Every string in every entry field (parts included), one normalised line each."""
    texts: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            texts.extend(_normalise(line) for line in value.splitlines())
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    for entry in entries:
        walk(entry.to_dict())
    return "\n".join(texts)


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_lose_nothing(name: str) -> None:
    """Every meaningful line of the corpus reappears in some entry field."""
    entries = list(parse_document(_read(name), name).entries)
    haystack = _haystack(entries)
    missing = []
    for number, raw in enumerate(_read(name).splitlines(), 1):
        line = _normalise(raw)
        if not line or line in NOT_CONTENT:
            continue
        missing.extend(
            (number, fragment) for fragment in _fragments(line) if fragment not in haystack
        )
    assert missing == []


# --------------------------------------------------------------------------- golden update


def _write_golden() -> None:
    """Rewrite tests/golden/*.json from the current parse of the corpus."""
    entries = _parse_corpus()
    GOLDEN.mkdir(exist_ok=True)
    for file_name, data in (("entries.json", _as_json(entries)), ("counts.json", _counts(entries))):
        text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
        (GOLDEN / file_name).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python -m tests.test_parse --update")
    _write_golden()
    sys.stdout.write(f"wrote {GOLDEN / 'entries.json'} and {GOLDEN / 'counts.json'}\n")
