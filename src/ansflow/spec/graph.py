"""Pure graph logic: cycles, levels, the ready-set state machine, critical path and slack."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass


class Dag:
    """Steps by name with their dependencies. Construction does not check for cycles:
    call ``find_cycle`` first when the input is untrusted."""

    def __init__(self, dependencies: Mapping[str, Sequence[str]],
                 order: Mapping[str, int] | None = None) -> None:
        self.names: list[str] = list(dependencies)
        self.dependencies: dict[str, tuple[str, ...]] = {
            name: tuple(dict.fromkeys(deps)) for name, deps in dependencies.items()
        }
        self.dependents: dict[str, list[str]] = {name: [] for name in self.names}
        for name, deps in self.dependencies.items():
            for dep in deps:
                self.dependents[dep].append(name)
        self.order = {name: (order or {}).get(name, 0) for name in self.names}

    def find_cycle(self) -> list[str] | None:
        """A cycle as the steps in dependency order, first step repeated at the end."""
        state: dict[str, int] = {}  # 1 = on the stack, 2 = done
        for root in self.names:
            if state.get(root):
                continue
            stack: list[tuple[str, Iterable[str]]] = [(root, iter(self.dependents[root]))]
            path = [root]
            state[root] = 1
            while stack:
                node, children = stack[-1]
                child = next(iter(children), None)
                if child is None:
                    stack.pop()
                    path.pop()
                    state[node] = 2
                elif state.get(child) == 1:
                    return [*path[path.index(child):], child]
                elif not state.get(child):
                    state[child] = 1
                    path.append(child)
                    stack.append((child, iter(self.dependents[child])))
        return None

    def topological_order(self) -> list[str]:
        plan = Plan(self)
        ordered: list[str] = []
        while ready := plan.take_ready(len(self.names)):
            for name in ready:
                ordered.append(name)
                plan.complete(name)
        return ordered

    def levels(self) -> list[list[str]]:
        """Steps grouped by depth: level n holds steps whose longest dependency chain is n."""
        depth: dict[str, int] = {}
        for name in self.topological_order():
            depth[name] = 1 + max((depth[d] for d in self.dependencies[name]), default=-1)
        grouped: dict[int, list[str]] = {}
        for name, level in depth.items():
            grouped.setdefault(level, []).append(name)
        return [sorted(grouped[i], key=self.sort_key) for i in sorted(grouped)]

    def ancestors(self, name: str) -> set[str]:
        seen: set[str] = set()
        todo = list(self.dependencies[name])
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo.extend(self.dependencies[node])
        return seen

    def sort_key(self, name: str) -> tuple[int, str]:
        return (self.order[name], name)


class Plan:
    """Which steps may start: a step becomes ready once every dependency is complete.

    Incremental: ``complete`` touches only the finished step's dependents, so a whole
    run costs O(steps + edges). Whether a ready step actually runs or is skipped is the
    executor's decision; it reports back with ``complete`` either way.
    """

    def __init__(self, dag: Dag, completed: Iterable[str] = (),
                 started: Iterable[str] = ()) -> None:
        """``started``: steps under way that must not be handed out again (an approval
        that is waiting)."""
        self._dag = dag
        self._missing = {name: len(deps) for name, deps in dag.dependencies.items()}
        self._ready: list[tuple[int, str]] = []
        self._taken: set[str] = set(started)
        self._completed: set[str] = set()
        for name in self._dag.names:
            if self._missing[name] == 0:
                heapq.heappush(self._ready, (dag.order[name], name))
        for name in completed:
            self._taken.add(name)
            self.complete(name)
        self._ready = [item for item in self._ready if item[1] not in self._taken]
        heapq.heapify(self._ready)

    def take_ready(self, limit: int, allow: Callable[[str], bool] | None = None) -> list[str]:
        """Up to ``limit`` ready steps, by ``order`` then name; they count as started.
        Steps ``allow`` refuses stay ready for a later call."""
        taken: list[str] = []
        held: list[tuple[int, str]] = []
        while self._ready and len(taken) < limit:
            item = heapq.heappop(self._ready)
            if allow is not None and not allow(item[1]):
                held.append(item)
                continue
            self._taken.add(item[1])
            taken.append(item[1])
        for item in held:
            heapq.heappush(self._ready, item)
        return taken

    @property
    def ready_count(self) -> int:
        return len(self._ready)

    def complete(self, name: str) -> list[str]:
        """Mark ``name`` complete; returns the steps that became ready because of it."""
        if name in self._completed:
            return []
        self._completed.add(name)
        newly: list[str] = []
        for child in self._dag.dependents[name]:
            self._missing[child] -= 1
            if self._missing[child] == 0 and child not in self._taken:
                heapq.heappush(self._ready, (self._dag.order[child], child))
                newly.append(child)
        return newly

    def waiting_on(self, name: str) -> list[str]:
        """The dependencies of ``name`` that are not complete yet."""
        return [d for d in self._dag.dependencies[name] if d not in self._completed]

    @property
    def finished(self) -> bool:
        return len(self._completed) == len(self._dag.names)


@dataclass(frozen=True, slots=True)
class CriticalPath:
    steps: list[str]
    duration_seconds: float
    slack_seconds: dict[str, float]


def critical_path(dag: Dag, durations: Mapping[str, float]) -> CriticalPath:
    """Longest duration-weighted path, and each step's slack (how much it could grow
    without lengthening the whole run). Steps missing from ``durations`` weigh 0."""
    order = dag.topological_order()
    earliest_finish: dict[str, float] = {}
    best_parent: dict[str, str | None] = {}
    for name in order:
        parent = max(dag.dependencies[name], key=lambda d: earliest_finish[d], default=None)
        start = earliest_finish[parent] if parent else 0.0
        earliest_finish[name] = start + durations.get(name, 0.0)
        best_parent[name] = parent
    if not order:
        return CriticalPath([], 0.0, {})
    total = max(earliest_finish.values())
    latest_finish: dict[str, float] = {}
    for name in reversed(order):
        latest_finish[name] = min(
            (latest_finish[c] - durations.get(c, 0.0) for c in dag.dependents[name]),
            default=total,
        )
    slack = {n: round(max(latest_finish[n] - earliest_finish[n], 0.0), 6) for n in order}
    position = {name: index for index, name in enumerate(order)}
    end: str | None = max(order, key=lambda n: (earliest_finish[n], -position[n]))
    path: list[str] = []
    while end is not None:
        path.append(end)
        end = best_parent[end]
    return CriticalPath(path[::-1], round(total, 6), slack)
