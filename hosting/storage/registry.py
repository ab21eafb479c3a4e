"""Every storage backend, declared once: its ``STORAGE`` name, its settings, their checks, and how to open it.

A backend is one frozen ``StoreSettings`` subclass: its fields are the backend's settings (defaults as field
defaults, secrets as ``field(repr=False)``), ``read`` takes them from the environment's variables and names every
bad one, and ``open`` opens the store. ``BACKENDS`` at the bottom lists them; ``config.load_settings`` reads the
group the ``STORAGE`` variable names into ``Settings.store``, and ``hosting.storage.build_storage`` calls its ``open``.

This module is imported by ``config`` and must stay light: each ``open`` imports its backend's module (and with
it any SDK) only when called, so a bot on sqlite never imports the Azure SDKs.

Adding a backend: its module in ``hosting/storage/``, its class here and a line in ``BACKENDS``, its factory in
``tests/support/backends.py`` (the contract suite), its variables in ``.env.example``. tests/bot/test_config.py
checks the last two.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Self

if TYPE_CHECKING:
    from .base import StateStorage


class Variables:
    """The variables settings are read from: values trimmed, empty meaning "the default"; problems collected.

    ``config.load_settings`` turns the collected ``problems`` into one ``ConfigError`` with all the others.
    """

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.problems: list[str] = []

    def get(self, name: str, default: str = "") -> str:
        """The value of ``name`` without surrounding blanks, or ``default`` when it is unset or blank."""
        value = self._environ.get(name)
        return default if value is None or value.strip() == "" else value.strip()

    def problem(self, message: str) -> None:
        """Report a bad value; ``message`` names the variable (``NAME='value' is not ...``)."""
        self.problems.append(message)


@dataclass(frozen=True)
class StoreSettings(ABC):
    """One storage backend: its settings (the fields) and the two things a backend declares.

    ``name`` is the ``STORAGE`` value that chooses it. ``shared_by_processes`` is false for a store that lives in
    one process's memory (several workers would each keep their own). The classes are not slotted, so that
    ``cls.<field>`` is the field's default, which ``read`` falls back to.
    """

    name: ClassVar[str]
    shared_by_processes: ClassVar[bool] = True

    @classmethod
    @abstractmethod
    def read(cls, variables: Variables) -> Self:
        """This backend's settings from ``variables``; each bad value reported with ``variables.problem``.

        Read every variable of the group before judging any (``config.setting_names`` records what is read), and
        return settings even when there were problems (they are not used then).
        """

    @abstractmethod
    async def open(self) -> StateStorage:
        """Open the store these settings describe (import the backend's module here, not at the top)."""


@dataclass(frozen=True)
class SqliteSettings(StoreSettings):
    """``STORAGE=sqlite`` (the default): one SQLite file shared by every worker process on the machine."""

    name: ClassVar[str] = "sqlite"
    path: Path = Path(".state/bot.sqlite3")

    @classmethod
    def read(cls, variables: Variables) -> Self:
        path = Path(variables.get("SQLITE_PATH", str(cls.path))).expanduser()
        problem = sqlite_path_problem(path)
        if problem:
            variables.problem(problem)
        return cls(path=path)

    async def open(self) -> StateStorage:
        from .sqlite import SqliteStorage

        return await SqliteStorage.open(self.path)


def sqlite_path_problem(path: Path) -> str | None:
    """Why the database can't live at ``path``, or None. Looks only; creates nothing."""
    if path.exists():
        if path.is_dir():
            return f"SQLITE_PATH={path} is a directory, not a database file"
        if not os.access(path, os.R_OK | os.W_OK):
            return f"SQLITE_PATH={path} is not readable and writable by this user"
        return None
    ancestor = path.parent
    while not ancestor.exists():
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"SQLITE_PATH={path} cannot be created: {ancestor} is not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"SQLITE_PATH={path} cannot be created: {ancestor} is not writable"
    return None


@dataclass(frozen=True)
class MemorySettings(StoreSettings):
    """``STORAGE=memory``: in this process only, lost on restart. No settings."""

    name: ClassVar[str] = "memory"
    shared_by_processes: ClassVar[bool] = False

    @classmethod
    def read(cls, variables: Variables) -> Self:
        return cls()

    async def open(self) -> StateStorage:
        from .memory import MemoryStateStorage

        return MemoryStateStorage()


@dataclass(frozen=True)
class AzureStorageSettings(StoreSettings):
    """The Azure Storage account the ``blob`` and ``table`` backends share: a connection string, or an account URL
    to sign in with a managed identity (``DefaultAzureCredential``)."""

    connection_string: str = field(default="", repr=False)
    account_url: str = ""

    @classmethod
    def _read_account(cls, variables: Variables) -> tuple[str, str]:
        connection_string = variables.get("AZURE_STORAGE_CONNECTION_STRING")
        account_url = variables.get("AZURE_STORAGE_ACCOUNT_URL")
        if not connection_string and not account_url:
            variables.problem(
                f"STORAGE={cls.name} needs AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_URL "
                "to sign in with a managed identity"
            )
        elif account_url and not account_url.startswith(("https://", "http://")):
            variables.problem(f"AZURE_STORAGE_ACCOUNT_URL={account_url!r} must be an http(s) URL")
        return connection_string, account_url


@dataclass(frozen=True)
class BlobSettings(AzureStorageSettings):
    """``STORAGE=blob``: one JSON blob per key in one container of an Azure Storage account."""

    name: ClassVar[str] = "blob"
    container: str = "bot-state"

    @classmethod
    def read(cls, variables: Variables) -> Self:
        connection_string, account_url = cls._read_account(variables)
        container = variables.get("BLOB_CONTAINER", cls.container)
        if not re.fullmatch(r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", container):
            variables.problem(
                f"BLOB_CONTAINER={container!r} is not a valid container name "
                "(3-63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit)"
            )
        return cls(connection_string=connection_string, account_url=account_url, container=container)

    async def open(self) -> StateStorage:
        from .blob import BlobStorage

        return await BlobStorage.open(self)


@dataclass(frozen=True)
class TableSettings(AzureStorageSettings):
    """``STORAGE=table``: one entity per key in one table of an Azure Storage account."""

    name: ClassVar[str] = "table"
    table: str = "BotState"

    @classmethod
    def read(cls, variables: Variables) -> Self:
        connection_string, account_url = cls._read_account(variables)
        table = variables.get("TABLE_NAME", cls.table)
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{2,62}", table):
            variables.problem(
                f"TABLE_NAME={table!r} is not a valid table name (3-63 letters or digits, first a letter)"
            )
        return cls(connection_string=connection_string, account_url=account_url, table=table)

    async def open(self) -> StateStorage:
        from .table import TableStorage

        return await TableStorage.open(self)


@dataclass(frozen=True)
class CosmosSettings(StoreSettings):
    """``STORAGE=cosmos``: one item per key in an Azure Cosmos DB for NoSQL container partitioned on ``/id``.

    Without ``key`` the store signs in with ``DefaultAzureCredential`` (a managed identity in Azure).
    """

    name: ClassVar[str] = "cosmos"
    endpoint: str = ""
    key: str = field(default="", repr=False)
    database: str = "bot-state"
    container: str = "bot-state"

    @classmethod
    def read(cls, variables: Variables) -> Self:
        endpoint = variables.get("COSMOS_ENDPOINT")
        key = variables.get("COSMOS_KEY")
        database = variables.get("COSMOS_DATABASE", cls.database)
        container = variables.get("COSMOS_CONTAINER", cls.container)
        if not endpoint:
            variables.problem("STORAGE=cosmos needs COSMOS_ENDPOINT (and COSMOS_KEY, or a managed identity)")
        elif not endpoint.startswith("https://"):
            variables.problem(f"COSMOS_ENDPOINT={endpoint!r} must be an https:// URL")
        for name, value in (("COSMOS_DATABASE", database), ("COSMOS_CONTAINER", container)):
            if not 1 <= len(value) <= 255 or any(char in value for char in "/\\?#"):
                variables.problem(f"{name}={value!r} must be 1-255 characters without / \\ ? #")
        return cls(endpoint=endpoint, key=key, database=database, container=container)

    async def open(self) -> StateStorage:
        from .cosmos import CosmosStorage

        return await CosmosStorage.open(self)


#: Every backend, in the order the documentation lists them. A new backend adds its class above and a line here.
BACKENDS: tuple[type[StoreSettings], ...] = (
    SqliteSettings,
    MemorySettings,
    BlobSettings,
    TableSettings,
    CosmosSettings,
)


def backend_named(name: str) -> type[StoreSettings] | None:
    """The backend whose ``STORAGE`` value is ``name``, or None."""
    return next((backend for backend in BACKENDS if backend.name == name), None)
