"""Why a job fails: one small tree of exceptions, each carrying the error code clients see.

    JobFailure                 (code)                 raised by
    ├── ModelError             model_error            the model cannot be found or loaded (worker.pipelines)
    ├── DecoderUnavailable     decoder_unavailable    TAESD weights missing (worker.pipelines)
    ├── InvalidInput           invalid_input          the init image is gone or unreadable (worker.inputs)
    ├── AdapterError           adapter_error          a LoRA or embedding is missing, not safetensors, or does not
    │                                                 fit the model (worker.adapters)
    ├── IncompleteRender       incomplete_render      fewer steps than asked, without run_on_incomplete
    └── EncodeError            encode_error           ffmpeg failed or made something unusable (encoder)

A task catches :class:`JobFailure` once and fails the job with ``error.code`` and the message;
the worker stays up. Anything else is a bug and fails the job as ``render_error`` with a log
of its traceback. Storage errors are not failures: they are retried; a :class:`Canceled` work
cancels the job (``stepanim.retries.end_job``).
"""

from __future__ import annotations

from typing import ClassVar


class Canceled(Exception):
    """The job was canceled while its work ran (a render between two steps, an encode's ffmpeg)."""


class JobFailure(Exception):
    """The job cannot be done; it fails with :attr:`code` and this message."""

    code: ClassVar[str] = "failed"


class ModelError(JobFailure):
    """The model cannot be found or loaded."""

    code = "model_error"


class DecoderUnavailable(JobFailure):
    """The requested frame decoder cannot be used here (e.g. TAESD weights are not installed)."""

    code = "decoder_unavailable"


class InvalidInput(JobFailure):
    """The job's inputs cannot be used (its init image is gone or unreadable)."""

    code = "invalid_input"


class AdapterError(JobFailure):
    """A LoRA or embedding the job names cannot be used: missing, not a valid safetensors adapter, or not one
    that fits the model."""

    code = "adapter_error"


class IncompleteRender(JobFailure):
    """The sampler made fewer steps than asked and the job did not ask to run on incomplete data."""

    code = "incomplete_render"


class EncodeError(JobFailure):
    """The frames could not be made into a checked video."""

    code = "encode_error"
