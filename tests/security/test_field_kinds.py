"""Every built-in field that a shell or Python runs is declared as such (PRODUCT.md 8)."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from ansflow.errors import DefinitionError
from ansflow.spec.substitution import ConfigPath, FieldKind
from ansflow.steps.base import get_step_type, step_type_names
from tests.builders import parse, pipeline_doc

K = FieldKind
CASES: list[tuple[str, dict[str, Any], ConfigPath, FieldKind]] = [
    ("custom", {"script": "x"}, ("script",), K.BASH),
    ("custom", {"script": "x", "shell": "bash"}, ("script",), K.BASH),
    ("custom", {"script": "x", "shell": "sh"}, ("script",), K.SH),
    ("custom", {"script": "x", "shell": "python"}, ("script",), K.PYTHON),
    ("custom", {}, ("shell",), K.FIXED),
    ("custom", {}, ("file",), K.PATH),
    ("custom", {}, ("args", 0), K.TEXT),
    ("build", {"tool": "shell", "command": "x"}, ("command",), K.BASH),
    ("build", {"tool": "make"}, ("args", 0), K.ARGUMENT),
    ("build", {"tool": "shell", "command": "x"}, ("args", 0), K.TEXT),
    ("build", {}, ("tool",), K.FIXED),
    ("build", {}, ("artifacts", 1), K.PATH),
    ("build", {}, ("build_args", "V"), K.TEXT),
    ("test", {"command": "x"}, ("command",), K.BASH),
    ("test", {"framework": "pytest"}, ("args", 0), K.ARGUMENT),
    ("test", {}, ("framework",), K.FIXED),
    ("security_scan", {}, ("scanners", 0, "command"), K.BASH),
    ("security_scan", {}, ("scanners", 0), K.FIXED),
    ("security_scan", {}, ("scanners", 0, "name"), K.FIXED),
    ("security_scan", {}, ("scanners", 0, "args", 0), K.ARGUMENT),
    ("deploy", {"target": "script"}, ("script",), K.BASH),
    ("deploy", {"target": "script"}, ("script", "script"), K.BASH),
    ("deploy", {"target": "ssh"}, ("command",), K.REMOTE_SHELL),
    ("deploy", {"target": "ssh"}, ("ssh", "command"), K.REMOTE_SHELL),
    ("deploy", {"target": "ssh"}, ("host",), K.ARGUMENT),
    ("deploy", {"target": "local"}, ("path",), K.PATH),
    ("deploy", {"target": "helm"}, ("chart",), K.ARGUMENT),
    ("deploy", {"target": "helm"}, ("set", "image.tag"), K.TEXT),
    ("deploy", {}, ("target",), K.FIXED),
    ("fetch_code", {}, ("repo",), K.ARGUMENT),
    ("fetch_code", {}, ("ref",), K.ARGUMENT),
    ("fetch_code", {}, ("path",), K.PATH),
    ("notify", {}, ("channels", 0, "url"), K.TEXT),
    ("notify", {}, ("message",), K.TEXT),
    ("approval", {}, ("message",), K.TEXT),
    ("approval", {}, ("approvers", 0), K.FIXED),
    ("approval", {}, ("timeout",), K.FIXED),
]


@pytest.mark.parametrize(("type_name", "raw", "path", "kind"), CASES)
def test_field_kinds(type_name: str, raw: dict[str, Any], path: ConfigPath,
                     kind: FieldKind) -> None:
    assert get_step_type(type_name).field_kind(raw, path) == kind


def test_every_built_in_type_documents_its_substitution() -> None:
    for name in step_type_names():
        module = sys.modules[type(get_step_type(name)).__module__]
        assert "Substitution" in (module.__doc__ or ""), name


@pytest.mark.parametrize("config", [{"approvers": ["${{ vars.who }}"]},
                                    {"timeout": "${{ vars.seconds }}"}])
def test_who_may_approve_and_for_how_long_is_never_a_trigger_s(config: dict[str, Any]
                                                                ) -> None:
    doc = pipeline_doc({"name": "gate", "type": "approval", "config": config})
    with pytest.raises(DefinitionError) as caught:
        parse(doc)
    [detail] = caught.value.details
    assert detail.step == "gate" and detail.field is not None
    assert detail.field.startswith(f"config.{next(iter(config))}"), detail
    assert "must be written out" in detail.message
