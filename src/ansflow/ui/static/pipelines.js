// All pipelines: last status, last duration and the duration trend of recent runs.

import { api } from "./api.js";
import { badge, h, notice, s, seconds, when } from "./dom.js";

const RUNS = 20;

function sparkline(durations) {
  const values = durations.filter((d) => d !== null);
  if (values.length < 2) return h("span", { class: "muted", text: values.length ? "one run" : "–" });
  const width = 120;
  const height = 28;
  const max = Math.max(...values) || 1;
  const points = values.map((v, i) => `${(i / (values.length - 1)) * (width - 4) + 2},${height - 3 - (v / max) * (height - 6)}`);
  return s("svg", { class: "spark", width, height, role: "img",
    "aria-label": `durations of the last ${values.length} runs, from ${seconds(values[0])} to ${seconds(values[values.length - 1])}` },
  s("polyline", { points: points.join(" ") }),
  s("circle", { cx: points[points.length - 1].split(",")[0], cy: points[points.length - 1].split(",")[1], r: 2.5 }));
}

export async function pipelinesPage(root) {
  document.title = "Pipelines · AnsFlow";
  root.append(h("h1", {}, "Pipelines"));
  let page;
  try {
    page = await api("pipelines", { query: { limit: 500 } });
  } catch (error) {
    root.append(notice(error.message));
    return;
  }
  if (!page.items.length) {
    root.append(notice("No pipelines yet. Create one with the API (POST /api/v1/pipelines) or run one with `ansflow run FILE`.", "info"));
    return;
  }
  const body = h("tbody");
  root.append(h("div", { class: "scroll" }, h("table", { class: "list" },
    h("thead", {}, h("tr", {}, ["Pipeline", "Last status", "Last duration", "Trend", "Last run"].map((t) => h("th", { scope: "col" }, t)))),
    body)));
  const runs = await Promise.all(page.items.map((p) =>
    api("executions", { query: { pipeline_id: p.id, limit: RUNS } }).catch(() => ({ items: [] }))));
  page.items.forEach((pipeline, index) => {
    const items = runs[index].items;
    const lastRun = items[0];
    const finished = items.filter((e) => e.completed_at);
    body.append(h("tr", { "data-pipeline": pipeline.name },
      h("th", { scope: "row" }, h("a", { href: `#/pipelines/${pipeline.id}` }, pipeline.name),
        pipeline.description ? h("div", { class: "muted small", text: pipeline.description }) : null),
      h("td", {}, lastRun ? h("a", { href: `#/executions/${lastRun.id}` }, badge(lastRun.status)) : h("span", { class: "muted", text: "never ran" })),
      h("td", {}, seconds(finished[0] ? finished[0].duration_seconds : null)),
      h("td", {}, sparkline(finished.map((e) => e.duration_seconds).reverse())),
      h("td", {}, lastRun ? when(lastRun.queued_at) : "–")));
  });
}
