"""Re-voice only whom you swapped: the active speaker of each sentence, and the kept audio."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from farm.media.audio import decode_audio
from farm.pipeline.plan import prepare_job
from farm.pipeline.voice import assemble_voice, plan_voice_units, run_sentence
from farm.spec import JobSpec
from farm.voice.speakers import MIN_FRAMES, ObservedFace, attribute, mouth_opening
from tests.conftest import media_path

TWO_FACES = "video/grid_two_faces_turn_taking_6s.mp4"


def _face(opening: float, eyes: float = 40.0) -> np.ndarray:
    """68 points: eye centres `eyes` apart, inner lips `opening` eye-distances apart."""
    points = np.zeros((68, 2))
    points[36:42] = (0.0, 0.0)
    points[42:48] = (eyes, 0.0)
    points[[61, 62, 63], 1] = 50.0
    points[[67, 66, 65], 1] = 50.0 + opening * eyes
    return points


def test_mouth_opening_is_the_lip_gap_in_eye_distances() -> None:
    assert mouth_opening(_face(0.25)) == pytest.approx(0.25)
    assert mouth_opening(_face(0.25, eyes=80.0)) == pytest.approx(0.25), "independent of size"
    with pytest.raises(ValueError, match="68 landmarks"):
        mouth_opening(np.zeros((5, 2)))


def test_the_face_whose_mouth_moves_says_the_sentence() -> None:
    talking = [0.02, 0.2, 0.05, 0.25, 0.1, 0.3, 0.02, 0.2]
    still = [0.05] * len(talking)

    def frames(swapped: list[float], other: list[float]) -> list[list[ObservedFace]]:
        return [
            [ObservedFace(1, True, _face(a)), ObservedFace(2, False, _face(b))]
            for a, b in zip(swapped, other, strict=True)
        ]

    assert attribute(0, frames(talking, still), frames=8).speaker == "swapped"
    other = attribute(1, frames(still, talking), frames=8)
    assert other.speaker == "other" and other.other_motion > 0.05 and other.swapped_motion == 0
    assert attribute(2, frames(still, still), frames=8).speaker == "unseen", "nobody talks"
    assert attribute(3, [], frames=0).speaker == "unseen"
    brief = frames(talking[: MIN_FRAMES - 1], still[: MIN_FRAMES - 1])
    assert attribute(4, brief, frames=3).speaker == "unseen", "too few frames to say"


@pytest.fixture(scope="module")
def left_face(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The left-hand talker (who speaks 0-3 s), cut from the clip's first frame."""
    with av.open(str(media_path(TWO_FACES))) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="bgr24")
    path = tmp_path_factory.mktemp("reference") / "left.png"
    cv2.imwrite(str(path), frame[:, :360])
    return path


def _spec(tmp_path: Path, pack: Path, reference: Path, revoice: str) -> JobSpec:
    return JobSpec.model_validate(
        {
            "input": media_path(TWO_FACES),
            "output": tmp_path / "out.mp4",
            "face": {"identity": pack, "faces": "reference", "reference": reference},
            "voice": {"mode": "vc", "revoice": revoice},
        }
    )


def test_only_the_swapped_persons_turn_is_revoiced(
    tmp_path: Path, identity_pack: Path, left_face: Path
) -> None:
    """The left talker (0-3 s) is swapped and re-voiced; the right one's turn (3-6 s) keeps its
    decoded PCM exactly, even where the re-voiced sentence's slot would have run into it."""
    plan, _ = prepare_job(_spec(tmp_path, identity_pack, left_face, "auto"))
    units = plan_voice_units(plan)
    assert units is not None and units.revoice == "swapped"
    rate = units.sample_rate
    speakers = {s.index: s for s in units.speakers}
    assert [s.speaker for s in units.speakers] == ["swapped", "other"], units.speakers
    assert speakers[0].swapped_motion > 3 * speakers[0].other_motion
    assert speakers[1].other_motion > 3 * speakers[1].swapped_motion
    (task,) = units.tasks
    turn = task.sentence
    ((start, _path),) = units.kept
    assert turn.speech_stop_sample / rate <= 3.0 < start / rate + 0.5, "cut at the turn"
    assert turn.slot_stop_sample <= start, "the re-voiced slot stops where the kept turn starts"

    timeline, report = assemble_voice(units, plan.spec.voice, [run_sentence(task)])
    assert plan.info.audio is not None
    original = decode_audio(plan.info.path, plan.info.audio)
    assert timeline.shape == original.shape
    assert np.array_equal(timeline[start:], original[start:]), "the right talker untouched"
    voiced = slice(turn.speech_start_sample, turn.speech_stop_sample)
    assert not np.allclose(timeline[voiced], original[voiced], atol=1e-3), "left re-voiced"
    assert report.revoice == "swapped" and len(report.speakers) == 2


def test_revoice_all_voices_every_sentence_without_looking(
    tmp_path: Path, identity_pack: Path, left_face: Path
) -> None:
    plan, _ = prepare_job(_spec(tmp_path, identity_pack, left_face, "all"))
    units = plan_voice_units(plan)
    assert units is not None and units.revoice == "all"
    assert not units.speakers and not units.kept and units.tasks
