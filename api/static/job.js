// One job on show: its status and stage as they happen (queued, loading the model, sampling with
// the newest frame of every image, encoding), an ETA only when the server has one, its warnings,
// then its videos (every image of a batch side by side; a rendition made here replaces them once
// it is ready), the step explorer and its parameters with "reuse settings" and "new seed".
import { TERMINAL } from "./api.js";
import { caps, samplerLabel, scheduleLabel } from "./capabilities.js";
import { Explorer } from "./explorer.js";
import { notify, notifyError } from "./notice.js";
import { $, browserPlays, el, formatBytes, formatSeconds } from "./util.js";

let api = null;
let explorer = null;
let onReuse = () => {};
let onChange = () => {};

// The job on show: its id, the stream's AbortController, what the page knows between snapshots.
let view = null;

export const currentJobId = () => view?.id ?? null;

// ---- status, stage, progress -----------------------------------------------------------------

function stageText(current) {
  const { status, stage, step, total } = current;
  if (status === "queued") return "waiting in the queue…";
  if (status === "rendering") {
    if (!stage || stage === "loading_model") return "loading model…";
    return step > 0 ? `step ${step} of ${total}` : "sampling…";
  }
  if (status === "encoding") return "encoding the video…";
  if (status === "succeeded") return total ? `${total} steps` : "";
  return "";
}

function showState() {
  const current = view;
  const badge = $("job-status");
  badge.textContent = current.status;
  badge.dataset.status = current.status;
  $("job-stage").textContent = stageText(current);
  $("cancel").hidden = TERMINAL.has(current.status);
  const bar = $("job-progress");
  bar.max = Math.max(current.total, 1);
  bar.value = current.status === "succeeded" ? bar.max : Math.min(current.step, current.total);
  const eta = current.status === "rendering" && current.step < current.total ? etaNow(current) : null;
  let text = "";
  if (eta !== null && eta < 1) text = "almost done";
  else if (eta !== null) text = `about ${formatSeconds(eta)} left`;
  $("job-eta").textContent = text;
}

function etaNow(current) {
  return current.eta == null ? null : current.eta - (Date.now() - current.etaAt) / 1000;
}

// The ETA comes from the job itself (the render worker measures it, null until the pace is
// known): read at most every second while it renders.
async function refreshEta(current) {
  const now = Date.now();
  if (current.etaBusy || now - current.etaAskedAt < 1000) return;
  current.etaBusy = true;
  current.etaAskedAt = now;
  try {
    const job = await api.get(`/animations/${current.id}`, { signal: current.controller.signal });
    if (view === current && job.status === "rendering") {
      current.eta = job.progress.eta_seconds;
      current.etaAt = Date.now();
      showState();
    }
  } catch {
    // the next progress event tries again
  } finally {
    current.etaBusy = false;
  }
}

// ---- the preview: the newest frame of each image, then its video -----------------------------

function buildPreview(job) {
  const count = job.request.batch_size ?? 1;
  const preview = $("preview");
  preview.classList.toggle("batch", count > 1);
  preview.dataset.count = String(count);
  const figures = Array.from({ length: count }, (_, i) => {
    const first = i === 0;
    const label = count > 1 ? `image ${i + 1}` : "the animation";
    return el("figure", { class: "shot", dataset: { index: i } },
      el("img", { class: "frame", id: first ? "frame" : null, alt: `the newest frame of ${label}`, hidden: true }),
      el("video", { class: "video", id: first ? "video" : null, controls: true, muted: true, loop: true, playsInline: true, autoplay: true, hidden: true, "aria-label": `video of ${label}` }),
      el("img", { class: "gif", id: first ? "gif" : null, alt: `${label} (GIF)`, hidden: true }),
      el("figcaption", { class: "hint" }));
  });
  preview.replaceChildren(...figures);
  // Keep the space of the picture before it arrives: the page does not jump when it does.
  const { width, height } = job.request;
  if (width && height) $("job").style.setProperty("--aspect", `${width} / ${height}`);
  view.frameSteps = figures.map(() => 0);
}

function showFrames(urls, step) {
  const figures = $("preview").children;
  urls.forEach((url, i) => {
    const figure = figures[i];
    if (!figure || !url || step <= view.frameSteps[i] || figure.dataset.playing) return;
    view.frameSteps[i] = step;
    const frame = figure.querySelector(".frame");
    frame.dataset.step = String(step);
    frame.src = url;
    frame.hidden = false;
    figure.querySelector("figcaption").textContent = captionOf(i, `step ${step}`);
  });
}

function captionOf(i, text) {
  const count = view.job?.request.batch_size ?? 1;
  if (count < 2) return text;
  const seed = view.job.images?.[i]?.seed ?? view.job.seed + i;
  return `image ${i + 1} · seed ${seed}${text ? ` · ${text}` : ""}`;
}

// The videos of a source ("original" or a rendition id), one per image, or null when not ready.
function videosOf(job, source) {
  if (source === "original") {
    if (!job.video) return null;
    return job.images?.length ? job.images.map((image) => image.video) : [job.video];
  }
  const rendition = job.renditions?.find((r) => r.id === source);
  if (!rendition?.video) return null;
  return rendition.videos?.length ? rendition.videos : [rendition.video];
}

function showVideos(job) {
  const source = videosOf(job, view.source) ? view.source : "original";
  const videos = videosOf(job, source);
  if (!videos) return;
  [...$("preview").children].forEach((figure, i) => {
    const video = videos[i];
    if (!video) return;
    const player = figure.querySelector(".video");
    const gif = figure.querySelector(".gif");
    const isGif = video.content_type === "image/gif";
    // Signed URLs change at every read: a video is known by its file, so that a later read of
    // the job does not restart it.
    const identity = `${job.id}/${source}/${video.filename}`;
    if (isGif && gif.dataset.src !== identity) {
      gif.dataset.src = identity;
      gif.src = video.url;
    } else if (!isGif && player.dataset.src !== identity) {
      player.dataset.src = identity;
      player.src = video.url;
      player.muted = true;
      player.play().catch(() => {}); // autoplay of a muted video is allowed; controls remain
    }
    gif.hidden = !isGif;
    player.hidden = isGif;
    figure.dataset.playing = "1";
    figure.querySelector(".frame").hidden = true;
    const playable = browserPlays(video.codec);
    figure.querySelector("figcaption").textContent = captionOf(
      i,
      playable ? "" : `this browser cannot play ${video.codec}: download it below`,
    );
  });
}

// ---- videos and downloads ---------------------------------------------------------------------

function describe(video) {
  return `${video.codec} · ${video.duration.toFixed(1)} s · ${video.frames} frames · ${formatBytes(video.size_bytes)}`;
}

function videoLinks(videos) {
  return videos.map((video, i) =>
    el("a", { href: video.url, download: video.filename, text: videos.length > 1 ? `image ${i + 1}` : video.filename,
      title: video.filename }));
}

function sourceItem(job, source, title, videos) {
  const shown = view.source === source || (source === "original" && !videosOf(job, view.source));
  const show = el("button", { type: "button", class: "secondary small", dataset: { source }, "aria-pressed": String(shown),
    text: shown ? "Showing" : "Show" });
  show.disabled = !browserPlays(videos[0].codec);
  show.addEventListener("click", () => {
    view.source = source;
    showJob(view.job);
  });
  const links = el("span", { class: "links" }, ...videoLinks(videos).flatMap((a, i) => (i ? [" · ", a] : [a])));
  return el("li", {}, el("span", { class: "source-title", text: `${title}: ` }), links,
    el("span", { class: "hint", text: ` ${describe(videos[0])} ` }), show);
}

function showDownloads(job) {
  const items = [];
  const original = videosOf(job, "original");
  if (original) items.push(sourceItem(job, "original", "Original", original));
  for (const rendition of job.renditions ?? []) {
    const o = rendition.options;
    const what = `${o.codec}, ${o.duration} s, ${o.fps} fps, ${o.interpolation}`;
    const videos = videosOf(job, rendition.id);
    if (videos) {
      items.push(sourceItem(job, rendition.id, `Re-encode ${what}`, videos));
    } else {
      items.push(el("li", {
        class: rendition.error ? "error" : "hint",
        text: rendition.error ? `Re-encode ${what} failed: ${rendition.error.message}` : `Re-encode ${what}: ${rendition.status}…`,
      }));
    }
  }
  if (job.frames_zip) {
    items.push(el("li", {}, el("a", { href: job.frames_zip.url, text: `${job.frames_zip.filename} (${job.frames_zip.frames} frames)` })));
  }
  $("downloads").replaceChildren(...items);
  const form = $("rendition-form");
  const canReencode = job.status === "succeeded" && job.request.animation.keep_frames && !job.request.animation.frames_only;
  const room = (job.renditions?.length ?? 0) < (caps.limits?.max_renditions ?? Infinity);
  form.hidden = !(canReencode && room);
  $("reencode").hidden = form.hidden;
  if (canReencode && form.dataset.job !== job.id) {
    form.dataset.job = job.id;
    form.elements.duration.value = job.request.animation.duration;
    form.elements.fps.value = job.request.animation.fps;
  }
  $("result").hidden = items.length === 0 && form.hidden;
}

// ---- parameters -------------------------------------------------------------------------------

function showParams(job) {
  const r = job.request;
  const count = r.batch_size ?? 1;
  const rows = [
    ["Model", job.model],
    ["Prompt", r.prompt],
    ["Negative prompt", r.negative_prompt || null],
    ["Seed", count > 1 ? `${job.seed} … ${job.seed + count - 1} (one per image)` : String(job.seed)],
    ["Sampler", `${samplerLabel(r.scheduler)} · ${scheduleLabel(r.schedule)} schedule`],
    ["Steps", String(r.steps)],
    ["Guidance", String(r.guidance_scale)],
    ["Size", `${r.width} × ${r.height}${r.capture?.upscale > 1 ? ` (frames ×${r.capture.upscale})` : ""}`],
    ["Images", count > 1 ? String(count) : null],
    ["LoRAs", r.loras?.length ? r.loras.map((l) => `${l.name} (${l.weight})`).join(", ") : null],
    ["Embeddings", r.embeddings?.length ? r.embeddings.join(", ") : null],
    ["Init image", r.init_image ? `upload ${r.init_image.upload_id ?? ""} · strength ${r.strength ?? 0.75}` : null],
    ["Video", `${r.animation.duration} s · ${r.animation.fps} fps · ${r.animation.codec} · ${r.animation.interpolation}`],
    ["Frames", `${r.capture?.source ?? "denoised"}, ${r.capture?.decoder ?? "full"} decoder`],
  ];
  $("params-list").replaceChildren(
    ...rows.filter(([, value]) => value !== null).flatMap(([name, value]) => [
      el("dt", { text: name }),
      el("dd", { text: value, dataset: { param: name.toLowerCase().replace(/ /g, "_") } }),
    ]),
  );
  $("params").hidden = false;
}

function showWarnings(job) {
  const warnings = job.warnings ?? [];
  const box = $("job-warnings");
  box.replaceChildren(...warnings.map((text) => el("p", { class: "warning" }, el("strong", { text: "Warning: " }), text)));
  box.hidden = warnings.length === 0;
}

// ---- the whole job ----------------------------------------------------------------------------

export function showJob(job) {
  if (!view || view.id !== job.id) return;
  const first = !view.job;
  view.job = job;
  if (first) buildPreview(job);
  $("job-id").textContent = job.id;
  $("job-prompt").textContent = job.request.prompt;
  view.status = job.status;
  view.stage = job.progress.stage ?? (job.status === "rendering" ? view.stage : null);
  view.total = job.progress.total;
  view.step = Math.max(view.step, job.progress.step);
  if (job.status === "rendering" && job.progress.eta_seconds != null) {
    view.eta = job.progress.eta_seconds;
    view.etaAt = Date.now();
  }
  showState();
  showWarnings(job);
  const urls = job.progress.latest_frame_urls?.length ? job.progress.latest_frame_urls : [job.progress.latest_frame_url];
  if (job.progress.step) showFrames(urls, job.progress.step);
  // A rendition asked for here becomes the preview once it is ready.
  for (const rendition of job.renditions ?? []) {
    if (view.awaited.has(rendition.id) && TERMINAL.has(rendition.status)) {
      view.awaited.delete(rendition.id);
      if (rendition.status === "succeeded" && browserPlays(rendition.options.codec)) view.source = rendition.id;
    }
  }
  showVideos(job);
  showDownloads(job);
  const error = $("job-error");
  error.hidden = !job.error;
  error.textContent = job.error ? `${job.error.code}: ${job.error.message}` : "";
  showParams(job);
  explorer.update(job);
}

async function follow(current) {
  const signal = current.controller.signal;
  try {
    for await (const { event, data } of api.follow(current.id, { signal })) {
      if (view !== current) return;
      if (event === "progress") {
        current.step = Math.max(current.step, data.step);
        current.total = data.total;
        current.stage = "sampling";
        showState();
        showFrames(data.latest_frame_urls?.length ? data.latest_frame_urls : [data.latest_frame_url], data.step);
        explorer.update(current.job, { step: data.step });
        refreshEta(current);
      } else if (event === "stage") {
        current.stage = data.stage;
        showState();
      } else if (event === "status") {
        if (data.animation) showJob({ ...data.animation, status: data.status });
        else {
          current.status = data.status;
          showState();
        }
        onChange();
      } else {
        // a rendition's status: read the job again
        showJob(await api.get(`/animations/${current.id}`, { signal }));
      }
    }
    // the stream is over: the job as it ended (renditions included)
    if (view === current) showJob(await api.get(`/animations/${current.id}`, { signal }));
  } catch (error) {
    if (!signal.aborted) notifyError(error);
  }
}

export async function openJob(id, { known = null, scroll = true } = {}) {
  if (view) view.controller.abort();
  const current = {
    id,
    controller: new AbortController(),
    job: null,
    status: known?.status ?? "queued",
    stage: null,
    step: 0,
    total: 0,
    frameSteps: [],
    source: "original", // the videos on show: the original ones or a rendition's
    awaited: new Set(), // renditions asked for here, shown once ready
    eta: null, // the job's eta_seconds when last read, at etaAt (ms)
    etaAt: 0,
    etaAskedAt: 0,
    etaBusy: false,
  };
  view = current;
  if (location.hash !== `#/animations/${id}`) history.pushState(null, "", `#/animations/${id}`);
  $("job").hidden = false;
  $("preview").replaceChildren();
  $("result").hidden = true;
  $("params").hidden = true;
  $("job-warnings").hidden = true;
  $("job-error").hidden = true;
  $("job-stage").textContent = "";
  $("job-eta").textContent = "";
  if (scroll) $("job").scrollIntoView({ block: "start" });
  try {
    const job = known ?? (await api.get(`/animations/${id}`, { signal: current.controller.signal }));
    if (view !== current) return;
    explorer.open(job);
    showJob(job);
    if (!TERMINAL.has(job.status) || job.renditions?.some((r) => !TERMINAL.has(r.status))) await follow(current);
  } catch (error) {
    if (!current.controller.signal.aborted) notifyError(error);
  }
}

export function closeJob() {
  if (!view) return;
  view.controller.abort();
  view = null;
  explorer.close();
  $("job").hidden = true;
}

// ---- re-encode --------------------------------------------------------------------------------

async function reencode(event) {
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
    current.awaited.add(rendition.id);
    showJob(await api.get(`/animations/${current.id}`));
    // Poll the rendition (the job's event stream may have ended) until it is done.
    let state = rendition;
    while (view === current && !TERMINAL.has(state.status)) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      state = await api.get(`/animations/${current.id}/renditions/${rendition.id}`);
    }
    if (view === current) showJob(await api.get(`/animations/${current.id}`));
  } catch (error) {
    notifyError(error);
  }
}

export function applyCapabilities() {
  if (view?.job) showParams(view.job); // the samplers' and schedules' names
  const form = $("rendition-form");
  const fill = (select, values, preferred) => {
    const previous = select.value;
    select.replaceChildren(...values.map((v) => new Option(v, v)));
    select.value = values.includes(previous) ? previous : values.includes(preferred) ? preferred : values[0] ?? "";
  };
  fill(form.elements.codec, caps.codecs, caps.codecs.find(browserPlays));
  fill(form.elements.interpolation, caps.interpolations, "none");
  if (caps.limits) {
    form.elements.duration.max = String(caps.limits.max_duration_seconds);
    form.elements.fps.max = String(caps.limits.max_fps);
  }
}

export function setupJobView(options) {
  api = options.api;
  onReuse = options.onReuse;
  onChange = options.onChange;
  explorer = new Explorer(api);
  $("cancel").addEventListener("click", async () => {
    if (!view) return;
    try {
      showJob(await api.post(`/animations/${view.id}/cancel`));
    } catch (error) {
      notifyError(error);
    }
  });
  $("rendition-form").addEventListener("submit", reencode);
  $("reuse").addEventListener("click", () => view?.job && onReuse(view.job, { newSeed: false }));
  $("new-seed").addEventListener("click", () => view?.job && onReuse(view.job, { newSeed: true }));
  // The ETA counts down between reads.
  setInterval(() => {
    if (view?.status === "rendering" && view.eta != null) showState();
  }, 1000);
}
