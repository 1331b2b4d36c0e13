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

from bot.answer_types import Answer, Citation, Draft, Filters, Turn
from ingest.entries import SEVERITIES, Entry

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

DRAFT_SOURCE_SUFFIX = " ↗"
HANDOFF_ACTION = "talk_to_human"
REDRAFT_ACTION = "redraft"
STYLE_LABELS: dict[str, str] = {"default": "", "shorter": "shorter", "formal": "more formal"}


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


def safe_name(label: str) -> str:
    """An element name that survives Chainlit's ``[name](link)`` rewrite."""
    name = re.sub(r"[\[\]`*<>\\|]", "", label)
    return re.sub(r"\s+", " ", name).strip() or "source"


# -- sources -------------------------------------------------------------------------


def entry_markdown(entry: Entry, score: float | None = None) -> str:
    """The full text of a knowledge-base entry, as the source element shows it."""
    lines: list[str] = [f"### {entry.title}"]
    facts: list[tuple[str, str | None]] = [
        ("Code", f"`{entry.code}`" if entry.code else None),
        ("Kind", entry.kind.replace("_", " ")),
        ("Severity", entry.severity),
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
    if score is not None:
        where += f" · match score {score:.3f}"
    lines += ["", f"*Source: {where}*"]
    return hard_line_breaks(neutralize_html("\n".join(lines)))


def source_elements(citations: Sequence[Citation], suffix: str = "") -> tuple[SourceElement, ...]:
    """One element per cited entry, with unique names.

    Chainlit links *every* occurrence of a name in the message, code blocks
    included; ``suffix`` keeps names out of text that must stay verbatim.
    """
    seen: set[str] = set()
    out: list[SourceElement] = []
    for c in citations:
        base = safe_name(c.entry.label) + suffix
        name, n = base, 2
        while name in seen:
            name, n = f"{base} ({n})", n + 1
        seen.add(name)
        out.append(SourceElement(name, entry_markdown(c.entry, c.score), c.entry.id))
    return tuple(out)


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


# -- messages -------------------------------------------------------------------------


def notices_markdown(notices: Sequence[str]) -> str:
    """Notices (e.g. a truncated question) as italic lines."""
    return "\n".join(f"*{neutralize_html(n)}*" for n in notices)


def render_answer(answer: Answer, profile: str = MERCHANT) -> RenderedMessage:
    """A merchant answer: markdown text linking its source elements, and step metadata.

    Sources the text does not name get a "Sources:" line, so every citation can
    be opened.
    """
    # Suggested entries (outcome "suggest") open like sources, so a real question whose
    # entry was not confidently found is still one click from it.
    elements = source_elements((*answer.citations, *answer.related))
    text, unnamed = link_sources(hard_line_breaks(neutralize_html(answer.text)), elements)
    parts = [notices_markdown(answer.notices), text]
    parts.append(sources_line([e for e in elements if e.name in unnamed]))
    metadata = {
        "kind": "answer",
        "profile": profile,
        "question": answer.question,
        "outcome": answer.outcome,
        "citations": [citation_record(c) for c in answer.citations],
        "related": [citation_record(c) for c in answer.related],
        "abstained": answer.abstained,
    }
    return RenderedMessage("\n\n".join(p for p in parts if p), elements, metadata)


def render_draft(draft: Draft, style: str = "default") -> RenderedMessage:
    """An agent draft: the reply in a copyable code block, then the entries it cites."""
    # The reply quotes entry labels; suffixed names leave its code block untouched.
    elements = source_elements(draft.citations, suffix=DRAFT_SOURCE_SUFFIX)
    related = source_elements(draft.related, suffix=DRAFT_SOURCE_SUFFIX)
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
        parts.append(sources_line(elements) + " — open them to check the draft before sending.")
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
    return RenderedMessage("\n\n".join(p for p in parts if p), (*elements, *related), metadata)


def render_contacts(contacts_markdown: str) -> RenderedMessage:
    """The "Talk to a human" answer."""
    text = "**Talk to a human:** Junipeer support is happy to help.\n\n" + hard_line_breaks(
        neutralize_html(contacts_markdown)
    )
    return RenderedMessage(text, (), {"kind": "handoff"})


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


def thread_name(text: str, limit: int) -> str:
    """A conversation's name from its first message: one line, at most ``limit`` characters."""
    name = " ".join(text.split())
    return name if len(name) <= limit else name[: limit - 1].rstrip() + "…"


def client_address(
    peer: str | None, headers: Mapping[str, str], trusted_proxies: Sequence[str]
) -> str:
    """The client's address for the rate limit: a trusted proxy's header, else the peer.

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
