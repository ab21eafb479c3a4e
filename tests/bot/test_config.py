"""Settings: defaults, conversions, and one clear error naming every bad value."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from config import ConfigError, Settings, load_settings, setting_names, settings_from_environment
from hosting import worker_count_problem
from hosting.storage.registry import BACKENDS, CosmosSettings, SqliteSettings, backend_named
from tests.support.backends import BACKENDS as CONTRACT_FACTORIES
from tests.support.processes import ROOT


def test_defaults_are_local_and_sqlite() -> None:
    settings = load_settings({})

    assert settings == Settings()
    assert (settings.host, settings.port, settings.storage) == ("127.0.0.1", 3978, "sqlite")  # documented defaults
    assert settings.store == SqliteSettings(Path(".state/bot.sqlite3"))
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

    assert load_settings({"SQLITE_PATH": str(path)}).store == SqliteSettings(path)
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
        ({"READY_CHECK_SECONDS": "often"}, "READY_CHECK_SECONDS='often' is not a number of seconds (0-300)"),
        ({"READY_CHECK_SECONDS": "-1"}, "READY_CHECK_SECONDS=-1 is out of range (0-300)"),
        ({"READY_CHECK_SECONDS": "nan"}, "READY_CHECK_SECONDS=nan is out of range (0-300)"),
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
            "READY_CHECK_SECONDS": "0",
        }
    )

    assert settings.to_bot_from_channel_openid_metadata_url.startswith("https://login.botframework.azure.us/")
    assert settings.to_channel_from_bot_login_url.startswith("http://127.0.0.1:8080/")
    assert (settings.max_body_bytes, settings.request_timeout_seconds) == (65536, 2.5)
    assert settings.ready_check_seconds == 0


def test_times_to_live_are_durations_or_off() -> None:
    settings = load_settings({"CONVERSATION_TTL": "12h", "USER_TTL": "400d"})

    assert settings.conversation_ttl == timedelta(hours=12)
    assert settings.user_ttl == timedelta(days=400)
    assert load_settings({}).conversation_ttl == timedelta(days=30)
    assert load_settings({}).user_ttl is None
    assert load_settings({"CONVERSATION_TTL": "off"}).conversation_ttl is None


def test_every_registered_backend_is_in_the_contract_suite() -> None:
    """Adding a backend: its declaration in hosting/storage/registry.py, and a factory in tests/support/backends.py
    so the contract suite covers it."""
    names = [backend.name for backend in BACKENDS]

    assert len(names) == len(set(names)), "two backends answer to one STORAGE value"
    assert set(names) <= set(CONTRACT_FACTORIES)
    assert all(backend_named(name) is backend for name, backend in zip(names, BACKENDS, strict=True))


@pytest.mark.parametrize(
    ("storage", "environ"),
    [
        ("sqlite", {}),
        ("memory", {}),
        ("blob", {"AZURE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true"}),
        ("table", {"AZURE_STORAGE_ACCOUNT_URL": "https://acct.table.core.windows.net"}),
        ("cosmos", {"COSMOS_ENDPOINT": "https://acct.documents.azure.com:443/"}),
    ],
)
def test_storage_chooses_the_backend_whose_group_becomes_settings_store(
    storage: str, environ: dict[str, str], tmp_path: Path
) -> None:
    settings = load_settings({"STORAGE": storage, "SQLITE_PATH": str(tmp_path / "bot.sqlite3"), **environ})

    assert type(settings.store) is backend_named(storage)
    assert settings.storage == storage


def test_a_backend_group_is_read_from_its_own_variables() -> None:
    settings = load_settings(
        {
            "STORAGE": "cosmos",
            "COSMOS_ENDPOINT": "https://acct.documents.azure.com:443/",
            "COSMOS_KEY": "a2V5",
            "COSMOS_CONTAINER": "state",
            "BLOB_CONTAINER": "ignored-here",
        }
    )

    assert settings.store == CosmosSettings(
        endpoint="https://acct.documents.azure.com:443/", key="a2V5", database="bot-state", container="state"
    )
    assert "a2V5" not in repr(settings)


def test_backend_problems_join_the_general_ones_in_one_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"STORAGE": "cosmos", "COSMOS_DATABASE": "a#b", "PORT": "http"})

    assert len(caught.value.problems) == 3
    assert [problem.split("=")[0].split()[0] for problem in caught.value.problems] == [
        "PORT",
        "STORAGE",
        "COSMOS_DATABASE",
    ]


def test_only_a_per_process_store_limits_the_worker_count() -> None:
    memory = load_settings({"STORAGE": "memory"})

    assert "STORAGE=memory cannot be shared by 2 worker processes" in (worker_count_problem(memory, 2) or "")
    assert worker_count_problem(memory, 1) is None
    assert worker_count_problem(load_settings({}), 8) is None


def test_the_example_env_file_names_every_setting() -> None:
    example = (ROOT / ".env.example").read_text()
    named = {line.split("=", 1)[0].lstrip("# ") for line in example.splitlines() if "=" in line}

    assert setting_names() <= named
