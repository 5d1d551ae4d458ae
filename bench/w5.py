"""W5: one step printing 200 MB. AnsFlow's wall time against the command with its output
thrown away, AnsFlow's peak RSS growth, and the log it stored."""

from __future__ import annotations

import sqlite3
import statistics
import sys
from pathlib import Path
from typing import Any

from runners import ANSFLOW, ApiRunner, CommandRunner, Runner, Sample
from services import Services, clean_env, mysql, vm_kb
from workloads import SPECIAL, W5_COMMAND, WORKLOADS, Workload

LOG_QUERY = ("SELECT se.log_bytes, COALESCE(SUM(sl.size), 0), COUNT(sl.id) "
             "FROM step_execution se LEFT JOIN step_log sl ON sl.step_execution_id = se.id "
             "WHERE se.pipeline_execution_id = {id} GROUP BY se.id, se.log_bytes")
LATEST = ("SELECT MAX(e.id) FROM pipeline_execution e JOIN pipeline p "
          "ON p.id = e.pipeline_id WHERE p.name = '{name}'")


def _direct() -> CommandRunner:
    return CommandRunner("direct", lambda w, d: (
        ["sh", "-c", f"{W5_COMMAND} > /dev/null"], clean_env()))


def _stored_log(runner: Runner, directory: Path) -> dict[str, int]:
    if isinstance(runner, ApiRunner):
        execution_id = runner.last_execution
        rows = mysql(LOG_QUERY.format(id=execution_id))
    elif runner.name == "ansflow-mariadb":
        execution_id = int(mysql(LATEST.format(name="bench-w5"))[0][0])
        rows = mysql(LOG_QUERY.format(id=execution_id))
    else:
        with sqlite3.connect(directory / "bench.db") as db:
            execution_id = int(db.execute(LATEST.format(name="bench-w5")).fetchone()[0])
            rows = [list(map(str, r)) for r in db.execute(LOG_QUERY.format(id=execution_id))]
    log_bytes, stored, chunks = (int(v) for v in rows[0])
    return {"execution_id": execution_id, "log_bytes": log_bytes, "stored_bytes": stored,
            "chunks": chunks}


def _base_rss(runner: Runner, services: Services, tmp: Path) -> float:
    """Peak RSS (MB) of the runner on one no-op step: what W5's growth is measured from.
    The API worker is restarted first, as its high-water mark cannot be reset."""
    w0: Workload = WORKLOADS["W0"]()
    directory = tmp / "W0"
    w0.write(directory)
    if isinstance(runner, ApiRunner):
        services.stop(runner.worker)
        runner.worker = services.start_worker(1, runner.sandbox)
    runner.prepare(w0, directory)
    return max(runner.measure().rss_mb for _ in range(2))


def run_w5(runners: dict[str, Runner], services: Services, tmp: Path, repeat: int
           ) -> dict[str, Any]:
    workload = SPECIAL["W5"]()
    directory = tmp / "W5"
    workload.write(directory)
    chosen: dict[str, Runner] = {"direct": _direct()}
    chosen.update({n: r for n, r in runners.items() if n.partition("@")[0] in ANSFLOW})
    base = {n: _base_rss(r, services, tmp) for n, r in chosen.items() if n != "direct"}
    for runner in chosen.values():
        runner.prepare(workload, directory)
    samples: dict[str, list[Sample]] = {n: [] for n in chosen}
    for rep in range(repeat):
        for name, runner in chosen.items():
            samples[name].append(runner.measure())
            print(f"W5 {rep + 1}/{repeat} {name}: {samples[name][-1].wall:.2f} s",
                  file=sys.stderr)
    direct = statistics.median(s.wall for s in samples["direct"])
    rows: dict[str, Any] = {}
    for name, ss in samples.items():
        walls = [s.wall for s in ss]
        median = statistics.median(walls)
        peak = max(s.rss_mb for s in ss)
        rows[name] = {
            "median_s": round(median, 3), "min_s": round(min(walls), 3),
            "max_s": round(max(walls), 3), "all_ok": all(s.ok for s in ss),
            "ratio_to_direct": round(median / direct, 3), "peak_rss_mb": round(peak, 1),
            "rss": chosen[name].rss_note,
            "rss_growth_mb": round(peak - base[name], 1) if name in base else None,
            "base_rss_mb": round(base[name], 1) if name in base else None,
            "stored_log": _stored_log(chosen[name], directory) if name in base else None,
        }
    for name, runner in chosen.items():
        if isinstance(runner, ApiRunner):
            rows[name]["worker_vmrss_after_mb"] = round(
                vm_kb(runner.worker.pid, "VmRSS") / 1024, 1)
    return {"title": workload.title, "runners": rows}
