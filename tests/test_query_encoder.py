"""The numpy query encoder must give the vectors sentence-transformers gives.

Documents are indexed with sentence-transformers and queries embedded with
``ingest.query_encoder``; if the two drift apart, retrieval quietly degrades, so
these tests compare them on the real corpus and on hostile query shapes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ingest.chunking import heading_text, render_entry
from ingest.embedding import LazyEmbeddings, ModelNotFoundError, resolve_model_path
from ingest.entries import Entry
from ingest.query_encoder import NumpyBertEncoder, UnsupportedModelError

pytestmark = pytest.mark.model

REPO = Path(__file__).resolve().parent.parent
MODEL_PATH = Path(resolve_model_path(""))
MIN_COSINE = 0.9999
MAX_ABS_DIFF = 2e-5

USER_QUESTIONS = [
    "How do I connect Fortnox to my Shopify store?",
    "my orders wont sync to fortnox after new year",
    "fiscal yaer not avalable",
    "What does FORTNOX_CUSTOMER_NAME_EMPTY mean?",
    "Fortnox säger att räkenskapsåret inte finns, ordrarna från januari fastnar. Vad gör jag?",
    "Kunde inte hämta/hitta moms – vad betyder det?",
    "Hvorfor blir ikke ordrene mine synkronisert til Visma? Kundenummeret øker ikke.",
    "Jeg får feilmelding om valuta på fakturaer i NOK og DKK, hva gjør jeg?",
    "Kan jeg endre en bokført faktura i Tripletex? Beløpet må rettes før årsoppgjøret.",
    "Varför dubbleras mina returer? Återbetalningen blev dubbelt så stor (ÅÄÖ åäö æø)",
    "2026-01-02 08:14:55 ERROR task 90211 (Export Orders to Fortnox): Fiscal year not available",
    '[2025-11-03T14:22:01Z] WARN sync#4411 "Invalid grant" refresh_token expired for tenant 8812',
    "Error: Could not json-decode visma error response <html><body>502 Bad Gateway</body></html>",
    "Traceback (most recent call last):\n  File \"sync.py\", line 42\nKeyError: 'taxZone'",
    "Loaded 0 Articles",
    "too many requests 429 when syncing 20k orders",
    "stock is wrong after black friday, we oversold 40 units 😱😱",
    "payout from qliro not matched w/ invoices?? 🙏",
    "refund created as invoice instead of credit invoice",
    "How much does Junipeer cost per month for 3 stores?",
    "can u sync old orders from 2023",
    "duplicate invoices same order #10234 and #10234-1",
    "OSS VAT for EU customers, reverse charge not applied on WooCommerce",
    "the webhook button does nothing",
    "SAP B1 order status not updating",
    "where do i clear the cache",
    "contact support",
    "?",
    "",
    "🤖🤖🤖",
]


@pytest.fixture(scope="module")
def encoder() -> NumpyBertEncoder:
    return NumpyBertEncoder.load(MODEL_PATH)


@pytest.fixture(scope="module")
def st_model() -> Any:
    # Loading sentence-transformers takes seconds: once per module.
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(MODEL_PATH), device="cpu", local_files_only=True)


# One "word" over 100 characters is a single [UNK] to WordPiece: [CLS] [UNK] [SEP].
UNBROKEN_RUNS = ["x" * 10_000, "😀" * 1_000]

PASTED_LOG = (
    "2026-01-02 08:14:55 ERROR task 90211 (Export Orders to Fortnox): Fiscal year not available\n"
)


def _long_texts(entries: list[Entry]) -> list[str]:
    """Texts far beyond the 256-token budget, so truncation is exercised.

    No single corpus entry renders to more than 256 tokens today, hence these.
    """
    corpus = "\n\n".join(render_entry(e) for e in entries)
    return [
        (PASTED_LOG * 200)[:10_000],
        "Fortnox " * 2_000,
        corpus,
        "åäö øæ " * 700,
        "😀 " * 1_000,
    ]


@pytest.fixture(scope="module")
def all_texts(request: pytest.FixtureRequest) -> list[str]:
    entries: list[Entry] = request.getfixturevalue("entries")
    return (
        [render_entry(e) for e in entries]
        + [heading_text(e) for e in entries]
        + USER_QUESTIONS
        + UNBROKEN_RUNS
        + _long_texts(entries)
    )


def _assert_close(ours: np.ndarray, theirs: np.ndarray, texts: list[str]) -> None:
    assert ours.dtype == np.float32
    assert ours.shape == theirs.shape
    cosines = (ours * theirs).sum(axis=1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1)
    )
    worst = int(np.argmin(cosines))
    assert cosines[worst] >= MIN_COSINE, f"cosine {cosines[worst]} for {texts[worst][:80]!r}"
    assert float(np.abs(ours - theirs).max()) <= MAX_ABS_DIFF


def test_matches_sentence_transformers(
    encoder: NumpyBertEncoder, st_model: Any, all_texts: list[str]
) -> None:
    theirs = st_model.encode(all_texts, normalize_embeddings=True, show_progress_bar=False)
    ours = encoder.encode(all_texts)
    _assert_close(ours, np.asarray(theirs, dtype=np.float32), all_texts)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_matches_one_query_at_a_time(encoder: NumpyBertEncoder, st_model: Any) -> None:
    # A lone query has no padding in either implementation: the run-time case.
    for text in USER_QUESTIONS[:8] + [""]:
        theirs = st_model.encode([text], normalize_embeddings=True, show_progress_bar=False)
        _assert_close(encoder.encode([text]), np.asarray(theirs), [text])


def test_token_ids_match_sentence_transformers(
    encoder: NumpyBertEncoder, st_model: Any, all_texts: list[str]
) -> None:
    features = st_model.preprocess(all_texts)
    expected = [
        ids[mask.bool()].tolist()
        for ids, mask in zip(features["input_ids"], features["attention_mask"], strict=True)
    ]
    assert encoder.tokenize(all_texts) == expected
    assert encoder.max_seq_length == st_model.max_seq_length == 256


def test_truncation_keeps_special_tokens_and_ignores_tokenizer_json_settings(
    encoder: NumpyBertEncoder, entries: list[Entry]
) -> None:
    long_ids = encoder.tokenize(_long_texts(entries))
    assert all(len(ids) == encoder.max_seq_length for ids in long_ids)
    assert all(ids[0] == 101 and ids[-1] == 102 for ids in long_ids)
    assert encoder.tokenize(UNBROKEN_RUNS) == [[101, 100, 102]] * 2
    # tokenizer.json itself says truncate and pad to 128; neither may leak through.
    assert encoder.tokenize(["", "hello world"]) == [[101, 102], [101, 7592, 2088, 102]]


def test_batching_keeps_input_order_and_ignores_padding(encoder: NumpyBertEncoder) -> None:
    texts = ["short", "Fortnox " * 300, "", "a somewhat longer question about payouts", "ok"]
    together = encoder.encode(texts, batch_size=2)
    alone = np.vstack([encoder.encode([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert encoder.encode([]).shape == (0, encoder.dimension)
    assert encoder.encode("short").shape == (1, encoder.dimension)


def test_public_attributes(encoder: NumpyBertEncoder) -> None:
    assert encoder.dimension == 384
    assert encoder.normalizes is True


def _copy_model(tmp_path: Path) -> Path:
    """A copy of the model folder to mutate; the 90 MB weights are linked, not copied."""
    target = tmp_path / "model"
    shutil.copytree(MODEL_PATH, target, ignore=shutil.ignore_patterns("model.safetensors", "*.md"))
    (target / "model.safetensors").symlink_to(MODEL_PATH / "model.safetensors")
    return target


def _edit_json(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(json.dumps(data), encoding="utf-8")


def _cls_pooling(model: Path) -> None:
    _edit_json(
        model / "1_Pooling/config.json",
        pooling_mode_cls_token=True,
        pooling_mode_mean_tokens=False,
    )


def _max_pooling_new_format(model: Path) -> None:
    (model / "1_Pooling/config.json").write_text(
        json.dumps({"embedding_dimension": 384, "pooling_mode": "max"}), encoding="utf-8"
    )


def _extra_dense_module(model: Path) -> None:
    modules = json.loads((model / "modules.json").read_text(encoding="utf-8"))
    modules.insert(
        2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    )
    for idx, module in enumerate(modules):
        module["idx"] = idx
    (model / "modules.json").write_text(json.dumps(modules), encoding="utf-8")


def _roberta(model: Path) -> None:
    _edit_json(model / "config.json", model_type="roberta")


def _tanh_gelu(model: Path) -> None:
    _edit_json(model / "config.json", hidden_act="gelu_new")


def _relative_positions(model: Path) -> None:
    _edit_json(model / "config.json", position_embedding_type="relative_key")


def _default_prompt(model: Path) -> None:
    _edit_json(
        model / "config_sentence_transformers.json",
        prompts={"query": "query: "},
        default_prompt_name="query",
    )


def _no_safetensors(model: Path) -> None:
    (model / "model.safetensors").unlink()


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (_cls_pooling, "mean pooling"),
        (_max_pooling_new_format, "mean pooling"),
        (_extra_dense_module, "Transformer -> Pooling"),
        (_roberta, "model_type"),
        (_tanh_gelu, "hidden_act"),
        (_relative_positions, "position_embedding_type"),
        (_default_prompt, "default prompt"),
        (_no_safetensors, "model.safetensors"),
    ],
)
def test_unsupported_models_are_refused(tmp_path: Path, mutate: Any, reason: str) -> None:
    model = _copy_model(tmp_path)
    mutate(model)
    with pytest.raises(UnsupportedModelError, match=reason):
        NumpyBertEncoder.load(model)


def test_without_normalize_module_normalizing_follows_the_argument(
    tmp_path: Path, encoder: NumpyBertEncoder
) -> None:
    model = _copy_model(tmp_path)
    modules = json.loads((model / "modules.json").read_text(encoding="utf-8"))
    (model / "modules.json").write_text(json.dumps(modules[:2]), encoding="utf-8")
    plain = NumpyBertEncoder.load(model)
    assert plain.normalizes is False

    texts = ["How do I connect Fortnox?", ""]
    raw = plain.encode(texts, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    np.testing.assert_allclose(plain.encode(texts), encoder.encode(texts), atol=1e-6)
    np.testing.assert_allclose(encoder.encode(texts, normalize=False), encoder.encode(texts))


def test_prefixed_weight_names_load(tmp_path: Path, encoder: NumpyBertEncoder) -> None:
    from safetensors.numpy import load_file, save_file

    model = _copy_model(tmp_path)
    weights = load_file(str(MODEL_PATH / "model.safetensors"))
    (model / "model.safetensors").unlink()
    prefixed = {f"bert.{k}": v for k, v in weights.items() if k != "embeddings.position_ids"}
    save_file(prefixed, str(model / "model.safetensors"))

    texts = ["Refund payout amount doubled", "å ä ö ø æ"]
    np.testing.assert_array_equal(NumpyBertEncoder.load(model).encode(texts), encoder.encode(texts))


# Python source that lists the heavy modules a process has imported, as `heavy`.
HEAVY = (
    "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules]\n"
)


def _run_python(script: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run a script in a fresh interpreter (nothing imported yet); return its stdout."""
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_encoding_a_query_does_not_import_torch() -> None:
    script = (
        "import sys\n"
        "import ingest.query_encoder as qe\n"
        f"vectors = qe.NumpyBertEncoder.load({str(MODEL_PATH)!r}).encode(['hej fortnox'])\n"
        "assert vectors.shape == (1, 384), vectors.shape\n"
        f"{HEAVY}"
        "assert not heavy, heavy\n"
    )
    _run_python(script)


# -- which encoder the bot uses for questions -------------------------------------------


def test_the_bot_embeds_questions_without_torch_and_finds_the_same_entries(
    real_bot: Any, real_index_dir: Path
) -> None:
    questions = ["how do I see whether my orders were synced?", "vat error fortnox"]
    script = (
        "import json, sys\n"
        "from bot.config import load_settings\n"
        "from bot.service import SupportBot\n"
        "bot = SupportBot.from_settings(load_settings(log_level='WARNING'))\n"
        "cited = [[c.entry.id for c in bot.answer(q).citations] for q in sys.argv[1:]]\n"
        f"{HEAVY}"
        "print(json.dumps({'cited': cited, 'encoder': bot.embedder.query_encoder, "
        "'heavy': heavy}))\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SUPPORTBOT_")},
        "SUPPORTBOT_INDEX__DIR": str(real_index_dir),
        "SUPPORTBOT_INDEX__AUTO_REBUILD": "false",
    }
    output = _run_python(script, *questions, env=env)
    child = json.loads(output.strip().splitlines()[-1])
    assert child["encoder"] == "numpy"
    assert child["heavy"] == []
    # The in-process bot embeds questions with sentence-transformers itself.
    assert child["cited"] == [[c.entry.id for c in real_bot.answer(q).citations] for q in questions]


def test_a_query_encoder_that_does_not_reproduce_the_index_is_not_used(
    real_bot: Any, caplog: pytest.LogCaptureFixture
) -> None:
    texts, vectors = real_bot.index.reference_vectors()
    # Three headings and the longest chunk (later positions of the model get checked too).
    assert len(texts) == 4
    assert len(vectors) == 4
    assert len(texts[-1]) == max(len(c.text) for c in real_bot.index.chunks)
    matching = LazyEmbeddings()
    matching.expect(texts, vectors)
    assert matching.query_encoder == "numpy"

    shuffled = LazyEmbeddings()
    shuffled.expect(texts, vectors[::-1])
    with caplog.at_level(logging.WARNING, logger="ingest.embedding"):
        assert shuffled.query_encoder == "sentence-transformers"
    assert "does not reproduce the index's vectors" in caplog.text

    # Strict mode reports the mismatch when the references arrive (start-up), not at
    # the first question.
    strict = LazyEmbeddings(query_encoder="numpy")
    with pytest.raises(ModelNotFoundError, match="does not reproduce"):
        strict.expect(texts, vectors[::-1])


def test_an_unsupported_model_falls_back_to_sentence_transformers(tmp_path: Path) -> None:
    model = _copy_model(tmp_path)
    _cls_pooling(model)
    assert LazyEmbeddings(str(model)).query_encoder == "sentence-transformers"
    assert LazyEmbeddings(query_encoder="sentence-transformers").query_encoder == (
        "sentence-transformers"
    )
    with pytest.raises(ModelNotFoundError, match="mean pooling"):
        LazyEmbeddings(str(model), query_encoder="numpy").embed_query("vat error")


def test_a_model_the_encoder_cannot_read_falls_back_to_sentence_transformers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = _copy_model(tmp_path)
    (model / "model.safetensors").unlink()
    (model / "model.safetensors").write_bytes(b"not a safetensors file")
    with caplog.at_level(logging.WARNING, logger="ingest.embedding"):
        assert LazyEmbeddings(str(model)).query_encoder == "sentence-transformers"
    assert "Queries use sentence-transformers" in caplog.text
    with pytest.raises(ModelNotFoundError, match="cannot load"):
        LazyEmbeddings(str(model), query_encoder="numpy").embed_query("vat error")
