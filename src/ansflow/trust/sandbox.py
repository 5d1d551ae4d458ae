"""The step sandbox (PRODUCT §8): what every command of a step runs inside.

``Sandbox`` is one worker process's policy, made from the settings by ``for_settings``:
the mode (``ANSFLOW_SANDBOX``: ``bwrap``, ``none``, or ``auto`` = bwrap when a trial run
of it works here), the service state to hide, the user steps run as
(``ANSFLOW_STEP_USER``) and the pids bound. ``StepSandbox`` is the policy applied to one
attempt of one step, and ``engine/process.py`` asks it to ``confine`` each command:

    [sh -c 'echo $$ >PIDS_CGROUP/cgroup.procs; exec "$@"']    a pids cgroup, or with a step
    [prlimit --nproc=N:N --]                                   user RLIMIT_NPROC instead
    bwrap --ro-bind / / --dev /dev --proc /proc --perms 1777 --tmpfs /tmp      (mode bwrap)
          [--bind WRITABLE...] --perms 0755 --tmpfs HIDDEN_DIR...
          --ro-bind /dev/null HIDDEN_FILE...
          --bind WORKSPACE --bind OUTPUT_FILE --bind TEMP_DIR [--ro-bind LOCAL_REPO]
          --chdir CWD --unshare-pid --unshare-ipc --unshare-uts [--unshare-net]
          --die-with-parent --new-session --cap-drop ALL --
    [setpriv --reuid U --regid G --clear-groups --no-new-privs --]    with a step user
    ARGV

One bwrap per command (PITFALLS 20 weighs this against one per execution; bench/
measures the cost). The PID namespace ends with the command's first process: whatever it
started is killed by the kernel at that moment, and ``--die-with-parent`` does the same
when the worker dies, even by SIGKILL. Without bwrap (``none``) the tag and cgroup of
``trust/leftovers.py`` find what a command left behind.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from ansflow.config import Settings
from ansflow.errors import AnsFlowError, ConfigurationError
from ansflow.trust import leftovers
from ansflow.trust.step_user import StepUser, allow_search, check_reachable, hand_over

logger = logging.getLogger(__name__)

Mode = Literal["bwrap", "none"]
NAMESPACES = ("--unshare-pid", "--unshare-ipc", "--unshare-uts")
LIFETIME = ("--die-with-parent", "--new-session")
SYSTEM = ("--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
          "--perms", "1777", "--tmpfs", "/tmp")
# what a step's environment keeps of the worker's: never the service's own settings
ENV_ALLOWED = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM",
    "http_proxy", "https_proxy", "no_proxy", "all_proxy",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS", "JAVA_HOME", "GOROOT", "GOPATH", "KUBECONFIG", "DOCKER_HOST",
    "DOCKER_CONFIG",
})
ENV_ALLOWED_PREFIXES = ("LC_",)


class SandboxRefused(AnsFlowError):
    """A step asks for something this worker's sandbox cannot give (``network: false``
    without bwrap)."""

    code = "sandbox_refused"


@functools.cache
def bwrap_path() -> str | None:
    return shutil.which("bwrap")


@functools.cache
def bwrap_problem() -> str | None:
    """None when ``bwrap`` is installed and a trial sandbox with every option AnsFlow
    uses runs here; otherwise why not. Probed once per process."""
    path = bwrap_path()
    if path is None:
        return "bwrap is not installed"
    argv = [path, *SYSTEM, *NAMESPACES, "--unshare-net", *LIFETIME, "--cap-drop", "ALL",
            "--", "true"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap does not run here: {exc}"
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip()[:300]
        return f"bwrap does not work here (exit {done.returncode}: {said})"
    return None


@dataclass(frozen=True, slots=True)
class Sandbox:
    """The sandbox policy of one worker process; immutable, shared by its steps."""

    mode: Mode
    reason: str
    hidden_dirs: tuple[Path, ...] = ()
    hidden_files: tuple[Path, ...] = ()
    writable: tuple[Path, ...] = ()
    """``ANSFLOW_SANDBOX_WRITABLE``: shared paths every step may write (state stays hidden)."""
    user: StepUser | None = None
    pids_max: int = 1024
    cgroups: leftovers.PidsCgroups | None = None

    @classmethod
    def for_settings(cls, settings: Settings) -> Sandbox:
        """The policy for ``settings`` (built once per distinct configuration and process).
        ``ConfigurationError`` when ``bwrap`` is required but does not work here, or the
        step user cannot be used."""
        key_file = getattr(settings, "secret_key_file", None)
        store = settings.local_store_root
        roots = (settings.workspace_root.resolve(), settings.artifact_root.resolve(),
                 *([store] if store is not None else []))
        return _policy(settings.sandbox, settings.step_user, settings.step_pids_max, roots,
                       tuple(p.resolve() for p in settings.sandbox_writable),
                       settings.database_url, str(key_file) if key_file else None)

    def describe(self) -> str:
        """One line for ``/readyz`` and the worker's start-up log."""
        user = f"as user {self.user.name}" if self.user else "as the worker's own user"
        pids = ("no pids limit (ANSFLOW_STEP_PIDS_MAX=0)" if not self.pids_max else
                f"at most {self.pids_max} processes per command (pids cgroup)"
                if self.cgroups else
                f"at most {self.pids_max} processes of the step user (RLIMIT_NPROC)"
                if self.user else "no pids limit (no pids cgroup available)")
        if self.mode == "bwrap":
            return f"bwrap: steps run in their own namespaces {user}, {pids}"
        return (f"none ({self.reason}): steps run unsandboxed {user}; leftover processes "
                f"are found by tag, {pids}")

    def environment(self, worker_env: Mapping[str, str]) -> dict[str, str]:
        """The part of the worker's environment a step sees: an allow-list, so that no
        setting of the service (database URL, keys, tokens) reaches a step."""
        env = {k: v for k, v in worker_env.items()
               if k in ENV_ALLOWED or k.startswith(ENV_ALLOWED_PREFIXES)}
        if self.user is not None:
            env.update(HOME=self.user.home, USER=self.user.name, LOGNAME=self.user.name)
        return env

    def for_step(self, label: str, *, workspace: Path, output_file: Path, network: bool
                 ) -> StepSandbox:
        """The sandbox of one step attempt; creates its private temp directory (removed
        by ``StepSandbox.close``). ``label`` (``<execution>/<step>/<attempt>``) goes into
        each command's tag."""
        if not network and self.mode != "bwrap":
            raise SandboxRefused(f"network: false needs the bwrap sandbox, and this worker "
                                 f"runs steps without it ({self.reason})")
        if self.user is not None and self.mode == "none":
            # the workspace root is private (0700); the step user must pass through it
            # (bwrap mounts an empty 0755 directory there instead)
            allow_search(workspace.parent)
            check_reachable(self.user, output_file.parent)
        temp_dir = Path(tempfile.mkdtemp(prefix="ansflow-step-"))
        sandbox = StepSandbox(self, label, workspace.resolve(), output_file.resolve(),
                              temp_dir, network=network)
        if self.mode != "bwrap":
            return sandbox
        # a writable path stays writable: a read-only bind would cover it (binds made later win)
        tools = [p for p in tools_under_tmp()
                 if not any(p == w or w in p.parents for w in self.writable)]
        return sandbox.reading(*tools)

    def reap_orphans(self) -> int:
        """Kill the processes that steps of dead worker processes left on this host."""
        return leftovers.reap_orphans(self.cgroups)


def tools_under_tmp() -> list[Path]:
    """The worker's ``PATH`` entries that the step's private ``/tmp`` would hide (a
    virtualenv in a checkout under /tmp): a virtualenv is seen whole, read only, so the
    step runs the same tools the worker was started with."""
    found: list[Path] = []
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        path = Path(entry)
        if not entry or not path.is_absolute() or Path("/tmp") not in path.parents:
            continue
        root = path.parent if (path.parent / "pyvenv.cfg").exists() else path
        if root.is_dir() and root not in found:
            found.append(root)
    return found


def start_sandbox(settings: Settings, role: str, *, reap: bool = True) -> Sandbox:
    """At a worker's (or in-process API's) start: the sandbox it will use, said loudly
    once, and the leftovers of crashed workers on this host killed. Blocking."""
    sandbox = Sandbox.for_settings(settings)
    level = logging.INFO if sandbox.mode == "bwrap" else logging.WARNING
    logger.log(level, "%s: step sandbox %s", role, sandbox.describe())
    if reap and (killed := sandbox.reap_orphans()):
        logger.warning("%s: killed %d processes left by steps of dead workers", role, killed)
    return sandbox


@functools.lru_cache(maxsize=64)
def _policy(mode: str, step_user: str | None, pids_max: int, roots: tuple[Path, ...],
            writable: tuple[Path, ...], database_url: str, key_file: str | None) -> Sandbox:
    """``roots``: the workspace and artifact roots and a local store's directory (every
    blob of every execution), hidden but for what a step needs."""
    chosen, reason = _choose(mode)
    dirs, files = list(roots), []
    database = _sqlite_file(database_url)
    if database is not None:
        files += [database.with_name(database.name + suffix)
                  for suffix in ("", "-wal", "-shm", "-journal")]
        if _dedicated(database.parent, writable):
            dirs.append(database.parent)
    if key_file:
        files.append(Path(key_file).resolve())
    files = [f for f in files if not any(d in f.parents for d in dirs)]
    return Sandbox(chosen, reason, tuple(dirs), tuple(files), writable,
                   StepUser.named(step_user) if step_user else None, pids_max,
                   # a step user is bounded by RLIMIT_NPROC: joining a cgroup v1 costs
                   # 8-12 ms per command, a limit inherited through exec nothing
                   leftovers.PidsCgroups.detect() if pids_max and not step_user else None)


def _choose(mode: str) -> tuple[Mode, str]:
    if mode == "none":
        return "none", "ANSFLOW_SANDBOX=none"
    problem = bwrap_problem()
    if mode == "bwrap":
        if problem:
            raise ConfigurationError(f"ANSFLOW_SANDBOX=bwrap, but {problem}")
        return "bwrap", "ANSFLOW_SANDBOX=bwrap"
    if problem:
        return "none", problem
    return "bwrap", "bwrap works here"


def _sqlite_file(url: str) -> Path | None:
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).resolve()


def _dedicated(directory: Path, writable: tuple[Path, ...]) -> bool:
    """Whether the database's directory can be hidden whole: not the worker's working
    directory, the interpreter's tree, one of their ancestors or a writable path (a
    database next to a project, as with ``ansflow run``, hides only its own files)."""
    kept = [Path.cwd().resolve(), Path(sys.prefix).resolve(), *writable]
    return directory != Path("/") and not any(
        directory == path or directory in path.parents for path in kept) and not any(
        path in directory.parents for path in writable)


@dataclass(slots=True)
class Confined:
    """One command as the sandbox starts it; ``engine/process.py`` spawns ``argv`` with
    ``env`` in its own session and calls ``release`` when it is over."""

    argv: list[str]
    env: dict[str, str]
    tag: str
    bwrap: bool
    cgroup: Path | None = None
    cgroups: leftovers.PidsCgroups | None = field(default=None, repr=False)

    @property
    def cheap_release(self) -> bool:
        """Whether ``release`` is quick enough to run on the event loop: no scan of
        /proc (bwrap's kernel does the killing, or the cgroup lists the processes)."""
        return self.bwrap or self.cgroup is not None

    def leftovers(self) -> list[int]:
        """Processes of this command that are still alive (outside bwrap's namespace,
        where the kernel does this job): the members of its pids cgroup, which no
        ``setsid`` leaves, or else the processes that carry its tag."""
        if self.cgroup is not None:
            found = leftovers.PidsCgroups.members(self.cgroup)
        else:
            found = leftovers.tagged(lambda tag: tag == self.tag)
        return sorted(pid for pid in found if not leftovers.is_zombie(pid))

    def kill_leftovers(self) -> int:
        """Kill whatever the command left running; how many processes that was."""
        return 0 if self.bwrap else leftovers.kill_until_gone(self.leftovers)

    def kill_escaped(self) -> int:
        """Kill every process of the command, in bwrap too (where the kernel does it once
        the sandbox is set up, but not for a child it was still making). Blocking."""
        return leftovers.kill_until_gone(self.leftovers)

    def release(self) -> int:
        """After the command: kill its leftovers and remove its pids cgroup. Blocking."""
        killed = self.kill_leftovers()
        if self.cgroup is not None and self.cgroups is not None:
            self.cgroups.remove(self.cgroup)
        return killed


@dataclass(frozen=True, slots=True)
class StepSandbox:
    """The sandbox of one step attempt: its workspace and output file are writable, its
    private temp directory (``temp_dir``, for files the worker hands to the step's
    commands, such as a key) is writable and removed by ``close``."""

    policy: Sandbox
    label: str
    workspace: Path
    output_file: Path
    temp_dir: Path
    network: bool = True
    readable: tuple[Path, ...] = ()

    def reading(self, *paths: Path) -> StepSandbox:
        """The same sandbox where ``paths`` (a local repository) are also visible, read
        only; a path holding or inside hidden service state stays hidden."""
        allowed = tuple(p.resolve() for p in paths if not self._touches_hidden(p.resolve()))
        return replace(self, readable=self.readable + allowed)

    def _touches_hidden(self, path: Path) -> bool:
        hidden = (*self.policy.hidden_dirs, *self.policy.hidden_files)
        return any(path == h or h in path.parents or path in h.parents for h in hidden)

    @property
    def cheap_confine(self) -> bool:
        """Whether ``confine`` is quick enough to run on the event loop (a few stats and
        a cgroup): not when a step user's workspace is walked to hand it over."""
        return self.policy.user is None

    def confine(self, argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> Confined:
        """How to start ``argv``: wrapped, tagged and with its pids cgroup made. Blocking."""
        policy = self.policy
        serial, tag = leftovers.new_tag(self.label)
        if policy.user is not None:
            hand_over(policy.user, [self.workspace, self.output_file, self.temp_dir])
        command = [*(policy.user.setpriv() if policy.user else []), *argv]
        if policy.mode == "bwrap":
            command = [*self._bwrap(cwd), "--", *command]
        cgroup = policy.cgroups.create(serial, policy.pids_max) if policy.cgroups else None
        if cgroup is not None:
            command = ["/bin/sh", "-c", 'echo $$ >"$0" && exec "$@"',
                       str(cgroup / "cgroup.procs"), *command]
        elif policy.user is not None and policy.pids_max:
            command = [*policy.user.prlimit(policy.pids_max), *command]
        return Confined(command, {**env, leftovers.TAG_VAR: tag}, tag,
                        policy.mode == "bwrap", cgroup, policy.cgroups)

    def _bwrap(self, cwd: Path) -> list[str]:
        argv = [bwrap_path() or "bwrap", *SYSTEM, *self._mounts(), "--chdir", str(cwd),
                *NAMESPACES, *LIFETIME]
        if not self.network:
            argv.append("--unshare-net")
        argv += ["--cap-drop", "ALL"]
        if self.policy.user is not None:  # for setpriv, which drops them with the uid
            argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        return argv

    def _mounts(self) -> list[str]:
        """Later mounts cover earlier ones: the shared writable paths, then the service
        state hidden (also where it lies inside them), then what this step needs. A
        missing mount point is skipped: bwrap could not make it on the read-only system."""
        policy = self.policy
        argv: list[str] = []
        made: set[Path] = set()
        for path in policy.writable:
            if path.exists():
                argv += [*_parents(path, (Path("/tmp"),), made), "--bind", str(path), str(path)]
        for directory in policy.hidden_dirs:
            if directory.is_dir():
                argv += ["--perms", "0755", "--tmpfs", str(directory)]
        for file in policy.hidden_files:
            if file.exists():
                argv += ["--ro-bind", os.devnull, str(file)]
        emptied = (Path("/tmp"), *policy.hidden_dirs)
        wanted = [*(("--bind", p) for p in (self.workspace, self.output_file, self.temp_dir)),
                  *(("--ro-bind", p) for p in self.readable)]
        for option, path in wanted:
            if path.exists():
                argv += [*_parents(path, emptied, made), option, str(path), str(path)]
        return argv

    def close(self) -> None:
        """Remove the temp directory. Blocking."""
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _parents(path: Path, emptied: Sequence[Path], made: set[Path]) -> list[str]:
    """``--dir`` for the parents of ``path`` inside an emptied directory: bwrap would
    make them 0700, which a step user could not pass through."""
    argv: list[str] = []
    for parent in reversed(path.parents):
        if parent not in made and any(e in parent.parents for e in emptied):
            made.add(parent)
            argv += ["--perms", "0755", "--dir", str(parent)]
    return argv
