"""Settings: defaults, conversions, and one clear error naming every bad value."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from config import STORAGE_CHECKS, ConfigError, Settings, load_settings, setting_names, settings_from_environment
from storage import OPENERS
from tests.backends import BACKENDS
from tests.processes import ROOT


def test_defaults_are_local_and_sqlite() -> None:
    settings = load_settings({})

    assert settings == Settings()
    assert (settings.host, settings.port, settings.storage) == ("127.0.0.1", 3978, "sqlite")  # documented defaults
    assert settings.sqlite_path == Path(".state/bot.sqlite3")
    assert not settings.auth_enabled


def test_values_are_read_trimmed_and_converted(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "HOST": " 0.0.0.0 ",
            "PORT": "8080",
            "MicrosoftAppId": "app",
            "MicrosoftAppPassword": "secret",
            "MicrosoftAppType": "singletenant",
            "MicrosoftAppTenantId": "tenant",
            "STORAGE": "Memory",
            "LOG_LEVEL": "debug",
        }
    )

    assert settings.host == "0.0.0.0"
    assert settings.port == 8080
    assert settings.app_type == "SingleTenant"
    assert settings.storage == "memory"
    assert settings.log_level == "DEBUG"
    assert settings.auth_enabled


def test_empty_values_mean_the_default() -> None:
    assert load_settings({"PORT": "", "STORAGE": "  ", "LOG_LEVEL": ""}) == Settings()


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"PORT": "70000"}, "PORT=70000"),
        ({"CONVERSATION_TTL": "soon"}, "CONVERSATION_TTL='soon'"),
        ({"USER_TTL": "0d"}, "USER_TTL='0d'"),
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY=0"),
        ({"TURN_RETRIES": "many"}, "TURN_RETRIES='many'"),
        ({"PORT": "-1"}, "PORT=-1"),
        ({"PORT": "eighty"}, "PORT='eighty'"),
        ({"STORAGE": "redis"}, "STORAGE='redis'"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL='LOUD'"),
        ({"MicrosoftAppType": "Personal"}, "MicrosoftAppType='Personal'"),
        ({"MicrosoftAppPassword": "p"}, "MicrosoftAppPassword is set but MicrosoftAppId is empty"),
        ({"MicrosoftAppId": "a", "MicrosoftAppType": "SingleTenant"}, "MicrosoftAppTenantId is required"),
        ({"STORAGE": "blob"}, "AZURE_STORAGE_CONNECTION_STRING"),
        ({"STORAGE": "table", "AZURE_STORAGE_ACCOUNT_URL": "ftp://x"}, "AZURE_STORAGE_ACCOUNT_URL='ftp://x'"),
        ({"STORAGE": "blob", "AZURE_STORAGE_CONNECTION_STRING": "x", "BLOB_CONTAINER": "Bad_Name"}, "BLOB_CONTAINER"),
        ({"STORAGE": "table", "AZURE_STORAGE_CONNECTION_STRING": "x", "TABLE_NAME": "bot-state"}, "TABLE_NAME"),
        ({"STORAGE": "cosmos"}, "COSMOS_ENDPOINT"),
        ({"STORAGE": "cosmos", "COSMOS_ENDPOINT": "http://x"}, "COSMOS_ENDPOINT='http://x'"),
        ({"STORAGE": "cosmos", "COSMOS_ENDPOINT": "https://x", "COSMOS_CONTAINER": "a/b"}, "COSMOS_CONTAINER"),
    ],
)
def test_each_bad_value_is_named(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)

    assert named in str(caught.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"PORT": "0x50", "STORAGE": "nope", "LOG_LEVEL": "chatty"})

    assert len(caught.value.problems) == 3
    message = str(caught.value)
    assert "PORT" in message
    assert "STORAGE" in message
    assert "LOG_LEVEL" in message


def test_an_sqlite_path_under_a_file_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")

    with pytest.raises(ConfigError, match=r"SQLITE_PATH=.*not a directory"):
        load_settings({"SQLITE_PATH": str(blocker / "deeper" / "bot.sqlite3")})


def test_an_sqlite_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"SQLITE_PATH=.*is a directory"):
        load_settings({"SQLITE_PATH": str(tmp_path)})


def test_the_sqlite_path_is_only_checked_when_sqlite_is_used(tmp_path: Path) -> None:
    assert load_settings({"STORAGE": "memory", "SQLITE_PATH": str(tmp_path)}).storage == "memory"


def test_a_missing_sqlite_folder_is_fine_and_not_created_by_loading(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "bot.sqlite3"

    assert load_settings({"SQLITE_PATH": str(path)}).sqlite_path == path
    assert not (tmp_path / "a").exists()


def test_secrets_never_appear_in_the_repr() -> None:
    settings = load_settings(
        {
            "MicrosoftAppId": "app",
            "MicrosoftAppPassword": "hunter2",
            "STORAGE": "blob",
            "AZURE_STORAGE_CONNECTION_STRING": "AccountKey=sekrit",
        }
    )

    assert "hunter2" not in repr(settings)
    assert "sekrit" not in repr(settings)


def test_the_environment_wins_over_the_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=4000\nLOG_LEVEL=DEBUG\n")
    monkeypatch.setenv("PORT", "5000")
    monkeypatch.delenv("LOG_LEVEL", raising=False)

    settings = settings_from_environment(env_file)

    assert settings.port == 5000
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"MAX_BODY_BYTES": "lots"}, "MAX_BODY_BYTES"),
        ({"MAX_BODY_BYTES": "10"}, "MAX_BODY_BYTES"),
        ({"REQUEST_TIMEOUT_SECONDS": "soon"}, "REQUEST_TIMEOUT_SECONDS"),
        ({"REQUEST_TIMEOUT_SECONDS": "0"}, "REQUEST_TIMEOUT_SECONDS"),
        ({"ToBotFromChannelOpenIdMetadataUrl": "http://login.example.com/openid"}, "ToBotFromChannelOpenIdMetadataUrl"),
        ({"ToChannelFromBotLoginUrl": "ftp://login.example.com/"}, "ToChannelFromBotLoginUrl"),
        ({"ToBotFromEmulatorOpenIdMetadataUrl": "not a url"}, "ToBotFromEmulatorOpenIdMetadataUrl"),
    ],
)
def test_bad_request_and_cloud_settings_are_named(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"STORAGE": "memory", **environ})

    assert named in str(raised.value)


def test_cloud_settings_accept_https_and_local_http() -> None:
    settings = load_settings(
        {
            "STORAGE": "memory",
            "ToBotFromChannelOpenIdMetadataUrl": "https://login.botframework.azure.us/v1/.well-known/openidconfiguration",
            "ToChannelFromBotLoginUrl": "http://127.0.0.1:8080/botframework.com/oauth2/v2.0/token",
            "MAX_BODY_BYTES": "65536",
            "REQUEST_TIMEOUT_SECONDS": "2.5",
        }
    )

    assert settings.to_bot_from_channel_openid_metadata_url.startswith("https://login.botframework.azure.us/")
    assert settings.to_channel_from_bot_login_url.startswith("http://127.0.0.1:8080/")
    assert (settings.max_body_bytes, settings.request_timeout_seconds) == (65536, 2.5)


def test_times_to_live_are_durations_or_off() -> None:
    settings = load_settings({"CONVERSATION_TTL": "12h", "USER_TTL": "400d"})

    assert settings.conversation_ttl == timedelta(hours=12)
    assert settings.user_ttl == timedelta(days=400)
    assert load_settings({}).conversation_ttl == timedelta(days=30)
    assert load_settings({}).user_ttl is None
    assert load_settings({"CONVERSATION_TTL": "off"}).conversation_ttl is None


def test_every_storage_backend_is_checked_opened_and_in_the_contract_suite() -> None:
    """Adding a backend: an entry in config.STORAGE_CHECKS, storage.OPENERS and tests/backends.BACKENDS."""
    assert set(STORAGE_CHECKS) == set(OPENERS)
    assert set(STORAGE_CHECKS) <= set(BACKENDS)


def test_the_example_env_file_names_every_setting() -> None:
    example = (ROOT / ".env.example").read_text()
    named = {line.split("=", 1)[0].lstrip("# ") for line in example.splitlines() if "=" in line}

    assert setting_names() <= named
