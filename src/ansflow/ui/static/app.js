// The page shell: sign-in gate, hash routes (#/, #/pipelines/7, #/executions/42?step=build),
// and the header. A page is a function (main, params, query) returning a cleanup function.

import { api, session } from "./api.js";
import { h, notice } from "./dom.js";
import { executionPage } from "./execution.js";
import { pipelinePage } from "./pipeline.js";
import { pipelinesPage } from "./pipelines.js";

const main = document.getElementById("main");
const ROUTES = [
  [/^\/signin$/, signinPage],
  [/^\/?$/, pipelinesPage],
  [/^\/pipelines\/(\d+)$/, pipelinePage],
  [/^\/executions\/(\d+)$/, executionPage],
];
let current = { path: null, cleanup: () => {}, update: null };

function parse() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, search = ""] = raw.split("?");
  return { path, query: new URLSearchParams(search) };
}

function header() {
  const nav = document.getElementById("nav");
  const who = document.getElementById("who");
  nav.replaceChildren();
  who.replaceChildren();
  if (!session.scope) return;
  nav.append(h("a", { href: "#/" }, "Pipelines"));
  who.append(h("span", { class: "muted", text: `${session.name} · ${session.scope}` }),
    h("button", { type: "button", class: "link", onclick: () => { session.clear(); location.hash = "#/signin"; } }, "Sign out"));
}

async function identify() {
  if (!session.token) return false;
  if (session.scope) return true;
  try {
    const me = await api("whoami");
    session.name = me.name;
    session.scope = me.scope;
    return true;
  } catch {
    session.clear();
    return false;
  }
}

async function route() {
  const { path, query } = parse();
  if (path === current.path && current.update) {
    current.update(query);
    return;
  }
  current.cleanup();
  current = { path, cleanup: () => {}, update: null };
  if (path !== "/signin" && !(await identify())) {
    location.hash = "#/signin";
    return;
  }
  header();
  const found = ROUTES.find(([pattern]) => pattern.test(path));
  // each page draws into its own element: a slow page that finishes after the user
  // moved on draws into a detached one
  const view = h("div");
  main.replaceChildren(view);
  if (!found) {
    view.append(notice(`No page at ${path}.`));
    return;
  }
  const mine = current;
  const [pattern, page] = found;
  const result = await page(view, path.match(pattern).slice(1), query);
  if (current !== mine) {
    if (result && result.cleanup) result.cleanup();
    return;
  }
  if (result) Object.assign(current, result);
  main.focus({ preventScroll: true });
}

function safeNext(query) {
  const next = query.get("next") || "/";
  return /^\/[\w/?=&.-]*$/.test(next) ? next : "/";
}

async function signinPage(root, params, query) {
  document.title = "Sign in · AnsFlow";
  const given = query.get("token");
  if (given) {
    // a link with a token (scripts/serve-demo prints one): sign in, then drop the token
    // from the address and the tab's history
    session.clear();
    session.set(given);
    if (await identify()) {
      location.replace(`#${safeNext(query)}`);
      return;
    }
    history.replaceState(null, "", "#/signin");
  }
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "off",
    required: true, placeholder: "ansflow_…", "aria-describedby": "token-help" });
  const message = h("div", { role: "alert" });
  const form = h("form", { class: "card signin" },
    h("h1", {}, "Sign in"),
    h("label", { for: "token" }, "API token"), input,
    h("p", { id: "token-help", class: "muted" },
      "Create one with ", h("code", {}, "ansflow token create --scope trigger"),
      ". It is kept for this browser tab only."),
    message,
    h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    session.clear();
    session.set(input.value.trim());
    if (await identify()) {
      location.hash = `#${safeNext(query)}`;
    } else {
      message.replaceChildren(notice("That token was not accepted."));
    }
  });
  root.append(form);
  input.focus();
}

window.addEventListener("hashchange", route);
route();
