"""A hostile step against the local workspace store: the store directory holds every
blob of every execution (workspaces, artifacts, caches) and is service state, hidden from
steps like the database (PRODUCT §8), wherever ``ANSFLOW_STORE_URL`` puts it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from ansflow.config import Settings
from ansflow.resources import Resources
from ansflow.workspace.manifest import blob_key
from tests.builders import pipeline_doc, step
from tests.engine.harness import run_doc
from tests.security.procs import outside_tmp

SECRET = "store-secret-8086"

PROBE = r"""
set +e
{
  if out=$(ls -A "$STORE" 2>&1); then echo "root=listed:$(echo $out)"
  else echo "root=denied:${out##*: }"; fi
  if out=$(cat "$STORE/$BLOB" 2>&1); then echo "blob=read:$out"
  else echo "blob=denied:${out##*: }"; fi
  echo "files=$(find "$STORE" -type f 2>/dev/null | wc -l)"
  echo "found=$(grep -rl "$SECRET" "$STORE" 2>/dev/null | wc -l)"
} >> "$ANSFLOW_OUTPUT"
"""


@pytest.fixture
def state() -> Iterator[Path]:
    # under /var/tmp: the sandbox's private /tmp would hide a store under /tmp by itself
    with outside_tmp() as path:
        yield path


@pytest.mark.parametrize(("where", "mode", "user"), [
    ("default", "bwrap", None), ("explicit", "bwrap", None), ("default", "none", "nobody")])
async def test_a_step_cannot_read_the_local_store(state: Path, where: str, mode: str,
                                                  user: str | None) -> None:
    # the data directory is ``state``: the default store is ``state/store``
    store = state / "store" if where == "default" else state / "shared" / "objects"
    settings = Settings(database_url=f"sqlite+aiosqlite:///{state / 'db' / 'ansflow.db'}",
                        workspace_root=state / "workspaces", artifact_root=state / "artifacts",
                        store_url=None if where == "default" else f"file://{store}",
                        sandbox=mode, step_user=user, lease_seconds=5)
    assert settings.local_store_root == store
    async with Resources.open(settings) as resources:
        first = await run_doc(resources, pipeline_doc(step(
            "leave", f"echo {SECRET} > secret.txt", type="build",
            config={"tool": "shell", "command": f"echo {SECRET} > secret.txt",
                    "artifacts": ["secret.txt"]})))
        assert first.status == "success", first.record
        blob = blob_key(hashlib.sha256(f"{SECRET}\n".encode()).hexdigest())
        # what a step would find without the sandbox: the store holds the secret's blob
        assert (store / blob).read_text() == f"{SECRET}\n"
        probe = await run_doc(resources, pipeline_doc(step(
            "probe", PROBE, env={"STORE": str(store), "BLOB": blob, "SECRET": SECRET})))
    seen = probe.step("probe").outputs
    assert probe.status == "success", probe.record
    assert seen["found"] == "0" and seen["files"] == "0", seen
    if mode == "bwrap":  # an empty tmpfs over the store: steps run as root here
        assert seen["root"] == "listed:", seen
        assert seen["blob"] == "denied:No such file or directory", seen
    else:  # the store's directory is the service user's alone (0700)
        assert seen["root"] == "denied:Permission denied", seen
        assert seen["blob"] == "denied:Permission denied", seen
    assert not any(SECRET in value for value in seen.values())
