"""The watermark payload: 32 bits of the job id and 32 bits of the operator key id, plus a CRC.

::

    payload (8 bytes)            codeword (80 bits, what the watermarks carry)
    | job hash 4 | key hash 4 |  | 64 payload bits | CRC-16/CCITT of the payload |

The CRC decides "found": a detector that reads a codeword whose CRC does not match reports no
watermark, so unwatermarked media reads as not found.
"""

from __future__ import annotations

import hashlib

import numpy as np

PAYLOAD_BYTES = 8
PAYLOAD_BITS = PAYLOAD_BYTES * 8
CRC_BITS = 16
CODE_BITS = PAYLOAD_BITS + CRC_BITS


def _short_hash(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()[:4]


def watermark_payload(job_id: str, key_id: str) -> bytes:
    """The 8-byte payload for a job: sha256(job_id)[:4] + sha256(key_id)[:4]."""
    return _short_hash(job_id) + _short_hash(key_id)


def payload_matches_job(payload: bytes, job_id: str) -> bool:
    """True when a decoded payload belongs to ``job_id``."""
    return payload[:4] == _short_hash(job_id)


def payload_matches_key(payload: bytes, key_id: str) -> bool:
    """True when a decoded payload was embedded under the operator key ``key_id``."""
    return payload[4:8] == _short_hash(key_id)


def crc16_ccitt(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def encode_codeword(payload: bytes) -> np.ndarray:
    """The 80 code bits (0/1, ``uint8``) for an 8-byte payload."""
    if len(payload) != PAYLOAD_BYTES:
        raise ValueError(f"a watermark payload is {PAYLOAD_BYTES} bytes, not {len(payload)}")
    blob = payload + crc16_ccitt(payload).to_bytes(2, "big")
    return np.unpackbits(np.frombuffer(blob, dtype=np.uint8))


def decode_codeword(bits: np.ndarray) -> bytes | None:
    """The payload if the CRC of 80 decoded bits matches, else None."""
    blob = np.packbits(np.asarray(bits, dtype=np.uint8)[:CODE_BITS]).tobytes()
    payload, crc = blob[:PAYLOAD_BYTES], int.from_bytes(blob[PAYLOAD_BYTES:], "big")
    return payload if crc16_ccitt(payload) == crc else None


def parse_payload_hex(text: str) -> bytes:
    """Parse a 16-hex-digit payload (as carried in a job spec); raise ValueError otherwise."""
    problem = f"watermark payload must be {PAYLOAD_BYTES * 2} hex digits, not {text!r}"
    try:
        payload = bytes.fromhex(text)
    except ValueError:
        raise ValueError(problem) from None
    if len(payload) != PAYLOAD_BYTES:
        raise ValueError(problem)
    return payload


# A rate-1/2, constraint-length-7 convolutional code (generators 171, 133 octal, the NASA/802.11
# code), terminated with six zero bits, decoded with soft-decision Viterbi. The audio watermark uses
# it: its per-bit SNR is lower than the video's, and the code buys ~5 dB.
_K = 7
_GENERATORS = (0o171, 0o133)
_STATES = 1 << (_K - 1)


def _parity(value: int) -> int:
    return bin(value).count("1") & 1


def convolutional_encode(bits: np.ndarray) -> np.ndarray:
    """Encode 0/1 bits; returns ``2 * (len(bits) + 6)`` code bits."""
    state = 0
    out: list[int] = []
    for bit in [*(int(b) for b in bits), *([0] * (_K - 1))]:
        register = (bit << (_K - 1)) | state
        out.extend(_parity(register & g) for g in _GENERATORS)
        state = register >> 1
    return np.array(out, dtype=np.uint8)


def viterbi_decode(soft: np.ndarray, info_bits: int) -> np.ndarray:
    """Decode soft values (positive means 0) of `convolutional_encode`; return the info bits."""
    steps = info_bits + _K - 1
    soft = np.asarray(soft, dtype=np.float64)[: 2 * steps].reshape(steps, 2)
    nxt = np.arange(_STATES)
    bit_in = nxt >> (_K - 2)
    # The two predecessors of each next state, and the code bits of each transition.
    prev = np.stack([((nxt << 1) & (_STATES - 1)), ((nxt << 1) & (_STATES - 1)) | 1])
    registers = (bit_in << (_K - 1)) | prev
    parities = [[[_parity(int(r) & g) for r in row] for row in registers] for g in _GENERATORS]
    signs = 1.0 - 2.0 * np.array(parities, dtype=np.float64)  # (outputs, predecessors, states)
    metric = np.full(_STATES, -np.inf)
    metric[0] = 0.0
    choices = np.zeros((steps, _STATES), dtype=np.int8)
    for step in range(steps):
        branch = signs[0] * soft[step, 0] + signs[1] * soft[step, 1]
        candidates = metric[prev] + branch
        choice = np.argmax(candidates, axis=0)
        choices[step] = choice
        metric = candidates[choice, nxt]
    state = 0  # terminated: the path ends in state 0
    decoded = np.zeros(steps, dtype=np.uint8)
    for step in range(steps - 1, -1, -1):
        decoded[step] = state >> (_K - 2)
        state = int(prev[choices[step, state], state])
    return decoded[:info_bits]


def codeword_accuracy(
    bits: np.ndarray, expected: bytes | None, found: bool
) -> tuple[np.ndarray, float | None]:
    """The codeword to score against and the share of decoded bits that match it.

    Against ``expected`` when the caller knows the payload; otherwise the decoded bits vouch for
    themselves (1.0) when the CRC held, and there is nothing to score when it did not.
    """
    if expected is not None:
        reference = encode_codeword(expected)
        return reference, float(np.mean(bits == reference))
    return bits, (1.0 if found else None)
