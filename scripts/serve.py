"""``make serve``: the whole service on http://127.0.0.1:8000 until Ctrl-C.

Redis, the API and the render, encode and notify workers run as child processes;
Ctrl-C (or SIGTERM) stops every one of them. Storage is local, under data/serve.
"""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path
from types import FrameType

from stepanim.devstack import ROOT, Stack, demo_models


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "serve")
    args = parser.parse_args()
    settings = {
        "STEPANIM_STORAGE_BACKEND": "local",
        "STEPANIM_LOCAL_STORAGE_DIR": str(args.data / "storage"),
        "STEPANIM_MODELS_DIR": str(demo_models()),  # digits (the default) and tiny-sd
        "STEPANIM_DEFAULT_MODEL": "digits",
        "STEPANIM_ALLOW_ANONYMOUS": "true",  # development mode: no API key needed
    }
    stack = Stack(workdir=args.data, settings=settings, api_port=args.port)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)  # also when started with SIGINT ignored (a background job of a script)
    try:
        stack.start()
        print(
            f"serving on {stack.api_url}  (docs: {stack.api_url}/docs, logs: {args.data / 'logs'}); Ctrl-C stops",
            flush=True,
        )
        while True:
            for proc in stack.procs.values():
                if proc.popen.poll() is not None:
                    print(f"{proc.name} exited with {proc.popen.returncode}; see {proc.log}", flush=True)
                    return 1
            time.sleep(1)
    except KeyboardInterrupt:
        print("stopping ...", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()


if __name__ == "__main__":
    raise SystemExit(main())
