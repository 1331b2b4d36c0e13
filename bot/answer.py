"""Turn retrieved entries into grounded answers with citations.

The default mode is extractive: every sentence of an answer is taken from a
cited entry (or is fixed connective text such as headings), so the bot cannot
say anything the knowledge base does not. The optional LLM mode (``bot/llm.py``)
only rephrases and falls back to this mode when its citations do not check out.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bot.answer_types import Answer, Citation, Draft, Filters, Turn, format_citation
from bot.config import AnswerSettings, Settings
from bot.drafting import compose_reply, solution_lines
from bot.retrieval import HybridRetriever, Retrieval
from bot.safe_text import utf8_safe
from ingest.chunking import heading_text, token_counter, truncate_tokens
from ingest.entries import Entry
from ingest.keyword import is_english_word, tokenize

if TYPE_CHECKING:  # the LLM mode is optional; its classes are slow to import
    from langchain_core.language_models import BaseChatModel

log = logging.getLogger(__name__)

_ANAPHORA = frozenset("it this that these those they them its same".split())
_SPACE_RUN = re.compile(r"\s{3,}")
# Invisible format characters (zero-width, direction marks, BOM) count as noise too: a
# message of nothing else gets the "please type a question" prompt.
_CONTROL = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff"
    r"\ud800-\udfff\ufffd]"
)
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
_FOLLOW_UP_START = re.compile(r"^\s*(and|but|so|what about|how about|what if|also|same)\b", re.I)
# "how often should the schedule run then?": "then" closing a question continues a turn.
_THEN_END = re.compile(r"(?<!since )(?<!until )(?<!by )\bthen\s*[?!.]*\s*$", re.I)
# Short reports and requests that only make sense about the last answer: "still failing",
# "didn't help", "can you make it shorter?" ("make it" is otherwise an idiom, see _MAKE).
_ABOUT_LAST_ANSWER = re.compile(
    r"^\W*(?:(?:it|that|this|sync|the sync)(?:'s| is)?\s+)?(?:still\b|(?:didn'?t|did not|"
    r"doesn'?t|does not) (?:help|work)\b|no luck\b)"
    r"|^\W*(?:(?:can|could) you\s+)?(?:please\s+)?make (?:it|that|this) (?:shorter|brief)",
    re.I,
)
_DEMONSTRATIVES = frozenset("this that these those".split())
_TIME_WORDS = frozenset(
    "morning afternoon evening night week weekend month year quarter time summer winter".split()
)
_ONE_AFTER = frozenset("that this the which same other".split())
_MAKE = frozenset("make makes made making".split())
_POSSESSIVES = frozenset({"its"})
_SAME_WHAT = frozenset("thing things one issue problem error message".split())
# A pronoun after more named words than this may point inside the question itself.
_NAMED_BEFORE_PRONOUN = 2


# -- formatting (pure) ---------------------------------------------------------


def _message_line(entry: Entry) -> str | None:
    if not entry.message:
        return None
    gloss = f" ({entry.message_gloss})" if entry.message_gloss else ""
    return f'You may see the message: "{entry.message}"{gloss}'


def format_entry(entry: Entry, brief: bool = False) -> str:
    """Markdown for one entry: what it is, why it happens, what to do, and the citation.

    ``brief`` drops the "what it is" details for a second or third entry.
    """
    cite = format_citation(entry)
    if entry.kind in ("faq", "guide"):
        # Blank lines between paragraphs: markdown would otherwise glue a paragraph that
        # follows a numbered list onto the list's last item.
        body = "\n\n".join(line for line in (entry.text or "").split("\n") if line.strip())
        return f"**{entry.title}**\n\n{body}\n\nSource: {cite}"

    lines: list[str] = []
    header = f"**{entry.label}**"
    if entry.severity:
        header += f" (severity: {entry.severity})"
    lines.append(header)
    if not brief:
        if entry.systems_text:
            lines.append(f"Systems: {entry.systems_text}")
        message = _message_line(entry)
        if message:
            lines.append(message)
        if entry.text:
            lines.append(entry.text)
    for part in entry.parts:
        gloss = f" ({part.gloss})" if part.gloss else ""
        lines.append(f'\n**"{part.message}"**{gloss}')
        if part.cause:
            lines.append(f"Why it happens: {part.cause}")
        if part.solution:
            lines.append("What to do:")
            lines.extend(solution_lines(part.solution))
    if entry.cause:
        lines.append(f"\n**Why it happens:** {entry.cause}")
    if entry.solution:
        lines.append("\n**What to do:**")
        lines.extend(solution_lines(entry.solution))
    lines.append(f"\nSource: {cite}")
    return "\n".join(lines)


def format_answer(entries: Sequence[Entry], max_tokens: int, encoding: str) -> str:
    """The extractive answer for the ranked entries, bounded to ``max_tokens``."""
    if not entries:
        return ""
    parts = [format_entry(entries[0])]
    if len(entries) > 1:
        names = ", ".join(format_citation(e) for e in entries[1:])
        parts.append(f"---\nThis may also be related: {names}")
        parts.extend(format_entry(e, brief=True) for e in entries[1:])
    text = "\n\n".join(parts)
    return bound_text(text, max_tokens, encoding)


def bound_text(text: str, max_tokens: int, encoding: str) -> str:
    """Cut text to the token bound at a line boundary, saying that it was shortened."""
    count = token_counter(encoding)
    if count(text) <= max_tokens:
        return text
    kept: list[str] = []
    for line in text.split("\n"):
        if count("\n".join([*kept, line])) > max_tokens - 12:
            break
        kept.append(line)
    return "\n".join(kept) + "\n\n(Shortened; open the cited sources for the full text.)"


def support_contacts(entries: Sequence[Entry], settings: AnswerSettings) -> str:
    """Support contacts as written in the FAQ, falling back to the configured email."""
    for e in entries:
        if e.kind == "faq" and e.text and "@" in e.text and "contact" in e.title.casefold():
            return f"{e.text}\n\nSource: {format_citation(e)}"
    return f"Email: {settings.support_email}"


def abstain_text(
    entries: Sequence[Entry],
    settings: AnswerSettings,
    question: str = "",
    uncovered: Sequence[str] = (),
    related: Sequence[Entry] = (),
) -> str:
    """The honest "not in the knowledge base" answer with the route to a human.

    With ``related`` entries (outcome "suggest", a near miss) it names what was asked and
    not found and the question's English words the knowledge base never uses, and lists
    the entries to open. Without (outcome "none") it repeats nothing of the question:
    nonsense, markup and injected instructions are not echoed back.
    """
    topic = asked_topic(question) if related else ""
    uncovered = [w for w in uncovered if is_english_word(w)] if related else []
    lines = [
        f"I have no information on {topic} in the Junipeer knowledge base, so I won't guess."
        if topic
        else "I could not find this in the Junipeer knowledge base, so I won't guess."
    ]
    if uncovered:
        names = " or ".join(f"“{_as_written(w, question)}”" for w in uncovered[:3])
        lines[0] += f" It never mentions {names}."
    if related:
        lines.append("The closest entries, in case one of them helps:")
        lines.append("\n".join(f"- {format_citation(e)}" for e in related))
        lines.append("If none of them does, please contact Junipeer support:")
    else:
        lines.append("Please contact Junipeer support:")
    lines.append(support_contacts(entries, settings))
    return "\n\n".join(lines)


def _as_written(word: str, question: str) -> str:
    """The word as the question writes it, whole: "profits" in "non-profits" → "non-profits"."""
    found = re.search(
        rf"(?<![\w-])(?:[\w'’]+-)*{re.escape(word)}(?:-[\w'’]+)*(?![\w-])",
        question,
        re.IGNORECASE,
    )
    return found.group(0) if found else word


# "How do I cancel my subscription?" → an action ("cancelling your subscription");
# "what is the SLA?" → a thing ("the SLA").
_ACTION_LEAD = re.compile(
    r"^(?:(?:how|where|when)\s+(?:do|can|could|should|would|shall)\s+(?:i|we|you|one)"
    r"|(?:can|could|may|should)\s+(?:i|we)|how\s+to|is\s+it\s+possible\s+to"
    r"|(?:i|we)\s+(?:want|need|would\s+like)\s+to)\s+(?P<rest>.+)$",
    re.IGNORECASE,
)
_THING_LEAD = re.compile(
    r"^(?:what|which|who|where)\s+(?:is|are|was|were)\s+(?P<rest>.+)$"
    r"|^(?:do|does)\s+(?:you|junipeer)\s+(?:have|offer|support|provide)\s+(?P<rest2>.+)$"
    r"|^(?:is|are)\s+there\s+(?P<rest3>.+)$",
    re.IGNORECASE,
)
_GREETING = re.compile(r"^(?:hi|hello|hey|hej|thanks|ok|okay)\b[\s,!.:]*", re.IGNORECASE)
_PRONOUNS = {"my": "your", "our": "your", "i": "you", "we": "you", "me": "you", "us": "you"}
_VOWELS = "aeiou"


def _gerund(verb: str) -> str:
    """The -ing form of a regular English verb ("cancel" → "cancelling", "make" → "making")."""
    v = verb.casefold()
    if v.endswith("ie"):
        return verb[:-2] + "ying"
    if v.endswith("e") and not v.endswith(("ee", "ye", "oe")) and len(v) > 2:
        return verb[:-1] + "ing"
    short_cvc = (
        len(v) >= 3
        and v[-1] not in _VOWELS + "wxy"
        and v[-2] in _VOWELS
        and v[-3] not in _VOWELS
        and (len(v) <= 4 or v.endswith("l"))
    )
    return verb + verb[-1] + "ing" if short_cvc else verb + "ing"


def asked_topic(question: str) -> str:
    """What a question asks about, as a phrase for "I have no information on …".

    Returns "" when the question is not phrased in a way this can tell (then the
    reply does not pretend to know).
    """
    text = _GREETING.sub("", " ".join(question.split()))
    text = re.split(r"(?<=[?!.])\s", text, maxsplit=1)[0].strip().rstrip("?!. ")
    if not text or len(text) > 120:
        return ""
    action = _ACTION_LEAD.match(text)
    if action:
        verb, _, rest = action.group("rest").partition(" ")
        words = [_gerund(verb), *rest.split()]
    else:
        thing = _THING_LEAD.match(text)
        if not thing:
            return ""
        words = (thing.group("rest") or thing.group("rest2") or thing.group("rest3")).split()
    words = [_PRONOUNS.get(w.casefold(), w) for w in words]
    return " ".join(words) if words and all(_is_wordish(w) for w in words) else ""


def _is_wordish(word: str) -> bool:
    return bool(re.fullmatch(r"[\w'’&./+-]+", word))


# -- answering -----------------------------------------------------------------


def follow_up_cue(question: str) -> str | None:
    """How a question leans on an earlier turn: "plain", "pronoun" or None (it does not).

    "plain": it starts like a continuation ("and in Visma?", "so how do I correct it
    then?"), is nothing but question words ("why?") or opens on a pronoun before naming
    anything ("how do I fix it?", "I enabled it now. What about …"). "pronoun": a pronoun
    comes only after the question has named things of its own ("the order was deleted,
    can it still be synced?"), so it may point inside the question: the conversation may
    then only choose among the entries the question itself points at.
    """
    words = re.findall(r"\w+", question.casefold())
    content = tokenize(question)
    if _FOLLOW_UP_START.match(question) or _THEN_END.search(question):
        return "plain"
    if len(content) <= 4 and _ABOUT_LAST_ANSWER.search(question):
        return "plain"
    # "why?", "how come?": nothing but question words, so only the conversation can say
    # what it is about.
    if words and (not content or " ".join(words) == "how come"):
        return "plain"
    if len(content) > 8:
        return None
    named = 0  # content words before the first pronoun
    for i, word in enumerate(words):
        before = words[i - 1] if i else ""
        after = words[i + 1] if i + 1 < len(words) else ""
        if _is_anaphor(word, before, after):
            # A possessive after a name belongs to it: "We're on Xero and its OAuth …".
            limit = 0 if word in _POSSESSIVES else _NAMED_BEFORE_PRONOUN
            return "plain" if named <= limit else "pronoun"
        if tokenize(word):
            named += 1
    return None


def _is_anaphor(word: str, before: str, after: str) -> bool:
    """True when the word refers back to something said before (not "this morning")."""
    if word == "one":
        return before in _ONE_AFTER  # "that one", not "one Shopify order" or "Export One"
    if word not in _ANAPHORA:
        return False
    if word in _DEMONSTRATIVES and after in _TIME_WORDS:
        return False  # "since this morning" places the question in time
    if word == "it" and before in _MAKE:
        return False  # "did the order make it into Fortnox?": an idiom, not a reference
    if word == "that" and tokenize(before):
        # After a named thing or a verb, "that" opens a clause: "an invoice that's
        # already booked", "confirm that all orders arrived"; "set that fallback name"
        # is told apart by the conversation's entries (see retrieve_for).
        return False
    if word == "same":
        # "same thing on Business Central?", "the same for Visma?", not "the same
        # Shopify order was invoiced twice" (which names what is the same).
        return not tokenize(after) or after in _SAME_WHAT
    return True


def is_follow_up(question: str) -> bool:
    """Heuristic: short questions that lean on an earlier turn ("how do I fix it?")."""
    return follow_up_cue(question) is not None


def _previous(history: Sequence[Turn]) -> tuple[str, tuple[str, ...]]:
    """The last user question and the entry ids last cited, from the history."""
    users = [
        t.content for t in reversed(history) if t.role == "user" and not is_small_talk(t.content)
    ]
    # "why?" after "how do I fix it?": the topic is in the question both follow up on.
    last_user = next((q for q in users if not is_follow_up(q)), users[0] if users else "")
    cited = next((t.cited for t in reversed(history) if t.role == "assistant" and t.cited), ())
    return last_user, cited


def retrieve_for(
    question: str,
    retriever: HybridRetriever,
    history: Sequence[Turn] = (),
    filters: Filters | None = None,
    k: int | None = None,
) -> Retrieval:
    """Retrieve for a question, using the conversation when it is a follow-up."""
    result = retriever.retrieve(question, k=k, filters=filters)
    if not history or result.reason == "exact":
        return result
    previous, cited = _previous(history)
    if not (previous or cited):
        return result
    cue = follow_up_cue(question)
    # A question that abstains on its own may still be a follow-up ("how big a date range
    # should I start with?"), but only if it is phrased in the knowledge base's own words:
    # "what's the weather tomorrow?" after an error question must still abstain, and
    # "Is there a discount for non-profits?" names something no entry does.
    in_vocabulary = retriever.known_share(tokenize(question)) >= 0.6 and not result.uncovered
    if cue is None and not (result.abstained and in_vocabulary):
        return result
    # An identifier ("what is error 2000637") says little about its topic in words: then the
    # earlier answer's heading stands for it. Otherwise the earlier question's own words do,
    # so that a wrong earlier answer does not pull the follow-up along with it.
    context = previous
    if retriever.exact_lookup(previous):
        by_id = retriever.index.by_id
        context = " ".join([previous, *(heading_text(by_id[i]) for i in cited if i in by_id)])
    contextual = retriever.retrieve(question, k=k, filters=filters, prefer=cited, context=context)
    if cue != "plain" and not _points_at(result, contextual):
        # Not plainly a follow-up, the question stands on its own unless the conversation
        # only chooses among the entries it already points at itself: "Do you support
        # Magento?" after "Invalid grant" is not about OAuth tokens.
        return result
    if contextual.abstained and not (result.outcome == "none" and contextual.outcome == "suggest"):
        return result
    return contextual


def _points_at(alone: Retrieval, contextual: Retrieval) -> bool:
    """True when the contextual retrieval's best entry is one the question alone offers.

    Offered: the entries it would cite, or suggest, or (when nothing is related) the few
    it ranks closest.
    """
    best = (contextual.hits or contextual.related or (None,))[0]
    if best is None:
        return False
    offered = [h.entry.id for h in alone.hits or alone.related]
    return best.entry.id in (offered or alone.closest[: len(contextual.related) or 3])


def echo_text(text: str, settings: Settings) -> str:
    """The user's text as answers repeat it: valid UTF-8 and no longer than what was read."""
    return utf8_safe(text[: settings.answer.max_question_tokens * 16])


def prepare_question(question: str, settings: Settings) -> tuple[str, tuple[str, ...]]:
    """Clean and bound a user question; returns it with notices for the user."""
    # Terminal colour codes come with pasted log lines; they would hide the message.
    question = _ANSI.sub("", question)
    # Control characters, lone surrogates and U+FFFD (left by undecodable bytes) are noise
    # that breaks encoders and terminals. Regexes keep this linear on a multi-MB paste.
    question = _CONTROL.sub(" ", question)
    # Runs of blank space carry no meaning and would otherwise push the words past the cut.
    question = _SPACE_RUN.sub(" ", question).strip()
    # A token is rarely more than a few characters: cutting by characters first keeps the
    # cost of a huge paste bounded before the exact token cut below.
    limit_chars = settings.answer.max_question_tokens * 16
    cut_early = len(question) > limit_chars
    bounded, cut = truncate_tokens(
        question[:limit_chars].strip(), settings.answer.max_question_tokens, settings.index.encoding
    )
    notices: list[str] = []
    if cut or cut_early:
        notices.append(
            f"Your message was long, so only its first {settings.answer.max_question_tokens} "
            "tokens were read."
        )
    return bounded, tuple(notices)


EMPTY_QUESTION = "Please type a question, for example an error code or the error message you see."

# A message that is only a greeting, thanks or goodbye (any mix, in English, Swedish or
# Norwegian): "hello", "thanks!", "ok, thank you so much", "hej!". Anything more ("thanks!
# and what's the weather?") is a question.
_SOCIAL = (
    r"hi|hello|hey|hiya|howdy|greetings|good\s+(?:morning|afternoon|evening|day)|hej|hejsan"
    r"|hallå|hei|halla|thanks?|thx|ty|tack|takk|cheers|appreciated|ok|okay"
    r"|great|perfect|nice|cool|awesome|got\s+it|bye|goodbye|see\s+you"
)
# "thank you" is "thank" + the tail "you". Each phrase must be followed by a separator or
# the end, and each text has one reading: the pattern never backtracks exponentially (with
# "thank you" also a phrase of its own, "thank you " * 25 + "?" took minutes, blocking the
# whole server, as re holds the GIL).
_SOCIAL_TAIL = r"so\s+much|a\s+lot|very\s+much|again|there|all|you|bot|junipeer|så\s+mycket"
_SMALL_TALK = re.compile(
    rf"^(?:(?:{_SOCIAL})(?:\s+(?:{_SOCIAL_TAIL}))*(?:[\s,.!?:;)(\-–—🙂😊👍🙏]+|$))+$",
    re.IGNORECASE,
)
# Longer than any greeting or thanks: not small talk, and never given to the pattern.
_SMALL_TALK_MAX_CHARS = 80
_THANKS = re.compile(r"\b(?:thanks?|thank|thx|ty|tack|takk|cheers|appreciated|bye|goodbye)\b", re.I)
SMALL_TALK_HELP = (
    "I can explain the error codes and messages your Junipeer integrations show (paste the "
    "message or the code, also in Swedish or Norwegian) and answer questions about syncing, "
    "settings and pricing."
)


def is_small_talk(text: str) -> bool:
    """True for a message that is only a greeting, thanks or goodbye."""
    text = " ".join(text.split())
    return len(text) <= _SMALL_TALK_MAX_CHARS and bool(_SMALL_TALK.match(text))


def small_talk_reply(text: str) -> str:
    """A short reply in kind that says what the bot can help with."""
    if _THANKS.search(text):
        return f"You're welcome! {SMALL_TALK_HELP} Just ask if anything else comes up."
    return f"Hello! {SMALL_TALK_HELP} What can I help you with?"


def answer_question(
    question: str,
    retriever: HybridRetriever,
    settings: Settings,
    history: Sequence[Turn] = (),
    filters: Filters | None = None,
    k: int | None = None,
    chat_model: BaseChatModel | None = None,
) -> Answer:
    """Answer a question from the knowledge base, with citations, or abstain."""
    cleaned, notices = prepare_question(question, settings)
    question = echo_text(question, settings)
    if not cleaned:
        return Answer(question, EMPTY_QUESTION, (), True, notices)
    if is_small_talk(cleaned):
        # Nothing to look up: not an abstention to report as a gap (outcome "none").
        reply = small_talk_reply(cleaned)
        return Answer(question, reply, (), True, notices, outcome="none", small_talk=True)
    result = retrieve_for(cleaned, retriever, history, filters, k)
    entries = retriever.entries
    if result.abstained:
        log.debug("%s on %r: %s", result.outcome, cleaned[:80], result.reason)
        related = tuple(Citation(h.entry, h.score) for h in result.related)
        text = abstain_text(
            entries,
            settings.answer,
            cleaned,
            result.uncovered,
            [c.entry for c in related],
        )
        return Answer(question, text, (), True, notices, related, result.outcome)
    cited = [h.entry for h in result.hits]
    citations = tuple(Citation(h.entry, h.score) for h in result.hits)
    text = format_answer(cited, settings.answer.max_answer_tokens, settings.index.encoding)
    if chat_model is not None:
        from bot.llm import llm_answer

        text = llm_answer(chat_model, cleaned, cited, text, history)
        text = bound_text(text, settings.answer.max_answer_tokens, settings.index.encoding)
    return Answer(question, text, citations, False, notices)


# -- support-agent drafts --------------------------------------------------------


def draft_reply(
    ticket: str,
    retriever: HybridRetriever,
    settings: Settings,
    style: str = "default",
    filters: Filters | None = None,
) -> Draft:
    """A ready-to-send reply to a merchant's ticket, built only from cited entries."""
    cleaned, notices = prepare_question(ticket, settings)
    ticket = echo_text(ticket, settings)
    if not cleaned:
        return Draft(ticket, EMPTY_QUESTION, (), True, notices)
    result = retriever.retrieve(cleaned, filters=filters)
    contacts = support_contacts(retriever.entries, settings.answer).split("\n\nSource:")[0]
    if result.abstained:
        reply = compose_reply(ticket, None, contacts, style)
        # Not sent to the merchant: entries the agent may check before writing their own.
        related = tuple(Citation(h.entry, h.score) for h in result.related)
        return Draft(ticket, reply, (), True, notices, related, result.outcome)

    entry = result.hits[0].entry
    # The reply is what the merchant receives: no bracketed codes in it; the chat shows
    # the agent what to check beside it.
    reply = compose_reply(ticket, entry, contacts, style)
    reply = bound_text(reply, settings.answer.max_answer_tokens, settings.index.encoding)
    citations = tuple(Citation(h.entry, h.score) for h in result.hits)
    return Draft(ticket, reply, citations, False, notices)
