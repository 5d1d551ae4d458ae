"""Where a git remote is, how to authenticate to it, and what git's failures mean.

Used by ``fetch_code``. Nothing here runs git: it builds URLs, environment variables
and classifications from git's output.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shlex
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

# git's own rule: a colon before any slash makes ``[user@]host:path`` an ssh remote
SCP_LIKE = re.compile(r"^[^/:]+:")
TOKEN_USER = "x-access-token"
SSH_OPTIONS = ("-o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=accept-new")

_AUTH = ("authentication failed", "could not read username", "could not read password",
         "returned error: 401", "returned error: 403", "permission denied (publickey",
         "host key verification failed", "invalid username or password")
_NOT_FOUND = ("does not appear to be a git repository", "repository not found", "' not found",
              "returned error: 404", "repository not exported", "no such repository")
_NETWORK = ("could not resolve host", "failed to connect", "couldn't connect",
            "connection refused", "timed out", "connection reset", "network is unreachable",
            "no route to host", "unable to connect", "hung up unexpectedly", "early eof",
            "rpc failed", "returned error: 5", "ssl_error", "ssl connect error",
            "gnutls_handshake", "tls connection", "transfer closed",
            "empty reply from server", "broken pipe")
REFUSED = ("not our ref", "unadvertised object", "couldn't find remote ref",
           "no such remote ref")
"""What a server says when it will not hand out a commit by its id."""


def classify(lines: list[str]) -> tuple[str, bool] | None:
    """``(error code, retryable)`` for git's output lines, ``None`` when unrecognised.

    Authentication is checked first (a 403 also reads "unable to access"), then a missing
    repository, then transport trouble, which is the only retryable kind.
    """
    text = "\n".join(line for line in lines if not line.startswith("$ ")).lower()
    for patterns, code, retryable in ((_AUTH, "auth_failed", False),
                                      (_NOT_FOUND, "repository_not_found", False),
                                      (_NETWORK, "network", True)):
        if any(pattern in text for pattern in patterns):
            return code, retryable
    return None


def refused(lines: list[str]) -> bool:
    text = "\n".join(lines).lower()
    return any(pattern in text for pattern in REFUSED)


@dataclass(frozen=True, slots=True)
class Remote:
    """A ``repo`` value taken apart.

    ``url`` is what git gets (and what lands in ``.git/config``): no password, a local
    path as a ``file://`` URL so that ``depth`` works. ``shown`` is for results and
    messages: no userinfo at all.
    """

    url: str
    shown: str
    local: bool
    http_origin: str | None = None
    user: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, repo: str, workspace: Path) -> Remote:
        if "://" not in repo:
            if SCP_LIKE.match(repo):
                return cls(repo, repo, local=False)
            path = Path(os.path.expanduser(repo))
            absolute = Path(os.path.abspath(path if path.is_absolute() else workspace / path))
            return cls(absolute.as_uri(), repo, local=True)
        parts = urlsplit(repo)
        scheme = parts.scheme.lower()
        userinfo, _, hostport = parts.netloc.rpartition("@")
        shown = urlunsplit(parts._replace(netloc=hostport))
        if scheme == "file":
            return cls(repo, shown, local=True)
        if scheme not in ("http", "https"):
            return cls(repo, shown, local=False)  # an ssh user name is needed, not secret
        user, _, password = userinfo.partition(":")
        return cls(shown, shown, local=False, http_origin=f"{scheme}://{hostport}/",
                   user=unquote(user) or None, password=unquote(password) or None)


def git_config_env(env: Mapping[str, str], entries: Mapping[str, str]) -> dict[str, str]:
    """``GIT_CONFIG_*`` variables adding ``entries`` to those already in ``env``.

    Config given this way applies to the commands that get the environment and is never
    written anywhere, unlike ``git config`` or ``git -c`` (which shows in argv).
    """
    try:
        count = int(env.get("GIT_CONFIG_COUNT", "0"))
    except ValueError:
        count = 0
    added: dict[str, str] = {}
    for key, value in entries.items():
        added[f"GIT_CONFIG_KEY_{count}"] = key
        added[f"GIT_CONFIG_VALUE_{count}"] = value
        count += 1
    added["GIT_CONFIG_COUNT"] = str(count)
    return added


def is_ssh_key(secret: str) -> bool:
    return secret.lstrip().startswith("-----BEGIN")


@asynccontextmanager
async def credentials_env(remote: Remote, secret: str | None, base: Mapping[str, str],
                          temp_dir: Path) -> AsyncIterator[dict[str, str]]:
    """Environment for every git command of one step: never prompt, and authenticate
    with ``secret`` (an SSH private key or an HTTPS token) or the URL's password.

    A token is sent only to the remote's own origin (``http.<origin>.extraHeader``), so a
    submodule on another host never sees it. An SSH key file (in ``temp_dir``) is removed
    on exit.
    """
    # GIT_ASKPASS set but empty: git then asks no program (core.askPass, SSH_ASKPASS) either
    env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": ""}
    if secret is not None and is_ssh_key(secret):
        key = await asyncio.to_thread(_write_key, secret, temp_dir)
        try:
            yield env | {"GIT_SSH_COMMAND": f"ssh -i {shlex.quote(str(key))} {SSH_OPTIONS}"}
        finally:
            key.unlink(missing_ok=True)
        return
    token = secret.strip() if secret is not None else remote.password
    if token and remote.http_origin:
        basic = base64.b64encode(f"{remote.user or TOKEN_USER}:{token}".encode()).decode()
        header = {f"http.{remote.http_origin}.extraHeader": f"Authorization: Basic {basic}"}
        env |= git_config_env(base, header)
    yield env


def _write_key(secret: str, temp_dir: Path) -> Path:
    """A 0600 file in the step's temp directory (never the workspace)."""
    handle, name = tempfile.mkstemp(prefix="ansflow-key-", dir=temp_dir)
    with os.fdopen(handle, "w") as file:
        file.write(secret.strip() + "\n")  # ssh rejects a key without the final newline
    return Path(name)
