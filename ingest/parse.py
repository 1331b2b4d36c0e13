"""Parse Junipeer's knowledge documents (the FAQ and the error-code guide) into entries.

The parser is pure: text in, :class:`~ingest.entries.ParseResult` out.  It never
reads files, so callers decide where the text comes from and tests can feed it
small hand-written snippets.

Both documents are plain text exported from a web knowledge base:

* the FAQ is blank-line separated: a document title, an ``Updated <date>`` line,
  section headings, questions (lines ending in ``?``) and their answer paragraphs;
* the error guide has one paragraph per line: section headings, formal error
  codes (``FORTNOX_FISCAL_YEAR``) and titled error patterns, each followed by
  ``Systems:`` / ``Severity:`` / ``Message:`` / ``Cause:`` / ``Solution:`` lines.

Nothing meaningful is dropped: text the parser cannot place is appended to the
field it most likely continues, and otherwise reported as a :class:`ParseIssue`.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from ingest.entries import SEVERITIES, Entry, ParseIssue, ParseResult, SubError

# Web-page chrome copied along with the articles; may be glued to real text.
_NOISE_RE = re.compile(r"\s*Was this article helpful\?\s*", re.IGNORECASE)
_FAQ_TITLE_RE = re.compile(r"^(?:frequently asked questions|faqs?)$", re.IGNORECASE)
_UPDATED_RE = re.compile(r"^(?:last\s+)?updated:?\s+(?P<date>.*\d{4})$", re.IGNORECASE)
_FIELD_RE = re.compile(r"^(?P<label>Systems|Severity|Message|Cause|Solution):\s*(?P<rest>.*)$")
# Header labels that may share a line with the label before them, in this order.
_HEADER_ORDER = ("Systems", "Severity", "Message")
_INLINE_LABEL_RE = re.compile(r"\s+(Severity|Message):\s*")
_CODE_RE = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")
_BARE_CODE_RE = re.compile(r"^[A-Z][A-Z0-9]{2,}$")
# A quoted message, optionally followed by a parenthesised gloss (usually a translation).
_QUOTED_RE = re.compile(r'^["“](?P<message>.*)["”]\s*(?:\((?P<gloss>.*)\))?$')
_NUMERIC_CODE_RE = re.compile(r"\((\d{4,})\)")
# "•" may touch its text; ASCII "-"/"*" count only before a space ("-5%" is no bullet).
_BULLET_RE = re.compile(r"^(?:[•●▪◦‣]\s*|[*-]\s+)")
_NUMBERED_RE = re.compile(r"^\d+[.)]\s")
_PARENS_RE = re.compile(r"\s*\([^()]*\)")
_SYSTEM_SEPARATOR_RE = re.compile(r"\s*(?:→|->|,|/)\s*")
_TERMINAL_PUNCTUATION = (".", ":", ";", "!", "?", ",")
# Lowercase words a Title Case heading may contain ("Multi-currency and cross-border").
_SMALL_WORDS = frozenset({"a", "an", "and", "for", "in", "of", "on", "or", "the", "to", "with"})
# Letters NFKD does not decompose into an ASCII base letter.
_TRANSLITERATION = str.maketrans(
    {"ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "ß": "ss", "đ": "d", "Đ": "D", "ł": "l", "Ł": "L"}
)


# --------------------------------------------------------------------------- public API


def slugify(title: str) -> str:
    """Turn a title into a lowercase ASCII slug for use in entry ids.

    Nordic letters are transliterated (å/ä → a, ö/ø → o, æ → ae); quotes and
    apostrophes vanish; every other run of non-alphanumerics (spaces, dashes,
    arrows, slashes) becomes a single hyphen.

    Args:
        title: Any human-written title or question.

    Returns:
        The slug, e.g. ``"sync-stops-after-processing-700-900-records"``; empty when
        the title has no letters or digits at all.
    """
    decomposed = unicodedata.normalize("NFKD", title.translate(_TRANSLITERATION))
    base = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    # Apostrophes join words ("buyer's" → "buyers") instead of splitting them.
    base = re.sub(r"['’]", "", base.lower())
    return re.sub(r"[^a-z0-9]+", "-", base).strip("-")


def parse_document(text: str, source: str) -> ParseResult:
    """Detect whether ``text`` is the FAQ or the error-code guide and parse it.

    Args:
        text: The whole document.
        source: The file name recorded on every entry and issue, e.g. ``"faq.txt"``.

    Returns:
        The parsed entries and issues.  Empty text, or text in neither format,
        gives no entries and a single error-level issue.
    """
    lines = _clean_lines(text)
    if not any(lines):
        return _empty_result(source)
    if _looks_like_error_guide(lines):
        return parse_error_guide(text, source)
    if _looks_like_faq(lines):
        return parse_faq(text, source)
    issue = ParseIssue(
        source, 1, "file was not recognised as a FAQ or error-code guide", level="error"
    )
    return ParseResult(entries=(), issues=(issue,))


def parse_faq(text: str, source: str) -> ParseResult:
    """Parse the FAQ: one ``faq`` entry per question.

    The answer keeps all paragraphs joined by newlines, with ``•`` bullets
    rewritten as ``- `` and numbered items kept as written.  The document title
    and the web page's feedback prompt are dropped; the ``Updated <date>`` line
    becomes the ``updated`` field of every entry.

    Args:
        text: The FAQ document.
        source: The file name recorded on every entry and issue.

    Returns:
        The FAQ entries in document order, plus any issues found.
    """
    lines = _clean_lines(text)
    if not any(lines):
        return _empty_result(source)
    issues: list[ParseIssue] = []
    paragraphs = _paragraphs(lines)

    updated: str | None = None
    content: list[_Paragraph] = []
    for index, para in enumerate(paragraphs):
        date = _updated_date(para)
        if date is not None:
            if updated is None:
                updated = date
            elif date != updated:
                issues.append(ParseIssue(source, para.line, f"second update date {date!r} ignored"))
        elif index == 0 and len(para.lines) == 1 and _FAQ_TITLE_RE.match(para.lines[0]):
            continue  # the document title is not an entry
        else:
            content.append(para)

    drafts: list[_FaqDraft] = []
    section: str | None = None
    for index, para in enumerate(content):
        following = content[index + 1] if index + 1 < len(content) else None
        current = drafts[-1] if drafts else None
        first = para.lines[0]
        if _is_question(first):
            drafts.append(_FaqDraft(first, para.line, section, list(para.lines[1:])))
        elif (
            len(para.lines) == 1
            and _is_heading_like(first)
            and following is not None
            and _is_question(following.lines[0])
            # A short unpunctuated line right after a question is its answer ("Yes").
            and not (current is not None and not current.answer)
        ):
            section = first
        elif current is not None:
            current.answer.extend(para.lines)
        else:
            issues.append(
                ParseIssue(
                    source, para.line, f"text before the first question: {' '.join(para.lines)!r}"
                )
            )

    if not drafts:
        issues.append(ParseIssue(source, 1, "no questions found", level="error"))
    entries: list[Entry] = []
    for draft in drafts:
        answer = "\n".join(_normalise_list_item(line) for line in draft.answer) or None
        if answer is None:
            issues.append(
                ParseIssue(source, draft.line, f"question {draft.question!r} has no answer")
            )
        entries.append(
            Entry(
                id="faq:" + (slugify(draft.question) or f"line-{draft.line}"),
                kind="faq",
                title=draft.question,
                source=source,
                line=draft.line,
                text=answer,
                section=draft.section,
                updated=updated,
            )
        )
    return ParseResult(entries=_dedupe_ids(entries, issues), issues=tuple(issues))


def parse_error_guide(text: str, source: str) -> ParseResult:
    """Parse the error-code guide into error codes, error patterns and guide sections.

    Formal codes (``FORTNOX_FISCAL_YEAR``) become ``error_code`` entries; titled
    entries with a ``Systems:`` line become ``error_pattern`` entries; prose
    directly under a heading (Overview, Tips, ...) becomes a ``guide`` entry.
    Lines that continue a field (e.g. a numbered list inside a Solution) are
    appended to it with newlines.

    Args:
        text: The error-code guide.
        source: The file name recorded on every entry and issue.

    Returns:
        The entries in document order, plus any issues found.
    """
    lines = _clean_lines(text)
    if not any(lines):
        return _empty_result(source)
    return _GuideParser(source).run([(n, line) for n, line in enumerate(lines, 1) if line])


# --------------------------------------------------------------------------- shared helpers


def _clean_lines(text: str) -> list[str]:
    """Split into stripped lines without BOM, CR or page noise; index + 1 = line number."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return [_NOISE_RE.sub(" ", line).strip() for line in text.split("\n")]


def _empty_result(source: str) -> ParseResult:
    return ParseResult(entries=(), issues=(ParseIssue(source, 1, "file is empty", level="error"),))


def _looks_like_error_guide(lines: list[str]) -> bool:
    return any(line.startswith(("Severity:", "Systems:")) for line in lines)


def _looks_like_faq(lines: list[str]) -> bool:
    if any(_FAQ_TITLE_RE.match(line) for line in lines):
        return True
    filled = [line for line in lines if line]
    # A question answered by prose is the minimal FAQ shape.
    return any(
        _is_question(line) and not _is_question(nxt) and not _FIELD_RE.match(nxt)
        for line, nxt in zip(filled, filled[1:], strict=False)
    )


def _is_question(line: str) -> bool:
    return line.endswith("?") and not _BULLET_RE.match(line) and not _NUMBERED_RE.match(line)


def _is_heading_like(line: str, max_words: int = 6) -> bool:
    """Short, unpunctuated, capitalised line that is not a list item or a quote."""
    words = line.split()
    return (
        0 < len(words) <= max_words
        and line[0].isupper()
        and not line.endswith(_TERMINAL_PUNCTUATION)
        and not _BULLET_RE.match(line)
        and not _NUMBERED_RE.match(line)
    )


def _is_title_case(line: str) -> bool:
    return all(
        word in _SMALL_WORDS or not word[0].isalpha() or word[0].isupper() for word in line.split()
    )


def _normalise_list_item(line: str) -> str:
    return _BULLET_RE.sub("- ", line, count=1) if _BULLET_RE.match(line) else line


def _dedupe_ids(entries: list[Entry], issues: list[ParseIssue]) -> tuple[Entry, ...]:
    """Make ids unique within one document, reporting each clash."""
    seen: set[str] = set()
    unique: list[Entry] = []
    for entry in entries:
        new_id, counter = entry.id, 2
        while new_id in seen:
            new_id, counter = f"{entry.id}-{counter}", counter + 1
        if new_id != entry.id:
            issues.append(
                ParseIssue(entry.source, entry.line, f"duplicate id {entry.id!r}, using {new_id!r}")
            )
            entry = Entry.from_dict({**entry.to_dict(), "id": new_id})
        seen.add(new_id)
        unique.append(entry)
    return tuple(unique)


def _split_systems(systems_text: str) -> tuple[str, ...]:
    """Split a ``Systems:`` value into system names (best effort).

    Parenthesised qualifiers are dropped first (they may contain arrows or
    commas), then the text is split on arrows, commas and slashes.

    Args:
        systems_text: E.g. ``"Business Central / Trimit (ERP) → Centra (e-commerce)"``.

    Returns:
        E.g. ``("Business Central", "Trimit", "Centra")``, without duplicates.
    """
    text, previous = systems_text, None
    while text != previous:  # repeat to peel nested parentheses from the inside out
        previous, text = text, _PARENS_RE.sub("", text)
    names: list[str] = []
    for piece in _SYSTEM_SEPARATOR_RE.split(text):
        name = re.sub(r"^(?:and|or)\s+", "", piece.strip())
        if name and name not in names:
            names.append(name)
    return tuple(names)


def _label(line: str) -> str | None:
    """The field label a line starts with (``"Cause"``), or None for other lines."""
    match = _FIELD_RE.match(line)
    return match["label"] if match else None


def _split_message(value: str) -> tuple[str, str | None]:
    """``'"Text (123)" (gloss)'`` → ``("Text (123)", "gloss")``; unquoted text is kept whole."""
    match = _QUOTED_RE.match(value)
    if match is None:
        return value, None
    return match["message"], match["gloss"]


def _split_header(label: str, rest: str) -> list[tuple[str, str]]:
    """Split ``Systems: A → B Severity: Error Message: "…"`` into its labelled parts.

    Only labels that come later in ``Systems, Severity, Message`` are honoured,
    and nothing is split once the message starts, so a message that itself
    contains ``Severity:`` or ``Message:`` stays whole.
    """
    parts: list[tuple[str, str]] = []
    current, start = label, 0
    for match in _INLINE_LABEL_RE.finditer(rest):
        if current == "Message":
            break
        if _HEADER_ORDER.index(match[1]) <= _HEADER_ORDER.index(current):
            continue
        parts.append((current, rest[start : match.start()].strip()))
        current, start = match[1], match.end()
    parts.append((current, rest[start:].strip()))
    return parts


# --------------------------------------------------------------------------- FAQ internals


@dataclass
class _Paragraph:
    line: int
    lines: list[str]


@dataclass
class _FaqDraft:
    question: str
    line: int
    section: str | None
    answer: list[str]


def _paragraphs(lines: list[str]) -> list[_Paragraph]:
    paragraphs: list[_Paragraph] = []
    current: _Paragraph | None = None
    for number, line in enumerate(lines, 1):
        if not line:
            current = None
        elif current is None:
            current = _Paragraph(number, [line])
            paragraphs.append(current)
        else:
            current.lines.append(line)
    return paragraphs


def _updated_date(para: _Paragraph) -> str | None:
    match = _UPDATED_RE.match(para.lines[0]) if len(para.lines) == 1 else None
    return match["date"] if match else None


# --------------------------------------------------------------------------- error-guide internals


@dataclass
class _Part:
    """A grouped sub-error under construction; ``last`` is the field continuations extend."""

    message: str
    gloss: str | None
    line: int
    fields: dict[str, str] = field(default_factory=dict)
    last: str = "message"


@dataclass
class _ErrorDraft:
    """An error code or pattern under construction; ``last`` is the field being filled."""

    kind: str
    title: str
    line: int
    section: str | None
    fields: dict[str, str] = field(default_factory=dict)
    parts: list[_Part] = field(default_factory=list)
    last: str | None = None


def _append(fields: dict[str, str], name: str, value: str) -> None:
    fields[name] = f"{fields[name]}\n{value}" if fields.get(name) else value


class _GuideParser:
    """Line-oriented state machine over the non-blank lines of the error guide."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.entries: list[Entry] = []
        self.issues: list[ParseIssue] = []
        self.section: str | None = None
        self.section_line = 0
        self.section_used = True
        self.body: list[str] = []
        self.draft: _ErrorDraft | None = None

    def warn(self, line: int, message: str) -> None:
        self.issues.append(ParseIssue(self.source, line, message))

    def run(self, items: list[tuple[int, str]]) -> ParseResult:
        previous: str | None = None
        for index, (number, line) in enumerate(items):
            following = items[index + 1][1] if index + 1 < len(items) else ""
            self.handle(number, line, following, previous)
            previous = line
        self.close_draft()
        self.close_section()
        return ParseResult(
            entries=_dedupe_ids(self.entries, self.issues), issues=tuple(self.issues)
        )

    def handle(self, number: int, line: str, following: str, previous: str | None) -> None:
        field_match = _FIELD_RE.match(line)
        if field_match:
            self.field(number, field_match["label"], field_match["rest"], line)
            return
        next_label = _label(following)
        is_code = bool(_CODE_RE.match(line)) or (
            bool(_BARE_CODE_RE.match(line)) and next_label == "Severity"
        )
        if is_code and next_label != "Systems":
            self.start("error_code", line, number)
        elif next_label in ("Systems", "Severity"):
            self.start("error_pattern", line, number)
        elif (
            self.draft is not None
            and self.draft.kind == "error_code"
            and next_label in ("Cause", "Solution")
            and _QUOTED_RE.match(line)
        ):
            message, gloss = _split_message(line)
            self.draft.parts.append(_Part(message, gloss, number))
        elif self.is_heading(line, next_label, previous):
            self.close_draft()
            self.close_section()
            self.section, self.section_line, self.section_used = line, number, False
        elif self.draft is not None:
            self.continue_draft(number, line)
        elif self.section is not None:
            self.body.append(line)
        else:
            self.warn(number, f"text outside any section or entry: {line!r}")

    @staticmethod
    def is_heading(line: str, next_label: str | None, previous: str | None) -> bool:
        # Headings follow a finished sentence (or open the file); this keeps short
        # list items inside a Solution ("Order date") from being read as headings.
        return (
            next_label not in ("Systems", "Severity")
            and _is_heading_like(line, max_words=5)
            and _is_title_case(line)
            and (previous is None or previous.endswith((".", "!", "?")))
        )

    def start(self, kind: str, title: str, number: int) -> None:
        self.close_draft()
        self.flush_body()
        self.section_used = True
        self.draft = _ErrorDraft(kind, title, number, self.section)

    def field(self, number: int, label: str, rest: str, line: str) -> None:
        draft = self.draft
        if draft is None:
            self.warn(number, f"{label}: line outside any entry: {line!r}")
            if self.section is not None:
                self.body.append(line)  # keep the text with the section it sits in
            return
        if label in ("Cause", "Solution"):
            target = draft.parts[-1] if draft.parts else draft
            if label.lower() in target.fields:
                self.warn(number, f"{draft.title}: second {label} appended to the first")
            _append(target.fields, label.lower(), rest)
            target.last = label.lower()
            return
        for name, value in _split_header(label, rest):
            self.header(draft, number, name, value)

    def header(self, draft: _ErrorDraft, number: int, name: str, value: str) -> None:
        key = {"Systems": "systems_text", "Severity": "severity", "Message": "message"}[name]
        if key in draft.fields:
            self.warn(number, f"{draft.title}: second {name} line ignored: {value!r}")
            return
        if key == "severity" and value not in SEVERITIES:
            allowed = ", ".join(SEVERITIES)
            self.warn(number, f"{draft.title}: unknown severity {value!r} (expected {allowed})")
        if key == "message":
            value, gloss = _split_message(value)
            if gloss is not None:
                draft.fields["message_gloss"] = gloss
        draft.fields[key] = value
        draft.last = key

    def continue_draft(self, number: int, line: str) -> None:
        draft = self.draft
        if draft is None:
            return
        if draft.parts:
            part = draft.parts[-1]
            if part.last in ("cause", "solution"):
                _append(part.fields, part.last, line)
                return
            self.warn(number, f"{draft.title}: text between a message and its Cause: {line!r}")
            _append(draft.fields, "text", line)
            return
        # Prose right after the header lines introduces the entry (a grouped code's
        # intro); after Cause/Solution it continues that field (e.g. a list).
        name = draft.last if draft.last in ("cause", "solution", "text") else "text"
        _append(draft.fields, name, line)
        draft.last = name

    def close_draft(self) -> None:
        draft, self.draft = self.draft, None
        if draft is None:
            return
        values = draft.fields
        label = draft.title
        if draft.kind == "error_pattern" and "systems_text" not in values:
            self.warn(draft.line, f"{label} has no Systems")
        if "severity" not in values:
            self.warn(draft.line, f"{label} has no Severity")
        for part in draft.parts:
            for name in ("cause", "solution"):
                if name not in part.fields:
                    self.warn(part.line, f'{label}: "{part.message}" has no {name.title()}')
        if not draft.parts:
            for name in ("cause", "solution"):
                if name not in values:
                    self.warn(draft.line, f"{label} has no {name.title()}")
        message = values.get("message")
        numeric = _NUMERIC_CODE_RE.search(message) if message else None
        systems_text = values.get("systems_text")
        is_code = draft.kind == "error_code"
        self.entries.append(
            Entry(
                id=label
                if is_code
                else "error_pattern:" + (slugify(label) or f"line-{draft.line}"),
                kind="error_code" if is_code else "error_pattern",
                title=label,
                source=self.source,
                line=draft.line,
                code=label if is_code else None,
                systems=_split_systems(systems_text) if systems_text else (),
                systems_text=systems_text,
                severity=values.get("severity"),
                message=message,
                message_gloss=values.get("message_gloss"),
                numeric_code=numeric[1] if numeric else None,
                cause=values.get("cause"),
                solution=values.get("solution"),
                text=values.get("text"),
                section=draft.section,
                parts=tuple(
                    SubError(
                        message=part.message,
                        gloss=part.gloss,
                        cause=part.fields.get("cause"),
                        solution=part.fields.get("solution"),
                    )
                    for part in draft.parts
                ),
            )
        )

    def flush_body(self) -> None:
        """Emit the prose under the current heading (if any) as a guide entry."""
        if not self.body or self.section is None:
            return
        self.section_used = True
        self.entries.append(
            Entry(
                id="guide:" + (slugify(self.section) or f"line-{self.section_line}"),
                kind="guide",
                title=self.section,
                source=self.source,
                line=self.section_line,
                text="\n".join(self.body),
                section=self.section,
            )
        )
        self.body = []

    def close_section(self) -> None:
        self.flush_body()
        if self.section is not None and not self.section_used:
            self.warn(self.section_line, f"section {self.section!r} is empty")


# --------------------------------------------------------------------------- synonyms

SYNONYMS_FILE = "synonyms.txt"
_SYNONYM_ARROW = "=>"
_ESCAPED_COMMA = "\x00"


@dataclass(frozen=True)
class SynonymRule:
    """One line of a Solr/Elasticsearch synonyms file.

    ``a, b, c`` makes every term stand for all of them (``inputs == outputs``);
    ``a, b => c, d`` replaces ``a`` or ``b`` by ``c`` and ``d`` (keep the original by
    listing it on the right too). Terms are casefolded phrases of one or more words.
    """

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    line: int

    @property
    def explicit(self) -> bool:
        """True for an ``=>`` mapping, False for a list of equivalent terms."""
        return self.inputs != self.outputs

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready form (lists, not tuples)."""
        return {"inputs": list(self.inputs), "outputs": list(self.outputs), "line": self.line}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SynonymRule:
        """The rule back from :meth:`to_dict`."""
        return cls(
            tuple(str(t) for t in data["inputs"]),  # type: ignore[union-attr]
            tuple(str(t) for t in data["outputs"]),  # type: ignore[union-attr]
            int(data["line"]),  # type: ignore[arg-type]
        )


def _synonym_terms(text: str) -> tuple[str, ...]:
    terms = []
    for raw in text.split(","):
        term = " ".join(unicodedata.normalize("NFKC", raw.replace(_ESCAPED_COMMA, ",")).split())
        if term:
            terms.append(term.casefold())
    return tuple(dict.fromkeys(terms))


def parse_synonyms(text: str, source: str) -> tuple[tuple[SynonymRule, ...], list[ParseIssue]]:
    r"""Parse a synonyms file in the Solr format: text in, rules and issues out.

    Blank lines and lines starting with ``#`` are ignored; ``\\,`` is a literal comma.
    A line with more than one ``=>``, an empty side, or a single term is reported and
    skipped, never fatal to the rest of the file.
    """
    rules: list[SynonymRule] = []
    issues: list[ParseIssue] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip().replace("\\,", _ESCAPED_COMMA)
        if not line or line.startswith("#"):
            continue
        sides = line.split(_SYNONYM_ARROW)
        if len(sides) > 2:
            issues.append(ParseIssue(source, n, f"more than one {_SYNONYM_ARROW}; line skipped"))
            continue
        if len(sides) == 2:
            inputs, outputs = _synonym_terms(sides[0]), _synonym_terms(sides[1])
            if not inputs or not outputs:
                issues.append(ParseIssue(source, n, "a mapping needs terms on both sides"))
                continue
            rules.append(SynonymRule(inputs, outputs, n))
            continue
        terms = _synonym_terms(line)
        if len(terms) < 2:
            issues.append(ParseIssue(source, n, "a synonym line needs at least two terms"))
            continue
        rules.append(SynonymRule(terms, terms, n))
    return tuple(rules), issues
