"""The sample's entry modules reach the engine through its top level only.

import-linter (``make lint``, contracts in pyproject.toml) checks the packages; it cannot take single modules as
packages, so app.py, config.py and gunicorn.conf.py are checked here, by reading their imports.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT

ENTRY_MODULES = ("app.py", "config.py", "gunicorn.conf.py")


def imported_modules(path: str) -> list[str]:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", ENTRY_MODULES)
def test_an_entry_module_imports_the_engine_by_its_top_level_only(path: str) -> None:
    engine = [name for name in imported_modules(path) if name.split(".")[0] == "hosting"]

    assert engine, f"{path} does not use the engine at all"
    assert all(name == "hosting" for name in engine), engine


def test_the_import_contracts_hold() -> None:
    """The same check ``make lint`` runs, so that a broken contract also fails ``pytest``."""
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
