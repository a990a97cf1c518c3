"""C2PA manifests (c2pa-python) and container metadata tags on the farm's outputs.

`sign_output` copies the rendered MP4 with metadata tags added (stream copy, no re-encode), then
embeds a C2PA manifest signed with the operator's ES256 certificate: the actions c2pa.created and
c2pa.edited with digital source type trainedAlgorithmicMedia, and a SyncFarm assertion with the
job id, consent id, operator key id, watermark payload and the sha256 of every input.
`read_manifest` validates a file against the trust list's CAs.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import c2pa

from farm.errors import MediaError
from farm.provenance.keys import Operator, TrustList
from farm.provenance.payload import watermark_payload

ASSERTION_LABEL = "org.syncfarm.provenance"
SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
GENERATOR = "SyncFarm"
MIME_BY_SUFFIX = {".mp4": "video/mp4", ".mov": "video/quicktime", ".m4a": "audio/mp4"}


class ManifestError(MediaError):
    """A file could not be signed."""


def _mime(path: Path) -> str:
    try:
        return MIME_BY_SUFFIX[path.suffix.lower()]
    except KeyError:
        raise ManifestError(
            f"cannot sign {path.name}: C2PA signing supports {', '.join(MIME_BY_SUFFIX)}"
        ) from None


def metadata_tags(job_id: str, consent_id: str, key_id: str) -> dict[str, str]:
    """Container tags: a plain-text AI label any player shows, plus machine-readable ids."""
    return {
        "comment": f"AI-generated double (SyncFarm), job {job_id}, consent {consent_id}",
        "description": "synthetic media: trainedAlgorithmicMedia; see the C2PA manifest",
        "syncfarm_job_id": job_id,
        "syncfarm_consent_id": consent_id,
        "syncfarm_key_id": key_id,
        "ai_generated": "true",
    }


def _remux_with_tags(src: Path, dst: Path, tags: Mapping[str, str]) -> None:
    """Stream-copy every stream of `src` into `dst` with container metadata `tags`."""
    with (
        av.open(str(src)) as source,
        av.open(str(dst), "w", format="mp4", options={"movflags": "use_metadata_tags"}) as target,
    ):
        target.metadata.update(dict(source.metadata))
        target.metadata.update(dict(tags))
        mapping = {}
        for stream in source.streams:
            if stream.type in ("video", "audio"):
                mapping[stream.index] = target.add_stream_from_template(stream)
        for packet in source.demux():
            out_stream = mapping.get(packet.stream.index)
            if out_stream is None or packet.dts is None:
                continue
            packet.stream = out_stream
            target.mux(packet)


def build_manifest(
    *,
    title: str,
    job_id: str,
    consent_id: str,
    key_id: str,
    input_hashes: Mapping[str, str],
) -> dict[str, Any]:
    agent = {"name": GENERATOR}
    return {
        "claim_generator_info": [{"name": GENERATOR, "version": "0.1.0"}],
        "title": title,
        "assertions": [
            {
                "label": "c2pa.actions.v2",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": SOURCE_TYPE,
                            "softwareAgent": agent,
                        },
                        {
                            "action": "c2pa.edited",
                            "digitalSourceType": SOURCE_TYPE,
                            "softwareAgent": agent,
                            "description": "face swap and re-voicing of a consenting subject",
                            "parameters": {"consent_id": consent_id, "job_id": job_id},
                        },
                    ]
                },
            },
            {
                "label": ASSERTION_LABEL,
                "data": {
                    "job_id": job_id,
                    "consent_id": consent_id,
                    "operator_key_id": key_id,
                    "watermark_payload": watermark_payload(job_id, key_id).hex(),
                    "input_sha256": dict(input_hashes),
                },
            },
        ],
    }


def sign_output(
    src_mp4: Path,
    dst_mp4: Path,
    operator: Operator,
    job_id: str,
    consent_id: str,
    input_hashes: Mapping[str, str],
    *,
    already_tagged: bool = False,
) -> None:
    """Write `dst_mp4`: `src_mp4` with metadata tags and a signed C2PA manifest.

    With ``already_tagged`` the source already carries `metadata_tags` (the reducer's mux
    writes them), so it is signed as it is: no second remux that could drop rotation, colour
    tags or the audio edit list.
    """
    mime = _mime(dst_mp4)
    manifest = build_manifest(
        title=dst_mp4.name,
        job_id=job_id,
        consent_id=consent_id,
        key_id=operator.key_id,
        input_hashes=input_hashes,
    )
    info = c2pa.C2paSignerInfo(
        c2pa.C2paSigningAlg.ES256,
        operator.c2pa_cert_chain_pem.encode(),
        operator.c2pa_key_pem.encode(),
        None,
    )
    with tempfile.TemporaryDirectory(prefix="farm-sign-") as scratch:
        tagged = src_mp4
        if not already_tagged:
            tagged = Path(scratch) / f"tagged{dst_mp4.suffix}"
            _remux_with_tags(src_mp4, tagged, metadata_tags(job_id, consent_id, operator.key_id))
        partial = dst_mp4.with_name(dst_mp4.name + ".partial")
        try:
            with (
                c2pa.Signer.from_info(info) as signer,
                c2pa.Builder(manifest) as builder,
                tagged.open("rb") as source,
                partial.open("w+b") as dest,
            ):
                builder.sign(signer, mime, source, dest)
        except c2pa.C2paError as exc:
            partial.unlink(missing_ok=True)
            raise ManifestError(f"C2PA signing of {dst_mp4.name} failed: {exc}") from None
        partial.replace(dst_mp4)


@dataclass(frozen=True)
class ManifestReading:
    """What the C2PA manifest of a file says, and whether it holds."""

    present: bool
    valid: bool = False
    """The manifest and its hard bindings verify (Valid or Trusted)."""
    trusted: bool = False
    """Signed by a certificate chaining to a CA in the trust list."""
    tampered: bool = False
    """A manifest is there but the file or the manifest was altered."""
    state: str = "absent"
    failures: tuple[str, ...] = ()
    job_id: str | None = None
    consent_id: str | None = None
    key_id: str | None = None
    payload_hex: str | None = None
    input_sha256: dict[str, str] = field(default_factory=dict)


def _context(trust: TrustList) -> c2pa.Context:
    anchors = trust.trust_anchors_pem()
    if anchors:
        return c2pa.Context.from_dict(
            {"verify": {"verify_trust": True}, "trust": {"trust_anchors": anchors}}
        )
    return c2pa.Context.from_dict({"verify": {"verify_trust": True}})


def read_manifest(path: Path, trust: TrustList) -> ManifestReading:
    """Read and validate the C2PA manifest of `path` against the trust list."""
    mime = MIME_BY_SUFFIX.get(path.suffix.lower(), "video/mp4")
    try:
        with (
            _context(trust) as context,
            path.open("rb") as stream,
            c2pa.Reader(mime, stream, None, context) as reader,
        ):
            store = json.loads(reader.json())
    except c2pa.C2paError as exc:
        text = str(exc)
        if "ManifestNotFound" in type(exc).__name__ or "no JUMBF" in text:
            return ManifestReading(present=False)
        # A manifest box that no longer parses is itself evidence of tampering.
        return ManifestReading(
            present=True, tampered=True, state="Unreadable", failures=(text[:200],)
        )
    state = str(store.get("validation_state", "Invalid"))
    results = store.get("validation_results", {}).get("activeManifest", {})
    failures = tuple(str(item.get("code")) for item in results.get("failure", []))
    active = store.get("manifests", {}).get(store.get("active_manifest", ""), {})
    data: dict[str, Any] = {}
    for assertion in active.get("assertions", []):
        if assertion.get("label") == ASSERTION_LABEL:
            data = dict(assertion.get("data", {}))
    trusted = state == "Trusted"
    valid = state in ("Valid", "Trusted")
    tampered = not valid or any("mismatch" in code for code in failures)
    return ManifestReading(
        present=True,
        valid=valid and not tampered,
        trusted=trusted and not tampered,
        tampered=tampered,
        state=state,
        failures=failures,
        job_id=data.get("job_id"),
        consent_id=data.get("consent_id"),
        key_id=data.get("operator_key_id"),
        payload_hex=data.get("watermark_payload"),
        input_sha256=dict(data.get("input_sha256", {})),
    )
