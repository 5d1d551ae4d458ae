"""Benchmark workloads: one graph description each, emitted for every runner."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Node:
    name: str
    deps: list[str]
    command: str


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    nodes: list[Node]
    max_parallel: int = 5
    ideal_seconds: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)

    def makefile(self) -> str:
        lines = [".PHONY: all " + " ".join(n.name for n in self.nodes),
                 "all: " + " ".join(self._sinks()), ""]
        for node in self.nodes:
            lines.append(f"{node.name}: {' '.join(node.deps)}".rstrip())
            lines.append(f"\t@{node.command}")
        return "\n".join(lines) + "\n"

    def pipeline(self, name: str | None = None) -> dict[str, object]:
        return {"name": name or f"bench-{self.name.lower()}", "max_parallel": self.max_parallel,
                "steps": [{"name": n.name, "type": "custom", "depends_on": n.deps,
                           "config": {"script": n.command, "shell": "sh"}}
                          for n in self.nodes]}

    def write(self, directory: Path) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        makefile = directory / "Makefile"
        makefile.write_text(self.makefile())
        pipeline = directory / "pipeline.json"
        pipeline.write_text(json.dumps(self.pipeline(), indent=1))
        return makefile, pipeline

    def _sinks(self) -> list[str]:
        used = {d for n in self.nodes for d in n.deps}
        return [n.name for n in self.nodes if n.name not in used]


def layered(layers: int = 20, width: int = 10, command: str = "true") -> list[Node]:
    nodes: list[Node] = []
    previous: list[str] = []
    for layer in range(layers):
        names = [f"l{layer:02d}n{i:02d}" for i in range(width)]
        nodes += [Node(name, list(previous), command) for name in names]
        previous = names
    return nodes


def chain(length: int, command: str = "true") -> list[Node]:
    return [Node(f"s{i:04d}", [f"s{i - 1:04d}"] if i else [], command) for i in range(length)]


def diamonds(count: int, command: str) -> list[Node]:
    nodes: list[Node] = []
    tail: list[str] = []
    for i in range(count):
        a, b, c, d = (f"d{i:03d}{x}" for x in "abcd")
        nodes += [Node(a, tail, command), Node(b, [a], command), Node(c, [a], command),
                  Node(d, [b, c], command)]
        tail = [d]
    return nodes


def wide_dag(steps: int = 1000, width: int = 10) -> list[Node]:
    return layered(steps // width, width)


W5_COMMAND = "head -c 200000000 /dev/zero | tr '\\0' 'x' | fold -w 100"


def fan(width: int = 3, command: str = "true") -> list[Node]:
    """One root, ``width`` parallel steps, one sink: the W6 pipeline for width 3."""
    middle = [Node(f"m{i}", ["root"], command) for i in range(width)]
    return [Node("root", [], command), *middle, Node("sink", [m.name for m in middle], command)]


WORKLOADS: dict[str, Callable[[], Workload]] = {
    # the fixed cost of a run (process start-up, connecting, one step); also the base
    # W5's RSS growth is measured from
    "W0": lambda: Workload("W0", "one no-op step", [Node("noop", [], "true")]),
    "W1": lambda: Workload("W1", "200 no-op steps, 20 layers x 10, fan-in/fan-out, cap 5",
                           layered()),
    "W2": lambda: Workload("W2", "200-step chain of no-ops", chain(200)),
    "W3": lambda: Workload("W3", "100 x sleep 0.2, cap 5 (ideal 4.0 s)",
                           [Node(f"t{i:03d}", [], "sleep 0.2") for i in range(100)],
                           ideal_seconds=4.0),
    "W4": lambda: Workload("W4", "50 diamonds of sleep 0.05 (ideal 7.5 s)",
                           diamonds(50, "sleep 0.05"), ideal_seconds=7.5),
    "W7": lambda: Workload("W7", "1,000-step DAG, 100 layers x 10, cap 5", wide_dag()),
}
# Not in the timed matrix: W5 and W6 have their own procedures (bench/w5.py, bench/w6.py)
SPECIAL: dict[str, Callable[[], Workload]] = {
    "W5": lambda: Workload("W5", "one step printing 200 MB (2,000,000 lines of 100 x)",
                           [Node("print", [], W5_COMMAND)]),
    "W6": lambda: Workload("W6", "5-step no-op pipeline (root, 3 parallel, sink)", fan()),
}
