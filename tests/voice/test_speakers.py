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
def right_face(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The right-hand talker (who speaks 3-6 s), cut from the clip's first frame."""
    with av.open(str(media_path(TWO_FACES))) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="bgr24")
    path = tmp_path_factory.mktemp("reference") / "right.png"
    cv2.imwrite(str(path), frame[:, 360:])
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
    tmp_path: Path, identity_pack: Path, right_face: Path
) -> None:
    """The left talker's turn (0-3 s) keeps its decoded PCM exactly; the right one's changes."""
    plan, _ = prepare_job(_spec(tmp_path, identity_pack, right_face, "auto"))
    units = plan_voice_units(plan)
    assert units is not None and units.revoice == "swapped"
    rate = units.sample_rate
    speakers = {s.index: s for s in units.speakers}
    assert [s.speaker for s in units.speakers] == ["other", "swapped"], units.speakers
    assert speakers[0].other_motion > 3 * speakers[0].swapped_motion
    assert speakers[1].swapped_motion > 3 * speakers[1].other_motion
    assert [task.sentence.index for task in units.tasks] == [1]

    timeline, report = assemble_voice(
        units, plan.spec.voice, [run_sentence(t) for t in units.tasks]
    )
    assert plan.info.audio is not None
    original = decode_audio(plan.info.path, plan.info.audio)
    assert timeline.shape == original.shape
    ((start, _path),) = units.kept
    turn = units.tasks[0].sentence
    assert start / rate < 3.0 <= turn.speech_start_sample / rate, "cut at the turn"
    kept_stop = turn.start_sample
    assert np.array_equal(timeline[start:kept_stop], original[start:kept_stop]), "left untouched"
    voiced = slice(turn.speech_start_sample, turn.speech_stop_sample)
    assert not np.allclose(timeline[voiced], original[voiced], atol=1e-3), "right re-voiced"
    assert report.revoice == "swapped" and len(report.speakers) == 2


def test_revoice_all_voices_every_sentence_without_looking(
    tmp_path: Path, identity_pack: Path, right_face: Path
) -> None:
    plan, _ = prepare_job(_spec(tmp_path, identity_pack, right_face, "all"))
    units = plan_voice_units(plan)
    assert units is not None and units.revoice == "all"
    assert not units.speakers and not units.kept and units.tasks
