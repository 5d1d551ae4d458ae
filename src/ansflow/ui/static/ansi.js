// ANSI SGR colours to styled text runs. Text stays text (it is never parsed as markup).

const BASIC = ["black", "red", "green", "yellow", "blue", "magenta", "cyan", "white"];
const CSI = /\x1b\[([0-9;?]*)([@-~])/g;

export function initial() {
  return { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false };
}

function colour(code, bright) {
  return `${bright ? "br-" : ""}${BASIC[code]}`;
}

function extended(codes, i) {
  // 38;5;n (256 colours) shown as the nearest basic colour for n < 16; others dropped
  if (codes[i + 1] === 5 && codes[i + 2] !== undefined) {
    const n = codes[i + 2];
    return [n < 16 ? colour(n % 8, n >= 8) : null, i + 2];
  }
  if (codes[i + 1] === 2) return [null, i + 4];
  return [null, i];
}

function apply(state, params) {
  const codes = params === "" ? [0] : params.split(";").map((c) => Number(c || 0));
  for (let i = 0; i < codes.length; i++) {
    const code = codes[i];
    if (code === 0) Object.assign(state, initial());
    else if (code === 1) state.bold = true;
    else if (code === 2) state.dim = true;
    else if (code === 3) state.italic = true;
    else if (code === 4) state.underline = true;
    else if (code === 22) state.bold = state.dim = false;
    else if (code === 23) state.italic = false;
    else if (code === 24) state.underline = false;
    else if (code >= 30 && code <= 37) state.fg = colour(code - 30, false);
    else if (code >= 90 && code <= 97) state.fg = colour(code - 90, true);
    else if (code === 39) state.fg = null;
    else if (code >= 40 && code <= 47) state.bg = colour(code - 40, false);
    else if (code >= 100 && code <= 107) state.bg = colour(code - 100, true);
    else if (code === 49) state.bg = null;
    else if (code === 38 || code === 48) {
      const [value, next] = extended(codes, i);
      if (code === 38) state.fg = value;
      else state.bg = value;
      i = next;
    }
  }
}

function classes(state) {
  const out = [];
  if (state.fg) out.push(`fg-${state.fg}`);
  if (state.bg) out.push(`bg-${state.bg}`);
  for (const flag of ["bold", "dim", "italic", "underline"]) if (state[flag]) out.push(flag);
  return out.join(" ");
}

/** Runs of {text, cls} for one line; `state` carries colours over to the next line. */
export function runs(line, state) {
  const cr = line.lastIndexOf("\r", line.length - 2);
  if (cr >= 0) line = line.slice(cr + 1); // a progress bar redrawn with \r: its last form
  const out = [];
  let position = 0;
  for (const match of line.matchAll(CSI)) {
    if (match.index > position) out.push({ text: line.slice(position, match.index), cls: classes(state) });
    if (match[2] === "m") apply(state, match[1]);
    position = match.index + match[0].length;
  }
  if (position < line.length) out.push({ text: line.slice(position), cls: classes(state) });
  return out.map((run) => ({ ...run, text: run.text.replace(/[\x00-\x08\x0b-\x1f\x7f]/g, "") }));
}
