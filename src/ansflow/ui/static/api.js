// Talking to the API: the token (kept for this browser tab only), JSON calls, and the
// live events stream read with fetch (EventSource cannot send an Authorization header).

const KEY = "ansflow.token";

export const session = {
  get token() { return sessionStorage.getItem(KEY); },
  name: null,
  scope: null,
  set(token) { sessionStorage.setItem(KEY, token); },
  clear() { sessionStorage.removeItem(KEY); this.name = null; this.scope = null; },
  allows(scope) {
    const rank = { read: 0, trigger: 1, admin: 2 };
    return this.scope !== null && rank[this.scope] >= rank[scope];
  },
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function url(path, query = {}) {
  const target = new URL(path.startsWith("/") ? path : `/api/v1/${path}`, location.origin);
  for (const [key, value] of Object.entries(query)) {
    if (Array.isArray(value)) value.forEach((v) => target.searchParams.append(key, v));
    else if (value !== null && value !== undefined && value !== "") {
      target.searchParams.set(key, value);
    }
  }
  return target;
}

function headers(extra = {}) {
  return { Authorization: `Bearer ${session.token}`, ...extra };
}

export async function api(path, { method = "GET", body, query } = {}) {
  const init = { method, headers: headers() };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url(path, query), init);
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = data && data.error ? data.error : {};
    if (response.status === 401 && path !== "whoami") {
      session.clear();
      location.hash = "#/signin";
    }
    throw new ApiError(response.status, error.code || "http_error",
      error.message || `${response.status} ${response.statusText}`);
  }
  return data;
}

export async function download(path, filename) {
  const response = await fetch(url(path), { headers: headers() });
  if (!response.ok) throw new ApiError(response.status, "download", `download failed (${response.status})`);
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = filename;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

let schemaPaths = null;

/** Whether the server has an endpoint (asked once, from its OpenAPI schema). */
export async function hasEndpoint(path) {
  if (schemaPaths === null) {
    const response = await fetch("/openapi.json");
    schemaPaths = response.ok ? new Set(Object.keys((await response.json()).paths)) : new Set();
  }
  return schemaPaths.has(path);
}

function parseBlock(block) {
  let event = "message";
  let id = null;
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
    else if (field === "id") id = value;
  }
  if (!data.length) return null;
  return { event, id, data: JSON.parse(data.join("\n")) };
}

/**
 * Follow an execution's events. Reconnects with the last id it saw (nothing is lost),
 * stops after `end`. `onEvent(kind, data)`, `onState("live" | "reconnecting" | "ended")`.
 */
export function follow(executionId, { logs = true, steps = [], onEvent, onState = () => {} }) {
  let last = null;
  let stopped = false;
  let controller = null;

  async function once() {
    controller = new AbortController();
    const query = { after: last, step: steps };
    if (!logs) query.logs = "false";
    const response = await fetch(url(`executions/${executionId}/events`, query),
      { headers: headers({ Accept: "text/event-stream" }), signal: controller.signal });
    if (response.status === 204) return true;
    if (!response.ok) throw new ApiError(response.status, "events", "events unavailable");
    onState("live");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = parseBlock(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (!event) continue;
        if (event.id !== null) last = event.id;
        onEvent(event.event, event.data);
        if (event.event === "end") return true;
      }
    }
  }

  (async () => {
    let delay = 500;
    while (!stopped) {
      try {
        if (await once()) break;
        delay = 500;
      } catch (error) {
        if (stopped) return;
        if (error instanceof ApiError && error.status === 401) return;
      }
      if (stopped) return;
      onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 10_000);
    }
    if (!stopped) onState("ended");
  })();

  return {
    close() {
      stopped = true;
      if (controller) controller.abort();
    },
  };
}
