"""``make serve``: the whole service on http://127.0.0.1:8000 until Ctrl-C.

Redis, the API and the render, encode and notify workers run as child processes; Ctrl-C
(or SIGTERM) stops every one of them. A process that exits unexpectedly is started again
(after 1, 2, 4, 8 and 16 seconds; it is left stopped after five quick exits in a row), so a
crashed worker does not take the API down with it; in production compose's restart policy
does this (docker-compose.yml). Storage is local, under data/serve; Redis keeps an
append-only file there, so jobs survive a restart of ``make serve``.
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from scripts.devstack import ROOT, Stack, demo_models

BACKOFF = (1, 2, 4, 8, 16)  # seconds before each restart of a process that keeps exiting
STABLE_SECONDS = 60.0  # a process that ran this long starts afresh with the first delay


@dataclass
class Restarts:
    """When a process that exited should be started again, and whether to give up."""

    count: int = 0
    due: float | None = None  # monotonic time of the next start
    started: float = 0.0

    def exited(self, now: float) -> float | None:
        """A delay before the next start, or None: too many quick exits, leave it stopped."""
        if now - self.started >= STABLE_SECONDS:
            self.count = 0
        if self.count >= len(BACKOFF):
            return None
        delay = BACKOFF[self.count]
        self.count += 1
        self.due = now + delay
        return delay


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "serve")
    parser.add_argument(
        "--allow-webhooks-to",
        action="append",
        default=[],
        metavar="HOST",
        help="let webhooks (and init image URLs) reach HOST although it is not public, e.g. 127.0.0.1 for a "
        "receiver on this machine (sets STEPANIM_OUTBOUND_ALLOW); repeat for several",
    )
    args = parser.parse_args()
    settings = {
        "STEPANIM_STORAGE_BACKEND": "local",
        "STEPANIM_LOCAL_STORAGE_DIR": str(args.data / "storage"),
        "STEPANIM_MODELS_DIR": str(demo_models()),  # emoji (the default), digits and tiny-sd
        "STEPANIM_DEFAULT_MODEL": "emoji",
        "STEPANIM_ALLOW_ANONYMOUS": "true",  # development mode: no API key needed
    }
    if args.allow_webhooks_to:
        settings["STEPANIM_OUTBOUND_ALLOW"] = json.dumps(args.allow_webhooks_to)
    stack = Stack(workdir=args.data, settings=settings, api_port=args.port)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)  # also when started with SIGINT ignored (a background job of a script)
    try:
        stack.start_redis(appendonly=True)  # history survives a restart of make serve
        stack.start_api()
        for role in ("render", "encode", "stream", "notify"):
            stack.start_worker(role)
        stack.start_reconciler()
        print(
            f"serving on {stack.api_url}  (docs: {stack.api_url}/docs, logs: {args.data / 'logs'}); Ctrl-C stops",
            flush=True,
        )
        supervise(stack)
    except KeyboardInterrupt:
        print("stopping ...", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
    return 0


def supervise(stack: Stack) -> None:
    """Start again every process that exits, with backoff, until Ctrl-C."""
    now = time.monotonic()
    restarts = {name: Restarts(started=now) for name in stack.procs}
    given_up: set[str] = set()
    while True:
        now = time.monotonic()
        for name, proc in list(stack.procs.items()):
            state = restarts[name]
            if name in given_up or proc.popen.poll() is None:
                continue
            if state.due is None:
                delay = state.exited(now)
                if delay is None:
                    given_up.add(name)
                    print(
                        f"{name} exited {len(BACKOFF)} times in a row; leaving it stopped (see {proc.log})", flush=True
                    )
                    continue
                print(
                    f"{name} exited with {proc.popen.returncode}; restarting in {delay} s (see {proc.log})", flush=True
                )
            elif now >= state.due:
                stack.restart(name)
                state.due, state.started = None, time.monotonic()
                print(f"{name} restarted", flush=True)
        time.sleep(0.5)


if __name__ == "__main__":
    raise SystemExit(main())
