from datetime import UTC, datetime

from encoder.capabilities import INTERPOLATION_NEEDS, codec_needs
from stepanim.capabilities import Capabilities, parse_encoders, parse_filters, supported, unsupported
from stepanim.video_options import Codec, Interpolation, VideoOptions

ENCODERS = """Encoders:
 V..... = Video
 A..... = Audio
 ------
 V....D libx264              libx264 H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10 (codec h264)
 V....D libvpx-vp9           libvpx VP9 (codec vp9)
 VFS... prores_ks            Apple ProRes (iCodec Pro) (codec prores)
 V..... gif                  GIF (Graphics Interchange Format)
 A....D aac                  AAC (Advanced Audio Coding)
"""

FILTERS = """Filters:
  T.. = Timeline support
  ... = Unknown
 ... fps               V->V       Force constant framerate.
 TSC scale             V->V       Scale the input video size and/or convert the image format.
 ... tpad              V->V       Temporarily pad video frames.
 T.. trim              V->V       Pick one continuous section from the input, drop the rest.
 ... setpts            V->V       Set PTS for the output video frame.
 ... split             V->N       Pass on the input to N video outputs.
 ... palettegen        V->V       Find the optimal palette for a given stream.
 ... paletteuse        VV->V      Use a palette to downsample an input video stream.
 ... amix              N->A       Audio mixing.
"""


def test_parsers_read_ffmpeg_listings() -> None:
    assert parse_encoders(ENCODERS) == {"libx264", "libvpx-vp9", "prores_ks", "gif"}
    assert parse_filters(FILTERS) == {
        "fps",
        "scale",
        "tpad",
        "trim",
        "setpts",
        "split",
        "palettegen",
        "paletteuse",
        "amix",
    }


def test_a_build_without_minterpolate_or_x265() -> None:
    encoders, filters = parse_encoders(ENCODERS), parse_filters(FILTERS)
    codecs, missing = supported(codec_needs(), encoders=encoders, filters=filters)
    assert codecs == ["h264", "vp9", "prores", "gif"]
    assert missing == {"h265": "ffmpeg lacks libx265", "av1": "ffmpeg lacks libaom-av1"}
    modes, missing_modes = supported(INTERPOLATION_NEEDS, encoders=encoders, filters=filters)
    assert modes == ["none"]
    assert missing_modes["mci"] == "ffmpeg lacks minterpolate"


def test_unsupported_names_the_field_and_what_is_there() -> None:
    caps = Capabilities(
        ffmpeg="/usr/bin/ffmpeg",
        ffmpeg_version="ffmpeg version 5.1",
        codecs=[Codec.h264, Codec.vp9],
        interpolations=[Interpolation.none],
        probed_at=datetime.now(UTC),
    )
    assert unsupported(VideoOptions(codec=Codec.h264), caps, field="animation") is None
    assert unsupported(VideoOptions(codec=Codec.av1), caps, field="animation") == (
        "animation.codec: av1 is not supported by this server's encoder (supported: h264, vp9)"
    )
    message = unsupported(VideoOptions(interpolation=Interpolation.mci), caps, field="renditions.1")
    assert message == "renditions.1.interpolation: mci is not supported by this server's encoder (supported: none)"
