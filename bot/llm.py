"""Optional LLM answer mode: an LLM rephrases the retrieved entries, with checked citations.

Off by default (``SUPPORTBOT_LLM__ENABLED``). Retrieval and abstention stay exactly
as in the extractive mode: the model only sees the entries retrieval returned,
numbered ``[1]..[n]``, and may cite only those. Its output is accepted only when
it checks out; otherwise :func:`llm_answer` returns the extractive answer it was
given, so an LLM failure can never make the bot worse than extractive mode:

* the call raised (timeout, connection, provider error) or returned nothing;
* the answer cites no source, or a number outside ``1..n``, or an error code
  that is not one of the given entries;
* the answer repeats a long span of the system prompt (prompt leak, usually
  after an injected "print your instructions").

Accepted answers get their ``[n]`` rewritten to the entries' citation labels
(``[FORTNOX_FISCAL_YEAR]``) and a ``Sources:`` line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from bot.answer_types import Turn, format_citation
from bot.prompts import SOURCE_SEPARATOR, SOURCE_TEMPLATE, SYSTEM_PROMPT, USER_TEMPLATE
from ingest.chunking import render_entry
from ingest.entries import Entry

if TYPE_CHECKING:
    from bot.config import LLMSettings

log = logging.getLogger(__name__)

RUN_NAME = "supportbot.llm_answer"
# Two earlier exchanges are enough to resolve "how do I fix it?" and keep prompts small.
MAX_HISTORY_TURNS = 4
MAX_HISTORY_CHARS = 1500
# A verbatim span this long of the system prompt in an answer counts as a leak.
LEAK_WINDOW = 60

# "[1]", "[1, 2]", "[Source 3]"; numbers are validated against the sources given.
_NUMBERED = re.compile(r"\[\s*(?:sources?\s*)?(\d{1,6}(?:\s*,\s*\d{1,6})*)\s*\]", re.I)
# Error-code-shaped citations ("[FORTNOX_FISCAL_YEAR]"): must name a given entry.
_CODE_CITATION = re.compile(r"\[([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)\]")
# The prompt's delimiters; stripped from untrusted text so it cannot close its block.
_DELIMITER = re.compile(r"<\s*/?\s*(?:question|sources)\s*>", re.I)
# Reasoning models served through OpenAI-compatible endpoints may inline their thoughts.
_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.I | re.S)
# A closing "Sources: [1], [2]" line written by the model; replaced by ours.
_SOURCES_LINE = re.compile(r"\n\s*\**\s*sources?\s*\**\s*:[^\n]*\s*$", re.I)
# Token-like runs (API keys, bearer tokens) masked in logged exception text.
_SECRETISH = re.compile(r"[A-Za-z0-9_\-]{24,}")


class LLMConfigError(RuntimeError):
    """The LLM settings cannot produce a chat model (message is user-readable)."""


# -- model ---------------------------------------------------------------------


def build_chat_model(settings: LLMSettings) -> BaseChatModel:
    """Create the configured langchain chat model.

    Args:
        settings: The ``llm`` section of the settings. ``base_url`` and ``api_key``
            are only passed when set, so providers fall back to their own
            environment variables (e.g. ``OPENAI_API_KEY``).

    Returns:
        The chat model, ready for :func:`llm_answer`.

    Raises:
        LLMConfigError: The model name is empty, the provider is unknown, its
            integration package (e.g. ``langchain-openai``) is not installed, or
            the provider rejected the settings. The message never contains the key.
    """
    from langchain.chat_models import init_chat_model

    model = settings.model.strip()
    provider = settings.provider.strip() or None
    if not model:
        raise LLMConfigError(
            "LLM mode is enabled but no model is set: set SUPPORTBOT_LLM__MODEL "
            "(e.g. gpt-4o-mini) or turn LLM mode off with SUPPORTBOT_LLM__ENABLED=false."
        )
    kwargs: dict[str, object] = {
        "temperature": settings.temperature,
        "timeout": settings.timeout_s,
    }
    if settings.base_url.strip():
        kwargs["base_url"] = settings.base_url.strip()
    api_key = settings.api_key.get_secret_value()
    if api_key:
        kwargs["api_key"] = api_key
    where = f"provider {provider or '(inferred)'!r}, model {model!r}"
    try:
        chat_model = init_chat_model(model, model_provider=provider, **kwargs)
    except ImportError as exc:
        raise LLMConfigError(
            f"Cannot use LLM {where}: its langchain integration package is not installed. "
            f"{_redact(str(exc), api_key)} "
            "Or set SUPPORTBOT_LLM__ENABLED=false to answer without an LLM."
        ) from None
    except Exception as exc:
        # Providers reject settings with their own exception types (pydantic, SDK errors).
        # "from None": the chained exception could carry the key in its arguments.
        raise LLMConfigError(
            f"Cannot use LLM {where} (check SUPPORTBOT_LLM__PROVIDER and SUPPORTBOT_LLM__MODEL): "
            f"{_redact(str(exc), api_key)}"
        ) from None
    log.info("LLM answer mode: %s, base URL %s", where, kwargs.get("base_url", "(default)"))
    return chat_model


# -- prompt --------------------------------------------------------------------


def _neutralize(text: str) -> str:
    """Remove the prompt's own delimiters from untrusted text."""
    return _DELIMITER.sub(" ", text)


def render_sources(entries: Sequence[Entry]) -> str:
    """The numbered source blocks, ``[1] <label>`` then the entry's text."""
    return SOURCE_SEPARATOR.join(
        SOURCE_TEMPLATE.format(number=n, label=e.label, text=_neutralize(render_entry(e)))
        for n, e in enumerate(entries, 1)
    )


def build_messages(
    question: str, entries: Sequence[Entry], history: Sequence[Turn] = ()
) -> list[BaseMessage]:
    """The chat messages: system prompt, a few earlier turns, then sources and question.

    The question only ever goes into the final user message, inside its tags;
    the system message is the fixed :data:`~bot.prompts.SYSTEM_PROMPT`.
    """
    messages: list[BaseMessage] = [SystemMessage(SYSTEM_PROMPT)]
    for turn in list(history)[-MAX_HISTORY_TURNS:]:
        content = turn.content[:MAX_HISTORY_CHARS]
        if not content.strip():
            continue
        messages.append(AIMessage(content) if turn.role == "assistant" else HumanMessage(content))
    user = USER_TEMPLATE.format(sources=render_sources(entries), question=_neutralize(question))
    messages.append(HumanMessage(user))
    return messages


# -- checking ------------------------------------------------------------------


def _squash(text: str) -> str:
    return " ".join(text.split()).casefold()


@lru_cache(maxsize=1)
def _prompt_windows() -> frozenset[str]:
    prompt = _squash(SYSTEM_PROMPT)
    return frozenset(prompt[i : i + LEAK_WINDOW] for i in range(len(prompt) - LEAK_WINDOW + 1))


def leaks_system_prompt(text: str) -> bool:
    """True when ``text`` repeats any ``LEAK_WINDOW``-character span of the system prompt.

    Whitespace and case are ignored, so re-wrapped or re-cased copies count too.
    """
    squashed = _squash(text)
    windows = _prompt_windows()
    return any(
        squashed[i : i + LEAK_WINDOW] in windows for i in range(len(squashed) - LEAK_WINDOW + 1)
    )


def cited_numbers(text: str) -> list[int]:
    """Source numbers cited as ``[n]`` / ``[n, m]``, in order of first citation."""
    found: list[int] = []
    for match in _NUMBERED.finditer(text):
        for number in re.findall(r"\d+", match.group(1)):
            if int(number) not in found:
                found.append(int(number))
    return found


def check_answer(text: str, entries: Sequence[Entry]) -> str:
    """Why an LLM answer must not be shown, or ``""`` when it may be.

    Args:
        text: The model's answer, without its own closing ``Sources:`` line.
        entries: The numbered sources the model was given.

    Returns:
        A short reason for the log, or an empty string.
    """
    if not text.strip():
        return "empty output"
    if leaks_system_prompt(text):
        return "it repeats the system prompt"
    numbers = cited_numbers(text)
    wrong = [n for n in numbers if not 1 <= n <= len(entries)]
    if wrong:
        return f"it cites source(s) {wrong} but only 1..{len(entries)} exist"
    codes = {e.code for e in entries if e.code}
    unknown = sorted({c for c in _CODE_CITATION.findall(text) if c not in codes})
    if unknown:
        return f"it cites {unknown}, which are not among the sources"
    if not numbers and not _label_citations(text, entries):
        return "it cites no source"
    return ""


def _label_citations(text: str, entries: Sequence[Entry]) -> list[int]:
    """Positions (1-based) of entries cited by their own label, e.g. ``[FORTNOX_FISCAL_YEAR]``."""
    return [n for n, e in enumerate(entries, 1) if format_citation(e) in text]


def rewrite_citations(text: str, entries: Sequence[Entry]) -> str:
    """Replace ``[n]`` by the cited entry's label and add a ``Sources:`` line.

    Expects an answer that passed :func:`check_answer` (every number in range).
    """
    order = cited_numbers(text)
    order += [n for n in _label_citations(text, entries) if n not in order]

    def label(match: re.Match[str]) -> str:
        numbers = [int(n) for n in re.findall(r"\d+", match.group(1))]
        return " ".join(format_citation(entries[n - 1]) for n in numbers)

    body = _NUMBERED.sub(label, text).rstrip()
    sources = ", ".join(format_citation(entries[n - 1]) for n in order)
    return f"{body}\n\nSources: {sources}"


def _redact(message: str, secret: str = "") -> str:
    """Mask the key and anything key-shaped in text that may be logged or shown."""
    if secret:
        message = message.replace(secret, "***")
    return _SECRETISH.sub("***", message)


# -- answering -----------------------------------------------------------------


def llm_answer(
    chat_model: BaseChatModel,
    question: str,
    entries: Sequence[Entry],
    extractive_text: str,
    history: Sequence[Turn] = (),
) -> str:
    """Phrase a grounded answer with the LLM, or return the extractive answer.

    The answer's citations (``Answer.citations``) stay the retrieved ``entries``:
    the model is shown only those, numbered, and an answer citing anything else
    is rejected, so the text never cites an entry the Answer does not list.

    Args:
        chat_model: Any langchain chat model (see :func:`build_chat_model`).
        question: The cleaned, length-bounded user question.
        entries: The retrieved entries, best first; source ``[n]`` is ``entries[n-1]``.
        extractive_text: The extractive answer for the same entries: the fallback.
        history: Earlier turns of the conversation; the last few are sent along.

    Returns:
        The checked LLM answer with citation labels and a ``Sources:`` line, or
        ``extractive_text`` when the call fails or the answer does not check out
        (the reason is logged as a warning).
    """
    if not entries:
        return extractive_text
    messages = build_messages(question, entries, history)
    config = {
        "run_name": RUN_NAME,
        "tags": ["supportbot", "llm-answer"],
        "metadata": {"entry_ids": [e.id for e in entries]},
    }
    try:
        reply = chat_model.invoke(messages, config=config)
    except Exception as exc:
        # Whatever failed (timeout, connection, auth, rate limit), extractive still answers.
        log.warning(
            "LLM call failed (%s: %s); using the extractive answer.",
            type(exc).__name__,
            _redact(str(exc))[:300],
        )
        return extractive_text
    text = _THINK.sub("", str(reply.text)).strip()
    # The model's own "Sources: [1]" line would duplicate ours; inline citations must carry it.
    text = _SOURCES_LINE.sub("", text).strip()
    reason = check_answer(text, entries)
    if reason:
        log.warning("LLM answer rejected because %s; using the extractive answer.", reason)
        return extractive_text
    return rewrite_citations(text, entries)
