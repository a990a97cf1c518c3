"""Invisible video watermark: dithered QIM on the luma means of a coarse, resolution-free cell grid.

Every frame is divided into ``GRID_ROWS x GRID_COLS`` cells whose edges sit at the same *fractions*
of the frame height and width at any resolution, so a downscaled copy has the same cells. Each cell
carries one code bit (80 code bits = 64 payload bits + CRC-16, each on ~29 cells chosen by a fixed
permutation). The embedder moves the cell's mean luma to the nearest point of a lattice::

    bit 0:  STEP * k + dither[cell]
    bit 1:  STEP * k + dither[cell] + STEP / 2

by adding the same small integer offset (ordered-dithered, so the cell mean moves by a fraction of
a grey level) to B, G and R. That changes luma only, by at most STEP / 2 grey levels (RMS
STEP / sqrt(12) = 1.0 for STEP = 3.5, PSNR about 47 dB). Cell means are what codecs and scalers
preserve best (the DC of every transform block), and quantisation-index modulation does not
suffer from interference by the picture itself, unlike additive spread spectrum.

The detector reads cell means of any number of frames at any resolution, turns each into a soft
vote ``cos(2 pi (mean - dither) / STEP)`` (+1 means bit 0, -1 means bit 1), sums votes over
frames and over the cells of each bit, and accepts the codeword only when its CRC matches and the
votes are coherent. The payload is the same in every frame, so any excerpt carries it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import cv2
import numpy as np

from farm.errors import SpecError
from farm.provenance.payload import (
    CODE_BITS,
    codeword_accuracy,
    decode_codeword,
    encode_codeword,
    parse_payload_hex,
)

if TYPE_CHECKING:
    from farm.processing import Frame, ShardContext
    from farm.spec import JobSpec

GRID_ROWS = 36
GRID_COLS = 64
STEP = 3.5
"""Lattice step in grey levels: larger survives harsher coding, smaller keeps PSNR higher."""
SEED = 0x5F4D_5701
"""Fixed, public seed of the cell dither and bit permutation (the detector needs no secret)."""
COHERENCE_MIN = 0.5
"""Share of the vote mass that must agree with the decoded bits; unmarked video scores ~0.2."""


@dataclass(frozen=True)
class WatermarkReading:
    """What a detector found in a clip."""

    found: bool
    """The codeword's CRC matched and the votes were coherent."""
    payload: bytes | None
    """The 8-byte payload when found."""
    bit_accuracy: float | None
    """Share of the 80 decoded code bits equal to the expected codeword: against ``expected``
    when the caller gave one, else 1.0 when found (the CRC vouches for the bits) and None."""
    coherence: float
    """Agreement of the votes with the decoded bits, 0..1 (about 0.2 for unmarked media)."""
    frame_bit_accuracy: float | None
    """Mean share of code bits a single frame (or second of audio) decodes right on its own."""
    units: int
    """Frames (video) or analysis windows (audio) read."""
    raw_bits: tuple[int, ...]


@dataclass(frozen=True)
class _Layout:
    """The fixed code: which bit each cell carries, and each cell's dither."""

    bit_of_cell: np.ndarray  # (rows, cols) int: code-bit index per cell
    dither: np.ndarray  # (rows, cols) float: lattice offset per cell, in [0, STEP)


def _layout() -> _Layout:
    rng = np.random.default_rng(SEED)
    cells = GRID_ROWS * GRID_COLS
    bit_of_cell = (rng.permutation(cells) % CODE_BITS).reshape(GRID_ROWS, GRID_COLS)
    dither = rng.uniform(0.0, STEP, size=(GRID_ROWS, GRID_COLS))
    return _Layout(bit_of_cell=bit_of_cell, dither=dither)


@dataclass(frozen=True)
class _Geometry:
    """Cell edges and the per-pixel expansion for one frame size."""

    height: int
    width: int
    row_edges: np.ndarray  # (GRID_ROWS + 1,)
    col_edges: np.ndarray  # (GRID_COLS + 1,)
    row_counts: np.ndarray
    col_counts: np.ndarray
    area: np.ndarray  # (rows, cols) pixels per cell
    dither_map: np.ndarray  # (height, width) float32: 128 + ordered dither in [-0.5, 0.5)
    mid_grey: np.ndarray  # (height, width) uint8, all 128


_BAYER4 = (
    np.array([[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]], dtype=np.float32) + 0.5
) / 16.0


def _geometry(height: int, width: int) -> _Geometry:
    if height < GRID_ROWS or width < GRID_COLS:
        raise ValueError(
            f"frame {width}x{height} is smaller than the watermark grid {GRID_COLS}x{GRID_ROWS}"
        )
    row_edges = np.round(np.linspace(0, height, GRID_ROWS + 1)).astype(np.int64)
    col_edges = np.round(np.linspace(0, width, GRID_COLS + 1)).astype(np.int64)
    row_counts = np.diff(row_edges)
    col_counts = np.diff(col_edges)
    reps = (-(-height // 4), -(-width // 4))
    dither_map = np.tile(_BAYER4 - 0.5 + 128.0, reps)[:height, :width]
    return _Geometry(
        height=height,
        width=width,
        row_edges=row_edges,
        col_edges=col_edges,
        row_counts=row_counts,
        col_counts=col_counts,
        area=np.outer(row_counts, col_counts).astype(np.float64),
        dither_map=np.ascontiguousarray(dither_map),
        mid_grey=np.full((height, width), 128, dtype=np.uint8),
    )


def _cell_means(gray: np.ndarray, geometry: _Geometry) -> np.ndarray:
    exact_in_int32 = gray.dtype == np.uint8 and gray.shape[0] * gray.shape[1] * 255 < 2**31
    integral = cv2.integral(gray, sdepth=cv2.CV_32S if exact_in_int32 else cv2.CV_64F)
    corners = integral[np.ix_(geometry.row_edges, geometry.col_edges)].astype(np.float64)
    sums = corners[1:, 1:] - corners[:-1, 1:] - corners[1:, :-1] + corners[:-1, :-1]
    return np.asarray(sums / geometry.area)


def _luma(frame_bgr: np.ndarray) -> np.ndarray:
    if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.dtype != np.uint8:
        raise ValueError(
            f"expected a BGR uint8 frame (h, w, 3), got {frame_bgr.dtype} {frame_bgr.shape}"
        )
    return np.asarray(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY))


class VideoWatermarker:
    """Embeds one payload into frames; caches the geometry of the last frame size it saw."""

    def __init__(self, payload: bytes, *, step: float = STEP) -> None:
        self.payload = payload
        self.step = step
        layout = _layout()
        bits = encode_codeword(payload).astype(np.float64)
        # Lattice offset per cell: the cell's dither plus half a step for a 1 bit.
        self._offset = (layout.dither * (step / STEP) + bits[layout.bit_of_cell] * step / 2) % step
        self._geometry: _Geometry | None = None

    def _geometry_for(self, height: int, width: int) -> _Geometry:
        geometry = self._geometry
        if geometry is None or (geometry.height, geometry.width) != (height, width):
            geometry = _geometry(height, width)
            self._geometry = geometry
        return geometry

    def _delta(self, gray: np.ndarray) -> tuple[np.ndarray, _Geometry]:
        """Per-pixel fractional shift (in 8-bit grey levels) that puts every cell on its lattice."""
        geometry = self._geometry_for(*gray.shape)
        means = _cell_means(gray, geometry)
        step = self.step
        target = np.round((means - self._offset) / step) * step + self._offset
        # A target a (nearly) black or white cell cannot reach is skipped rather than moved a
        # whole step the other way: the detector copes with a few silent cells, PSNR would not.
        reachable = (target >= 0.5) & (target <= 254.5)
        delta = np.where(reachable, target - means, 0.0).astype(np.float32)
        full = np.repeat(np.repeat(delta, geometry.row_counts, axis=0), geometry.col_counts, axis=1)
        return full, geometry

    def embed_luma(self, luma: np.ndarray, bit_depth: int = 8) -> np.ndarray:
        """Watermark a luma plane (uint8, or uint16 for deeper video) directly.

        Working on the decoded Y plane leaves chroma untouched and skips the YUV->RGB->YUV round
        trip, which is lossy for out-of-gamut colours and costs time on every frame.
        """
        if bit_depth <= 8:
            full, geometry = self._delta(luma)
            biased = cv2.convertScaleAbs(cv2.add(full, geometry.dither_map))
            up = cv2.subtract(biased, geometry.mid_grey)
            down = cv2.subtract(geometry.mid_grey, biased)
            return np.asarray(cv2.subtract(cv2.add(luma, up), down))
        scale = float(1 << (bit_depth - 8))
        full, geometry = self._delta(luma.astype(np.float32) / scale)
        dither = geometry.dither_map - 128.0
        shift = np.round(full * scale + dither)
        top = float((1 << bit_depth) - 1)
        return np.clip(luma.astype(np.float32) + shift, 0, top).astype(luma.dtype)

    def embed(self, frame_bgr: np.ndarray) -> np.ndarray:
        """Return a watermarked copy of one BGR uint8 frame."""
        gray = _luma(frame_bgr)
        full, geometry = self._delta(gray)
        # 128 + delta + ordered dither, rounded: a per-pixel integer shift (biased by 128) whose
        # cell mean is the fractional delta.
        biased = cv2.convertScaleAbs(cv2.add(full, geometry.dither_map))
        up = cv2.cvtColor(cv2.subtract(biased, geometry.mid_grey), cv2.COLOR_GRAY2BGR)
        down = cv2.cvtColor(cv2.subtract(geometry.mid_grey, biased), cv2.COLOR_GRAY2BGR)
        return np.asarray(cv2.subtract(cv2.add(frame_bgr, up), down))


def luma_levels(frame: Any) -> np.ndarray:
    """The Y plane of a decoded PyAV frame in 8-bit grey levels (float for deeper video)."""
    planes = None
    if frame.format.name.startswith(("yuv", "gray", "nv")):
        try:
            planes = frame.to_ndarray()
        except (ValueError, NotImplementedError, TypeError):
            planes = None
    if planes is None:
        return np.asarray(frame.reformat(format="gray").to_ndarray(), dtype=np.uint8)
    luma = planes[0] if planes.ndim == 3 else planes[: frame.height]
    depth = int(frame.format.components[0].bits)
    if depth <= 8:
        return np.ascontiguousarray(luma, dtype=np.uint8)
    return np.ascontiguousarray(luma, dtype=np.float32) / float(1 << (depth - 8))


def embed_video_watermark(
    frame_bgr: np.ndarray, payload: bytes, *, step: float = STEP
) -> np.ndarray:
    """Watermark one BGR uint8 frame with an 8-byte payload (use a `VideoWatermarker` for many)."""
    return VideoWatermarker(payload, step=step).embed(frame_bgr)


class VideoWatermarkDetector:
    """Accumulates cell phasors frame by frame; `reading()` decodes what has been seen so far.

    A decoder pipeline may shift every mean by a constant (PyAV's BGR -> yuv420p -> BGR round trip
    darkens by ~1.8 grey levels), which rotates every phasor by the same angle. The detector
    estimates that angle from the squared phasors (squaring removes the bits), so it needs no
    calibration; the remaining half-turn ambiguity is settled by the CRC.
    """

    def __init__(self, *, step: float = STEP) -> None:
        self.step = step
        layout = _layout()
        self._bit_of_cell = layout.bit_of_cell.ravel()
        self._dither = (layout.dither * (step / STEP)).ravel()
        self._phasors = np.zeros(GRID_ROWS * GRID_COLS, dtype=np.complex128)
        self._squares = 0j
        self._frame_sums: list[np.ndarray] = []
        self._geometries: dict[tuple[int, int], _Geometry] = {}

    def add(self, frame_bgr: np.ndarray) -> None:
        self.add_luma(_luma(frame_bgr))

    def add_luma(self, gray: np.ndarray) -> None:
        """Add one frame's luma: uint8 grey levels, or float already scaled to 8-bit levels."""
        shape = (int(gray.shape[0]), int(gray.shape[1]))
        geometry = self._geometries.get(shape)
        if geometry is None:
            geometry = _geometry(*shape)
            self._geometries = {shape: geometry}
        means = _cell_means(gray, geometry).ravel()
        phasors = np.exp(2j * np.pi * (means - self._dither) / self.step)
        squares = complex(np.mean(phasors * phasors))
        # Weight each frame by how clearly it carries a lattice at all (|mean of squares|, which
        # ignores the bits): a codec's intra frames keep the mark, while its predicted frames at
        # high QP can smear it along the motion, and those should not drown the good ones.
        weight = abs(squares)
        self._phasors += weight * phasors
        self._squares += weight * squares
        self._frame_sums.append(_bit_sums(self._bit_of_cell, phasors))

    def reading(self, expected: bytes | None = None) -> WatermarkReading:
        return _reading(self._phasors, self._squares, self._bit_of_cell, self._frame_sums, expected)


def _bit_sums(bit_of_cell: np.ndarray, values: np.ndarray) -> np.ndarray:
    real = np.bincount(bit_of_cell, weights=values.real, minlength=CODE_BITS)
    imag = np.bincount(bit_of_cell, weights=values.imag, minlength=CODE_BITS)
    return np.asarray(real + 1j * imag)


def _reading(
    phasors: np.ndarray,
    squares: complex,
    bit_of_cell: np.ndarray,
    unit_sums: Sequence[np.ndarray],
    expected: bytes | None,
) -> WatermarkReading:
    """Decode accumulated phasors (angle 0 means bit 0, a half turn bit 1) grouped by code bit.

    ``squares`` is the sum of the squared phasors: its angle is twice the common rotation.
    """
    rotation = np.exp(-0.5j * np.angle(squares)) if squares != 0 else 1.0 + 0j
    unit_turn = rotation
    votes = (phasors * rotation).real
    bits = (np.bincount(bit_of_cell, weights=votes, minlength=CODE_BITS) < 0).astype(np.uint8)
    payload = decode_codeword(bits)
    if payload is None:  # the half-turn ambiguity: try the opposite rotation (the CRC settles it)
        flipped = (1 - bits).astype(np.uint8)
        flipped_payload = decode_codeword(flipped)
        if flipped_payload is not None:
            unit_turn, votes, bits, payload = -rotation, -votes, flipped, flipped_payload
    sums = np.bincount(bit_of_cell, weights=votes, minlength=CODE_BITS)
    mass = float(np.abs(votes).sum())
    coherence = float(np.abs(sums).sum() / mass) if mass > 0 else 0.0
    found = payload is not None and coherence >= COHERENCE_MIN and bool(unit_sums)
    reference, accuracy = codeword_accuracy(bits, expected, found)
    frame_accuracy = (
        float(np.mean([np.mean(((s * unit_turn).real < 0) == reference) for s in unit_sums]))
        if unit_sums and (found or expected is not None)
        else None
    )
    return WatermarkReading(
        found=found,
        payload=payload if found else None,
        bit_accuracy=accuracy,
        coherence=coherence,
        frame_bit_accuracy=frame_accuracy,
        units=len(unit_sums),
        raw_bits=tuple(int(b) for b in bits),
    )


def detect_video_watermark(
    frames: Iterable[np.ndarray], *, expected: bytes | None = None, step: float = STEP
) -> WatermarkReading:
    """Read the watermark from BGR uint8 frames of any size (decoded, scaled, excerpted)."""
    detector = VideoWatermarkDetector(step=step)
    for frame in frames:
        detector.add(frame)
    return detector.reading(expected)


class WatermarkProcessor:
    """`FrameProcessor` that watermarks every frame with the job's payload."""

    name: ClassVar[str] = "watermark"
    needs_pixels: ClassVar[bool] = True

    def __init__(self, payload: bytes) -> None:
        self._watermarker = VideoWatermarker(payload)

    def prepare(self, context: ShardContext) -> None:
        return None

    def process(self, frames: Sequence[Frame], indices: Sequence[int]) -> list[Frame]:
        return [self._watermarker.embed(frame) for frame in frames]

    def mark_luma(self, luma: np.ndarray, bit_depth: int) -> np.ndarray:
        """The preferred path: the worker hands over the Y plane of the frame it will encode."""
        return self._watermarker.embed_luma(luma, bit_depth)

    def close(self) -> None:
        return None


def build_watermark_processor(spec: JobSpec) -> WatermarkProcessor:
    """The registry's factory: reads ``spec.provenance.payload_hex`` (16 hex digits)."""
    provenance: Any = getattr(spec, "provenance", None)
    payload_hex = getattr(provenance, "payload_hex", None)
    if not isinstance(payload_hex, str):
        raise SpecError(
            "the watermark stage needs spec.provenance.payload_hex (16 hex digits, from "
            "farm.provenance.watermark_payload(job_id, key_id).hex()); the job has none"
        )
    try:
        payload = parse_payload_hex(payload_hex)
    except ValueError as exc:
        raise SpecError(f"invalid job setting provenance.payload_hex: {exc}") from None
    return WatermarkProcessor(payload)
