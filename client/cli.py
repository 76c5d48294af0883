"""``stepanim``: the command line of the Steps Animation Service (also ``python -m client``).

Every failure prints one line on stderr and exits non-zero; see ``EPILOG`` for the codes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TextIO, get_args

from pydantic import BaseModel, ValidationError

from client._core import DEFAULT_URL, job_videos, limit_problems, output_paths
from client.errors import ApiError, ConnectionFailed, WaitTimeout
from client.models import (
    AnimationCreate,
    AnimationPublic,
    Codec,
    FrameDecoder,
    FrameResolution,
    FrameSource,
    GridPublic,
    Interpolation,
    JobStatus,
    LoraRequest,
    RenditionPublic,
    Schedule,
    Scheduler,
    VideoOptions,
    WebhookEvent,
    WebhookPayload,
)
from client.progress import ProgressBar
from client.sync import Client

PROG = "stepanim"

EXIT_OK = 0
EXIT_REJECTED = 1  # webhook verify: the signature does not verify; also local I/O errors
EXIT_USAGE = 2
EXIT_API_ERROR = 3
EXIT_JOB_FAILED = 4
EXIT_TIMEOUT = 5
EXIT_UNREACHABLE = 6
EXIT_INTERRUPTED = 130

EPILOG = f"""\
environment:
  STEPANIM_URL              the API (default {DEFAULT_URL}); --url overrides it
  STEPANIM_API_KEY          the API key (sa_...); --api-key overrides it
  STEPANIM_WEBHOOK_SECRET   the whsec_ secret for `webhook verify` (else it is read from the API)

exit codes:
  0  done                         4  the animation (or rendition) failed or was canceled
  1  signature invalid, I/O error 5  --wait timed out (the job keeps running)
  2  usage error                  6  the API could not be reached
  3  the API refused the request (its message and HTTP status are printed)

examples:
  stepanim submit "a lighthouse on a cliff at dawn" --steps 30 --duration 3 --wait -o lighthouse.mp4
  stepanim submit "the same at night" --init-image photo.jpg --strength 0.6 --decoder approx
  stepanim status 4f0c1a2b3c4d4e5f8a9b0c1d2e3f4a5b
  stepanim list --status rendering --status queued
  stepanim rerender 4f0c... --codec vp9 --interpolation mci --fps 24 --wait
  stepanim webhook verify --body body.json --headers headers.txt
  stepanim webhook listen --port 9000 --count 1
"""


class UsageError(Exception):
    """A command line the CLI cannot act on (exit 2)."""


class JobFailed(Exception):
    """The animation or rendition ended without a video (exit 4)."""


class Interrupted(Exception):
    """Ctrl-C while waiting: the job keeps running (exit 130)."""


# What each failure prints after "stepanim: " (``{}``: the exception) and its exit code; the first that fits.
FAILURES: tuple[tuple[type[BaseException], str, int], ...] = (
    (UsageError, "error: {}", EXIT_USAGE),
    (ApiError, "error: {}", EXIT_API_ERROR),
    (JobFailed, "{}", EXIT_JOB_FAILED),
    (WaitTimeout, "{}; it keeps running", EXIT_TIMEOUT),
    (ConnectionFailed, "error: cannot reach the API: {}", EXIT_UNREACHABLE),
    (Interrupted, "interrupted; {}", EXIT_INTERRUPTED),
    (KeyboardInterrupt, "interrupted", EXIT_INTERRUPTED),
    (OSError, "error: {}", EXIT_REJECTED),
)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# The request body, field by field: which option sets which field (tests check every field of
# AnimationCreate in openapi.yaml has one, so a new API field cannot be forgotten here).
REQUEST_OPTIONS: dict[str, tuple[str, ...]] = {
    "prompt": ("prompt",),
    "negative_prompt": ("negative_prompt",),
    "model": ("model",),
    "width": ("width",),
    "height": ("height",),
    "steps": ("steps",),
    "scheduler": ("scheduler",),
    "schedule": ("schedule",),
    "guidance_scale": ("guidance_scale",),
    "seed": ("seed",),
    "batch_size": ("batch_size",),
    "duration": ("animation", "duration"),
    "fps": ("animation", "fps"),
    "codec": ("animation", "codec"),
    "interpolation": ("animation", "interpolation"),
    "skip_steps": ("animation", "skip_steps"),
    "hold_last": ("animation", "hold_last"),
    "run_on_incomplete": ("animation", "run_on_incomplete"),
    "keep_frames": ("animation", "keep_frames"),
    "frames_only": ("animation", "frames_only"),
    "capture_source": ("capture", "source"),
    "decoder": ("capture", "decoder"),
    "capture_resolution": ("capture", "resolution"),
    "upscale": ("capture", "upscale"),
    "init_upload": ("init_image", "upload_id"),
    "init_url": ("init_image", "url"),
    "strength": ("strength",),
    "webhook": ("webhook",),
    "webhook_events": ("webhook_events",),
    "renditions": ("renditions",),
    "loras": ("loras",),
    "embeddings": ("embeddings",),
}
# Fields set another way: --init-image uploads the file and sends its upload_id instead of base64 data.
REQUEST_FIELDS_WITHOUT_OPTION = {("init_image", "data")}

VIDEO_OPTIONS = ("duration", "fps", "codec", "interpolation", "skip_steps", "hold_last")


def choices(literal: Any) -> list[str]:
    return [str(value) for value in get_args(literal)]


def parse_video_options(text: str) -> dict[str, Any]:
    """``codec=vp9,duration=3,interpolation=blend`` -> the fields of a rendition (checked by VideoOptions)."""
    fields: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, value = part.partition("=")
        name = name.strip().replace("-", "_")
        if not eq or name not in VideoOptions.model_fields:
            known = ", ".join(VideoOptions.model_fields)
            raise argparse.ArgumentTypeError(f"{part!r}: expected NAME=VALUE with NAME one of {known}")
        fields[name] = value.strip()
    try:
        return VideoOptions.model_validate(fields).model_dump(mode="json", exclude_unset=True)
    except ValidationError as e:
        raise argparse.ArgumentTypeError(validation_message(e)) from e


def parse_lora(text: str) -> dict[str, Any]:
    """``NAME`` or ``NAME:WEIGHT`` (as a web UI's ``<lora:NAME:WEIGHT>``) -> a LoRA of the request."""
    name, _, weight = text.partition(":")
    try:
        value = float(weight) if weight else 1.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME or NAME:WEIGHT, WEIGHT a number") from None
    return LoraRequest(name=name.strip(), weight=value).model_dump(mode="json")


def validation_message(error: ValidationError, *, names: Mapping[tuple[str, ...], str] | None = None) -> str:
    """Every refusal, ``where: why``, joined with ``; ``."""
    parts = []
    for item in error.errors():
        path = tuple(str(p) for p in item["loc"])
        parts.append(f"{(names or {}).get(path) or '.'.join(path)}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def build_request(args: argparse.Namespace, *, upload_id: str | None = None) -> AnimationCreate:
    """The POST /animations body of ``submit``'s options: only what was given (the server defaults the rest)."""
    values = dict(vars(args))
    if upload_id is not None:
        values["init_upload"] = upload_id
    body: dict[str, Any] = {}
    for dest, path in REQUEST_OPTIONS.items():
        value = values.get(dest)
        if value is None:
            continue
        target = body
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    try:
        return AnimationCreate.model_validate(body)
    except ValidationError as e:
        names = {path: "--" + dest.replace("_", "-") for dest, path in REQUEST_OPTIONS.items()}
        raise UsageError(validation_message(e, names=names)) from e


def rendition_request(args: argparse.Namespace) -> VideoOptions:
    body = {name: getattr(args, name) for name in VIDEO_OPTIONS if getattr(args, name, None) is not None}
    try:
        return VideoOptions.model_validate(body)
    except ValidationError as e:
        raise UsageError(validation_message(e, names={(n,): "--" + n.replace("_", "-") for n in VIDEO_OPTIONS})) from e


def parse_headers(text: str) -> dict[str, str]:
    """Headers of a saved delivery: a JSON object, or ``Name: value`` lines (a request line before them is skipped)."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError as e:
            raise UsageError(f"--headers: not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise UsageError("--headers: expected a JSON object of header names and values")
        return {str(k).lower(): str(v) for k, v in data.items()}
    headers: dict[str, str] = {}
    for line in stripped.splitlines():
        name, colon, value = line.partition(":")
        if not colon or " " in name.strip():
            continue  # e.g. "POST /hook HTTP/1.1" or a blank line
        headers[name.strip().lower()] = value.strip()
    return headers


# Output


def emit_json(model: BaseModel | Mapping[str, Any], out: TextIO) -> None:
    data = model.model_dump(mode="json") if isinstance(model, BaseModel) else dict(model)
    out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def describe(job: AnimationPublic) -> list[str]:
    """``status``'s human output."""
    progress = job.progress
    status = str(job.status)
    if job.status in ("queued", "rendering"):
        status += f" ({progress.step}/{progress.total} steps"
        if progress.eta_seconds is not None and job.status == "rendering":
            status += f", ETA {progress.eta_seconds:.0f}s"
        status += ")"
    if job.cancel_requested and not job.finished:
        status += ", cancel requested"
    rows = [
        ("id", job.id),
        ("status", status),
        ("prompt", job.request.prompt),
        ("model", f"{job.model}, seed {job.seed}"),
        ("created", job.created_at.isoformat()),
    ]
    if job.finished_at is not None:
        rows.append(("finished", job.finished_at.isoformat()))
    if job.error is not None:
        rows.append(("error", f"{job.error.code}: {job.error.message}"))
    for seed, video in job_videos(job):
        rows.append(("video", f"{video.url}" if len(job.images) <= 1 else f"seed {seed}: {video.url}"))
    if job.frames_zip is not None:
        rows.append(("frames", job.frames_zip.url))
    for rendition in job.renditions:
        url = rendition.video.url if rendition.video is not None else ""
        rows.append(("rendition", f"{rendition.id} {rendition.status} {rendition.options.codec} {url}".rstrip()))
    return [f"{name:<10} {value}" for name, value in rows]


def result_urls(job: AnimationPublic) -> list[str]:
    """What a succeeded job gives: every image's video, or (frames-only) the zip of its frames."""
    if videos := job_videos(job):
        return [video.url for _, video in videos]
    if job.frames_zip is not None:
        return [job.frames_zip.url]  # a frames_only job
    raise JobFailed(f"animation {job.id} succeeded but has no video or frames to download")


# Commands


class Cli:
    def __init__(self, args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> None:
        self.args = args
        self.out = stdout
        self.err = stderr
        self.json: bool = getattr(args, "json", False)
        self.quiet: bool = getattr(args, "quiet", False)
        self.verbose: bool = getattr(args, "verbose", False)
        url = getattr(args, "url", None) or os.environ.get("STEPANIM_URL") or DEFAULT_URL
        key = getattr(args, "api_key", None) or os.environ.get("STEPANIM_API_KEY") or None
        self.api = Client(url, api_key=key, timeout=getattr(args, "request_timeout", 30.0), on_retry=self._retrying)

    def _retrying(self, what: str, delay: float, why: str) -> None:
        if self.verbose:
            self.err.write(f"{PROG}: {why} from {what}; retrying in {delay:.1f}s\n")

    def note(self, text: str) -> None:
        if not self.quiet:
            self.err.write(text + "\n")

    def show(self, model: BaseModel | Mapping[str, Any], text: str) -> int:
        """Print ``model`` as JSON with --json, else ``text`` (one line or more): a command's result."""
        if self.json:
            emit_json(model, self.out)
        else:
            self.out.write(text + "\n")
        return EXIT_OK

    @contextmanager
    def waiting(self, bar: ProgressBar | None, what: str, cancel: str) -> Iterator[None]:
        """Around a wait drawn by ``bar``: the bar's line is closed after it, and Ctrl-C says that
        ``what`` keeps running and the command that cancels it."""
        try:
            yield
        except KeyboardInterrupt:
            raise Interrupted(f"{what} keeps running (`{PROG} {cancel}`)") from None
        finally:
            if bar is not None:
                bar.close()

    def failure(self, kind: str, record: AnimationPublic | GridPublic | RenditionPublic) -> JobFailed:
        """The error of an animation, grid or rendition that ended without its video (printed first with --json)."""
        if self.json:
            emit_json(record, self.out)
        reason = f": {record.error.code}: {record.error.message}" if record.error is not None else ""
        return JobFailed(f"{kind} {record.id} {record.status}{reason}")

    def submit(self) -> int:
        args = self.args
        request = build_request(args)  # checked by the client's models first: a typo fails here
        self.check_limits(request)
        request = self.uploaded_init_image(request)
        job = self.api.create(request, idempotency_key=args.idempotency_key)
        if not (args.wait or args.output):
            return self.show(job, job.id)
        self.note(f"animation {job.id} {job.status}")
        return self.finish(job.id)

    def uploaded_init_image(self, request: AnimationCreate) -> AnimationCreate:
        """``request`` with the ``--init-image`` file (if any) uploaded and named by its upload id."""
        if self.args.init_image is None:
            return request
        path = Path(self.args.init_image)
        if not path.is_file():
            raise UsageError(f"--init-image: no such file: {path}")
        return build_request(self.args, upload_id=self.api.upload(path).id)

    def check_limits(self, request: AnimationCreate) -> None:
        """Refuse what is over the server's limits (GET /capabilities), naming each option at fault,
        before anything is uploaded; a server that cannot say leaves the checks to POST /animations."""
        try:
            limits = self.api.capabilities().limits
        except (ApiError, ConnectionFailed):
            return
        problems = limit_problems(request, limits)
        if problems:
            names = {path: "--" + dest.replace("_", "-") for dest, path in REQUEST_OPTIONS.items()}
            raise UsageError("; ".join(f"{names.get(path, '.'.join(path))}: {why}" for path, why in problems))

    def wait(self) -> int:
        return self.finish(self.args.id)

    def finish(self, job_id: str) -> int:
        """Wait for the job with a progress line, then print its video URL or download it."""
        args = self.args
        bar = None if self.quiet else ProgressBar(self.err)
        with self.waiting(bar, f"animation {job_id}", f"cancel {job_id}"):
            job = self.api.wait(job_id, timeout=args.timeout, on_event=bar)
        if job.status != "succeeded":
            raise self.failure("animation", job)
        urls = result_urls(job)
        if not args.output:
            return self.show(job, "\n".join(urls))
        # One file per image: -o itself for one image, <stem>-<seed><suffix> for each image of a batch.
        if job.frames_zip is not None and not job_videos(job):
            paths = [self.api.download(urls[0], args.output)]
        else:
            paths = self.api.download_videos(job, args.output)
        return self.show(job, "\n".join(map(str, paths)))

    def status(self) -> int:
        job = self.api.get(self.args.id)
        return self.show(job, "\n".join(describe(job)))

    def cancel(self) -> int:
        job = self.api.cancel(self.args.id)
        extra = " (cancel requested; it stops within one step)" if job.status != "canceled" else ""
        return self.show(job, f"{job.id} {job.status}{extra}")

    def list(self) -> int:
        page = self.api.list(status=self.args.status, limit=self.args.limit, cursor=self.args.cursor)
        if self.json:
            emit_json(page, self.out)
            return EXIT_OK
        for job in page.data:
            prompt = " ".join(job.request.prompt.split())
            prompt = prompt if len(prompt) <= 48 else prompt[:47] + "…"
            steps = f"{job.progress.step}/{job.progress.total}"
            self.out.write(f"{job.id}  {job.status:<9}  {job.created_at:%Y-%m-%d %H:%M:%S}  {steps:>7}  {prompt}\n")
        if page.next_cursor:
            self.note(f"more: {PROG} list --cursor {page.next_cursor}")
        return EXIT_OK

    def rerender(self) -> int:
        rendition = self.api.create_rendition(self.args.id, rendition_request(self.args))
        return self.follow_rendition(rendition, self.args.id, self.api.wait_rendition)

    def follow_rendition(self, rendition: RenditionPublic, owner: str, wait: Callable[..., RenditionPublic]) -> int:
        """After ``rerender`` (or ``grid-rerender``) made ``rendition`` of ``owner``: print its id, or with
        --wait or -o wait for it (``wait(owner id, rendition id, timeout=)``) and print or download its videos."""
        args = self.args
        if not (args.wait or args.output):
            return self.show(rendition, rendition.id)
        self.note(f"rendition {rendition.id} of {owner} {rendition.status}")
        return self.finish_rendition(wait(args.id, rendition.id, timeout=args.timeout))

    def finish_rendition(self, rendition: RenditionPublic) -> int:
        if rendition.status != "succeeded" or rendition.video is None:
            raise self.failure("rendition", rendition)
        videos = rendition.videos or [rendition.video]  # (a server before batches had one video)
        if self.args.output:
            seeds = [image.seed for image in self.api.get(self.args.id).images] if len(videos) > 1 else [0]
            paths = output_paths(self.args.output, seeds)
            for video, path in zip(videos, paths, strict=True):
                self.api.download(video.url, path)
                if not self.json:
                    self.out.write(f"{path}\n")
        if self.json:
            emit_json(rendition, self.out)
        elif not self.args.output:
            self.out.write("".join(video.url + "\n" for video in videos))
        return EXIT_OK

    def upload(self) -> int:
        path = Path(self.args.file)
        if not path.is_file():
            raise UsageError(f"no such file: {path}")
        upload = self.api.upload(path)
        return self.show(upload, upload.id)

    def capabilities(self) -> int:
        caps = self.api.capabilities()
        if self.json:
            emit_json(caps, self.out)
            return EXIT_OK
        self.out.write(f"codecs          {' '.join(caps.codecs)}\n")
        self.out.write(f"interpolations  {' '.join(caps.interpolations)}\n")
        self.out.write(f"schedulers      {' '.join(caps.schedulers)}\n")
        for adapter in caps.adapters:
            fits = ", ".join(adapter.models) or f"no model here ({adapter.note})"
            self.out.write(f"{adapter.kind:<16}{adapter.name}: fits {fits}\n")
        for name, why in caps.missing.items():
            self.out.write(f"missing         {name}: {why}\n")
        return EXIT_OK

    def webhook_secret(self) -> int:
        secrets = self.api.rotate_webhook_secret() if self.args.rotate else self.api.webhook_secrets()
        return self.show(secrets, secrets.current)

    def webhook_verify(self) -> int:
        from stepanim.webhook_signing import SignatureError, verify  # standard library only

        args = self.args
        body = read_input(args.body, "--body")
        headers = parse_headers(read_input(args.headers, "--headers").decode()) if args.headers else {}
        for name, value in (
            ("webhook-id", args.msg_id),
            ("webhook-timestamp", args.timestamp),
            ("webhook-signature", args.signature),
        ):
            if value is not None:
                headers[name] = value
        secrets: list[str] = list(args.secret or [])
        if not secrets and os.environ.get("STEPANIM_WEBHOOK_SECRET"):
            secrets = [os.environ["STEPANIM_WEBHOOK_SECRET"]]
        if not secrets:
            secrets = [s.secret for s in self.api.webhook_secrets().secrets]
        tolerance = None if args.no_timestamp_check else args.tolerance
        try:
            verify(secrets, headers, body, tolerance=tolerance)
        except SignatureError as e:
            self.err.write(f"{PROG}: invalid webhook signature: {e}\n")
            return EXIT_REJECTED
        summary = f"valid signature: {headers.get('webhook-id')}"
        try:
            payload = WebhookPayload.model_validate_json(body)
            summary += f" ({payload.type}, animation {payload.data.id} {payload.data.status})"
        except ValidationError:
            pass  # a valid signature over another body
        return self.show({"valid": True, "webhook_id": headers.get("webhook-id")}, summary)

    def webhook_listen(self) -> int:
        from client.listen import listen  # standard library only

        secrets: list[str] = list(self.args.secret or [])
        if not secrets and os.environ.get("STEPANIM_WEBHOOK_SECRET"):
            secrets = [os.environ["STEPANIM_WEBHOOK_SECRET"]]
        if not secrets:
            secrets = [s.secret for s in self.api.webhook_secrets().secrets]
        invalid = listen(self.args.host, self.args.port, secrets, count=self.args.count, out=self.out)
        return EXIT_REJECTED if invalid else EXIT_OK


def read_input(name: str, option: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    path = Path(name)
    if not path.is_file():
        raise UsageError(f"{option}: no such file: {path}")
    return path.read_bytes()


# The parser


def positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0: {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def common_options(defaults: bool) -> Parser:
    """Options every command takes, before or after its name (values given first are kept)."""
    suppress: Any = argparse.SUPPRESS
    common = Parser(add_help=False)
    group = common.add_argument_group("connection and output")
    group.add_argument(
        "--url",
        default=None if defaults else suppress,
        help=f"the API (env STEPANIM_URL; default {DEFAULT_URL})",
    )
    group.add_argument(
        "--api-key", default=None if defaults else suppress, metavar="KEY", help="API key (env STEPANIM_API_KEY)"
    )
    group.add_argument(
        "--json", action="store_true", default=False if defaults else suppress, help="print JSON (for scripts)"
    )
    group.add_argument(
        "-q", "--quiet", action="store_true", default=False if defaults else suppress, help="no progress on stderr"
    )
    group.add_argument(
        "-v", "--verbose", action="store_true", default=False if defaults else suppress, help="say when it retries"
    )
    group.add_argument(
        "--request-timeout",
        type=positive(float),
        default=30.0 if defaults else suppress,
        metavar="SECONDS",
        help="timeout of each HTTP request (default 30)",
    )
    return common


def add_wait_options(parser: argparse.ArgumentParser, what: str) -> None:
    group = parser.add_argument_group("waiting")
    group.add_argument(
        "--wait", action="store_true", help=f"wait for the {what}, showing progress on stderr; print its video URL"
    )
    group.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="download the video to FILE (implies --wait); a batch writes one file per image, "
        "FILE's name with the image's seed added (cat.mp4 -> cat-1234.mp4, cat-1235.mp4)",
    )
    group.add_argument(
        "--timeout", type=positive(float), metavar="SECONDS", help="give up waiting after this long (exit 5)"
    )


def add_video_options(parser: argparse.ArgumentParser, title: str) -> None:
    video = parser.add_argument_group(title)
    video.add_argument("--duration", type=positive(float), metavar="SECONDS", help="length in seconds")
    video.add_argument("--fps", type=int, help="frames per second of the video")
    video.add_argument("--codec", choices=choices(Codec), help="video codec (see `stepanim capabilities`)")
    video.add_argument(
        "--interpolation",
        choices=choices(Interpolation),
        help="none holds each step, blend cross-fades, mci is motion compensated",
    )
    video.add_argument("--skip-steps", type=int, metavar="N", help="leave out the first N (noisiest) steps")
    video.add_argument("--hold-last", type=float, metavar="SECONDS", help="hold the final frame this long")


def add_request_options(parser: argparse.ArgumentParser, *, grid: bool = False) -> None:
    """The options that set the request body (``REQUEST_OPTIONS``): ``submit``'s, and the base request of
    ``grid`` (without those a grid's cells cannot take: batches, renditions, frames only, progress webhooks)."""
    image = parser.add_argument_group("image")
    image.add_argument("--negative-prompt", metavar="TEXT", help="what to steer away from")
    image.add_argument("--model", help="a model of the workers' models folder, or a hub id (server default)")
    # Unset options get the model's defaults from the server (`stepanim capabilities` lists them, and the limits).
    image.add_argument("--width", type=int, help="pixels, a multiple of the model's size step (model default)")
    image.add_argument("--height", type=int, help="pixels, a multiple of the model's size step (model default)")
    image.add_argument("--steps", type=int, help="denoising steps, one frame each (model default)")
    image.add_argument(
        "--scheduler",
        choices=choices(Scheduler),
        help="sampler (model default: euler_a for SD/SDXL, euler for SD3/Flux)",
    )
    image.add_argument(
        "--schedule", choices=choices(Schedule), help="schedule type of the noise levels (default: the model's)"
    )
    image.add_argument(
        "--guidance-scale", "--guidance", "--cfg", type=float, metavar="SCALE", help="guidance scale (model default)"
    )
    image.add_argument("--seed", type=int, help="random seed (chosen by the server when omitted)")
    if not grid:  # a grid's cells render one image each
        image.add_argument("--batch-size", type=int, metavar="N", help="images rendered together, one video each")
    image.add_argument(
        "--lora",
        dest="loras",
        action="append",
        type=parse_lora,
        metavar="NAME[:WEIGHT]",
        help="a LoRA of the workers' adapters folder, weight 1 unless given, e.g. watercolor:0.8 (repeatable; "
        "see `stepanim capabilities`)",
    )
    image.add_argument(
        "--embedding",
        dest="embeddings",
        action="append",
        metavar="NAME",
        help="a textual-inversion embedding; write its name in the prompt where it should act (repeatable)",
    )
    add_video_options(parser, "video")
    frames = parser.add_argument_group("frames")
    frames.add_argument(
        "--run-on-incomplete",
        action=argparse.BooleanOptionalAction,
        help="make a video of the steps done when the render is canceled or stops early",
    )
    if not grid:  # a grid composes its cells' frames: it keeps them, and makes a video
        frames.add_argument(
            "--keep-frames", action=argparse.BooleanOptionalAction, help="keep the frames (needed for renditions)"
        )
        frames.add_argument(
            "--frames-only", action=argparse.BooleanOptionalAction, help="no video: the frames and a zip of them"
        )
    frames.add_argument("--capture-source", choices=choices(FrameSource), help="what each frame shows")
    frames.add_argument("--decoder", choices=choices(FrameDecoder), help="how frames are decoded")
    frames.add_argument("--capture-resolution", choices=choices(FrameResolution), help="frame size")
    frames.add_argument("--upscale", type=int, help="enlarge every frame by this factor (e.g. 4 for digits)")
    if not grid:  # a grid's other videos: `stepanim grid-rerender`
        frames.add_argument(
            "--rendition",
            dest="renditions",
            action="append",
            type=parse_video_options,
            metavar="OPTIONS",
            help="another video of the same frames, e.g. codec=vp9,duration=3 (repeatable, up to 8)",
        )
    img2img = parser.add_argument_group("img2img")
    init = img2img.add_mutually_exclusive_group()
    init.add_argument("--init-image", metavar="PATH", help="start from this image (uploaded through /uploads)")
    init.add_argument("--init-upload", metavar="UPLOAD_ID", help="start from an earlier upload (`stepanim upload`)")
    init.add_argument(
        "--init-url", metavar="URL", help="start from the image at this public URL (the server fetches it)"
    )
    img2img.add_argument("--strength", type=float, help="how far the image is changed, 0-1 (default 0.75)")
    hooks = parser.add_argument_group("webhooks")
    hooks.add_argument("--webhook", metavar="URL", help=f"receives signed POSTs about the {'grid' if grid else 'job'}")
    if not grid:  # a grid sends its final grid.* events
        hooks.add_argument(
            "--webhook-event",
            dest="webhook_events",
            action="append",
            choices=choices(WebhookEvent),
            help="an event to send (repeatable; default: the final ones)",
        )


def build_parser() -> Parser:
    parser = Parser(
        prog=PROG,
        description="Render the denoising steps of a diffusion run as a video, through the Steps Animation "
        "Service's HTTP API.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common_options(defaults=True)],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    common = [common_options(defaults=False)]

    def command(name: str, help_: str, handler: Callable[[Cli], int], **kwargs: Any) -> Parser:
        sub: Parser = commands.add_parser(name, help=help_, description=help_, parents=common, **kwargs)
        sub.set_defaults(handler=handler)
        return sub

    submit = command("submit", "start an animation (POST /animations)", Cli.submit)
    submit.add_argument("prompt", help="what to draw")
    add_request_options(submit)
    submit.add_argument("--idempotency-key", metavar="KEY", help="reuse to make a repeated submit return the same job")
    add_wait_options(submit, "animation")

    from client import grid_cli  # (it builds on this module)

    grid_cli.add_commands(command)

    wait = command("wait", "wait for an animation, then print its video URL or download it", Cli.wait)
    wait.add_argument("id", help="animation id")
    wait.add_argument(
        "-o", "--output", metavar="FILE", help="download the video to FILE (a batch: one file per image, seed added)"
    )
    wait.add_argument("--timeout", type=positive(float), metavar="SECONDS", help="give up after this long (exit 5)")

    status = command("status", "show an animation (GET /animations/{id})", Cli.status)
    status.add_argument("id", help="animation id")

    cancel = command("cancel", "cancel an animation (safe to repeat)", Cli.cancel)
    cancel.add_argument("id", help="animation id")

    listing = command("list", "this API key's recent animations, newest first", Cli.list)
    listing.add_argument(
        "--status", action="append", choices=choices(JobStatus), help="only these statuses (repeatable)"
    )
    listing.add_argument("--limit", type=int, default=20, help="how many (1-100, default 20)")
    listing.add_argument("--cursor", help="the next page, as a previous list printed")

    for name, aliases in (("rerender", ["encode"]),):
        rerender = command(
            name,
            "make another video of a succeeded animation's frames (POST /animations/{id}/renditions)",
            Cli.rerender,
            aliases=aliases,
        )
        rerender.add_argument("id", help="animation id")
        add_video_options(rerender, "video")
        add_wait_options(rerender, "rendition")

    upload = command("upload", "upload an init image for img2img; prints its upload id", Cli.upload)
    upload.add_argument("file", help="a PNG, JPEG or WebP image")

    command("capabilities", "codecs, interpolations and schedulers this server supports", Cli.capabilities)

    webhook = commands.add_parser(
        "webhook", help="webhook secret and signature checks", description="Webhook secret and signature checks."
    )
    hooks_commands = webhook.add_subparsers(
        dest="webhook_command", required=True, metavar="COMMAND", parser_class=Parser
    )
    secret = hooks_commands.add_parser(
        "secret", help="print the whsec_ secret that signs this key's webhooks", parents=common
    )
    secret.add_argument("--rotate", action="store_true", help="make a new secret (the old one signs for 24 h more)")
    secret.set_defaults(handler=Cli.webhook_secret)
    verify = hooks_commands.add_parser(
        "verify",
        parents=common,
        help="check a saved delivery's signature (exit 0 valid, 1 invalid)",
        description="Check the Standard Webhooks signature of a saved delivery: its exact body, and its "
        "webhook-id, webhook-timestamp and webhook-signature headers (from --headers or the options). The "
        "secret is --secret, else STEPANIM_WEBHOOK_SECRET, else every current secret from the API.",
    )
    verify.add_argument(
        "--body", required=True, metavar="FILE", help="the delivery's body, byte for byte (- for stdin)"
    )
    verify.add_argument(
        "--headers", metavar="FILE", help="its headers: a JSON object or `Name: value` lines (- for stdin)"
    )
    verify.add_argument("--id", dest="msg_id", metavar="ID", help="the webhook-id header")
    verify.add_argument("--timestamp", metavar="UNIX", help="the webhook-timestamp header")
    verify.add_argument("--signature", metavar="SIG", help="the webhook-signature header (v1,...)")
    verify.add_argument("--secret", action="append", metavar="WHSEC", help="a whsec_ secret (repeatable)")
    verify.add_argument(
        "--tolerance",
        type=positive(float),
        default=300.0,
        metavar="SECONDS",
        help="refuse timestamps further than this from now (default 300, as Standard Webhooks asks)",
    )
    verify.add_argument(
        "--no-timestamp-check", action="store_true", help="accept any timestamp (for a delivery saved long ago)"
    )
    verify.set_defaults(handler=Cli.webhook_verify)
    receiver = hooks_commands.add_parser(
        "listen",
        parents=common,
        help="receive webhooks on this machine and check each signature (for trying webhooks locally)",
        description="Answer webhook POSTs on HOST:PORT, check each signature against --secret, else "
        "STEPANIM_WEBHOOK_SECRET, else the key's secrets from the API, and print one line per delivery. "
        "The service must be allowed to call a local address: make serve SERVE_ARGS='--allow-webhooks-to "
        "127.0.0.1' (STEPANIM_OUTBOUND_ALLOW). Exit 1 when a delivery did not verify.",
    )
    receiver.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    receiver.add_argument("--port", type=int, default=9000, help="port to listen on (default 9000)")
    receiver.add_argument("--count", type=int, metavar="N", help="exit after N deliveries (default: run until Ctrl-C)")
    receiver.add_argument("--secret", action="append", metavar="WHSEC", help="a whsec_ secret (repeatable)")
    receiver.set_defaults(handler=Cli.webhook_listen)
    return parser


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    args = build_parser().parse_args(argv)
    handler: Callable[[Cli], int] = args.handler
    cli: Cli | None = None
    try:
        cli = Cli(args, out, err)
        return handler(cli)
    except BaseException as e:
        for kind, line, code in FAILURES:
            if isinstance(e, kind):
                err.write(f"{PROG}: {line.format(e)}\n")
                return code
        raise
    finally:
        if cli is not None:
            cli.api.close()


if __name__ == "__main__":
    raise SystemExit(main())
