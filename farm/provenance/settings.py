"""Provenance settings carried inside the frozen JobSpec (``spec.provenance``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ProvenanceSettings(BaseModel):
    """What the always-on watermark stage embeds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    payload_hex: str = Field(
        pattern=r"^[0-9a-f]{16}$",
        description="watermark payload, `watermark_payload(job_id, key_id).hex()`",
    )
