// The page: a form that posts a job or a grid (form.js, its axis editor gridform.js), a live view
// of one job with its step explorer (job.js, explorer.js) or of one grid (grid.js), and the key's
// recent jobs (recent.js). This module wires them together: the API key, the capabilities, and
// the route (#/animations/<id> or #/grids/<id>).
import { Api } from "./api.js";
import { caps, loadCapabilities } from "./capabilities.js";
import { applyCapabilities as applyToForm, fillFromJob, setupForm } from "./form.js";
import { closeGrid, currentGridId, openGrid, setupGridView } from "./grid.js";
import { applyCapabilities as applyToGridForm, setupGridForm } from "./gridform.js";
import { applyCapabilities as applyToJob, closeJob, currentJobId, openJob, setupJobView } from "./job.js";
import { notify } from "./notice.js";
import { refreshList, setupRecent } from "./recent.js";
import { $ } from "./util.js";

const KEY_STORAGE = "stepanim.apiKey";

const api = new Api(() => localStorage.getItem(KEY_STORAGE) || "");

// ---- API key ---------------------------------------------------------------------------

function showKeyState() {
  const key = localStorage.getItem(KEY_STORAGE) || "";
  $("key-state").textContent = key ? `…${key.slice(-4)}` : "none";
  $("key-input").value = "";
}

function setupKey() {
  showKeyState();
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key-input").value.trim();
    if (key) localStorage.setItem(KEY_STORAGE, key);
    showKeyState();
    $("key-panel").open = false;
    notify("");
    refreshList();
  });
  $("key-forget").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORAGE);
    showKeyState();
    notify("");
    refreshList();
  });
}

// ---- route ---------------------------------------------------------------------------------

function route({ scroll = true } = {}) {
  const job = location.hash.match(/^#\/animations\/([0-9a-f]{32})$/);
  const grid = location.hash.match(/^#\/grids\/([0-9a-f]{32})$/);
  if (job) {
    closeGrid();
    if (currentJobId() !== job[1]) openJob(job[1], { scroll });
  } else if (grid) {
    closeJob();
    if (currentGridId() !== grid[1]) openGrid(grid[1], { scroll });
  } else {
    closeJob();
    closeGrid();
  }
}

setupKey();
setupForm({
  api,
  onCreated: (job) => {
    closeGrid();
    openJob(job.id, { known: job });
    refreshList();
  },
  onGridCreated: (grid) => {
    closeJob();
    openGrid(grid.id, { known: grid });
  },
});
setupGridForm();
setupGridView({ api });
setupJobView({ api, onReuse: fillFromJob, onChange: refreshList });
setupRecent({ api, onOpen: (id) => openJob(id) });
window.addEventListener("popstate", () => route());
window.addEventListener("hashchange", () => route());
loadCapabilities(api, {
  onChange: () => {
    applyToForm(caps);
    applyToGridForm(caps);
    applyToJob(caps);
  },
  onState: (text) => {
    $("caps-state").textContent = text;
  },
});
refreshList();
// A job's own address (#/animations/<id>) opened directly: its video is at the top already.
route({ scroll: false });
