// One execution, live: the DAG coloured by status, the timeline with its four time
// buckets, the critical path and slack, the selected step (why it waits, attempts,
// outputs, log with live tail), artifacts, and the actions the token's scope allows.

import { api, download, follow, hasEndpoint, session } from "./api.js";
import { drawDag } from "./dag.js";
import { TERMINAL, badge, h, notice, seconds, time, when } from "./dom.js";
import { BUCKETS, drawGantt, legend } from "./gantt.js";
import { LogView } from "./log.js";

const ARTIFACTS = "/api/v1/executions/{execution_id}/artifacts";

function swap(container, child) {
  const focused = document.activeElement && container.contains(document.activeElement)
    ? document.activeElement.getAttribute("data-step") : null;
  container.replaceChildren(child);
  if (focused) {
    const again = container.querySelector(`[data-step="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
}

function stamp(iso) {
  return iso ? h("time", { datetime: iso, title: new Date(iso).toLocaleString() }, when(iso)) : null;
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

class ExecutionView {
  constructor(root, id, query) {
    this.root = root;
    this.id = id;
    this.selected = query.get("step");
    this.line = Number(query.get("line")) || null;
    this.record = null;
    this.stream = null;
    this.refreshTimer = null;
    this.state = h("span", { class: "live", role: "status" });
    this.parts = {
      head: h("div"), actions: h("div", { class: "actions" }), message: h("div", { role: "alert" }),
      dag: h("div", { class: "scroll" }), gantt: h("div", { class: "scroll gantt-box" }),
      step: h("section", { class: "card step", "aria-label": "Selected step" }),
      artifacts: h("section", { class: "card", "aria-labelledby": "artifacts-title", hidden: true }),
    };
  }

  async load() {
    try {
      this.record = await api(`executions/${this.id}`);
    } catch (error) {
      this.root.append(notice(error.message));
      return;
    }
    const p = this.parts;
    this.root.append(p.head, p.message,
      h("section", { class: "card", "aria-labelledby": "graph-title" },
        h("h2", { id: "graph-title" }, "Graph"), p.dag),
      h("section", { class: "card", "aria-labelledby": "timeline-title" },
        h("h2", { id: "timeline-title" }, "Timeline"), legend(), p.gantt),
      p.step, p.artifacts);
    if (!this.selected || !this.record.steps.some((s) => s.name === this.selected)) {
      this.selected = this.defaultStep();
    }
    this.renderHead();
    this.renderGraph();
    this.openStream();
    this.ticker = setInterval(() => this.tick(), 1000);
    this.resized = () => {
      clearTimeout(this.resizeTimer);
      this.resizeTimer = setTimeout(() => this.renderGantt(), 150);
    };
    window.addEventListener("resize", this.resized);
    this.artifacts();
  }

  defaultStep() {
    const steps = this.record.steps;
    const pick = steps.find((s) => s.status === "running") || steps.find((s) => ["failed", "timed_out"].includes(s.status));
    return (pick || steps[0] || {}).name || null;
  }

  route(query) {
    const step = query.get("step") || this.defaultStep();
    this.line = Number(query.get("line")) || null;
    if (step !== this.selected) {
      this.selected = step;
      this.renderGraph();
      this.openStream();
    } else if (this.line && this.log) {
      const node = this.log.lines.querySelector(`#L${this.line}`);
      this.log.lines.querySelectorAll(".target").forEach((n) => n.classList.remove("target"));
      if (node) {
        node.classList.add("target");
        node.scrollIntoView({ block: "center" });
      }
    }
  }

  select(name) {
    location.hash = `#/executions/${this.id}?step=${encodeURIComponent(name)}`;
  }

  openStream() {
    if (this.stream) this.stream.close();
    this.log = new LogView({
      target: this.line,
      lineHref: (n) => `#/executions/${this.id}?step=${encodeURIComponent(this.selected)}&line=${n}`,
    });
    this.renderStep();
    this.stream = follow(this.id, {
      steps: this.selected ? [this.selected] : [],
      logs: Boolean(this.selected),
      onEvent: (kind, data) => this.event(kind, data),
      onState: (state) => { this.state.textContent = state === "live" ? "● live" : state === "ended" ? "" : "reconnecting…"; },
    });
  }

  event(kind, data) {
    const record = this.record;
    if (kind === "log" && data.step === this.selected) {
      this.log.add(data);
      return;
    }
    if (kind === "step") {
      const step = record.steps.find((s) => s.name === data.step);
      if (step && step.status !== data.status) {
        step.status = data.status;
        this.renderGraph();
      }
    } else if (kind === "execution" || kind === "end") {
      if (data.status && data.status !== "deleted") record.status = data.status;
      if (kind === "end") this.log.flush();
      this.renderHead();
    }
    this.refreshSoon();
  }

  refreshSoon() {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(async () => {
      try {
        this.record = await api(`executions/${this.id}`);
        this.render();
      } catch {
        // the next event or tick tries again
      }
    }, 150);
  }

  tick() {
    if (TERMINAL.has(this.record.status)) return;
    this.renderHead();
    this.renderGantt();
  }

  render() {
    this.renderHead();
    this.renderGraph();
    this.renderStepFacts();
  }

  renderHead() {
    const r = this.record;
    document.title = `#${r.id} ${r.pipeline_name} · AnsFlow`;
    const end = r.completed_at ? time(r.completed_at) : Date.now() / 1000;
    const duration = r.started_at ? end - time(r.started_at) : null;
    const trigger = r.trigger;
    swap(this.parts.head, h("div", { class: "exec-head" },
      h("h1", {}, `#${r.id} `, h("a", { href: `#/pipelines/${r.pipeline_id}` }, r.pipeline_name),
        h("span", { class: "muted", text: ` v${r.pipeline_version}` })),
      h("div", { class: "exec-status" }, badge(r.status), this.state,
        r.cancel_requested && !TERMINAL.has(r.status) ? h("span", { class: "muted", text: "cancelling…" }) : null),
      facts([
        ["Trigger", [trigger.type, trigger.ref ? ` · ${trigger.ref}` : "", trigger.actor ? ` · ${trigger.actor}` : ""].join("")],
        ["Queued", when(r.queued_at)],
        ["Duration", seconds(duration)],
        ["Critical path", r.critical_path ? `${r.critical_path.steps.join(" → ")} (${seconds(r.critical_path.duration_seconds)})` : null],
        ["Error", r.error],
      ]),
      this.actions()));
  }

  actions() {
    const r = this.record;
    if (!session.allows("trigger")) return null;
    const buttons = [];
    if (!TERMINAL.has(r.status)) {
      buttons.push(h("button", { type: "button", class: "danger", onclick: () => this.act("cancel") }, "Cancel"));
    } else if (r.status !== "success") {
      buttons.push(h("button", { type: "button", onclick: () => this.act("retry") }, "Retry"));
    }
    return h("div", { class: "actions" }, buttons);
  }

  async act(action, step = null) {
    this.parts.message.replaceChildren();
    try {
      if (step) {
        const comment = this.comment ? this.comment.value.trim() : "";
        await api(`executions/${this.id}/steps/${encodeURIComponent(step)}/${action}`,
          { method: "POST", body: { comment: comment || null } });
        // the answer may be older than what the live events already brought: read again
        this.refreshSoon();
      } else {
        const result = await api(`executions/${this.id}/${action}`, { method: "POST" });
        if (action === "retry") {
          location.hash = `#/executions/${result.id}`;
          return;
        }
        this.record = result;
        this.render();
      }
    } catch (error) {
      this.parts.message.replaceChildren(notice(error.message));
    }
  }

  renderGraph() {
    const r = this.record;
    const critical = r.critical_path ? r.critical_path.steps : [];
    swap(this.parts.dag, drawDag(r.steps, { critical, selected: this.selected, onSelect: (n) => this.select(n) }));
    this.renderGantt();
  }

  renderGantt() {
    const width = Math.max(this.parts.gantt.clientWidth || 0, 640);
    swap(this.parts.gantt, drawGantt(this.record, { width, selected: this.selected, onSelect: (n) => this.select(n) }));
  }

  renderStep() {
    const step = this.record.steps.find((s) => s.name === this.selected);
    this.parts.step.replaceChildren();
    if (!step) return;
    this.stepFacts = h("div");
    this.parts.step.append(h("h2", {}, "Step ", h("code", {}, step.name)), this.stepFacts,
      h("h3", {}, "Log"), this.log.element);
    this.renderStepFacts();
  }

  renderStepFacts() {
    const step = this.record.steps.find((s) => s.name === this.selected);
    if (!step || !this.stepFacts) return;
    const waiting = step.status === "waiting"
      ? ["Waiting for", step.waiting_for.length ? step.waiting_for.join(", ") : "an approval"]
      : step.waiting_for.length ? ["Not running because it waits for", step.waiting_for.join(", ")] : null;
    const isCritical = this.record.critical_path && this.record.critical_path.steps.includes(step.name);
    const content = h("div", {},
      h("div", { class: "exec-status" }, badge(step.status), h("span", { class: "muted", text: step.type }),
        isCritical ? h("span", { class: "crit-note", text: "on the critical path" }) : null),
      waiting ? h("p", { class: "waiting", role: "status" }, h("strong", {}, `${waiting[0]}: `), waiting[1]) : null,
      this.approval(step),
      facts([
        ["Matrix", step.matrix ? `${step.matrix.step}: ${Object.entries(step.matrix.values).map(([k, v]) => `${k}=${v}`).join(", ")}` : null],
        ["Reused", step.reused && step.original ? h("span", {}, "from ", h("a", { href: `#/executions/${step.original.execution_id}` }, `#${step.original.execution_id}`)) : null],
        ["Released by", this.hop(step.name)],
        ["Runs on", step.runs_on && step.runs_on.length ? step.runs_on.join(", ") : null],
        ["Worker", step.worker_id],
        ["Exit code", step.exit_code],
        ...BUCKETS.filter(([, , key]) => key !== "interrupted" || step.timing.interrupted)
          .map(([, label, key]) => [label[0].toUpperCase() + label.slice(1), seconds(step.timing[key] || 0)]),
        ["Slack", step.slack_seconds === null ? null : seconds(step.slack_seconds)],
        ["Error", step.error],
      ]),
      this.attempts(step), this.outputs(step));
    this.stepFacts.replaceChildren(content);
  }

  approval(step) {
    const a = step.approval;
    if (!a) return null;
    const decided = a.decision ? `${a.decision.replace("_", " ")}${a.decided_by ? ` by ${a.decided_by}` : ""}` : null;
    const open = step.status === "waiting" && !a.decision && session.allows("trigger");
    // kept across live re-renders, so that a comment being typed is not lost
    if (!open) this.comment = null;
    else if (!this.comment || this.comment.dataset.step !== step.name) {
      this.comment = h("textarea", { id: "approval-comment", rows: 2, maxlength: 4096, "data-comment-for": step.name });
      this.comment.dataset.step = step.name;
    }
    return h("div", { class: "approval" },
      facts([
        ["Asks", a.message],
        ["May decide", a.approvers.length ? a.approvers.join(", ") : "any token with the trigger scope"],
        ["Requested", stamp(a.requested_at)],
        ["Times out", a.decision ? null : stamp(a.expires_at)],
        ["Decision", decided],
        ["Decided", stamp(a.decided_at)],
        ["Comment", a.comment],
      ]),
      open ? h("div", { class: "decide" },
        h("label", { for: "approval-comment" }, "Comment (optional)"), this.comment,
        h("div", { class: "actions" },
          h("button", { type: "button", onclick: () => this.act("approve", step.name) }, "Approve"),
          h("button", { type: "button", class: "danger", onclick: () => this.act("reject", step.name) }, "Reject")))
        : null);
  }

  hop(name) {
    const path = this.record.critical_path;
    const hop = path && path.hops ? path.hops.find((h) => h.step === name) : null;
    const why = { dependency: "a dependency finishing", slot: "a parallel slot freeing",
      worker: "a worker starting or resuming the execution", approval: "an approval" };
    return hop ? `${why[hop.released_by] || hop.released_by} (critical path)` : null;
  }

  attempts(step) {
    if (!step.attempts.length) return null;
    return h("div", { class: "scroll" }, h("table", { class: "list attempts" },
      h("caption", {}, "Attempts"),
      h("thead", {}, h("tr", {}, ["#", "Status", "Started", "Ran", "Exit code", "Error"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, step.attempts.map((a) => h("tr", {},
        h("td", {}, String(a.number)), h("td", {}, badge(a.status)), h("td", {}, when(a.started_at)),
        h("td", {}, a.started_at && a.completed_at ? seconds(time(a.completed_at) - time(a.started_at)) : "–"),
        h("td", {}, a.exit_code ?? "–"), h("td", {}, a.error || ""))))));
  }

  outputs(step) {
    const entries = Object.entries(step.outputs || {});
    if (!entries.length) return null;
    return h("div", {}, h("h3", {}, "Outputs"), facts(entries.map(([k, v]) => [k, String(v)])));
  }

  async artifacts() {
    if (!(await hasEndpoint(ARTIFACTS))) return;
    let items;
    try {
      const answer = await api(`executions/${this.id}/artifacts`);
      items = Array.isArray(answer) ? answer : answer.items || [];
    } catch {
      return;
    }
    const box = this.parts.artifacts;
    box.hidden = false;
    box.replaceChildren(h("h2", { id: "artifacts-title" }, "Artifacts"),
      items.length ? h("ul", { class: "artifacts" }, items.map((a) => h("li", {},
        h("button", { type: "button", class: "link",
          onclick: () => download(`executions/${this.id}/artifacts/${a.id}`, a.path.split("/").pop()).catch((e) => this.parts.message.replaceChildren(notice(e.message))) },
        a.path), h("span", { class: "muted", text: ` ${a.step} · ${a.size} bytes` }))))
        : h("p", { class: "muted", text: "No artifacts." }));
  }

  close() {
    window.removeEventListener("resize", this.resized);
    clearInterval(this.ticker);
    clearTimeout(this.refreshTimer);
    if (this.stream) this.stream.close();
  }
}

export async function executionPage(root, [id], query) {
  const view = new ExecutionView(root, Number(id), query);
  await view.load();
  return { cleanup: () => view.close(), update: (next) => view.route(next) };
}
