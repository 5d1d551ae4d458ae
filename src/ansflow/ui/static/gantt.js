// The timeline: one row per step, its bar split into the time it waited for its
// dependencies, for a parallel slot, ran (each attempt) and backed off between attempts.
// The exact totals are the record's `timing`; the bars place them in time.

import { h, s, seconds, time } from "./dom.js";

const ROW = 24;
const LABEL = 150;
const AXIS = 22;
export const BUCKETS = [
  ["deps", "waiting for dependencies", "waiting_for_dependencies"],
  ["slot", "waiting for a slot", "waiting_for_slot"],
  ["run", "running", "running"],
  ["backoff", "backoff", "backoff"],
  ["interrupted", "interrupted (no worker)", "interrupted"],
];

/** The segments [kind, start, end] of a step, in seconds since the epoch. */
export function segments(step, origin, now) {
  const out = [];
  const ready = time(step.ready_at);
  if (ready !== null && ready > origin) out.push(["deps", origin, ready]);
  const attempts = step.attempts
    .map((a) => ({ start: time(a.started_at), end: time(a.completed_at), status: a.status }))
    .filter((a) => a.start !== null);
  if (!attempts.length && time(step.started_at) !== null) {
    attempts.push({ start: time(step.started_at), end: time(step.completed_at), status: step.status });
  }
  if (ready !== null && attempts.length && attempts[0].start > ready) {
    out.push(["slot", ready, attempts[0].start]);
  } else if (ready !== null && !attempts.length && !step.completed_at && step.status === "pending") {
    out.push(["slot", ready, now]);
  }
  attempts.forEach((attempt, index) => {
    const end = attempt.end ?? (step.completed_at ? time(step.completed_at) : now);
    if (index > 0) {
      const before = attempts[index - 1];
      // after an interrupted attempt the gap is the time no worker held the execution
      const gap = before.status === "interrupted" ? "interrupted" : "backoff";
      if (before.end !== null && attempt.start > before.end) out.push([gap, before.end, attempt.start]);
    }
    out.push([attempt.status === "failed" || attempt.status === "timed_out" ? "run failed" : "run", attempt.start, end]);
  });
  const last = attempts[attempts.length - 1];
  if (step.status === "retrying" && last && last.end !== null) out.push(["backoff", last.end, now]);
  return out.filter(([, start, end]) => end >= start);
}

function ticks(span) {
  const steps = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600];
  const step = steps.find((candidate) => span / candidate <= 8) || 7200;
  const out = [];
  for (let t = 0; t <= span + 1e-9; t += step) out.push(t);
  return out;
}

export function legend() {
  return h("ul", { class: "legend", "aria-label": "Timeline legend" },
    BUCKETS.map(([kind, text]) => h("li", {}, h("span", { class: `swatch seg-${kind}` }), text)),
    h("li", {}, h("span", { class: "swatch crit-swatch" }), "critical path"),
    h("li", {}, h("span", { class: "swatch slack-swatch" }), "slack"));
}

/** An SVG timeline of `record`; `width` in pixels (the chart scrolls when narrower). */
export function drawGantt(record, { width = 900, now = Date.now() / 1000, selected = null, onSelect = null } = {}) {
  const origin = time(record.started_at) ?? time(record.queued_at);
  const end = time(record.completed_at) ?? now;
  const span = Math.max(end - origin, 0.001);
  const chart = Math.max(width - LABEL - 16, 200);
  const scale = (t) => LABEL + ((t - origin) / span) * chart;
  const critical = new Set(record.critical_path ? record.critical_path.steps : []);
  const height = AXIS + record.steps.length * ROW + 6;
  const svg = s("svg", { class: "gantt", width: LABEL + chart + 16, height,
    role: "group", "aria-label": "Timeline" });
  for (const t of ticks(span)) {
    const x = scale(origin + t);
    svg.append(s("line", { x1: x, x2: x, y1: AXIS - 4, y2: height, class: "tick" }),
      s("text", { x, y: AXIS - 8, class: "tick-label" }, seconds(t)));
  }
  record.steps.forEach((step, index) => {
    const y = AXIS + index * ROW;
    const classes = ["row", `st-${step.status}`];
    if (critical.has(step.name)) classes.push("critical");
    if (step.name === selected) classes.push("selected");
    const row = s("g", { class: classes.join(" "), "data-step": step.name },
      s("rect", { x: 0, y, width: LABEL + chart + 16, height: ROW, class: "row-bg" }),
      s("text", { x: 6, y: y + ROW / 2 + 4, class: "row-label" },
        step.name.length > 18 ? `${step.name.slice(0, 17)}…` : step.name));
    const timing = step.timing;
    for (const [kind, start, stop] of segments(step, origin, now)) {
      const bucket = BUCKETS.find(([k]) => kind.startsWith(k));
      const total = bucket ? ` (${seconds(timing[bucket[2]])} in all)` : "";
      row.append(s("rect", {
        x: scale(start), y: y + 5, width: Math.max(scale(stop) - scale(start), 1.5), height: ROW - 10,
        class: `seg seg-${kind.replace(" ", " seg-")}`,
      }, s("title", {}, `${step.name}: ${bucket ? bucket[1] : kind} ${seconds(stop - start)}${total}`)));
    }
    const finished = time(step.completed_at);
    if (step.slack_seconds && finished !== null && finished >= origin) {
      const x1 = scale(finished);
      const x2 = Math.min(scale(finished + step.slack_seconds), LABEL + chart + 14);
      row.append(s("line", { x1, x2, y1: y + ROW / 2, y2: y + ROW / 2, class: "slack" },
        s("title", {}, `${step.name}: ${seconds(step.slack_seconds)} of slack`)));
    }
    if (onSelect) {
      row.setAttribute("tabindex", "0");
      row.setAttribute("role", "button");
      row.setAttribute("aria-label", `${step.name}: ${step.status}, ran ${seconds(timing.running)}`);
      row.addEventListener("click", () => onSelect(step.name));
      row.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          onSelect(step.name);
        }
      });
    }
    svg.append(row);
  });
  return svg;
}
