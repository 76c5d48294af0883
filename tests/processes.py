"""Looking at the process tree from a test (Linux /proc)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _table() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, state, command name) of every process."""
    table: dict[int, tuple[int, str, str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                head, rest = (entry / "stat").read_text().rsplit(")", 1)
            except OSError:
                continue
            fields = rest.split()
            table[int(entry.name)] = (int(fields[1]), fields[0], head.split("(", 1)[1])
    return table


def descendants(pid: int, *, named: str | None = None) -> set[int]:
    """Every live process below ``pid`` (zombies are gone already: they only wait for their
    parent), or only those whose command name is ``named``."""
    table = {p: row for p, row in _table().items() if row[1] != "Z"}
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, (parent, _, _) in table.items() if parent in frontier} - found
        found |= frontier
    return {p for p in found if named is None or table[p][2] == named}


def parents(pids: set[int]) -> dict[int, int]:
    """pid -> parent pid of those of ``pids`` still running (one may end while it is asked)."""
    table = _table()
    return {pid: table[pid][0] for pid in pids if pid in table and table[pid][1] != "Z"}


def named(name: str) -> set[int]:
    """Every live process whose command name is ``name``, wherever it is in the tree."""
    return {pid for pid, (_, state, command) in _table().items() if command == name and state != "Z"}


def command_line(pid: int) -> str:
    """The process's arguments joined by spaces; "" once it has ended."""
    try:
        return (Path(f"/proc/{pid}") / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def is_running(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start_serve(data: Path, port: int, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    """``make serve`` (``scripts/serve.py``) on ``port`` with its data under ``data``, in a process
    group of its own as a terminal's foreground job; its output goes to ``data/serve.out``."""
    data.mkdir(parents=True, exist_ok=True)
    log = data / "serve.out"
    with log.open("w") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "scripts.serve", "--port", str(port), "--data", str(data / "data"), *extra],
            cwd=Path(__file__).resolve().parents[1],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return serve, log
