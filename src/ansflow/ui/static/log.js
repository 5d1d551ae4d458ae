// A step's log: line numbers that link to the line, ANSI colours, and a live tail that
// follows the end while "Follow" is on.

import { runs, initial } from "./ansi.js";
import { h } from "./dom.js";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class LogView {
  constructor({ lineHref, target = null }) {
    this.lineHref = lineHref;
    this.target = target;
    this.next = 0;
    this.count = 0;
    this.partial = "";
    this.partialNode = null;
    this.state = initial();
    this.lines = h("div", { class: "lines", role: "log", "aria-live": "off" });
    this.follow = h("input", { type: "checkbox", checked: target === null, id: "follow-log" });
    this.empty = h("p", { class: "muted log-empty", text: "No output yet." });
    this.element = h("div", { class: "log" },
      h("div", { class: "log-tools" },
        h("label", { for: "follow-log" }, this.follow, " Follow")),
      this.empty, this.lines);
    this.follow.addEventListener("change", () => this.scroll());
  }

  /** A `log` event: {offset, next_offset, content}. Repeats are skipped, gaps marked. */
  add({ offset, next_offset: end, content }) {
    if (end <= this.next) return;
    if (offset > this.next) {
      this.flush();
      this.marker(`… ${offset - this.next} bytes of log left out …`);
    } else if (offset < this.next) {
      content = decoder.decode(encoder.encode(content).slice(this.next - offset));
    }
    this.next = end;
    this.write(content);
  }

  write(content) {
    const text = this.partial + content;
    const lines = text.split("\n");
    this.partial = lines.pop();
    if (this.partialNode) {
      this.partialNode.remove();
      this.partialNode = null;
    }
    const fragment = document.createDocumentFragment();
    for (const line of lines) fragment.append(this.line(line));
    if (this.partial) {
      this.partialNode = this.line(this.partial, true);
      fragment.append(this.partialNode);
    }
    this.lines.append(fragment);
    this.empty.hidden = this.count > 0 || Boolean(this.partial);
    this.scroll();
  }

  flush() {
    if (this.partial) {
      if (this.partialNode) this.partialNode.remove();
      this.partialNode = null;
      this.lines.append(this.line(this.partial));
      this.partial = "";
    }
  }

  line(text, partial = false) {
    const number = partial ? this.count + 1 : ++this.count;
    const body = h("span", { class: "txt" },
      runs(text, partial ? { ...this.state } : this.state)
        .map((run) => (run.cls ? h("span", { class: run.cls, text: run.text }) : run.text)));
    const node = h("div", { class: "line", id: partial ? null : `L${number}` },
      h("a", { class: "ln", href: this.lineHref(number), "aria-label": `line ${number}` }, String(number)),
      body);
    if (!partial && number === this.target) {
      node.classList.add("target");
      requestAnimationFrame(() => node.scrollIntoView({ block: "center" }));
    }
    return node;
  }

  marker(text) {
    this.lines.append(h("div", { class: "line marker" }, h("span", { class: "ln" }), h("span", { class: "txt", text })));
  }

  scroll() {
    if (this.follow.checked) this.lines.scrollTop = this.lines.scrollHeight;
  }
}
