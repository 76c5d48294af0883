"""Encoding while the frames arrive (issue #21): at the last step only the tail is left.

The frame schedule is known when a render starts (steps, skipped steps, duration, fps,
hold), so the timeline is too (``encoder.timing``). The stream task (``encoder.tasks``)
starts with the render, follows the job's events (``encoder.follow``) and hands every
stored frame to one encode per image of the batch:

- ``none`` and ``blend``: ffmpeg reads the PNGs on its stdin (:class:`PipeEncode`) and
  encodes as they come; the last few steps go to a second ffmpeg of their own
  (``encoder.encode.cut_for``), so the first one is flushed while they render;
- ``mci``: the frames go into a folder and each segment (one per encode slot, as post hoc:
  ``encoder.encode.cut_for``) starts as soon as its steps, with the look-ahead it needs, are
  there (:class:`SegmentEncode`).

When the render is done only the last frames, the join (which adds the metadata, known
only now, and the container flags) and ffprobe's check are left; then the video is uploaded
like a post-hoc one. The join and ffprobe are started with the stream and wait on their stdin
(:class:`Standby`): starting either takes ~0.1 s here, more than the work they do.

Frames stay the source of truth: whatever the stream cannot vouch for
(a render that restarted or ran another number of steps, ffmpeg failing, storage trouble,
a deadline) raises :class:`Abandon`, and the post-hoc encode makes the video from the stored
frames. :class:`Stopped`: the job ended or the stream's lease was lost; nothing is published.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from encoder.encode import cut_for, metadata, sequence_path, timeline_for, verify
from encoder.ffmpeg import (
    CODECS,
    FfmpegError,
    Probe,
    build_args,
    concat_args,
    find_binary,
    metadata_file,
    parse_probe,
    probe_args,
    write_listing,
)
from encoder.follow import Followed
from encoder.job import metadata_params, parallelism
from encoder.timing import Timeline, kept_frames
from stepanim.cancel import CancelWatch
from stepanim.jobs import Job, VideoInfo
from stepanim.manifest import Manifest
from stepanim.naming import video_key, video_name
from stepanim.processes import die_with_parent
from stepanim.services import Services
from stepanim.video_options import AnimationOptions, Codec, Interpolation

WAIT_MS = 250  # longest wait for the next event before the lease and the deadline are looked at again


class Abandon(Exception):
    """The stream cannot vouch for this video: the post-hoc encode makes it from the stored frames."""


class Stopped(Exception):
    """The job ended without this stream, or its lease was lost: nothing to publish."""


def check(deadline: float, should_stop: Callable[[], bool]) -> None:
    """Raise when the stream must end now: :class:`Stopped` (canceled, lease lost) or past its deadline."""
    if should_stop():
        raise Stopped("canceled or lease lost; ffmpeg stopped, nothing published")
    if time.monotonic() > deadline:
        raise FfmpegError("ffmpeg ran past the stream's deadline")


class Ffmpeg:
    """One ffmpeg (or ffprobe) process of a stream, its messages in a file; it dies with the thread
    that started it. ``stdout``: what it prints is kept (ffprobe's answer, a few kB)."""

    def __init__(self, args: list[str], *, stdin: bool = False, stdout: bool = False) -> None:
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed by kill())
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
            stderr=self.log,
            bufsize=0,
            preexec_fn=die_with_parent,
        )

    def failure(self) -> FfmpegError:
        self.log.seek(0)
        tail = self.log.read().decode(errors="replace").strip().splitlines()[-5:]
        return FfmpegError(f"ffmpeg exited with {self.proc.returncode}: {' | '.join(tail) or 'no output'}")

    def done(self) -> bool:
        """Whether it ended (:class:`FfmpegError` if it failed)."""
        if self.proc.poll() is None:
            return False
        if self.proc.returncode != 0:
            raise self.failure()
        return True

    def give(self, source: bytes | Path) -> None:
        """All of its input on stdin (bytes, or a file's), then the end of it."""
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            if isinstance(source, Path):
                with source.open("rb") as file:
                    shutil.copyfileobj(file, stdin)
            else:
                stdin.write(source)
            stdin.close()
        except BrokenPipeError:  # it ended before reading it all: its messages say why
            self.proc.wait()
            raise self.failure() from None

    def wait(self, deadline: float, should_stop: Callable[[], bool]) -> None:
        while not self.done():
            check(deadline, should_stop)
            time.sleep(0.01)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


class Standby:
    """The join and the ffprobe check of one image's video, started with the stream, each waiting
    on its stdin: the join for the video's metadata (read before its listing), ffprobe for the
    video. Starting ffmpeg or ffprobe (some 200 shared libraries to load) takes ~0.1 s here,
    more than a join or a probe of a short video does; started early, it is not in the tail."""

    def __init__(self, folder: Path, codec: Codec, *, ffmpeg: str, ffprobe: str) -> None:
        self.codec = codec
        self.listing = folder / "parts.ffconcat"
        self.output = folder / f"video.{CODECS[codec].ext}"
        join = concat_args(ffmpeg=ffmpeg, listing=self.listing, output=self.output, codec=codec, metadata=None)
        self.joiner = Ffmpeg(join, stdin=True)
        self.prober = Ffmpeg(probe_args(ffprobe, "pipe:0"), stdin=True, stdout=True)

    def join(self, parts: list[Path], metadata: dict[str, str], deadline: float) -> Path:
        """``parts`` joined without re-encoding, with ``metadata``."""
        write_listing(self.listing, [part.name for part in parts])
        self.joiner.give(metadata_file(self.codec, metadata))
        self.joiner.wait(deadline, lambda: False)
        return self.output

    def probe(self, deadline: float) -> Probe:
        self.prober.give(self.output)
        stdout = self.prober.proc.stdout
        assert stdout is not None
        answer = stdout.read()  # to its end: ffprobe has all of its input, it answers and exits
        self.prober.wait(deadline, lambda: False)
        return parse_probe(answer.decode())

    def kill(self) -> None:
        self.joiner.kill()
        self.prober.kill()


@dataclass
class Pipe:
    """One ffmpeg of a :class:`PipeEncode`, fed the kept steps ``first`` to ``end`` (exclusive; None: all)."""

    ffmpeg: Ffmpeg
    output: Path
    first: int = 0
    end: int | None = None

    def wants(self, kept: int) -> bool:
        return self.first <= kept and (self.end is None or kept < self.end)

    def close(self) -> None:
        """Its input is complete: ffmpeg flushes its encoder and ends."""
        stdin = self.ffmpeg.proc.stdin
        if stdin is not None and not stdin.closed:
            stdin.close()


class PipeEncode:
    """One image's video from ffmpegs that read each frame on their stdin (none, blend): one for
    the whole video, or one for all but its last steps and one for those (``tail_split``); the
    first is closed, and so flushes its encoder, while the last steps are still rendering."""

    def __init__(self, pipes: list[Pipe]) -> None:
        self.pipes = pipes

    def feed(self, data: bytes, *, kept: int) -> None:
        """Frame ``kept`` (from 0, after the skipped steps), to each ffmpeg that reads it."""
        for pipe in self.pipes:
            if not pipe.wants(kept):
                continue
            stdin = pipe.ffmpeg.proc.stdin
            assert stdin is not None
            try:
                stdin.write(data)
            except BrokenPipeError:
                pipe.ffmpeg.proc.wait()
                raise pipe.ffmpeg.failure() from None
            if pipe.end is not None and kept == pipe.end - 1:
                pipe.close()

    def finish(self, deadline: float, should_stop: Callable[[], bool]) -> list[Path]:
        for pipe in self.pipes:
            pipe.close()
        for pipe in self.pipes:
            pipe.ffmpeg.wait(deadline, should_stop)
        return [pipe.output for pipe in self.pipes]

    def kill(self) -> None:
        for pipe in self.pipes:
            pipe.ffmpeg.kill()


class SegmentEncode:
    """One image's motion-interpolated video in segments: each one starts once the frames it
    reads are stored in ``folder``, at most ``at_once`` at a time; the last one at the end."""

    def __init__(self, commands: list[tuple[int | None, list[str], Path]], *, folder: Path, at_once: int) -> None:
        """``commands``: (kept steps it reads, None: all of them; ffmpeg command; output), in order."""
        self.pending = list(commands)
        self.folder = folder
        self.at_once = max(1, at_once)
        self.running: list[Ffmpeg] = []
        self.outputs = [output for _, _, output in commands]
        self.fed = 0  # frames written (kept steps only), in order

    def feed(self, data: bytes, *, index: int, ext: str) -> None:
        """Write frame ``index`` (from 1, skipped steps counted) whole before ffmpeg may see it."""
        path = sequence_path(self.folder, index, ext)
        part = path.with_name(f".{path.name}.part")
        part.write_bytes(data)
        os.replace(part, path)
        self.fed += 1
        self.start_ready(final=False)

    def start_ready(self, *, final: bool) -> None:
        self.running = [proc for proc in self.running if not proc.done()]
        while self.pending and len(self.running) < self.at_once:
            needs, command, _ = self.pending[0]
            if not final and (needs is None or needs > self.fed):
                return
            self.pending.pop(0)
            self.running.append(Ffmpeg(command))

    def finish(self, deadline: float, should_stop: Callable[[], bool]) -> list[Path]:
        while self.pending or self.running:
            self.start_ready(final=True)
            check(deadline, should_stop)
            time.sleep(0.01)
        return self.outputs

    def kill(self) -> None:
        for proc in self.running:
            proc.kill()


Encode = PipeEncode | SegmentEncode


@dataclass(frozen=True)
class StreamPlan:
    """What the stream of a job makes, known when its render starts."""

    total: int  # steps the render will store
    skip: int
    timeline: Timeline
    options: AnimationOptions

    @classmethod
    def of(cls, job: Job) -> StreamPlan:
        options = job.request.animation
        total = job.request.denoising_steps()
        return cls(total, options.skip_steps, timeline_for(options, kept_frames(total, options.skip_steps)), options)


def start_encode(plan: StreamPlan, *, folder: Path, ffmpeg: str, at_once: int) -> Encode:
    """The encode of one image: its ffmpeg commands, all without metadata (the join adds it)."""
    folder.mkdir(parents=True)
    ext = CODECS[plan.options.codec].ext
    common = {
        "ffmpeg": ffmpeg,
        "start_number": plan.skip + 1,
        "timeline": plan.timeline,
        "codec": plan.options.codec,
        "interpolation": plan.options.interpolation,
        "metadata": {},
    }
    parts = cut_for(plan.options, plan.timeline, at_once)  # as post hoc: the same video
    piped = plan.options.interpolation != Interpolation.mci
    if len(parts) < 2:
        output = folder / f"stream.{ext}"
        pattern = None if piped else folder / "%05d.png"
        whole = build_args(pattern=pattern, output=output, bare=True, **common)  # type: ignore[arg-type]
        if piped:
            return PipeEncode([Pipe(Ffmpeg(whole, stdin=True), output)])
        return SegmentEncode([(None, whole, output)], folder=folder, at_once=at_once)
    if piped:
        pipes = []
        for j, part in enumerate(parts):
            output = folder / f"segment-{j}.{ext}"
            command = build_args(pattern=None, output=output, segment=part, **common)  # type: ignore[arg-type]
            pipes.append(Pipe(Ffmpeg(command, stdin=True), output, first=part.first_step, end=part.end_step))
        return PipeEncode(pipes)
    commands: list[tuple[int | None, list[str], Path]] = []
    for j, part in enumerate(parts):
        output = folder / f"segment-{j}.{ext}"
        command = build_args(pattern=folder / "%05d.png", output=output, segment=part, **common)  # type: ignore[arg-type]
        commands.append((part.end_step, command, output))
    return SegmentEncode(commands, folder=folder, at_once=at_once)


@dataclass(frozen=True)
class Streamed:
    videos: list[VideoInfo]  # one per image of the batch, in order
    tail_seconds: float  # from the render's end (seen in the job's events) to the uploads
    tail: dict[str, float]  # where the tail went: seconds per stage, for the log

    def describe(self) -> str:
        return ", ".join(f"{stage} {seconds:.3f}s" for stage, seconds in self.tail.items())


class Stages:
    """Seconds spent per stage of the tail, in the order the stages end."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.mark = time.monotonic()

    def done(self, stage: str) -> None:
        now = time.monotonic()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self.mark
        self.mark = now


def stream_job(job: Job, svc: Services, *, lost: Callable[[], bool]) -> Streamed:
    """Every image's video of ``job``, encoded as its frames are stored; uploaded once checked.

    ``lost()`` says the stream's lease was lost. Raises :class:`Abandon`, :class:`Stopped`,
    or what storage raises (``StorageError``), the task's to handle.
    """
    plan = StreamPlan.of(job)
    settings = svc.settings
    deadline = time.monotonic() + settings.task_time_limit_seconds
    ffmpeg = find_binary("ffmpeg", settings.ffmpeg_path)
    ffprobe = find_binary("ffprobe", settings.ffprobe_path)
    with tempfile.TemporaryDirectory(prefix=f"stream-{job.id[:8]}-") as tmp, contextlib.ExitStack() as stack:
        encodes: list[Encode] = []
        standbys: list[Standby] = []
        for index in range(job.request.batch_size):
            folder = Path(tmp) / f"image-{index}"
            encode = start_encode(plan, folder=folder, ffmpeg=ffmpeg, at_once=parallelism(svc))
            stack.callback(encode.kill)
            encodes.append(encode)
            standby = Standby(folder, plan.options.codec, ffmpeg=ffmpeg, ffprobe=ffprobe)
            stack.callback(standby.kill)
            standbys.append(standby)
        followed = Followed()
        after, fed = "0-0", 0
        while not followed.rendered:
            if lost():
                raise Stopped("the stream's lease was lost")
            if time.monotonic() > deadline:
                raise Abandon("the render outlasted the stream's deadline")
            for event_id, event in svc.store.wait_events(job.id, after, block_ms=WAIT_MS):
                after = event_id
                followed.see(event)
            if followed.restarted:
                raise Abandon("the render started again; its frames are encoded once it is done")
            if followed.ended:
                raise Stopped(f"the job is {followed.status}")
            fed = feed(svc, plan, encodes, followed.steps, fed)
        rendered_at = time.monotonic()
        stages = Stages()
        job = svc.store.get(job.id)  # the frames the render stored, as the record lists them
        stored = [list(step) for step in zip(*(image.frames for image in job.images), strict=True)]
        if len(job.images) != len(encodes) or len(stored) != plan.total or stored[:fed] != followed.steps[:fed]:
            raise Abandon(f"the render stored {len(stored)} steps of the {plan.total} planned")
        feed(svc, plan, encodes, stored, fed)
        manifest = Manifest.load(svc.storage, job.id)
        stages.done("last frames")
        # From here a cancel ends the job at once (the API's): stop ffmpeg then. The cancel of a render
        # that hands its partial frames on was cleared before the job became encoding (worker.tasks).
        with CancelWatch(svc.store, job.id) as cancel:
            try:
                parts = [encode.finish(deadline, lambda: cancel.is_set() or lost()) for encode in encodes]
            except FfmpegError as e:
                raise Abandon(str(e)) from e
        stages.done("flush")
        videos = [
            publish(job, svc, plan, manifest, image_index=index, parts=files, standby=standby, stages=stages)
            for index, (files, standby) in enumerate(zip(parts, standbys, strict=True))
        ]
        return Streamed(videos=videos, tail_seconds=time.monotonic() - rendered_at, tail=stages.seconds)


def feed(svc: Services, plan: StreamPlan, encodes: list[Encode], steps: list[list[str]], fed: int) -> int:
    """Hand steps ``fed + 1``.. of ``steps`` to the encodes (the skipped ones to none); returns the new count."""
    for n in range(fed, len(steps)):
        if n < plan.skip:
            continue
        for encode, key in zip(encodes, steps[n], strict=True):
            data = svc.storage.get_bytes(key)
            try:
                if isinstance(encode, PipeEncode):
                    encode.feed(data, kept=n - plan.skip)
                else:
                    encode.feed(data, index=n + 1, ext="png")
            except FfmpegError as e:
                raise Abandon(str(e)) from e
    return len(steps)


def publish(
    job: Job,
    svc: Services,
    plan: StreamPlan,
    manifest: Manifest,
    *,
    image_index: int,
    parts: list[Path],
    standby: Standby,
    stages: Stages,
) -> VideoInfo:
    """Join one image's parts into its video with the metadata, check it with ffprobe, upload it."""
    image = job.images[image_index]
    spec = CODECS[plan.options.codec]
    params = metadata(metadata_params(manifest, image, plan.options))
    deadline = time.monotonic() + 120
    try:
        output = standby.join(parts, params, deadline)
        stages.done("join")
        result = standby.probe(deadline)
        verify(result, plan.options.codec, plan.timeline)
        stages.done("probe")
    except FfmpegError as e:
        raise Abandon(str(e)) from e
    name = video_name(seed=image.seed, prompt=job.request.prompt, ext=spec.ext)
    key = video_key(job.id, name)
    svc.storage.put_file(key, output, spec.content_type)
    stages.done("upload")
    return VideoInfo(
        key=key,
        filename=name,
        content_type=spec.content_type,
        codec=plan.options.codec,
        size_bytes=output.stat().st_size,
        duration=result.duration,
        frames=result.frames,
    )
