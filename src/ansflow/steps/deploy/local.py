"""Release directories of the ``deploy`` step's ``local`` target (blocking; run in a thread).

Layout under the deploy root::

    <root>/releases/<release id>/   one directory per deployment, never changed afterwards
    <root>/current -> releases/<id> the live release (a relative symlink)

A release id is ``<UTC timestamp with microseconds>Z-<version>``: sorted by name, ids are
sorted by time, and a new id is always greater than every existing one (so a clock that
steps back cannot reorder releases). A release is copied under a temporary name and
renamed when complete, and ``current`` is switched by renaming a new symlink over it, so
there is never a moment without ``current`` nor a ``current`` pointing at a partial copy.
One deployment at a time holds ``<root>/.ansflow-deploy.lock``; another one fails at once.
A deployment whose step was cancelled while copying (``stop`` set) never switches ``current``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

RELEASES = "releases"
CURRENT = "current"
LOCK_FILE = ".ansflow-deploy.lock"
PARTIAL_PREFIX = ".partial-"
LINK_PREFIX = ".current-"
TIMESTAMP = "%Y%m%dT%H%M%S%fZ"
RELEASE_ID = re.compile(r"^(\d{8}T\d{12}Z)-(.+)$")


class ReleaseError(Exception):
    """The deployment cannot be done as asked; the message says why and where."""


@dataclass(frozen=True, slots=True)
class LocalOutcome:
    release: str
    """The release ``current`` points to now."""
    previous: str | None
    """The release ``current`` pointed to before, if any."""
    pruned: list[str] = field(default_factory=list)
    releases: list[str] = field(default_factory=list)
    """Releases left on disk, oldest first."""


def release_version(release: str) -> str:
    """The version part of a release id."""
    match = RELEASE_ID.match(release)
    return match.group(2) if match else release


def new_release_id(existing: list[str], version: str, now: datetime) -> str:
    """An id greater than every id in ``existing`` (sorted), stamped with ``now``."""
    safe = re.sub(r"[^A-Za-z0-9._+-]", "_", version)[:64] or "unversioned"
    stamp = now.astimezone(UTC).replace(tzinfo=None)
    if existing:
        stamp = max(stamp, _stamp_of(existing[-1]) + timedelta(microseconds=1))
    return f"{stamp.strftime(TIMESTAMP)}-{safe}"


def _stamp_of(release: str) -> datetime:
    match = RELEASE_ID.match(release)
    if match is None:
        raise ValueError(f"{release!r} is not a release id")
    return datetime.strptime(match.group(1), TIMESTAMP)


def list_releases(root: Path) -> list[str]:
    """Release ids under ``root``, oldest first; other entries are not releases."""
    directory = root / RELEASES
    if not directory.is_dir():
        return []
    return sorted(entry.name for entry in directory.iterdir()
                  if RELEASE_ID.match(entry.name) and entry.is_dir())


def current_release(root: Path) -> str | None:
    """The release ``current`` points to, ``None`` when nothing is deployed."""
    link = root / CURRENT
    if not link.is_symlink():
        if link.exists():
            raise ReleaseError(f"{link} exists and is not a symlink; move it away to deploy here")
        return None
    target = Path(os.readlink(link))
    return target.name


def deploy_release(root: Path, source: Path, version: str, keep: int, now: datetime,
                   stop: threading.Event | None = None) -> LocalOutcome:
    """Copy ``source`` into a new release, make it current, prune beyond ``keep``.
    Setting ``stop`` (from another thread) abandons the copy before the switch."""
    resolved = root.resolve()
    if resolved == source or source in resolved.parents:
        raise ReleaseError(f"deploy path {root} lies inside the source {source}")
    (root / RELEASES).mkdir(parents=True, exist_ok=True)
    with _locked(root):
        _remove_leftovers(root)
        previous = current_release(root)
        release = new_release_id(list_releases(root), version, now)
        _copy_release(source, root / RELEASES, release, stop or threading.Event())
        _switch(root, release)
        pruned = _prune(root, keep, protect={release, previous})
        return LocalOutcome(release, previous, pruned, list_releases(root))


def roll_back(root: Path) -> LocalOutcome:
    """Point ``current`` at the release before the current one."""
    if not root.is_dir():
        raise ReleaseError(f"cannot roll back: nothing is deployed at {root}")
    with _locked(root):
        current = current_release(root)
        if current is None:
            raise ReleaseError(f"cannot roll back: nothing is deployed at {root} "
                               f"({root / CURRENT} does not exist)")
        releases = list_releases(root)
        older = [release for release in releases if release < current]
        if not older:
            raise ReleaseError(f"cannot roll back {root}: there is no release before "
                               f"the current one ({current})")
        _switch(root, older[-1])
        return LocalOutcome(older[-1], current, [], releases)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    with (root / LOCK_FILE).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ReleaseError(f"another deployment to {root} is in progress") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_leftovers(root: Path) -> None:
    """Partial copies and temporary links of deployments that crashed (we hold the lock)."""
    for entry in (root / RELEASES).iterdir():
        if entry.name.startswith(PARTIAL_PREFIX):
            shutil.rmtree(entry, ignore_errors=True)
    for entry in root.iterdir():
        if entry.name.startswith(LINK_PREFIX) and entry.is_symlink():
            entry.unlink()


def _copy_release(source: Path, releases: Path, release: str, stop: threading.Event) -> None:
    partial = releases / f"{PARTIAL_PREFIX}{release}"

    def check_stop(_directory: str, _names: list[str]) -> list[str]:
        if stop.is_set():
            raise ReleaseError(f"deployment of {release} cancelled while copying")
        return []

    try:
        if source.is_dir():
            shutil.copytree(source, partial, symlinks=True, ignore=check_stop)
        else:
            partial.mkdir()
            shutil.copy2(source, partial / source.name)
        check_stop("", [])
    except ReleaseError:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    partial.rename(releases / release)


def _switch(root: Path, release: str) -> None:
    link = root / f"{LINK_PREFIX}{uuid.uuid4().hex}"
    os.symlink(f"{RELEASES}/{release}", link)
    os.replace(link, root / CURRENT)


def _prune(root: Path, keep: int, protect: set[str | None]) -> list[str]:
    releases = list_releases(root)
    doomed = [release for release in releases[: max(len(releases) - keep, 0)]
              if release not in protect]
    for release in doomed:
        shutil.rmtree(root / RELEASES / release)
    return doomed
