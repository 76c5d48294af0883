"""The sampler registry, web-UI names, model families and what fits them: pure code, no torch."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from stepanim.families import FACTS, FAMILIES, check_size, family_of_class, model_family, model_scheduler_config
from stepanim.request import AnimationCreate
from stepanim.samplers import (
    REGISTRY,
    SAMPLER_IDS,
    SCHEDULES,
    describe,
    family_capabilities,
    fit_error,
    fitting_samplers,
    parse_sampler_name,
    schedule_overrides,
)

SCHNELL = {"num_train_timesteps": 1000, "shift": 1.0}
DEV = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True}


def test_registry_ids_and_labels_are_unique_and_todays_ids_remain() -> None:
    assert len(set(SAMPLER_IDS)) == len(SAMPLER_IDS)
    assert len({s.label.lower() for s in REGISTRY}) == len(REGISTRY)
    today = {"euler", "euler_a", "ddim", "plms", "lms", "heun", "dpmpp_2m", "dpmpp_2m_sde", "unipc"}
    assert today <= set(SAMPLER_IDS)
    assert {"dpmpp_sde", "dpm2", "dpm2_a", "dpmpp_3m", "deis", "ddpm", "lcm", "tcd"} <= set(SAMPLER_IDS)
    for entry in REGISTRY:
        for variant in entry.variants:
            assert variant.schedules[0] == "default"
            assert set(variant.schedules) <= set(SCHEDULES)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Euler a", ("euler_a", "default")),
        ("euler A", ("euler_a", "default")),
        ("Euler", ("euler", "default")),
        ("DPM++ 2M", ("dpmpp_2m", "default")),
        ("DPM++ 2M Karras", ("dpmpp_2m", "karras")),
        ("dpm++ 2m karras", ("dpmpp_2m", "karras")),
        ("DPM++ 2M SDE", ("dpmpp_2m_sde", "default")),
        ("DPM++ 2M SDE Karras", ("dpmpp_2m_sde", "karras")),
        ("DPM++ 2M SDE Exponential", ("dpmpp_2m_sde", "exponential")),
        ("DPM++ SDE Karras", ("dpmpp_sde", "karras")),
        ("DPM++ SDE", ("dpmpp_sde", "default")),
        ("DPM++ 3M", ("dpmpp_3m", "default")),
        ("DPM2 a Karras", ("dpm2_a", "karras")),
        ("DPM2 Karras", ("dpm2", "karras")),
        ("DPM2 a", ("dpm2_a", "default")),
        ("LMS Karras", ("lms", "karras")),
        ("UniPC", ("unipc", "default")),
        ("DDIM SGM Uniform", ("ddim", "sgm_uniform")),
        ("Euler Beta", ("euler", "beta")),
        ("  Heun  ", ("heun", "default")),
        ("dpmpp_2m", ("dpmpp_2m", "default")),  # ids are names too
        ("dpmpp_2m_sde karras", ("dpmpp_2m_sde", "karras")),
        ("euler_a sgm_uniform", ("euler_a", "sgm_uniform")),
        ("PLMS", ("plms", "default")),
        ("LCM", ("lcm", "default")),
        ("TCD", ("tcd", "default")),
        ("DEIS", ("deis", "default")),
        ("DDPM", ("ddpm", "default")),
    ],
)
def test_web_ui_names_parse(name: str, expected: tuple[str, str]) -> None:
    assert parse_sampler_name(name) == expected


@pytest.mark.parametrize(
    "name", ["", "Karras", "DPM fast", "DPM++ 2M Turbo", "Euler aa", "DPM++ 3M SDE", "euler karras x"]
)
def test_unknown_names_are_refused_naming_the_field(name: str) -> None:
    with pytest.raises(ValueError, match=r"^scheduler: unknown sampler name"):
        parse_sampler_name(name)


def test_every_label_parses_to_its_id_with_every_schedule() -> None:
    for entry in REGISTRY:
        for schedule, label in (("karras", "Karras"), ("exponential", "Exponential"), ("beta", "Beta")):
            assert parse_sampler_name(f"{entry.label} {label}") == (entry.id, schedule)


def test_families_of_pipeline_classes() -> None:
    assert family_of_class("StableDiffusionPipeline") == "sd"
    assert family_of_class("StableDiffusionImg2ImgPipeline") == "sd"
    assert family_of_class("StableDiffusionXLPipeline") == "sdxl"
    assert family_of_class("StableDiffusionXLImg2ImgPipeline") == "sdxl"
    assert family_of_class("StableDiffusion3Pipeline") == "sd3"
    assert family_of_class("StableDiffusion3Img2ImgPipeline") == "sd3"
    assert family_of_class("FluxPipeline") == "flux"
    assert family_of_class("FluxImg2ImgPipeline") == "flux"
    with pytest.raises(ValueError, match="PixArtAlphaPipeline: not a supported model family"):
        family_of_class("PixArtAlphaPipeline")


def test_model_family_reads_the_model_index(tmp_path: Path) -> None:
    folder = tmp_path / "some-flux"
    (folder / "scheduler").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline", "vae": ["x", "y"]}))
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHNELL))
    assert model_family(folder) == "flux"
    assert model_scheduler_config(folder) == SCHNELL
    assert model_scheduler_config(tmp_path) == {}
    with pytest.raises(ValueError, match="not a readable diffusers model index"):
        model_family(tmp_path)
    (tmp_path / "model_index.json").write_text("[]")
    with pytest.raises(ValueError, match="not a readable diffusers model index"):
        model_family(tmp_path)


def test_family_facts() -> None:
    assert [FACTS[f].size_multiple for f in FAMILIES] == [8, 8, 16, 16]
    assert [FACTS[f].negative_prompt for f in FAMILIES] == [True, True, True, False]
    assert all(FACTS[f].img2img for f in FAMILIES)
    for family in FAMILIES:  # the default sampler fits every model of the family, also for img2img
        for config in (None, SCHNELL, DEV):
            assert FACTS[family].default_sampler in fitting_samplers(family, img2img=True, scheduler_config=config)
    check_size("sd", width=72, height=64)
    with pytest.raises(ValueError, match=r"^width: Stable Diffusion 3/3.5 models need multiples of 16 \(got 72\)"):
        check_size("sd3", width=72, height=64)
    with pytest.raises(ValueError, match=r"^height: FLUX.1 models need multiples of 16"):
        check_size("flux", width=64, height=72)


def test_what_fits_each_family() -> None:
    sd = fitting_samplers("sd")
    assert set(sd) == set(SAMPLER_IDS)
    assert sd["dpmpp_2m"] == SCHEDULES
    assert sd["euler_a"] == ("default", "sgm_uniform")
    assert sd["lcm"] == ("default",)
    assert fitting_samplers("sdxl") == sd
    assert fitting_samplers("sd3") == {
        "euler": ("default", "karras", "exponential", "beta"),
        "heun": ("default",),
        "dpmpp_2m": ("default",),
        "dpmpp_2m_sde": ("default",),
        "dpmpp_3m": ("default",),
        "unipc": ("default",),
    }
    flux = fitting_samplers("flux")
    assert list(flux) == ["euler", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m", "unipc"]  # no Heun: no sigmas/mu
    assert fitting_samplers("flux", scheduler_config=DEV) == flux
    assert list(fitting_samplers("flux", scheduler_config=SCHNELL)) == ["euler", "unipc"]
    assert list(fitting_samplers("sd3", img2img=True)) == ["euler", "heun"]
    assert list(fitting_samplers("flux", img2img=True)) == ["euler"]
    assert fitting_samplers("sd", img2img=True) == sd


def test_family_capabilities() -> None:
    caps = family_capabilities("flux", SCHNELL)
    assert (caps.family, caps.size_multiple, caps.negative_prompt, caps.img2img) == ("flux", 16, False, True)
    assert caps.default_sampler == "euler"
    assert list(caps.samplers) == ["euler", "unipc"]
    assert list(caps.img2img_samplers) == ["euler"]
    assert family_capabilities("sdxl").size_multiple == 8


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("ddim", "default", "flux"), {}, r"^scheduler: 'ddim' does not fit flux models \(fits: euler, dpmpp_2m, "),
        (("heun", "default", "flux"), {}, r"^scheduler: 'heun' does not fit flux models"),
        (("dpmpp_2m", "default", "sd3"), {"img2img": True}, r"^scheduler: 'dpmpp_2m' does not fit sd3 image-to-image"),
        (("dpmpp_2m", "default", "flux"), {"scheduler_config": SCHNELL}, r"dynamic shifting.*\(fits: euler, unipc\)"),
        (("euler", "sgm_uniform", "flux"), {}, r"^schedule: 'sgm_uniform' does not apply to 'euler' on flux models"),
        (("dpmpp_2m", "karras", "sd3"), {}, r"^schedule: 'karras' does not apply to 'dpmpp_2m' on sd3"),
        (("euler_a", "karras", "sd"), {}, r"^schedule: 'karras' does not apply to 'euler_a'"),
        (("euler", "simple", "sd"), {}, r"^schedule: unknown schedule 'simple'"),
        (("lcm", "default", "sd"), {"steps": 51}, r"^steps: 'lcm' takes at most 50 steps \(got 51\)"),
        (("k_euler", "default", "sd"), {}, r"^scheduler: unknown sampler 'k_euler'"),
    ],
)
def test_misfits_are_refused_naming_the_field(args: tuple[str, str, str], kwargs: dict[str, Any], message: str) -> None:
    assert re.search(message, fit_error(*args, **kwargs) or "")  # type: ignore[arg-type]


def test_fits_give_no_error() -> None:
    assert fit_error("dpmpp_2m", "karras", "sdxl") is None
    assert fit_error("euler", "beta", "flux", img2img=True) is None
    assert fit_error("unipc", "default", "flux", scheduler_config=SCHNELL) is None
    assert fit_error("lcm", "default", "sd", steps=50) is None


def test_schedule_overrides() -> None:
    variants = {s.id: s.variants for s in REGISTRY}
    euler, flow_euler = variants["euler"]
    assert schedule_overrides(euler, "default") == {}
    assert schedule_overrides(euler, "karras") == {
        "use_karras_sigmas": True,
        "use_exponential_sigmas": False,
        "use_beta_sigmas": False,
    }
    assert schedule_overrides(euler, "exponential") == {
        "use_karras_sigmas": False,
        "use_exponential_sigmas": True,
        "use_beta_sigmas": False,
        "timestep_spacing": "linspace",
    }
    assert schedule_overrides(euler, "sgm_uniform")["timestep_spacing"] == "trailing"
    assert "timestep_spacing" not in schedule_overrides(flow_euler, "beta")  # FlowMatchEuler has none
    (ddim,) = variants["ddim"]
    assert schedule_overrides(ddim, "sgm_uniform") == {"timestep_spacing": "trailing"}
    with pytest.raises(ValueError, match="schedule: 'karras' does not apply to DDIMScheduler"):
        schedule_overrides(ddim, "karras")


def test_the_request_takes_registry_ids_and_a_schedule() -> None:
    body = AnimationCreate.model_validate({"prompt": "x"})
    assert (body.scheduler, body.schedule) == (None, "default")  # the model's default sampler
    body = AnimationCreate.model_validate({"prompt": "x", "scheduler": "dpmpp_sde", "schedule": "karras"})
    assert (body.scheduler, body.schedule) == ("dpmpp_sde", "karras")
    body = AnimationCreate.model_validate({"prompt": "x", "scheduler": "DPM++ 2M"})  # a web UI's name
    assert (body.scheduler, body.schedule) == ("dpmpp_2m", "default")
    for field, value in (("scheduler", "k_euler"), ("scheduler", "DPM++ 9M"), ("schedule", "simple")):
        with pytest.raises(ValidationError, match=field):
            AnimationCreate.model_validate({"prompt": "x", field: value})
    schema = AnimationCreate.model_json_schema()["properties"]
    [ids] = [choice["enum"] for choice in schema["scheduler"]["anyOf"] if "enum" in choice]
    assert ids == list(SAMPLER_IDS)
    assert schema["schedule"]["enum"] == list(SCHEDULES)


def test_describe_is_json() -> None:
    rows = describe()
    assert [row["id"] for row in rows] == list(SAMPLER_IDS)
    euler = rows[0]
    assert euler["families"]["flux"] == ["default", "karras", "exponential", "beta"]
    assert euler["img2img_families"] == ["sd", "sdxl", "sd3", "flux"]
    json.dumps(rows)
