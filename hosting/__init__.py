"""The engine: everything between an HTTP request and a bot's turn, and the stores its state lives in.

A bot built on it (``bots/``, ``dialogs/``, ``data_models/``, ``config.py``, ``app.py``) uses only these names;
everything else in this package is the engine's own business, explained in hosting/README.md (where one turn goes
and its outcomes, several workers, security, the storage backends and their failure modes, and what it fixes in
botbuilder 4.17.1), which also lists these names with a line each.
"""

from .adapter import OutsideTurnError, ProactiveTurnError, StateBotAdapter
from .auth import UserTokenError
from .dialog_stack import unresumable
from .server import MESSAGES_PATH, RUNTIME, BotFactory, BotRuntime, refuse_to_start, run, web_app
from .serving import gunicorn_keepalive
from .settings import (
    STORAGE_BACKENDS,
    ConfigError,
    HostSettings,
    read_host_settings,
    worker_count_problem,
)
from .states import ConversationState, PrivateConversationState, UserState, delete_with_turn, hold
from .storage import (
    CorruptRecordError,
    ETagConflictError,
    StateStorage,
    StorageError,
    damaged_key,
)
from .storage.codec import plain_json
from .storage.registry import Variables
from .telemetry import Telemetry

__all__ = [
    "MESSAGES_PATH",
    "RUNTIME",
    "STORAGE_BACKENDS",
    "BotFactory",
    "BotRuntime",
    "ConfigError",
    "ConversationState",
    "CorruptRecordError",
    "ETagConflictError",
    "HostSettings",
    "OutsideTurnError",
    "PrivateConversationState",
    "ProactiveTurnError",
    "StateBotAdapter",
    "StateStorage",
    "StorageError",
    "Telemetry",
    "UserState",
    "UserTokenError",
    "Variables",
    "damaged_key",
    "delete_with_turn",
    "gunicorn_keepalive",
    "hold",
    "plain_json",
    "read_host_settings",
    "refuse_to_start",
    "run",
    "unresumable",
    "web_app",
    "worker_count_problem",
]
