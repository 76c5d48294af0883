"""Start the whole service as local processes: a private redis-server, the API, the
render, encode, stream and notify workers, and the reconciler. Used by ``make demo``, ``make serve`` and the tests,
so all three run the service the same way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent

WORKERS = {
    "render": ("worker.app", "render"),
    "encode": ("encoder.app", "encode"),
    "stream": ("encoder.app", "stream"),  # encodes that follow renders (encoder.stream): mostly waiting
    "notify": ("notify.app", "notify"),
}
# A stream waits for frames most of its life: threads, so that waiting streams hold no process
# (and no CPU slot of the encode queue); several per render worker (docs/scaling.md).
POOL_ARGS = {"stream": ["--pool", "threads"]}
DEFAULT_CONCURRENCY = {"stream": 4}


# Development mode with the per-key limits lifted: for fault tests and benchmarks that
# send many jobs without an API key (the rate limits and job quota would refuse them).
UNLIMITED_DEV_SETTINGS = {
    "STEPANIM_ALLOW_ANONYMOUS": "true",
    "STEPANIM_MAX_ACTIVE_JOBS": "1000000",
    "STEPANIM_RATE_LIMIT_PER_MINUTE": "1000000",
    "STEPANIM_CREATE_RATE_LIMIT_PER_MINUTE": "1000000",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.popen.returncode}; see {proc.log}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s" + (f"; see {proc.log}" if proc else ""))


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 15) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()


def spawn(name: str, args: list[str], *, env: dict[str, str], log_dir: Path) -> Proc:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() reaches Celery's children too
        )
    return Proc(name, popen, log)


@dataclass
class Stack:
    """A running service; ``settings`` are the STEPANIM_* variables every process got."""

    workdir: Path
    settings: dict[str, str]
    api_port: int = 0
    redis_port: int = 0
    procs: dict[str, Proc] = field(default_factory=dict)
    redis_appendonly: bool = False

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.settings)
        env["PYTHONPATH"] = str(ROOT)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def start_redis(self, *, appendonly: bool = False) -> None:
        self.redis_appendonly = appendonly
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found; install it (apt-get install redis-server)")
        self.redis_port = self.redis_port or free_port()
        data = self.workdir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        args = [
            binary,
            "--port",
            str(self.redis_port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--save",
            "",
            "--appendonly",
            "yes" if appendonly else "no",
            "--appendfsync",
            "everysec",
        ]
        self.procs["redis"] = proc = spawn("redis", args, env=self.env(), log_dir=self.workdir / "logs")
        client = redis.Redis(port=self.redis_port)
        wait_until(lambda: bool(client.ping()), timeout=20, what="redis-server", proc=proc)
        self.settings["STEPANIM_REDIS_URL"] = self.redis_url

    def start_api(self, *, env: dict[str, str] | None = None) -> None:
        """The API on ``api_port`` (a free one the first time); ``env``: more settings for it alone."""
        self.api_port = self.api_port or free_port()
        self.settings.setdefault("STEPANIM_PUBLIC_BASE_URL", self.api_url)
        args = [
            sys.executable,
            "-m",
            "uvicorn",
            "api.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.api_port),
            "--log-level",
            "warning",
            "--timeout-graceful-shutdown",
            "10",
            "--no-access-log",  # the app writes its own (api.routes.metrics.AccessLog)
        ]
        self.procs["api"] = proc = spawn("api", args, env={**self.env(), **(env or {})}, log_dir=self.workdir / "logs")
        wait_until(
            lambda: httpx.get(f"{self.api_url}/healthz", timeout=1).status_code == 200,
            timeout=60,
            what="api",
            proc=proc,
        )

    def start_worker(
        self, role: str, *, concurrency: int | None = None, env: dict[str, str] | None = None, app: str | None = None
    ) -> Proc:
        """A Celery worker of ``role``; ``app`` replaces its Celery app module (benchmarks)."""
        module, queue = WORKERS[role]
        module = app or module
        concurrency = concurrency or DEFAULT_CONCURRENCY.get(role, 1)
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            module,
            "worker",
            "-Q",
            queue,
            "-c",
            str(concurrency),
            *POOL_ARGS.get(role, []),
            "-n",
            f"{role}-{os.getpid()}-{len(self.procs)}@%h",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
        ]
        proc = spawn(role, args, env={**self.env(), **(env or {})}, log_dir=self.workdir / "logs")
        self.procs[role] = proc
        return proc

    def start_reconciler(self) -> Proc:
        """The loop that re-enqueues jobs whose worker was lost (stepanim/reconcile.py)."""
        proc = spawn(
            "reconciler", [sys.executable, "-m", "stepanim.reconcile"], env=self.env(), log_dir=self.workdir / "logs"
        )
        self.procs["reconciler"] = proc
        return proc

    def restart_redis(self, *, kill: bool = True) -> None:
        """Stop redis-server (``kill -9`` by default) and start it again on the same port and data."""
        old = self.procs["redis"]
        if kill:
            old.kill()
        else:
            old.stop()
        self.start_redis(appendonly=self.redis_appendonly)

    def start(self) -> Stack:
        self.start_redis()
        self.start_api()
        for role in WORKERS:
            self.start_worker(role)
        self.start_reconciler()
        return self

    def restart(self, name: str) -> Proc:
        """Start process ``name`` (as it was started: a worker role, ``api``, ``redis`` or
        ``reconciler``) again, after it exited."""
        self.procs[name].stop()
        if name == "redis":
            self.start_redis(appendonly=self.redis_appendonly)
        elif name == "api":
            self.start_api()
        elif name == "reconciler":
            self.start_reconciler()
        else:
            self.start_worker(name)
        return self.procs[name]

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()


def demo_models(models_dir: Path = ROOT / ".cache" / "models") -> Path:
    """The models folder of ``make demo`` and ``make serve``: the committed models (``models/emoji``
    and ``models/digits``, linked) and the random-weight ``tiny-sd`` (built on first use)."""
    from worker.tiny_model import build_tiny_model  # torch: only where the demo runs

    build_tiny_model(models_dir / "tiny-sd")
    for name in ("emoji", "digits"):
        link = models_dir / name
        if not link.is_symlink() and not link.exists() and (ROOT / "models" / name).is_dir():
            link.symlink_to(ROOT / "models" / name, target_is_directory=True)
    return models_dir


@contextlib.contextmanager
def running(workdir: Path, settings: dict[str, str]) -> Iterator[Stack]:
    stack = Stack(workdir=workdir, settings=dict(settings))
    try:
        yield stack.start()
    finally:
        stack.stop()
