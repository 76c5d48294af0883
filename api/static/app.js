// The page: a form that posts a job, a live view of one job (status, progress, the newest
// frame, then the video, downloads and a re-encode form) and the key's recent jobs.
import { Api, ApiError, TERMINAL } from "./api.js";

const KEY_STORAGE = "stepanim.apiKey";
const $ = (id) => document.getElementById(id);

const api = new Api(() => localStorage.getItem(KEY_STORAGE) || "");

// Used when GET /capabilities cannot answer (no encoder has reported yet).
const FALLBACK = {
  codecs: ["h264", "vp9", "gif"],
  interpolations: ["none"],
  schedulers: ["euler_a", "euler", "ddim", "plms", "lms", "heun", "dpmpp_2m", "dpmpp_2m_sde", "unipc"],
  default_model: "",
};

// What a <video> needs to play each codec (prores: no browser plays it; gif is an image).
const PLAYABLE = {
  h264: 'video/mp4; codecs="avc1.42E01E"',
  h265: 'video/mp4; codecs="hvc1.1.6.L93.B0"',
  vp9: 'video/webm; codecs="vp9"',
  av1: 'video/mp4; codecs="av01.0.05M.08"',
};

function browserPlays(codec) {
  if (codec === "gif") return true;
  const type = PLAYABLE[codec];
  return Boolean(type) && document.createElement("video").canPlayType(type) !== "";
}

// ---- notices -------------------------------------------------------------------------

function notify(message, kind = "error") {
  const notice = $("notice");
  notice.textContent = message;
  notice.dataset.kind = kind;
  notice.hidden = !message;
}

function explain(error) {
  if (error instanceof ApiError) {
    if (error.status === 401) {
      $("key-panel").open = true;
      return `This server needs an API key: ${error.message}`;
    }
    return error.message;
  }
  return `The service could not be reached: ${error.message || error}`;
}

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

// ---- capabilities and the form ----------------------------------------------------------

function fillSelect(select, values, preferred) {
  const previous = select.value;
  select.replaceChildren(...values.map((value) => new Option(value, value)));
  const keep = values.includes(previous) ? previous : preferred;
  if (keep !== undefined && values.includes(keep)) select.value = keep;
}

function fillModels(names) {
  const list = $("model-list");
  const known = new Set([...list.options].map((o) => o.value));
  for (const name of names) {
    if (name && !known.has(name)) {
      list.append(new Option(name, name));
      known.add(name);
    }
  }
}

function applyCapabilities(caps) {
  const form = $("job-form");
  const codec = caps.codecs.find(browserPlays) ?? caps.codecs[0];
  fillSelect(form.elements.codec, caps.codecs, codec);
  fillSelect(form.elements.interpolation, caps.interpolations, "none");
  fillSelect(form.elements.scheduler, caps.schedulers, caps.schedulers.includes("euler_a") ? "euler_a" : undefined);
  const again = $("rendition-form");
  fillSelect(again.elements.codec, caps.codecs, codec);
  fillSelect(again.elements.interpolation, caps.interpolations, "none");
  if (caps.default_model) {
    form.elements.model.placeholder = `${caps.default_model} (server default)`;
    fillModels([caps.default_model]);
  }
  defaultModel = caps.default_model || "";
  const first = models.size === 0;
  models = new Map((caps.models ?? []).map((info) => [info.name, info]));
  fillModels([...models.keys()]);
  if (first && models.size > 0) applyModelDefaults(form);
}

// ---- per-model defaults (GET /capabilities lists the workers' models and what suits each) ----

let defaultModel = "";
let models = new Map(); // name -> {name, description, example_prompt, defaults}
let extraDefaults = {}; // the chosen model's defaults that no form field shows (e.g. capture)

function applyModelDefaults(form) {
  const info = models.get(form.elements.model.value.trim() || defaultModel);
  extraDefaults = {};
  $("model-note").textContent = info?.description ?? "";
  if (!info) return;
  for (const [name, value] of Object.entries(info.defaults)) {
    const input = form.elements[name];
    if (input instanceof HTMLInputElement && typeof value !== "object") input.value = String(value);
    else extraDefaults[name] = value;
  }
  if (info.example_prompt) form.elements.prompt.placeholder = info.example_prompt;
}

async function loadCapabilities() {
  applyCapabilities(FALLBACK);
  for (let attempt = 0; attempt < 30; attempt += 1) {
    try {
      const caps = await api.get("/capabilities");
      applyCapabilities(caps);
      $("caps-state").textContent = "";
      return;
    } catch (error) {
      const waiting = error instanceof ApiError && error.status === 503;
      $("caps-state").textContent = waiting
        ? "Waiting for the encoder to report its codecs…"
        : `Capabilities unavailable: ${explain(error)}`;
      if (!waiting) return;
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
}

function readJobForm(form) {
  const f = form.elements;
  const number = (input) => Number(input.value);
  const body = {
    prompt: f.prompt.value,
    steps: number(f.steps),
    scheduler: f.scheduler.value,
    width: number(f.width),
    height: number(f.height),
    guidance_scale: number(f.guidance_scale),
    animation: {
      duration: number(f.duration),
      codec: f.codec.value,
      interpolation: f.interpolation.value,
    },
  };
  for (const [name, value] of Object.entries(extraDefaults)) {
    body[name] = name === "animation" ? { ...value, ...body.animation } : value;
  }
  if (f.negative_prompt.value.trim()) body.negative_prompt = f.negative_prompt.value;
  if (f.model.value.trim()) body.model = f.model.value.trim();
  if (f.seed.value !== "") body.seed = number(f.seed);
  return body;
}

function setupForm() {
  const form = $("job-form");
  form.elements.model.addEventListener("change", () => applyModelDefaults(form));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = $("submit");
    button.disabled = true;
    notify("");
    try {
      const body = readJobForm(form);
      const file = form.elements.init_image.files[0];
      if (file) {
        button.textContent = "Uploading…";
        const upload = await api.upload(file);
        body.init_image = { upload_id: upload.id };
        body.strength = Number(form.elements.strength.value);
      }
      button.textContent = "Submitting…";
      const job = await api.post("/animations", body);
      openJob(job.id, job);
      refreshList();
    } catch (error) {
      notify(explain(error));
    } finally {
      button.disabled = false;
      button.textContent = "Render";
    }
  });
}

// ---- one job -----------------------------------------------------------------------------

// The job on show: its id, the stream's AbortController, the step of the frame shown.
let view = null;

function formatSeconds(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  if (seconds < 60) return `${Math.max(0, Math.round(seconds))} s`;
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function showStatus(status) {
  const badge = $("job-status");
  badge.textContent = status;
  badge.dataset.status = status;
  $("cancel").hidden = TERMINAL.has(status);
}

function showProgress(step, total, etaSeconds) {
  const bar = $("job-progress");
  bar.max = Math.max(total, 1);
  bar.value = Math.min(step, total);
  $("job-step").textContent = total ? `step ${step} of ${total}` : "";
  const eta = formatSeconds(etaSeconds);
  $("job-eta").textContent = eta && step < total ? `about ${eta} left` : "";
}

function showFrame(url, step) {
  if (!url || step <= view.frameStep) return;
  view.frameStep = step;
  const frame = $("frame");
  frame.dataset.step = String(step);
  frame.src = url;
  frame.hidden = !$("video").hidden || !$("gif").hidden;
  $("frame-caption").textContent = `step ${step}`;
}

function showResult(job) {
  const video = $("video");
  const gif = $("gif");
  if (job.video) {
    const isGif = job.video.content_type === "image/gif";
    // Signed URLs change at every read: a video is known by its job and file, not its URL,
    // so that a later read of the job does not restart it.
    const identity = `${job.id}/${job.video.filename}/${job.video.size_bytes}`;
    if (isGif && gif.dataset.src !== identity) {
      gif.dataset.src = identity;
      gif.src = job.video.url;
    } else if (!isGif && video.dataset.src !== identity) {
      video.dataset.src = identity;
      video.src = job.video.url;
      video.muted = true;
      video.play().catch(() => {}); // autoplay of a muted video is allowed; controls remain
    }
    gif.hidden = !isGif;
    video.hidden = isGif;
    $("frame").hidden = true;
    $("frame-caption").textContent = browserPlays(job.video.codec)
      ? ""
      : `This browser cannot play ${job.video.codec}; download it below.`;
  }
  const downloads = [];
  const link = (video, label) => {
    const a = document.createElement("a");
    a.href = video.url;
    a.download = video.filename;
    a.textContent = label;
    const li = document.createElement("li");
    const meta = document.createElement("span");
    meta.className = "hint";
    meta.textContent = ` ${video.codec} · ${video.duration.toFixed(1)} s · ${video.frames} frames · ${formatBytes(video.size_bytes)}`;
    li.append(a, meta);
    return li;
  };
  if (job.video) downloads.push(link(job.video, job.video.filename));
  for (const rendition of job.renditions || []) {
    if (rendition.video) {
      downloads.push(link(rendition.video, rendition.video.filename));
    } else {
      const li = document.createElement("li");
      li.className = "hint";
      const o = rendition.options;
      const what = `${o.codec}, ${o.duration} s, ${o.fps} fps, ${o.interpolation}`;
      li.textContent = rendition.error
        ? `Re-encode ${what} failed: ${rendition.error.message}`
        : `Re-encode ${what}: ${rendition.status}…`;
      downloads.push(li);
    }
  }
  if (job.frames_zip) {
    const a = document.createElement("a");
    a.href = job.frames_zip.url;
    a.textContent = `${job.frames_zip.filename} (${job.frames_zip.frames} frames)`;
    const li = document.createElement("li");
    li.append(a);
    downloads.push(li);
  }
  $("downloads").replaceChildren(...downloads);
  $("result").hidden = downloads.length === 0;
  const canReencode = job.status === "succeeded" && job.request.animation.keep_frames;
  $("rendition-form").hidden = !canReencode;
  if (canReencode) {
    $("rendition-form").elements.duration.value = job.request.animation.duration;
  }
}

function showJob(job) {
  if (!view || view.id !== job.id) return;
  $("job-id").textContent = job.id;
  $("job-prompt").textContent = job.request.prompt;
  showStatus(job.status);
  const { step, total, eta_seconds: eta } = job.progress;
  showProgress(job.status === "succeeded" ? total : step, total, job.status === "rendering" ? eta : null);
  if (job.progress.latest_frame_url) showFrame(job.progress.latest_frame_url, step);
  const error = $("job-error");
  error.hidden = !job.error;
  error.textContent = job.error ? `${job.error.code}: ${job.error.message}` : "";
  showResult(job);
  if (job.status === "encoding") $("job-eta").textContent = "encoding the video…";
}

function etaNow(current) {
  return current.eta == null ? null : current.eta - (Date.now() - current.etaAt) / 1000;
}

// The ETA comes from the job itself (the render worker measures it): read it at most every 2 s.
async function refreshEta(current) {
  const now = Date.now();
  if (current.etaBusy || now - current.etaAskedAt < 2000) return;
  current.etaBusy = true;
  current.etaAskedAt = now;
  try {
    const job = await api.get(`/animations/${current.id}`, { signal: current.controller.signal });
    if (view === current && job.status === "rendering") {
      current.eta = job.progress.eta_seconds;
      current.etaAt = Date.now();
      showProgress(current.step, current.total, etaNow(current));
    }
  } catch {
    // the next progress event tries again
  } finally {
    current.etaBusy = false;
  }
}

async function follow(current) {
  try {
    for await (const { event, data } of api.follow(current.id, { signal: current.controller.signal })) {
      if (view !== current) return;
      if (event === "progress") {
        current.step = data.step;
        current.total = data.total;
        showProgress(data.step, data.total, etaNow(current));
        showFrame(data.latest_frame_url, data.step);
        refreshEta(current);
      } else if (event === "status") {
        if (data.animation) showJob(data.animation);
        else showStatus(data.status);
        if (TERMINAL.has(data.status)) refreshList();
      } else {
        // a rendition update or another event: read the job again
        showJob(await api.get(`/animations/${current.id}`, { signal: current.controller.signal }));
      }
    }
  } catch (error) {
    if (!current.controller.signal.aborted) notify(explain(error));
  }
}

async function openJob(id, known = null) {
  if (view) view.controller.abort();
  const current = {
    id,
    controller: new AbortController(),
    frameStep: 0, // step of the frame on show
    step: 0,
    total: 0,
    eta: null, // the job's eta_seconds when last read, at etaAt (ms)
    etaAt: 0,
    etaAskedAt: 0,
    etaBusy: false,
  };
  view = current;
  if (location.hash !== `#/animations/${id}`) history.pushState(null, "", `#/animations/${id}`);
  $("job").hidden = false;
  $("job").scrollIntoView({ block: "start" });
  for (const name of ["frame", "video", "gif"]) {
    const element = $(name);
    element.hidden = true;
    element.removeAttribute("src");
    delete element.dataset.src;
  }
  $("video").load();
  $("frame-caption").textContent = "";
  $("result").hidden = true;
  try {
    const job = known ?? (await api.get(`/animations/${id}`, { signal: current.controller.signal }));
    showJob(job);
    if (!TERMINAL.has(job.status)) await follow(current);
  } catch (error) {
    if (!current.controller.signal.aborted) notify(explain(error));
  }
}

function setupJobView() {
  $("cancel").addEventListener("click", async () => {
    if (!view) return;
    try {
      showJob(await api.post(`/animations/${view.id}/cancel`));
    } catch (error) {
      notify(explain(error));
    }
  });
  $("rendition-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!view) return;
    const current = view;
    const f = event.target.elements;
    const options = {
      codec: f.codec.value,
      duration: Number(f.duration.value),
      fps: Number(f.fps.value),
      interpolation: f.interpolation.value,
    };
    try {
      const rendition = await api.post(`/animations/${current.id}/renditions`, options);
      notify("");
      // Poll the rendition (the job's event stream has ended) until it is done.
      let state = rendition;
      showJob(await api.get(`/animations/${current.id}`));
      while (view === current && !["succeeded", "failed"].includes(state.status)) {
        await new Promise((resolve) => setTimeout(resolve, 1000));
        state = await api.get(`/animations/${current.id}/renditions/${rendition.id}`);
      }
      if (view === current) showJob(await api.get(`/animations/${current.id}`));
    } catch (error) {
      notify(explain(error));
    }
  });
}

// ---- recent jobs --------------------------------------------------------------------------

async function refreshList() {
  const list = $("job-list");
  try {
    const page = await api.get("/animations?limit=20");
    const items = page.data.map((job) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "job-item";
      button.dataset.id = job.id;
      const thumb = document.createElement("img");
      thumb.alt = "";
      thumb.loading = "lazy";
      if (job.progress.latest_frame_url) thumb.src = job.progress.latest_frame_url;
      else thumb.hidden = true;
      thumb.addEventListener("error", () => {
        thumb.hidden = true;
      });
      const text = document.createElement("span");
      text.className = "job-text";
      const prompt = document.createElement("span");
      prompt.className = "job-prompt";
      prompt.textContent = job.request.prompt;
      const meta = document.createElement("span");
      meta.className = "hint";
      meta.textContent = `${new Date(job.created_at).toLocaleString()} · ${job.model} · ${job.request.steps} steps`;
      text.append(prompt, meta);
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.dataset.status = job.status;
      badge.textContent = job.status;
      button.append(thumb, text, badge);
      button.addEventListener("click", () => openJob(job.id));
      li.append(button);
      return li;
    });
    list.replaceChildren(...items);
    $("job-list-empty").hidden = items.length > 0;
    fillModels(page.data.map((job) => job.model));
  } catch (error) {
    list.replaceChildren();
    $("job-list-empty").hidden = true;
    notify(explain(error));
  }
}

// ---- start -------------------------------------------------------------------------------

function route() {
  const match = location.hash.match(/^#\/animations\/([0-9a-f]{32})$/);
  if (match) {
    if (!view || view.id !== match[1]) openJob(match[1]);
  } else if (view) {
    view.controller.abort();
    view = null;
    $("job").hidden = true;
  }
}

setupKey();
setupForm();
setupJobView();
$("refresh").addEventListener("click", refreshList);
window.addEventListener("popstate", route);
window.addEventListener("hashchange", route);
loadCapabilities();
refreshList();
route();
