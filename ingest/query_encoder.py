"""A numpy-only BERT encoder for embedding queries without importing torch.

Why this exists: cold start.  Importing ``sentence_transformers`` pulls in torch,
transformers and scipy and takes 5-16 s, while numpy + tokenizers + safetensors
import in about 0.3 s.  Documents are still indexed with sentence-transformers;
this module re-implements the same forward pass (BERT -> mean pooling -> L2
normalisation) so a query can be embedded at run time without that cost.

The vectors must match what ``SentenceTransformer(path).encode(...,
normalize_embeddings=True)`` produces for the same folder, otherwise query and
document vectors drift apart; ``tests/test_query_encoder.py`` checks this on
the real corpus.  Anything this module does not reproduce exactly (another
architecture, pooling mode, activation, extra modules, default prompts) is
refused with :class:`UnsupportedModelError` so callers can fall back to
sentence-transformers instead of silently producing different vectors.

Never import torch, transformers or sentence_transformers here: a test checks
that a fresh process encoding a query has none of them in ``sys.modules``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer, normalizers

log = logging.getLogger(__name__)

_TRANSFORMER = "Transformer"
_POOLING = "Pooling"
_NORMALIZE = "Normalize"

# Legacy boolean pooling keys in 1_Pooling/config.json, mapped to the mode name
# sentence-transformers uses for them.
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}

# Checkpoints saved from BertForX / other wrappers prefix the encoder keys.
_WEIGHT_PREFIXES = ("", "bert.", "model.")

# Odd numerator / even denominator coefficients of the float32 erf rational
# approximation used by Eigen and XLA: about 4e-7 absolute error in float32,
# close enough to torch's exact-erf GELU and far cheaper than np.vectorize(math.erf).
_ERF_ALPHA = tuple(
    np.float32(c)
    for c in (
        -2.72614225801306e-10,
        2.77068142495902e-08,
        -2.10102402082508e-06,
        -5.69250639462346e-05,
        -7.34990630326855e-04,
        -2.95459980854025e-03,
        -1.60960333262415e-02,
    )
)
_ERF_BETA = tuple(
    np.float32(c)
    for c in (
        -1.45660718464996e-05,
        -2.13374055278905e-04,
        -1.68282697438203e-03,
        -7.37332916720468e-03,
        -1.42647390514189e-02,
    )
)
_INV_SQRT2 = np.float32(1.0 / math.sqrt(2.0))


class UnsupportedModelError(RuntimeError):
    """The model folder is not one this encoder reproduces exactly; use sentence-transformers."""


@dataclass(frozen=True)
class _Layer:
    """One encoder layer's weights, matrices pre-transposed to (in, out)."""

    qkv_w: np.ndarray
    qkv_b: np.ndarray
    attn_out_w: np.ndarray
    attn_out_b: np.ndarray
    attn_ln_w: np.ndarray
    attn_ln_b: np.ndarray
    inter_w: np.ndarray
    inter_b: np.ndarray
    out_w: np.ndarray
    out_b: np.ndarray
    out_ln_w: np.ndarray
    out_ln_b: np.ndarray


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UnsupportedModelError(f"The model folder has no {path.name} ({path}).") from exc
    except (OSError, ValueError) as exc:
        raise UnsupportedModelError(f"Could not read {path}: {exc}.") from exc


def _module_kind(module: dict[str, Any]) -> str:
    # The class path moved between sentence-transformers versions
    # (sentence_transformers.models.X, ...base.modules.X); the class name did not.
    return str(module.get("type", "")).rsplit(".", 1)[-1]


def _pooling_modes(config: dict[str, Any]) -> tuple[str, ...]:
    """Pooling modes as sentence-transformers reads them, old or new config format."""
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        return (mode,) if isinstance(mode, str) else tuple(mode)
    active = tuple(mode for key, mode in _LEGACY_POOLING_KEYS.items() if config.get(key))
    # sentence-transformers falls back to mean pooling when no legacy flag is set.
    return active or ("mean",)


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    return centred / np.sqrt(var + np.float32(eps)) * weight + bias


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, BERT's "gelu"; overwrites and returns ``x``.

    In place because on long batches this is the costliest step after the
    matmuls, and every temporary is another pass over a (tokens, 1536) array.
    """
    z = x * _INV_SQRT2
    # Beyond +-4 erf is +-1 in float32; clamping keeps the polynomials in range.
    np.clip(z, -4.0, 4.0, out=z)
    z2 = z * z
    p = z2 * _ERF_ALPHA[0]
    for coef in _ERF_ALPHA[1:-1]:
        p += coef
        p *= z2
    p += _ERF_ALPHA[-1]
    p *= z
    q = z2 * _ERF_BETA[0]
    for coef in _ERF_BETA[1:-1]:
        q += coef
        q *= z2
    q += _ERF_BETA[-1]
    p /= q  # p is now erf(x / sqrt(2))
    p += np.float32(1.0)
    x *= np.float32(0.5)
    x *= p
    return x


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    return x


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    # Same eps as torch.nn.functional.normalize, so an all-zero row stays zero.
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, np.float32(1e-12))


class NumpyBertEncoder:
    """Embeds text with a sentence-transformers BERT model using numpy only.

    Build it with :meth:`load`; the constructor takes already-validated parts.

    Attributes:
        dimension: Length of each output vector (the model's hidden size).
        max_seq_length: Token budget per text, [CLS] and [SEP] included.
        normalizes: Whether the model folder itself ends in a Normalize module.
        path: The model folder this encoder was loaded from.
    """

    def __init__(
        self,
        *,
        path: Path,
        tokenizer: Tokenizer,
        weights: dict[str, np.ndarray],
        layers: list[_Layer],
        num_heads: int,
        layer_norm_eps: float,
        max_seq_length: int,
        normalizes: bool,
    ) -> None:
        self.path = path
        self._tokenizer = tokenizer
        self._word = weights["word"]
        self._position = weights["position"]
        self._token_type0 = weights["token_type0"]
        self._emb_ln_w = weights["emb_ln_w"]
        self._emb_ln_b = weights["emb_ln_b"]
        self._layers = layers
        self._num_heads = num_heads
        self._eps = layer_norm_eps
        self.dimension = int(self._word.shape[1])
        self._head_dim = self.dimension // num_heads
        self._scale = np.float32(1.0 / math.sqrt(self._head_dim))
        self.max_seq_length = max_seq_length
        self.normalizes = normalizes

    @classmethod
    def load(cls, path: str | Path) -> NumpyBertEncoder:
        """Load a sentence-transformers folder laid out as Transformer -> mean Pooling.

        Args:
            path: A local sentence-transformers model folder (with modules.json).

        Returns:
            An encoder whose vectors match sentence-transformers' for that folder.

        Raises:
            UnsupportedModelError: The folder is missing files or uses anything this
                encoder does not reproduce exactly (the reason is in the message).
        """
        started = time.perf_counter()
        root = Path(path)
        transformer_dir, normalizes = _check_modules(root)
        config = _check_config(transformer_dir)
        st_config = _read_st_config(root, transformer_dir)
        max_seq_length = _max_seq_length(transformer_dir, config, st_config)
        tokenizer = _load_tokenizer(
            transformer_dir, max_seq_length, bool(st_config.get("do_lower_case"))
        )
        weights, layers = _load_weights(transformer_dir, config)
        encoder = cls(
            path=root,
            tokenizer=tokenizer,
            weights=weights,
            layers=layers,
            num_heads=int(config["num_attention_heads"]),
            layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
            max_seq_length=max_seq_length,
            normalizes=normalizes,
        )
        log.info(
            "Loaded numpy BERT encoder from %s (%d layers, dimension %d, max %d tokens) in %.2f s",
            root,
            len(layers),
            encoder.dimension,
            max_seq_length,
            time.perf_counter() - started,
        )
        return encoder

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, truncated to ``max_seq_length`` with [CLS]/[SEP] kept.

        Args:
            texts: The texts to tokenize.

        Returns:
            One list of token ids per text, unpadded.
        """
        if not texts:
            return []
        return [enc.ids for enc in self._tokenizer.encode_batch(list(texts))]

    def encode(
        self, texts: str | Sequence[str], normalize: bool = True, batch_size: int = 32
    ) -> np.ndarray:
        """Embed texts, one row per text in input order.

        Args:
            texts: The texts to embed; a bare string counts as one text.
            normalize: L2-normalise every row.  With ``False`` the rows are
                normalised only if the model folder has a Normalize module, exactly
                like sentence-transformers' ``normalize_embeddings=False``.
            batch_size: Texts per forward pass.  Texts are grouped by token count
                so short queries are not padded to the length of long ones.

        Returns:
            A float32 array of shape ``(len(texts), dimension)``.
        """
        if isinstance(texts, str):
            texts = [texts]
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenize(texts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
        step = max(1, batch_size)
        for start in range(0, len(order), step):
            batch = order[start : start + step]
            out[batch] = self._embed_batch([ids[i] for i in batch])
        if normalize or self.normalizes:
            out = _l2_normalize(out)
        return out

    def _embed_batch(self, ids: list[list[int]]) -> np.ndarray:
        """Mean-pooled, unnormalised embeddings for one batch of token id lists."""
        batch, length = len(ids), max(len(row) for row in ids)
        input_ids = np.zeros((batch, length), dtype=np.int64)
        mask = np.zeros((batch, length), dtype=np.float32)
        for row, tokens in enumerate(ids):
            input_ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1.0

        hidden = self._word[input_ids] + self._position[:length] + self._token_type0
        hidden = _layer_norm(hidden, self._emb_ln_w, self._emb_ln_b, self._eps)
        # Padding is on the right and masked out of attention, so real tokens see
        # exactly what they would see alone; the float32 minimum is what HF adds too.
        # A batch without padding (always so for a single query) needs no mask at all.
        bias = None
        if not mask.all():
            bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
        for layer in self._layers:
            hidden = self._layer(hidden, bias, layer)

        summed = np.einsum("btd,bt->bd", hidden, mask)
        counts = np.maximum(mask.sum(axis=1, keepdims=True), np.float32(1e-9))
        return summed / counts

    def _layer(self, hidden: np.ndarray, bias: np.ndarray | None, layer: _Layer) -> np.ndarray:
        batch, length, dim = hidden.shape
        heads, head_dim = self._num_heads, self._head_dim
        qkv = hidden @ layer.qkv_w + layer.qkv_b
        qkv = qkv.reshape(batch, length, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        # Scaling q (tokens x 32 per head) is cheaper than scaling the (tokens x tokens) scores.
        scores = (q * self._scale) @ k.transpose(0, 1, 3, 2)
        if bias is not None:
            scores += bias
        context = _softmax(scores) @ v
        context = context.transpose(0, 2, 1, 3).reshape(batch, length, dim)

        attended = context @ layer.attn_out_w + layer.attn_out_b + hidden
        attended = _layer_norm(attended, layer.attn_ln_w, layer.attn_ln_b, self._eps)
        inter = _gelu(attended @ layer.inter_w + layer.inter_b)
        out = inter @ layer.out_w + layer.out_b + attended
        return _layer_norm(out, layer.out_ln_w, layer.out_ln_b, self._eps)


def _check_modules(root: Path) -> tuple[Path, bool]:
    """Validate modules.json; return the transformer folder and whether it normalises."""
    modules = _read_json(root / "modules.json")
    if not isinstance(modules, list) or not modules:
        raise UnsupportedModelError(f"{root / 'modules.json'} is not a non-empty list of modules.")
    modules = sorted(modules, key=lambda m: m.get("idx", 0))
    kinds = [_module_kind(m) for m in modules]
    if kinds not in ([_TRANSFORMER, _POOLING], [_TRANSFORMER, _POOLING, _NORMALIZE]):
        raise UnsupportedModelError(
            f"Only Transformer -> Pooling (-> Normalize) models are supported, not {kinds}."
        )

    pooling_config = _read_json(root / modules[1].get("path", "") / "config.json")
    modes = _pooling_modes(pooling_config)
    if modes != ("mean",):
        raise UnsupportedModelError(f"Only mean pooling is supported, not {list(modes)}.")

    normalizes = len(modules) == 3
    if normalizes:
        normalize_config = root / modules[2].get("path", "") / "config.json"
        if normalize_config.is_file():
            source = _read_json(normalize_config).get("module_input_name", "sentence_embedding")
            if source != "sentence_embedding":
                raise UnsupportedModelError(
                    f"Only a Normalize of the sentence embedding is supported, not of {source!r}."
                )

    st_config_path = root / "config_sentence_transformers.json"
    if st_config_path.is_file():
        prompt = _read_json(st_config_path).get("default_prompt_name")
        if prompt:
            # sentence-transformers would prepend that prompt to every text.
            raise UnsupportedModelError(
                f"Models with a default prompt ({prompt!r}) are not supported."
            )
    return root / modules[0].get("path", ""), normalizes


def _check_config(transformer_dir: Path) -> dict[str, Any]:
    """Validate config.json: a plain absolute-position BERT with exact GELU."""
    config = _read_json(transformer_dir / "config.json")
    checks = (
        ("model_type", "bert"),
        ("hidden_act", "gelu"),
        ("position_embedding_type", "absolute"),
    )
    for key, wanted in checks:
        value = config.get(key, "absolute" if key == "position_embedding_type" else None)
        if value != wanted:
            raise UnsupportedModelError(f"Only {key} {wanted!r} is supported, not {value!r}.")
    if config.get("hidden_size", 0) % max(1, config.get("num_attention_heads", 0)):
        raise UnsupportedModelError("hidden_size is not a multiple of num_attention_heads.")
    return config


def _read_st_config(root: Path, transformer_dir: Path) -> dict[str, Any]:
    """The Transformer module's sentence_bert_config.json, or {} when there is none."""
    for folder in (transformer_dir, root):
        path = folder / "sentence_bert_config.json"
        if path.is_file():
            st_config = _read_json(path)
            break
    else:
        return {}
    task = st_config.get("transformer_task", "feature-extraction")
    if task != "feature-extraction":
        raise UnsupportedModelError(f"Only the feature-extraction task is supported, not {task!r}.")
    return st_config


def _max_seq_length(
    transformer_dir: Path, config: dict[str, Any], st_config: dict[str, Any]
) -> int:
    """The token budget sentence-transformers applies, capped at the position table."""
    limit = int(config.get("max_position_embeddings", 512))
    wanted = st_config.get("max_seq_length")
    if wanted is None:
        tokenizer_config = transformer_dir / "tokenizer_config.json"
        if tokenizer_config.is_file():
            wanted = _read_json(tokenizer_config).get("model_max_length")
    if not isinstance(wanted, int) or wanted <= 0:
        return limit
    return min(wanted, limit)


def _load_tokenizer(transformer_dir: Path, max_seq_length: int, lower_case: bool) -> Tokenizer:
    """The model's fast tokenizer with sentence-transformers' truncation and no padding."""
    path = transformer_dir / "tokenizer.json"
    if not path.is_file():
        raise UnsupportedModelError(f"The model folder has no tokenizer.json ({path}).")
    tokenizer = Tokenizer.from_file(str(path))
    # tokenizer.json ships its own settings (all-MiniLM-L6-v2: truncate and pad to
    # 128); replace them with what sentence-transformers does.  The budget counts the
    # special tokens, as transformers' truncation=True, max_length=N does.
    tokenizer.no_padding()
    tokenizer.enable_truncation(
        max_length=max_seq_length, stride=0, strategy="longest_first", direction="right"
    )
    if lower_case and not _lowercases(tokenizer.normalizer):
        # What sentence-transformers does for do_lower_case: a Lowercase in front of
        # the tokenizer's own normaliser (all-MiniLM-L6-v2's BertNormalizer already
        # lower-cases, so this is a no-op there).
        current = tokenizer.normalizer
        tokenizer.normalizer = normalizers.Sequence(
            [normalizers.Lowercase()] + ([current] if current is not None else [])
        )
    if not _lowercases(tokenizer.normalizer):
        # An uncased vocabulary with a case-preserving normaliser would give different ids
        # than the HF tokenizer built from tokenizer_config.json.
        tokenizer_config = transformer_dir / "tokenizer_config.json"
        if tokenizer_config.is_file() and _read_json(tokenizer_config).get("do_lower_case"):
            raise UnsupportedModelError(
                "tokenizer_config.json asks for lower-casing that tokenizer.json does not do."
            )
    return tokenizer


def _lowercases(normalizer: normalizers.Normalizer | None) -> bool:
    if normalizer is None:
        return False
    state = json.loads(normalizer.__getstate__())
    if state.get("type") == "Sequence":
        return any(n.get("type") == "Lowercase" or n.get("lowercase") for n in state["normalizers"])
    return state.get("type") == "Lowercase" or bool(state.get("lowercase"))


def _load_weights(
    transformer_dir: Path, config: dict[str, Any]
) -> tuple[dict[str, np.ndarray], list[_Layer]]:
    """Read model.safetensors into float32 arrays laid out for plain matmuls."""
    path = transformer_dir / "model.safetensors"
    if not path.is_file():
        # pytorch_model.bin is a pickle that needs torch to read.
        raise UnsupportedModelError(f"The model folder has no model.safetensors ({path}).")
    raw = load_file(str(path))
    prefix = next(
        (p for p in _WEIGHT_PREFIXES if f"{p}embeddings.word_embeddings.weight" in raw), None
    )
    if prefix is None:
        raise UnsupportedModelError(f"{path} holds no BERT embeddings.word_embeddings.weight.")

    def get(name: str) -> np.ndarray:
        try:
            return np.ascontiguousarray(raw[prefix + name], dtype=np.float32)
        except KeyError as exc:
            raise UnsupportedModelError(f"{path} has no weight {prefix + name}.") from exc

    def matrix(name: str) -> np.ndarray:
        # torch Linear stores (out, in); transposing once here keeps forward to x @ W.
        return np.ascontiguousarray(get(name).T)

    weights = {
        "word": get("embeddings.word_embeddings.weight"),
        "position": get("embeddings.position_embeddings.weight"),
        "token_type0": get("embeddings.token_type_embeddings.weight")[0],
        "emb_ln_w": get("embeddings.LayerNorm.weight"),
        "emb_ln_b": get("embeddings.LayerNorm.bias"),
    }
    if weights["word"].shape[1] != config.get("hidden_size"):
        raise UnsupportedModelError("The embedding width does not match config.json hidden_size.")

    qkv = ("query", "key", "value")
    layers = []
    for i in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{i}."
        layers.append(
            _Layer(
                # One fused Q|K|V matmul instead of three: fewer numpy calls per layer.
                qkv_w=np.ascontiguousarray(
                    np.concatenate([matrix(f"{p}attention.self.{n}.weight") for n in qkv], axis=1)
                ),
                qkv_b=np.concatenate([get(f"{p}attention.self.{n}.bias") for n in qkv]),
                attn_out_w=matrix(f"{p}attention.output.dense.weight"),
                attn_out_b=get(f"{p}attention.output.dense.bias"),
                attn_ln_w=get(f"{p}attention.output.LayerNorm.weight"),
                attn_ln_b=get(f"{p}attention.output.LayerNorm.bias"),
                inter_w=matrix(f"{p}intermediate.dense.weight"),
                inter_b=get(f"{p}intermediate.dense.bias"),
                out_w=matrix(f"{p}output.dense.weight"),
                out_b=get(f"{p}output.dense.bias"),
                out_ln_w=get(f"{p}output.LayerNorm.weight"),
                out_ln_b=get(f"{p}output.LayerNorm.bias"),
            )
        )
    return weights, layers
