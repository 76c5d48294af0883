// One grid on show (#/grids/<id>): its status, cells and steps done (all cells together), cancel,
// every cell in its place with a link to its own animation, then the grid video. The grid is
// polled (GET /grids/{id}, every second): its cells' steps are read there, not in its events.
import { TERMINAL } from "./api.js";
import { notifyError } from "./notice.js";
import { $, browserPlays, el } from "./util.js";

const POLL_MS = 1000;

let api = null;
let view = null; // {id, controller, grid}

export const currentGridId = () => view?.id ?? null;

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });

function stageText(grid) {
  const { cells_done: cells, cells_total: of, steps_done: steps, steps_total: total } = grid.progress;
  const done = `${cells}/${of} cells done · ${steps}/${total} steps`;
  if (grid.status === "queued") return `waiting in the queue… ${done}`;
  if (grid.status === "encoding") return `composing the grid video… ${done}`;
  return done;
}

function axisText(axis) {
  return `${axis.field}: ${axis.values.join(", ")}`;
}

function cellTable(grid) {
  const columns = grid.x.values.length;
  const rows = grid.y ? grid.y.values.length : 1;
  const at = new Map(grid.cells.map((cell) => [`${cell.x},${cell.y}`, cell]));
  const labelOf = (cell) => (cell.y_label == null ? cell.x_label : `${cell.x_label} × ${cell.y_label}`);
  const head = el("tr", {},
    el("th", { scope: "col", text: grid.y ? `${grid.y.field} \\ ${grid.x.field}` : grid.x.field }),
    ...Array.from({ length: columns }, (_, x) => el("th", { scope: "col", text: at.get(`${x},0`)?.x_label ?? "" })));
  const body = Array.from({ length: rows }, (_, y) => el("tr", {},
    el("th", { scope: "row", text: grid.y ? at.get(`0,${y}`)?.y_label ?? "" : "" }),
    ...Array.from({ length: columns }, (_, x) => {
      const cell = at.get(`${x},${y}`);
      if (!cell) return el("td");
      const status = cell.status ?? "queued";
      return el("td", { dataset: { x, y } },
        el("a", { href: `#/animations/${cell.id}`, class: "cell-link", "aria-label": `cell ${labelOf(cell)}: its animation` },
          el("span", { class: "badge", dataset: { status }, text: status }),
          el("span", { class: "hint", text: ` ${Math.min(cell.step, cell.total)}/${cell.total} steps` })),
        cell.error ? el("p", { class: "error", text: `${cell.error.code}: ${cell.error.message}` }) : null);
    })));
  return [el("thead", {}, head), el("tbody", {}, ...body)];
}

function showVideo(video) {
  $("grid-result").hidden = !video;
  if (!video) return;
  const gif = video.codec === "gif";
  const player = $("grid-video");
  const image = $("grid-gif");
  player.hidden = gif || !browserPlays(video.codec);
  image.hidden = !gif;
  const target = gif ? image : player;
  if (target.getAttribute("src") !== video.url) target.src = video.url;
  $("grid-download").href = video.url;
  $("grid-download").download = video.filename;
}

function showGrid(grid) {
  if (!view || view.id !== grid.id) return;
  view.grid = grid;
  const badge = $("grid-status");
  badge.textContent = grid.status;
  badge.dataset.status = grid.status;
  $("grid-stage").textContent = stageText(grid);
  $("grid-prompt").textContent = grid.base.prompt;
  $("grid-axes-text").textContent = [`X ${axisText(grid.x)}`, grid.y ? `Y ${axisText(grid.y)}` : null].filter(Boolean).join(" · ");
  const bar = $("grid-progress");
  bar.max = Math.max(grid.progress.steps_total, 1);
  bar.value = grid.status === "succeeded" ? bar.max : grid.progress.steps_done;
  $("grid-cancel").hidden = TERMINAL.has(grid.status);
  $("grid-error").hidden = !grid.error;
  $("grid-error").textContent = grid.error ? `${grid.error.code}: ${grid.error.message}` : "";
  $("grid-warnings").hidden = !grid.warnings?.length;
  $("grid-warnings").replaceChildren(...(grid.warnings ?? []).map((w) => el("p", { class: "warning", text: w })));
  $("grid-cells").replaceChildren(...cellTable(grid));
  $("grid-id").textContent = grid.id;
  showVideo(grid.video);
}

async function poll(current) {
  const { signal } = current.controller;
  while (!signal.aborted && !TERMINAL.has(current.grid?.status)) {
    await sleep(POLL_MS, signal);
    if (signal.aborted) return;
    try {
      showGrid(await api.get(`/grids/${current.id}`, { signal }));
    } catch (error) {
      if (signal.aborted) return;
      if (error.status && error.status < 500 && error.status !== 429) {
        notifyError(error);
        return;
      }
    }
  }
}

export async function openGrid(id, { known = null, scroll = true } = {}) {
  if (view) view.controller.abort();
  const current = { id, controller: new AbortController(), grid: null };
  view = current;
  if (location.hash !== `#/grids/${id}`) history.pushState(null, "", `#/grids/${id}`);
  $("grid").hidden = false;
  $("grid-cells").replaceChildren();
  $("grid-result").hidden = true;
  $("grid-video").removeAttribute("src");
  if (scroll) $("grid").scrollIntoView({ block: "start" });
  try {
    showGrid(known ?? (await api.get(`/grids/${id}`, { signal: current.controller.signal })));
    await poll(current);
  } catch (error) {
    if (!current.controller.signal.aborted) notifyError(error);
  }
}

export function closeGrid() {
  if (!view) return;
  view.controller.abort();
  view = null;
  $("grid").hidden = true;
  $("grid-video").removeAttribute("src");
}

export function setupGridView(options) {
  api = options.api;
  $("grid-cancel").addEventListener("click", async () => {
    if (!view) return;
    try {
      showGrid(await api.post(`/grids/${view.id}/cancel`));
    } catch (error) {
      notifyError(error);
    }
  });
}
