"""Run workloads on AnsFlow and baselines in one session, alternating, and report.

    .venv/bin/python bench/run.py --workloads W1,W2 --runners make,asyncio,ansflow-sqlite -n 5

Prints a table (median and min-max wall time, ratios to each baseline, per-step overhead
((wall - ideal) / steps) in ms, peak RSS) and writes the same figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from workloads import WORKLOADS, Workload

BIN = Path(sys.executable).parent
MYSQL_DB = "ansflow_bench"
MYSQL_URL = f"mysql+asyncmy://root@127.0.0.1:3306/{MYSQL_DB}?charset=utf8mb4"


@dataclass
class Sample:
    wall: float
    rss_mb: float
    ok: bool


Runner = Callable[[Workload, Path], tuple[list[str], dict[str, str], Path]]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSFLOW_")}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    env.update(extra)
    return env


def make(w: Workload, d: Path) -> tuple[list[str], dict[str, str], Path]:
    return ["make", f"-j{w.max_parallel}", "-s", "-f", str(d / "Makefile")], _env(), d


def asyncio_plain(w: Workload, d: Path) -> tuple[list[str], dict[str, str], Path]:
    return [sys.executable, str(Path(__file__).with_name("baseline_asyncio.py")),
            str(d / "pipeline.json")], _env(), d


def asyncio_mariadb(w: Workload, d: Path) -> tuple[list[str], dict[str, str], Path]:
    argv, env, cwd = asyncio_plain(w, d)
    return [*argv, "--mysql-db", MYSQL_DB], env, cwd


def ansflow(url: str) -> Runner:
    def runner(w: Workload, d: Path) -> tuple[list[str], dict[str, str], Path]:
        env = _env(ANSFLOW_DATABASE_URL=url, ANSFLOW_WORKSPACE_ROOT=str(d / "ws"),
                   ANSFLOW_ARTIFACT_ROOT=str(d / "artifacts"))
        return [str(BIN / "ansflow"), "run", str(d / "pipeline.json")], env, d
    return runner


RUNNERS: dict[str, Callable[[Path], Runner]] = {
    "make": lambda tmp: make,
    "asyncio": lambda tmp: asyncio_plain,
    "asyncio-mariadb": lambda tmp: asyncio_mariadb,
    "ansflow-sqlite": lambda tmp: ansflow(f"sqlite+aiosqlite:///{tmp / 'bench.db'}"),
    "ansflow-mariadb": lambda tmp: ansflow(MYSQL_URL),
}


def measure(argv: list[str], env: dict[str, str], cwd: Path) -> Sample:
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Sample(wall, usage.ru_maxrss / 1024, proc.returncode == 0)


def prepare_mariadb() -> None:
    subprocess.run(["mysql", "-h127.0.0.1", "-uroot", "-e",
                    f"CREATE DATABASE IF NOT EXISTS {MYSQL_DB}"], check=True)
    subprocess.run([str(BIN / "ansflow"), "db", "upgrade"], env=_env(
        ANSFLOW_DATABASE_URL=MYSQL_URL), check=True, capture_output=True)


def run_all(names: list[str], runners: list[str], repeat: int) -> dict[str, dict[str, object]]:
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="ansflow-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if any("mariadb" in r for r in runners):
            prepare_mariadb()
        for name in names:
            workload = WORKLOADS[name]()
            directory = tmp / name
            workload.write(directory)
            built = {r: RUNNERS[r](tmp)(workload, directory) for r in runners}
            for argv, env, cwd in built.values():  # warm-up: caches, migrations
                measure(argv, env, cwd)
            samples: dict[str, list[Sample]] = {r: [] for r in runners}
            for _ in range(repeat):
                for runner in runners:  # alternate, so noise hits every runner alike
                    samples[runner].append(measure(*built[runner]))
            results[name] = summarize(workload, samples)
    return results


def summarize(workload: Workload, samples: dict[str, list[Sample]]) -> dict[str, object]:
    rows: dict[str, object] = {}
    medians = {r: statistics.median(s.wall for s in ss) for r, ss in samples.items()}
    for runner, ss in samples.items():
        walls = [s.wall for s in ss]
        rows[runner] = {
            "median_s": round(medians[runner], 4), "min_s": round(min(walls), 4),
            "max_s": round(max(walls), 4), "all_ok": all(s.ok for s in ss),
            "peak_rss_mb": round(max(s.rss_mb for s in ss), 1),
            "overhead_ms_per_step": round(
                (medians[runner] - workload.ideal_seconds) / len(workload.nodes) * 1000, 3),
            "ratio": {b: round(medians[runner] / medians[b], 3) for b in samples if b != runner},
        }
    return {"title": workload.title, "steps": len(workload.nodes),
            "ideal_s": workload.ideal_seconds, "runners": rows}


def print_table(results: dict[str, dict[str, object]]) -> None:
    for name, data in results.items():
        print(f"\n{name}: {data['title']} ({data['steps']} steps, ideal {data['ideal_s']} s)")
        print(f"  {'runner':<18}{'median':>9}{'min-max':>18}{'ms/step':>9}{'RSS MB':>8}  ratios")
        runners = data["runners"]
        assert isinstance(runners, dict)
        for runner, row in runners.items():
            ratios = ", ".join(f"{v:.2f}x {k}" for k, v in row["ratio"].items())
            flag = "" if row["all_ok"] else "  (FAILED RUNS)"
            print(f"  {runner:<18}{row['median_s']:>8.3f}s"
                  f"{row['min_s']:>8.3f}-{row['max_s']:<8.3f}"
                  f"{row['overhead_ms_per_step']:>9.2f}{row['peak_rss_mb']:>8.1f}  {ratios}{flag}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="W1,W2,W3,W4")
    parser.add_argument("--runners", default="make,asyncio,asyncio-mariadb,ansflow-sqlite,"
                                             "ansflow-mariadb")
    parser.add_argument("-n", "--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path("bench/results.json"))
    args = parser.parse_args()
    results = run_all(args.workloads.split(","), args.runners.split(","), args.repeat)
    print_table(results)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nfigures written to {args.json}")


if __name__ == "__main__":
    main()
