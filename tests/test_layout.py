"""The package layout is part of the architecture: these rules keep it readable."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "ansflow"
TOP_LEVEL = {"__init__.py", "celery_app.py", "config.py", "errors.py", "resources.py",
             "status.py"}


def test_only_the_shared_modules_sit_at_the_top() -> None:
    modules = {p.name for p in PACKAGE.glob("*.py")}
    assert modules == TOP_LEVEL


def test_every_package_is_installed() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(("ansflow", *p.parent.relative_to(PACKAGE).parts))
             for p in PACKAGE.rglob("__init__.py")}
    assert found - listed == set()
