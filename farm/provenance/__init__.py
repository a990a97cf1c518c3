"""Provenance: consent in, provenance out.

Consent records signed with the operator's Ed25519 key gate every job (`check_consent`); outputs
carry an invisible video watermark (`build_watermark_processor`), an audio watermark
(`embed_audio_watermark`), a C2PA manifest and container tags (`sign_output`); `verify_file` reads
them back; `AuditLog` records every job.
"""

from farm.provenance.audio_watermark import detect_audio_watermark, embed_audio_watermark
from farm.provenance.audit import AuditEntry, AuditError, AuditLog
from farm.provenance.consent import ConsentRecord, check_consent, create_consent, sha256_file
from farm.provenance.keys import (
    Operator,
    OperatorKeyError,
    TrustList,
    farm_home,
    init_keys,
    load_operator,
    load_trust,
    trust_key,
)
from farm.provenance.manifest import ManifestReading, read_manifest, sign_output
from farm.provenance.payload import watermark_payload
from farm.provenance.settings import ProvenanceSettings
from farm.provenance.verify import Verdict, VerifyReport, verify_file
from farm.provenance.video_watermark import (
    VideoWatermarker,
    WatermarkProcessor,
    WatermarkReading,
    build_watermark_processor,
    detect_video_watermark,
    embed_video_watermark,
)

__all__ = [
    "AuditEntry",
    "AuditError",
    "AuditLog",
    "ConsentRecord",
    "ManifestReading",
    "Operator",
    "OperatorKeyError",
    "ProvenanceSettings",
    "TrustList",
    "Verdict",
    "VerifyReport",
    "VideoWatermarker",
    "WatermarkProcessor",
    "WatermarkReading",
    "build_watermark_processor",
    "check_consent",
    "create_consent",
    "detect_audio_watermark",
    "detect_video_watermark",
    "embed_audio_watermark",
    "embed_video_watermark",
    "farm_home",
    "init_keys",
    "load_operator",
    "load_trust",
    "read_manifest",
    "sha256_file",
    "sign_output",
    "trust_key",
    "verify_file",
    "watermark_payload",
]
