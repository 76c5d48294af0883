"""LoRAs and embeddings, the pure part: request fields, file shapes from safetensors headers, which
real model families each fits, the folder scan, and the admission check. No torch."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from safetensors.numpy import save_file

from encoder.encode import metadata
from stepanim.adapter_shapes import ModelShape, embedding_misfit, embedding_shape, lora_misfit, lora_shape, model_shapes
from stepanim.adapters import AdapterInfo, adapter_file, check_adapters, scan
from stepanim.model_catalog import ModelInfo
from stepanim.request import AnimationCreate
from stepanim.settings import Settings

R = 4  # LoRA rank
Keys = dict[str, tuple[int, ...]]  # tensor name -> shape

# Real models' widths, as their config files say.
MODELS: dict[str, dict[str, Any]] = {
    "sd15": {
        "class": "StableDiffusionPipeline",
        "unet": {"cross_attention_dim": 768},
        "text_encoder": {"hidden_size": 768},
    },
    "sd21": {
        "class": "StableDiffusionPipeline",
        "unet": {"cross_attention_dim": 1024},
        "text_encoder": {"hidden_size": 1024},
    },
    "sdxl": {
        "class": "StableDiffusionXLPipeline",
        "unet": {"cross_attention_dim": 2048},
        "text_encoder": {"hidden_size": 768},
        "text_encoder_2": {"hidden_size": 1280},
    },
    "sd35": {
        "class": "StableDiffusion3Pipeline",
        "transformer": {"joint_attention_dim": 4096, "num_attention_heads": 38, "attention_head_dim": 64},
        "text_encoder": {"hidden_size": 768},
        "text_encoder_2": {"hidden_size": 1280},
    },
    "flux": {
        "class": "FluxPipeline",
        "transformer": {"joint_attention_dim": 4096, "num_attention_heads": 24, "attention_head_dim": 128},
        "text_encoder": {"hidden_size": 768},
        "text_encoder_2": {"d_model": 4096},
    },
}


def write_model(folder: Path, spec: dict[str, Any], vocab: list[str]) -> None:
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": spec["class"]}))
    for part, config in spec.items():
        if part != "class":
            (folder / part).mkdir()
            (folder / part / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer").mkdir()
    (folder / "tokenizer" / "vocab.json").write_text(json.dumps({w: i for i, w in enumerate(["a</w>", *vocab])}))


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    for name, spec in MODELS.items():
        write_model(folder / name, spec, vocab=["taken", "multi_2"])
    return folder


@pytest.fixture
def shapes(models_dir: Path) -> dict[str, ModelShape]:
    return {shape.name: shape for shape in model_shapes(models_dir)}


def unet_lora(width: int, *, kohya: bool = False, text: dict[str, int] | None = None) -> Keys:
    block = "down_blocks.1.attentions.0.transformer_blocks.0"
    if kohya:
        keys: Keys = {
            f"lora_unet_{block.replace('.', '_')}_attn2_to_k.lora_down.weight": (R, width),
            f"lora_unet_{block.replace('.', '_')}_attn2_to_k.lora_up.weight": (320, R),
            f"lora_unet_{block.replace('.', '_')}_attn2_to_k.alpha": (),
            f"lora_unet_{block.replace('.', '_')}_attn1_to_q.lora_down.weight": (R, 320),
        }
        for component, w in (text or {}).items():
            prefix = {"text_encoder": "lora_te1", "text_encoder_2": "lora_te2"}[component]
            keys[f"{prefix}_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] = (R, w)
        return keys
    keys = {
        f"unet.{block}.attn2.to_v.lora_A.weight": (R, width),
        f"unet.{block}.attn2.to_v.lora_B.weight": (320, R),
        f"unet.{block}.attn1.to_q.lora_A.weight": (R, 320),
    }
    for component, w in (text or {}).items():
        keys[f"{component}.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"] = (R, w)
    return keys


def transformer_lora(width: int, *, single: bool = False) -> Keys:
    keys: Keys = {
        "transformer.transformer_blocks.0.attn.to_q.lora_A.weight": (R, width),
        "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": (width, R),
    }
    if single:
        keys["transformer.single_transformer_blocks.0.attn.to_k.lora_A.weight"] = (R, width)
    return keys


def shape_of(keys: Keys):  # type: ignore[no-untyped-def]
    return lora_shape(list(keys.items()))


LORAS: dict[str, Keys] = {
    "sd15": unet_lora(768),
    "sd15-kohya": unet_lora(768, kohya=True, text={"text_encoder": 768}),
    "sd21": unet_lora(1024),
    "sdxl": unet_lora(2048, text={"text_encoder": 768, "text_encoder_2": 1280}),
    "sdxl-kohya": unet_lora(2048, kohya=True, text={"text_encoder": 768, "text_encoder_2": 1280}),
    "sd35": transformer_lora(2432),
    "flux": transformer_lora(3072, single=True),
    "flux-kohya": {
        "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": (R, 3072),
        "lora_unet_single_blocks_0_linear1.lora_down.weight": (R, 3072),
    },
}


@pytest.mark.parametrize(("lora", "model"), [(name, name.split("-")[0]) for name in LORAS])
def test_a_lora_fits_exactly_the_models_of_its_own_family(lora: str, model: str, shapes: dict[str, ModelShape]) -> None:
    found = shape_of(LORAS[lora])
    fitting = [name for name, shape in shapes.items() if lora_misfit(found, shape) is None]
    assert fitting == [model]


def test_what_a_lora_shape_says() -> None:
    sdxl = shape_of(LORAS["sdxl-kohya"])
    assert sdxl.components == {"unet", "text_encoder", "text_encoder_2"}
    assert sdxl.cross_widths == {2048}
    assert sdxl.text_widths == {"text_encoder": {768}, "text_encoder_2": {1280}}
    assert sdxl.text_encoder_layers
    flux = shape_of(LORAS["flux-kohya"])
    assert (flux.components, flux.inner_widths, flux.single_blocks) == ({"transformer"}, {3072}, True)
    assert "Flux transformer layers (width 3072)" in flux.describe()


def test_misfits_say_why(shapes: dict[str, ModelShape]) -> None:
    assert lora_misfit(shape_of(LORAS["sd15"]), shapes["sdxl"]) == "its cross-attention width is 768, 'sdxl' has 2048"
    assert "transformer layers" in (lora_misfit(shape_of(LORAS["flux"]), shapes["sd15"]) or "")
    assert lora_misfit(shape_of(LORAS["flux"]), shapes["sd35"]) == "it has Flux single-stream layers"


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"unet.down_blocks.0.attn2.to_k.weight": (4, 4)}, "not a LoRA: tensor"),
        ({"unet.down_blocks.0.attn2.to_k.lora_B.weight": (320, R)}, "no down (A) matrices"),
        ({"vae.encoder.lora_A.weight": (R, 4)}, "names no UNet, transformer or text encoder"),
        ({"unet.x.lora_A.weight": (R,)}, "has shape [4]"),
        ({"hada_w1_a": (4, 4)}, "not a LoRA"),  # LyCORIS LoHa: diffusers cannot load it
    ],
)
def test_what_is_not_a_lora(keys: Keys, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        shape_of(keys)


@pytest.mark.parametrize(
    ("tensors", "fits"),
    [
        ({"emb_params": (2, 768)}, ["sd15"]),  # a web UI's embedding
        ({"<mystyle>": (768,)}, ["sd15"]),  # diffusers' {token: vector}
        ({"emb_params": (1, 1024)}, ["sd21"]),
        ({"clip_l": (2, 768), "clip_g": (2, 1280)}, ["sdxl"]),
        ({"emb_params": (2, 1280)}, []),
    ],
)
def test_an_embedding_fits_by_its_text_encoder_widths(
    tensors: Keys, fits: list[str], shapes: dict[str, ModelShape]
) -> None:
    embedding = embedding_shape(list(tensors.items()))
    assert [name for name, shape in shapes.items() if embedding_misfit(embedding, "mystyle", shape) is None] == fits


def test_an_embedding_token_may_not_be_a_word_of_the_tokenizer(shapes: dict[str, ModelShape]) -> None:
    embedding = embedding_shape([("emb_params", (3, 768))])
    assert embedding.vectors == 3
    why = embedding_misfit(embedding, "taken", shapes["sd15"])
    assert why == "its token 'taken' is already a word of 'sd15''s tokenizer: rename the file"
    # diffusers adds token, token_1, token_2 for three vectors
    assert "its token 'multi_2' is already" in (embedding_misfit(embedding, "multi", shapes["sd15"]) or "")
    assert embedding_misfit(embedding, "a", shapes["sd15"]) is None  # "a</w>" is the word
    with pytest.raises(ValueError, match="clip_l has 2 vectors, clip_g 1"):
        embedding_shape([("clip_l", (2, 768)), ("clip_g", (1, 1280))])
    with pytest.raises(ValueError, match="expected one tensor"):
        embedding_shape([("a", (1, 768)), ("b", (1, 768))])


def save(path: Path, keys: Keys) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.zeros(shape, dtype=np.float16) for k, shape in keys.items()}, str(path))


def test_scan_lists_what_fits_and_skips_what_cannot_be_used(
    tmp_path: Path, shapes: dict[str, ModelShape], caplog: pytest.LogCaptureFixture
) -> None:
    adapters = tmp_path / "adapters"
    save(adapters / "loras" / "Pixel_Art-v2.safetensors", LORAS["sdxl-kohya"])
    save(adapters / "loras" / "flux-style.safetensors", LORAS["flux"])
    save(adapters / "loras" / "no.dots.safetensors", LORAS["sd15"])
    save(adapters / "embeddings" / "mystyle.safetensors", {"emb_params": (2, 768)})
    save(adapters / "embeddings" / "UpperCase.safetensors", {"emb_params": (2, 768)})
    (adapters / "loras" / "pickled.ckpt").write_bytes(b"\x80\x04")  # never unpickled: not even looked at
    (adapters / "loras" / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with caplog.at_level(logging.WARNING):
        found = scan(adapters, list(shapes.values()))
    assert [(a.kind, a.name, a.families, a.models) for a in found] == [
        ("lora", "Pixel_Art-v2", ["sdxl"], ["sdxl"]),
        ("lora", "flux-style", ["flux"], ["flux"]),
        ("embedding", "mystyle", ["sd"], ["sd15"]),
    ]
    assert found[2].token == "mystyle" and found[2].vectors == 2
    logged = caplog.text
    for skipped in ("pickled.ckpt: only .safetensors", "no.dots.safetensors: a name is", "UpperCase", "broken"):
        assert skipped in logged

    # A worker that cannot load text-encoder layers says so, and such a LoRA then fits nothing.
    found = scan(adapters, list(shapes.values()), text_encoder_loras="they need peft >= 0.22")
    pixel = found[0]
    assert (pixel.models, pixel.families) == ([], [])
    assert pixel.note is not None and "they need peft >= 0.22" in pixel.note
    assert found[1].models == ["flux"]  # no text-encoder layers

    assert scan(tmp_path / "missing", list(shapes.values())) == []
    assert "this worker has no local model" in (scan(adapters, [])[0].note or "")


def test_adapter_files_never_leave_the_folder(tmp_path: Path) -> None:
    assert adapter_file(tmp_path, "lora", "x") == tmp_path / "loras" / "x.safetensors"
    assert adapter_file(tmp_path, "embedding", "x") == tmp_path / "embeddings" / "x.safetensors"
    for name in ("../x", "a/b", ".hidden", "x.y", ""):
        with pytest.raises(ValueError):
            adapter_file(tmp_path, "lora", name)


def test_the_adapters_folder_defaults_to_one_beside_the_models() -> None:
    settings = Settings(_env_file=None, models_dir=Path("/srv/models"))  # type: ignore[call-arg]
    assert settings.adapters_path == Path("/srv/adapters")
    assert Settings(_env_file=None, adapters_dir=Path("/a")).adapters_path == Path("/a")  # type: ignore[call-arg]


def body(**fields: Any) -> AnimationCreate:
    return AnimationCreate.model_validate({"prompt": "a mystyle cat", **fields})


def test_request_fields() -> None:
    req = body(loras=[{"name": "Pixel_Art-v2", "weight": 0.8}, {"name": "b"}], embeddings=["mystyle"])
    assert [(x.name, x.weight) for x in req.loras] == [("Pixel_Art-v2", 0.8), ("b", 1.0)]
    assert body().loras == [] and body().embeddings == []
    assert body(negative_prompt="mystyle", prompt="x", embeddings=["mystyle"]).embeddings == ["mystyle"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"loras": [{"name": "../etc/passwd"}]}, "loras.0.name: String should match pattern"),
        ({"loras": [{"name": "a", "weight": 5}]}, "loras.0.weight"),
        ({"loras": [{"name": "a", "scale": 1}]}, "loras.0.scale: Extra inputs"),
        ({"loras": [{"name": "a"}, {"name": "a"}]}, "loras: LoRA 'a' is named twice"),
        ({"loras": [{"name": f"l{i}"} for i in range(9)]}, "loras: List should have at most 8 items"),
        ({"embeddings": ["MyStyle"]}, "embeddings.0: String should match pattern"),
        ({"embeddings": ["mystyle", "mystyle"]}, "embeddings: embedding 'mystyle' is named twice"),
        ({"embeddings": ["other"]}, "embeddings: the token 'other' (item 0) appears in neither prompt nor"),
    ],
)
def test_request_refusals_name_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as error:
        body(**fields)
    found = [".".join(map(str, e["loc"])) + ": " + e["msg"].removeprefix("Value error, ") for e in error.value.errors()]
    assert any(f.startswith(message) for f in found), found


PUBLISHED = [
    AdapterInfo(name="style", kind="lora", families=["sd"], models=["sd15", "sd21"]),
    AdapterInfo(name="xl", kind="lora", families=["sdxl"], models=["sdxl"]),
    AdapterInfo(name="lost", kind="lora", note="fits none"),
    AdapterInfo(name="mystyle", kind="embedding", families=["sd"], models=["sd15"], token="mystyle", vectors=2),
]


def test_check_adapters() -> None:
    sd15 = ModelInfo(name="sd15")
    assert check_adapters(body(), None, []) == []  # nothing asked: nothing to check
    ok = body(loras=[{"name": "style", "weight": 0.5}], embeddings=["mystyle"])
    assert check_adapters(ok, sd15, PUBLISHED) == []
    wrong = body(loras=[{"name": "xl"}, {"name": "nope"}, {"name": "lost"}, {"name": "mystyle"}])
    assert check_adapters(wrong, sd15, PUBLISHED) == [
        ("loras.0.name", "LoRA 'xl' does not fit model 'sd15' (it fits: sdxl)"),
        ("loras.1.name", "no LoRA 'nope' on this server (GET /capabilities lists the adapters)"),
        ("loras.2.name", "LoRA 'lost' does not fit model 'sd15' (it fits: none of this server's models: fits none)"),
        ("loras.3.name", "no LoRA 'mystyle' on this server (GET /capabilities lists the adapters)"),
    ]
    assert check_adapters(body(embeddings=["mystyle"]), ModelInfo(name="sd21"), PUBLISHED) == [
        ("embeddings.0", "embedding 'mystyle' does not fit model 'sd21' (it fits: sd15)")
    ]
    [(field, message)] = check_adapters(body(model="org/hub-model", loras=[{"name": "style"}]), None, PUBLISHED)
    assert field == "model" and "'org/hub-model' is not one" in message


def test_video_metadata_names_the_loras() -> None:
    params = {"prompt": "p", "model": "m", "steps": 3, "scheduler": "euler", "seed": 1}
    loras = [{"name": "style", "weight": 0.8, "sha256": "ab"}, {"name": "b", "weight": 1.0, "sha256": "cd"}]
    tags = metadata({**params, "loras": loras})
    assert tags["title"] == "p | m | 3 steps | euler | seed 1 | <lora:style:0.8> <lora:b:1>"
    assert json.loads(tags["description"])["loras"] == loras
    assert metadata(params)["title"] == "p | m | 3 steps | euler | seed 1"
