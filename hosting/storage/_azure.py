"""What the Azure backends (``hosting.storage.blob``, ``hosting.storage.table``, ``hosting.storage.cosmos``) share.

``AzureStorage`` is their base class, one shape for the three:

* Opening: ``AzureStorage.open(settings, **client_options)`` makes the SDK client (``_connect``, the backend's),
  makes sure the container or table exists (``_prepare``: probe it, create it when missing), and closes what it
  made when that fails. The store owns the client and the credential and ``close()`` closes both.
* Errors: every ``AzureError`` (HTTP errors, connection failures, timeouts, credential failures) becomes a
  ``StorageError`` naming the backend, the action, the key and the container or table, with the SDK's exception
  chained (``_fail``); each backend decides which answers mean "absent" or "conflict".
* Healing: a container or table deleted while the bot runs (or an emulator restarted empty) is re-created by the
  call that finds it missing (``_is_missing`` says which answers mean that), at most once per ``HEAL_INTERVAL_S``,
  and that call is tried once more.
* ``describe()``: ``<where> at <endpoint>``, without what must not be logged (a SAS token, user info, a key).

Also here: ``open_client`` / ``open_credential`` / ``close_credential`` (the managed-identity or developer
credential: ``AZURE_STORAGE_ACCOUNT_URL``, or ``COSMOS_ENDPOINT`` without a key), and the timeouts:
``turn_friendly_options`` gives every backend's client the same bounded timeouts; ``open_client`` and
``direct_transport`` put ``connection_timeout`` / ``read_timeout`` on the transport itself, because the Storage
SDKs apply those client options only to a transport they build (next to ours they are silently dropped and 300 s
applies); ``OPERATION_TIMEOUT_S`` caps one whole operation.

The SDK imports stay inside the Azure backends' modules and this one, which are imported only when an Azure
backend is opened (see ``hosting/storage/registry.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import abstractmethod
from typing import TYPE_CHECKING, Any, Protocol, Self
from urllib.parse import urlsplit, urlunsplit

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError
from azure.core.pipeline.transport import AioHttpTransport

from .base import StateStorage, StorageError

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

logger = logging.getLogger(__name__)


#: How long ``close`` lets TLS connections finish closing (aiohttp's advice for sessions with TLS).
TLS_CLOSE_SECONDS = 0.25


class AzureAccount(Protocol):
    """Where an Azure Storage account is (``registry.AzureStorageSettings`` is one): a connection string, or an
    account URL to sign in to with ``DefaultAzureCredential``."""

    @property
    def connection_string(self) -> str: ...

    @property
    def account_url(self) -> str: ...


#: Seconds to wait for a TCP connection, and for each read from it, on every Azure backend.
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 8.0
#: Seconds one storage operation may take in all (the SDK's retries and a heal included): a turn makes one read
#: and at most a few writes, so a paused or unreachable store fails it within tens of seconds, never minutes.
OPERATION_TIMEOUT_S = 10.0
#: A deleted container or table is re-created at most once per this many seconds per store.
HEAL_INTERVAL_S = 10.0

#: Name of the field that keeps the original key next to the record (as botbuilder-azure's stores do).
REAL_KEY = "realId"


def status_of(err: AzureError) -> int | None:
    """The HTTP status of a service answer, or None when there was no answer (connection failed)."""
    return err.status_code if isinstance(err, HttpResponseError) else None


def error_code_of(err: AzureError) -> str | None:
    """The service's error code (``BlobNotFound``, ``TableNotFound``, ...) when it sent one."""
    if not isinstance(err, HttpResponseError):
        return None
    response = err.response
    if response is not None:
        header = response.headers.get("x-ms-error-code")
        if header:
            return str(header)
    code = getattr(err, "error_code", None)
    if code is None:
        return None
    return str(getattr(code, "value", code))


def summarize(err: AzureError) -> str:
    """A one-line account of what went wrong, without the request dump the SDK's messages carry."""
    if isinstance(err, HttpResponseError) and err.status_code is not None:
        code = error_code_of(err)
        detail = f" {code}" if code else ""
        sub_status = getattr(err, "sub_status", None)  # Cosmos DB's, e.g. 1003: the container does not exist
        if sub_status:
            detail += f" sub-status {sub_status}"
        return f"HTTP {err.status_code}{detail} ({err.reason or 'no reason given'})"
    first_line = (err.message or type(err).__name__).strip().splitlines()
    return f"{type(err).__name__}: {first_line[0] if first_line else ''}"


def public_url(url: str) -> str:
    """``url`` without its query (a SAS token lives there) or user info: safe to log."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, public_host(url), parts.path, "", ""))


def public_host(url: str) -> str:
    """The host (and port) of ``url`` without user info, or ``url`` itself when it has none: safe to log."""
    return urlsplit(url).netloc.rpartition("@")[2] or url


def turn_friendly_options(**retry_options: Any) -> dict[str, Any]:
    """Client options for a store that a user's turn waits on: bounded timeouts and the backend's few, quick retries.

    The SDKs' defaults allow 300 s (Storage) or 65 s (Cosmos) per request and retry after 15 s, 24 s and 42 s: a
    dead account would hold a turn for minutes. ``retry_options`` are the backend's own retry settings (the
    Storage and Cosmos SDKs spell them differently). ``open_client`` moves the timeouts to the transport it builds;
    the Cosmos SDK sends them with each request itself. ``operation_timeout`` on each store caps one whole
    operation, retries included.
    """
    return {"connection_timeout": CONNECT_TIMEOUT_S, "read_timeout": READ_TIMEOUT_S, **retry_options}


def direct_transport(
    *, connection_timeout: float = CONNECT_TIMEOUT_S, read_timeout: float = READ_TIMEOUT_S
) -> AioHttpTransport:
    """An HTTP transport with our timeouts that ignores proxy variables and ``~/.netrc`` in the environment.

    When it honours the environment, aiohttp re-reads ``~/.netrc`` in a worker thread before *every* request: a
    third of the CPU of a whole turn on blob storage (measured: 13.2 -> 8.9 ms per turn). State stores are
    reached directly (public or private endpoint), so the environment has nothing to add. Each client owns
    (and closes) its own transport.
    """
    return AioHttpTransport(use_env_settings=False, connection_timeout=connection_timeout, read_timeout=read_timeout)


async def open_client[C](
    settings: AzureAccount, backend: str, client_class: type[C], resource: str, client_options: dict[str, Any]
) -> tuple[C, AsyncTokenCredential | None]:
    """A blob ``ContainerClient`` or ``TableClient`` for ``resource``, and the credential it owns (if any).

    ``AZURE_STORAGE_CONNECTION_STRING`` wins; otherwise ``AZURE_STORAGE_ACCOUNT_URL`` with
    ``DefaultAzureCredential``. Unusable settings raise ``StorageError`` naming the setting, never its value.
    ``connection_timeout`` / ``read_timeout`` in ``client_options`` are applied to the transport built here.
    """
    client_options = dict(client_options)
    if "transport" not in client_options:
        client_options["transport"] = direct_transport(
            connection_timeout=client_options.pop("connection_timeout", CONNECT_TIMEOUT_S),
            read_timeout=client_options.pop("read_timeout", READ_TIMEOUT_S),
        )
    if settings.connection_string:
        try:
            client = client_class.from_connection_string(  # type: ignore[attr-defined]
                settings.connection_string, resource, **client_options
            )
        except ValueError as err:  # the SDK's message quotes no secret, and neither does ours
            raise StorageError(f"AZURE_STORAGE_CONNECTION_STRING is not usable for {backend} storage: {err}") from err
        return client, None
    if settings.account_url:
        credential = open_credential()
        try:
            client = client_class(settings.account_url, resource, credential=credential, **client_options)
        except ValueError as err:
            await close_credential(credential)
            raise StorageError(f"AZURE_STORAGE_ACCOUNT_URL is not usable for {backend} storage: {err}") from err
        return client, credential
    raise StorageError(f"STORAGE={backend} needs AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_URL")


def open_credential() -> AsyncTokenCredential:
    """``DefaultAzureCredential``: managed identity in Azure, environment or developer sign-in elsewhere."""
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential()


async def close_credential(credential: AsyncTokenCredential | None) -> None:
    """Close a credential this package created; failures are logged, not raised (we are shutting down)."""
    if credential is None:
        return
    try:
        await credential.close()
    except (AzureError, OSError) as err:  # pragma: no cover - depends on the credential chain
        logger.warning("closing the Azure credential failed: %s", err)


class AzureStorage[Target](StateStorage):
    """Base of the Azure backends: one SDK client on one container or table (``Target`` says where it is).

    A backend provides ``_connect`` (the client, from its settings), ``_create`` (make the container or table),
    ``_is_missing`` (which SDK errors mean it is gone), ``_probe`` (does it answer) or its own ``_prepare``, and
    the storage primitives, in which it turns SDK errors into ours with ``_fail``.
    """

    operation_timeout = OPERATION_TIMEOUT_S

    def __init__(
        self,
        client: Any,
        *,
        credential: AsyncTokenCredential | None,
        where: str,
        endpoint: str,
        tls: bool | None = None,
    ) -> None:
        """Wrap a ready ``client`` on the container or table ``where`` names (``"table 'x' in storage account
        'y'"``) at ``endpoint`` (safe to log); the store owns ``client`` and ``credential`` and closes them. ``tls``:
        whether the client talks TLS (None: ``endpoint`` says, by its scheme)."""
        self._client = client
        self._tls = endpoint.startswith("https:") if tls is None else tls
        self._credential = credential
        self._where = where
        self._endpoint = endpoint
        self._heal_lock = asyncio.Lock()
        self._last_heal: float | None = None
        self._last_heal_succeeded = False

    @classmethod
    async def open(cls, settings: Target, **client_options: Any) -> Self:
        """Connect to the container or table ``settings`` name, creating it if missing, and check that it answers.

        ``client_options`` go to the SDK client over the backend's defaults (``turn_friendly_options``). Raises
        ``StorageError`` when the settings are unusable or the container or table cannot be reached or created.
        """
        storage = await cls._connect(settings, client_options)
        try:
            await storage._prepare()
        except BaseException:
            try:
                await storage.close()
            except (AzureError, OSError):  # logged, not raised: it must not hide why the open failed
                logger.warning("%s: closing the client after a failed open also failed", cls.name, exc_info=True)
            raise
        return storage

    def describe(self) -> str:
        return f"{self._where} at {self._endpoint}"

    # -- shared machinery --------------------------------------------------------------------------------------

    def _fail(self, action: str, key: str, err: AzureError) -> StorageError:
        """The ``StorageError`` (to raise, chained to ``err``) for ``action`` on ``key`` that failed with ``err``."""
        gone = ": it does not exist" if self._is_missing(err) else ""
        return StorageError(f"{self.name} {action} of {key!r} failed on {self._where}: {summarize(err)}{gone}")

    async def _prepare(self) -> None:
        """Check that the container or table answers; create it when the service says it is missing (another
        instance creating it at the same moment is success too). Anything else is a ``StorageError``."""
        try:
            await self._probe()
            return
        except AzureError as err:
            if not self._is_missing(err):
                raise StorageError(f"cannot open {self.describe()}: {summarize(err)}") from err
        try:
            await self._create()
            logger.info("created %s", self.describe())
        except ResourceExistsError:
            pass  # another instance created it in the meantime
        except AzureError as err:
            raise StorageError(f"cannot create {self.describe()}: {summarize(err)}") from err

    async def _heal(self, err: StorageError) -> bool:
        """Re-create the container or table when ``err`` says it is missing; at most once per ``HEAL_INTERVAL_S``,
        and concurrent failures wait for the one creation in progress."""
        cause = err.__cause__
        if not (isinstance(cause, AzureError) and self._is_missing(cause)):
            return False
        async with self._heal_lock:
            now = time.monotonic()
            if self._last_heal is not None and now - self._last_heal < HEAL_INTERVAL_S:
                return self._last_heal_succeeded  # re-created a moment ago (or failing): do not hammer the service
            self._last_heal = now
            self._last_heal_succeeded = False
            try:
                await self._create()
            except ResourceExistsError:
                pass  # another instance re-created it first
            except AzureError as create_err:
                logger.warning("%s is missing and could not be re-created: %s", self._where, summarize(create_err))
                return False
            self._last_heal_succeeded = True
            logger.warning("%s was missing (deleted, or the service restarted empty): re-created it", self._where)
            return True

    async def _close(self) -> None:
        try:
            await self._client.close()
        finally:
            await close_credential(self._credential)
            # The SDK's aiohttp session is closed, but its connections finish closing on later turns of the event
            # loop; a TLS connection needs its shutdown exchanged first. Give them that time (aiohttp's documented
            # graceful shutdown): a caller that stops the loop right after (a test, a worker) would otherwise leave
            # sockets that the garbage collector reports as unclosed transports.
            await asyncio.sleep(TLS_CLOSE_SECONDS if self._tls else 0)

    # -- what an Azure backend provides ------------------------------------------------------------------------

    @classmethod
    @abstractmethod
    async def _connect(cls, settings: Target, client_options: dict[str, Any]) -> Self:
        """A store with a new client for ``settings`` (``client_options`` over the backend's defaults); no request
        is sent yet. ``StorageError`` for unusable settings."""
        raise NotImplementedError

    async def _probe(self) -> object:
        """For the default ``_prepare``: one cheap request that succeeds when the container or table exists and
        answers, and raises the SDK's error otherwise."""
        raise NotImplementedError

    @abstractmethod
    async def _create(self) -> object:
        """Create the container or table (``ResourceExistsError`` or success when it already exists)."""
        raise NotImplementedError

    @abstractmethod
    def _is_missing(self, err: AzureError) -> bool:
        """Whether ``err`` says the container or table itself does not exist (not just a record)."""
        raise NotImplementedError
