"""The API's durable records, as the rest of `deploy/` sees them (the tables are `deploy.db`).

Plain frozen pydantic models: the store returns them, the app serialises them, and nothing
outside `deploy.db` touches a SQLAlchemy session. Times are timezone-aware UTC.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from farm.pipeline.progress import JobState

Scope = Literal["submit", "read", "admin"]
SCOPES: tuple[Scope, ...] = ("submit", "read", "admin")
ACTIVE_STATES: frozenset[str] = frozenset({"queued", "planning", "running", "reducing"})


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class TokenRecord(BaseModel):
    """A bearer token: only its public id and a hash of its secret are kept."""

    model_config = ConfigDict(frozen=True)

    token_id: str = Field(description="the public part of the token, `farm_<token_id>_<secret>`")
    name: str
    scopes: tuple[Scope, ...]
    secret_hash: str = Field(description="HMAC-SHA256 of the secret under the server's pepper")
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None


class IdentityRecord(BaseModel):
    """An identity pack made through the API, owned by the token that made it."""

    model_config = ConfigDict(frozen=True)

    identity_id: str
    owner: str = Field(description="token_id of the token that made it")
    pack_dir: str
    subject: str
    consent_id: str
    consent_sha256: str
    faces: int
    voice_refs: int
    created_at: dt.datetime


class JobRecord(BaseModel):
    """One submitted job: what was asked, where it stands, and how it ended."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    owner: str
    state: JobState = "queued"
    run_id: str | None = Field(default=None, description="the current job actor's run id")
    identity_id: str | None = None
    spec: dict[str, Any] = Field(description="the JobSpec as JSON (mode='json')")
    request_sha256: str = Field(description="hash of the request, for Idempotency-Key checks")
    input_path: str
    output_path: str
    work_dir: str
    status: dict[str, Any] | None = Field(
        default=None, description="the newest JobStatus (JSON) seen from the job actor"
    )
    error: str | None = None
    webhook_url: str | None = None
    resumes: int = 0
    created_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None = None


class WebhookAttempt(BaseModel):
    """One POST of a job's final record to its webhook."""

    model_config = ConfigDict(frozen=True)

    delivery_id: int
    job_id: str
    attempt: int = Field(description="1 for the first try")
    at: dt.datetime
    status_code: int | None = None
    error: str | None = None


class WebhookDelivery(BaseModel):
    """A webhook delivery that is due (the body is signed when sent)."""

    model_config = ConfigDict(frozen=True)

    delivery_id: int
    job_id: str
    url: str
    body: bytes
    attempts: int
    next_attempt_at: dt.datetime | None
    delivered: bool = False
