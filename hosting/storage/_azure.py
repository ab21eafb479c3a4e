"""What the Azure backends (``hosting.storage.blob``, ``hosting.storage.table``, ``hosting.storage.cosmos``) share.

* ``AzureErrors``: turns ``azure.core`` exceptions into ours. Every ``AzureError`` (HTTP errors, connection
  failures, timeouts, credential failures) becomes a ``StorageError`` naming the backend, the action and the
  key, with the SDK's exception chained; the backends decide which status codes mean "absent" or "conflict".
* ``open_credential`` / ``close_credential`` / ``close_quietly``: the managed-identity / developer credential
  (``AZURE_STORAGE_ACCOUNT_URL``, or ``COSMOS_ENDPOINT`` without a key), and closing what an open that failed
  made.
* Timeouts: ``turn_friendly_options`` gives every backend's client the same bounded timeouts; ``open_client`` and
  ``direct_transport`` put ``connection_timeout`` / ``read_timeout`` on the transport itself, because the
  Storage SDKs apply those client options only to a transport they build (next to ours they are silently
  dropped and 300 s applies); ``OPERATION_TIMEOUT_S`` caps one whole operation.
* ``public_url`` / ``public_host``: an endpoint without what must not be logged (a SAS token, user info).
* ``Healer``: re-creates a deleted container or table on the next call that fails because of it, at most once
  per ``HEAL_INTERVAL_S``.

The SDK imports stay inside the Azure backends' modules and this one, which are imported only when an Azure
backend is opened (see ``hosting/storage/registry.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError
from azure.core.pipeline.transport import AioHttpTransport

from .base import StorageError

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

logger = logging.getLogger(__name__)


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
        return f"HTTP {err.status_code}{detail} ({err.reason or 'no reason given'})"
    first_line = (err.message or type(err).__name__).strip().splitlines()
    return f"{type(err).__name__}: {first_line[0] if first_line else ''}"


class AzureErrors:
    """Builds our errors for one backend instance, e.g. ``AzureErrors("blob", "container 'x'")``."""

    def __init__(self, backend: str, where: str) -> None:
        self.backend = backend
        self.where = where

    def error(self, action: str, key: str | None, err: AzureError) -> StorageError:
        """The StorageError (to raise) for ``action`` on ``key`` that failed with ``err``."""
        target = f" of {key!r}" if key is not None else ""
        return StorageError(f"{self.backend} {action}{target} failed on {self.where}: {summarize(err)}")


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


async def ensure_exists(
    probe: Callable[[], Awaitable[object]],
    create: Callable[[], Awaitable[object]],
    missing_code: str,
    where: str,
) -> None:
    """Check that a container or table answers; create it when the service says ``missing_code``.

    Another instance may create it at the same moment: that is success too. Anything else is a ``StorageError``.
    """
    try:
        await probe()
        return
    except AzureError as err:
        if not (status_of(err) == 404 and error_code_of(err) == missing_code):
            raise StorageError(f"cannot open {where}: {summarize(err)}") from err
    try:
        await create()
        logger.info("created %s", where)
    except ResourceExistsError:
        pass  # another instance created it in the meantime
    except AzureError as err:
        raise StorageError(f"cannot create {where}: {summarize(err)}") from err


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


class Healer:
    """Re-creates a container or table that was deleted (or an emulator restarted empty) while the bot runs.

    ``heal(err)`` looks at the SDK error chained to a ``StorageError``: when the service said ``missing_code``
    (404 ``ContainerNotFound`` / ``TableNotFound``) it calls ``create`` (an existing one is fine: another
    instance was quicker) and answers True, so the failed operation is tried once more. Creation is attempted at
    most once per ``interval`` seconds; concurrent failures wait for the one creation in progress.
    """

    def __init__(
        self,
        create: Callable[[], Awaitable[object]],
        missing_code: str,
        where: str,
        interval: float = HEAL_INTERVAL_S,
        is_missing: Callable[[BaseException], bool] | None = None,
    ) -> None:
        self._create = create
        self._missing_code = missing_code
        self._where = where
        self._interval = interval
        self._is_missing = is_missing or self._has_missing_code
        self._lock = asyncio.Lock()
        self._last_attempt: float | None = None
        self._last_succeeded = False

    def _has_missing_code(self, cause: BaseException) -> bool:
        return isinstance(cause, AzureError) and status_of(cause) == 404 and error_code_of(cause) == self._missing_code

    async def heal(self, err: StorageError) -> bool:
        cause = err.__cause__
        if cause is None or not self._is_missing(cause):
            return False
        async with self._lock:
            now = time.monotonic()
            if self._last_attempt is not None and now - self._last_attempt < self._interval:
                return self._last_succeeded  # re-created a moment ago (or failing): do not hammer the service
            self._last_attempt = now
            self._last_succeeded = False
            try:
                await self._create()
            except ResourceExistsError:
                pass  # another instance re-created it first
            except AzureError as create_err:
                logger.warning("%s is missing and could not be re-created: %s", self._where, summarize(create_err))
                return False
            self._last_succeeded = True
            logger.warning("%s was missing (deleted, or the service restarted empty): re-created it", self._where)
            return True


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


async def close_quietly(what: str, client: Any, credential: AsyncTokenCredential | None) -> None:
    """Close a client (and its credential) that an open which failed made; a close failure must not hide why the
    open failed, so it is logged, not raised. ``what`` names the backend in the log line."""
    try:
        await client.close()
    except (AzureError, OSError):
        logger.warning("%s: closing the client after a failed open also failed", what, exc_info=True)
    await close_credential(credential)
