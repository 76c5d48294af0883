// The key's recent jobs, kept up to date: read again on every status change of the job on show
// and every few seconds while one of them is unfinished. Items are updated in place (a thumbnail
// is reloaded only when its job has a newer frame).
import { TERMINAL } from "./api.js";
import { notifyError } from "./notice.js";
import { $, el } from "./util.js";

const LIVE_MS = 3000;

let api = null;
let onOpen = () => {};
let timer = null;
let busy = null;

function item(job) {
  const thumb = el("img", { alt: "", loading: "lazy", hidden: true });
  thumb.addEventListener("error", () => {
    thumb.hidden = true;
  });
  const button = el("button", { type: "button", class: "job-item", dataset: { id: job.id } },
    thumb,
    el("span", { class: "job-text" }, el("span", { class: "job-prompt" }), el("span", { class: "hint job-meta" })),
    el("span", { class: "badge" }));
  button.addEventListener("click", () => onOpen(job.id));
  return el("li", { dataset: { id: job.id } }, button);
}

function update(li, job) {
  const thumb = li.querySelector("img");
  const step = String(job.progress.step);
  if (job.progress.latest_frame_url && thumb.dataset.step !== step) {
    thumb.dataset.step = step;
    thumb.src = job.progress.latest_frame_url;
    thumb.hidden = false;
  }
  li.querySelector(".job-prompt").textContent = job.request.prompt;
  const count = job.request.batch_size > 1 ? ` · ${job.request.batch_size} images` : "";
  const progress = job.status === "rendering" && job.progress.total ? ` · step ${job.progress.step}/${job.progress.total}` : "";
  li.querySelector(".job-meta").textContent =
    `${new Date(job.created_at).toLocaleString()} · ${job.model} · ${job.request.steps} steps${count}${progress}`;
  const badge = li.querySelector(".badge");
  badge.dataset.status = job.status;
  badge.textContent = job.status;
}

async function load() {
  const list = $("job-list");
  try {
    const page = await api.get("/animations?limit=20");
    const existing = new Map([...list.children].map((li) => [li.dataset.id, li]));
    const items = page.data.map((job) => {
      const li = existing.get(job.id) ?? item(job);
      update(li, job);
      return li;
    });
    // Re-order only when the order changed (a new job on top): items keep their images.
    if (items.some((li, i) => list.children[i] !== li) || list.children.length !== items.length) list.replaceChildren(...items);
    $("job-list-empty").hidden = items.length > 0;
    clearTimeout(timer);
    if (page.data.some((job) => !TERMINAL.has(job.status))) timer = setTimeout(refreshList, LIVE_MS);
  } catch (error) {
    list.replaceChildren();
    $("job-list-empty").hidden = true;
    notifyError(error);
  }
}

// One read at a time; a refresh asked for during one runs once it is done.
export function refreshList() {
  if (busy) {
    busy.again = true;
    return busy.promise;
  }
  const state = { again: false };
  state.promise = load().finally(() => {
    busy = null;
    if (state.again) refreshList();
  });
  busy = state;
  return state.promise;
}

export function setupRecent(options) {
  api = options.api;
  onOpen = options.onOpen;
  $("refresh").addEventListener("click", refreshList);
}
