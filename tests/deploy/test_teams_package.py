"""``make teams-package``: the Teams app package, built by the real script into a temporary folder.

Teams' manifest schema cannot be fetched here, so the manifest is checked against the rules of the v1.19 schema
this package declares, as its documentation states them: required fields, lengths, the GUID id, the bot's scopes,
and icons of 192x192 (colour) and 32x32 (outline, with transparency) in PNG. Its commands must be the bot's own.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bots.commands import COMMANDS
from tests.support.processes import ROOT

SCRIPT = ROOT / "deploymentTemplates" / "teams" / "package.py"
APP_ID = "9F0C1E2D-3B4A-5C6D-7E8F-901A2B3C4D5E"
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _package(tmp_path: Path, *arguments: str, **environ: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "MicrosoftAppId"} | environ
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--env-file", str(tmp_path / "no.env"), "--output", str(tmp_path / "app.zip"),
         *arguments],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


def _png_size(data: bytes) -> tuple[int, int, int]:
    """Width, height and colour type from a PNG's header."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height, _, colour_type = struct.unpack(">IIBB", data[16:26])
    return width, height, colour_type


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_the_package_holds_the_manifest_with_the_app_id_and_both_icons(tmp_path: Path, how: str) -> None:
    run = _package(tmp_path, "--app-id", APP_ID) if how == "argument" else _package(tmp_path, MicrosoftAppId=APP_ID)

    assert run.returncode == 0, run.stderr
    with zipfile.ZipFile(tmp_path / "app.zip") as package:
        assert sorted(package.namelist()) == ["color.png", "manifest.json", "outline.png"]
        manifest = json.loads(package.read("manifest.json"))
        color, outline = _png_size(package.read("color.png")), _png_size(package.read("outline.png"))

    assert manifest["id"] == APP_ID.lower()
    [bot] = manifest["bots"]
    assert bot["botId"] == APP_ID.lower()
    assert sorted(bot["scopes"]) == ["groupChat", "personal", "team"]
    assert color[:2] == (192, 192)
    assert outline == (32, 32, 6), "32x32 with an alpha channel (transparent outline)"


def test_the_manifest_follows_the_schema_rules_and_names_only_the_bots_commands() -> None:
    manifest = json.loads((ROOT / "deploymentTemplates" / "teams" / "manifest.json").read_text())

    for field in ("manifestVersion", "version", "id", "developer", "name", "description", "icons", "accentColor"):
        assert field in manifest, field
    assert manifest["$schema"].endswith(f"/v{manifest['manifestVersion']}/MicrosoftTeams.schema.json")
    assert re.fullmatch(r"\d+\.\d+\.\d+", manifest["version"])
    assert all(
        manifest["developer"][url].startswith("https://") for url in ("websiteUrl", "privacyUrl", "termsOfUseUrl")
    )
    assert len(manifest["developer"]["name"]) <= 32
    assert len(manifest["name"]["short"]) <= 30
    assert len(manifest["name"]["full"]) <= 100
    assert len(manifest["description"]["short"]) <= 80
    assert len(manifest["description"]["full"]) <= 4000
    assert re.fullmatch(r"#[0-9A-Fa-f]{6}", manifest["accentColor"])
    assert set(manifest["icons"]) == {"color", "outline"}
    [bot] = manifest["bots"]
    for commands in bot["commandLists"]:
        assert len(commands["commands"]) <= 10
        for command in commands["commands"]:
            assert command["title"] in COMMANDS, f"{command['title']!r} is not a command of the bot"
            assert len(command["title"]) <= 32
            assert len(command["description"]) <= 128


@pytest.mark.parametrize("app_id", ["", "not-a-guid", "9F0C1E2D3B4A5C6D7E8F901A2B3C4D5E"])
def test_without_a_real_app_id_it_stops_with_a_message_and_writes_nothing(tmp_path: Path, app_id: str) -> None:
    run = _package(tmp_path, *(["--app-id", app_id] if app_id else []))

    assert run.returncode == 2
    assert "MicrosoftAppId" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "app.zip").exists()
