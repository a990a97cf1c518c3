"""The typed job report: its checked-in JSON schema, and what the CLI writes beside the output."""

from __future__ import annotations

import json

from farm.pipeline.report import SCHEMA_PATH, JobReport, report_schema


def test_the_checked_in_schema_matches_the_model() -> None:
    checked_in = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert checked_in == report_schema(), (
        "farm/pipeline/report.schema.json is stale: run "
        "`python -m farm.pipeline.report --write-schema` and commit it"
    )


def test_the_schema_names_what_users_read() -> None:
    properties = report_schema()["properties"]
    assert isinstance(properties, dict)
    for field in ("job_id", "run_id", "output", "sync", "provenance", "voice", "workers"):
        assert field in properties
    assert set(JobReport.model_fields) == set(properties)
