"""Support-agent draft replies as a merchant receives them, and the steps of a solution.

Pure: no retrieval, no front end. ``bot/answer.py`` composes drafts with it and
``bot/chat_render.py`` uses the same step rules for merchants' answers.

A draft is sent to the merchant as it stands, so it speaks the merchant's language:
it greets them by name when the ticket is signed, quotes the message they saw, and
names no internal code. What the agent should check before sending (the entry, its
code and source) is shown beside the draft by the chat, never inside it.
"""

from __future__ import annotations

import re

from ingest.entries import Entry

# A signature ends the ticket: the name, maybe a surname, maybe ", Company" or a company
# line after it, and nothing else.
_SIGNATURE_END = r"(?:[ \t]+[A-ZÅÄÖØÆ][\w-]*)?[ \t]*(?:[,\n][^\n]{0,60})?\s*$"
_NAME = r"([A-ZÅÄÖØÆ][a-zåäöøæéü-]{1,30})"
# "/Anna", "/Anna, Example Store AB", "— Anna"
_SLASH_SIGNATURE = re.compile(r"(?:^|\s)(?:/|—)[ \t]*" + _NAME + _SIGNATURE_END)
# "Regards, Anna", "Mvh\nAnna Svensson", "Thanks! Erik"
_SIGN_OFF = re.compile(
    r"(?i:regards|best|thanks|thank you|cheers|br|mvh|vh|hälsningar|hälsning|hilsen|tack)"
    r"[,.!]?\s*\n?[ \t]*" + _NAME + _SIGNATURE_END
)
# Imperative verbs that start a step of the knowledge base's solutions.
_STEP_VERBS = frozenset(
    """
    add adjust allocate always check configure confirm contact create deactivate delete
    disconnect enable ensure export extend find go look manually map monitor reactivate
    reconnect re-create reduce remove request retry review see select set shorten split
    sync trigger try update use verify write
    """.split()
)
# Lead-ins that may precede the verb of a step ("Then retry", "Alternatively, update").
_STEP_LEADS = re.compile(
    r"^(?:then|also|alternatively|first|always|as a workaround|going forward|for a more"
    r" permanent fix|note)\b[,:]?\s*",
    re.I,
)
# A leading clause ("In Fortnox, go …", "If the error persists, check …").
_LEAD_CLAUSE = re.compile(r"^(?:in|if|for|to|after|once|when|as)\b[^,]{0,120},\s*", re.I)
_YOU_CAN = re.compile(r"^you (?:can|may|might|should)(?: also)?(?: need to)?\s+", re.I)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"“(])")
_WS = re.compile(r"\s+")
# Words a cause may open with that are not names, so "This happens because" lower-cases
# them; product names and acronyms ("Fortnox", "VAT", "SAP") keep their capital.
_ORDINARY_FIRST_WORDS = frozenset(
    "The A An This Your When During In Some Refunds High-volume Due If After Each Orders".split()
)
_NOT_NAMES = frozenset({"Junipeer", "Support", "Team", "Hi", "Hello", "Hej", "Thanks", "The"})


def is_step(sentence: str) -> bool:
    """True when a sentence of a solution tells the merchant to do something.

    Explanations ("This commonly occurs at the start of a new calendar year…") are
    not steps, even though the knowledge base writes them between the steps.
    """
    text = sentence.strip().lstrip("-•* ").strip()
    for _ in range(3):
        stripped = _LEAD_CLAUSE.sub("", _STEP_LEADS.sub("", text), count=1)
        if stripped == text:
            break
        text = stripped
    text = _YOU_CAN.sub("", text)
    first = re.match(r"[A-Za-z-]+", text)
    return bool(first) and first.group(0).casefold() in _STEP_VERBS


def solution_blocks(solution: str) -> list[tuple[str, list[str]]]:
    """A solution as ordered blocks: ``("steps", [...])``, ``("note", [...])``, ``("list", [...])``.

    Consecutive steps form one block; explanations between them form notes; the
    lines after a sentence ending in ":" that are not sentences form a plain list.
    """
    blocks: list[tuple[str, list[str]]] = []
    listing = False

    def add(kind: str, text: str) -> None:
        if blocks and blocks[-1][0] == kind:
            blocks[-1][1].append(text)
        else:
            blocks.append((kind, [text]))

    for raw in solution.split("\n"):
        line = raw.strip().removeprefix("- ").strip()
        if not line:
            continue
        if listing and not line.endswith((".", "!", "?")):
            add("list", line)
            continue
        listing = False
        for sentence in (s.strip() for s in _SENTENCE_END.split(line) if s.strip()):
            add("steps" if is_step(sentence) else "note", sentence)
            listing = sentence.endswith(":")
    return blocks


def signature_name(ticket: str) -> str | None:
    """The first name the ticket is signed with ("/Anna", "Regards, Anna"), if any."""
    tail = ticket.strip()[-300:]
    for pattern in (_SLASH_SIGNATURE, _SIGN_OFF):
        found = [m.group(1) for m in pattern.finditer(tail)]
        found = [name for name in found if name not in _NOT_NAMES]
        if found:
            return found[-1]
    return None


def _norm(text: str) -> str:
    return _WS.sub(" ", text.casefold()).strip(" .")


def seen_message(ticket: str, entry: Entry | None) -> str | None:
    """The error message the merchant quotes, in the entry's own wording, if the ticket has it.

    Only the knowledge base's wording is echoed: other quoted text in a ticket may be
    anything, including instructions the reply must not repeat.
    """
    if entry is None:
        return None
    for message in [entry.message, *(p.message for p in entry.parts)]:
        if message and _norm(message) in _norm(ticket):
            return message
    if entry.message_gloss and _norm(entry.message_gloss) in _norm(ticket):
        return entry.message_gloss
    return None


def english_meaning(entry: Entry, message: str) -> str | None:
    """The English of a quoted non-English message, when the entry gives it."""
    if entry.message == message and entry.message_gloss:
        return entry.message_gloss
    for part in entry.parts:
        if part.message == message and part.gloss:
            return part.gloss
    return None


def _solutions(entry: Entry) -> list[tuple[list[str], str]]:
    """(lead lines, solution) pairs: the entry's own, then each sub-error's.

    A sub-error's lead names its message and says why it happens, so the merchant
    knows which steps fix the error they saw.
    """
    out: list[tuple[list[str], str]] = []
    if entry.solution:
        out.append(([], entry.solution))
    for part in entry.parts:
        if part.solution:
            gloss = f" ({part.gloss})" if part.gloss else ""
            lead = [f"For “{part.message}”{gloss}:"]
            if part.cause:
                lead.append(f"This happens because {_lower_first(part.cause)}")
            out.append((["", *lead], part.solution))
    return out


def _solution_lines(solution: str, n: int) -> tuple[list[str], int]:
    """The lines of one solution, its steps numbered after ``n``; and the last number used."""
    lines: list[str] = []
    for kind, items in solution_blocks(solution):
        if kind == "steps":
            for item in items:
                n += 1
                lines.append(f"{n}. {item}")
        elif kind == "list":
            lines += [*(f"   - {item}" for item in items), ""]
        else:
            lines += ["", " ".join(items), ""]
    return lines, n


def _tidy(lines: list[str]) -> list[str]:
    """Blank lines frame paragraphs; never two in a row, none at either end."""
    tidy: list[str] = []
    for line in lines:
        if line or (tidy and tidy[-1]):
            tidy.append(line)
    while tidy and not tidy[-1]:
        tidy.pop()
    return tidy


def solution_lines(solution: str) -> list[str]:
    """One solution as plain-text lines in the knowledge base's own order.

    Steps are numbered (the numbering runs on across explanations), explanations stay
    paragraphs where the knowledge base put them, and the short lines after a sentence
    ending in ":" are a bulleted list.
    """
    return _tidy(_solution_lines(solution, 0)[0])


def fix_lines(entry: Entry) -> list[str]:
    """What to do, as plain-text lines in the knowledge base's own order.

    As :func:`solution_lines`, with the numbering running on across sub-errors, and a
    grouped entry's steps under the message of the sub-error they fix.
    """
    lines: list[str] = []
    n = 0
    for lead, solution in _solutions(entry):
        body, n = _solution_lines(solution, n)
        lines += lead + body
    return _tidy(lines)


def fix_steps(entry: Entry) -> list[str]:
    """Only the steps of :func:`fix_lines` (for the shorter draft), in order."""
    return [
        item
        for _, solution in _solutions(entry)
        for kind, items in solution_blocks(solution)
        if kind == "steps"
        for item in items
    ]


def compose_reply(
    ticket: str,
    entry: Entry | None,
    contacts: str,
    style: str = "default",
) -> str:
    """The reply text for a ticket, in one of the styles ``default``, ``shorter``, ``formal``.

    Args:
        ticket: The merchant's message.
        entry: The knowledge-base entry the reply is built from; None when none matched.
            Its solution (or its sub-errors' solutions) gives what to do, in its order.
        contacts: Support contact lines, for the closing.
        style: ``shorter`` is at most half as long as the default reply.
    """
    name = signature_name(ticket)
    formal = style == "formal"
    if name:
        greeting = f"{'Dear' if formal else 'Hi'} {name},"
    else:
        greeting = "Dear customer," if formal else "Hi,"
    thanks = (
        "Thank you for contacting Junipeer support."
        if formal
        else "Thanks for reaching out to Junipeer support."
    )
    closing = ["Kind regards," if formal else "Best regards,", "Junipeer Support"]
    if entry is None:
        body = (
            "We could not match your question to a known issue in our knowledge base, so a "
            "support specialist will look into it. To help us investigate quickly, please reply "
            "with the task ID or reference number from the Tasks or Logs page."
        )
        return "\n".join([greeting, "", thanks, "", body, "", *closing])

    seen = seen_message(ticket, entry)
    english = english_meaning(entry, seen) if seen else None
    numbered = [f"{n}. {step}" for n, step in enumerate(fix_steps(entry), 1)]
    if style == "shorter":
        # At most half the default reply: the cause and the first steps, no contacts
        # (the merchant replies to the e-mail anyway).
        limit = len(compose_reply(ticket, entry, contacts, "default")) // 2
        lead = f"“{seen}” means: " if seen else ""
        lead += entry.cause or entry.text or ""
        for keep in range(len(numbered), -1, -1):
            fix = ["", "To fix it:", *numbered[:keep]] if keep else []
            reply = "\n".join([greeting, "", lead, *fix, "", *closing])
            if len(reply) <= limit:
                return reply
            if keep == 0:
                lead = lead.split(". ")[0].rstrip(".") + "."
                reply = "\n".join([greeting, "", lead, "", *closing])
                return reply

    lines = [greeting, "", thanks]
    if seen:
        lines += ["", "You wrote that you see this message:", f"> {seen}"]
        if english:
            lines += ["", f"In English it reads “{english}”."]
    if entry.cause:
        intro = "This happens because" if seen else "The cause:"
        lines += ["", f"{intro} {_lower_first(entry.cause)}"]
    elif entry.kind in ("faq", "guide") and entry.text:
        lines += ["", entry.text]
    fix = fix_lines(entry)
    if fix:
        lines += ["", "To fix it:", *fix]
    lines += [
        "",
        "If this does not solve it, just reply to this message or contact us:",
        contacts,
        "",
        *closing,
    ]
    return "\n".join(lines)


def _lower_first(sentence: str) -> str:
    first = sentence.split(" ", 1)[0]
    # "The order date …" → "the order date …"; keep "Fortnox …", "VAT …" as written.
    if first in _ORDINARY_FIRST_WORDS:
        return sentence[0].lower() + sentence[1:]
    return sentence
