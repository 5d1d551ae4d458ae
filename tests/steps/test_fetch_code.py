"""``fetch_code`` with real git: file:// remotes, smart HTTP through ``git http-backend``,
an ssh transport whose ``ssh`` is a stub on PATH, and a port nobody listens on."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from ansflow.errors import DefinitionError
from ansflow.steps.base import get_step_type
from ansflow.steps.fetch_code.git_remote import Remote, classify
from tests.steps.conftest import RunStep, StepRun
from tests.steps.gitrepos import (
    AUTHOR,
    GitHttpServer,
    Upstream,
    bare_repo,
    commit,
    git,
    make_superproject,
    make_upstream,
)

TOKEN = "s3cr3t-token-0123456789"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Upstream:
    return make_upstream(tmp_path_factory.mktemp("upstream"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[GitHttpServer]:
    root = tmp_path_factory.mktemp("served")
    for area in ("public", "private"):
        shutil.copytree(upstream.bare, root / area / "project.git")
    with GitHttpServer(root, TOKEN) as running:
        yield running


@pytest.fixture(scope="module")
def superproject(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_superproject(tmp_path_factory.mktemp("super"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def assert_failed(run: StepRun, code: str, *, retryable: bool) -> None:
    assert not run.result.success, run.log.text
    assert run.result.error_code == code, (run.result.error, run.log.text)
    assert run.result.retryable is retryable


@pytest.mark.parametrize("ref", [{}, {"ref": ""}])
async def test_default_branch_when_ref_is_omitted(run_step: RunStep, upstream: Upstream,
                                                  workspace: Path, ref: dict[str, str]) -> None:
    run = await run_step("fetch_code", {"repo": upstream.url, **ref})
    assert run.result.success, run.log.text
    assert run.result.result == {
        "commit": upstream.third, "branch": "trunk", "tag": None, "message": "third commit",
        "author": AUTHOR, "repo": upstream.url, "path": ".",
    }
    assert (workspace / "third.txt").is_file()
    assert git("symbolic-ref", "--short", "HEAD", cwd=workspace) == "trunk"
    assert git("rev-list", "--count", "HEAD", cwd=workspace) == "3"


@pytest.mark.parametrize("ref", ["feature", "refs/heads/feature"])
async def test_branch(run_step: RunStep, upstream: Upstream, workspace: Path, ref: str) -> None:
    run = await run_step("fetch_code", {"repo": upstream.url, "ref": ref, "path": "src/app"})
    assert run.result.success, run.log.text
    assert run.result.result["commit"] == upstream.feature
    assert run.result.result["branch"] == "feature"
    assert run.result.result["message"] == "feature work"
    assert run.result.result["path"] == "src/app"
    assert (workspace / "src" / "app" / "feature.txt").is_file()


async def test_shallow_clone_of_an_annotated_tag(run_step: RunStep, upstream: Upstream,
                                                 workspace: Path) -> None:
    run = await run_step("fetch_code", {"repo": str(upstream.bare), "ref": "v1.0", "depth": 1})
    assert run.result.success, run.log.text
    result = run.result.result
    assert (result["commit"], result["tag"], result["branch"]) == (upstream.second, "v1.0", None)
    assert result["repo"] == str(upstream.bare)
    assert git("rev-parse", "--is-shallow-repository", cwd=workspace) == "true"
    assert git("rev-list", "--count", "HEAD", cwd=workspace) == "1"


@pytest.mark.parametrize("length", [40, 8])
async def test_commit_below_the_tip_with_depth_one(run_step: RunStep, upstream: Upstream,
                                                   workspace: Path, length: int) -> None:
    run = await run_step("fetch_code", {"repo": upstream.url, "ref": upstream.first[:length],
                                        "depth": 1})
    assert run.result.success, run.log.text
    assert run.result.result["commit"] == upstream.first
    assert run.result.result["branch"] is None
    assert run.result.result["message"] == "first commit"
    assert git("rev-parse", "HEAD", cwd=workspace) == upstream.first
    if length == 40:  # fetched by id: still shallow
        assert git("rev-parse", "--is-shallow-repository", cwd=workspace) == "true"


async def test_commit_by_id_over_http(run_step: RunStep, upstream: Upstream,
                                      server: GitHttpServer) -> None:
    run = await run_step("fetch_code", {"repo": server.url("public/project.git"),
                                        "ref": upstream.feature, "depth": 1})
    assert run.result.success, run.log.text
    assert run.result.result["commit"] == upstream.feature


async def test_submodules_one_level_and_recursive(run_step: RunStep, superproject: Path,
                                                  workspace: Path) -> None:
    run = await run_step("fetch_code", {"repo": superproject.as_uri(), "submodules": True})
    assert run.result.success, run.log.text
    assert (workspace / "vendor" / "lib" / "lib.txt").is_file()
    assert not (workspace / "vendor" / "lib" / "deep" / "deep.txt").exists()
    again = await run_step("fetch_code", {"repo": superproject.as_uri(),
                                          "submodules": "recursive"})
    assert again.result.success, again.log.text
    assert (workspace / "vendor" / "lib" / "deep" / "deep.txt").is_file()


async def test_private_http_repo_with_a_token(run_step: RunStep, upstream: Upstream,
                                              server: GitHttpServer, workspace: Path) -> None:
    url = server.url("private/project.git")
    run = await run_step("fetch_code", {"repo": url, "credentials": "git-token"},
                         secrets={"git-token": TOKEN + "\n"})
    assert run.result.success, run.log.text
    assert run.result.result["commit"] == upstream.third
    assert TOKEN not in run.log.text
    config = (workspace / ".git" / "config").read_text()
    assert TOKEN not in config
    assert "extraheader" not in config.lower()
    assert any(seen.authorization and seen.path.startswith("/private/")
               for seen in server.seen)


async def test_token_in_the_url_is_moved_out_of_argv_and_config(
    run_step: RunStep, server: GitHttpServer, workspace: Path
) -> None:
    url = server.url("private/project.git").replace("http://", f"http://ci:{TOKEN}@")
    run = await run_step("fetch_code", {"repo": url})
    assert run.result.success, run.log.text
    assert run.result.result["repo"] == server.url("private/project.git")
    assert TOKEN not in run.log.text
    assert TOKEN not in (workspace / ".git" / "config").read_text()


async def test_wrong_or_missing_token_is_auth_failed(run_step: RunStep,
                                                     server: GitHttpServer) -> None:
    url = server.url("private/project.git")
    wrong = await run_step("fetch_code", {"repo": url, "credentials": "tok"},
                           secrets={"tok": "not-the-token"})
    assert_failed(wrong, "auth_failed", retryable=False)
    assert "not-the-token" not in wrong.log.text
    anonymous = await run_step("fetch_code", {"repo": url, "path": "anon"})
    assert_failed(anonymous, "auth_failed", retryable=False)


async def test_undefined_credentials_secret(run_step: RunStep, upstream: Upstream) -> None:
    run = await run_step("fetch_code", {"repo": upstream.url, "credentials": "deploy-key"})
    assert not run.result.success
    assert run.result.error == "secret 'deploy-key' (credentials) is not defined"


async def test_ssh_key_is_used_from_a_private_file_that_is_removed(
    run_step: RunStep, upstream: Upstream, tmp_path: Path, workspace: Path
) -> None:
    bin_dir, record = tmp_path / "bin", tmp_path / "ssh-calls"
    bin_dir.mkdir()
    stub = bin_dir / "ssh"
    # stands in for the remote host: records how it was called, then runs the git
    # command it was asked to run, locally
    stub.write_text(f"""#!/bin/sh
while [ $# -gt 1 ]; do
  case "$1" in
    -i) echo "key $2 $(stat -c %a "$2") $(head -c 30 "$2")" >> {record}; shift 2;;
    -o) echo "option $2" >> {record}; shift 2;;
    *) echo "host $1" >> {record}; shift;;
  esac
done
exec sh -c "$1"
""")
    stub.chmod(0o755)
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----"
    run = await run_step("fetch_code",
                         {"repo": f"ssh://git@build-host{upstream.bare}", "credentials": "key"},
                         env={"PATH": f"{bin_dir}:{os.environ['PATH']}"}, secrets={"key": key})
    assert run.result.success, run.log.text
    assert run.result.result["repo"] == f"ssh://build-host{upstream.bare}"
    calls = record.read_text().splitlines()
    key_line = next(line for line in calls if line.startswith("key "))
    _, key_path, mode, head = key_line.split(" ", 3)
    assert mode == "600"
    assert head.startswith("-----BEGIN OPENSSH")
    assert not Path(key_path).exists()
    assert workspace.resolve() not in Path(key_path).resolve().parents
    assert "option IdentitiesOnly=yes" in calls
    assert "host git@build-host" in calls
    assert "abc" not in run.log.text


async def test_missing_repository(run_step: RunStep, tmp_path: Path,
                                  server: GitHttpServer) -> None:
    local = await run_step("fetch_code", {"repo": str(tmp_path / "nowhere.git")})
    assert_failed(local, "repository_not_found", retryable=False)
    assert "does not appear to be a git repository" in (local.result.error or "")
    http = await run_step("fetch_code", {"repo": server.url("public/nowhere.git"),
                                         "path": "http"})
    assert_failed(http, "repository_not_found", retryable=False)


@pytest.mark.parametrize("ref", ["no-such-branch", "deadbeef", "0" * 40])
async def test_unknown_ref(run_step: RunStep, upstream: Upstream, ref: str) -> None:
    run = await run_step("fetch_code", {"repo": upstream.url, "ref": ref, "depth": 1})
    assert_failed(run, "ref_not_found", retryable=False)
    assert repr(ref) in (run.result.error or "")


async def test_closed_port_is_a_retryable_network_failure(run_step: RunStep) -> None:
    run = await run_step("fetch_code", {"repo": f"http://127.0.0.1:{free_port()}/x.git"})
    assert_failed(run, "network", retryable=True)


async def test_rerun_into_an_earlier_clone(run_step: RunStep, upstream: Upstream,
                                           workspace: Path) -> None:
    first = await run_step("fetch_code", {"repo": upstream.url, "ref": "feature", "depth": 1})
    assert first.result.success, first.log.text
    # what a killed attempt leaves behind
    (workspace / ".git" / "index.lock").write_text("")
    (workspace / "feature.txt").write_text("edited by a build\n")
    second = await run_step("fetch_code", {"repo": upstream.url, "ref": "feature", "depth": 1},
                            attempt=2)
    assert second.result.success, second.log.text
    assert (workspace / "feature.txt").read_text() == "feature work\n"
    moved = await run_step("fetch_code", {"repo": upstream.url, "ref": "v1.0"})
    assert moved.result.success, moved.log.text
    assert moved.result.result["commit"] == upstream.second


async def test_new_commits_upstream_are_fetched_on_rerun(
    run_step: RunStep, tmp_path: Path, workspace: Path
) -> None:
    moving = make_upstream(tmp_path / "moving")
    assert (await run_step("fetch_code", {"repo": moving.url})).result.success
    work = tmp_path / "moving" / "project-work"
    newer = commit(work, "new.txt", "newer commit")
    git("push", "-q", str(moving.bare), "trunk", cwd=work)
    run = await run_step("fetch_code", {"repo": moving.url})
    assert run.result.result["commit"] == newer


async def test_path_holding_something_else_is_refused(run_step: RunStep, upstream: Upstream,
                                                      superproject: Path,
                                                      workspace: Path) -> None:
    (workspace / "notes").mkdir()
    (workspace / "notes" / "todo.txt").write_text("x")
    run = await run_step("fetch_code", {"repo": upstream.url, "path": "notes"})
    assert_failed(run, "workspace_conflict", retryable=False)
    assert run.result.error == f"path 'notes' is not empty and holds no clone of {upstream.url}"
    assert (await run_step("fetch_code", {"repo": upstream.url, "path": "a"})).result.success
    other = await run_step("fetch_code", {"repo": superproject.as_uri(), "path": "a"})
    assert_failed(other, "workspace_conflict", retryable=False)
    escape = await run_step("fetch_code", {"repo": upstream.url, "path": "../out"})
    assert escape.result.error == "path '../out' leaves the workspace"


async def test_git_missing_on_the_worker(run_step: RunStep, upstream: Upstream,
                                         tmp_path: Path) -> None:
    run = await run_step("fetch_code", {"repo": upstream.url}, env={"PATH": str(tmp_path)})
    assert run.result.error == "tool 'git' is not installed on this worker"
    assert run.result.retryable is False


def test_config_validation() -> None:
    step_type = get_step_type("fetch_code")
    for bad, field in (({"repo": "x", "depth": 0}, "config.depth"),
                       ({"repo": "x", "submodules": "deep"}, "config.submodules"),
                       ({"repo": ""}, "config.repo"),
                       ({"repo": "--upload-pack=touch /tmp/x"}, "config.repo"),
                       ({"repo": "x", "ref": "--upload-pack=touch"}, "config.ref"),
                       ({"repo": "x", "ref": "a b"}, "config.ref"),
                       ({"repo": "x", "branch": "y"}, "config.branch")):
        with pytest.raises(DefinitionError) as info:
            step_type.parse_config(bad, step="checkout")
        assert field in {detail.field for detail in info.value.details}


@pytest.mark.parametrize(("repo", "url", "shown"), [
    ("https://u:p%40ss@host.example:8443/a/b.git", "https://host.example:8443/a/b.git",
     "https://host.example:8443/a/b.git"),
    ("ssh://git@host/a.git", "ssh://git@host/a.git", "ssh://host/a.git"),
    ("git@host:a/b.git", "git@host:a/b.git", "git@host:a/b.git"),
    ("repos/my app", "file:///ws/repos/my%20app", "repos/my app"),
])
def test_remote_parsing(repo: str, url: str, shown: str) -> None:
    remote = Remote.parse(repo, Path("/ws"))
    assert (remote.url, remote.shown) == (url, shown)
    if repo.startswith("https"):
        assert (remote.user, remote.password, remote.http_origin) == (
            "u", "p@ss", "https://host.example:8443/")


@pytest.mark.parametrize(("line", "expected"), [
    ("fatal: unable to access 'https://h/x/': The requested URL returned error: 403",
     ("auth_failed", False)),
    ("git@h: Permission denied (publickey).", ("auth_failed", False)),
    ("ERROR: Repository not found.", ("repository_not_found", False)),
    ("fatal: unable to access 'https://h/x/': Could not resolve host: h", ("network", True)),
    ("fatal: unable to access 'https://h/': The requested URL returned error: 502",
     ("network", True)),
    ("fatal: unable to access 'https://openssl.example/': Failed to connect", ("network", True)),
    ("error: pathspec 'openssl' did not match any file(s) known to git", None),
])
def test_classification(line: str, expected: tuple[str, bool] | None) -> None:
    assert classify([line]) == expected



async def test_token_goes_to_the_repository_origin_only(run_step: RunStep, tmp_path: Path,
                                                        workspace: Path) -> None:
    with (GitHttpServer(tmp_path / "a", TOKEN) as origin,
          GitHttpServer(tmp_path / "b", TOKEN) as elsewhere):
        lib = bare_repo(tmp_path / "b" / "public", "lib", "lib.txt")
        bare_repo(tmp_path / "a" / "private", "app", "app.txt",
                  {"vendor/lib": elsewhere.url("public/lib.git")})
        bare_repo(tmp_path / "a" / "private", "sneaky", "app.txt", {"vendor/lib": lib.as_uri()})
        run = await run_step("fetch_code", {"repo": origin.url("private/app.git"),
                                            "credentials": "t", "submodules": True},
                             secrets={"t": TOKEN})
        assert run.result.success, run.log.text
        assert (workspace / "vendor" / "lib" / "lib.txt").is_file()
        assert elsewhere.seen
        assert all(seen.authorization is None for seen in elsewhere.seen)
        # a remote superproject may not make the worker read local repositories
        sneaky = await run_step("fetch_code", {"repo": origin.url("private/sneaky.git"),
                                               "credentials": "t", "submodules": True,
                                               "path": "sneaky"}, secrets={"t": TOKEN})
        assert not sneaky.result.success
        assert "transport 'file' not allowed" in (sneaky.result.error or ""), sneaky.log.text
