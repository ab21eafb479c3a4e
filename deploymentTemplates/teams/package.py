"""``make teams-package``: the Teams app package to upload (Teams -> Apps -> Manage your apps -> Upload an app).

A zip of ``manifest.json`` with the bot's Microsoft App ID filled in (the app's ``id`` and its bot's ``botId``) and
the two icons next to it. The app id comes from ``--app-id``, else ``MicrosoftAppId`` in the environment or in
``.env`` (what the bot runs with); a missing or malformed one stops it with a message and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import zipfile
from pathlib import Path

from dotenv import dotenv_values

logger = logging.getLogger("teams-package")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PLACEHOLDER = "{{MicrosoftAppId}}"
ICONS = ("color.png", "outline.png")
APP_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
DEFAULT_OUTPUT = ROOT / "artifacts" / "teams" / "state-bot-teams.zip"


def app_id_from(argument: str | None, environ: dict[str, str], dotenv_path: Path) -> str:
    """The app id to package: the argument, else ``MicrosoftAppId`` from the environment, else from ``.env``."""
    if argument:
        return argument.strip()
    if environ.get("MicrosoftAppId", "").strip():
        return environ["MicrosoftAppId"].strip()
    found = dotenv_values(dotenv_path).get("MicrosoftAppId") if dotenv_path.exists() else None
    return (found or "").strip()


def manifest_for(app_id: str) -> dict:
    """``manifest.json`` with ``app_id`` in place of the placeholder; ``ValueError`` for an id that is not one."""
    if not APP_ID.fullmatch(app_id):
        shown = app_id or "nothing"
        raise ValueError(
            f"the Microsoft App ID must be the bot's app id, a GUID such as 9f0c1e2d-3b4a-5c6d-7e8f-901a2b3c4d5e "
            f"(the Azure Bot resource's 'Microsoft App ID'); got {shown!r}: set MicrosoftAppId in .env or run "
            "make teams-package APP_ID=<id>"
        )
    text = (HERE / "manifest.json").read_text(encoding="utf-8").replace(PLACEHOLDER, app_id.lower())
    return json.loads(text)


def build(app_id: str, output: Path) -> Path:
    """Write the package to ``output``; return it."""
    manifest = manifest_for(app_id)
    output.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as package:
        package.writestr("manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        for icon in ICONS:
            package.write(HERE / icon, icon)
    return output


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app-id", help="the bot's Microsoft App ID (default: MicrosoftAppId, see --env-file)")
    parser.add_argument("--env-file", type=Path, default=ROOT / ".env", help="read MicrosoftAppId from it if unset")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the zip")
    args = parser.parse_args(argv)
    try:
        path = build(app_id_from(args.app_id, dict(os.environ), args.env_file), args.output)
    except ValueError as err:
        logger.error("teams-package: %s", err)
        return 2
    logger.info("Teams app package: %s (upload it in Teams: Apps -> Manage your apps -> Upload an app)", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
