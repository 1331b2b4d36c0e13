"""What the chat shows, as plain data: the Chainlit layer (``bot/app.py``) only sends it.

Nothing here imports Chainlit, so every rule about what a merchant or an agent sees
is unit-tested without a server. Markdown leaving this module never carries raw
HTML: ``<`` outside code is written as ``&lt;`` (the browser shows ``<``), on top of
``unsafe_allow_html = false`` in ``.chainlit/config.toml``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.answer_types import Answer, Citation, Draft, Filters, Turn, format_citation
from bot.drafting import (
    Refinement,
    combine_styles,
    fix_steps,
    solution_blocks,
    typed_refinement,
)
from ingest.entries import SEVERITIES, Entry, SubError

MERCHANT = "Merchant"
AGENT = "Support agent"
ANY = "Any"

# Turns kept for follow-ups; older ones are dropped (the retriever only needs the last).
MAX_HISTORY_TURNS = 12

MERCHANT_WELCOME = (
    "**Hi! I'm the Junipeer support assistant.** Ask me about sync errors and error codes "
    "(paste the message you see), setting up your integrations, or pricing. "
    "Every answer links the knowledge-base entry it comes from."
)
AGENT_WELCOME = (
    "**Paste a merchant's ticket** and I'll draft a ready-to-send reply from the knowledge "
    "base, with the entries it relies on so you can check it."
)

# (label, message) of the merchant starters.
MERCHANT_STARTERS: tuple[tuple[str, str], ...] = (
    ("Fiscal year not available", "I get the error 'Fiscal year not available'. What do I do?"),
    ("My integration stopped syncing", "My integration stopped syncing. What should I check?"),
    ("How does pricing work?", "How does pricing work?"),
    ("Connector says “Invalid grant”", 'My Fortnox connector says "Invalid grant".'),
)
AGENT_STARTERS: tuple[tuple[str, str], ...] = (
    (
        "Sample ticket: missing VAT",
        "Hi, our Shopify orders don't reach Fortnox any more. The log says "
        "'Kunde inte hämta/hitta moms'. Can you help? /Anna, Example Store AB",
    ),
)

SOURCE_SUFFIX = " ↗"
HANDOFF_ACTION = "talk_to_human"
REDRAFT_ACTION = "redraft"
STYLE_LABELS: dict[str, str] = {
    "default": "",
    "shorter": "shorter",
    "formal": "more formal",
    "shorter+formal": "shorter, more formal",
}


@dataclass(frozen=True)
class SourceElement:
    """One cited entry as a Chainlit text element; its ``name`` in the message links it."""

    name: str
    content: str
    entry_id: str


@dataclass(frozen=True)
class RenderedMessage:
    """A message ready to send: markdown, its source elements and its step metadata."""

    content: str
    elements: tuple[SourceElement, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)


# -- safety ------------------------------------------------------------------------

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(?:.|\n)*?(?<!`)\1(?!`)")


def neutralize_html(markdown: str) -> str:
    """Make raw HTML in markdown inert: ``<`` becomes ``&lt;`` outside code.

    Code spans and fenced blocks are left alone: they never render HTML, and an
    entity there would be shown literally.
    """
    result: list[str] = []
    fence: str | None = None
    prose: list[str] = []

    def flush() -> None:
        if prose:
            result.append(_escape_prose("\n".join(prose)))
            prose.clear()

    for line in markdown.split("\n"):
        m = _FENCE.match(line)
        if fence is None and m:
            flush()
            fence = m.group(1)
            result.append(line)
        elif fence is not None:
            result.append(line)
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
        else:
            prose.append(line)
    flush()
    return "\n".join(result)


def _escape_prose(text: str) -> str:
    pieces: list[str] = []
    last = 0
    for m in _CODE_SPAN.finditer(text):
        pieces.append(text[last : m.start()].replace("<", "&lt;"))
        pieces.append(m.group(0))
        last = m.end()
    pieces.append(text[last:].replace("<", "&lt;"))
    return "".join(pieces)


def code_block(text: str, info: str = "text") -> str:
    """A fenced block holding ``text`` verbatim (the fence outgrows any inner backticks)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def hard_line_breaks(markdown: str) -> str:
    """Keep the single line breaks of bot text visible (markdown would join the lines).

    A line followed by another non-blank line gets a hard break (two trailing
    spaces); fenced code is left untouched.
    """
    lines = markdown.split("\n")
    out: list[str] = []
    fence: str | None = None
    for i, line in enumerate(lines):
        m = _FENCE.match(line)
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            out.append(line)
            continue
        if m:
            fence = m.group(1)
            out.append(line)
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and nxt.strip() and not _FENCE.match(nxt) and not line.endswith("  "):
            line += "  "
        out.append(line)
    return "\n".join(out)


_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s")


def separate_lists(markdown: str) -> str:
    """A blank line between a list's last item and a paragraph that follows it.

    Without it markdown glues the paragraph onto the last item (a contact
    sentence would read as part of the phone bullet).
    """
    lines = markdown.split("\n")
    out: list[str] = []
    for i, line in enumerate(lines):
        out.append(line)
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if _LIST_ITEM.match(line) and nxt.strip() and not _LIST_ITEM.match(nxt):
            if not nxt.startswith((" ", "\t")):
                out.append("")
    return "\n".join(out)


def safe_name(label: str) -> str:
    """An element name that survives Chainlit's ``[name](link)`` rewrite."""
    name = re.sub(r"[\[\]`*<>\\|]", "", label)
    return re.sub(r"\s+", " ", name).strip() or "source"


# -- sources -------------------------------------------------------------------------


def entry_markdown(entry: Entry, score: float | None = None, agent: bool = True) -> str:
    """The full text of a knowledge-base entry, as the source element shows it.

    ``agent=False`` leaves out what only support agents read: the code, kind,
    severity and match score.
    """
    lines: list[str] = [f"### {entry.title if agent else plain_title(entry)}"]
    facts: list[tuple[str, str | None]] = [
        ("Code", f"`{entry.code}`" if entry.code and agent else None),
        ("Kind", entry.kind.replace("_", " ") if agent else None),
        ("Severity", entry.severity if agent else None),
        ("Systems", entry.systems_text or ", ".join(entry.systems) or None),
        ("Section", entry.section),
        ("Updated", entry.updated),
    ]
    if entry.message:
        gloss = f" ({entry.message_gloss})" if entry.message_gloss else ""
        facts.append(("Message", f"“{entry.message}”{gloss}"))
    lines.append("")
    lines.extend(f"- **{label}:** {value}" for label, value in facts if value)
    if entry.text:
        lines += ["", entry.text]
    for part in entry.parts:
        gloss = f" ({part.gloss})" if part.gloss else ""
        lines += ["", f"#### “{part.message}”{gloss}"]
        if part.cause:
            lines += ["", f"**Cause:** {part.cause}"]
        if part.solution:
            lines += ["", f"**Solution:** {part.solution}"]
    if entry.cause:
        lines += ["", f"**Cause:** {entry.cause}"]
    if entry.solution:
        lines += ["", "**Solution:**", "", entry.solution]
    where = f"{entry.source}, line {entry.line}"
    if score is not None and agent:
        where += f" · match score {score:.3f}"
    lines += ["", f"*Source: {where}*"]
    return hard_line_breaks(neutralize_html("\n".join(lines)))


def source_elements(
    citations: Sequence[Citation], suffix: str = "", agent: bool = True
) -> tuple[SourceElement, ...]:
    """One element per cited entry, best first, with unique names.

    Chainlit links *every* occurrence of a name in the message, code blocks
    included; ``suffix`` keeps names out of text that must stay verbatim.
    Merchants (``agent=False``) see entries named by their plain title, not a code.
    """
    seen: set[str] = set()
    out: list[SourceElement] = []
    for c in citations:
        base = safe_name(c.entry.label if agent else plain_title(c.entry)) + suffix
        name, n = base, 2
        while name in seen:
            name, n = f"{base} ({n})", n + 1
        seen.add(name)
        content = entry_markdown(c.entry, c.score, agent=agent)
        out.append(SourceElement(name, content, c.entry.id))
    return tuple(out)


def source_panel(citations: Sequence[Citation]) -> SourceElement:
    """All sources of a merchant's answer as one element, best first.

    The side panel is titled by the element's name: one element per answer keeps
    the title (the best source) and the list (this answer's sources) together.
    """
    best = citations[0].entry
    name = safe_name(plain_title(best)) + SOURCE_SUFFIX
    content = "\n\n---\n\n".join(entry_markdown(c.entry, agent=False) for c in citations)
    return SourceElement(name, content, best.id)


def sources_line(elements: Sequence[SourceElement]) -> str:
    """The line naming every source; Chainlit turns each name into an opening link."""
    if not elements:
        return ""
    return "**Sources:** " + " · ".join(e.name for e in elements)


def link_sources(markdown: str, elements: Sequence[SourceElement]) -> tuple[str, list[str]]:
    """Unbracket the bot's inline citations so each becomes an element link.

    ``[FORTNOX_FISCAL_YEAR]`` and ``[FAQ: How do I …?]`` become ``FORTNOX_FISCAL_YEAR``
    and ``FAQ: How do I …?``; Chainlit then links every occurrence of an element's
    name. Returns the text and the names it does not mention (for a sources line).
    """
    for e in elements:
        pattern = re.compile(r"\[((?:FAQ|Guide): )?" + re.escape(e.name) + r"\]")
        markdown = pattern.sub(lambda m, name=e.name: f"{m.group(1) or ''}{name}", markdown)
    missing = [e.name for e in elements if e.name not in markdown]
    return markdown, missing


def citation_record(c: Citation) -> dict[str, Any]:
    """A citation as stored in the answer step's metadata (read by the feedback export)."""
    return {"id": c.entry.id, "label": c.entry.label, **c.to_json()}


# -- what a merchant reads -------------------------------------------------------------
#
# Merchants read an answer built from the cited entries themselves: the message they saw
# first (in their language when they pasted it, with the English), a plain title, the
# cause and the steps. Codes, severities and match scores are for agents; they stay in
# the source elements of the agent profile.

_CODE_IN_PARENS = re.compile(r"\s*\((\d{4,})\)\s*$")
_WS = re.compile(r"\s+")

# What a follow-up asks for, when it asks for one part of the answer only.
_ASKS_FIX = re.compile(
    r"\b(how (?:do|can|should) (?:i|we) (?:fix|solve|resolve|sort|handle)|fix (?:it|this|that)"
    r"|what (?:do|should|can) (?:i|we) do|steps?\b|solution|solve (?:it|this))",
    re.I,
)
_ASKS_CAUSE = re.compile(
    r"^\W*(why|how come)\b|\b(what causes|cause[sd]?|reason|why does|why is|why do)\b", re.I
)
# "what does that mean?": the plain explanation, which is the cause (as "why?" gets).
_ASKS_MEANING = re.compile(
    r"\bwhat (?:does|do) (?:that|this|it|these|those)(?: \w+)? mean\b"
    r"|\bwhat(?:'s| is) (?:that|this) (?:supposed to )?mean\b|\bexplain (?:it|that|this)\b",
    re.I,
)
# A merchant's "can you make it shorter?": the steps alone are the short answer. (In the
# agent profile the same words refine the last draft and never reach here.)
_ASKS_SHORTER = re.compile(r"\b(?:shorter|short version|briefer|briefly|tl;?dr|in short)\b", re.I)
# "it still doesn't work", "didn't help": repeating the answer helps no one, so the reply
# acknowledges it, points at what else to check and offers the hand-off.
STILL_FAILING = re.compile(
    r"\bstill (?:doesn'?t|does not|isn'?t|is not|not|won'?t|fail\w*|broken|the same|same"
    r"|get(?:ting)? (?:the|this|that|it|an?))\b"
    r"|\b(?:didn'?t|did not|doesn'?t|does not) (?:help|work|fix)\b|\bno luck\b",
    re.I,
)

# A pasted message longer than this is collapsed in the answer's echo of it.
ECHO_CHARS = 160


def blocks_markdown(blocks: Sequence[tuple[str, list[str]]]) -> str:
    """Numbered steps (numbering continues across notes), notes as prose, lists as bullets."""
    out: list[str] = []
    n = 0
    for kind, items in blocks:
        if kind == "steps":
            lines = []
            for item in items:
                n += 1
                lines.append(f"{n}. {item}")
            out.append("\n".join(lines))
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in items))
        else:
            out.append(" ".join(items))
    return "\n\n".join(out)


def _norm(text: str) -> str:
    return _WS.sub(" ", text.casefold()).strip(" \"'“”.")


def english_message(entry: Entry) -> str | None:
    """The entry's error message in English (the gloss of a Swedish message)."""
    if entry.message and entry.message_gloss and not entry.message.endswith(":"):
        return entry.message_gloss
    return entry.message


def plain_title(entry: Entry, part: SubError | None = None) -> str:
    """A title a merchant understands: the English message or the entry's own words."""
    if part is not None:
        return part.gloss or part.message
    if entry.kind in ("faq", "guide"):
        return entry.title
    message = english_message(entry)
    if message and entry.message and entry.message.endswith(":"):
        message = entry.message.rstrip(":")
    if entry.kind == "error_pattern" or not message:
        # Patterns are titled by their message in quotes; codes without a message by
        # their code, which merchants do not read: make it words.
        title = entry.title.replace("“", "").replace("”", "").replace('"', "")
        if entry.code and title == entry.code:
            return _code_as_words(entry)
        return title
    return _CODE_IN_PARENS.sub("", message)


# Words of section headings ("General Error Codes") that are not names.
_HEADING_WORDS = frozenset("error errors code codes general additional patterns".split())


def _code_as_words(entry: Entry) -> str:
    """``COMMON_FORTNOX_ERRORS_EXPLAINED`` → "Common Fortnox errors explained".

    Names keep the spelling they have in the entry's section or systems ("Fortnox", "SAP").
    """
    text = " ".join([entry.section or "", *entry.systems])
    names = {
        w.casefold(): w for w in re.findall(r"\w+", text) if w.casefold() not in _HEADING_WORDS
    }
    words = [names.get(w.casefold(), w.lower()) for w in (entry.code or "").split("_") if w]
    if not words:
        return entry.title
    return " ".join([words[0][:1].upper() + words[0][1:], *words[1:]])


def _looks_nordic(text: str) -> bool:
    from bot.glossary import translate_query

    return translate_query(text) != text


def collapse(text: str, limit: int = ECHO_CHARS) -> str:
    """One line of at most ``limit`` characters (an ellipsis says it was cut)."""
    line = _WS.sub(" ", text).strip()
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def found_message(question: str, message: str) -> str | None:
    """The part of the question that is the message, as the merchant wrote it, or None.

    Tolerant as the exact lookup is: case, punctuation and spacing are ignored, ``a/b``
    in the document accepts either word or both, ``X`` any value, and a trailing
    numeric code in brackets may be left out. "… med felet Kunde inte hitta leveranssätt,
    vad gör vi?" holds "Kunde inte hitta leveranssätt" of "Kunde inte hämta/hitta
    leveranssätt".
    """
    parts: list[str] = []
    for token in _CODE_IN_PARENS.sub("", message).split():
        token = token.strip(".,:;!?()\"'“”")
        if not token:
            continue
        if token == "X":
            parts.append(r"\S+")
        elif "/" in token:
            alternatives = [re.escape(a) for a in token.split("/") if a]
            parts.append("(?:" + "|".join([re.escape(token), *alternatives]) + ")")
        else:
            parts.append(re.escape(token))
    if not parts:
        return None
    pattern = r"(?<!\w)" + r"[\s\W]+".join(parts) + r"(?!\w)"
    found = re.search(pattern, question, re.IGNORECASE)
    return found.group(0) if found else None


_BARE_MESSAGE_WORDS = 8


def _is_bare_message(question: str) -> bool:
    """True for a paste that is only a message: one short line that asks nothing."""
    text = question.strip()
    return "\n" not in text and "?" not in text and len(text.split()) <= _BARE_MESSAGE_WORDS


def _mentions_code(question: str, entry: Entry) -> bool:
    """True when the question names the entry's code in any spelling or its number."""
    words = " ".join(re.findall(r"[^\W_]+", question.casefold()))
    code = " ".join(re.findall(r"[^\W_]+", (entry.code or "").casefold()))
    if code and re.search(rf"(?<!\w){re.escape(code)}(?!\w)", words):
        return True
    return bool(entry.numeric_code) and entry.numeric_code in re.findall(r"\d{4,}", question)


def seen_line(question: str, entry: Entry, part: SubError | None = None) -> str:
    """What the merchant saw, quoted first: their own words, with the English.

    Only when the merchant pasted or retyped the message (quoted as they wrote it) or
    named the code ("The message: …"); a question that only shares words with the entry
    ("What is the VAT rate in Germany?") gets no such lead, nor is a whole sentence
    around a message presented as the message. Returns an empty string then, and when
    the entry has no message.
    """
    candidates: list[tuple[str, str | None]] = []
    if part is not None:
        candidates.append((part.message, part.gloss))
    else:
        if entry.message:
            candidates.append((entry.message, english_message(entry)))
        candidates.extend((p.message, p.gloss) for p in entry.parts)
    for original, english in candidates:
        seen = found_message(question, original)
        if seen:
            translated = (
                f" — in English: “{english}”"
                if english and _norm(english) != _norm(original)
                else ""
            )
            return f"**You saw:** “{seen}”{translated}"
        if english and (seen := found_message(question, english)):
            return f"**You saw:** “{seen}”"
    english = english_message(entry) if part is None else (part.gloss or part.message)
    if not english:
        return ""
    if _looks_nordic(question) and _is_bare_message(question):
        # A Swedish or Norwegian message the guide has only in English ("Räkenskapsår
        # saknas"): the paste itself is what they saw. A sentence around it is not.
        return f"**You saw:** “{collapse(question)}” — in English: “{english}”"
    if _mentions_code(question, entry):
        return f"**The message:** “{english}”"
    return ""


def matching_part(question: str, entry: Entry) -> SubError | None:
    """The sub-error of a grouped entry that the question names, if exactly one does."""
    q = _norm(question)
    hits = [p for p in entry.parts if _norm(p.message) in q or (p.gloss and _norm(p.gloss) in q)]
    return hits[0] if len(hits) == 1 else None


def follow_up_intent(question: str) -> str | None:
    """What a follow-up asks of the answer just shown, else None.

    ``"fix"``: only the steps ("how do I fix it?", "can you make it shorter?");
    ``"cause"``: only the explanation ("why?", "what does that mean?"); ``"still"``:
    the steps did not help ("it still doesn't work").
    """
    # Checked first: "still failing, why?" reports that the steps failed.
    if STILL_FAILING.search(question):
        return "still"
    if _ASKS_CAUSE.search(question) or _ASKS_MEANING.search(question):
        return "cause"
    if _ASKS_FIX.search(question) or _ASKS_SHORTER.search(question):
        return "fix"
    return None


def merchant_entry_markdown(
    question: str, entry: Entry, intent: str | None = None, brief: bool = False
) -> str:
    """One entry as a merchant reads it; ``intent`` keeps only the cause or the steps."""
    if entry.kind in ("faq", "guide"):
        body = "\n\n".join(line for line in (entry.text or "").split("\n") if line.strip())
        return f"### {entry.title}\n\n{body}"
    part = matching_part(question, entry)
    parts = (part,) if part else entry.parts
    lines: list[str] = []
    # A follow-up ("how do I fix it?") comes right after the full answer: no need to
    # quote the message again.
    if not brief and intent is None:
        if seen := seen_line(question, entry, part):
            lines.append(seen)
    lines.append(f"### {plain_title(entry, part)}")
    if entry.text and not entry.parts and not brief and intent is None:
        lines.append(entry.text)
    for p in parts:
        if part is None:
            gloss = f" ({p.gloss})" if p.gloss else ""
            lines.append(f"#### “{p.message}”{gloss}")
        if p.cause and intent != "fix":
            lines.append(f"**Why it happens:** {p.cause}")
        if p.solution and intent != "cause":
            lines += ["**What to do:**", blocks_markdown(solution_blocks(p.solution))]
    if entry.cause and intent != "fix":
        lines.append(f"**Why it happens:** {entry.cause}")
    if entry.solution and intent != "cause":
        lines += ["**What to do:**", blocks_markdown(solution_blocks(entry.solution))]
    return "\n\n".join(lines)


# -- messages -------------------------------------------------------------------------


_TOKENS_NOTICE = re.compile(r"only its first \d+ tokens were read", re.I)
PLAIN_TRUNCATION = "Your message was long, so I read only its beginning."


def plain_notice(notice: str) -> str:
    """A notice in words a merchant reads: a cut question says so without "tokens"."""
    return PLAIN_TRUNCATION if _TOKENS_NOTICE.search(notice) else notice


def notices_markdown(notices: Sequence[str], plain: bool = False) -> str:
    """Notices (e.g. a truncated question) as italic lines.

    ``plain`` (merchants) words the truncation notice without "tokens".
    """
    if plain:
        notices = [plain_notice(n) for n in notices]
    return "\n".join(f"*{neutralize_html(n)}*" for n in notices)


def render_answer(
    answer: Answer, profile: str = MERCHANT, history: Sequence[Turn] = ()
) -> RenderedMessage:
    """An answer: markdown text linking its source elements, and step metadata.

    A merchant's answer is built from the cited entries (see
    :func:`merchant_answer_markdown`); the agent profile and answers that cite
    nothing show the answer's own text. Every source is named once, best first,
    on a "Sources:" line, so each can be opened.

    Args:
        answer: What the bot answered.
        profile: The chat profile; only the agent profile sees codes and scores.
        history: The conversation before this answer: a follow-up about the entry
            the last answer cited gets only the part it asks for.
    """
    agent = profile == AGENT
    composed = not (agent or answer.abstained or not answer.citations or answer.outcome != "answer")
    # Chainlit links every occurrence of an element's name: in a composed answer the
    # suffix keeps the title and the quoted message from turning into links.
    if composed:
        elements: tuple[SourceElement, ...] = (source_panel(answer.citations),)
        intent = _intent_for(answer, history)
        text = neutralize_html(merchant_answer_markdown(answer, intent))
        sources = list(elements)
    else:
        # Suggested entries (outcome "suggest") open like sources, so a real question whose
        # entry was not confidently found is still one click from it.
        cited = (*answer.citations, *answer.related)
        elements = source_elements(cited, agent=agent)
        markdown = answer.text
        if not agent:
            # Merchants read titles, not codes: "[FORTNOX_X]" becomes "[Its title]".
            for c, e in zip(cited, elements, strict=True):
                markdown = markdown.replace(format_citation(c.entry), f"[{e.name}]")
        markdown = hard_line_breaks(neutralize_html(separate_lists(markdown)))
        text, unnamed = link_sources(markdown, elements)
        if not agent:
            text = _RAW_SOURCE.sub("", text)
        sources = [e for e in elements if e.name in unnamed]
        intent = None
    parts = [notices_markdown(answer.notices, plain=not agent), text, sources_line(sources)]
    metadata = {
        "kind": "answer",
        "profile": profile,
        "question": answer.question,
        "outcome": answer.outcome,
        "citations": [citation_record(c) for c in answer.citations],
        "related": [citation_record(c) for c in answer.related],
        "abstained": answer.abstained,
        "intent": intent,
        "facts": answer_facts(answer, original_question(answer, history)),
    }
    if answer.small_talk:
        # A greeting or thanks: `supportbot gaps` does not list it.
        metadata["small_talk"] = True
    return RenderedMessage("\n\n".join(p for p in parts if p), elements, metadata)


# "Source: [FAQ: How do I contact Junipeer support?]" left in a text that links nothing.
_RAW_SOURCE = re.compile(r"\n*Source: \[[^\]\n]*\]")


def _intent_for(answer: Answer, history: Sequence[Turn]) -> str | None:
    """The part a follow-up asks for, when it is about the entry just shown."""
    last = next((t for t in reversed(history) if t.role == "assistant"), None)
    if last is None or not last.cited or not answer.citations:
        return None
    if answer.citations[0].entry.id != last.cited[0]:
        return None
    return follow_up_intent(answer.question)


def merchant_answer_markdown(answer: Answer, intent: str | None = None) -> str:
    """The merchant's answer from its cited entries, best first.

    The best entry is shown in full (or only its cause or steps for a follow-up
    asking for them); the others are named as "Also related" for the merchant to
    open.
    """
    best, *others = [c.entry for c in answer.citations]
    if intent == "still":
        return still_failing_markdown(best, [c.entry for c in answer.related] + others)
    parts = [merchant_entry_markdown(answer.question, best, intent)]
    if others and intent is None:
        names = " · ".join(f"“{plain_title(e)}”" for e in others)
        parts.append(f"*Also related: {names} (in the sources).*")
    return "\n\n".join(parts)


def still_failing_markdown(entry: Entry, others: Sequence[Entry] = ()) -> str:
    """The reply to "it still doesn't work" after ``entry`` was shown: not a repeat.

    It acknowledges that the steps did not help, points at what else the entry or
    the related entries give to check, and offers the "Talk to a human" hand-off.
    """
    lines = [f"Sorry, “{plain_title(entry)}” is still not solved."]
    checks: list[str] = []
    steps = [
        item
        for kind, items in solution_blocks(entry.solution or "")
        if kind == "steps"
        for item in items
    ]
    if len(steps) > 1:
        # The last step is the one most often skipped (save, re-run the task).
        checks.append(f"that every step was done, including the last: {_WS.sub(' ', steps[-1])}")
    for p in entry.parts:
        checks.append(f"whether the message is “{p.message}”, which has its own steps")
    seen: set[str] = {entry.id}
    for other in others:
        if other.id not in seen:
            seen.add(other.id)
            checks.append(f"“{plain_title(other)}” (in the sources)")
    if checks:
        lines.append("Also check:\n" + "\n".join(f"- {c}" for c in checks[:4]))
    lines.append(
        "If it still fails, choose **Talk to a human** below: Junipeer support gets your "
        "question, the error and what I suggested."
    )
    return "\n\n".join(lines)


def render_draft(draft: Draft, style: str = "default", refinement: bool = False) -> RenderedMessage:
    """An agent draft: the reply in a copyable code block, what to check beside it.

    The reply is what the merchant receives (no codes); the entries it relies on,
    with their codes, severities and scores, are listed below it for the agent.

    Args:
        draft: The draft reply.
        style: ``default``, ``shorter`` or ``formal``.
        refinement: The draft redoes the last ticket in another style (typed or clicked):
            its metadata says so, so reports do not count it as a new question.
    """
    # The reply quotes entry labels; suffixed names leave its code block untouched.
    elements = source_elements(draft.citations, suffix=SOURCE_SUFFIX)
    related = source_elements(draft.related, suffix=SOURCE_SUFFIX)
    label = STYLE_LABELS.get(style, style)
    title = f"**Draft reply{f' ({label})' if label else ''}** — copy it with the button:"
    parts = [notices_markdown(draft.notices), title, code_block(draft.reply)]
    if draft.abstained and related:
        parts.append(
            "*No knowledge-base entry answers this ticket with confidence. Closest entries, to "
            "check before replying or escalating:* " + " · ".join(e.name for e in related)
        )
    elif draft.abstained:
        parts.append(
            "*No knowledge-base entry matches this ticket: check it yourself or escalate.*"
        )
    if elements:
        checks = ["**Check before sending:**"]
        for c, e in zip(draft.citations, elements, strict=True):
            facts = [f"severity {c.entry.severity}" if c.entry.severity else c.entry.kind]
            if c.entry.message:
                facts.append(f"message “{neutralize_html(c.entry.message)}”")
            facts.append(f"match score {c.score:.2f}")
            checks.append(f"- {e.name} — {', '.join(facts)}")
        parts.append("\n".join(checks))
    metadata = {
        "kind": "draft",
        "profile": AGENT,
        "style": style,
        "question": draft.ticket,
        "outcome": draft.outcome,
        "citations": [citation_record(c) for c in draft.citations],
        "related": [citation_record(c) for c in draft.related],
        "abstained": draft.abstained,
    }
    if refinement:
        metadata["refinement"] = True
    return RenderedMessage("\n\n".join(p for p in parts if p), (*elements, *related), metadata)


def refinement_of(text: str, current: str = "default") -> Refinement | None:
    """What a typed message in the agent profile asks of the last draft, else None.

    See :func:`bot.drafting.typed_refinement`: the style it asks for composes with the
    last draft's ``current`` style, and requests that cannot be done carry a note.
    """
    return typed_refinement(text, current if current in STYLE_LABELS else "default")


def redraft_styles(current: str) -> dict[str, str]:
    """The style each refinement button gives the draft now in ``current`` style.

    Refinements compose: "Shorter" on a formal draft stays formal, and the reverse.
    """
    return {
        "Shorter": combine_styles(current, "shorter"),
        "More formal": combine_styles(current, "formal"),
    }


NO_DRAFT_YET = (
    "There is no draft to change yet: paste the merchant's ticket and I'll draft a reply first."
)


def render_refinement_note(note: str) -> RenderedMessage:
    """A typed refinement that could not be done, told to the agent (no draft, no gap)."""
    return RenderedMessage(
        f"*{neutralize_html(note)}*", (), {"kind": "refinement_note", "profile": AGENT}
    )


def thread_title(question: str, citations: Sequence[Citation]) -> str:
    """A conversation's title in the history: its error or topic, not its first words."""
    if citations:
        return collapse(plain_title(citations[0].entry), 80)
    return collapse(question, 60) or "Conversation"


def last_draft(steps: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """The ticket and style of the last draft in a resumed thread's steps (for refinements)."""
    for step in reversed(steps):
        meta = _as_dict(step.get("metadata"))
        if meta.get("kind") == "draft" and meta.get("question"):
            style = meta.get("style")
            return str(meta["question"]), style if style in STYLE_LABELS else "default"
    return None


def _as_dict(value: Any) -> dict[str, Any]:
    """A stored JSON column as a dict (SQLite hands it back as text, PostgreSQL parsed)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return dict(value) if isinstance(value, Mapping) else {}


def resumed_profile(thread: Mapping[str, Any], agent_mode: bool) -> str:
    """The chat profile a resumed thread was held in: its tag (Chainlit tags by profile)."""
    tags = thread.get("tags") or []
    if isinstance(tags, str):
        try:
            tags = json.loads(tags)
        except ValueError:
            tags = [tags]
    return AGENT if agent_mode and AGENT in tags else MERCHANT


def resumed_metadata(thread: Mapping[str, Any], profile: str) -> dict[str, Any]:
    """The thread's metadata as the page reads it on resume: a dict naming its profile.

    The page sets its header's profile from ``metadata.chat_profile`` only when the
    metadata is an object; stored as text (SQLite), it was ignored and the header said
    "Merchant" over an agent's drafts.
    """
    return {**_as_dict(thread.get("metadata")), "chat_profile": profile}


def resumed_elements(
    steps: Sequence[Mapping[str, Any]], elements: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The elements a resumed thread shows: the last answer's sources, as after an answer.

    Chainlit's panel lists every "side" element it is given under the newest one's name;
    in a live conversation only the current answer's are kept (see ``bot/app.py``), so a
    resumed one keeps those of its last answer with sources too, not every answer's.
    """
    side_for = {e.get("forId") for e in elements if e.get("display") == "side"}
    last = next((s.get("id") for s in reversed(steps) if s.get("id") in side_for), None)
    return [e for e in elements if e.get("display") != "side" or e.get("forId") == last]


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"Phone:\s*([+\d][\d ()+-]{5,}\d)")


@dataclass(frozen=True)
class Handoff:
    """What a "Talk to a human" hand-off carries to Junipeer support."""

    email: str
    question: str
    code: str | None
    message: str | None
    suggested: str
    link: str
    phone: str | None = None
    # The follow-up the button was pressed under, when it is not the question itself.
    follow_up: str = ""
    # What the merchant saw in their own language, with the English ("" if the same).
    seen: str = ""
    # The closest entries offered when there was no sure answer.
    offered: str = ""
    # The conversation's ID (for `supportbot handoffs --thread`) and the answer's.
    conversation: str = ""
    answer_id: str = ""
    # False when the hand-off is not about any answer.
    answered: bool = True
    # Said when the assistant failed on the question (an error on its side), else "".
    error: str = ""

    @property
    def subject(self) -> str:
        """The e-mail subject: the error when there is one, else the question."""
        about = self.message or self.code or collapse(self.question, 80) or "a question"
        return f"Help needed: {about}"

    @property
    def body(self) -> str:
        """The e-mail body, with everything support needs to pick the case up."""
        lines = [
            "Hi Junipeer support,",
            "",
            "I need help with this:",
            "",
            collapse(self.question, 1500),
        ]
        if self.follow_up:
            lines += ["", f"Then I asked: {collapse(self.follow_up, 300)}"]
        if self.code or self.message:
            lines += ["", f"Error: {' — '.join(x for x in (self.code, self.message) if x)}"]
        if self.seen:
            lines += [f"I saw: {self.seen}"]
        if self.error:
            lines += ["", self.error]
        elif self.suggested:
            lines += ["", f"The assistant suggested: {self.suggested}"]
        elif self.offered:
            lines += ["", f"The assistant had no sure answer; it offered: {self.offered}"]
        elif self.answered:
            lines += ["", "The assistant found nothing about this in its knowledge base."]
        if self.link:
            lines += ["", f"Conversation: {self.link}"]
        if self.conversation:
            lines += ["", f"Conversation ID: {self.conversation}"]
        lines += ["", "Task ID or reference number (from the Tasks or Logs page): "]
        return "\n".join(lines)

    def mailto(self) -> str:
        """A ``mailto:`` URL with the subject and body filled in."""
        from urllib.parse import quote

        return f"mailto:{self.email}?subject={quote(self.subject)}&body={quote(self.body)}"

    def record(self) -> dict[str, Any]:
        """The hand-off as stored in its step's metadata (read by ``supportbot handoffs``)."""
        return {
            "email": self.email,
            "question": self.question,
            "follow_up": self.follow_up,
            "code": self.code,
            "message": self.message,
            "seen": self.seen,
            "suggested": self.suggested or self.offered,
            "link": self.link,
            "answer_id": self.answer_id,
        }


def original_question(answer: Answer, history: Sequence[Turn]) -> str:
    """The merchant's first question about this answer's entry, before any follow-ups.

    "Räkenskapsår saknas", then "how do I fix it?" about the same entry: the first is
    what support needs to read (the message as the merchant pasted it).
    """
    if not answer.citations:
        return answer.question
    entry_id = answer.citations[0].entry.id
    asked, turns = answer.question, list(history)
    while (
        len(turns) >= 2
        and turns[-1].role == "assistant"
        and turns[-1].cited[:1] == (entry_id,)
        and turns[-2].role == "user"
    ):
        asked = turns[-2].content
        turns = turns[:-2]
    return asked


def answer_facts(answer: Answer, asked: str | None = None) -> dict[str, Any]:
    """What a later hand-off needs to know about an answer (kept in its metadata).

    Args:
        answer: The answer.
        asked: The question that started it (see :func:`original_question`), if not its own.
    """
    asked = asked if asked is not None else answer.question
    if answer.abstained or not answer.citations:
        offered = " · ".join(f"“{plain_title(c.entry)}”" for c in answer.related[:3])
        return {"code": None, "message": None, "suggested": "", "offered": offered, "asked": asked}
    entry = answer.citations[0].entry
    # Also a grouped entry's steps, which sit under its sub-errors, not in its solution.
    steps = fix_steps(entry)
    suggested = plain_title(entry)
    if steps:
        suggested += " — " + " ".join(steps[:3])
    seen = seen_line(asked, entry, matching_part(asked, entry))
    # Only when it adds something: the merchant's own words beside the English.
    seen = seen.removeprefix("**You saw:** ") if " — in English: " in seen else ""
    return {
        "code": entry.code,
        "message": entry.message,
        "suggested": collapse(suggested, 600),
        "asked": asked,
        "seen": seen,
    }


def build_handoff(
    contacts_markdown: str,
    fallback_email: str,
    last_answer: Mapping[str, Any] | None,
    link: str,
    conversation: str = "",
    answer_id: str = "",
) -> Handoff:
    """The hand-off for an answer of the conversation (by default its last).

    Args:
        contacts_markdown: The FAQ's support contacts (the address and phone come from it).
        fallback_email: Used when the FAQ names no address.
        last_answer: The answer's metadata (see :func:`render_answer`), if any.
        link: Where support opens this conversation ("" when nowhere: see its ID).
        conversation: The conversation's ID.
        answer_id: The answer's message ID (one hand-off per answer is stored).
    """
    email_match = _EMAIL.search(contacts_markdown)
    phone_match = _PHONE.search(contacts_markdown)
    facts = dict((last_answer or {}).get("facts") or {})
    question = str((last_answer or {}).get("question") or "")
    asked = str(facts.get("asked") or question)
    return Handoff(
        email=email_match.group(0) if email_match else fallback_email,
        question=asked,
        code=facts.get("code"),
        message=facts.get("message"),
        suggested=str(facts.get("suggested") or ""),
        link=link,
        phone=phone_match.group(1).strip() if phone_match else None,
        follow_up=question if _norm(question) != _norm(asked) else "",
        seen=str(facts.get("seen") or ""),
        offered=str(facts.get("offered") or ""),
        conversation=conversation,
        answer_id=answer_id,
        answered=last_answer is not None,
        error=str(facts.get("error") or ""),
    )


def handoff_payload(answer_metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a "Talk to a human" button carries about its answer (see :func:`handoff_answer`)."""
    if not answer_metadata:
        return {}
    return {
        "question": str(answer_metadata.get("question") or ""),
        "facts": dict(answer_metadata.get("facts") or {}),
    }


_FACT_KEYS = ("code", "message", "suggested", "offered", "seen", "asked", "error")
HANDOFF_FAILED = "The assistant could not answer this (an error on its side)."


def failed_handoff_payload(question: str) -> dict[str, Any]:
    """What the button under "something went wrong" carries: the question that failed.

    Without it the hand-off would describe the conversation's previous answer.
    """
    return {"question": question, "facts": {"error": HANDOFF_FAILED}}


def handoff_answer(payload: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The answer facts a clicked button sent back, checked (the browser sends them).

    Only bounded strings are kept; anything else is dropped.
    """
    if not isinstance(payload, Mapping) or not isinstance(payload.get("question"), str):
        return None
    facts = payload.get("facts") if isinstance(payload.get("facts"), Mapping) else {}
    clean = {
        key: collapse(value, 1500 if key == "asked" else 600)
        for key in _FACT_KEYS
        if isinstance(value := facts.get(key), str)
    }
    return {"question": payload["question"][:4000], "facts": clean}


def render_handoff(handoff: Handoff) -> RenderedMessage:
    """The "Talk to a human" answer: one click opens a filled-in e-mail to support.

    The contacts are not repeated: one link, the phone as a second way, and what
    the e-mail will contain.
    """
    lines = [
        "**Talk to a human:** Junipeer support will pick this up.",
        "",
        f"**[✉ E-mail support about this]({handoff.mailto()})** — the e-mail to "
        "Junipeer support is filled in with your question"
        + (", the error" if handoff.code or handoff.message else "")
        + (", what I suggested" if handoff.suggested or handoff.offered else "")
        + " and this conversation's reference. Add the task ID from the "
        "Tasks or Logs page if you have it.",
    ]
    if handoff.phone:
        lines += ["", f"Or call {handoff.phone}."]
    metadata = {"kind": "handoff", "handoff": handoff.record()}
    return RenderedMessage(neutralize_html("\n".join(lines)), (), metadata)


def render_contacts(contacts_markdown: str) -> RenderedMessage:
    """The support contacts from the FAQ, as a message (no raw citation)."""
    text = "**Talk to a human:** Junipeer support is happy to help.\n\n" + hard_line_breaks(
        neutralize_html(separate_lists(_RAW_SOURCE.sub("", contacts_markdown)))
    )
    return RenderedMessage(text, (), {"kind": "handoff"})


SUGGEST_ACTION = "suggest"
WIDGET_GREETING = (
    "**Hi! I'm Junipeer's support assistant.** Ask me about sync errors and error codes "
    "(paste the message you see), setting up your integrations, or pricing."
)


def widget_greeting(context: Mapping[str, Any] | None) -> tuple[str, list[tuple[str, str]]]:
    """The widget's first message and its suggestions, from what the host page shows.

    Args:
        context: What the merchant's page passed (``{"error": "..."}``); untrusted, so it
            is bounded and made inert.

    Returns:
        The greeting markdown and ``(label, message)`` suggestions, the page's error first.
    """
    raw = (context or {}).get("error") if isinstance(context, Mapping) else None
    error = collapse(str(raw), 200) if isinstance(raw, str) and raw.strip() else ""
    if not error:
        return WIDGET_GREETING, list(MERCHANT_STARTERS)
    text = (
        f"{WIDGET_GREETING}\n\nI see this page shows the error “{neutralize_html(error)}”. "
        "Shall I explain what to do?"
    )
    first = ("Explain the error on this page", f"I get the error '{error}'. What do I do?")
    return text, [first, *MERCHANT_STARTERS[1:3]]


def rate_limited_text(wait_s: float) -> str:
    """What a merchant sees when sending too fast."""
    return (
        f"You're sending messages faster than I can keep up. Please wait {max(1, round(wait_s))} "
        "seconds and try again."
    )


def stream_chunks(text: str, words: int = 3, max_chunks: int = 12) -> list[str]:
    """Split text into chunks of a few words (whitespace kept) for token streaming.

    Long answers get longer chunks, so that no answer takes more than ``max_chunks``
    pauses to stream in.
    """
    tokens = re.findall(r"\S+\s*|\s+", text)
    per = max(words, -(-len(tokens) // max(max_chunks, 1)))
    return ["".join(tokens[i : i + per]) for i in range(0, len(tokens), per)]


# -- conversation state -------------------------------------------------------------------


def add_turns(history: Sequence[Turn], question: str, answer: Answer) -> list[Turn]:
    """The history after one exchange, bounded to :data:`MAX_HISTORY_TURNS`."""
    turns = [
        *history,
        Turn("user", question),
        Turn("assistant", answer.text, tuple(c.entry.id for c in answer.citations)),
    ]
    return turns[-MAX_HISTORY_TURNS:]


def turns_to_session(turns: Sequence[Turn]) -> list[dict[str, Any]]:
    """Turns as plain dicts: Chainlit saves the user session as JSON thread metadata."""
    return [{"role": t.role, "content": t.content, "cited": list(t.cited)} for t in turns]


def turns_from_session(data: Sequence[Mapping[str, Any]] | None) -> list[Turn]:
    """Inverse of :func:`turns_to_session` (anything malformed is skipped)."""
    turns = []
    for item in data or ():
        if isinstance(item, Mapping) and item.get("role") in ("user", "assistant"):
            cited = tuple(str(c) for c in item.get("cited") or ())
            turns.append(Turn(item["role"], str(item.get("content", "")), cited))
    return turns


def turns_from_steps(steps: Sequence[Mapping[str, Any]]) -> list[Turn]:
    """Rebuild the history of a resumed thread from its persisted steps."""
    turns: list[Turn] = []
    for step in steps:
        kind = step.get("type")
        if kind == "user_message":
            turns.append(Turn("user", str(step.get("output") or "")))
        elif kind == "assistant_message":
            meta = step.get("metadata") or {}
            if isinstance(meta, str):
                try:
                    meta = json.loads(meta)
                except ValueError:
                    meta = {}
            if meta.get("kind") not in ("answer", "draft"):
                continue
            cited = tuple(c.get("id", "") for c in meta.get("citations") or () if c.get("id"))
            turns.append(Turn("assistant", str(step.get("output") or ""), cited))
    return turns[-MAX_HISTORY_TURNS:]


def severity_choices() -> list[str]:
    """Values of the severity filter, "Any" first."""
    return [ANY, *SEVERITIES]


def system_choices(systems: Sequence[str]) -> list[str]:
    """Values of the system filter, "Any" first (catch-all "All ..." names dropped)."""
    return [ANY, *(s for s in systems if not s.casefold().startswith("all "))]


def filters_from_settings(
    settings: Mapping[str, Any] | None, systems: Sequence[str] | None = None
) -> Filters | None:
    """The chat-settings values as :class:`Filters` ("Any" or missing means no filter).

    The values come back from the browser: one that is not among the choices offered
    (``systems`` for the system filter) counts as "Any", so it is neither searched for
    nor echoed in :func:`filter_notice`.
    """
    settings = settings or {}
    severity = settings.get("severity") or ANY
    system = settings.get("system") or ANY
    if severity not in SEVERITIES:
        severity = ANY
    if systems is not None and system not in system_choices(systems):
        system = ANY
    filters = Filters(
        severity=() if severity == ANY else (str(severity),),
        system=() if system == ANY else (str(system),),
    )
    return None if filters.is_empty() else filters


def offered_settings(settings: Any, systems: Sequence[str]) -> dict[str, str]:
    """The chat-settings values a client sent, keeping only the filters offered.

    Chainlit merges whatever a client sends into the session (kept in memory, stored
    with the thread); anything but a severity or system among the choices is dropped.
    """
    if not isinstance(settings, Mapping):
        return {}
    offered = {"severity": severity_choices(), "system": system_choices(systems)}
    return {k: v for k, v in settings.items() if k in offered and v in offered[k]}


def filter_notice(filters: Filters | None) -> str:
    """A short line saying which filters are on (empty when none)."""
    if filters is None:
        return ""
    parts = [f"severity {', '.join(filters.severity)}" if filters.severity else ""]
    parts.append(f"system {', '.join(filters.system)}" if filters.system else "")
    return "*Filtered to " + " and ".join(p for p in parts if p) + ".*"


def rate_limit(times: Sequence[float], now: float, per_minute: int) -> tuple[float, list[float]]:
    """Sliding one-minute window over a session's message times.

    Returns ``(wait, times)``: ``wait`` is 0 when the message is allowed (and then
    recorded in the returned times), else the seconds until the next is allowed.
    """
    recent = [t for t in times if now - t < 60]
    if len(recent) >= per_minute:
        return 60 - (now - min(recent)), recent
    return 0.0, [*recent, now]


def client_address(
    peer: str | None, headers: Mapping[str, str], trusted_proxies: Sequence[str]
) -> str:
    """The client's address for all per-client keys: a trusted proxy's header, else the peer.

    Args:
        peer: The address of the direct peer (the proxy, behind nginx).
        headers: Request headers, lower-case names.
        trusted_proxies: Peers whose ``X-Real-IP`` / ``X-Forwarded-For`` are believed.
    """
    peer = (peer or "").strip() or "unknown"
    if peer not in trusted_proxies:
        return peer
    real = (headers.get("x-real-ip") or "").strip()
    if real:
        return real
    # The right-most entry was added by the proxy we trust; earlier ones could be forged.
    forwarded = [p.strip() for p in (headers.get("x-forwarded-for") or "").split(",")]
    return next((p for p in reversed(forwarded) if p), peer)


def rate_limit_keys(session_id: str, user: str | None, address: str) -> tuple[str, str]:
    """(conversation key, address key) the rate limit counts messages under.

    A logged-in user is one conversation key however many tabs they open; an anonymous
    merchant's key is the Chainlit session id of the tab, which it keeps across
    reconnects and failover. The address key bounds what one address sends in total.
    """
    conversation = f"user:{user}" if user else f"session:{session_id}"
    return conversation, f"address:{address}"


def choice_index(choices: Sequence[str], value: object) -> int:
    """Position of a stored setting among a menu's choices (0, "Any", when gone)."""
    return choices.index(value) if value in choices else 0
