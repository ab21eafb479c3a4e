"""The engine's settings: ``HostSettings``, read from environment variables by ``read_host_settings``.

``read_host_settings`` is pure: it takes the variables as a mapping (or a ``Variables`` a caller already read its
own settings from) and either returns the settings or raises one ``ConfigError`` that lists every bad value by
name. The general settings are here; each storage backend's own variables (``SQLITE_PATH``, ``AZURE_STORAGE_*``,
``COSMOS_*``, ...) are declared with that backend in ``hosting/storage/registry.py``, and the group ``STORAGE``
chooses becomes ``HostSettings.store``. The app's ``config.py`` reads the environment (and ``.env``) and calls it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from .storage.registry import BACKENDS, SqliteSettings, StoreSettings, Variables, backend_named

APP_TYPES = ("MultiTenant", "SingleTenant", "UserAssignedMSI")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: The activities each conversation's delivery log remembers (hosting/deliveries.py), unless REDELIVERY_MEMORY says.
DEFAULT_REDELIVERY_MEMORY = 32

# The Bot Framework public cloud. Sovereign clouds (and tests) set these six by the names Bot Framework apps use
# in their appsettings; each one left unset keeps its public-cloud value.
PUBLIC_CLOUD = {
    "ToBotFromChannelTokenIssuer": "https://api.botframework.com",
    "ToBotFromChannelOpenIdMetadataUrl": "https://login.botframework.com/v1/.well-known/openidconfiguration",
    "ToBotFromEmulatorOpenIdMetadataUrl": "https://login.microsoftonline.com/common/v2.0/.well-known/openid-configuration",
    "ToChannelFromBotLoginUrl": "https://login.microsoftonline.com/botframework.com/oauth2/v2.0/token",
    "ToChannelFromBotOAuthScope": "https://api.botframework.com",
    # The user token service OAuthPrompt signs users in with (the SDK's AuthenticationConstants.OAUTH_URL).
    "OAuthUrl": "https://api.botframework.com",
}
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


class ConfigError(ValueError):
    """One or more settings are invalid. The message names each of them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings:\n" + "\n".join(f"  - {problem}" for problem in problems))


@dataclass(frozen=True, slots=True)
class HostSettings:
    """Everything the engine is configured with. ``config.Settings`` (the app's) extends it with the bot's own."""

    host: str = "127.0.0.1"
    port: int = 3978
    app_id: str = ""
    app_password: str = field(default="", repr=False)  # secrets stay out of logs and tracebacks
    app_type: str = "MultiTenant"
    app_tenant_id: str = ""
    #: The chosen storage backend's settings (hosting/storage/registry.py): its class says which backend it is.
    store: StoreSettings = field(default_factory=SqliteSettings)
    log_level: str = "INFO"
    web_concurrency: int = 2
    turn_retries: int = 3
    #: Activities each conversation remembers as applied, with what their turns sent (0: a redelivered activity
    #: is applied again); see hosting/deliveries.py.
    redelivery_memory: int = DEFAULT_REDELIVERY_MEMORY
    #: Tenants (lower-case ids) whose activities are served; empty: any (``hosting/channels.py``).
    allowed_tenants: frozenset[str] = frozenset()
    to_bot_from_channel_token_issuer: str = PUBLIC_CLOUD["ToBotFromChannelTokenIssuer"]
    to_bot_from_channel_openid_metadata_url: str = PUBLIC_CLOUD["ToBotFromChannelOpenIdMetadataUrl"]
    to_bot_from_emulator_openid_metadata_url: str = PUBLIC_CLOUD["ToBotFromEmulatorOpenIdMetadataUrl"]
    to_channel_from_bot_login_url: str = PUBLIC_CLOUD["ToChannelFromBotLoginUrl"]
    to_channel_from_bot_oauth_scope: str = PUBLIC_CLOUD["ToChannelFromBotOAuthScope"]
    oauth_url: str = PUBLIC_CLOUD["OAuthUrl"]
    max_body_bytes: int = 1024 * 1024
    request_timeout_seconds: float = 15.0
    #: /readyz checks the store (a write) at most this often per process; calls in between get the last result.
    ready_check_seconds: float = 5.0
    conversation_ttl: timedelta | None = timedelta(days=30)
    user_ttl: timedelta | None = None
    #: Application Insights' connection string; set, the app sends traces and metrics there (hosting/telemetry.py).
    applicationinsights_connection_string: str = field(default="", repr=False)

    @property
    def storage(self) -> str:
        """The ``STORAGE`` value: the name of the chosen backend."""
        return self.store.name

    @property
    def auth_enabled(self) -> bool:
        """Whether requests must carry a Bot Framework token (an app id is configured)."""
        return bool(self.app_id)

    @property
    def log_level_number(self) -> int:
        return logging.getLevelNamesMapping()[self.log_level]


#: Every STORAGE value, in the order the documentation lists them (backends are declared in storage/registry.py).
STORAGE_BACKENDS = tuple(backend.name for backend in BACKENDS)


def read_host_settings[S: HostSettings](
    environ: Mapping[str, str] | Variables, settings_class: type[S] = HostSettings, **extra: Any
) -> S:
    """``settings_class`` (``HostSettings`` or a subclass) from the variables, with ``extra`` for a subclass's own
    fields; ``ConfigError`` lists every invalid value, including problems a caller already reported on the same
    ``Variables`` while reading its own settings."""
    variables = environ if isinstance(environ, Variables) else Variables(environ)
    problems = variables.problems
    get = variables.get
    defaults = HostSettings()

    host = get("HOST", defaults.host)

    port = _whole_number(get, "PORT", defaults.port, 0, 65535, problems)  # 0: any free port

    app_id = get("MicrosoftAppId", "")
    app_password = get("MicrosoftAppPassword", "")
    app_tenant_id = get("MicrosoftAppTenantId", "")
    app_type = get("MicrosoftAppType", defaults.app_type)
    canonical_types = {name.lower(): name for name in APP_TYPES}
    if app_type.lower() in canonical_types:
        app_type = canonical_types[app_type.lower()]
    else:
        problems.append(f"MicrosoftAppType={app_type!r} is not one of {', '.join(APP_TYPES)}")
    if app_password and not app_id:
        problems.append("MicrosoftAppPassword is set but MicrosoftAppId is empty; set both, or neither for local use")
    if app_type in ("SingleTenant", "UserAssignedMSI") and app_id and not app_tenant_id:
        problems.append(f"MicrosoftAppTenantId is required when MicrosoftAppType={app_type}")

    storage = get("STORAGE", defaults.storage).lower()
    backend = backend_named(storage)
    store = defaults.store
    if backend is None:
        problems.append(f"STORAGE={storage!r} is not one of {', '.join(STORAGE_BACKENDS)}")
    else:
        store = backend.read(variables)  # its variables, each bad one added to problems

    web_concurrency = _whole_number(get, "WEB_CONCURRENCY", defaults.web_concurrency, 1, 64, problems)
    turn_retries = _whole_number(get, "TURN_RETRIES", defaults.turn_retries, 1, 10, problems)
    redelivery_memory = _whole_number(get, "REDELIVERY_MEMORY", defaults.redelivery_memory, 0, 256, problems)
    allowed_tenants = _tenants(get("ALLOWED_TENANTS", ""), problems)

    cloud = {name: get(name, default) for name, default in PUBLIC_CLOUD.items()}
    for name, value in cloud.items():
        if name == "ToChannelFromBotOAuthScope":
            continue
        problem = url_problem(value)
        if problem:
            problems.append(f"{name}={value!r} {problem}")
    max_body_bytes = _whole_number(get, "MAX_BODY_BYTES", defaults.max_body_bytes, 1024, 64 * 1024 * 1024, problems)
    request_timeout_seconds = _seconds(
        get, "REQUEST_TIMEOUT_SECONDS", defaults.request_timeout_seconds, 0.5, 300, problems
    )
    ready_check_seconds = _seconds(get, "READY_CHECK_SECONDS", defaults.ready_check_seconds, 0, 300, problems)

    conversation_ttl = _duration(get, "CONVERSATION_TTL", defaults.conversation_ttl, problems)
    user_ttl = _duration(get, "USER_TTL", defaults.user_ttl, problems)
    if user_ttl is not None and (conversation_ttl is None or user_ttl < conversation_ttl):
        problems.append(
            f"USER_TTL={get('USER_TTL', '')} is shorter than CONVERSATION_TTL={get('CONVERSATION_TTL', '30d')}: "
            "a user's record holds the list of their conversations that forget and export use, so it must live "
            "at least as long as they do; raise USER_TTL (or turn it off), or shorten CONVERSATION_TTL"
        )

    log_level = get("LOG_LEVEL", defaults.log_level).upper()
    if log_level not in LOG_LEVELS:
        problems.append(f"LOG_LEVEL={log_level!r} is not one of {', '.join(LOG_LEVELS)}")

    connection_string = get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip()
    problem = connection_string_problem(connection_string)
    if problem:
        problems.append(f"APPLICATIONINSIGHTS_CONNECTION_STRING {problem}")

    if problems:
        raise ConfigError(problems)
    return settings_class(
        host=host,
        port=port,
        app_id=app_id,
        app_password=app_password,
        app_type=app_type,
        app_tenant_id=app_tenant_id,
        store=store,
        log_level=log_level,
        web_concurrency=web_concurrency,
        turn_retries=turn_retries,
        redelivery_memory=redelivery_memory,
        allowed_tenants=allowed_tenants,
        to_bot_from_channel_token_issuer=cloud["ToBotFromChannelTokenIssuer"],
        to_bot_from_channel_openid_metadata_url=cloud["ToBotFromChannelOpenIdMetadataUrl"],
        to_bot_from_emulator_openid_metadata_url=cloud["ToBotFromEmulatorOpenIdMetadataUrl"],
        to_channel_from_bot_login_url=cloud["ToChannelFromBotLoginUrl"],
        to_channel_from_bot_oauth_scope=cloud["ToChannelFromBotOAuthScope"],
        oauth_url=cloud["OAuthUrl"],
        max_body_bytes=max_body_bytes,
        request_timeout_seconds=request_timeout_seconds,
        ready_check_seconds=ready_check_seconds,
        conversation_ttl=conversation_ttl,
        user_ttl=user_ttl,
        applicationinsights_connection_string=connection_string,
        **extra,
    )


def connection_string_problem(text: str) -> str:
    """What is wrong with an Application Insights connection string (empty: nothing, or none given). Its value
    is never quoted: it holds the resource's instrumentation key."""
    if not text:
        return ""
    parts = [part.strip() for part in text.split(";") if part.strip()]
    fields = {name.strip().lower(): value.strip() for name, _, value in (part.partition("=") for part in parts)}
    if any("=" not in part for part in parts) or not fields.get("instrumentationkey"):
        return (
            "is not a connection string: copy it from the Application Insights resource's Overview page "
            "(InstrumentationKey=...;IngestionEndpoint=https://...)"
        )
    for name in ("ingestionendpoint", "liveendpoint"):
        if name in fields and url_problem(fields[name]):
            return f"has an endpoint that {url_problem(fields[name])}"
    return ""


_TENANT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _tenants(text: str, problems: list[str]) -> frozenset[str]:
    """``ALLOWED_TENANTS``: tenant ids (GUIDs) separated by commas, in any case; empty for any tenant."""
    tenants = [part.strip().lower() for part in text.split(",") if part.strip()]
    wrong = [tenant for tenant in tenants if not _TENANT_ID.fullmatch(tenant)]
    if wrong:
        problems.append(
            f"ALLOWED_TENANTS has {', '.join(repr(tenant) for tenant in wrong)}, which is not a tenant id: list "
            "Microsoft Entra tenant ids (GUIDs such as 72f988bf-86f1-41af-91ab-2d7cd011db47) separated by commas"
        )
    return frozenset(tenants)


_DURATION = re.compile(r"(\d+)\s*([dhms])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def _duration(
    get: Callable[[str, str], str], name: str, default: timedelta | None, problems: list[str]
) -> timedelta | None:
    """A time to live such as ``30d``, ``12h``, ``90m`` or ``45s``; ``off`` for never."""
    text = get(name, "off" if default is None else f"{int(default.total_seconds())}s").lower()
    if text == "off":
        return None
    match = _DURATION.fullmatch(text)
    if match is None or int(match.group(1)) == 0:
        problems.append(f"{name}={text!r} is not a duration like 30d, 12h, 90m or 45s (or off)")
        return default
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a cloud endpoint: https, or http only on this machine (a local test server)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
        return None
    return "must be an https:// URL (http:// only for localhost)"


def worker_count_problem(settings: HostSettings, workers: int) -> str | None:
    """Why ``settings`` cannot be served by ``workers`` processes, or None."""
    if not settings.store.shared_by_processes and workers > 1:
        return (
            f"STORAGE={settings.storage} cannot be shared by {workers} worker processes (WEB_CONCURRENCY={workers}): "
            "each would keep its own copy of every user. Use STORAGE=sqlite, or WEB_CONCURRENCY=1"
        )
    return None


def _whole_number(
    get: Callable[[str, str], str], name: str, default: int, lowest: int, highest: int, problems: list[str]
) -> int:
    text = get(name, str(default))
    try:
        value = int(text)
    except ValueError:
        problems.append(f"{name}={text!r} is not a whole number ({lowest}-{highest})")
        return default
    if not lowest <= value <= highest:
        problems.append(f"{name}={value} is out of range ({lowest}-{highest})")
    return value


def _seconds(
    get: Callable[[str, str], str], name: str, default: float, lowest: float, highest: float, problems: list[str]
) -> float:
    text = get(name, f"{default:g}")
    try:
        value = float(text)
    except ValueError:
        problems.append(f"{name}={text!r} is not a number of seconds ({lowest:g}-{highest:g})")
        return default
    if not lowest <= value <= highest:  # also false for nan
        problems.append(f"{name}={text} is out of range ({lowest:g}-{highest:g})")
    return value
