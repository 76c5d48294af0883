from pathlib import Path
from typing import Any

import pytest

from encoder.encode import metadata, timeline_for
from encoder.ffmpeg import CODECS, FfmpegError, build_args, find_binary, video_filter
from encoder.timing import Segment, Timeline, plan
from stepanim.video_options import Codec, Interpolation, VideoOptions


def args_for(
    codec: Codec = Codec.h264,
    interpolation: Interpolation = Interpolation.none,
    *,
    timeline: Timeline | None = None,
    output: str = "/o/out.mp4",
    start_number: int = 4,
    segment: Segment | None = None,
    **meta: str,
) -> list[str]:
    return build_args(
        ffmpeg="ffmpeg",
        pattern=Path("/f/%05d.png"),
        start_number=start_number,
        output=Path(output),
        timeline=timeline or plan(20, duration=5, fps=30, hold_last=1),
        codec=codec,
        interpolation=interpolation,
        metadata=meta,
        segment=segment,
    )


def value_after(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_h264_uses_the_extension_defaults() -> None:
    args = args_for()
    assert value_after(args, "-c:v") == "libx264"
    assert value_after(args, "-preset") == "medium"
    assert value_after(args, "-crf") == "23"
    assert value_after(args, "-pix_fmt") == "yuv420p"


def test_timing_flags() -> None:
    args = args_for()
    assert value_after(args, "-framerate") == "4/1"
    assert value_after(args, "-start_number") == "4"
    assert value_after(args, "-frames:v") == "180"  # (5 s + 1 s hold) * 30 fps
    assert value_after(args, "-fps_mode") == "cfr"


@pytest.mark.parametrize(
    ("codec", "encoder", "flag", "value"),
    [
        (Codec.h265, "libx265", "-tag:v", "hvc1"),
        (Codec.vp9, "libvpx-vp9", "-deadline", "realtime"),
        (Codec.av1, "libaom-av1", "-usage", "realtime"),
        (Codec.prores, "prores_ks", "-profile:v", "3"),
    ],
)
def test_codec_table(codec: Codec, encoder: str, flag: str, value: str) -> None:
    args = args_for(codec)
    assert value_after(args, "-c:v") == encoder
    assert value_after(args, flag) == value


def test_gif_uses_a_palette_and_no_encoder_flag() -> None:
    timeline = timeline_for(VideoOptions(codec=Codec.gif, duration=5, hold_last=1), 20)
    assert timeline.fps == 10
    args = args_for(Codec.gif, Interpolation.mci, timeline=timeline, output="/o/out.gif", start_number=1)
    graph = value_after(args, "-filter_complex")
    assert "palettegen" in graph and "paletteuse" in graph
    assert "-c:v" not in args
    assert value_after(args, "-frames:v") == "60"  # 6 s at 10 fps


@pytest.mark.parametrize("interpolation", list(Interpolation))
def test_no_fifo_filter_and_padded_tail(interpolation: Interpolation) -> None:
    chain = video_filter(plan(20, duration=5, fps=30), interpolation)
    assert "fifo" not in chain
    assert "tpad=stop_mode=clone" in chain
    if interpolation != Interpolation.none:
        assert f"mi_mode={'blend' if interpolation == Interpolation.blend else 'mci'}" in chain


def test_metadata_is_passed_as_single_arguments() -> None:
    prompt = 'say "hi"; rm -rf / \n $(whoami) ✨'
    args = args_for(title=prompt)
    assert f"title={prompt}" in args  # one argv element: no shell ever sees it


def test_metadata_fields() -> None:
    meta = metadata({"prompt": "a cat", "model": "m", "steps": 5, "scheduler": "ddim", "seed": 3})
    assert meta["title"].startswith("a cat | m | 5 steps | ddim | seed 3")
    assert '"prompt": "a cat"' in meta["description"]
    assert meta["artist"]


def test_every_codec_has_a_spec() -> None:
    assert set(CODECS) == set(Codec)


def test_missing_binary_names_what_was_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(FfmpegError, match="ffprobe not found; tried setting '/nope' \\(no such file\\), PATH"):
        find_binary("ffprobe", "/nope")


def test_segments_keep_their_frames_and_the_join_adds_metadata() -> None:
    from encoder.ffmpeg import concat_args
    from encoder.timing import segments

    timeline = plan(100, duration=30, fps=30, hold_last=1)
    first, last = segments(timeline, 2)
    args = args_for(
        Codec.h265,
        Interpolation.mci,
        timeline=timeline,
        output="/o/segment-0.mp4",
        start_number=1,
        segment=first,
        title="t",
    )
    chain = value_after(args, "-vf")
    assert f"trim=end_frame={first.end_step}" in chain and "setpts=PTS+" not in chain
    assert f"trim=start_pts=0:end_pts={first.end},setpts=PTS-STARTPTS" in chain
    assert value_after(args, "-frames:v") == str(first.end - first.start)
    assert "-metadata" not in args and "-movflags" not in args
    join = concat_args(
        ffmpeg="ffmpeg", listing=Path("/o/list"), output=Path("/o/out.mp4"), codec=Codec.h265, metadata={"title": "t"}
    )
    assert value_after(join, "-c") == "copy"
    assert value_after(join, "-tag:v") == "hvc1"
    assert value_after(join, "-metadata") == "title=t"
    assert value_after(join, "-movflags") == "+faststart"
    assert last.end == 930 and last.end_step is None


def test_interpolation_asks_minterpolate_for_the_output_rate() -> None:
    chain = video_filter(plan(20, duration=5, fps=24), Interpolation.mci)
    assert "minterpolate=fps=24:mi_mode=mci" in chain


def test_a_segment_reads_from_its_first_step_moved_to_where_it_stands() -> None:
    from encoder.timing import tail_split

    timeline = plan(30, duration=3, fps=30)  # 10 steps a second
    body, tail = tail_split(timeline, "blend")
    assert tail.first_step == 23
    common: dict[str, Any] = {
        "ffmpeg": "ffmpeg",
        "output": Path("/o/s.mp4"),
        "timeline": timeline,
        "codec": Codec.h264,
        "interpolation": Interpolation.blend,
        "metadata": {},
        "segment": tail,
    }
    files = build_args(pattern=Path("/f/%05d.png"), start_number=3, **common)
    assert value_after(files, "-start_number") == "26"  # two skipped steps, then the tail's first
    chain = value_after(files, "-vf")
    assert chain.startswith("setpts=PTS+23/(10*TB),")  # step 23 stands at 2.3 s
    assert "trim=end_frame" not in chain  # the last segment reads to the end
    assert f"trim=start_pts={tail.start}:end_pts={tail.end}" in chain
    piped = build_args(pattern=None, **common)
    assert value_after(piped, "-vf") == chain and "-start_number" not in piped  # a stream pipes the same steps
    body_chain = video_filter(timeline, Interpolation.blend, body)
    assert not body_chain.startswith("setpts") and f"trim=end_frame={body.end_step}" in body_chain
