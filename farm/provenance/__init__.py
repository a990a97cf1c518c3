"""Provenance: consent in, provenance out.

Consent records signed with the operator's Ed25519 key gate every job
(`farm.provenance.consent.check_consent`); outputs carry an invisible video watermark
(`farm.provenance.video_watermark`), an audio watermark (`farm.provenance.audio_watermark`), a
C2PA manifest and container tags (`farm.provenance.manifest.sign_output`);
`farm.provenance.verify.verify_file` reads them back; `farm.provenance.audit.AuditLog` records
every job.

Nothing is imported here: the package is on every job's import path (settings, consent), and its
watermark modules pull in SciPy, which costs about a second per process.
"""
