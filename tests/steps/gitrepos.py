"""Real git repositories and a real smart-HTTP git server for the ``fetch_code`` tests.

``make_upstream`` builds a bare repository with a known history; ``make_superproject``
builds one with a submodule that itself has a submodule; ``GitHttpServer`` serves a
directory of bare repositories through ``git http-backend`` on 127.0.0.1, where
repositories under ``/private/`` need a token (Basic password or Bearer).
"""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

AUTHOR = "Ada Lovelace <ada@example.com>"

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Ada Lovelace", "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_COMMITTER_NAME": "Ada Lovelace", "GIT_COMMITTER_EMAIL": "ada@example.com",
    "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
}


def git(*args: str, cwd: Path) -> str:
    """Run git for a fixture; output as text without the trailing newline."""
    proc = subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV},
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout.rstrip("\n")


def commit(work: Path, name: str, message: str) -> str:
    (work / name).write_text(f"{message}\n")
    git("add", name, cwd=work)
    git("commit", "-q", "-m", message, cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


@dataclass(frozen=True)
class Upstream:
    """A bare repository whose default branch is ``trunk``::

        first ── second (tags v1.0 annotated, light) ── third        trunk
                    └─── feature work                                feature
    """

    bare: Path
    first: str
    second: str
    third: str
    feature: str

    @property
    def url(self) -> str:
        return self.bare.as_uri()


def make_upstream(root: Path, name: str = "project.git") -> Upstream:
    work = root / (name.removesuffix(".git") + "-work")
    work.mkdir(parents=True)
    git("init", "-q", "-b", "trunk", cwd=work)
    first = commit(work, "README", "first commit")
    second = commit(work, "version.txt", "second commit")
    git("tag", "-a", "v1.0", "-m", "release 1.0", cwd=work)
    git("tag", "light", cwd=work)
    git("checkout", "-q", "-b", "feature", cwd=work)
    feature = commit(work, "feature.txt", "feature work")
    git("checkout", "-q", "trunk", cwd=work)
    third = commit(work, "third.txt", "third commit\n\nwith a body")
    bare = root / name
    git("clone", "-q", "--bare", str(work), str(bare), cwd=root)
    return Upstream(bare, first, second, third, feature)


def bare_repo(root: Path, name: str, file: str,
              submodules: Mapping[str, str] | None = None) -> Path:
    """``root/<name>.git``: one commit adding ``file``, then one adding ``submodules``
    (path → URL) if any."""
    work = root / (name + "-work")
    work.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=work)
    commit(work, file, f"{name} content")
    for path, url in (submodules or {}).items():
        git("-c", "protocol.file.allow=always", "submodule", "add", "-q", url, path, cwd=work)
        git("commit", "-q", "-m", f"add {path}", cwd=work)
    bare = root / f"{name}.git"
    git("clone", "-q", "--bare", str(work), str(bare), cwd=root)
    return bare


def make_superproject(root: Path) -> Path:
    """``app.git`` with submodule ``vendor/lib`` (``lib.git``), which has ``deep`` inside."""
    deep = bare_repo(root, "deep", "deep.txt")
    lib = bare_repo(root, "lib", "lib.txt", {"deep": deep.as_uri()})
    return bare_repo(root, "app", "app.txt", {"vendor/lib": lib.as_uri()})


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None


class _Handler(BaseHTTPRequestHandler):
    server: GitHttpServer

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read ``server.seen`` instead."""

    def _serve(self) -> None:
        path, _, query = self.path.partition("?")
        auth = self.headers.get("Authorization")
        self.server.seen.append(Seen(self.command, path, auth))
        if path.startswith("/private/") and not self.server.accepts(auth):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="private git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self._body()
        env = {
            "PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1", "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull, "REQUEST_METHOD": self.command,
            "PATH_INFO": path, "QUERY_STRING": query, "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
        }
        out = subprocess.run(["git", "http-backend"], input=body, env=env,
                             capture_output=True, check=False).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        headers = [line.split(":", 1) for line in head.decode().split("\r\n") if ":" in line]
        status = next((int(v.split()[0]) for k, v in headers if k.lower() == "status"), 200)
        self.send_response(status)
        for name, value in headers:
            if name.lower() != "status":
                self.send_header(name, value.strip())
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        self.rfile.readline()
        return b"".join(chunks)


class GitHttpServer(ThreadingHTTPServer):
    """Smart HTTP git on 127.0.0.1 for the bare repositories under ``root``.

    ``/public/...`` is open; ``/private/...`` answers 401 unless the request carries
    ``token`` as a Basic password (any user) or as a Bearer token.
    """

    daemon_threads = True

    def __init__(self, root: Path, token: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.token = token
        self.seen: list[Seen] = []
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)

    def accepts(self, authorization: str | None) -> bool:
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() == "bearer":
            return value == self.token
        if scheme.lower() != "basic":
            return False
        _, _, password = base64.b64decode(value).decode().partition(":")
        return password == self.token

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{path}"

    def __enter__(self) -> GitHttpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join()
