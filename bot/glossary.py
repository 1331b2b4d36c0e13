"""Swedish and Norwegian support vocabulary mapped to the English of the knowledge base.

Merchants of a Swedish accounting system often ask in Swedish or Norwegian,
while the knowledge base (and the English-only MiniLM model) speak English.
Appending the English terms to the query lets both BM25 and the dense model
see words they know; the translated form tells abstention which words are
known. This is general domain vocabulary (accounting, e-commerce and support
words), not a table of questions to answers.
"""

from __future__ import annotations

import re

from ingest.keyword import normalize_text

# Word stems (matched at the start of a word) → English terms.
GLOSSARY: dict[str, str] = {
    "räkenskapsår": "fiscal year",
    "regnskapsår": "fiscal year",
    "bokföringsår": "fiscal year",
    "faktur": "invoice",
    "kreditfaktur": "credit invoice",
    "kreditnota": "credit note",
    "bokför": "booked bookkeeping",
    "bokfør": "booked bookkeeping",
    "konto": "account",
    "kontot": "account",
    "aktiv": "active",
    "inaktiv": "inactive",
    "moms": "VAT",
    "mva": "VAT",
    "valuta": "currency",
    # Not "kund…": Swedish "kunde" means "could" ("Kunde inte hämta …").
    "kunder": "customers",
    "kunden": "customer",
    "kundnummer": "customer number",
    "leverantör": "supplier",
    "leveranssätt": "shipping method",
    "frakt": "shipping",
    "order": "order",
    "ordrar": "orders",
    "ordre": "order",
    "beställning": "order",
    "betalning": "payment",
    "betaling": "payment",
    "utbetalning": "payout",
    "utbetaling": "payout",
    "återbetalning": "refund",
    "retur": "return refund",
    "lager": "stock",
    "artikel": "article product",
    "artikkel": "article product",
    "produkt": "product",
    "vara": "product",
    "varor": "products",
    "synk": "sync",
    "synkronis": "sync",
    "fel": "error",
    "feil": "error",
    "felmeddelande": "error message",
    "kontakt": "contact support",
    "support": "support",
    "hjälp": "help",
    "hjelp": "help",
    "ändra": "edit change",
    "endre": "edit change",
    "redigera": "edit",
    "pris": "pricing price",
    "kostnad": "cost pricing",
    "kostar": "cost pricing",
    "butik": "store",
    "butikk": "store",
    "nummerserie": "number series",
    "kostnadsställe": "cost center",
    "behörighet": "authorization permission",
    "saknas": "missing not found",
    "mangler": "missing",
    "hittar inte": "not found",
    "finns inte": "not available not found",
    "finnes ikke": "not found",
    "fastnar": "fails stuck",
    "misslyck": "fails",
    "mislykk": "fails",
    "ingenting": "nothing",
    "inget": "nothing",
    "ingen": "no",
    "alla": "all",
    "alle": "all",
    "uppgift": "task",
    "oppgave": "task",
    "slutat": "stopped",
    "sluttet": "stopped",
    "skapas inte": "not created",
    "cache": "cache",
    "token": "token",
}

_PATTERNS = [
    (re.compile(rf"(?<!\w){re.escape(stem)}\w*", re.UNICODE), english)
    for stem, english in sorted(GLOSSARY.items(), key=lambda kv: -len(kv[0]))
]
# A letter of their own, or a common word English does not have: a message can be
# Swedish with neither å, ä nor ö ("Ingenting synkas till Fortnox, alla uppgifter
# misslyckas").
_NORDIC = re.compile(
    r"[åäöøæ]|\b(och|inte|jag|ikke|ikkje|jeg|hur|hvordan|vad|hva|kan|det|ingen|inga|"
    r"ingenting|alla|allt|kunde|finns|saknas|mangler|synkas|synkar|fungerar|funkar|virker|"
    r"misslyckas|misslyckades|mislyktes|feilet|hittades|uppgifter|oppgaver)\b"
)


def translate_query(query: str) -> str:
    """The query with Nordic support terms replaced by English ones (for vocabulary checks).

    English queries are returned unchanged, so the translation cannot disturb them.
    """
    text = normalize_text(query)
    if not _NORDIC.search(text):
        return query
    for pattern, english in _PATTERNS:
        text = pattern.sub(english, text)
    return text


def expand_query(query: str) -> str:
    """The query with English equivalents of its Nordic support terms appended.

    The original words stay: the knowledge base quotes Swedish messages verbatim.
    """
    text = normalize_text(query)
    if not _NORDIC.search(text):
        return query
    extra = [english for pattern, english in _PATTERNS if pattern.search(text)]
    return f"{query} ({' '.join(dict.fromkeys(extra))})" if extra else query
