"""The three outcomes as the user sees them: text, JSON, chat rendering (no model needed)."""

from __future__ import annotations

import pytest

from bot import chat_render as render
from bot.answer import abstain_text, asked_topic
from bot.answer_types import Answer, Citation, Draft
from bot.config import AnswerSettings
from ingest.entries import Entry

PRICING = Entry(
    id="faq:pricing",
    kind="faq",
    title="How does Junipeer pricing work?",
    source="faq.txt",
    line=120,
    text="Junipeer pricing is based on the connector pair.",
)
BILLING = Entry(
    id="faq:billing",
    kind="faq",
    title="How does billing work with multiple stores?",
    source="faq.txt",
    line=126,
    text="Each connector pair is billed separately.",
)
CONTACT = Entry(
    id="faq:contact",
    kind="faq",
    title="How do I contact Junipeer support?",
    source="faq.txt",
    line=4,
    text="Email: support@junipeer.io",
)


@pytest.mark.parametrize(
    ("question", "topic"),
    [
        ("How do I cancel my Junipeer subscription?", "cancelling your Junipeer subscription"),
        ("Can I switch the Junipeer app to German?", "switching the Junipeer app to German"),
        ("hi! how can we make a pivot table?", "making a pivot table"),
        ("What are the Salesforce API limits?", "the Salesforce API limits"),
        ("Do you offer a free trial?", "a free trial"),
        ("Is there a discount for non-profits?", "a discount for non-profits"),
        ("asdfgh qwerty", ""),
        ("🔥🔥", ""),
        ("", ""),
        ("How do I <script>alert(1)</script>?", ""),
    ],
)
def test_asked_topic_names_what_was_asked(question, topic):
    assert asked_topic(question) == topic


def test_suggest_text_names_the_gap_the_closest_entries_and_a_human():
    text = abstain_text(
        [CONTACT],
        AnswerSettings(),
        "How do I cancel my Junipeer subscription?",
        ("subscription",),
        [PRICING, BILLING],
    )
    assert text.startswith(
        "I have no information on cancelling your Junipeer subscription in the Junipeer "
        "knowledge base, so I won't guess. It never mentions “subscription”."
    )
    assert "- [FAQ: How does Junipeer pricing work?]" in text
    assert "- [FAQ: How does billing work with multiple stores?]" in text
    assert "support@junipeer.io" in text
    plain = abstain_text([CONTACT], AnswerSettings(), "asdfgh qwerty")
    assert plain.startswith("I could not find this in the Junipeer knowledge base")
    assert "closest entries" not in plain
    # Outcome none repeats nothing of the question (markup, injected instructions).
    hostile = abstain_text(
        [CONTACT], AnswerSettings(), "How do I become a pirate?", ("pirate", "onerror")
    )
    assert "pirate" not in hostile
    # A suggestion names only real words the knowledge base lacks.
    near = abstain_text(
        [CONTACT], AnswerSettings(), "Do you offer SSO?", ("onerror", "subscription"), [PRICING]
    )
    assert "“subscription”" in near
    assert "onerror" not in near


def test_suggest_text_names_the_word_as_the_question_writes_it():
    # "profits" is the word the knowledge base lacks; the merchant wrote "non-profits".
    text = abstain_text(
        [CONTACT], AnswerSettings(), "Is there a discount for non-profits?", ("profits",), [PRICING]
    )
    assert text.startswith(
        "I have no information on a discount for non-profits in the Junipeer knowledge base, "
        "so I won't guess. It never mentions “non-profits”."
    )


def test_outcome_follows_abstention_and_suggestions_in_json():
    related = (Citation(PRICING, 0.61), Citation(BILLING, 0.6))
    suggest = Answer("q", "text", (), True, (), related)
    assert suggest.outcome == "suggest"
    data = suggest.to_json()
    assert (data["outcome"], data["abstained"], data["citations"]) == ("suggest", True, [])
    assert [r["source"] for r in data["related"]] == ["faq.txt:120", "faq.txt:126"]
    assert set(data["related"][0]) == set(Citation(PRICING, 1.0).to_json())
    assert Answer("q", "text", (), True).outcome == "none"
    assert Answer("q", "text", (Citation(PRICING, 1.0),)).outcome == "answer"


def test_chat_shows_suggestions_the_merchant_can_open():
    text = abstain_text([CONTACT], AnswerSettings(), "Do you offer a free trial?", (), [PRICING])
    answer = Answer("Do you offer a free trial?", text, (), True, (), (Citation(PRICING, 0.6),))
    rendered = render.render_answer(answer)
    assert [e.entry_id for e in rendered.elements] == ["faq:pricing"]
    # The suggestion in the text is the element's name, which Chainlit turns into a link.
    assert rendered.elements[0].name in rendered.content
    assert "[FAQ: How does Junipeer pricing work?]" not in rendered.content
    assert rendered.metadata["outcome"] == "suggest"
    assert rendered.metadata["abstained"] is True
    assert rendered.metadata["related"][0]["id"] == "faq:pricing"


def test_agent_draft_lists_the_closest_entries_to_check():
    draft = Draft("ticket", "Hi,\n\nWe will look into it.", (), True, (), (Citation(PRICING, 0.6),))
    rendered = render.render_draft(draft)
    assert "Closest entries, to check before replying or escalating" in rendered.content
    assert [e.entry_id for e in rendered.elements] == ["faq:pricing"]
    assert rendered.metadata["outcome"] == "suggest"
    assert draft.to_json()["related"][0]["title"] == PRICING.title
