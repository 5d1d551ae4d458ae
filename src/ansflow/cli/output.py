"""What the ``ansflow`` command prints: the DAG, live progress and the final summary."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ansflow.api.schemas import ExecutionPublic
from ansflow.spec.expr import to_text
from ansflow.spec.graph import Dag, critical_path
from ansflow.spec.matrix import PlannedStep, plan_steps
from ansflow.spec.model import PipelineSpec
from ansflow.spec.timeline import Attempt, parse_attempts, running_seconds
from ansflow.status import utcnow

if TYPE_CHECKING:  # the engine pulls in the database stack, which `validate` never needs
    from ansflow.engine.recorder import Event

STATUS_STYLE = {
    "success": "green", "failed": "red", "timed_out": "red", "cancelled": "yellow",
    "skipped": "dim", "running": "cyan", "retrying": "magenta", "pending": "white",
    "waiting": "yellow", "error": "red bold", "queued": "white",
}


def spec_dag(planned: list[PlannedStep]) -> Dag:
    return Dag({p.name: p.spec.depends_on for p in planned},
               order={p.name: p.spec.order for p in planned})


def print_dag(spec: PipelineSpec, out: TextIO = sys.stdout,
              durations: dict[str, float] | None = None) -> None:
    """Levels and the estimated critical path: weighed by ``durations`` (the steps' median
    durations in recent runs) when there are any, else by step count."""
    console = _console(out)
    planned = plan_steps(spec)
    dag = spec_dag(planned)
    console.print(f"[bold]{spec.name}[/]: {len(planned)} steps, "
                  f"max_parallel {spec.max_parallel or 'default'}; definition is valid")
    _print_matrices(console, planned)
    for number, level in enumerate(dag.levels(), 1):
        console.print(f"  level {number}: " + ", ".join(level))
    if durations:
        path = critical_path(dag, {p.name: durations.get(p.name, 0.0) for p in planned})
        console.print("estimated critical path (median durations of recent runs): "
                      + " -> ".join(path.steps) + f" ({path.duration_seconds:.2f}s)")
        return
    path = critical_path(dag, {p.name: 1.0 for p in planned})
    console.print("estimated critical path (by step count, no timings yet): "
                  + " -> ".join(path.steps) + f" ({len(path.steps)} steps)")


def _print_matrices(console: Console, planned: list[PlannedStep]) -> None:
    matrices: dict[str, list[PlannedStep]] = {}
    for p in planned:
        if p.matrix_of is not None:
            matrices.setdefault(p.matrix_of, []).append(p)
    for name, instances in matrices.items():
        console.print(f"  matrix {name}: {len(instances)} instances")
        for p in instances:
            values = ", ".join(f"{k}={to_text(v)}" for k, v in p.values.items())
            console.print(f"    {p.name}: {values}", markup=False)


PREFIX_COLOURS = ["cyan", "magenta", "green", "yellow", "blue", "bright_cyan",
                  "bright_magenta", "bright_green", "bright_yellow", "bright_blue"]


class Prefixer:
    """Prints log lines as ``name | line``, each step in its colour (``docker compose``)."""

    def __init__(self, console: Console, names: list[str]) -> None:
        self.console = console
        self.width = max((len(n) for n in names), default=0)
        self.colours = {n: PREFIX_COLOURS[i % len(PREFIX_COLOURS)] for i, n in enumerate(names)}

    def print(self, name: str, content: str) -> None:
        colour = self.colours.get(name, "white")
        for line in content.splitlines():
            # the line is the step's output: printed as text, never as rich markup
            self.console.print(f"[{colour}]{name.ljust(self.width)} |[/] ", end="")
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)


def _console(out: TextIO) -> Console:
    # a pipe or a file gets long lines rather than a table squeezed to 80 columns
    return Console(file=out, highlight=False, width=None if out.isatty() else 160)


class Progress:
    """A live table of the steps on a terminal; one line per change elsewhere, and with
    ``logs`` every step's output as it comes, prefixed by the step's name."""

    def __init__(self, spec: PipelineSpec, out: TextIO = sys.stderr, *, logs: bool = False
                 ) -> None:
        self.console = _console(out)
        self.names = [p.name for p in plan_steps(spec)]
        self.status = dict.fromkeys(self.names, "pending")
        self.attempts: dict[str, list[Attempt]] = {}
        """As recorded: the live display measures what the final table measures."""
        self.prefixer = Prefixer(self.console, self.names) if logs else None
        self.live: Live | None = None
        if self.console.is_terminal and not logs:
            self.live = Live(self._table(), console=self.console, refresh_per_second=8,
                             get_renderable=self._table, transient=False)

    def __enter__(self) -> Progress:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def __call__(self, event: Event) -> None:
        if event.kind == "log" and self.prefixer is not None:
            self.prefixer.print(str(event.data["step"]), str(event.data["content"]))
            return
        if event.kind != "step" or "status" not in event.data:
            return
        name, status = event.data["step"], str(event.data["status"])
        if isinstance(event.data.get("attempts"), list):
            self.attempts[name] = parse_attempts(event.data["attempts"])
        if status == self.status.get(name):
            return
        self.status[name] = status
        if self.live is None:
            self.console.print(f"{name}: {status}{self._took(name)}")

    def _ran(self, name: str) -> float | None:
        attempts = self.attempts.get(name)
        return running_seconds(attempts, utcnow()) if attempts else None

    def _took(self, name: str) -> str:
        ran = self._ran(name)
        if ran is None or self.status[name] in ("pending", "running", "retrying"):
            return ""
        return f" ({ran:.2f}s)"

    def _table(self) -> Table:
        table = Table(box=None, show_header=True, header_style="bold")
        table.add_column("step")
        table.add_column("status")
        table.add_column("time", justify="right")
        for name in self.names:
            status = self.status[name]
            ran = self._ran(name)
            took = "" if ran is None else f"{ran:.1f}s"
            table.add_row(name, f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]", took)
        return table


def print_summary(record: ExecutionPublic, out: TextIO = sys.stdout) -> None:
    console = _console(out)
    table = Table(title=f"execution #{record.id} of {record.pipeline_name}: "
                        f"{record.status}", box=None, header_style="bold")
    for column in ("step", "status", "ran", "waited (deps)", "waited (slot)", "backoff",
                   "slack", "attempts"):
        table.add_column(column, justify="left" if column in ("step", "status") else "right")
    for step in record.steps:
        timing = step.timing
        table.add_row(step.name, f"[{STATUS_STYLE.get(step.status, 'white')}]{step.status}[/]",
                      f"{timing.running:.2f}s", f"{timing.waiting_for_dependencies:.2f}s",
                      f"{timing.waiting_for_slot:.2f}s", f"{timing.backoff:.2f}s",
                      "" if step.slack_seconds is None else f"{step.slack_seconds:.2f}s",
                      str(len(step.attempts)))
    console.print(table)
    for step in record.steps:
        if step.error and step.status not in ("success", "skipped"):
            console.print(f"  [red]{step.name}[/]: {step.error}")
    path = record.critical_path
    if path:
        console.print("critical path: " + " -> ".join(path.steps)
                      + f" ({path.duration_seconds:.2f}s of {record.duration_seconds or 0:.2f}s)")
        for hop in path.hops:
            if hop.released_by == "slot":
                console.print(f"  {hop.step} started when a parallel slot freed")


def print_log_tail(name: str, tail: str, out: TextIO = sys.stdout) -> None:
    """The last lines of a failed step's log, where the error usually is."""
    console = _console(out)
    console.print(f"[red]--- last lines of {name} ---[/]")
    console.print(tail.rstrip("\n"), markup=False, highlight=False, soft_wrap=True)
