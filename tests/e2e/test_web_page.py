"""The web page at / in a real browser (Debian's Chromium, headless, driven by Playwright)
against the whole service on real processes: submit a job through the form, watch the
frames arrive, play the video; API keys; an init image; phone width. A job of the committed
digits model in the step explorer (stages, ETA, warnings, every image of a batch, the
slider, two steps side by side, frame and zip downloads, a rendition, reuse settings, new
seed); the form's bounds and choices from GET /capabilities; a refusal with two causes; a grid
from the axis editor (its refusal at the axis, its cells, its video); the API docs offline.
Every request the page makes goes to the API's own origin.

Chromium must be installed (``make system-deps`` installs it; ``STEPANIM_CHROMIUM`` names
another binary); without it these tests fail unless ``STEPANIM_SKIP_BROWSER=1`` is set.
Playwright drives the system's browser: never run ``playwright install``. Screenshots go to ``artifacts/web/``
(``STEPANIM_ARTIFACTS_DIR`` overrides), which git ignores.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from digits.data import NAMES
from scripts.devstack import ROOT, Stack
from stepanim import auth
from tests.e2e.conftest import dev_settings

KEY = "sa_e2e_web_" + "w" * 32
JOB_TIMEOUT_MS = 180_000

# Every frame the page's <img id="frame"> finished loading, with the job's status shown then;
# every text the ETA showed; and, in order, every text the stage showed ("stage:..."), every
# newest frame loaded ("frame:<step>"), every step the explorer showed ("explorer:<step>:<status>")
# and every video that could play ("video").
RECORD_FRAMES = """
window.__frames = [];
window.__eta = [];
window.__timeline = [];
new MutationObserver((records) => {
  const text = document.getElementById("job-eta")?.textContent;
  if (text && window.__eta.at(-1) !== text) window.__eta.push(text);
  for (const record of records) {
    if (record.target.id !== "job-stage") continue;
    for (const node of record.addedNodes) window.__timeline.push("stage:" + node.textContent);
  }
}).observe(document, { subtree: true, childList: true, characterData: true });
document.addEventListener("load", (event) => {
  const target = event.target;
  if (target && target.id === "frame") {
    const status = document.getElementById("job-status").dataset.status;
    window.__frames.push({ src: target.currentSrc, step: target.dataset.step, status });
    window.__timeline.push("frame:" + target.dataset.step);
  }
}, true);
document.addEventListener("load", (event) => {
  if (event.target && event.target.id === "step-a") {
    const status = document.getElementById("job-status").dataset.status;
    window.__timeline.push("explorer:" + event.target.dataset.step + ":" + status);
  }
}, true);
document.addEventListener("loadeddata", (event) => {
  if (event.target && event.target.id === "video") window.__timeline.push("video");
}, true);
"""

# Every status the recent list showed for a job ({id: [statuses]}), as it changed.
RECORD_LIST = """
window.__listed = {};
new MutationObserver((records) => {
  for (const record of records) {
    const badge = record.target;
    if (!(badge instanceof Element) || !badge.matches("#job-list .badge")) continue;
    const id = badge.closest("li").dataset.id;
    const seen = (window.__listed[id] ??= []);
    if (badge.dataset.status && seen.at(-1) !== badge.dataset.status) seen.push(badge.dataset.status);
  }
}).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-status"] });
"""

VIDEO_PLAYS = """() => {
  const video = document.getElementById("video");  // made when the job's view is built
  return video !== null && !video.hidden && video.readyState >= 2 && (video.currentTime > 0 || !video.paused);
}"""


def chromium_path() -> str | None:
    configured = os.environ.get("STEPANIM_CHROMIUM")  # another browser binary, if wanted
    if configured:
        return configured if Path(configured).is_file() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("STEPANIM_ARTIFACTS_DIR", ROOT / "artifacts")) / "web"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if os.environ.get("STEPANIM_SKIP_BROWSER") == "1":
        pytest.skip("STEPANIM_SKIP_BROWSER=1: the browser test is skipped on purpose")
    executable = chromium_path()
    if executable is None:
        pytest.fail(
            "Chromium is not installed: run `make system-deps` (apt-get install chromium), "
            "or set STEPANIM_SKIP_BROWSER=1 to skip the browser test explicitly"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: `pip install -r requirements.lock` (never `playwright install`)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield browser
        finally:
            browser.close()


SMALL_MODEL = {
    "description": "The tiny model at 32 px, upscaled",
    "example_prompt": "a small thing",
    "defaults": {"width": 32, "height": 32, "steps": 3, "capture": {"upscale": 2}},
}

DIGITS = ROOT / "models" / "digits"
# The words the digits model was trained on (digits.data's templates), so that a prompt with
# others gets a warning; the committed stepanim.json (its defaults) otherwise as it is.
DIGITS_VOCABULARY = ["a", "digit", "draw", "handwritten", "number", "the", *map(str, range(10)), *NAMES]
DIGITS_HINT = "the digits 0-9, as 'a handwritten 7' or 'the number three'"


def linked_model(source: Path, target: Path, manifest: dict[str, Any]) -> None:
    """A model folder whose weights are ``source``'s (linked) and whose stepanim.json is ``manifest``."""
    target.mkdir(parents=True)
    for entry in source.iterdir():
        if entry.name != "stepanim.json":
            (target / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    (target / "stepanim.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def web(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Development mode (no key needed) with one API key of tenant ``acme`` as well."""
    from worker.tiny_model import build_tiny_lora

    assert (DIGITS / "model_index.json").is_file(), f"the committed model is missing: {DIGITS} (make model)"
    workdir = tmp_path_factory.mktemp("web")
    # tiny-sd, the same weights as "tiny-small" with request defaults (stepanim.json), and the
    # committed digits model with the words it knows; a LoRA that fits the tiny models.
    models = workdir / "models"
    models.mkdir()
    (models / "tiny-sd").symlink_to(models_dir / "tiny-sd", target_is_directory=True)
    linked_model(models_dir / "tiny-sd", models / "tiny-small", SMALL_MODEL)
    digits = json.loads((DIGITS / "stepanim.json").read_text())
    linked_model(DIGITS, models / "digits", {**digits, "vocabulary": DIGITS_VOCABULARY, "vocabulary_hint": DIGITS_HINT})
    adapters = workdir / "adapters"
    build_tiny_lora(adapters / "loras" / "style.safetensors", seed=1)
    settings = dev_settings(
        workdir,
        models,
        STEPANIM_ADAPTERS_DIR=str(adapters),
        STEPANIM_API_KEYS=json.dumps([{"id": "acme-1", "tenant": "acme", "sha256": auth.hash_key(KEY)}]),
    )
    stack = Stack(workdir=workdir, settings=settings)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


class PageWatch:
    """A page of its own browser context that records what must not happen: a script error, a
    console error (what the Content-Security-Policy blocked, among others) and a request to
    another origin than the API's (the page works offline)."""

    def __init__(self, browser: Any, web: Stack, **context: Any) -> None:
        self.context = browser.new_context(**{"viewport": {"width": 1100, "height": 900}, **context})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.elsewhere: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", self.on_console)
        origin = web.api_url
        self.page.on(
            "request",
            lambda request: (
                None if request.url.startswith((origin + "/", "data:", "blob:")) else self.elsewhere.append(request.url)
            ),
        )
        self.page.add_init_script(RECORD_FRAMES)
        self.page.add_init_script(RECORD_LIST)

    def on_console(self, message: Any) -> None:
        # Chromium also logs the answers the page expects and handles: 503 from GET /capabilities
        # until the encoder has reported, 401 for an unknown key, 422 for a refused job (shown).
        url = message.location.get("url", "")
        handled = (
            ("status of 503" in message.text and url.endswith("/capabilities"))
            or "status of 401" in message.text
            or ("status of 422" in message.text and url.endswith(("/animations", "/grids")))
        )
        if message.type == "error" and not handled:
            self.errors.append(f"{message.text} ({url})")

    def close(self) -> None:
        self.context.close()
        assert self.errors == [], f"the page logged errors: {self.errors}"
        assert self.elsewhere == [], f"the page asked another origin: {self.elsewhere}"


@pytest.fixture
def page(browser: Any, web: Stack) -> Iterator[Any]:
    watch = PageWatch(browser, web)
    try:
        yield watch.page
    finally:
        watch.close()


def screenshot(page: Any, name: str, capsys: pytest.CaptureFixture[str]) -> Path:
    path = artifacts_dir() / name
    page.screenshot(path=str(path), full_page=True)
    with capsys.disabled():
        print(f"\nscreenshot: {path}")
    return path


def wait_for_form(page: Any) -> None:
    """The form's options came from GET /capabilities (the encoder has reported)."""
    page.wait_for_function(
        "() => document.querySelector('select[name=codec]').options.length > 0"
        " && document.getElementById('caps-state').textContent === ''",
        timeout=60_000,
    )


def fill_small_job(page: Any, prompt: str, steps: int) -> None:
    page.fill("textarea[name=prompt]", prompt)
    page.fill("input[name=steps]", str(steps))
    page.fill("input[name=width]", "64")
    page.fill("input[name=height]", "64")
    page.fill("input[name=seed]", "7")
    page.fill("#f-duration", "1")


def wait_for_status(page: Any, status: str) -> None:
    page.wait_for_function(
        f"() => document.getElementById('job-status').dataset.status === {json.dumps(status)}"
        " || ['failed', 'canceled'].includes(document.getElementById('job-status').dataset.status)",
        timeout=JOB_TIMEOUT_MS,
    )
    shown = page.eval_on_selector("#job-status", "e => e.dataset.status")
    assert shown == status, page.text_content("#job-error")


ETA_TEXT = r"about \d+ (s|min \d+ s) left|almost done"


def test_a_job_submitted_in_the_page_shows_its_frames_live_then_plays(
    page: Any, web: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    page.goto(f"{web.api_url}/")
    wait_for_form(page)
    assert page.is_hidden("#notice"), page.text_content("#notice")  # no key needed in development mode
    fill_small_job(page, "a page test", steps=16)
    page.click("#submit")

    wait_for_status(page, "succeeded")
    frames = page.evaluate("window.__frames")
    live = {f["src"] for f in frames if f["status"] not in ("succeeded", "failed", "canceled")}
    assert len(live) >= 2, f"fewer than two different frames appeared before the end: {frames}"
    eta = page.evaluate("window.__eta")
    assert all(re.fullmatch(ETA_TEXT, text) for text in eta), eta  # an ETA only as the server gives one
    page.wait_for_function(VIDEO_PLAYS, timeout=30_000)
    job_id = page.text_content("#job-id")
    assert page.eval_on_selector("#job-progress", "e => e.value === e.max")
    links = page.eval_on_selector_all("#downloads a", "links => links.map(a => a.href)")
    assert len(links) == 1 and httpx.get(links[0], timeout=30).status_code == 200
    screenshot(page, "job-done.png", capsys)

    # The recent list has it; clicking it (on a fresh page) opens it and plays the video.
    page.goto(f"{web.api_url}/")
    item = page.locator(f"#job-list button[data-id='{job_id}']")
    item.wait_for(timeout=30_000)
    item.click()
    page.wait_for_function(VIDEO_PLAYS, timeout=30_000)
    assert page.url.endswith(f"#/animations/{job_id}")

    # Phone width: one column, nothing wider than the screen.
    page.set_viewport_size({"width": 375, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    screenshot(page, "job-phone.png", capsys)


def test_choosing_a_model_fills_in_its_defaults(page: Any, web: Stack) -> None:
    """GET /capabilities lists the render worker's models; choosing one shows its stepanim.json
    defaults, and the request carries only what the user set: the server applies the rest."""
    page.goto(f"{web.api_url}/")
    wait_for_form(page)
    page.wait_for_function("() => document.querySelectorAll('#f-model option').length >= 4", timeout=60_000)
    assert page.eval_on_selector("input[name=width]", "e => e.value") == "512"  # tiny-sd suggests nothing
    page.select_option("select[name=model]", "tiny-small")
    assert page.eval_on_selector("input[name=width]", "e => e.value") == "32"
    assert page.eval_on_selector("input[name=steps]", "e => e.value") == "3"
    assert page.text_content("#model-description") == SMALL_MODEL["description"]
    assert page.eval_on_selector("textarea[name=prompt]", "e => e.placeholder") == "a small thing"
    page.click("#use-example")
    assert page.eval_on_selector("textarea[name=prompt]", "e => e.value") == "a small thing"
    page.fill("#f-duration", "1")
    page.check("#adapters input[name=lora][value=style]")  # the LoRAs that fit the model
    page.fill("input[name=lora-weight-style]", "0.5")
    with page.expect_request(lambda r: r.url.endswith("/animations") and r.method == "POST") as sent:
        page.click("#submit")
    lora = {"name": "style", "weight": 0.5}
    expected = {"prompt": "a small thing", "model": "tiny-small", "animation": {"duration": 1}, "loras": [lora]}
    assert sent.value.post_data_json == expected
    wait_for_status(page, "succeeded")
    job = httpx.get(f"{web.api_url}/animations/{page.text_content('#job-id')}", timeout=30).json()
    request = job["request"]
    assert (job["model"], request["width"], request["capture"]["upscale"]) == ("tiny-small", 32, 2)
    assert request["loras"] == [lora] and page.text_content("dd[data-param=loras]") == "style (0.5)"


def test_api_key_from_the_page_and_an_init_image(
    page: Any, web: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page.goto(f"{web.api_url}/")
    wait_for_form(page)

    # An unknown key. In development mode the server takes it as no key at all (the development
    # tenant); a production server refuses it, as simulated here: the page shows the server's
    # message and opens the key form.
    def production_server(route: Any) -> None:
        if route.request.headers.get("authorization") == "Bearer sa_not_a_key":
            error = {"code": "unauthorized", "message": "unknown API key", "details": []}
            route.fulfill(status=401, json={"error": error}, headers={"WWW-Authenticate": 'Bearer realm="stepanim"'})
        else:
            route.fallback()

    page.route("**/animations?*", production_server)
    page.click("#key-panel summary")
    page.fill("#key-input", "sa_not_a_key")
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#notice:not([hidden])")
    assert "unknown API key" in page.text_content("#notice")
    assert page.eval_on_selector("#key-panel", "e => e.open")  # asks for a key

    # A real key: its tenant (acme) sees none of the development tenant's jobs.
    page.fill("#key-input", KEY)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#job-list-empty:not([hidden])")
    assert page.evaluate("localStorage.getItem('stepanim.apiKey')") == KEY

    # img2img through POST /uploads, with the key; events are read with the key too.
    picture = tmp_path / "init.png"
    buffer = io.BytesIO()
    Image.new("RGB", (80, 64), (200, 40, 40)).save(buffer, "PNG")
    picture.write_bytes(buffer.getvalue())
    fill_small_job(page, "from an image", steps=4)
    page.set_input_files("input[name=init_image]", str(picture))
    page.fill("input[name=strength]", "0.5")
    page.click("#submit")
    wait_for_status(page, "succeeded")
    job_id = page.text_content("#job-id")
    mine = httpx.get(f"{web.api_url}/animations/{job_id}", headers={"authorization": f"Bearer {KEY}"}, timeout=30)
    assert mine.status_code == 200
    assert mine.json()["request"]["init_image"]["upload_id"]
    assert mine.json()["progress"]["total"] == 2  # int(4 x 0.5) steps
    anonymous = httpx.get(f"{web.api_url}/animations/{job_id}", timeout=30)
    assert anonymous.status_code == 404  # it belongs to the key's tenant
    page.wait_for_selector(f"#job-list button[data-id='{job_id}']")
    screenshot(page, "job-with-key.png", capsys)

    # Forget the key: back to the development tenant, whose list does not have it.
    page.click("#key-panel summary")
    page.click("#key-forget")
    page.wait_for_function(
        f"() => !document.querySelector(\"#job-list button[data-id='{job_id}']\")"
        " && document.getElementById('key-state').textContent === 'none'"
    )


def frame_name(url: str) -> str:
    """The file name of a signed frame URL (its last path segment, decoded)."""
    return httpx.URL(url).path.rsplit("/", 1)[-1]


def in_viewport(page: Any, selector: str) -> bool:
    return bool(
        page.eval_on_selector(
            selector,
            "e => { const r = e.getBoundingClientRect();"
            " return !e.hidden && r.height > 0 && r.top >= 0 && r.bottom <= innerHeight && r.left >= 0"
            " && r.right <= innerWidth; }",
        )
    )


def test_a_digits_job_in_the_step_explorer(
    page: Any, browser: Any, web: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The committed digits model, a batch of two: loading model, steps and an ETA, the warning
    of a word it does not know, two videos, every step in the explorer, downloads, a rendition,
    reuse settings and new seed; then the job's own address at phone width."""
    page.goto(f"{web.api_url}/")
    wait_for_form(page)
    page.select_option("#f-model", "digits")
    assert DIGITS_HINT in page.text_content("#model-vocabulary")
    assert page.eval_on_selector("#f-width", "e => e.value") == "32"  # the model's defaults, shown
    page.fill("#f-prompt", "a handwritten 7 cat")
    page.fill("#f-steps", "40")  # sampling lasts long enough for the server to know its pace
    page.fill("#f-batch_size", "2")
    page.fill("#f-duration", "1")
    page.click("#submit")

    # The warning is there at once (the POST's answer has it), in the job's header.
    page.wait_for_selector("#job-warnings:not([hidden])")
    assert "does not know the words 'cat'" in page.text_content("#job-warnings")
    job_id = page.text_content("#job-id")
    wait_for_status(page, "succeeded")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#preview video')]"
        ".filter(v => !v.hidden && v.readyState >= 2).length === 2",
        timeout=30_000,
    )
    job = httpx.get(f"{web.api_url}/animations/{job_id}", timeout=30).json()
    assert job["warnings"] and len(job["images"]) == 2

    # Honest progress: loading the model before the first frame, then steps, then the video.
    timeline = page.evaluate("window.__timeline")
    first_frame = next(i for i, t in enumerate(timeline) if t.startswith("frame:"))
    assert "stage:loading model…" in timeline[:first_frame], timeline
    assert "stage:step 40 of 40" in timeline and "stage:encoding the video…" in timeline, timeline
    # The explorer showed steps while the job rendered (and the last one at the end).
    assert any(t.startswith("explorer:") and t.endswith(":rendering") for t in timeline), timeline
    assert timeline.index("stage:encoding the video…") < timeline.index("video"), timeline
    eta = page.evaluate("window.__eta")
    assert eta and all(re.fullmatch(ETA_TEXT, text) for text in eta), eta  # known once the pace is
    # The recent list followed it without a click on Refresh.
    listed = page.evaluate(f"window.__listed[{json.dumps(job_id)}]")
    assert listed[-1] == "succeeded" and len(listed) >= 2, listed

    # Every image of the batch: its own video, side by side.
    boxes = page.eval_on_selector_all("#preview video", "vs => vs.map(v => v.getBoundingClientRect().toJSON())")
    assert len(boxes) == 2 and boxes[0]["top"] == boxes[1]["top"] and boxes[1]["left"] >= boxes[0]["right"]
    sources = page.eval_on_selector_all("#preview video", "vs => vs.map(v => v.currentSrc)")
    assert [frame_name(u) for u in sources] == [image["video"]["filename"] for image in job["images"]]

    # The explorer: the slider shows the step asked for; two steps side by side.
    frames = httpx.get(f"{web.api_url}/animations/{job_id}/frames?image=0", timeout=30).json()["frames"]
    assert len(frames) == 40
    page.wait_for_function("() => document.getElementById('step-a').dataset.step === '40'")
    page.fill("#step-slider", "5")
    assert page.eval_on_selector("#step-a", "e => e.dataset.step") == "5"
    assert frame_name(page.eval_on_selector("#step-a", "e => e.src")) == frames[4]["filename"]
    assert page.text_content("#step-a-caption") == "step 5 of 40"
    page.check("#compare-toggle")
    page.fill("#step-slider-b", "20")
    assert frame_name(page.eval_on_selector("#step-b", "e => e.src")) == frames[19]["filename"]
    a, b = (page.eval_on_selector(s, "e => e.getBoundingClientRect().toJSON()") for s in ("#step-a", "#step-b"))
    assert a["top"] == b["top"] and b["left"] >= a["right"] and a["width"] > 0
    page.wait_for_function("() => ['step-a', 'step-b'].every(id => document.getElementById(id).naturalWidth > 0)")
    screenshot(page, "explorer-desktop.png", capsys)

    # Downloads: the frame on show (a PNG), every frame of both images (a zip).
    with page.expect_download() as one:
        page.click("#frame-download")
    assert one.value.suggested_filename == frames[4]["filename"]
    assert Path(one.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with page.expect_download() as every:
        page.click("#zip-download")
    with zipfile.ZipFile(every.value.path()) as archive:
        names = archive.namelist()
        assert len(names) == 80 and archive.read(names[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert every.value.suggested_filename.endswith(".zip")

    # The second image, at the same steps.
    second = httpx.get(f"{web.api_url}/animations/{job_id}/frames?image=1", timeout=30).json()["frames"]
    page.select_option("#explorer-image", "1")
    page.wait_for_function(
        f"() => decodeURIComponent(document.getElementById('step-a').src).includes({json.dumps(second[4]['filename'])})"
    )
    assert frame_name(page.eval_on_selector("#step-b", "e => e.src")) == second[19]["filename"]

    # The parameters, as the server applied them.
    assert page.text_content("#params-list dd[data-param=seed]").startswith(str(job["seed"]))
    assert page.text_content("#params-list dd[data-param=sampler]") == "Euler a · Automatic schedule"
    assert page.text_content("#params-list dd[data-param=size]") == "32 × 32 (frames ×4)"

    # A rendition made here becomes the preview (both images) once it is ready.
    page.click("#reencode summary")
    page.fill("#rendition-form input[name=duration]", "2")
    page.click("#rendition-form button[type=submit]")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#preview video')].every(v => v.currentSrc.includes('/renditions/')"
        " && v.readyState >= 2)",
        timeout=JOB_TIMEOUT_MS,
    )
    job = httpx.get(f"{web.api_url}/animations/{job_id}", timeout=30).json()
    (rendition,) = job["renditions"]
    assert rendition["status"] == "succeeded" and rendition["options"]["duration"] == 2
    sources = page.eval_on_selector_all("#preview video", "vs => vs.map(v => v.currentSrc)")
    assert all(f"/renditions/{rendition['id']}/" in url for url in sources), sources
    assert page.get_attribute(f"#downloads button[data-source='{rendition['id']}']", "aria-pressed") == "true"

    # Reuse settings: the form holds the job's request; new seed: the same with another seed.
    page.click("#reuse")
    form = page.evaluate(
        "() => Object.fromEntries([...new FormData(document.getElementById('job-form'))]"
        ".filter(([, v]) => typeof v === 'string'))"
    )
    request = job["request"]
    assert form["model"] == "digits" and form["prompt"] == request["prompt"]
    assert (form["steps"], form["width"], form["height"], form["batch_size"]) == ("40", "32", "32", "2")
    assert (form["scheduler"], form["schedule"], form["seed"]) == ("euler_a", "default", str(job["seed"]))
    assert float(form["guidance_scale"]) == request["guidance_scale"] and float(form["duration"]) == 1
    page.click("#new-seed")
    seed = page.eval_on_selector("#f-seed", "e => e.value")
    assert seed.isdigit() and int(seed) != job["seed"]

    # The job's own address at phone width: its video at the top of the screen.
    phone = PageWatch(browser, web, viewport={"width": 375, "height": 667}, is_mobile=True, has_touch=True)
    try:
        phone.page.goto(f"{web.api_url}/#/animations/{job_id}")
        phone.page.wait_for_function(VIDEO_PLAYS, timeout=30_000)
        box = phone.page.eval_on_selector("#video", "e => e.getBoundingClientRect().toJSON()")
        assert in_viewport(phone.page, "#video"), box
        assert phone.page.evaluate("document.documentElement.scrollWidth") <= 375
        path = artifacts_dir() / "explorer-phone.png"
        phone.page.screenshot(path=str(path))
        with capsys.disabled():
            print(f"\nscreenshot: {path}")
        screenshot(phone.page, "explorer-phone-full.png", capsys)
    finally:
        phone.close()


def test_the_form_follows_the_server_and_shows_every_cause(page: Any, web: Stack) -> None:
    """Bounds, samplers, schedules and LoRAs from GET /capabilities and the chosen model; a model
    without a negative prompt or img2img; a refusal with two causes shown at both fields."""
    caps = httpx.get(f"{web.api_url}/capabilities", timeout=30).json()
    limits = caps["limits"]
    models = {m["name"]: m for m in caps["models"]}
    page.goto(f"{web.api_url}/")
    wait_for_form(page)
    page.wait_for_function("() => document.querySelectorAll('#f-model option').length >= 4", timeout=60_000)
    attribute = lambda selector, name: page.get_attribute(selector, name)  # noqa: E731
    assert attribute("#f-steps", "max") == str(limits["max_steps"])
    assert attribute("#f-batch_size", "max") == str(limits["max_batch_size"])
    assert attribute("#f-fps", "max") == str(limits["max_fps"])
    assert float(attribute("#f-duration", "max")) == limits["max_duration_seconds"]
    assert attribute("#f-prompt", "maxlength") == str(limits["max_prompt_chars"])

    # The chosen model's samplers (their names from the server), and the schedules of the chosen sampler.
    page.select_option("#f-model", "digits")
    digits = models["digits"]
    assert attribute("#f-width", "step") == str(digits["size_multiple"])
    assert attribute("#f-width", "max") == str(limits["max_frame_side"] // 4)  # frames upscaled 4x
    options = page.eval_on_selector_all("#f-scheduler option", "os => os.map(o => [o.value, o.text])")
    labels = {s["id"]: s["label"] for s in caps["samplers"]}
    assert options[0] == ["", "Model default (Euler a)"]
    assert options[1:] == [[sampler, labels[sampler]] for sampler in digits["samplers"]]
    page.select_option("#f-scheduler", "dpmpp_2m")
    schedules = page.eval_on_selector_all("#f-schedule option", "os => os.map(o => o.value)")
    assert schedules == digits["samplers"]["dpmpp_2m"] and "karras" in schedules
    page.select_option("#f-scheduler", "euler_a")
    schedules = page.eval_on_selector_all("#f-schedule option", "os => os.map(o => o.value)")
    assert schedules == digits["samplers"]["euler_a"]
    lcm = next(s for s in caps["samplers"] if s["id"] == "lcm")
    page.select_option("#f-scheduler", "lcm")
    assert attribute("#f-steps", "max") == str(min(lcm["max_steps"], limits["max_steps"]))
    assert page.is_hidden("#adapters")  # the LoRA fits the tiny models only

    # LoRAs that fit the chosen model.
    page.select_option("#f-model", "tiny-sd")
    assert page.is_visible("#adapters input[name=lora][value=style]")

    # A server whose limits are lower than the page was told (a stale page), and a model of
    # another family: the form follows what it is told; the server's refusal names every cause.
    def stale(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        body["limits"].update(max_steps=999, max_pixels=4 * limits["max_pixels"])
        body["models"].append(
            {
                **digits,
                "name": "plain-16",
                "negative_prompt": False,
                "img2img": False,
                "size_multiple": 16,
                "samplers": {"euler": ["default"]},
                "img2img_samplers": {},
                "defaults": {},
            }
        )
        route.fulfill(response=response, body=json.dumps(body))

    page.route("**/capabilities", stale)
    page.reload()
    wait_for_form(page)
    page.wait_for_function("() => [...document.querySelectorAll('#f-model option')].some(o => o.value === 'plain-16')")
    page.select_option("#f-model", "plain-16")
    assert page.is_disabled("#f-negative_prompt") and page.is_visible("#negative-note")
    assert page.is_disabled("#init input[name=init_image]") and page.is_visible("#init-note")
    assert attribute("#f-width", "step") == "16"
    assert page.eval_on_selector_all("#f-scheduler option", "os => os.map(o => o.value)") == ["", "euler"]

    page.select_option("#f-model", "tiny-sd")
    assert page.is_enabled("#f-negative_prompt") and page.is_enabled("#init input[name=init_image]")
    page.fill("#f-prompt", "too much")
    page.fill("#f-steps", "300")
    page.fill("#f-width", "1024")
    page.fill("#f-height", "1032")
    with page.expect_request(lambda r: r.url.endswith("/animations") and r.method == "POST") as sent:
        page.click("#submit")
    # Only what was set goes out: the server applies the model's defaults to the rest.
    body = sent.value.post_data_json
    assert body == {"prompt": "too much", "model": "tiny-sd", "steps": 300, "width": 1024, "height": 1032}
    page.wait_for_selector("#notice:not([hidden])")
    notice = page.text_content("#notice")
    assert "steps: 300 is above this server's limit of 200" in notice
    assert f"width x height: 1024x1032 is above this server's limit of {limits['max_pixels']} pixels" in notice
    assert page.text_content("[data-field=steps] .field-error") == "300 is above this server's limit of 200"
    for side in ("width", "height"):
        assert "1024x1032 is above" in page.text_content(f"[data-field={side}] .field-error")
        assert page.get_attribute(f"#f-{side}", "aria-invalid") == "true"
    # Editing a field clears its message.
    page.fill("#f-steps", "20")
    assert page.is_hidden("[data-field=steps] .field-error")


def test_a_grid_from_the_axis_editor_plays_and_links_its_cells(
    page: Any, web: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    page.goto(f"{web.api_url}/")
    wait_for_form(page)
    page.select_option("select[name=model]", "digits")
    page.fill("textarea[name=prompt]", "the number 3")
    page.fill("input[name=steps]", "3")
    page.fill("input[name=seed]", "7")
    page.fill("#f-duration", "1")
    assert page.is_hidden("#grid-editor")
    page.check("#grid-mode")
    assert page.text_content("#submit") == "Render grid"
    # The fields come from the server (GridAxis.field of /openapi.json); the count from its limits.
    fields = page.eval_on_selector_all("#grid-x-field option", "options => options.map(o => o.value)")
    assert {"scheduler", "seed", "steps", "prompt", "guidance_scale"} <= set(fields), fields
    assert page.eval_on_selector_all("#grid-y-field option", "options => options.map(o => o.value)")[0] == ""
    page.select_option("#grid-x-field", "seed")
    page.fill("#grid-x-values", "1, 2")
    page.select_option("#grid-y-field", "steps")
    page.fill("#grid-y-values", ", ".join(str(n) for n in range(3, 36)))
    assert page.text_content("#grid-count") == "66 cells (this server allows up to 64)"
    page.click("#submit")  # refused here: too many cells, at the axis
    assert "66 cells is above this server's limit of 64" in page.text_content("[data-field=grid-x] .field-error")

    # A value the server refuses: its cells are named at the axis that varies it.
    page.fill("#grid-y-values", "3, 2000")
    assert page.text_content("#grid-count") == "4 cells (this server allows up to 64)"
    page.click("#submit")
    page.wait_for_selector("[data-field=grid-y].invalid", timeout=30_000)
    error = page.text_content("[data-field=grid-y] .field-error")
    assert "1 × 2000: " in error and "2 × 2000: " in error, error
    assert page.get_attribute("#grid-y-values", "aria-invalid") == "true"
    assert page.url.endswith("/")  # nothing was made

    page.select_option("#grid-y-field", "")
    page.click("#submit")
    page.wait_for_url(re.compile(r".*#/grids/[0-9a-f]{32}$"), timeout=30_000)
    grid_id = page.url.rsplit("/", 1)[1]
    assert page.is_hidden("#job") and page.is_visible("#grid")
    page.wait_for_function(
        "() => ['succeeded', 'failed', 'canceled'].includes(document.getElementById('grid-status').dataset.status)",
        timeout=JOB_TIMEOUT_MS,
    )
    assert page.eval_on_selector("#grid-status", "e => e.dataset.status") == "succeeded", page.text_content(
        "#grid-error"
    )
    assert page.text_content("#grid-stage") == "2/2 cells done · 6/6 steps"
    page.wait_for_function(
        "() => { const v = document.getElementById('grid-video');"
        " return !v.hidden && v.currentSrc !== '' && v.readyState >= 2; }",
        timeout=30_000,
    )
    video = page.eval_on_selector("#grid-video", "v => v.currentSrc")
    assert httpx.get(video, timeout=30).content[4:8] == b"ftyp"
    assert page.is_hidden("#grid-cancel")
    headers = page.eval_on_selector_all("#grid-cells thead th", "ths => ths.map(th => th.textContent)")
    assert headers == ["seed", "1", "2"]
    links = page.eval_on_selector_all("#grid-cells a.cell-link", "links => links.map(a => a.getAttribute('href'))")
    grid = httpx.get(f"{web.api_url}/grids/{grid_id}", timeout=30).json()
    assert links == [f"#/animations/{cell['id']}" for cell in grid["cells"]]
    screenshot(page, "grid-done.png", capsys)

    # A cell's link opens its own animation; back returns to the grid.
    page.click("#grid-cells a.cell-link >> nth=1")
    page.wait_for_url(f"**#/animations/{grid['cells'][1]['id']}", timeout=30_000)
    wait_for_status(page, "succeeded")
    assert page.is_hidden("#grid")
    page.go_back()
    page.wait_for_selector("#grid:not([hidden])", timeout=30_000)
    assert page.is_hidden("#job") and page.text_content("#grid-id") == grid_id

    # Opened directly at its address, on a fresh page.
    page.goto(f"{web.api_url}/#/grids/{grid_id}")
    page.wait_for_function(
        "() => document.getElementById('grid-status').dataset.status === 'succeeded'", timeout=30_000
    )


def test_the_api_docs_render_offline(page: Any, web: Stack) -> None:
    """/docs is Swagger UI from the API itself: it renders, and asks no other origin for anything."""
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(f"{web.api_url}/docs")
    page.wait_for_selector("#swagger-ui .information-container .title", timeout=30_000)
    assert "Steps Animation" in page.text_content("#swagger-ui .information-container .title")
    page.wait_for_selector('#swagger-ui .opblock-summary-path:has-text("/animations/{animation_id}/frames")')
    assert requests and all(url.startswith(f"{web.api_url}/") for url in requests), requests
    assert f"{web.api_url}/openapi.json" in requests
