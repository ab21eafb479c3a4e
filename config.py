"""The app's settings, read once from the environment (and a ``.env`` file), validated, frozen.

This is the only module that reads the environment. ``Settings`` is the engine's ``hosting.HostSettings`` (port,
credentials, storage, limits: every variable is listed in README's "Settings") plus the bot's own settings, of
which the sample has none yet. To add one: a field with its default on ``Settings``, and a line in
``load_settings`` that reads it from ``variables`` (reporting a bad value with ``variables.problem``, so that it
joins the one ``ConfigError`` that names every bad value).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

from hosting import STORAGE_BACKENDS, ConfigError, HostSettings, Variables, read_host_settings

__all__ = ["ConfigError", "Settings", "load_settings", "setting_names", "settings_from_environment"]


@dataclass(frozen=True, slots=True)
class Settings(HostSettings):
    """Everything the app is configured with: the engine's settings (``hosting.HostSettings``) and the bot's."""


def load_settings(environ: Mapping[str, str]) -> Settings:
    """``Settings`` from the variables in ``environ``; ``ConfigError`` lists every invalid one. Pure."""
    variables = Variables(environ)
    # The bot's own settings are read here, e.g. greeting = variables.get("GREETING", "Hello"), and passed on:
    return read_host_settings(variables, Settings)


def settings_from_environment(env_file: str | Path = ".env") -> Settings:
    """Settings from ``os.environ`` layered over ``env_file`` (real environment variables win)."""
    file_values = {key: value for key, value in dotenv_values(env_file).items() if value is not None}
    return load_settings({**file_values, **os.environ})


def setting_names() -> frozenset[str]:
    """Every environment variable ``load_settings`` reads, with each storage backend chosen in turn (for tests,
    templates and documentation checks)."""
    asked: set[str] = set()

    class Recording(dict[str, str]):
        def get(self, name: str, default: object = None) -> object:
            asked.add(name)
            return super().get(name, default)

    for name in STORAGE_BACKENDS:
        with contextlib.suppress(ConfigError):
            load_settings(Recording(STORAGE=name))
    return frozenset(asked)
