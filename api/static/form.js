// The "new animation" form. Its bounds and choices come from the server (capabilities.js):
// the limits, the samplers and schedules that fit the chosen model, its size multiple, whether it
// takes a negative prompt or an init image, the LoRAs that fit it. Each field shows the value the
// server would apply (the model's default, else the schema's), and a request carries only the
// fields the user set or changed: the server fills in the rest from the model's defaults.
import { ApiError } from "./api.js";
import { caps, modelInfo, samplerLabel, schema, scheduleLabel } from "./capabilities.js";
import { checkAxes, gridActive, gridBody, placeErrors } from "./gridform.js";
import { notify, notifyError } from "./notice.js";
import { $, browserPlays, el, randomSeed } from "./util.js";

const OTHER_MODEL = "__other__";

// Form control -> its path in the request body.
const FIELDS = {
  negative_prompt: "negative_prompt",
  scheduler: "scheduler",
  schedule: "schedule",
  steps: "steps",
  seed: "seed",
  width: "width",
  height: "height",
  guidance_scale: "guidance_scale",
  batch_size: "batch_size",
  duration: "animation.duration",
  fps: "animation.fps",
  codec: "animation.codec",
  interpolation: "animation.interpolation",
  strength: "strength",
};
const TEXT = new Set(["negative_prompt", "scheduler", "schedule", "codec", "interpolation"]);
// Request fields no control shows: kept from a reused job (when they differ from what the server
// would apply anyway) and sent along until left out.
const CARRIED = ["capture", "init_image", "renditions", "animation.skip_steps", "animation.hold_last",
  "animation.run_on_incomplete", "animation.keep_frames", "animation.frames_only"];

let api = null;
let onCreated = () => {};
let onGridCreated = () => {};
let carried = {}; // path -> value, kept by the "reuse settings" button

const form = () => $("job-form");
const control = (name) => form().elements[name];

function getPath(object, path) {
  return path.split(".").reduce((value, key) => (value == null ? undefined : value[key]), object);
}

function setPath(object, path, value) {
  const keys = path.split(".");
  const last = keys.pop();
  let target = object;
  for (const key of keys) target = target[key] ??= {};
  target[last] = value;
}

// ---- choices and bounds from the server -------------------------------------------------

function fillSelect(select, options, preferred) {
  const previous = select.value;
  select.replaceChildren(...options.map(([value, label]) => new Option(label, value)));
  const values = options.map(([value]) => value);
  for (const candidate of [previous, preferred, values[0]]) {
    if (candidate !== undefined && values.includes(candidate)) {
      select.value = candidate;
      break;
    }
  }
}

function chosenModel() {
  const select = control("model");
  return select.value === OTHER_MODEL ? control("model_id").value.trim() : select.value;
}

function fillModels() {
  const select = control("model");
  const names = caps.models.map((m) => m.name);
  if (caps.default_model && !names.includes(caps.default_model)) names.unshift(caps.default_model);
  const options = names.map((name) => [name, name === caps.default_model ? `${name} (default)` : name]);
  if (!options.length) options.push(["", "server default"]);
  options.push([OTHER_MODEL, "Another model (hub id)…"]);
  fillSelect(select, options, caps.default_model);
  select.dataset.suggested = caps.default_model || "";
}

// The samplers that fit the chosen model (the image-to-image ones with an init image), each with
// the schedules that apply; every sampler and schedule when the model is not known here.
function fittingSamplers(info) {
  if (info) return control("init_image").files.length ? info.img2img_samplers : info.samplers;
  const all = caps.schedules.map((s) => s.id);
  return Object.fromEntries(caps.samplers.map((s) => [s.id, all]));
}

function fillSamplers(info) {
  const fitting = fittingSamplers(info);
  const fallback = info?.default_sampler;
  const automatic = fallback ? `Model default (${samplerLabel(fallback)})` : "Model default";
  fillSelect(control("scheduler"), [["", automatic], ...Object.keys(fitting).map((id) => [id, samplerLabel(id)])]);
  control("scheduler").dataset.suggested = "";
  fillSchedules(info);
}

function fillSchedules(info) {
  const fitting = fittingSamplers(info);
  const sampler = control("scheduler").value || info?.default_sampler;
  const schedules = fitting[sampler] ?? caps.schedules.map((s) => s.id);
  const options = (schedules.length ? schedules : ["default"]).map((id) => [id, scheduleLabel(id)]);
  fillSelect(control("schedule"), options, "default");
  control("schedule").dataset.suggested = "default";
  control("schedule").disabled = options.length < 2;
}

function setRange(name, { min, max, step }) {
  const input = control(name);
  for (const [attribute, value] of Object.entries({ min, max, step })) {
    if (value === undefined || value === null || !Number.isFinite(value)) input.removeAttribute(attribute);
    else input[attribute] = String(value);
  }
  const hint = $(`f-${name}-range`);
  if (hint) hint.textContent = Number.isFinite(min) && Number.isFinite(max) ? `${min}–${max}` : "";
}

function applyBounds(info) {
  const limits = caps.limits;
  const bound = (path, key) => schema[path]?.[key];
  const sampler = caps.samplers.find((s) => s.id === (control("scheduler").value || info?.default_sampler));
  setRange("steps", {
    min: bound("steps", "minimum") ?? 1,
    max: Math.min(limits?.max_steps ?? Infinity, sampler?.max_steps ?? Infinity, bound("steps", "maximum") ?? Infinity),
    step: 1,
  });
  const multiple = info?.size_multiple ?? bound("width", "multipleOf") ?? 8;
  const upscale = (carried.capture ?? info?.defaults?.capture)?.upscale ?? 1;
  const minSide = limits?.min_side ?? bound("width", "minimum") ?? multiple;
  const maxSide = Math.min(limits?.max_side ?? bound("width", "maximum") ?? 2048, (limits?.max_frame_side ?? Infinity) / upscale);
  for (const name of ["width", "height"]) {
    setRange(name, {
      min: Math.ceil(minSide / multiple) * multiple,
      max: Math.floor(maxSide / multiple) * multiple,
      step: multiple,
    });
  }
  setRange("guidance_scale", { min: bound("guidance_scale", "minimum") ?? 0, max: bound("guidance_scale", "maximum"), step: 0.5 });
  setRange("batch_size", { min: 1, max: limits?.max_batch_size ?? bound("batch_size", "maximum"), step: 1 });
  setRange("duration", {
    min: bound("animation.duration", "minimum") ?? 0.5,
    max: limits?.max_duration_seconds ?? bound("animation.duration", "maximum"),
    step: 0.5,
  });
  setRange("fps", { min: 1, max: limits?.max_fps ?? bound("animation.fps", "maximum"), step: 1 });
  if (limits) control("prompt").maxLength = limits.max_prompt_chars;
  $("loras-range").textContent = limits ? `(at most ${limits.max_loras} LoRAs)` : "";
}

// The value the server applies to a field the request leaves out: the model's default, else the schema's.
function serverDefault(info, name) {
  const path = FIELDS[name];
  const fromModel = getPath(info?.defaults, path);
  return fromModel !== undefined ? fromModel : schema[path]?.default;
}

function suggest(info) {
  for (const name of Object.keys(FIELDS)) {
    if (name === "scheduler" || name === "schedule") continue;
    const input = control(name);
    let value = serverDefault(info, name);
    if (name === "seed" || name === "strength") value = getPath(info?.defaults, FIELDS[name]);
    input.dataset.suggested = value === undefined || value === null ? "" : String(value);
    if (input.dataset.set) continue;
    if (name === "codec") {
      // Show a codec this browser plays; one the server would not choose is then sent.
      const codecs = [...input.options].map((o) => o.value);
      const playable = browserPlays(value) ? value : codecs.find(browserPlays);
      if (playable && codecs.includes(playable)) input.value = playable;
    } else if (input.tagName === "SELECT") {
      if ([...input.options].some((o) => o.value === input.dataset.suggested)) input.value = input.dataset.suggested;
    } else {
      input.value = input.dataset.suggested;
    }
  }
}

function showModelNote(info) {
  $("model-note").hidden = !info || !(info.description || info.vocabulary_hint || info.example_prompt);
  $("model-description").textContent = info?.description ?? "";
  $("model-vocabulary").textContent = info?.vocabulary_hint ? `Understands: ${info.vocabulary_hint}` : "";
  $("model-vocabulary").hidden = !info?.vocabulary_hint;
  $("model-example").hidden = !info?.example_prompt;
  $("model-example-text").textContent = info?.example_prompt ?? "";
  control("prompt").placeholder = info?.example_prompt || "a lighthouse on a cliff at dawn";
}

function fillAdapters(info) {
  const fits = (a) => (info ? a.models?.includes(info.name) : false);
  const loras = (caps.adapters ?? []).filter((a) => a.kind === "lora" && fits(a));
  const embeddings = (caps.adapters ?? []).filter((a) => a.kind === "embedding" && fits(a));
  const previous = readAdapters();
  const rows = [
    ...loras.map((a) => {
      const weight = previous.loras.find((l) => l.name === a.name)?.weight ?? 1;
      return el("div", { class: "adapter" },
        el("label", { class: "check" },
          el("input", { type: "checkbox", name: "lora", value: a.name, checked: previous.loras.some((l) => l.name === a.name) }),
          ` LoRA ${a.name}`),
        el("label", { class: "weight" }, "weight ",
          el("input", { type: "number", name: `lora-weight-${a.name}`, min: -4, max: 4, step: 0.05, value: weight, "aria-label": `${a.name} weight` })));
    }),
    ...embeddings.map((a) => el("div", { class: "adapter" },
      el("label", { class: "check" },
        el("input", { type: "checkbox", name: "embedding", value: a.name, checked: previous.embeddings.includes(a.name) }),
        ` embedding ${a.name}`),
      el("span", { class: "hint", text: ` write “${a.token ?? a.name}” in the prompt` }))),
  ];
  $("lora-list").replaceChildren(...rows);
  $("adapters").hidden = rows.length === 0;
}

function readAdapters() {
  const checked = (name) => [...form().querySelectorAll(`input[name=${name}]:checked`)].map((i) => i.value);
  return {
    loras: checked("lora").map((name) => ({ name, weight: Number(control(`lora-weight-${name}`)?.value ?? 1) })),
    embeddings: checked("embedding"),
  };
}

// The chosen model's choices, bounds and suggestions (fields the user set keep their values).
function applyModel() {
  const select = control("model");
  control("model_id").hidden = select.value !== OTHER_MODEL;
  const info = modelInfo(chosenModel());
  showModelNote(info);
  const negative = control("negative_prompt");
  negative.disabled = Boolean(info) && !info.negative_prompt;
  $("negative-note").hidden = !negative.disabled;
  const noImage = Boolean(info) && !info.img2img;
  $("init").disabled = noImage;
  $("init-note").hidden = !noImage;
  fillSamplers(info);
  fillAdapters(info);
  applyBounds(info);
  suggest(info);
  checkPixels();
}

export function applyCapabilities() {
  const f = form();
  const codecs = caps.codecs.map((c) => [c, browserPlays(c) ? c : `${c} (this browser cannot play it)`]);
  fillSelect(f.elements.codec, codecs);
  fillSelect(f.elements.interpolation, caps.interpolations.map((i) => [i, i]), "none");
  fillModels();
  applyModel();
}

// width x height within the server's max_pixels: a bound no attribute can say.
function checkPixels() {
  const max = caps.limits?.max_pixels;
  const width = Number(control("width").value);
  const height = Number(control("height").value);
  const over = max && width && height && width * height > max;
  control("height").setCustomValidity(over ? `${width}x${height} is more than this server's ${max} pixels` : "");
}

// ---- what to send -------------------------------------------------------------------------

function isSent(input) {
  if (input.disabled || input.value === "") return false;
  return Boolean(input.dataset.set) || input.value !== (input.dataset.suggested ?? "");
}

export function readForm() {
  const f = form().elements;
  const body = { prompt: f.prompt.value };
  const model = chosenModel();
  if (model && (f.model.dataset.set || model !== f.model.dataset.suggested)) body.model = model;
  for (const [name, path] of Object.entries(FIELDS)) {
    const input = f[name];
    if (!isSent(input)) continue;
    setPath(body, path, TEXT.has(name) ? input.value : Number(input.value));
  }
  for (const [path, value] of Object.entries(carried)) setPath(body, path, value);
  if (!f.init_image.files.length && !body.init_image) delete body.strength; // img2img only
  const adapters = readAdapters();
  if (adapters.loras.length) body.loras = adapters.loras;
  if (adapters.embeddings.length) body.embeddings = adapters.embeddings;
  return body;
}

// ---- errors next to their fields -------------------------------------------------------------

// The controls a cause names ("width x height", "animation.duration", "loras.0.name", ...).
function controlsFor(field) {
  const path = String(field ?? "").replace(/^body\./, "");
  if (path === "width x height") return ["width", "height"];
  if (path === "grid-x" || path === "grid-y") return [path]; // the grid's axes (gridform.js)
  const name = Object.keys(FIELDS).find((n) => FIELDS[n] === path);
  if (name) return [name];
  for (const prefix of ["loras", "embeddings", "init_image", "prompt", "model"]) {
    if (path === prefix || path.startsWith(`${prefix}.`)) return [prefix === "embeddings" ? "loras" : prefix];
  }
  return [];
}

function fieldBox(name) {
  return form().querySelector(`[data-field="${name}"]`);
}

export function clearFieldErrors() {
  for (const box of form().querySelectorAll("[data-field]")) setFieldError(box, "");
}

function setFieldError(box, message) {
  const out = box.querySelector(".field-error");
  out.textContent = message;
  out.hidden = !message;
  box.classList.toggle("invalid", Boolean(message));
  for (const input of box.querySelectorAll("input, select, textarea")) {
    if (message) {
      out.id ||= `${box.dataset.field}-error`;
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", out.id);
    } else {
      input.removeAttribute("aria-invalid");
      input.removeAttribute("aria-describedby");
    }
  }
}

// Each cause next to its field (several causes of one field joined); the first such field focused.
export function showFieldErrors(details) {
  const byField = new Map();
  for (const detail of details) {
    for (const name of controlsFor(detail.field)) {
      const box = fieldBox(name);
      if (!box) continue;
      const message = detail.field === "width x height" ? `width x height: ${detail.message}` : detail.message;
      byField.set(box, [...(byField.get(box) ?? []), message]);
    }
  }
  for (const [box, messages] of byField) setFieldError(box, messages.join("; "));
  const first = form().querySelector("[aria-invalid=true]");
  first?.focus({ preventScroll: false });
  return byField.size;
}

// The browser's own checks (bounds from the server), shown the same way as the server's.
function checkLocally() {
  checkPixels();
  const details = [];
  for (const input of form().querySelectorAll("input, select, textarea")) {
    if (!input.willValidate || input.validity.valid) continue;
    const box = input.closest("[data-field]");
    const field = box?.dataset.field === "height" && input.validity.customError ? "width x height" : box?.dataset.field;
    if (field) details.push({ field, message: input.validationMessage });
  }
  const loras = readAdapters().loras.length;
  const most = caps.limits?.max_loras;
  if (most !== undefined && loras > most) details.push({ field: "loras", message: `at most ${most} LoRAs (${loras} chosen)` });
  return details;
}

// ---- reuse a job's settings ---------------------------------------------------------------------

function describeCarried() {
  const names = Object.keys(carried).map((path) => path.replace(/^animation\./, ""));
  $("carried").hidden = names.length === 0;
  $("carried-text").textContent = names.length ? `Also reused from the job: ${names.join(", ")}.` : "";
}

// The form filled in with a job's request as the server applied it (its seed, or a new one):
// every field is then sent as it is, so that the job is made again whatever the defaults become.
export function fillFromJob(job, { newSeed = false } = {}) {
  const request = job.request;
  const f = form().elements;
  clearFieldErrors();
  const names = [...f.model.options].map((o) => o.value);
  if (names.includes(job.model)) {
    f.model.value = job.model;
  } else {
    f.model.value = OTHER_MODEL;
    f.model_id.value = job.model;
  }
  f.model.dataset.set = "1";
  for (const input of Object.keys(FIELDS).map(control)) delete input.dataset.set;
  carried = {};
  const info = modelInfo(job.model);
  for (const path of CARRIED) {
    const value = getPath(request, path);
    if (value === undefined || value === null || (Array.isArray(value) && value.length === 0)) continue;
    const applied = getPath(info?.defaults, path) ?? schema[path]?.default;
    if (path === "capture" && JSON.stringify(value) === JSON.stringify(mergeCapture(info))) continue;
    if (JSON.stringify(value) !== JSON.stringify(applied)) carried[path] = value;
  }
  f.prompt.value = request.prompt;
  f.init_image.value = ""; // the job's own init image (if any) is reused by its upload id
  applyModel(); // the model's samplers, bounds and adapters first
  for (const checkbox of form().querySelectorAll("input[name=lora], input[name=embedding]")) {
    const lora = request.loras?.find((l) => l.name === checkbox.value);
    checkbox.checked = checkbox.name === "lora" ? Boolean(lora) : Boolean(request.embeddings?.includes(checkbox.value));
    if (lora) control(`lora-weight-${lora.name}`).value = String(lora.weight);
  }
  const values = Object.fromEntries(Object.entries(FIELDS).map(([name, path]) => [name, getPath(request, path)]));
  values.seed = newSeed ? randomSeed() : job.seed;
  for (const [name, value] of Object.entries(values)) {
    if (value === undefined || value === null) continue;
    const input = control(name);
    if (name === "scheduler") {
      input.value = value;
      fillSchedules(info);
    } else {
      input.value = String(value);
    }
    input.dataset.set = "1";
  }
  applyBounds(info);
  checkPixels();
  describeCarried();
  form().scrollIntoView({ block: "start", behavior: "instant" });
  f.prompt.focus({ preventScroll: true });
}

// What the server applies to capture when the request names none: the schema's, then the model's.
function mergeCapture(info) {
  const fromSchema = Object.fromEntries(
    Object.entries(schema).filter(([path]) => path.startsWith("capture.")).map(([path, v]) => [path.slice(8), v.default]),
  );
  return { ...fromSchema, ...(info?.defaults?.capture ?? {}) };
}

function resetToModel() {
  for (const input of form().querySelectorAll("input, select, textarea")) delete input.dataset.set;
  carried = {};
  describeCarried();
  clearFieldErrors();
  control("seed").value = "";
  applyModel();
}

// ---- submit -----------------------------------------------------------------------------------

async function submit(event) {
  event.preventDefault();
  const button = $("submit");
  clearFieldErrors();
  notify("");
  const local = [...checkLocally(), ...(gridActive() ? checkAxes() : [])];
  if (local.length) {
    showFieldErrors(local);
    notify(local.length > 1 ? "Some fields are out of bounds:" : `${local[0].field}: ${local[0].message}`, {
      causes: local.map((d) => `${d.field}: ${d.message}`),
    });
    return;
  }
  button.disabled = true;
  let grid = null; // the body of POST /grids, when the form makes a grid
  try {
    const body = readForm();
    const file = control("init_image").files[0];
    if (file && !$("init").disabled) {
      button.textContent = "Uploading…";
      const upload = await api.upload(file);
      body.init_image = { upload_id: upload.id };
      if (body.strength === undefined && control("strength").value) body.strength = Number(control("strength").value);
    }
    button.textContent = "Submitting…";
    if (gridActive()) {
      grid = gridBody(body);
      onGridCreated(await api.post("/grids", grid));
    } else {
      onCreated(await api.post("/animations", body));
    }
  } catch (error) {
    if (error instanceof ApiError && error.details.length) {
      showFieldErrors(grid ? placeErrors(error.details, grid) : error.details);
    }
    notifyError(error);
  } finally {
    button.disabled = false;
    button.textContent = gridActive() ? "Render grid" : "Render";
  }
}

export function setupForm(options) {
  api = options.api;
  onCreated = options.onCreated;
  onGridCreated = options.onGridCreated;
  const f = form();
  f.addEventListener("input", (event) => {
    const target = event.target;
    if (target.name && target.name !== "model") target.dataset.set = "1";
    const box = target.closest("[data-field]");
    if (box?.classList.contains("invalid")) setFieldError(box, "");
    if (target.name === "width" || target.name === "height") checkPixels();
  });
  f.elements.model.addEventListener("change", () => {
    f.elements.model.dataset.set = "1";
    applyModel();
  });
  f.elements.model_id.addEventListener("change", applyModel);
  f.elements.scheduler.addEventListener("change", () => {
    const info = modelInfo(chosenModel());
    fillSchedules(info);
    applyBounds(info);
  });
  f.elements.init_image.addEventListener("change", () => fillSamplers(modelInfo(chosenModel())));
  $("use-example").addEventListener("click", () => {
    control("prompt").value = $("model-example-text").textContent;
    control("prompt").focus();
  });
  $("carried-clear").addEventListener("click", () => {
    carried = {};
    describeCarried();
    applyBounds(modelInfo(chosenModel()));
  });
  $("form-reset").addEventListener("click", resetToModel);
  f.addEventListener("submit", submit);
}
