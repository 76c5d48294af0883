"""The web page at / in a real browser (Debian's Chromium, headless, driven by Playwright)
against the whole service on real processes: submit a job through the form, watch the
frames arrive, play the video; API keys; an init image; phone width.

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from scripts.devstack import ROOT, Stack
from stepanim import auth

KEY = "sa_e2e_web_" + "w" * 32
JOB_TIMEOUT_MS = 180_000

# Every frame the page's <img id="frame"> finished loading, with the job's status shown then;
# and every text the ETA showed.
RECORD_FRAMES = """
window.__frames = [];
window.__eta = [];
new MutationObserver(() => {
  const text = document.getElementById("job-eta")?.textContent;
  if (text && window.__eta.at(-1) !== text) window.__eta.push(text);
}).observe(document, { subtree: true, childList: true, characterData: true });
document.addEventListener("load", (event) => {
  const target = event.target;
  if (target && target.id === "frame") {
    const status = document.getElementById("job-status").dataset.status;
    window.__frames.push({ src: target.currentSrc, step: target.dataset.step, status });
  }
}, true);
"""

VIDEO_PLAYS = """() => {
  const video = document.getElementById("video");
  return !video.hidden && video.readyState >= 2 && (video.currentTime > 0 || !video.paused);
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


@pytest.fixture(scope="module")
def web(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Development mode (no key needed) with one API key of tenant ``acme`` as well."""
    workdir = tmp_path_factory.mktemp("web")
    # tiny-sd, and the same weights as "tiny-small" with request defaults (stepanim.json).
    models = workdir / "models"
    (models / "tiny-small").mkdir(parents=True)
    (models / "tiny-sd").symlink_to(models_dir / "tiny-sd", target_is_directory=True)
    for entry in (models_dir / "tiny-sd").iterdir():
        (models / "tiny-small" / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    (models / "tiny-small" / "stepanim.json").write_text(json.dumps(SMALL_MODEL))
    settings = {
        "STEPANIM_MODELS_DIR": str(models),
        "STEPANIM_DEFAULT_MODEL": "tiny-sd",
        "STEPANIM_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
        "STEPANIM_STORAGE_BACKEND": "local",
        "STEPANIM_LOCAL_STORAGE_DIR": str(workdir / "storage"),
        "STEPANIM_ALLOW_ANONYMOUS": "true",
        "STEPANIM_API_KEYS": json.dumps([{"id": "acme-1", "tenant": "acme", "sha256": auth.hash_key(KEY)}]),
    }
    stack = Stack(workdir=workdir, settings=settings)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def page(browser: Any, web: Stack) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    def on_console(message: Any) -> None:
        # Console errors include what the Content-Security-Policy blocked. Chromium also logs
        # the answers the page expects and handles: 503 from GET /capabilities until the
        # encoder has reported, 401 for an unknown key.
        url = message.location.get("url", "")
        handled = ("status of 503" in message.text and url.endswith("/capabilities")) or "status of 401" in message.text
        if message.type == "error" and not handled:
            errors.append(f"{message.text} ({url})")

    page.on("console", on_console)
    page.add_init_script(RECORD_FRAMES)
    try:
        yield page
        assert errors == [], f"the page logged errors: {errors}"
    finally:
        context.close()


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
    page.fill("input[name=duration]", "1")


def wait_for_status(page: Any, status: str) -> None:
    page.wait_for_function(
        f"() => document.getElementById('job-status').dataset.status === {json.dumps(status)}"
        " || ['failed', 'canceled'].includes(document.getElementById('job-status').dataset.status)",
        timeout=JOB_TIMEOUT_MS,
    )
    shown = page.eval_on_selector("#job-status", "e => e.dataset.status")
    assert shown == status, page.text_content("#job-error")


def test_a_job_submitted_in_the_page_shows_its_frames_live_then_plays(
    page: Any, web: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    page.goto(f"{web.api_url}/")
    wait_for_form(page)
    assert page.is_hidden("#notice"), page.text_content("#notice")  # no key needed in development mode
    codec = page.eval_on_selector("select[name=codec]", "e => e.value")
    fill_small_job(page, "a page test", steps=16)
    page.click("#submit")

    wait_for_status(page, "succeeded")
    frames = page.evaluate("window.__frames")
    live = {f["src"] for f in frames if f["status"] not in ("succeeded", "failed", "canceled")}
    assert len(live) >= 2, f"fewer than two different frames appeared before the end: {frames}"
    eta = page.evaluate("window.__eta")
    assert any(re.fullmatch(r"about \d+ (s|min \d+ s) left", text) for text in eta), eta
    page.wait_for_function(VIDEO_PLAYS, timeout=30_000)
    job_id = page.text_content("#job-id")
    assert page.eval_on_selector("#job-progress", "e => e.value === e.max")
    links = page.eval_on_selector_all("#downloads a", "links => links.map(a => a.href)")
    assert len(links) == 1 and httpx.get(links[0], timeout=30).status_code == 200
    screenshot(page, "job-done.png", capsys)

    # Re-encode: a second video of the same frames appears in the downloads (the one playing goes on).
    playing = page.eval_on_selector("#video", "v => v.currentSrc")
    page.select_option("#rendition-form select[name=codec]", codec)
    page.fill("#rendition-form input[name=duration]", "2")
    page.click("#rendition-form button[type=submit]")
    page.wait_for_function("() => document.querySelectorAll('#downloads a').length === 2", timeout=JOB_TIMEOUT_MS)
    assert page.eval_on_selector("#video", "v => v.currentSrc") == playing
    job = httpx.get(f"{web.api_url}/animations/{job_id}", timeout=30).json()
    assert [r["status"] for r in job["renditions"]] == ["succeeded"]
    assert job["renditions"][0]["options"]["duration"] == 2

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
    """GET /capabilities lists the render worker's models; choosing one applies its stepanim.json defaults."""
    page.goto(f"{web.api_url}/")
    wait_for_form(page)
    page.wait_for_function("() => document.querySelectorAll('#model-list option').length >= 2", timeout=60_000)
    assert page.eval_on_selector("input[name=width]", "e => e.value") == "512"  # tiny-sd suggests nothing
    page.fill("input[name=model]", "tiny-small")
    page.dispatch_event("input[name=model]", "change")
    assert page.eval_on_selector("input[name=width]", "e => e.value") == "32"
    assert page.eval_on_selector("input[name=steps]", "e => e.value") == "3"
    assert page.text_content("#model-note") == SMALL_MODEL["description"]
    assert page.eval_on_selector("textarea[name=prompt]", "e => e.placeholder") == "a small thing"
    page.fill("textarea[name=prompt]", "small")
    page.fill("input[name=duration]", "1")
    page.click("#submit")
    wait_for_status(page, "succeeded")
    job = httpx.get(f"{web.api_url}/animations/{page.text_content('#job-id')}", timeout=30).json()
    request = job["request"]
    assert (job["model"], request["width"], request["capture"]["upscale"]) == ("tiny-small", 32, 2)


def test_api_key_from_the_page_and_an_init_image(
    page: Any, web: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page.goto(f"{web.api_url}/")
    wait_for_form(page)

    # An unknown key: the server's message, and the key form opens.
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
