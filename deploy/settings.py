"""The API server's settings: one pydantic model, read once from the environment (and the Serve
config's ``args``), with errors that name the variable and the fix."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from farm.errors import SpecError
from farm.fsutil import AbsolutePath

ENV_PREFIX = "FARM_API_"
LIST_SEPARATOR = os.pathsep
"""FARM_API_INPUT_ROOTS and the other list variables hold ``:``-separated items."""


class ApiSettings(BaseModel):
    """What an operator sets for the HTTP API (``FARM_API_<FIELD>`` in upper case)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    home: AbsolutePath = Field(
        description="the API's storage: uploads, identity packs, job outputs and work dirs "
        "(default: $FARM_HOME/api); on a cluster, a path every node mounts"
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of the job records (default: SQLite in home); "
        "postgresql+psycopg://… in production",
    )
    input_roots: tuple[AbsolutePath, ...] = Field(
        default=(), description="directories whose files a job may name as input_uri"
    )
    max_upload_mb: float = Field(default=4096, gt=0, description="largest request body")
    rate_limit_per_minute: int = Field(
        default=600, ge=0, description="requests a token may make a minute (per replica; 0: off)"
    )
    max_active_jobs: int = Field(default=4, ge=1, description="active jobs a token may have")
    cors_origins: tuple[str, ...] = Field(
        default=(), description="origins allowed by CORS (none: CORS off)"
    )
    webhook_allow_private: bool = Field(
        default=False, description="let webhooks target loopback and private addresses"
    )
    webhook_max_attempts: int = Field(default=6, ge=1, le=20)
    webhook_base_delay_s: float = Field(default=2.0, gt=0, le=600)
    models_dir: AbsolutePath | None = Field(
        default=None, description="user-supplied model files for every job (FARM_MODELS)"
    )
    gpt_sovits_urls: tuple[str, ...] = Field(
        default=(), description="GPT-SoVITS api_v2 servers jobs with tts_backend gpt-sovits use"
    )
    reconcile_interval_s: float = Field(
        default=1.0, gt=0, le=60, description="how often job records follow their job actors"
    )
    lease_s: float = Field(
        default=15.0, gt=0, description="how long a replica holds a job record it follows"
    )
    max_resumes: int = Field(
        default=2, ge=0, description="times a job whose actor died is resumed from its ledger"
    )

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def records_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'records.db'}"

    @property
    def identities_dir(self) -> Path:
        return self.home / "identities"

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs"

    @property
    def staging_dir(self) -> Path:
        """Uploads land here first; a request that fails leaves nothing elsewhere."""
        return self.home / "staging"


LIST_FIELDS = ("input_roots", "cors_origins", "gpt_sovits_urls")


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> ApiSettings:
    """Settings from ``FARM_API_*`` variables, then ``overrides`` (the Serve config's args).

    Raises:
        SpecError: a value is invalid; the message names the variable (or arg) and the fix.
    """
    from farm.provenance.keys import farm_home

    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    source: dict[str, str] = {}
    for name in ApiSettings.model_fields:
        variable = f"{ENV_PREFIX}{name.upper()}"
        if variable in env:
            raw = env[variable]
            data[name] = (
                tuple(item for item in raw.split(LIST_SEPARATOR) if item)
                if name in LIST_FIELDS
                else raw
            )
            source[name] = variable
    if "models_dir" not in data and env.get("FARM_MODELS"):
        data["models_dir"] = env["FARM_MODELS"]
        source["models_dir"] = "FARM_MODELS"
    for name, value in (overrides or {}).items():
        data[name] = value
        source[name] = f"serve arg {name}"
    data.setdefault("home", str(farm_home() / "api"))
    try:
        return ApiSettings.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        where = source.get(field, f"{ENV_PREFIX}{field.upper()}")
        if error["type"] == "extra_forbidden":
            raise SpecError(
                f"{where}: not an API setting; known: {', '.join(ApiSettings.model_fields)}"
            ) from None
        raise SpecError(f"{where}: {error['msg']}") from None
