"""The ``ansflow`` command."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Annotated

import typer

from ansflow import __version__
from ansflow.cli.errors import fail, load_settings, run_async
from ansflow.cli.secrets import secrets_app
from ansflow.cli.tokens import token_app
from ansflow.config import get_settings
from ansflow.errors import AnsFlowError, DefinitionError
from ansflow.spec.limits import MAX_DEFINITION_BYTES, too_large
from ansflow.spec.model import PipelineSpec, parse_definition
from ansflow.triggers.inputs import start_problems

# plain help: placeholders are the metavars given here, never <str>, <int> or <bool>
app = typer.Typer(help="AnsFlow: run CI/CD pipelines as DAGs of atomic steps.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None)
db_app = typer.Typer(help="Database schema management.", no_args_is_help=True,
                     rich_markup_mode=None)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
app.add_typer(secrets_app, name="secrets")

EXIT_INVALID = 2
FileArg = Annotated[Path, typer.Argument(help="Pipeline file (YAML or JSON).", metavar="FILE")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ansflow {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """AnsFlow: run CI/CD pipelines as DAGs of atomic steps."""


def load_file(path: Path) -> tuple[PipelineSpec, str, str]:
    """Read and validate a pipeline file, or exit 2 printing every problem."""
    fmt = "json" if path.suffix.lower() == ".json" else "yaml"
    from ansflow.steps.base import STEP_TYPES  # only commands that read a pipeline pay for it

    try:
        text = _read_definition(path)
        spec = parse_definition(text, "application/json" if fmt == "json" else None,
                                step_types=STEP_TYPES)
        return spec, text, fmt
    except DefinitionError as exc:
        typer.echo(f"{path}: {exc.message}", err=True)
        for detail in exc.details:
            typer.echo(f"  - {detail}", err=True)
        raise typer.Exit(EXIT_INVALID) from exc


def _read_definition(path: Path) -> str:
    try:
        if (size := path.stat().st_size) > MAX_DEFINITION_BYTES:
            raise too_large(size)  # before reading a file of any size
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read {path}: {exc}", EXIT_INVALID) from exc


def _variables(pairs: list[str]) -> dict[str, str]:
    variables = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise fail(f"--var expects KEY=VALUE, got {pair!r}", EXIT_INVALID)
        variables[key] = value
    return variables


@app.command()
def validate(file: FileArg) -> None:
    """Check a pipeline file; print its DAG levels and the estimated critical path (from
    the steps' recent durations once the pipeline has run here)."""
    from ansflow.cli.output import print_dag
    from ansflow.cli.run import past_durations

    spec, _, _ = load_file(file)
    print_dag(spec, durations=run_async(past_durations(load_settings(), spec.name)))


@app.command()
def run(
    file: FileArg,
    var: Annotated[list[str] | None, typer.Option(
        "--var", metavar="KEY=VALUE", help="A variable for vars.* (repeat the option)")] = None,
    ref: Annotated[str | None, typer.Option(
        "--ref", metavar="REF", help="Trigger ref, e.g. refs/heads/main")] = None,
    commit: Annotated[str | None, typer.Option("--commit", metavar="SHA",
                                               help="Trigger commit")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the execution record")] = False,
    logs: Annotated[bool, typer.Option(
        "--logs", help="Print every step's output as it comes, prefixed by the step")] = False,
) -> None:
    """Run a pipeline file now, on this machine; exit 0 only on success. A failed step's
    last log lines follow the summary."""
    spec, text, fmt = load_file(file)
    variables = _variables(var or [])
    if problems := start_problems(ref, commit, variables):
        raise fail("; ".join(problems), EXIT_INVALID)
    from ansflow.cli.run import run_file  # after the checks: a bad file fails without the wait

    success = run_async(run_file(load_settings(), spec, text, fmt, variables,
                                 ref=ref, commit=commit, as_json=as_json, logs=logs))
    raise typer.Exit(0 if success else 1)


@app.command()
def approve(
    execution: Annotated[int, typer.Argument(help="Execution id.", min=1)],
    step: Annotated[str, typer.Argument(help="The waiting approval step.")],
    reject: Annotated[bool, typer.Option("--reject", help="Reject instead")] = False,
    comment: Annotated[str | None, typer.Option(help="Why (kept with the decision)")] = None,
) -> None:
    """Approve (or --reject) a waiting approval step; the execution resumes at once."""
    from ansflow.cli.approve import decide_step

    who = run_async(decide_step(load_settings(), execution, step, approved=not reject,
                                comment=comment))
    typer.echo(f"{'rejected' if reject else 'approved'} step {step!r} of execution "
               f"{execution} as {who}", err=True)


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", metavar="HOST", help="Address to listen on.")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="PORT", help="Port to listen on.")
                    ] = 8000,
    workers: Annotated[int, typer.Option("--workers", metavar="N", min=1,
                                         help="API processes sharing the port.")] = 1,
) -> None:
    """Start the HTTP API (executions run in-process when no Redis is configured)."""
    from ansflow.cli.health import write_role
    from ansflow.cli.serving import serve as serve_api
    from ansflow.resources import Resources

    async def check_schema() -> None:  # fail here, clearly, rather than inside uvicorn
        async with Resources.open(get_settings()):
            pass

    if workers > 1 and get_settings().backend != "arq":
        # without arq each API process would also sweep and fire the cron schedules
        raise fail("--workers above 1 needs the arq backend (set ANSFLOW_REDIS_URL)",
                   EXIT_INVALID)
    run_async(check_schema())
    write_role(load_settings(), "serve", host=host, port=port)
    serve_api(host, port, workers)


@app.command()
def logs(
    execution: Annotated[int, typer.Argument(metavar="EXECUTION", help="The execution's id")],
    step: Annotated[str | None, typer.Argument(
        metavar="[STEP]", help="One step (default: every step, prefixed by name)")] = None,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Keep printing new output until the execution ends")] = False,
    url: Annotated[str, typer.Option("--url", metavar="URL", envvar="ANSFLOW_URL",
                                     help="The server")] = "http://127.0.0.1:8000",
    token: Annotated[str | None, typer.Option("--token", metavar="TOKEN", envvar="ANSFLOW_TOKEN",
                                              help="An API token")] = None,
) -> None:
    """Print an execution's logs from a server (`ansflow serve`)."""
    from ansflow.cli.logs import Remote, show_logs

    show_logs(Remote(url, token), execution, step, follow)


@app.command()
def worker(
    labels: Annotated[str | None, typer.Option(
        "--labels", metavar="A,B",
        help="This worker's labels: it runs steps whose runs_on it has every label of "
             "(default: ANSFLOW_WORKER_LABELS).")] = None,
    concurrency: Annotated[int | None, typer.Option(
        "--concurrency", metavar="N", min=1,
        help="Steps this worker runs at once, of every execution (default: "
             "ANSFLOW_WORKER_CONCURRENCY, else worker max jobs x max parallel).")] = None,
) -> None:
    """Start an arq worker that runs executions and steps (needs ANSFLOW_REDIS_URL)."""
    import logging

    from ansflow.cli.health import write_role
    from ansflow.queue.worker import run_worker

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if labels is not None:
        os.environ["ANSFLOW_WORKER_LABELS"] = labels
    if concurrency is not None:
        os.environ["ANSFLOW_WORKER_CONCURRENCY"] = str(concurrency)
    get_settings.cache_clear()
    settings = load_settings()
    key = f"{settings.queue_name}:health-check:{uuid.uuid4().hex}"
    write_role(settings, "worker", health_key=key)
    try:
        run_worker(settings, health_key=key)
    except AnsFlowError as exc:
        raise fail(str(exc)) from exc


@app.command()
def healthcheck() -> None:
    """Exit 0 when this host's `ansflow serve` or `ansflow worker` is healthy (for the
    container's health check; see ANSFLOW_HEALTH_FILE), else print why and exit 1."""
    from ansflow.cli.health import problem

    found = problem(load_settings())
    if found is not None:
        raise fail(f"unhealthy: {found}")
    typer.echo("healthy")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations."""
    from ansflow.db.database import Database

    async def upgrade() -> None:
        db = Database(get_settings())
        try:
            await db.upgrade()
        finally:
            await db.dispose()

    run_async(upgrade())
    typer.echo("database is up to date", err=True)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
