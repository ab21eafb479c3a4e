"""The engine: everything between an HTTP request and a bot's turn, and the stores its state lives in.

A bot built on it (``bots/``, ``dialogs/``, ``data_models/``) uses only these names; everything else in this
package is the engine's own business, explained in its modules' docstrings: where one turn goes and its outcomes
(``adapter``, ``pipeline``), the storage backends (``storage``), and what it fixes in botbuilder 4.17.1
(``adapter``, ``auth``, ``dialog_stack``). README.md's "How the code is laid out" has the map.
"""

from .adapter import StateBotAdapter
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
    "PrivateConversationState",
    "StateBotAdapter",
    "StateStorage",
    "StorageError",
    "UserState",
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
