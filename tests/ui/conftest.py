"""A browser (Debian's Chromium driven by Playwright) against ``ansflow serve``.

One server and one browser for the module; each test gets a fresh page signed in with
an admin token, and fails on any console error the page logged. Screenshots go to the
test's temporary folder and to ``test-output/`` at the repository root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright

from tests.api.served import serve_process

CHROMIUM = Path(os.environ.get("ANSFLOW_TEST_CHROMIUM", "/usr/bin/chromium"))
REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "test-output"


class Server:
    def __init__(self, base: str, token: str, read_token: str) -> None:
        self.base = base
        self.token = token
        self.read_token = read_token
        self.http = httpx.Client(base_url=f"{base}/api/v1", timeout=30,
                                 headers={"Authorization": f"Bearer {token}"})

    def post(self, path: str, **kwargs: Any) -> Any:
        response = self.http.post(path, **kwargs)
        assert response.status_code in (200, 201, 202), response.text
        return response.json()

    def get(self, path: str, **kwargs: Any) -> Any:
        response = self.http.get(path, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()


def _token(env: dict[str, str], cwd: Path, scope: str) -> str:
    return subprocess.run([sys.executable, "-m", "ansflow.cli.app", "token", "create",
                           "--scope", scope, "--name", f"ui-{scope}"], env=env, cwd=cwd,
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("ui-server")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSFLOW_")}
    env.update(ANSFLOW_DATABASE_URL=f"sqlite+aiosqlite:///{tmp / 'ui.db'}",
               ANSFLOW_WORKSPACE_ROOT=str(tmp / "ws"), ANSFLOW_ARTIFACT_ROOT=str(tmp / "art"),
               ANSFLOW_KILL_GRACE_SECONDS="1")
    token = _token(env, tmp, "admin")
    read_token = _token(env, tmp, "read")
    with serve_process(tmp, env) as (base, _):
        server = Server(base, token, read_token)
        yield server
        server.http.close()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as opened:
        yield opened


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run scripts/setup dev (as root "
                    "it installs Debian's chromium package), or `apt-get install -y "
                    "chromium`; set ANSFLOW_TEST_CHROMIUM to use another binary")
    opened = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                        args=["--no-sandbox", "--disable-gpu"])
    yield opened
    opened.close()


class Console:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def __call__(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"{message.text} ({message.location.get('url')})")


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def page(browser: Browser, server: Server, console: Console) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    opened.on("console", console)
    opened.on("pageerror", lambda error: console.errors.append(f"uncaught: {error}"))
    opened.set_default_timeout(20_000)
    yield opened
    context.close()
    assert console.errors == [], "the page logged errors"


def sign_in(page: Page, server: Server, token: str | None = None) -> None:
    page.goto(f"{server.base}/#/signin")
    page.get_by_label("API token").fill(token or server.token)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Pipelines").wait_for()


def screenshot(page: Page, folder: Path, name: str) -> Path:
    """Saved in the test's folder and copied to test-output/ (kept after the run)."""
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    OUTPUT.mkdir(exist_ok=True)
    shutil.copy(path, OUTPUT / path.name)
    return path
