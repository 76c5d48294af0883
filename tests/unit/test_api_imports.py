"""The API process stays light: it imports none of the render worker's libraries."""

import subprocess
import sys

WORKER_ONLY = ("torch", "diffusers", "transformers", "safetensors", "peft")


def test_the_api_imports_no_torch_diffusers_or_safetensors() -> None:
    # the app and the modules it checks requests with (samplers, families, adapters, the catalog)
    code = (
        "import sys, api.app, stepanim.adapters, stepanim.request, stepanim.published, stepanim.samplers,"
        " stepanim.families, stepanim.jobs, stepanim.model_catalog\n"
        f"bad = [m for m in {WORKER_ONLY!r} if m in sys.modules]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
