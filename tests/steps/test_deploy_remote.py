"""The deploy step's command-based targets (ssh, kubernetes, helm, docker_compose), run
against stub executables on a PATH the test builds: each records its argv."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.steps.conftest import RunStep

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----"
SSH_OPTIONS = ["-o", "StrictHostKeyChecking=accept-new", "-o", "BatchMode=yes"]


class Stubs:
    """A bin directory of stubs; ``calls()`` gives every argv they were run with, in order."""

    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.bin.mkdir()
        self.log = root / "calls.log"
        self.log.touch()

    def add(self, name: str, body: str = "") -> None:
        path = self.bin / name
        # NUL after each argument, RS after each call: arguments may hold newlines
        path.write_text(f'#!/bin/bash\nprintf "%s\\0" "${{0##*/}}" "$@" >> "{self.log}"\n'
                        f'printf "\\036" >> "{self.log}"\n{body}\n')
        path.chmod(0o755)

    @property
    def env(self) -> dict[str, str]:
        return {"PATH": str(self.bin), "ANSFLOW_COMMIT": "abcdef0123456789"}

    def calls(self) -> list[list[str]]:
        records = self.log.read_text().split("\x1e")[:-1]
        return [record.split("\0")[:-1] for record in records]


@pytest.fixture
def stubs(tmp_path: Path) -> Stubs:
    return Stubs(tmp_path)


def site(workspace: Path) -> None:
    (workspace / "site").mkdir()
    (workspace / "site" / "index.html").write_text("<h1>hi</h1>\n")
    (workspace / "site" / "about.html").write_text("<p>about</p>\n")


SSH_CONFIG: dict[str, Any] = {
    "target": "ssh", "environment": "prod", "source": "site", "host": "web1.example.invalid",
    "user": "deploy", "port": 2222, "remote_path": "/srv/www", "key": "deploy_key",
    "command": "sudo systemctl reload nginx",
}

# the ssh stub notes the mode and content of the key file it was given with -i
SSH_KEY_PROBE = """prev=
for arg in "$@"; do
  if [ "$prev" = -i ]; then
    /usr/bin/stat -c %a "$arg" >> "$KEY_PROBE"; /bin/cat "$arg" >> "$KEY_PROBE"
  fi
  prev=$arg
done"""


async def test_ssh_uploads_with_rsync_then_runs_the_command(
        run_step: RunStep, workspace: Path, stubs: Stubs, tmp_path: Path) -> None:
    site(workspace)
    stubs.add("ssh", SSH_KEY_PROBE)
    stubs.add("rsync")
    probe = tmp_path / "key-probe"
    run = await run_step("deploy", SSH_CONFIG, env={**stubs.env, "KEY_PROBE": str(probe)},
                         secrets={"deploy_key": KEY})
    assert run.result.success, run.result.error

    rsync, ssh = stubs.calls()
    assert rsync[:3] == ["rsync", "-az", "-e"]
    remote_shell = shlex.split(rsync[3])
    key_file = remote_shell[4]
    assert remote_shell == ["ssh", "-p", "2222", "-i", key_file, *SSH_OPTIONS]
    assert rsync[4:] == ["--", f"{workspace.resolve() / 'site'}/",
                         "deploy@web1.example.invalid:/srv/www/"]
    assert ssh == ["ssh", "-p", "2222", "-i", key_file, *SSH_OPTIONS, "--",
                   "deploy@web1.example.invalid", "sudo systemctl reload nginx"]
    assert probe.read_text() == f"600\n{KEY}\n"
    assert not Path(key_file).exists()
    assert not Path(key_file).parent.exists()
    assert workspace.resolve() not in Path(key_file).parents

    record = run.result.result
    assert record["commands"] == [rsync[:], ssh]
    assert (record["path"], record["version"], record["commit"]) == (
        "deploy@web1.example.invalid:/srv/www", "abcdef0", "abcdef0123456789")


async def test_ssh_falls_back_to_scp_without_rsync(run_step: RunStep, workspace: Path,
                                                   stubs: Stubs) -> None:
    site(workspace)
    stubs.add("ssh")
    stubs.add("scp")
    config = {k: v for k, v in SSH_CONFIG.items() if k not in ("key", "user", "command")}
    run = await run_step("deploy", config, env=stubs.env)
    assert run.result.success, run.result.error
    source = workspace.resolve() / "site"
    assert stubs.calls() == [
        ["ssh", "-p", "2222", *SSH_OPTIONS, "--", "web1.example.invalid", "mkdir", "-p", "--",
         "/srv/www"],
        ["scp", "-r", "-P", "2222", *SSH_OPTIONS, "--", str(source / "about.html"),
         str(source / "index.html"), "web1.example.invalid:/srv/www/"],
    ]


async def test_ssh_failing_command_fails_the_step(run_step: RunStep, workspace: Path,
                                                  stubs: Stubs) -> None:
    site(workspace)
    stubs.add("ssh", "exit 255")
    stubs.add("rsync")
    run = await run_step("deploy", SSH_CONFIG, env=stubs.env, secrets={"deploy_key": KEY})
    assert not run.result.success
    assert run.result.error == "remote command exited with code 255"
    assert run.result.exit_code == 255
    assert [argv[0] for argv in run.result.result["commands"]] == ["rsync", "ssh"]
    key_file = run.result.result["commands"][1][4]
    assert not Path(key_file).exists()


async def test_ssh_key_secret_must_be_stored(run_step: RunStep, workspace: Path,
                                             stubs: Stubs) -> None:
    site(workspace)
    stubs.add("ssh")
    stubs.add("rsync")
    run = await run_step("deploy", SSH_CONFIG, env=stubs.env)
    assert run.result.error == "secret 'deploy_key' (the ssh key) is not stored"
    assert stubs.calls() == []


async def test_ssh_without_rsync_or_scp_is_a_missing_tool(run_step: RunStep, workspace: Path,
                                                          stubs: Stubs) -> None:
    site(workspace)
    stubs.add("ssh")
    run = await run_step("deploy", SSH_CONFIG, env=stubs.env, secrets={"deploy_key": KEY})
    assert run.result.error == ("tool 'rsync' is not installed on this worker "
                                "(and neither is 'scp')")
    assert run.result.error_code == "tool_missing"


async def test_kubernetes_applies_manifests_sets_the_image_and_waits(
        run_step: RunStep, workspace: Path, stubs: Stubs) -> None:
    (workspace / "k8s").mkdir()
    for name in ("service.yaml", "deployment.yaml", "notes.txt"):
        (workspace / "k8s" / name).write_text("kind: x\n")
    stubs.add("kubectl")
    run = await run_step("deploy", {
        "target": "kubernetes", "environment": "prod", "manifests": ["k8s/*.yaml"],
        "deployment": "web", "container": "app", "image": "registry.example/web:1.4.2",
        "namespace": "shop", "context": "prod-cluster", "timeout": 120,
    }, env=stubs.env)
    assert run.result.success, run.result.error
    kubectl = ["kubectl", "--context", "prod-cluster", "--namespace", "shop"]
    assert stubs.calls() == [
        [*kubectl, "apply", "-f", "k8s/deployment.yaml", "-f", "k8s/service.yaml"],
        [*kubectl, "set", "image", "deployment/web", "app=registry.example/web:1.4.2"],
        [*kubectl, "rollout", "status", "deployment/web", "--timeout=120s"],
    ]
    assert run.result.result["commands"] == stubs.calls()
    assert run.result.result["path"] == "deployment/web"


async def test_kubernetes_set_image_alone(run_step: RunStep, stubs: Stubs) -> None:
    stubs.add("kubectl")
    run = await run_step("deploy", {"target": "kubernetes", "environment": "staging",
                                    "deployment": "api", "container": "api", "image": "api:2"},
                         env=stubs.env)
    assert run.result.success, run.result.error
    assert stubs.calls() == [
        ["kubectl", "set", "image", "deployment/api", "api=api:2"],
        ["kubectl", "rollout", "status", "deployment/api", "--timeout=300s"],
    ]


async def test_kubernetes_failed_rollout_fails_the_step(run_step: RunStep, stubs: Stubs) -> None:
    stubs.add("kubectl", '[ "$1" = rollout ] && exit 1; exit 0')
    run = await run_step("deploy", {"target": "kubernetes", "environment": "staging",
                                    "deployment": "api", "container": "api", "image": "api:2"},
                         env=stubs.env)
    assert run.result.error == "kubectl rollout status exited with code 1"
    assert len(run.result.result["commands"]) == 2


async def test_kubernetes_manifest_matching_nothing_fails(run_step: RunStep,
                                                          stubs: Stubs) -> None:
    stubs.add("kubectl")
    run = await run_step("deploy", {"target": "kubernetes", "environment": "staging",
                                    "manifests": ["k8s/*.yaml"]}, env=stubs.env)
    assert run.result.error == "manifest 'k8s/*.yaml' matches no file in the workspace"
    assert stubs.calls() == []


@pytest.mark.parametrize(("target", "config", "tool"), [
    ("kubernetes", {"deployment": "web", "container": "app", "image": "web:1"}, "kubectl"),
    ("helm", {"release": "shop", "chart": "charts/shop"}, "helm"),
    ("docker_compose", {}, "docker"),
    ("ssh", {"host": "h", "remote_path": "/srv"}, "ssh"),
])
async def test_missing_tool_is_named(run_step: RunStep, stubs: Stubs, target: str,
                                     config: dict[str, Any], tool: str) -> None:
    run = await run_step("deploy", {"target": target, "environment": "prod", **config},
                         env=stubs.env)
    assert not run.result.success
    assert run.result.error == f"tool {tool!r} is not installed on this worker"
    assert run.result.error_code == "tool_missing"
    assert run.result.retryable is False
    assert run.result.result["commands"] == []


async def test_helm_upgrade_install_with_values_and_sets(run_step: RunStep, workspace: Path,
                                                         stubs: Stubs) -> None:
    (workspace / "deploy").mkdir()
    (workspace / "deploy" / "prod.yaml").write_text("replicas: 3\n")
    stubs.add("helm")
    run = await run_step("deploy", {
        "target": "helm", "environment": "prod", "release": "shop", "chart": "./charts/shop",
        "namespace": "shop-prod", "values": ["deploy/prod.yaml"],
        "set": {"image.tag": "${{ not-rendered-here }}", "replicas": 3, "debug": False},
    }, env=stubs.env)
    assert run.result.success, run.result.error
    assert stubs.calls() == [[
        "helm", "upgrade", "--install", "shop", "./charts/shop",
        "--namespace", "shop-prod", "--create-namespace", "-f", "deploy/prod.yaml",
        "--set", "image.tag=${{ not-rendered-here }}", "--set", "replicas=3",
        "--set", "debug=false", "--wait", "--atomic", "--timeout", "300s",
    ]]
    assert run.result.result["release"] == "shop"


async def test_helm_missing_values_file_fails(run_step: RunStep, stubs: Stubs) -> None:
    stubs.add("helm")
    run = await run_step("deploy", {"target": "helm", "environment": "prod", "release": "r",
                                    "chart": "c", "values": ["prod.yaml"]}, env=stubs.env)
    assert run.result.error == "values file 'prod.yaml' not found in the workspace"
    assert stubs.calls() == []


async def test_docker_compose_up(run_step: RunStep, workspace: Path, stubs: Stubs) -> None:
    (workspace / "compose.prod.yml").write_text("services: {}\n")
    stubs.add("docker")
    run = await run_step("deploy", {
        "target": "docker_compose", "environment": "prod", "file": "compose.prod.yml",
        "project": "shop", "services": ["web", "worker"],
    }, env=stubs.env)
    assert run.result.success, run.result.error
    assert stubs.calls() == [["docker", "compose", "-f", "compose.prod.yml", "-p", "shop", "up",
                              "-d", "--remove-orphans", "web", "worker"]]


async def test_docker_compose_project_defaults_to_pipeline_and_environment(
        run_step: RunStep, stubs: Stubs) -> None:
    stubs.add("docker", "exit 3")
    run = await run_step("deploy", {"target": "docker_compose", "environment": "Staging.EU"},
                         env=stubs.env)
    assert stubs.calls() == [["docker", "compose", "-p", "test-pipeline-staging-eu", "up", "-d",
                              "--remove-orphans"]]
    assert run.result.error == "docker compose up exited with code 3"
