import pytest

from stepanim.naming import (
    PROMPT_CHARS,
    check_job_id,
    frame_key,
    frame_name,
    safe_prompt,
    video_key,
    video_name,
)

JOB = "0123456789abcdef0123456789abcdef"


def test_frame_name_follows_the_extension_scheme() -> None:
    name = frame_name(batch_count=0, batch_index=1, step=7, seed=1234, prompt="a cat")
    assert name == "0001007-1234-a cat.png"


def test_video_name() -> None:
    assert video_name(seed=99, prompt="a cat", ext="mp4") == "99-a cat.mp4"


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ('a "quoted" prompt', "a quoted prompt"),
        ("slashes/and\\backslashes", "slashesandbackslashes"),
        ("line one\nline two\r\n\tend", "line one line two end"),
        ("wild*cards?<and>pipes|:", "wildcardsandpipes"),
        ("café ✨ 東京", "café ✨ 東京"),
        ("../../etc/passwd", "etcpasswd"),
        ("   ", "untitled"),
        ("...", "untitled"),
        ("a\x00b\x07c", "abc"),
    ],
)
def test_safe_prompt(prompt: str, expected: str) -> None:
    assert safe_prompt(prompt) == expected


def test_prompt_cut_to_96_characters() -> None:
    assert len(safe_prompt("x" * 500)) == PROMPT_CHARS


def test_prompt_cut_to_fit_file_name_bytes() -> None:
    text = safe_prompt("東" * 96)
    assert len(text.encode()) <= 200
    name = frame_name(batch_count=0, batch_index=0, step=999, seed=2**32 - 1, prompt="😀" * 96)
    assert len(name.encode()) <= 255


def test_no_separator_survives() -> None:
    assert "/" not in safe_prompt("a/b/../c")


def test_keys_are_per_job_and_deterministic() -> None:
    assert frame_key(JOB, "x.png") == f"jobs/{JOB}/frames/x.png"
    assert video_key(JOB, "1-a.mp4") == f"jobs/{JOB}/videos/1-a.mp4"


@pytest.mark.parametrize("bad", ["", "../x", "ABC", JOB + "0", "*"])
def test_job_ids_are_checked(bad: str) -> None:
    with pytest.raises(ValueError):
        check_job_id(bad)
