// The step explorer: every frame of one image of a job (GET /animations/{id}/frames), while it
// renders and after, as a slider and a strip; two steps side by side; one frame or all of them
// (GET /animations/{id}/frames.zip, fetched with the key) to download.
import { ApiError } from "./api.js";
import { explain } from "./notice.js";
import { $, el, saveBlob } from "./util.js";

const REFRESH_MS = 1000; // while it renders, the frames are read again at most this often

export class Explorer {
  constructor(api) {
    this.api = api;
    this.job = null;
    $("step-slider").addEventListener("input", () => this.select("a", Number($("step-slider").value), true));
    $("step-slider-b").addEventListener("input", () => this.select("b", Number($("step-slider-b").value), true));
    $("compare-toggle").addEventListener("change", () => this.toggleCompare());
    $("explorer-image").addEventListener("change", () => this.pickImage(Number($("explorer-image").value)));
    $("zip-download").addEventListener("click", () => this.downloadZip());
    $("strip").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-step]");
      if (button) this.select(this.compareOn() && event.altKey ? "b" : "a", Number(button.dataset.step), true);
    });
  }

  // A new job on show: nothing of the last one stays.
  open(job) {
    this.controller?.abort();
    this.controller = new AbortController();
    this.jobId = job.id;
    this.job = job;
    this.image = 0;
    this.frames = []; // {step, url, filename}: the first URL seen of each step is kept (no reload)
    this.total = 0;
    this.complete = false;
    this.gone = false;
    this.steps = { a: 0, b: 0 };
    this.follow = true; // step a follows the newest frame until the user picks one
    this.fetchedAt = 0;
    this.pending = null;
    $("explorer").hidden = true;
    $("explorer-state").hidden = true;
    $("compare-toggle").checked = false;
    $("step-b-view").hidden = true;
    $("strip").replaceChildren();
    $("zip-state").textContent = "";
    for (const id of ["step-a", "step-b"]) {
      $(id).removeAttribute("src");
      delete $(id).dataset.step;
    }
    this.fillImages(job);
    this.update(job);
  }

  close() {
    this.controller?.abort();
    clearTimeout(this.pending);
    this.job = null;
  }

  compareOn() {
    return $("compare-toggle").checked;
  }

  fillImages(job) {
    const count = job.request.batch_size ?? 1;
    const seedOf = (i) => job.images?.[i]?.seed ?? job.seed + i;
    const select = $("explorer-image");
    if (select.options.length !== count) {
      select.replaceChildren(...Array.from({ length: count }, (_, i) => new Option(`Image ${i + 1} (seed ${seedOf(i)})`, String(i))));
    }
    select.value = String(this.image);
    $("explorer-image-field").hidden = count < 2;
  }

  // The job changed (a snapshot or a progress event): read its frames again, at most every REFRESH_MS;
  // at once when the render is over, so that the last frames are there.
  update(job, { step } = {}) {
    if (!this.job || job.id !== this.jobId) return;
    this.job = job;
    const done = job.images?.length > 0 || ["succeeded", "failed", "canceled"].includes(job.status);
    const known = step ?? job.progress?.step ?? 0;
    if (this.gone || (this.complete && this.frames.length > 0)) return;
    if (known === 0 && !done) return; // nothing to show yet
    clearTimeout(this.pending);
    const wait = done ? 0 : Math.max(0, REFRESH_MS - (Date.now() - this.fetchedAt));
    this.pending = setTimeout(() => this.fetchFrames(), wait);
  }

  async fetchFrames() {
    if (this.busy) {
      this.again = true;
      return;
    }
    this.busy = true;
    this.fetchedAt = Date.now();
    const jobId = this.jobId;
    const image = this.image;
    try {
      const page = await this.api.get(`/animations/${jobId}/frames?image=${image}`, { signal: this.controller.signal });
      if (jobId !== this.jobId || image !== this.image) return;
      for (const frame of page.frames.slice(this.frames.length)) this.frames.push(frame);
      this.total = page.total;
      this.complete = page.complete;
      this.render();
    } catch (error) {
      if (this.controller.signal.aborted) return;
      if (error instanceof ApiError && error.status === 410) {
        this.gone = true;
        $("explorer").hidden = false;
        $("compare").hidden = true;
        $("explorer-state").hidden = false;
        $("explorer-state").textContent = "The frames of this animation were deleted once its videos were made (keep_frames was off).";
      } else if (!(error instanceof ApiError && error.status === 404)) {
        $("explorer-state").hidden = false;
        $("explorer-state").textContent = `Frames unavailable: ${explain(error)}`;
      }
    } finally {
      this.busy = false;
      if (this.again) {
        this.again = false;
        this.update(this.job);
      }
    }
  }

  // Another image of the batch, at the same steps (to compare images at one step).
  pickImage(index) {
    this.image = index;
    this.frames = [];
    this.complete = false;
    $("strip").replaceChildren();
    this.fetchedAt = 0;
    this.fetchFrames();
  }

  render() {
    const count = this.frames.length;
    $("explorer").hidden = count === 0;
    $("compare").hidden = false;
    if (count === 0) return;
    $("explorer-state").hidden = true;
    for (const id of ["step-slider", "step-slider-b"]) {
      $(id).max = String(count);
      $(id).disabled = count < 2;
    }
    this.renderStrip();
    const a = this.follow || !this.steps.a ? count : Math.min(this.steps.a, count);
    this.select("a", a, false);
    if (this.compareOn()) this.select("b", Math.min(this.steps.b || 1, count), false);
  }

  renderStrip() {
    const strip = $("strip");
    for (const frame of this.frames.slice(strip.children.length)) {
      strip.append(
        el("button", { type: "button", class: "thumb", dataset: { step: frame.step }, "aria-label": `step ${frame.step}` },
          el("img", { src: frame.url, alt: "", loading: "lazy", decoding: "async" })),
      );
    }
  }

  // Show step n on side a or b; `byUser`: the user chose it (step a stops following new frames).
  select(side, n, byUser) {
    const frame = this.frames[n - 1];
    if (!frame) return;
    if (byUser && side === "a") this.follow = n === this.frames.length && !this.complete;
    this.steps[side] = n;
    const image = $(side === "a" ? "step-a" : "step-b");
    if (image.dataset.step !== String(n) || image.dataset.image !== String(this.image)) {
      image.src = frame.url;
      image.dataset.step = String(n);
      image.dataset.image = String(this.image);
      image.alt = `step ${n}`;
    }
    const slider = $(side === "a" ? "step-slider" : "step-slider-b");
    slider.value = String(n);
    const of = this.total ? ` of ${this.total}` : "";
    $(side === "a" ? "step-a-caption" : "step-b-caption").textContent = `step ${n}${of}`;
    if (side === "a") {
      const link = $("frame-download");
      link.href = frame.url;
      link.download = frame.filename;
      link.setAttribute("aria-label", `Download step ${n} (${frame.filename})`);
    }
    for (const thumb of $("strip").children) {
      const step = Number(thumb.dataset.step);
      thumb.classList.toggle("current-b", this.compareOn() && step === this.steps.b);
      if (step === this.steps.a) thumb.setAttribute("aria-current", "step");
      else thumb.removeAttribute("aria-current");
    }
    if (byUser && side === "a") {
      $("strip").querySelector("[aria-current]")?.scrollIntoView({ block: "nearest", inline: "nearest" });
    }
  }

  toggleCompare() {
    const on = this.compareOn();
    $("step-b-view").hidden = !on;
    $("compare").classList.toggle("side-by-side", on);
    if (on && this.frames.length) {
      const b = this.steps.b || Math.max(1, Math.ceil(this.frames.length / 2));
      this.select("b", b, true);
    } else {
      this.select("a", this.steps.a, false);
    }
  }

  async downloadZip() {
    const button = $("zip-download");
    button.disabled = true;
    $("zip-state").textContent = "Preparing the zip…";
    try {
      const { blob, filename } = await this.api.download(`/animations/${this.jobId}/frames.zip`);
      saveBlob(blob, filename);
      $("zip-state").textContent = "";
    } catch (error) {
      $("zip-state").textContent = `No zip: ${explain(error)}`;
    } finally {
      button.disabled = false;
    }
  }
}
