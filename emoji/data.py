"""The training data: single-code-point emoji drawn by Google's Noto Color Emoji font
(Debian's ``fonts-noto-color-emoji``, SIL Open Font License 1.1), downscaled to 32x32 on
white, each labelled with its Unicode name in several wordings. Pure functions over tensors.
"""

from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

SIZE = 32
FONT_SIZE = 109  # the font's only bitmap size
FONT_CANDIDATES = (
    Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"),
    Path("/usr/share/fonts/noto/NotoColorEmoji.ttf"),
    Path("/usr/share/fonts/google-noto-emoji/NotoColorEmoji.ttf"),
)
RANGES = ((0x1F300, 0x1FAFF), (0x2600, 0x27BF))
# Not pictures of a thing: skin-tone swatches and the tag/keycap helpers.
SKIP_NAME = re.compile(r"^(EMOJI MODIFIER|REGIONAL INDICATOR|VARIATION SELECTOR)")

# Wordings of the training data: {n} the name in lower case, {a} with "a"/"an" in front,
# {r} the head noun first ("an apple, red").
TEMPLATES = ("{n}", "{n}", "{a}", "the {n}", "{r}", "{a} emoji", "emoji of {a}")
# Held out of training, to check that the model generalises over wordings (same words, new order).
UNSEEN_TEMPLATES = ("the {n} emoji", "emoji: {n}", "{r} emoji")
FILLERS = ("a", "an", "the", "emoji", "of")


class FontMissing(RuntimeError):
    pass


def font_path() -> Path:
    for path in FONT_CANDIDATES:
        if path.is_file():
            return path
    raise FontMissing(
        "Noto Color Emoji is not installed: apt-get install fonts-noto-color-emoji (make emoji-font does it)"
    )


@dataclass(frozen=True)
class Emoji:
    char: str
    name: str  # lower case, as prompts use it


def words(text: str) -> list[str]:
    """The words of a prompt, as the API's vocabulary check splits them."""
    return re.findall(r"[^\W\d_]+|\d+", text.lower())


def _name(char: str) -> str:
    return " ".join(words(unicodedata.name(char)))


def _render(font: ImageFont.FreeTypeFont, char: str) -> Image.Image:
    canvas = Image.new("RGBA", (136, 128), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((0, 0), char, font=font, embedded_color=True)
    return canvas


@cache
def catalogue() -> tuple[list[Emoji], torch.Tensor]:
    """Every emoji with a colour glyph, and its image (N, 3, 32, 32) in [-1, 1] on white."""
    font = ImageFont.truetype(str(font_path()), FONT_SIZE)
    missing = np.asarray(_render(font, "\ue000"))  # the font's "no glyph" box
    found: list[Emoji] = []
    images: list[np.ndarray] = []
    seen_names: set[str] = set()
    for lo, hi in RANGES:
        for code in range(lo, hi + 1):
            char = chr(code)
            try:
                name = _name(char)
            except ValueError:
                continue
            if SKIP_NAME.match(unicodedata.name(char)) or name in seen_names:
                continue
            glyph = _render(font, char)
            pixels = np.asarray(glyph)
            alpha = pixels[..., 3]
            if alpha.max() == 0 or np.array_equal(pixels, missing):
                continue
            rgb = pixels[..., :3].astype(np.int16)
            if (np.abs(rgb - rgb.mean(axis=-1, keepdims=True)).max(axis=-1)[alpha > 0] < 8).all():
                continue  # a monochrome fallback, not a colour glyph
            box = glyph.getbbox()
            assert box is not None
            crop = glyph.crop(box)
            side = max(crop.size)
            square = Image.new("RGBA", (side, side), (255, 255, 255, 0))
            square.paste(crop, ((side - crop.width) // 2, (side - crop.height) // 2))
            white = Image.new("RGBA", (side, side), (255, 255, 255, 255))
            small = (
                Image.alpha_composite(white, square)
                .convert("RGB")
                .resize((SIZE - 2, SIZE - 2), Image.Resampling.LANCZOS)
            )
            framed = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
            framed.paste(small, (1, 1))
            found.append(Emoji(char, name))
            images.append(np.asarray(framed))
            seen_names.add(name)
    array = torch.tensor(np.stack(images), dtype=torch.float32).permute(0, 3, 1, 2) / 127.5 - 1
    return found, array


def article(name: str) -> str:
    return ("an " if name[0] in "aeiou" else "a ") + name


def reordered(name: str) -> str:
    """'red apple' -> 'an apple, red'; one-word names stay as they are (with an article)."""
    parts = name.split()
    if len(parts) == 1:
        return article(name)
    return f"{article(parts[-1])}, {' '.join(parts[:-1])}"


def prompt_for(name: str, rng: random.Random, templates: tuple[str, ...] = TEMPLATES) -> str:
    return rng.choice(templates).format(n=name, a=article(name), r=reordered(name))


def vocabulary(names: list[str]) -> list[str]:
    """Every word of every training wording."""
    found = set(FILLERS)
    for name in names:
        found.update(words(name))
    return sorted(found)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8."""
    return ((images.permute(0, 2, 3, 1) + 1) * 127.5).clamp(0, 255).round().to(torch.uint8).numpy()


# Names of symbols rather than things, or of near-identical glyphs (24 clock faces, arrows, keycaps).
NOT_A_THING = re.compile(r"\b(clock|arrow|arrows|symbol|sign|ornament|mark|squared|button|keycap|input|tone)\b")


def features(images: np.ndarray) -> np.ndarray:
    """RGB uint8 frames (N, 32, 32, 3) -> the space where glyphs are compared: 16x16 RGB (a 2x2 box
    blur), flattened, in [0, 1]. Glyphs are drawn at one place and scale, so pixel distance after a
    small blur is a faithful likeness (a fine shift or a little noise costs little); colour counts."""
    x = torch.tensor(images, dtype=torch.float32).permute(0, 3, 1, 2) / 255.0
    return torch.nn.functional.avg_pool2d(x, 2).flatten(1).numpy()


# Emoji a newcomer is likely to ask for, kept ahead of the rest.
FAVOURITES = (
    "cat face",
    "dog face",
    "slice of pizza",
    "ghost",
    "fire",
    "red apple",
    "rocket",
    "rainbow",
    "sunflower",
    "snowman",
    "octopus",
    "tiger face",
    "frog face",
    "bear face",
    "panda face",
    "jack o lantern",
    "cactus",
    "volcano",
    "four leaf clover",
    "tulip",
    "unicorn face",
    "hamburger",
    "penguin",
    "birthday cake",
    "christmas tree",
    "banana",
    "strawberry",
    "watermelon",
    "bird",
    "fish",
    "crab",
    "snail",
    "mushroom",
    "house building",
    "automobile",
    "bicycle",
    "airplane",
    "sailboat",
    "umbrella",
    "crown",
    "gem stone",
    "heavy black heart",
    "blue heart",
    "green heart",
    "pile of poo",
    "alien",
    "robot face",
)


def subset(count: int) -> list[int]:
    """The indices (into :func:`catalogue`) of the demo model's emoji: things (not symbols) with
    names of at most three words, the :data:`FAVOURITES` first, then shorter names first, none too
    like one already kept (distance in :func:`features`), at most ``count``. Deterministic."""
    emoji, images = catalogue()
    feats = features(to_uint8(images))
    favourite = {name: rank for rank, name in enumerate(FAVOURITES)}
    candidates = [i for i, e in enumerate(emoji) if len(e.name.split()) <= 5 and not NOT_A_THING.search(e.name)] + [
        i for i, e in enumerate(emoji) if e.name in favourite and NOT_A_THING.search(e.name)
    ]
    order = sorted(
        candidates, key=lambda i: (favourite.get(emoji[i].name, len(favourite)), len(emoji[i].name.split()), i)
    )
    kept: list[int] = []
    for i in order:
        if len(kept) == count:
            break
        if kept and np.sqrt(((feats[kept] - feats[i]) ** 2).sum(axis=1)).min() < 4.0:
            continue
        kept.append(i)
    return sorted(kept)
