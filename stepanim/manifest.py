"""The render manifest: what a render made, written next to its frames for the encoder. Pure model.

The render worker writes it when its sampling ends (``worker.render``), complete or not; the
encoder reads it for every video and rendition (``encoder.job``), and its fields (but the
frame lists) become the videos' description metadata. Because the frames and this file stay
in storage, a job can be re-encoded long after its render.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, Field

from stepanim.adapters import EmbeddingUse, LoraUse
from stepanim.naming import manifest_key
from stepanim.storage import Storage


class ManifestImage(BaseModel):
    batch_index: int
    seed: int = Field(description="This image's real seed.")
    frames: list[str] = Field(description="Storage keys of its frames, in step order.")


class Manifest(BaseModel):
    job_id: str
    model: str
    family: str | None = Field(None, description="The model's family (sd, sdxl, sd3, flux).")
    prompt: str
    negative_prompt: str = ""
    width: int
    height: int
    steps: int = Field(description="Steps asked for.")
    steps_run: int = Field(description="Steps the sampler made (fewer when canceled or exited early).")
    total_steps: int = Field(description="Steps the sampler was to make (img2img: steps x strength).")
    complete: bool
    scheduler: str
    schedule: str = "default"
    guidance_scale: float
    seed: int
    batch_size: int = 1
    capture: dict[str, Any] = Field(default_factory=dict)
    init_image: str | None = Field(None, description="The init image's upload id (img2img).")
    strength: float | None = None
    loras: list[LoraUse] = Field(default_factory=list, description="The LoRAs applied, with their weights.")
    embeddings: list[EmbeddingUse] = Field(default_factory=list, description="The embeddings loaded.")
    render_seconds: float = 0.0
    grid: dict[str, Any] | None = Field(None, description="A grid video's axes and cell jobs.")
    images: list[ManifestImage] = Field(validation_alias=AliasChoices("images", "animations"))

    def metadata(self) -> dict[str, Any]:
        """The generation parameters a video's metadata carries (everything but the frame lists)."""
        return self.model_dump(mode="json", exclude={"images"})

    @classmethod
    def load(cls, storage: Storage, job_id: str) -> Manifest:
        """The manifest of ``job_id`` (``NotFound`` when it is missing)."""
        return cls.model_validate_json(storage.get_bytes(manifest_key(job_id)))

    def save(self, storage: Storage) -> None:
        storage.put_bytes(manifest_key(self.job_id), self.model_dump_json(indent=2).encode(), "application/json")
