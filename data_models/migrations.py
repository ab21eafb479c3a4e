"""Explicit upgrades of stored records from older schema versions, one function per step.

A record carries ``schema_version`` (missing means 0: the first version of this bot, which stored only the
user's ``name``). Reading a record runs every step from its version up to the model's ``SCHEMA_VERSION``; each
step is a pure function from one version's dict to the next one's, tested on its own. A record *newer* than the
code is never passed through here: the bot refuses such a turn (see ``newer_than_code``) so that it is never
rewritten down.

Adding a version: bump the model's ``SCHEMA_VERSION``, add ``MIGRATIONS[old] = vOLD_to_vNEW`` and a test of it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Migration = Callable[[dict[str, Any]], dict[str, Any]]


def stored_version(data: Mapping[str, Any]) -> int:
    """The schema version a stored record says it has (0 when it says nothing or nonsense)."""
    version = data.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        return 0
    return version


def v0_to_v1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 0 stored ``{"name": ...}`` only; version 1 adds transport, age and picture (all optional)."""
    return {
        "name": data.get("name"),
        "transport": None,
        "age": None,
        "picture": None,
        **{key: value for key, value in data.items() if key != "schema_version"},
        "schema_version": 1,
    }


# UserProfile's steps: from version N to N + 1.
MIGRATIONS: dict[int, Migration] = {0: v0_to_v1}


def upgrade(data: Mapping[str, Any], target: int, migrations: Mapping[int, Migration] = MIGRATIONS) -> dict[str, Any]:
    """``data`` brought up to version ``target`` through each step in turn.

    A record already at ``target`` comes back as a copy. Raises ``ValueError`` for a record newer than
    ``target`` (the caller must not downgrade it) or a version with no step (a gap in ``migrations``).
    """
    version = stored_version(data)
    if version > target:
        raise ValueError(f"a record of schema version {version} is newer than this code's {target}")
    record = dict(data)
    while version < target:
        if version not in migrations:
            raise ValueError(f"no migration from schema version {version}")
        record = migrations[version](record)
        version = stored_version(record)
    return record


def newer_than_code(data: object, current: int) -> bool:
    """Whether a stored model's dict says it was written by a newer schema than ``current``."""
    return isinstance(data, Mapping) and stored_version(data) > current
