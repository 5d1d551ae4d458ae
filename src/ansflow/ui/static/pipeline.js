// One pipeline: its DAG, a start form (ref and variables), its executions (filtered by
// status and trigger) and its definition.

import { api, session } from "./api.js";
import { drawDag } from "./dag.js";
import { badge, h, notice, seconds, when } from "./dom.js";

const STATUSES = ["queued", "running", "success", "failed", "cancelled", "timed_out", "error"];
const TRIGGERS = ["api", "webhook", "schedule", "cli", "retry"];

function checkboxes(name, values, selected) {
  return h("fieldset", { class: "filter" }, h("legend", {}, name),
    values.map((value) => h("label", {},
      h("input", { type: "checkbox", name, value, checked: selected.includes(value) }), ` ${value.replace("_", " ")}`)));
}

function variableRow() {
  return h("div", { class: "var-row" },
    h("input", { name: "var-name", placeholder: "name", "aria-label": "variable name", pattern: "[A-Za-z_][A-Za-z0-9_]{0,63}" }),
    h("input", { name: "var-value", placeholder: "value", "aria-label": "variable value" }));
}

function startForm(pipeline) {
  const message = h("div", { role: "alert" });
  const rows = h("div", { class: "vars" }, variableRow());
  const form = h("form", { class: "card start", "aria-labelledby": "start-title" },
    h("h2", { id: "start-title" }, "Start an execution"),
    h("label", { for: "start-ref" }, "Ref"),
    h("input", { id: "start-ref", name: "ref", placeholder: "refs/heads/main (optional)" }),
    h("div", { class: "label" }, "Variables"), rows,
    h("button", { type: "button", class: "secondary", onclick: () => rows.append(variableRow()) }, "Add a variable"),
    message,
    h("button", { type: "submit" }, "Start"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const variables = {};
    for (const row of rows.children) {
      const [name, value] = row.querySelectorAll("input");
      if (name.value.trim()) variables[name.value.trim()] = value.value;
    }
    const ref = form.elements.ref.value.trim();
    try {
      const execution = await api(`pipelines/${pipeline.id}/executions`, {
        method: "POST", body: { ref: ref || null, variables } });
      location.hash = `#/executions/${execution.id}`;
    } catch (error) {
      message.replaceChildren(notice(error.message));
    }
  });
  return form;
}

async function history(pipeline, container, query) {
  const status = query.getAll("status");
  const trigger = query.getAll("trigger");
  const filters = h("form", { class: "filters", "aria-label": "Filter executions" },
    checkboxes("status", STATUSES, status), checkboxes("trigger", TRIGGERS, trigger));
  filters.addEventListener("change", () => {
    const params = new URLSearchParams();
    for (const input of filters.querySelectorAll("input:checked")) params.append(input.name, input.value);
    location.hash = `#/pipelines/${pipeline.id}${params.size ? `?${params}` : ""}`;
  });
  const page = await api("executions", { query: { pipeline_id: pipeline.id, status, trigger, limit: 50 } });
  const rows = page.items.map((e) => h("tr", { "data-execution": e.id },
    h("th", { scope: "row" }, h("a", { href: `#/executions/${e.id}` }, `#${e.id}`)),
    h("td", {}, badge(e.status)),
    h("td", {}, e.trigger.type, e.trigger.ref ? h("span", { class: "muted", text: ` ${e.trigger.ref}` }) : null),
    h("td", {}, `v${e.pipeline_version}`),
    h("td", {}, seconds(e.duration_seconds)),
    h("td", {}, when(e.queued_at))));
  container.replaceChildren(h("h2", {}, `Executions (${page.total})`), filters,
    rows.length
      ? h("div", { class: "scroll" }, h("table", { class: "list" },
        h("thead", {}, h("tr", {}, ["Execution", "Status", "Trigger", "Version", "Duration", "Queued"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, rows)))
      : h("p", { class: "muted", text: "No executions match." }));
}

function readable(pipeline) {
  if (pipeline.definition_format !== "json") return pipeline.definition;
  try {
    return JSON.stringify(JSON.parse(pipeline.definition), null, 2);
  } catch {
    return pipeline.definition;
  }
}

export async function pipelinePage(root, [id], query) {
  let pipeline;
  let dag;
  try {
    [pipeline, dag] = await Promise.all([api(`pipelines/${id}`), api(`pipelines/${id}/dag`)]);
  } catch (error) {
    root.append(notice(error.message));
    return null;
  }
  document.title = `${pipeline.name} · AnsFlow`;
  const estimate = dag.estimate_basis === "past_durations"
    ? `critical path estimated from recent runs: ${seconds(dag.estimated_duration_seconds)}`
    : "critical path by step count (no runs yet)";
  const executions = h("section", { class: "card", "aria-label": "Executions" });
  root.append(
    h("h1", {}, pipeline.name, h("span", { class: "muted", text: ` v${pipeline.version}` })),
    pipeline.description ? h("p", {}, pipeline.description) : null,
    h("div", { class: "columns" },
      h("section", { class: "card", "aria-labelledby": "dag-title" },
        h("h2", { id: "dag-title" }, "Graph"),
        h("p", { class: "muted small", text: estimate }),
        h("div", { class: "scroll" }, drawDag(dag.steps, { critical: dag.critical_path }))),
      session.allows("trigger") ? startForm(pipeline) : null),
    executions,
    h("section", { class: "card", "aria-labelledby": "def-title" },
      h("h2", { id: "def-title" }, "Definition"),
      h("pre", { class: "definition", tabindex: "0", text: readable(pipeline) })));
  await history(pipeline, executions, query);
  return { update: (next) => history(pipeline, executions, next) };
}
