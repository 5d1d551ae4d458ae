"""Figures from samples, and the tables (Markdown, so they paste into RESULTS.md)."""

from __future__ import annotations

import math
import statistics
from typing import Any

from runners import BASELINES, Sample
from workloads import Workload


def summarize(workload: Workload, samples: dict[str, list[Sample]], rss_notes: dict[str, str],
              latency: dict[str, Any]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    medians = {r: statistics.median(s.wall for s in ss) for r, ss in samples.items()}
    for runner, ss in samples.items():
        walls = [s.wall for s in ss]
        rows[runner] = {
            "median_s": round(medians[runner], 4), "min_s": round(min(walls), 4),
            "max_s": round(max(walls), 4), "walls_s": [round(w, 4) for w in walls],
            "all_ok": all(s.ok for s in ss),
            "peak_rss_mb": round(max(s.rss_mb for s in ss), 1), "rss": rss_notes[runner],
            "overhead_ms_per_step": round(
                (medians[runner] - workload.ideal_seconds) / len(workload.nodes) * 1000, 3),
            "ratio": {b: round(medians[runner] / medians[b], 3) for b in samples if b != runner},
            "start_latency": latency.get(runner),
        }
    return {"title": workload.title, "steps": len(workload.nodes),
            "ideal_s": workload.ideal_seconds, "max_parallel": workload.max_parallel,
            "runners": rows}


def add_net(results: dict[str, Any]) -> None:
    """Per-step overhead net of the fixed cost of a run (W0's median: start-up,
    connecting, one step), for every runner W0 was measured on."""
    fixed = {r: row["median_s"] for r, row in results.get("W0", {}).get("runners", {}).items()}
    for name, data in results.items():
        if name == "W0":
            continue
        for runner, row in data["runners"].items():
            if runner in fixed:
                row["net_ms_per_step"] = round(
                    (row["median_s"] - data["ideal_s"] - fixed[runner]) / data["steps"] * 1000, 3)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _latency(value: dict[str, Any] | None) -> str:
    if not value:
        return "-"
    if not value.get("steps"):
        return f"none uncapped ({value.get('capped', 0)} capped)"
    return f"{value['p50_ms']:.1f} / {value['p95_ms']:.1f} (n={value['steps']})"


def workload_table(name: str, data: dict[str, Any]) -> list[str]:
    runners: dict[str, Any] = data["runners"]
    baselines = [b for b in BASELINES if b in runners]
    header = ["runner", "median s", "min-max s", "ms/step", "net ms/step", "peak RSS MB",
              "start p50/p95 ms", *(f"x {b}" for b in baselines)]
    rows = []
    for runner, row in runners.items():
        ratios = [f"{row['ratio'][b]:.2f}" if b != runner else "-" for b in baselines]
        label = runner if row["all_ok"] else f"{runner} (FAILED RUNS)"
        net = row.get("net_ms_per_step")
        rows.append([label, f"{row['median_s']:.3f}", f"{row['min_s']:.3f}-{row['max_s']:.3f}",
                     f"{row['overhead_ms_per_step']:.2f}", "-" if net is None else f"{net:.2f}",
                     f"{row['peak_rss_mb']:.0f} ({row['rss']})",
                     _latency(row["start_latency"]), *ratios])
    title = f"**{name}**: {data['title']} ({data['steps']} steps, cap {data['max_parallel']})"
    return ["", title, "", *_table(header, rows)]


def scaling(results: dict[str, Any]) -> dict[str, Any]:
    """W7/W1 per-step overhead: ~1.0 when cost per step does not grow with the DAG."""
    if "W1" not in results or "W7" not in results:
        return {}
    w1, w7 = results["W1"]["runners"], results["W7"]["runners"]
    out = {}
    for runner in (r for r in w1 if r in w7):
        entry: dict[str, Any] = {}
        for key in ("overhead_ms_per_step", "net_ms_per_step"):
            a, b = w1[runner].get(key), w7[runner].get(key)
            if a is not None and b is not None:
                entry[key] = {"W1": a, "W7": b, "ratio": round(b / a, 3) if a > 0 else math.nan}
        out[runner] = entry
    return out


def _pair(value: dict[str, Any] | None) -> list[str]:
    if not value:
        return ["-", "-", "-"]
    return [f"{value['W1']:.2f}", f"{value['W7']:.2f}", f"{value['ratio']:.2f}"]


def scaling_table(ratios: dict[str, Any]) -> list[str]:
    rows = [[r, *_pair(v.get("overhead_ms_per_step")), *_pair(v.get("net_ms_per_step"))]
            for r, v in ratios.items()]
    header = ["runner", "W1 ms/step", "W7 ms/step", "W7/W1", "W1 net", "W7 net", "W7/W1 net"]
    return ["", "**W7/W1**: per-step overhead, 1,000-step DAG vs 200-step DAG (net: less "
            "W0, the fixed cost of a run)", "", *_table(header, rows)]


def w5_table(data: dict[str, Any]) -> list[str]:
    rows = []
    for runner, row in data["runners"].items():
        log = row.get("stored_log") or {}
        rows.append([runner if row["all_ok"] else f"{runner} (FAILED RUNS)",
                     f"{row['median_s']:.2f}", f"{row['min_s']:.2f}-{row['max_s']:.2f}",
                     f"{row['ratio_to_direct']:.2f}",
                     "-" if row.get("rss_growth_mb") is None else
                     f"{row['rss_growth_mb']:.1f} ({row['rss']})",
                     str(log.get("stored_bytes", "-")), str(log.get("log_bytes", "-")),
                     str(log.get("chunks", "-"))])
    header = ["runner", "median s", "min-max s", "x direct", "RSS growth MB",
              "stored log bytes (SUM size)", "log_bytes", "chunks"]
    return ["", f"**W5**: {data['title']}; direct = `sh -c 'cmd > /dev/null'`", "",
            *_table(header, rows)]


def w6_table(data: dict[str, Any]) -> list[str]:
    rows = [[str(r["concurrency"]), str(r["executions"]), f"{r['accepted_per_s']:.1f}",
             f"{r['completed_per_s']:.1f}", f"{r['latency_p50_s']:.3f}",
             f"{r['latency_p95_s']:.3f}", f"{r['latency_max_s']:.3f}",
             str(r["post_errors"]), str(r["lost_or_stuck"])] for r in data["runs"]]
    header = ["client concurrency", "executions", "accepted/s (POST)", "completed/s",
              "p50 s", "p95 s", "max s", "POST errors", "lost/stuck"]
    return ["", f"**W6**: {data['title']}; {data['workers']} workers, one API process; "
            "latency = completed_at - queued_at", "", *_table(header, rows)]


def render(results: dict[str, Any]) -> str:
    lines: list[str] = []
    for name, data in results.get("workloads", {}).items():
        lines += workload_table(name, data)
    if results.get("scaling"):
        lines += scaling_table(results["scaling"])
    if results.get("W5"):
        lines += w5_table(results["W5"])
    if results.get("W6"):
        lines += w6_table(results["W6"])
    return "\n".join(lines) + "\n"
