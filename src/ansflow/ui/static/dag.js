// The DAG, left to right: a step's column is the length of its longest chain of
// dependencies; within a column, steps sit near the steps they depend on.

import { s } from "./dom.js";

const W = 156;
const H = 36;
const GAP_X = 56;
const GAP_Y = 14;
const PAD = 12;

export function layout(steps) {
  const byName = new Map(steps.map((step) => [step.name, step]));
  const level = new Map();
  const visit = (name, seen = new Set()) => {
    if (level.has(name)) return level.get(name);
    if (seen.has(name)) return 0;
    seen.add(name);
    const deps = (byName.get(name)?.depends_on || []).filter((d) => byName.has(d));
    const value = deps.length ? 1 + Math.max(...deps.map((d) => visit(d, seen))) : 0;
    level.set(name, value);
    return value;
  };
  steps.forEach((step) => visit(step.name));
  const columns = [];
  for (const step of steps) (columns[level.get(step.name)] ||= []).push(step.name);
  const row = new Map();
  columns.forEach((names, column) => {
    if (column > 0) {
      const weight = (name) => {
        const deps = byName.get(name).depends_on.filter((d) => row.has(d));
        return deps.length ? deps.reduce((sum, d) => sum + row.get(d), 0) / deps.length : 0;
      };
      names.sort((a, b) => weight(a) - weight(b));
    }
    names.forEach((name, index) => row.set(name, index));
  });
  const nodes = new Map();
  for (const step of steps) {
    nodes.set(step.name, {
      x: PAD + level.get(step.name) * (W + GAP_X),
      y: PAD + row.get(step.name) * (H + GAP_Y),
    });
  }
  const rows = Math.max(1, ...columns.map((c) => (c ? c.length : 0)));
  return {
    nodes,
    width: PAD * 2 + columns.length * W + Math.max(columns.length - 1, 0) * GAP_X,
    height: PAD * 2 + rows * H + (rows - 1) * GAP_Y,
  };
}

function label(name) {
  return name.length > 20 ? `${name.slice(0, 19)}…` : name;
}

/**
 * An SVG of `steps` ({name, depends_on, status?}); `critical` is the critical path (in
 * order), `selected` a step name, `onSelect(name)` makes nodes clickable and focusable.
 */
export function drawDag(steps, { critical = [], selected = null, onSelect = null } = {}) {
  const { nodes, width, height } = layout(steps);
  const onPath = new Set(critical);
  const hops = new Set(critical.slice(1).map((name, i) => `${critical[i]}>${name}`));
  const svg = s("svg", { class: "dag", width, height, viewBox: `0 0 ${width} ${height}`,
    role: "group", "aria-label": "Pipeline graph" });
  const arrow = s("marker", { id: "arrow", viewBox: "0 0 8 8", refX: 7, refY: 4,
    markerWidth: 6, markerHeight: 6, orient: "auto" }, s("path", { d: "M0 0 8 4 0 8z", class: "arrowhead" }));
  svg.append(s("defs", {}, arrow));
  for (const step of steps) {
    const to = nodes.get(step.name);
    for (const dep of step.depends_on) {
      const from = nodes.get(dep);
      if (!from) continue;
      const x1 = from.x + W;
      const y1 = from.y + H / 2;
      const x2 = to.x - 2;
      const y2 = to.y + H / 2;
      const mid = (x1 + x2) / 2;
      svg.append(s("path", {
        d: `M${x1} ${y1} C${mid} ${y1} ${mid} ${y2} ${x2} ${y2}`,
        class: hops.has(`${dep}>${step.name}`) ? "edge critical" : "edge",
        "marker-end": "url(#arrow)",
      }));
    }
  }
  for (const step of steps) {
    const { x, y } = nodes.get(step.name);
    const status = step.status || "none";
    const classes = ["node", `st-${status}`];
    if (onPath.has(step.name)) classes.push("critical");
    if (step.name === selected) classes.push("selected");
    const group = s("g", {
      class: classes.join(" "), transform: `translate(${x} ${y})`, "data-step": step.name,
      "data-status": status,
    },
    s("title", {}, `${step.name}${step.status ? `: ${step.status}` : ""}${onPath.has(step.name) ? " (critical path)" : ""}`),
    s("rect", { width: W, height: H, rx: 6 }),
    s("circle", { cx: 14, cy: H / 2, r: 5, class: "dot" }),
    s("text", { x: 26, y: H / 2 + 4 }, label(step.name)));
    if (onSelect) {
      group.setAttribute("tabindex", "0");
      group.setAttribute("role", "button");
      group.setAttribute("aria-label", `${step.name}${step.status ? `, ${step.status}` : ""}`);
      group.addEventListener("click", () => onSelect(step.name));
      group.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          onSelect(step.name);
        }
      });
    }
    svg.append(group);
  }
  return svg;
}
