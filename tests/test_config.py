from pathlib import Path

from bot.config import REPO_ROOT, Settings, render_env_example


def test_env_example_lists_every_setting_with_its_default():
    committed = (REPO_ROOT / ".env.example").read_text(encoding="utf-8")
    assert committed == render_env_example(), "regenerate .env.example from bot.config"


def test_every_setting_has_a_description():
    def walk(model):
        for name, info in model.model_fields.items():
            sub = info.annotation
            if isinstance(sub, type) and hasattr(sub, "model_fields"):
                yield from walk(sub)
            else:
                yield name, info.description

    missing = [name for name, description in walk(Settings) if not description]
    assert not missing


def test_nested_settings_come_from_environment(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SUPPORTBOT_RETRIEVAL__TOP_K", "5")
    monkeypatch.setenv("SUPPORTBOT_INDEX__DIR", "elsewhere")
    settings = Settings()
    assert settings.retrieval.top_k == 5
    # Relative paths are anchored at the repository, whatever the current folder.
    assert settings.index.dir == REPO_ROOT / "elsewhere"


def test_relative_sqlite_url_is_anchored_in_repo(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SUPPORTBOT_CHAT__DATABASE_URL", "sqlite+aiosqlite:///data/x.db")
    url = Settings().chat.database_url
    assert url == f"sqlite+aiosqlite:///{REPO_ROOT / 'data' / 'x.db'}"
    assert Path(url.removeprefix("sqlite+aiosqlite:///")).is_absolute()


def test_embedding_defaults_agree_with_the_embedding_classes():
    # The classes are also built without settings (tests, notebooks): same batching.
    import inspect

    from ingest.embedding import DEFAULT_BATCH_SIZE, LazyEmbeddings, SentenceTransformerEmbeddings

    assert Settings().embedding.batch_size == DEFAULT_BATCH_SIZE
    for cls in (LazyEmbeddings, SentenceTransformerEmbeddings):
        default = inspect.signature(cls.__init__).parameters["batch_size"].default
        assert default == DEFAULT_BATCH_SIZE


def test_invalid_settings_name_each_variable(monkeypatch):
    import pytest

    from bot.config import SettingsError, load_settings

    monkeypatch.setenv("SUPPORTBOT_RETRIEVAL__TOP_K", "abc")
    monkeypatch.setenv("SUPPORTBOT_CHAT__PORT", "70000")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "SUPPORTBOT_RETRIEVAL__TOP_K='abc': Input should be a valid integer" in message
    assert "SUPPORTBOT_CHAT__PORT='70000': Input should be less than or equal to 65535" in message


def test_trusted_proxies_are_named_addresses(monkeypatch):
    import pytest

    from bot.config import SettingsError, load_settings

    # "*" would make uvicorn (FORWARDED_ALLOW_IPS) believe any client's X-Forwarded-For.
    for value in ("*", "127.0.0.1, *", "10.0.0.0/8"):
        monkeypatch.setenv("SUPPORTBOT_CHAT__TRUSTED_PROXIES", value)
        with pytest.raises(SettingsError, match="SUPPORTBOT_CHAT__TRUSTED_PROXIES"):
            load_settings()
    monkeypatch.setenv("SUPPORTBOT_CHAT__TRUSTED_PROXIES", "127.0.0.1,10.1.2.3")
    assert load_settings().chat.trusted_proxies == "127.0.0.1,10.1.2.3"


def test_cli_reports_invalid_settings_without_traceback(monkeypatch):
    from typer.testing import CliRunner

    from bot.cli import app

    # Brackets in a value are printed as they are, not read as terminal markup.
    env = {"SUPPORTBOT_RETRIEVAL__MODE": "[bold]fast", "SUPPORTBOT_LOG_LEVEL": "WARNING"}
    for command in (["ask", "vat error"], ["eval"], ["feedback"], ["chat"], ["ingest"]):
        result = CliRunner().invoke(app, command, env=env)
        assert result.exit_code == 2, (command, result.output)
        assert isinstance(result.exception, SystemExit)
        assert "Invalid settings" in result.output
        assert "SUPPORTBOT_RETRIEVAL__MODE='[bold]fast'" in " ".join(result.output.split())
