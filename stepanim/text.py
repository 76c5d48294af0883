"""The one rule for text a client sends that ends up in files, videos and headers. Pure.

A prompt travels far: into ffmpeg's ``-metadata`` arguments (the operating system refuses a
NUL in an argument), into frame, video and zip entry names, into the JSON of the job
record and of webhooks, into ``Content-Disposition`` headers. What none of them can carry
is refused when the job is created (422 naming the field), never found out after the GPU
time is spent:

- NUL and the other C0 and C1 control characters, except tab, line feed and carriage
  return (a prompt may have several lines);
- lone surrogates (U+D800-U+DFFF): half of a UTF-16 pair, which no UTF-8 file name,
  header or JSON document can hold.

Everything else is carried as sent: emoji, right-to-left text, combining marks. Where a
character is only cosmetic it is removed later, not refused: file names fold white space and
drop characters a file system cannot hold (``stepanim.naming.safe_prompt``).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator

_UNCARRIED = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def describe(char: str) -> str:
    """``U+0000 (NULL)``: a code point and its name, for error messages."""
    code = f"U+{ord(char):04X}"
    name = unicodedata.name(char, "")
    if not name and 0xD800 <= ord(char) <= 0xDFFF:
        name = "a lone surrogate"
    elif not name:
        name = "a control character"
    return f"{code} ({name})"


def check_text(value: str) -> str:
    """``value`` if every character can be carried (see the module docstring), else ValueError."""
    found = _UNCARRIED.search(value)
    if found is not None:
        raise ValueError(
            f"{describe(found.group())} at position {found.start()} cannot be carried into file names, video "
            "metadata or headers: control characters other than tab and newline, and lone surrogates, are refused"
        )
    return value


# A request field of free text: refused (422 naming the field) when it holds what cannot be carried.
Text = Annotated[str, AfterValidator(check_text)]
