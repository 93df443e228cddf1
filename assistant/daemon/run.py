"""`assistant run`: the long-running assistant, as systemd runs it.

Loads the model and warms the prompt cache, then serves turns from the voice pipeline and the
control socket, one at a time, each cancellable. systemd hears READY=1 only when everything is
loaded, WATCHDOG=1 from the main loop, STATUS= lines and STOPPING=1. SIGTERM ends within a few
seconds; SIGHUP reloads config.yaml and the skills without reloading the model.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

from assistant.budget import plan_for_settings
from assistant.config import ConfigError, check_model_paths, load_settings, state_dir
from assistant.daemon.control import ControlServer, Hub, default_socket_path
from assistant.daemon.notify import notify, watchdog_interval
from assistant.doctor import MICROPHONE_FIX, microphone_problem
from assistant.llm.conversation import Conversation
from assistant.llm.engine import Engine
from assistant.llm.sampling import Sampler
from assistant.skills.registry import Registry, load_registry
from assistant.skills.sdk import SkillContext
from assistant.turn import TurnManager

log = logging.getLogger("assistant.daemon")

SPOKEN = ("text", "error", "confirm")


class Daemon:
    def __init__(self, config_path: Path, text_only: bool = False):
        self.config_path = config_path
        self.settings = load_settings(config_path)
        check_model_paths(self.settings, voice=not text_only)
        if not text_only and (problem := microphone_problem(self.settings)):  # retried below, said once here
            log.warning("%s; %s", problem, MICROPHONE_FIX)
        self.hub = Hub()
        self.turn_lock = threading.Lock()
        self.cancel: threading.Event | None = None
        self.stopping = threading.Event()
        self.reload_requested = threading.Event()
        self.background_stop = threading.Event()
        self.voice = None

        notify("STATUS=loading the language model")
        llm = self.settings.llm
        self.engine = Engine(llm.model_dir, backend=llm.backend, threads=llm.threads,
                             kv_cache_len=llm.kv_cache_len, provider=llm.axengine_provider)  # fmt: skip
        self.load_skills()
        if not text_only:
            notify("STATUS=loading the speech models")
            self.voice = self._voice()
        self.socket_path = self.settings.control.socket or default_socket_path()
        self.control = ControlServer(self.socket_path, self.hub, self.handle)

    # -- skills and conversation ------------------------------------------------------------------

    def load_skills(self) -> None:
        """(Re)load the skills and rebuild the conversation; the model stays loaded."""
        settings = self.settings
        context = SkillContext(
            settings=settings, state_dir=state_dir(settings), say=self.announce, stop=self.cancel_turn
        )
        folders = [self.config_path.parent / "skills", *settings.skills.paths]
        registry = load_registry(settings, folders, context)
        sampling = settings.llm.sampling
        sampler = Sampler(
            sampling.temperature, sampling.top_k, sampling.top_p, sampling.repetition_penalty, sampling.seed
        )
        plan = plan_for_settings(settings, list(registry.skills.values()), self.engine)
        for line in plan.budget.lines():
            log.info("%s", line)
        llm = settings.llm
        conversation = Conversation(self.engine, llm.system_prompt, llm.max_new_tokens, plan.tools, plan.example)
        manager = TurnManager(conversation, registry, sampler)
        with self.turn_lock:  # never swap under a running turn
            self.background_stop.set()
            self.background_stop = threading.Event()
            self.registry: Registry = registry
            self.manager = manager
            registry.start_background(self.background_stop)
        log.info(
            "%d skills loaded%s",
            len(registry.skills),
            f", {len(registry.problems)} skipped" if registry.problems else "",
        )

    def reload(self) -> None:
        notify("RELOADING=1", "STATUS=reloading configuration and skills")
        try:
            self.settings = load_settings(self.config_path)
            self.load_skills()
            log.info("reloaded %s", self.config_path)
        except ConfigError as e:
            log.error("reload failed, keeping the running configuration: %s", e)
        notify("READY=1", "STATUS=listening")

    # -- turns --------------------------------------------------------------------------------------

    def turn(self, text: str, cancel: threading.Event | None = None) -> Any:
        """Run one turn (one at a time), publishing its events; yield its spoken text."""
        with self.turn_lock:
            self.cancel = cancel = cancel or threading.Event()
            start = time.monotonic()
            self.hub.publish({"type": "turn_start", "text": text})
            first = None
            for event in self.manager.turn(text, cancel):
                first = first or time.monotonic()
                self.hub.publish(
                    {"type": event.kind, "text": event.text, **({"data": event.data} if event.data is not None else {})}
                )
                if event.kind in SPOKEN:
                    yield event.text
            stats = self.engine.stats
            done = {"type": "turn_done", "cancelled": cancel.is_set()}
            done["first_event_ms"] = round(((first or time.monotonic()) - start) * 1000)
            done |= {"prefilled_tokens": stats.prefilled_tokens, "generated_tokens": stats.generated_tokens}
            self.hub.publish(done)
            self.cancel = None

    def cancel_turn(self) -> None:
        if self.cancel is not None:
            self.cancel.set()
        if self.voice is not None:
            self.voice.sink.stop()

    def announce(self, text: str) -> None:
        """Speak outside a turn (a timer ringing)."""
        self.hub.publish({"type": "say", "text": text})
        log.info("saying: %s", text)
        if self.voice is not None:
            for audio in self.voice.voice.synthesize(text):
                self.voice.sink.play(audio, self.voice.voice.rate)

    def handle(self, request: dict, reply) -> None:
        kind = request["type"]
        if kind == "say":
            text = request.get("text")
            if not isinstance(text, str) or not text.strip():
                reply({"type": "error", "message": "say needs a non-empty text"})
                return
            for _ in self.turn(text):
                pass
        elif kind == "cancel":
            self.cancel_turn()
            reply({"type": "cancelled"})
        elif kind == "status":
            reply(self.status())
        else:
            reply({"type": "error", "message": f"unknown request type {kind!r}"})

    def status(self) -> dict:
        return {"type": "status", "model": self.engine.manifest.name, "backend": self.engine.sessions.backend,
                "skills": sorted(self.registry.skills), "busy": self.turn_lock.locked(),
                "voice": self.voice is not None, "context_tokens": self.engine.pos}  # fmt: skip

    # -- voice --------------------------------------------------------------------------------------

    def _voice(self):
        from vosk import Model, SetLogLevel

        from assistant.voice.asr import Transcriber
        from assistant.voice.audio import MicSource, SpeakerSink
        from assistant.voice.pipeline import VoicePipeline
        from assistant.voice.tts import Voice
        from assistant.voice.wake import WakeDetector

        s = self.settings
        SetLogLevel(-1)
        asr_model = Model(str(s.asr.model))
        wake_model = Model(str(s.wake.model)) if s.wake.model else asr_model
        pipeline = VoicePipeline(
            WakeDetector(wake_model, s.wake.phrases, s.wake.min_confidence, s.wake.refractory_seconds),
            Transcriber(asr_model, s.asr.silence_timeout, s.asr.max_utterance_seconds),
            Voice(s.tts.voice, s.tts.speaker, s.tts.length_scale),
            SpeakerSink(s.audio.output_device, s.audio.output_rate),
            lambda text, cancel: self.turn(text, cancel),
            on_event=self.hub.publish,
            play_earcon=s.wake.earcon,
            follow_up_seconds=s.asr.follow_up_seconds,
        )
        pipeline.source = MicSource(s.audio.input_device, s.audio.input_rate, s.audio.reopen_max_seconds)
        return pipeline

    # -- main loop ----------------------------------------------------------------------------------

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload_requested.set())
        if self.voice is not None:
            threading.Thread(target=self.voice.run, args=(self.voice.source,), name="voice", daemon=True).start()
        notify("READY=1", "STATUS=listening")
        log.info(
            "ready: %s on %s, control socket %s",
            self.engine.manifest.name,
            self.engine.sessions.backend,
            self.socket_path,
        )
        interval = min(watchdog_interval() or 5.0, 5.0)
        while not self.stopping.wait(interval):
            notify("WATCHDOG=1")
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self.reload()
        return self.shutdown()

    def shutdown(self) -> int:
        notify("STOPPING=1", "STATUS=stopping")
        log.info("stopping")
        self.cancel_turn()
        self.background_stop.set()
        if self.voice is not None:
            self.voice.source.stopped.set()
        self.control.close()
        return 0


def run(config_path: Path, text_only: bool = False) -> int:
    daemon = Daemon(config_path, text_only)
    return daemon.run()
