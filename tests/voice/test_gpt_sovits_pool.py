"""A pool of fake GPT-SoVITS api_v2 servers: routing, health checks, weights, retries, failover.

Every timing is injected (a step clock for cool-downs, a recording sleep for back-offs) or tiny,
so the whole file runs in about a second.
"""

from __future__ import annotations

import pickle
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from farm.devices import WorkerResources
from farm.voice.settings import GptSovitsSettings, VoiceSettings
from farm.voice.synth import SynthRequest
from farm.voice.synth.gpt_sovits import GptSovitsSynth
from farm.voice.synth.gpt_sovits_pool import (
    GptSovitsPool,
    GptSovitsRejected,
    GptSovitsUnavailable,
    ServerRegistry,
)
from tests.conftest import media_path
from tests.voice.fake_gpt_sovits import OUTPUT_RATE, FakeServer, voice_pitch

COOLDOWN_S = 30.0


class StepClock:
    """A clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fakes() -> Iterator[list[FakeServer]]:
    started = [FakeServer().start() for _ in range(3)]
    yield started
    for fake in started:
        fake.stop()


@pytest.fixture
def refs(tmp_path: Path) -> list[Path]:
    """A 6 s LJSpeech clip with its transcript beside it."""
    dst = tmp_path / "lj.wav"
    shutil.copy(media_path("audio/ljspeech_LJ001-0001.wav"), dst)
    dst.with_suffix(".txt").write_text("Printing, in the only sense", encoding="utf-8")
    return [dst]


@pytest.fixture
def weights(tmp_path: Path) -> Callable[[str], dict[str, str]]:
    """name → the gpt_weights/sovits_weights settings of that identity (files that exist)."""

    def make(name: str) -> dict[str, str]:
        gpt, sovits = tmp_path / f"{name}.ckpt", tmp_path / f"{name}.pth"
        gpt.write_bytes(b"s1")
        sovits.write_bytes(b"s2")
        return {"gpt_weights": str(gpt), "sovits_weights": str(sovits)}

    return make


def _dead_url() -> str:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _settings(urls: list[str], **gpt: object) -> VoiceSettings:
    fast: dict[str, object] = {
        "backoff_s": 0.0,
        "timeout_s": 2.0,
        "connect_timeout_s": 0.5,
        "cooldown_s": COOLDOWN_S,
    }
    cfg = GptSovitsSettings(urls=tuple(urls), **(fast | gpt))  # type: ignore[arg-type]
    return VoiceSettings(mode="tts", tts_backend="gpt-sovits", gpt_sovits=cfg)


def _synth(
    cfg: VoiceSettings,
    refs: list[Path],
    *,
    clock: StepClock | None = None,
    sleeps: list[float] | None = None,
    registry: ServerRegistry | None = None,
) -> GptSovitsSynth:
    pool = GptSovitsPool(
        cfg.gpt_sovits,
        registry=registry,
        clock=clock or StepClock(),
        sleep=sleeps.append if sleeps is not None else lambda _s: None,
    )
    return GptSovitsSynth(cfg, refs, pool=pool)


def _say(synth: GptSovitsSynth, index: int, language: str = "en") -> np.ndarray:
    request = SynthRequest(
        index=index,
        text=f"sentence number {index}",
        language=language,
        source=np.zeros(10, np.float32),
        sample_rate=OUTPUT_RATE,
        seed=1000 + index,
    )
    samples, rate = synth.synthesize(request)
    assert rate == OUTPUT_RATE and samples.size > 0
    return samples


def _served(fake: FakeServer) -> list[int]:
    """The sentence indices `fake` answered or was sent, in order."""
    return [r["seed"] - 1000 for r in fake.behaviour.requests]


def _pitch(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.argmax(spectrum[1:]) + 1) * OUTPUT_RATE / samples.size


def test_url_is_the_one_server_spelling_of_urls() -> None:
    one = GptSovitsSettings(url="http://gpu1:9880/")
    assert one.urls == ("http://gpu1:9880",) and one.url == "http://gpu1:9880"
    pool = GptSovitsSettings(urls=("http://gpu1:9880", "http://gpu2:9880/"))
    assert pool.url == "http://gpu1:9880" and pool.urls[1] == "http://gpu2:9880"
    assert GptSovitsSettings.model_validate(pool.model_dump()) == pool, "round-trips"
    assert GptSovitsSettings().urls == (GptSovitsSettings().url,)
    for bad, why in [
        ({"urls": ()}, "at least one"),
        ({"url": "http://a:1", "urls": ("http://b:1",)}, "not urls"),
        ({"urls": ("http://a:1", "http://a:1/")}, "twice"),
        ({"url": "gpu1:9880"}, "http"),
        ({"gpt_weights": ""}, "at least 1 character"),
    ]:
        with pytest.raises(ValidationError, match=why):
            GptSovitsSettings(**bad)  # type: ignore[arg-type]


def test_weights_load_before_a_servers_first_sentence_and_switch_with_the_identity(
    fakes: list[FakeServer], refs: list[Path], weights: Callable[[str], dict[str, str]]
) -> None:
    fake = fakes[0]
    worker = ServerRegistry()  # one worker, two identities' jobs on the same server
    alice = _synth(_settings([fake.url], **weights("alice")), refs, registry=worker)
    bob = _synth(_settings([fake.url], **weights("bob")), refs, registry=worker)
    alice_hz = voice_pitch(weights("alice")["gpt_weights"], weights("alice")["sovits_weights"])
    bob_hz = voice_pitch(weights("bob")["gpt_weights"], weights("bob")["sovits_weights"])
    assert alice_hz is not None and bob_hz is not None and alice_hz != bob_hz

    takes = [_say(alice, i) for i in range(3)]
    calls = fake.behaviour.calls
    assert calls[0] == "GET /control", "a health check before the first use"
    assert calls[1].startswith("GET /set_gpt_weights?weights_path=") and "alice.ckpt" in calls[1]
    assert calls[2].startswith("GET /set_sovits_weights?weights_path=") and "alice.pth" in calls[2]
    assert calls[3:] == ["POST /tts"] * 3, "loaded once, checked once"
    assert all(abs(_pitch(t) - alice_hz) < 3 for t in takes), "the take is alice's weights"

    assert abs(_pitch(_say(bob, 3)) - bob_hz) < 3
    assert abs(_pitch(_say(alice, 4)) - alice_hz) < 3, "alice's job loads hers back"
    assert len(fake.behaviour.weight_loads()) == 6 and fake.behaviour.health_checks() == 1


def test_a_job_without_weights_refuses_a_server_holding_another_identitys(
    fakes: list[FakeServer], refs: list[Path], weights: Callable[[str], dict[str, str]]
) -> None:
    worker = ServerRegistry()
    _say(_synth(_settings([fakes[0].url], **weights("alice")), refs, registry=worker), 0)
    plain = _synth(_settings([fakes[0].url]), refs, registry=worker)
    with pytest.raises(GptSovitsRejected, match=r"holds the gpt weights .*alice\.ckpt") as err:
        _say(plain, 1)
    assert not err.value.retryable and len(fakes[0].behaviour.requests) == 1


def test_weights_are_loaded_again_after_the_server_was_down_and_came_back(
    fakes: list[FakeServer], refs: list[Path], weights: Callable[[str], dict[str, str]]
) -> None:
    fake, clock = fakes[0], StepClock()
    synth = _synth(_settings([fake.url], **weights("alice")), refs, clock=clock)
    alice_hz = voice_pitch(weights("alice")["gpt_weights"], weights("alice")["sovits_weights"])
    _say(synth, 0)
    fake.die()
    with pytest.raises(GptSovitsUnavailable, match=f"no GPT-SoVITS server is healthy.*{fake.url}"):
        _say(synth, 1)
    fake.restart()
    assert fake.behaviour.gpt_weights is None, "a restarted server has its own weights"
    with pytest.raises(GptSovitsUnavailable, match="skipped for 30 s"):
        _say(synth, 1)  # still cooling down: not even checked
    clock.now += COOLDOWN_S
    assert abs(_pitch(_say(synth, 1)) - alice_hz) < 3
    assert len(fake.behaviour.weight_loads()) == 4
    assert fake.behaviour.gpt_weights == weights("alice")["gpt_weights"]


def test_a_broken_connection_reloads_the_weights_but_a_500_does_not(
    fakes: list[FakeServer], refs: list[Path], weights: Callable[[str], dict[str, str]]
) -> None:
    """A dropped connection may have been a restart (api_v2 restarts by exec'ing itself)."""
    fake = fakes[0]
    synth = _synth(_settings([fake.url], retries=2, **weights("alice")), refs)
    _say(synth, 0)
    fake.behaviour.fail_next = 1
    _say(synth, 1)
    assert len(fake.behaviour.weight_loads()) == 2, "a 500 came from the same process"
    fake.behaviour.drop_next = 1
    _say(synth, 2)
    assert len(fake.behaviour.weight_loads()) == 4
    assert fake.behaviour.health_checks() == 3, "first use, and after each failed try"


def test_a_server_that_dies_mid_job_hands_its_sentences_to_the_next(
    fakes: list[FakeServer], refs: list[Path], weights: Callable[[str], dict[str, str]]
) -> None:
    a, b = fakes[0], fakes[1]
    b.behaviour.die_after = 1
    sleeps: list[float] = []
    synth = _synth(_settings([a.url, b.url], **weights("alice")), refs, sleeps=sleeps)
    alice_hz = voice_pitch(weights("alice")["gpt_weights"], weights("alice")["sovits_weights"])
    takes = [_say(synth, i) for i in range(6)]
    assert not b.alive
    assert _served(b) == [1], "b died answering sentence 1: sentence 3 found its port closed"
    assert _served(a) == [0, 2, 3, 4, 5], "then a took b's sentences, 5 without asking b again"
    assert all(abs(_pitch(t) - alice_hz) < 3 for t in takes)
    assert len(a.behaviour.weight_loads()) == 2 and len(b.behaviour.weight_loads()) == 2
    assert sleeps == [0.0], "one retry"


def test_a_lone_server_dying_fails_the_sentence_retryably_naming_its_url(
    fakes: list[FakeServer], refs: list[Path]
) -> None:
    fake = fakes[0]
    fake.behaviour.die_after = 1
    synth = _synth(_settings([fake.url]), refs)
    _say(synth, 0)
    with pytest.raises(GptSovitsUnavailable) as err:
        _say(synth, 1)
    message = err.value.one_line()
    assert err.value.retryable and fake.url in message and "ConnectError" in message
    assert message.startswith("no GPT-SoVITS server is healthy for sentence 1")
    again = pickle.loads(pickle.dumps(err.value))  # it crosses Ray's process boundary
    assert isinstance(again, GptSovitsUnavailable) and again.retryable


def test_routing_follows_the_sentence_index(fakes: list[FakeServer], refs: list[Path]) -> None:
    cfg = _settings([f.url for f in fakes])
    first = _synth(cfg, refs)
    for i in range(9):
        _say(first, i)
    assert [_served(f) for f in fakes] == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    for fake in fakes:
        fake.behaviour.requests.clear()
    second = _synth(cfg, refs)  # another worker, another order: the same routing
    for i in reversed(range(9)):
        _say(second, i)
    assert [sorted(_served(f)) for f in fakes] == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]


def test_health_checks_before_first_use_and_after_a_failure_with_a_cool_down(
    fakes: list[FakeServer], refs: list[Path]
) -> None:
    a, b = fakes[0], fakes[1]
    a.behaviour.sick = True  # 503 to everything, the health check included
    clock, sleeps = StepClock(), []
    synth = _synth(_settings([a.url, b.url], backoff_s=0.01), refs, clock=clock, sleeps=sleeps)
    _say(synth, 0)
    _say(synth, 2)
    assert a.behaviour.calls == ["GET /control"], "checked once, then skipped while cooling down"
    assert _served(b) == [0, 2] and b.behaviour.health_checks() == 1
    clock.now += COOLDOWN_S
    a.behaviour.sick = False
    _say(synth, 4)
    assert _served(a) == [4] and a.behaviour.health_checks() == 2
    b.behaviour.fail_next = 1
    _say(synth, 1)
    assert _served(b) == [0, 2, 1, 1] and b.behaviour.health_checks() == 2
    assert sleeps == [0.01], "retried on b after its check passed"
    assert a.behaviour.weight_loads() == [], "no weights set: the servers keep their own"


def test_retries_back_off_exponentially_then_fail_retryably(
    fakes: list[FakeServer], refs: list[Path]
) -> None:
    fake, sleeps = fakes[0], []
    fake.behaviour.fail_next = 5
    synth = _synth(_settings([fake.url], retries=2, backoff_s=0.01), refs, sleeps=sleeps)
    with pytest.raises(GptSovitsUnavailable, match=r"after 3 tries \(.*HTTP 500") as err:
        _say(synth, 0)
    assert err.value.retryable and sleeps == [0.01, 0.02] and len(fake.behaviour.requests) == 3


def test_a_rejected_sentence_is_neither_retried_nor_failed_over(
    fakes: list[FakeServer], refs: list[Path]
) -> None:
    a, b = fakes[0], fakes[1]
    synth = _synth(_settings([a.url, b.url], retries=3), refs)
    with pytest.raises(GptSovitsRejected, match="text_lang: xx is not supported") as err:
        _say(synth, 0, language="xx")
    assert not err.value.retryable and len(a.behaviour.requests) == 1 and b.behaviour.calls == []


def test_weights_the_server_cannot_load_are_a_clear_error(
    fakes: list[FakeServer], refs: list[Path], tmp_path: Path
) -> None:
    missing = str(tmp_path / "nobody.ckpt")
    synth = _synth(_settings([fakes[0].url], gpt_weights=missing, retries=3), refs)
    with pytest.raises(GptSovitsRejected, match=r"voice\.gpt_sovits\.gpt_weights") as err:
        _say(synth, 0)
    assert missing in str(err.value) and "No such file" in str(err.value)
    assert not err.value.retryable and fakes[0].behaviour.requests == []


def test_no_healthy_server_names_every_url(refs: list[Path]) -> None:
    urls = [_dead_url(), _dead_url()]
    with pytest.raises(GptSovitsUnavailable, match="no GPT-SoVITS server is healthy") as err:
        _say(_synth(_settings(urls), refs), 0)
    assert all(url in str(err.value) for url in urls) and err.value.retryable


def test_synths_of_one_worker_share_what_they_learnt(
    fakes: list[FakeServer], refs: list[Path], weights: Callable[[str], dict[str, str]]
) -> None:
    """A synth per sentence (as `synthesize_sentence` builds them) on one worker checks and
    loads once; without the worker's resources each synth starts from scratch, still right."""
    fake = fakes[0]
    cfg = _settings([fake.url], **weights("alice"))
    resources = WorkerResources()
    for i in range(3):
        synth = GptSovitsSynth(cfg, refs, resources=resources)
        _say(synth, i)
        synth.close()
    assert fake.behaviour.health_checks() == 1 and len(fake.behaviour.weight_loads()) == 2
    synth = GptSovitsSynth(cfg, refs)
    _say(synth, 3)
    synth.close()
    assert fake.behaviour.health_checks() == 2 and len(fake.behaviour.weight_loads()) == 4
