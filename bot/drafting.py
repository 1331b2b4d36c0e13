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
from dataclasses import dataclass

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


# Text the merchant put in quotes: the message they saw, in their words. Straight single
# quotes count only around whole words, so "don't … it's" is no quote.
_QUOTED = re.compile(
    r'"([^"\n]{3,160})"|“([^”\n]{3,160})”|„([^“”\n]{3,160})[“”]|«([^»\n]{3,160})»'
    r"|(?<!\w)'([^'\n]{3,160})'(?!\w)"
)
_WORD = re.compile(r"[^\W\d_]{3,}")
# Words too common to tell two error messages apart.
_COMMON_WORDS = frozenset(
    "the and for not was were can cannot could could not with this that from has have are"
    " please error message".split()
)


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.casefold()) if w not in _COMMON_WORDS}


def _messages(entry: Entry) -> list[tuple[str, str | None]]:
    """(message, its English or None) of the entry and of each of its sub-errors."""
    out: list[tuple[str, str | None]] = []
    if entry.message:
        out.append((entry.message, entry.message_gloss))
    out += [(p.message, p.gloss) for p in entry.parts if p.message]
    return out


def _quoted_message(ticket: str, entry: Entry) -> tuple[str, str | None] | None:
    """A quote of the ticket that says what one of the entry's messages says, with its English.

    A merchant quotes the message in their own language or words ("Räkenskapsår saknas"
    for "Fiscal year not available"). Only a quote whose words (read through the Nordic
    glossary) carry at least half of a message's words is taken, so other quoted text,
    such as instructions, is never repeated to the merchant.
    """
    from bot.glossary import translate_query

    for match in _QUOTED.finditer(ticket):
        quote = _WS.sub(" ", next(g for g in match.groups() if g)).strip(" .,:;")
        if not quote:
            continue
        translated = translate_query(quote)
        words = _content_words(translated) | _content_words(quote)
        for message, gloss in _messages(entry):
            english = gloss or message
            wanted = _content_words(english)
            if wanted and len(wanted & words) * 2 >= len(wanted):
                # The English is worth adding only when the quote is not English itself.
                return quote, english if translated != quote else None
    return None


def seen_message(ticket: str, entry: Entry | None) -> str | None:
    """The error message the merchant quotes, if the ticket has it.

    The knowledge base's own wording when the ticket contains it; else the merchant's
    quote of it in their language (see :func:`_quoted_message`). Other quoted text in a
    ticket may be anything, including instructions the reply must not repeat.
    """
    seen = _seen(ticket, entry)
    return seen[0] if seen else None


def _seen(ticket: str, entry: Entry | None) -> tuple[str, str | None] | None:
    """The message the merchant saw and its English (None when it is English already)."""
    if entry is None:
        return None
    for message, gloss in _messages(entry):
        if _norm(message) in _norm(ticket):
            return message, gloss
    for _message, gloss in _messages(entry):
        if gloss and _norm(gloss) in _norm(ticket):
            return gloss, None
    return _quoted_message(ticket, entry)


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


# A draft's style: "default", or the refinements it has, in this order, joined by "+".
REFINEMENTS = ("shorter", "formal")
STYLES = ("default", "shorter", "formal", "shorter+formal")


def style_name(shorter: bool, formal: bool) -> str:
    """The style with these refinements ("shorter+formal"), "default" with none."""
    names = [n for n, on in zip(REFINEMENTS, (shorter, formal), strict=True) if on]
    return "+".join(names) or "default"


def style_flags(style: str) -> tuple[bool, bool]:
    """(shorter, formal) of a style; an unknown style is the default."""
    parts = set(style.split("+")) if style in STYLES else set()
    return "shorter" in parts, "formal" in parts


def combine_styles(current: str, requested: str) -> str:
    """A refinement applied to a draft that has others: "formal" + "shorter" keeps both."""
    shorter, formal = style_flags(current)
    more_shorter, more_formal = style_flags(requested)
    return style_name(shorter or more_shorter, formal or more_formal)


# Words of a ticket about data that did not sync (after the Nordic glossary's translation):
# only then does a reply ask for the task ID from the Tasks or Logs page.
_SYNC_PROBLEM = re.compile(
    r"\b(?:sync\w*|synchroni\w*|fail\w*|error\w*|stuck|tasks?|logs?|integration\w*"
    r"|not (?:been )?(?:transferred|created|booked|showing|appearing|arriving|coming)"
    r"|missing (?:in|from)|(?:do|did|does)(?:n't| not) (?:show|appear|arrive|come)"
    r"|\d{5,})\b",
    re.I,
)


def is_sync_problem(ticket: str) -> bool:
    """True when a ticket is about data that failed or did not sync (orders, tasks, errors)."""
    from bot.glossary import translate_query

    return bool(_SYNC_PROBLEM.search(translate_query(ticket)))


def contact_lines(contacts: str) -> str:
    """The address and phone lines of the support contacts, without their advice.

    The FAQ tells merchants what to include "when contacting support"; a reply sent by
    support must not tell the merchant how to contact support about a sync issue.
    """
    lines = [line for line in contacts.splitlines() if line.lstrip().startswith(("-", "*", "•"))]
    return "\n".join(lines) or contacts.strip()


# What a reply says, in the default and the formal register.
_WORDING = {
    False: {
        "thanks": "Thanks for reaching out to Junipeer support.",
        "closing": "Best regards,",
        "seen": "You wrote that you see this message:",
        "fix": "To fix it:",
        "more": "If this does not solve it, just reply to this message or contact us:",
        "no_match": (
            "We could not match your question to a known issue in our knowledge base, so a "
            "support specialist will look into it and get back to you."
        ),
        "task_id": (
            "To help us investigate quickly, please reply with the task ID or reference number "
            "from the Tasks or Logs page."
        ),
    },
    True: {
        "thanks": "Thank you for contacting Junipeer support.",
        "closing": "Kind regards,",
        "seen": "You wrote that you see the following message:",
        "fix": "To resolve it:",
        "more": "Should this not resolve the issue, please reply to this message or contact us:",
        "no_match": (
            "We were unable to match your enquiry to a known issue in our knowledge base. A "
            "support specialist will therefore look into it and contact you."
        ),
        "task_id": (
            "To assist our investigation, please reply with the task ID or reference number "
            "from the Tasks or Logs page."
        ),
    },
}


def compose_reply(
    ticket: str,
    entry: Entry | None,
    contacts: str,
    style: str = "default",
) -> str:
    """The reply text for a ticket, in one of :data:`STYLES`.

    Args:
        ticket: The merchant's message.
        entry: The knowledge-base entry the reply is built from; None when none matched.
            Its solution (or its sub-errors' solutions) gives what to do, in its order.
        contacts: Support contact lines, for the closing (advice for merchants contacting
            support is dropped).
        style: ``default``, ``shorter``, ``formal`` or both refinements
            (``shorter+formal``). A shorter reply is at most half as long as the reply
            without "shorter" in the same register.
    """
    shorter, formal = style_flags(style)
    words = _WORDING[formal]
    name = signature_name(ticket)
    if name:
        greeting = f"{'Dear' if formal else 'Hi'} {name},"
    else:
        greeting = "Dear customer," if formal else "Hi,"
    closing = [words["closing"], "Junipeer Support"]
    if entry is None:
        body = [words["no_match"]]
        # Only a sync problem has a task ID; a question about prices or a charity discount
        # must not be asked for one.
        if is_sync_problem(ticket):
            body.append(words["task_id"])
        if shorter:
            return "\n".join([greeting, "", " ".join(body), "", *closing])
        return "\n".join([greeting, "", words["thanks"], "", " ".join(body), "", *closing])

    seen = _seen(ticket, entry)
    numbered = [f"{n}. {step}" for n, step in enumerate(fix_steps(entry), 1)]
    if shorter:
        # At most half the full reply: the cause and the first steps, no contacts
        # (the merchant replies to the e-mail anyway).
        full = compose_reply(ticket, entry, contacts, style_name(False, formal))
        limit = len(full) // 2
        lead = f"“{seen[0]}” means: " if seen else ""
        cause = entry.cause or entry.text or ""
        lead += _lower_first(cause) if seen else cause
        for keep in range(len(numbered), -1, -1):
            fix = ["", words["fix"], *numbered[:keep]] if keep else []
            reply = "\n".join([greeting, "", lead, *fix, "", *closing])
            if len(reply) <= limit:
                return reply
            if keep == 0:
                lead = lead.split(". ")[0].rstrip(".") + "."
                return "\n".join([greeting, "", lead, "", *closing])

    lines = [greeting, "", words["thanks"]]
    if seen:
        message, english = seen
        lines += ["", words["seen"], f"> {message}"]
        if english:
            lines += ["", f"In English it reads “{english}”."]
    if entry.cause:
        intro = "This happens because" if seen else "The cause:"
        lines += ["", f"{intro} {_lower_first(entry.cause)}"]
    elif entry.kind in ("faq", "guide") and entry.text:
        lines += ["", entry.text]
    fix = fix_lines(entry)
    if fix:
        lines += ["", words["fix"], *fix]
    lines += ["", words["more"], contact_lines(contacts), "", *closing]
    return "\n".join(lines)


def _lower_first(sentence: str) -> str:
    first = sentence.split(" ", 1)[0]
    # "The order date …" → "the order date …"; keep "Fortnox …", "VAT …" as written.
    if first in _ORDINARY_FIRST_WORDS:
        return sentence[0].lower() + sentence[1:]
    return sentence


# -- typed refinements ("make it shorter", "write it in Swedish") ------------------------

# A refinement is a short request; a ticket that happens to say "shorter" is longer.
MAX_REFINEMENT_CHARS = 100

_TO_SHORTER = re.compile(
    r"\b(shorter|shorten|more concise|concise|too long|briefer|brief|less wordy|kortare)\b", re.I
)
_TO_LONGER = re.compile(r"\b(longer|too short|more detail(?:ed|s)?|in full|full length)\b", re.I)
_TO_FORMAL = re.compile(
    r"\b(?<!less )(?<!not so )(more formal|formal|more polite|politer|more professional|"
    r"formellare)\b",
    re.I,
)
_TO_INFORMAL = re.compile(
    r"\b(less formal|not so formal|informal|more casual|casual|friendlier|more friendly)\b", re.I
)
_TO_DEFAULT = re.compile(r"\b(normal|as before|original|start over|undo|reset)\b", re.I)
_LANGUAGES = (
    r"swedish|svenska|norwegian|norsk|danish|dansk|finnish|suomi|german|deutsch|french|"
    r"spanish|dutch|english|engelska"
)
_LANGUAGE = re.compile(rf"\b({_LANGUAGES})\b", re.I)
_TRANSLATE = re.compile(rf"\b(translat\w*|(?:in|into|to|på) ({_LANGUAGES}))\b", re.I)
# A request addressed to the draft: an editing verb ("make it", "remove the phone number",
# "write it in …") whose object, right after it, is the draft or a part of it. A merchant's
# ticket ("Can you add a VAT rate for Norway?", "make it work again") names no part of a
# reply there.
_EDIT_VERB = (
    r"(?:make|write|rewrite|re-write|redo|reword|rephrase|remove|delete|drop|add|include|"
    r"translate|change|replace|put|mention|insert|leave out|take out|cut|omit|skip|sign|"
    r"keep|start|end|shorten|format|tweak|lose|swap)"
)
_DRAFT_PART = (
    r"(?:(?:it|this|that|them)(?! (?:work|works|stop|sync|go|run|fail)\b)|"
    r"(?:(?:the|a|an|this|that|your|its|our)\s+)?(?:[\w-]+\s+)?"
    r"(?:draft|reply|answer|response|text|e-?mail|mail|message|greeting|closing|signature|"
    r"sign-?off|phone(?: number)?|number|contacts?|contact (?:details|info|information|block|"
    r"lines?)|address|steps?|cause|name|paragraphs?|sentences?|lines?|intro(?:duction)?|tone|"
    r"wording|part|bit|link|thanks|ending|opening|bullets?|list|quote))"
)
_ADDRESSED_TO_DRAFT = re.compile(
    r"^\W*(?:(?:ok|okay|now|and|also|then|thanks|great|hm+)\W+)*"
    r"(?:(?:please|pls|can you|could you|would you|will you|can we|could we|let'?s|"
    r"i'?d like you to|i want you to|try to)\W+)*"
    rf"{_EDIT_VERB}\s+{_DRAFT_PART}\b",
    re.I,
)
# Edits of the text itself (not of its length or register), anywhere in the request.
_TEXT_EDIT = re.compile(
    r"\b(?:remove|delete|drop|add|include|insert|mention|replace|swap|leave out|take out|omit|"
    rf"skip|lose|change|put|sign|keep|start|end)\s+{_DRAFT_PART}\b",
    re.I,
)

# What the agent is told when a typed refinement cannot be done.
CANNOT_TRANSLATE = (
    "I can only write drafts in English, the language of the knowledge base: translate the "
    "draft yourself before sending, or send it in English."
)
CANNOT_EDIT = (
    "I cannot edit the draft's text itself: copy it and make that change before sending. "
    "I can make it shorter (the shorter draft has no contact details), more formal, less "
    "formal, or go back to the original."
)
ALREADY_ENGLISH = "The draft is already in English."


# A request for a style that is not addressed to the draft ("shorter", "a bit more formal
# please", "back to the original") is made of style words and these only; a ticket that
# uses a style word ("Sync takes longer than before") names other things.
_BARE_REQUEST_WORDS = frozenset(
    (
        "shorter shorten more concise too long briefer brief less wordy kortare longer short "
        "detail detailed details in full length formal polite politer professional "
        "formellare informal casual friendlier friendly normal as before original start over "
        "undo reset please pls a bit little slightly much way lot and but the to back go it "
        "make be can you could now again version thanks thank tack ok okay one not so tone "
        "just even also somewhat rather"
    ).split()
)


def _bare_style_request(request: str) -> bool:
    return set(re.findall(r"[\w']+", request.casefold())) <= _BARE_REQUEST_WORDS


@dataclass(frozen=True)
class Refinement:
    """What a typed request does to the last draft.

    Attributes:
        style: The style to redo the draft in (the refinements compose: "shorter" after
            "more formal" stays formal); None when nothing can be redone.
        note: What to tell the agent (a change that cannot be made), or "".
    """

    style: str | None
    note: str = ""


def typed_refinement(text: str, current: str = "default") -> Refinement | None:
    """What a typed message asks of the last draft, or None when it is not about the draft.

    Style requests ("make it shorter and more formal", "less formal", "back to the
    original") compose with the draft's ``current`` style. Other requests addressed to the
    draft ("write it in Swedish", "remove the phone number") are refinements too, never
    new tickets: the note says what cannot be done.
    """
    request = _WS.sub(" ", text).strip()
    if not request or len(request) > MAX_REFINEMENT_CHARS:
        return None
    shorter, formal = style_flags(current)
    changed = False
    if _TO_DEFAULT.search(request):
        shorter, formal, changed = False, False, True
    if _TO_LONGER.search(request):
        shorter, changed = False, True
    if _TO_SHORTER.search(request):
        shorter, changed = True, True
    if _TO_INFORMAL.search(request):
        formal, changed = False, True
    elif _TO_FORMAL.search(request):
        formal, changed = True, True
    language = _LANGUAGE.search(request)
    addressed = bool(_ADDRESSED_TO_DRAFT.search(request))
    translate = bool(_TRANSLATE.search(request)) and (addressed or len(request.split()) <= 6)
    if not (changed or addressed or translate):
        return None
    if changed and not (addressed or translate) and not _bare_style_request(request):
        # "Our invoices got shorter descriptions after the update", "How do I reset my
        # password?", "Can I undo a sync?": tickets that use a style word, not requests.
        return None
    style = style_name(shorter, formal) if changed else None
    note = ""
    if translate or (addressed and language):
        english = language is not None and language.group(1).casefold() in {"english", "engelska"}
        note = ALREADY_ENGLISH if english else CANNOT_TRANSLATE
    elif (addressed and not changed) or _TEXT_EDIT.search(request):
        note = CANNOT_EDIT
    return Refinement(style, note)
