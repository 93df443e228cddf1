"""`assistant run`: the long-running assistant, as systemd runs it.

The lifecycle is one enum owned by the Daemon: loading → ready ⇄ reloading → stopping. Turns come
from the voice pipeline and the control socket and run one at a time under the turn lock, each
cancellable. systemd hears READY=1 once everything is loaded, WATCHDOG=1 only while the daemon
is healthy, STATUS= lines, RELOADING=1 and STOPPING=1. SIGHUP reloads config.yaml and the skills
without reloading the model: the new skills and prompt are built aside and swapped in between
turns, and a reload that fails keeps the running configuration. SIGTERM cancels the turn and
exits 0 within a few seconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import logging
import os
import queue
import select
import signal
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from assistant.budget import plan_for_settings
from assistant.config import (
    ConfigError,
    Settings,
    check_config_file,
    check_model_paths,
    load_settings,
    setting,
    state_dir,
)
from assistant.daemon.control import PICKED, ControlServer, Event, Request, default_socket_path, folder_not_private
from assistant.daemon.notify import notify, watchdog_interval
from assistant.doctor import MICROPHONE_FIX, STATE_FILES, microphone_problem
from assistant.llm.conversation import Conversation
from assistant.llm.engine import Engine, GenerationStats
from assistant.llm.manifest import ModelError, load_checked
from assistant.llm.sampling import Sampler
from assistant.skills.registry import KEPT, MAX_RESULT, Registry, load_registry, skill_folders
from assistant.skills.sdk import SkillContext
from assistant.turn import SPOKEN, TurnManager

log = logging.getLogger("assistant.daemon")

STOP_SECONDS = 2.0  # how long a stop waits for the running turn to end
EXIT_SECONDS = 5.0  # then how long Python's teardown may take: all within systemd's TimeoutStopSec=10
# A turn running longer than this counts as hung: the watchdog stops, and systemd restarts the
# service. Far above the slowest honest turn (3 passes of 256 tokens and their skills on the board).
TURN_LIMIT_SECONDS = 300.0
# What a reload does not apply: the model is loaded once, and so are the microphone, speaker, speech
# models and control socket. A change to any of these is logged as waiting for a restart.
RESTART_ONLY = ("llm.model_dir", "llm.backend", "llm.threads", "llm.kv_cache_len", "llm.axengine_provider",
                "audio", "wake", "asr", "tts", "control", "state_dir", "logging")  # fmt: skip


class State(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    RELOADING = "reloading"
    STOPPING = "stopping"


# What systemd hears on entering each state.
NOTIFY = {
    State.READY: ("READY=1", "STATUS=listening"),
    State.RELOADING: ("RELOADING=1", "STATUS=reloading configuration and skills"),
    State.STOPPING: ("STOPPING=1", "STATUS=stopping"),
}


@dataclass
class TurnRequest:
    """A text turn waiting for, or holding, the turn lock."""

    id: str
    text: str
    client: int | None  # the connection that asked, the only one that hears its events
    cancel: threading.Event = field(default_factory=threading.Event)


def _turn_figures(outcome: dict) -> str:
    if "generated_tokens" not in outcome:
        return ""
    return (f": first event after {outcome['first_event_ms']} ms, {outcome['prefilled_tokens']} tokens read, "
            f"{outcome['generated_tokens']} generated")  # fmt: skip


class Stopped(BaseException):
    """SIGTERM or SIGINT while the models load: a BaseException, so that no `except Exception` on
    the way (a skill's import, a session's creation) takes it for an error and goes on loading."""


class Daemon:
    def __init__(self, config_path: Path, settings: Settings, text_only: bool = False):
        self.config_path = config_path
        self.state = State.LOADING
        # Loading takes seconds (minutes on a board's first start). A stop then ends it at the next
        # Python step, cleanly; a reload is remembered and done once ready (the default action of
        # SIGHUP would end the daemon, and systemd would not restart it). Once loaded, signals only
        # set flags and write a byte to the pipe the main loop waits on: a handler runs in the main
        # thread between any two bytecodes, maybe while that thread holds a lock the handler would
        # need (an Event's), so it takes none.
        self.stop_requested = False
        self.reload_requested = False
        self.loaded = False
        self.wakeup_read, self.wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())
        self.settings = settings
        self.started_with = self.settings  # what a reload cannot change stays as it was here
        check_model_paths(self.settings, voice=not text_only)
        check_state_dir(self.settings)
        if not text_only and (problem := microphone_problem(self.settings)):  # retried below, said once here
            log.warning("%s; %s", problem, MICROPHONE_FIX)
        self.turn_lock = threading.Lock()
        self.requests: dict[str, TurnRequest] = {}  # queued and running text turns, by id
        self.requests_lock = threading.Lock()
        self.pending: queue.Queue[TurnRequest | None] = queue.Queue()
        self.current: TurnRequest | None = None
        self.turn_started: float | None = None  # monotonic start of the running turn
        self.background_stop = threading.Event()
        self.background: list[threading.Thread] = []  # the skills' @background tasks
        self.tasks: weakref.WeakSet[threading.Thread] = weakref.WeakSet()  # theirs since the start, reloads too
        self.voice = None
        self.voice_thread: threading.Thread | None = None
        self.reloader: threading.Thread | None = None
        # Whether a reload runs: cleared by the reload itself as it ends, before it wakes the main loop,
        # which would otherwise find its thread still alive and start the next one only a beat later.
        self.reloading = False

        # The socket first: a second instance, or a path that is not ours, is refused before the
        # model loads; clients asking meanwhile hear that the assistant is loading.
        self.socket_path = self.settings.control.socket or default_socket_path()
        self.control = ControlServer(self.socket_path, self.handle, self.disconnected, self.busy)
        self.load_started = time.monotonic()
        try:
            notify("STATUS=loading the language model")
            llm = self.settings.llm
            self.engine = Engine(llm.model_dir, backend=llm.backend, threads=llm.threads,
                                 kv_cache_len=llm.kv_cache_len, provider=llm.axengine_provider)  # fmt: skip
            self.registry, self.manager = self._build(self.settings)
            self.background = self.registry.start_background(self.background_stop)
            self.tasks.update(self.background)
            log.info("%s", self._skills_summary(self.registry))
            if not text_only:
                notify("STATUS=loading the speech models")
                self.voice = self._voice()
                self.registry.context.voice_language = self.voice_language  # the skills loaded before it
        except BaseException as e:
            self.control.close()
            if self.stop_requested and not isinstance(e, Stopped):
                # What the stop became in the code it interrupted: a native module's initialisation
                # (onnxruntime's) turns any error into an ImportError.
                raise Stopped from e
            raise
        self.worker = threading.Thread(target=self._serve_turns, name="turns", daemon=True)
        self.loaded = True  # from here on a stop is a request the main loop carries out

    # -- the lifecycle ------------------------------------------------------------------------------

    def enter(self, state: State) -> None:
        """The one place the lifecycle changes; systemd hears of it."""
        self.state = state
        # systemd (Type=notify-reload) matches RELOADING=1 to its reload by this timestamp.
        stamp = (f"MONOTONIC_USEC={time.monotonic_ns() // 1000}",) if state is State.RELOADING else ()
        notify(*NOTIFY.get(state, ()), *stamp)
        log.debug("state: %s", state.value)

    def run(self) -> int:
        self.worker.start()
        if self.voice is not None:
            self.voice_thread = threading.Thread(target=self.voice.run, args=(self.voice.source,), name="voice",
                                                 daemon=True)  # fmt: skip
            self.voice_thread.start()
        self.enter(State.READY)
        log.info("ready in %.1f s: %s from %s on %s, config %s, control socket %s",
                 time.monotonic() - self.load_started, self.engine.manifest.name, self.engine.model_dir,
                 self.engine.sessions.backend, self.config_path, self.socket_path)  # fmt: skip
        interval = min(watchdog_interval() or 5.0, 5.0)
        # Said once, and once when it passes: without systemd's watchdog nothing ends an unhealthy
        # daemon, and a line at every beat would fill the journal.
        unhealthy = None
        beat = time.monotonic()
        while not self.stop_requested:
            # On the beat's schedule, whatever wakes the loop in between (a SIGHUP storm, a reload ending).
            if time.monotonic() >= beat:
                beat = time.monotonic() + interval
                problem = self.problem()
                if problem is None:
                    notify("WATCHDOG=1")
                    if unhealthy is not None:
                        log.info("healthy again (it was: %s); telling the watchdog again", unhealthy)
                elif problem != unhealthy:
                    log.error("unhealthy, not telling the watchdog: %s", problem)
                unhealthy = problem
                self.control.keep_path()
            if self.reload_requested and not self.reloading:
                self.reload_requested, self.reloading = False, True
                self.reloader = threading.Thread(target=self.reload, name="reload", daemon=True)
                self.reloader.start()
            select.select([self.wakeup_read], [], [], max(beat - time.monotonic(), 0))
            with contextlib.suppress(BlockingIOError):
                os.read(self.wakeup_read, 4096)
        return self.shutdown()

    def _on_stop_signal(self, *_) -> None:
        # Only the first stop interrupts the loading: a second one (Ctrl-C twice, systemd's stop then a
        # kill) would land in the first's unwinding, outside anything that catches it.
        interrupt = not self.loaded and not self.stop_requested
        self.request_stop()
        if interrupt:
            raise Stopped

    def request_stop(self) -> None:
        """Stop the daemon: from a signal handler or any thread."""
        self.stop_requested = True
        self._wake()

    def request_reload(self) -> None:
        self.reload_requested = True
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe wakes the loop already
            os.write(self.wakeup_write, b"!")

    def problem(self) -> str | None:
        """Why the daemon is not healthy (the watchdog then stops), or None."""
        if self.voice_thread is not None and not self.voice_thread.is_alive():
            return "the voice thread has stopped"
        if not self.worker.is_alive():
            return "the turn thread has stopped"
        started = self.turn_started
        if started is not None and time.monotonic() - started > TURN_LIMIT_SECONDS:
            return f"a turn has run for more than {TURN_LIMIT_SECONDS:g} s"
        return None

    def shutdown(self) -> int:
        self.enter(State.STOPPING)
        log.info("stopping")
        self.pending.put(None)
        with self.requests_lock:  # the running turn and every queued one
            for request in self.requests.values():
                request.cancel.set()
        if self.voice is not None:
            self.voice.sink.stop()
            self.voice.source.stopped.set()
        deadline = time.monotonic() + STOP_SECONDS
        busy = [t for t in (self.worker, self.voice_thread, self.reloader) if t is not None]
        for thread in busy:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._stop_background()
        self.control.close()
        if any(thread.is_alive() for thread in busy):
            # A turn or a reload is inside the model and will not notice the stop in time. Ending
            # the interpreter under it would abort in the runtime's destructors: leave at once.
            log.warning("the model did not finish its work within %g s; exiting without waiting", STOP_SECONDS)
            logging.shutdown()
            os._exit(0)
        return 0

    def _stop_background(self) -> None:
        self.background_stop.set()
        for thread in self.background:
            thread.join(STOP_SECONDS / 4)  # a task that ignores its stop event is left behind

    # -- skills, prompt and conversation ------------------------------------------------------------

    def _build(self, settings: Settings) -> tuple[Registry, TurnManager]:
        """The skills and the turn manager for `settings`; prefills the system prompt on the engine."""
        registry = self._load_skills(settings)
        return registry, self._manager(settings, registry)

    def _load_skills(self, settings: Settings) -> Registry:
        # The state folder is one of the things a reload leaves as started (RESTART_ONLY): the running
        # timers' clock and the stored notes stay where they are until the restart.
        folder = state_dir(self.started_with)
        context = SkillContext(settings=settings, state_dir=folder, say=self.announce,
                               stop=self.silence, voice_language=self.voice_language)  # fmt: skip
        return load_registry(settings, skill_folders(settings), context)

    @property
    def voice_language(self) -> str | None:
        return self.voice.voice.language if self.voice is not None else None

    def _manager(self, settings: Settings, registry: Registry) -> TurnManager:
        s = settings.llm.sampling
        sampler = Sampler(s.temperature, s.top_k, s.top_p, s.repetition_penalty, s.seed)
        plan = plan_for_settings(settings, list(registry.skills.values()), self.engine)
        for line in plan.budget.lines():  # every tool line, long, is for whoever trims the prompt
            log.log(logging.DEBUG if line.startswith("tool lines:") else logging.INFO, "%s", line)
        llm = settings.llm
        conversation = Conversation(
            self.engine, llm.system_prompt, llm.max_new_tokens, plan.tools, plan.example, plan.list_values
        )
        return TurnManager(conversation, registry, sampler)

    @staticmethod
    def _skills_summary(registry: Registry) -> str:
        kept = sum(problem.endswith(KEPT) for problem in registry.problems)
        skipped = len(registry.problems) - kept
        return f"{len(registry.skills)} skills loaded" + "".join(
            f", {count} {what}" for count, what in ((skipped, "skipped"), (kept, "kept at the version before")) if count
        )

    def reload(self) -> None:
        """Re-read the config and the skills; on any failure the running configuration stays."""
        self.enter(State.RELOADING)
        try:
            check_config_file(self.config_path)
            settings = load_settings(self.config_path)
            check_model_paths(settings, voice=self.voice is not None)
            if settings.llm.model_dir != self.started_with.llm.model_dir:
                # Not loaded until the restart, but checked now: a broken one would stop that restart.
                load_checked(settings.llm.model_dir)
            registry = self._load_skills(settings)  # aside: the running turn is not touched
            llm, started = settings.llm, self.started_with.llm
            if (llm.model_dir, llm.kv_cache_len) != (started.model_dir, started.kv_cache_len):
                # The prompt in the context the next start will have: one it does not fit would stop that start.
                plan_for_settings(settings, list(registry.skills.values()))
            check_state_dir(settings, make=False)  # what the next start refuses, refused now
            socket_folder = (settings.control.socket or default_socket_path()).parent
            if socket_folder.is_dir() and (shared := folder_not_private(socket_folder)):
                raise ConfigError(f"{socket_folder}: {shared[0]}; {shared[1]}")
            if not self._lock_turns():
                return
            if self.reload_requested:  # a SIGHUP came while this reload waited for a turn: the next reads newer
                self.turn_lock.release()
                return
            try:
                for key in RESTART_ONLY:  # compared with what runs, not with the last reload
                    if setting(settings, key) != setting(self.started_with, key):
                        log.warning("%s changed: it takes effect when the service restarts", key)
                # The engine is shared: the new prompt is prefilled only between turns.
                manager = self._manager(settings, registry)
                # A call still running past its timeout is the new skills' too: asked again, the skill
                # is busy, not started a second time (a door given two commands, one more thread stuck).
                registry.left_running.update(self.registry.left_running)
                self.settings, self.registry, self.manager = settings, registry, manager
                self._stop_background()  # before the new ones: a timer is never rung by both clocks
                self.background_stop = threading.Event()
                self.background = registry.start_background(self.background_stop)
                self.tasks.update(self.background)
            finally:
                self.turn_lock.release()
            log.info("reloaded %s: %s", self.config_path, self._skills_summary(registry))
        except Exception as e:
            log.error("reload failed, keeping the running configuration: %s", _describe(e))
        finally:
            _give_back_memory()
            if not self.stop_requested:
                self.enter(State.READY)
            self.reloading = False
            self._wake()  # a reload asked for meanwhile starts now, not at the main loop's next beat

    def _lock_turns(self) -> bool:
        """Take the turn lock, waiting for the running turn; False when the daemon stops meanwhile."""
        while not self.turn_lock.acquire(timeout=0.1):
            if self.stop_requested:
                return False
        if self.stop_requested:
            self.turn_lock.release()
            return False
        return True

    # -- turns --------------------------------------------------------------------------------------

    def turn(self, request: TurnRequest) -> Iterator[str]:
        """Run one turn (one at a time), publishing its events for its client; yield its spoken text."""
        publish = self.control.publish
        with self.turn_lock:
            self.current, self.turn_started = request, time.monotonic()
            start, first, outcome = self.turn_started, None, {}
            self.engine.stats = GenerationStats()  # a turn the local intents answer runs no token
            try:
                publish(Event("turn_start", {"text": request.text}, request.id, request.client))
                for event in self.manager.turn(request.text, request.cancel, request.client):
                    first = first or time.monotonic()
                    fields = {"text": event.text, **({"data": event.data} if event.data is not None else {})}
                    publish(Event(event.kind, fields, request.id, request.client))
                    if event.kind in SPOKEN:
                        yield event.text
                stats = self.engine.stats
                outcome = {
                    "first_event_ms": round(((first or time.monotonic()) - start) * 1000),
                    "prefilled_tokens": stats.prefilled_tokens,
                    "generated_tokens": stats.generated_tokens,
                }
            except Exception:  # the turn manager ends its own failures; this is a last resort
                log.exception("turn %s failed", request.id)
                outcome = {"failed": True}
            finally:
                self.current = self.turn_started = None
                outcome = {"cancelled": request.cancel.is_set(), **outcome}
                log.info("turn %s %s in %.2f s%s", request.id,
                         "failed" if "failed" in outcome else "cancelled" if outcome["cancelled"] else "done",
                         time.monotonic() - start, _turn_figures(outcome))  # fmt: skip
                self._finish(request, outcome)
                if request.client is not None and request.client not in self.control.clients:
                    self.manager.forget(request.client)  # it left during the turn, which kept things for it

    def voice_turn(self, text: str, cancel: threading.Event, turn: str) -> Iterator[str]:
        """A turn heard by the microphone, named by the pipeline's id for it: its events go to every client."""
        request = TurnRequest(turn, text, None, cancel)
        with self.requests_lock:
            self.requests[request.id] = request
        return self.turn(request)

    def _serve_turns(self) -> None:
        """Text turns from the socket, in the order they came."""
        while (request := self.pending.get()) is not None:
            if request.cancel.is_set():  # cancelled while waiting
                self._finish(request, {"cancelled": True})
                continue
            for _ in self.turn(request):
                pass

    def _finish(self, request: TurnRequest, outcome: dict) -> None:
        """Forget the turn and send its turn_done, together: once a client is no longer busy, its
        turn_done is on its way (a half-closed client is then closed), and it may send its next turn."""
        with self.requests_lock:
            self.requests.pop(request.id, None)
            self.control.publish(Event("turn_done", outcome, request.id, request.client))

    def cancel(self, request_id: str | None) -> str | None:
        """Cancel that turn, or the running one; return the id of the turn cancelled, if any."""
        with self.requests_lock:
            request = self.requests.get(request_id) if request_id is not None else self.current
        if request is None:
            return None
        request.cancel.set()
        if self.voice is not None and request is self.current:
            # Off the control socket's loop, which calls this: silencing waits for the block being played,
            # or for the microphone while it looks for its device again, and every client would wait too.
            threading.Thread(target=self.voice.sink.stop, name="silence", daemon=True).start()
        return request.id

    def silence(self) -> None:
        """A skill's `context.stop()` ("stop", 别说了): the speaker stops, and the turn that asked ends as
        answered. A reply being spoken was already cut when the wake phrase was heard; cancelling the
        running turn would only cancel the one that asked, and tell its client so."""
        if self.voice is not None:
            threading.Thread(target=self.voice.sink.stop, name="silence", daemon=True).start()

    def _turns_of(self, client: int | None) -> list[TurnRequest]:
        """That client's queued and running turns (the caller holds requests_lock)."""
        return [r for r in self.requests.values() if r.client == client]

    def busy(self, client: int) -> bool:
        with self.requests_lock:
            return bool(self._turns_of(client))

    def disconnected(self, client: int) -> None:
        """A client that goes away (Ctrl-C, a crash) cancels its own turns; its question lapses."""
        if (manager := getattr(self, "manager", None)) is not None:  # None while loading
            manager.forget(client)
        with self.requests_lock:
            mine = self._turns_of(client)
        for request in mine:
            if not request.cancel.is_set():
                log.info("client gone: cancelling turn %s", request.id)
                request.cancel.set()

    def announce(self, text: str) -> None:
        """Speak outside a reply: at most what a reply may speak, and one line in the log.

        A timer ringing is the assistant's own, for every client. What a skill says while it answers a call
        is its turn's: sent with the turn's id to whoever hears that turn, and spoken only in a turn the
        microphone heard. Once that turn is stopped or over, it goes unsaid, as the turn's own words do.
        """
        thread = threading.current_thread()
        skill = thread.name.removeprefix("skill-")  # registry.call's name for the thread a call runs on
        request = None
        if skill != thread.name and thread not in self.tasks:  # the background tasks' threads are named so too
            # The call runs while its turn waits for it, up to its timeout; left running past that, its turn
            # has ended with an apology.
            request = None if self.registry.left_running.get(skill) is thread else self.current
            if request is None or request.cancel.is_set():
                after = f"turn {request.id} was stopped" if request else "its turn was over"
                log.info("skill %s spoke after %s: not said", skill, after)
                return
        if len(text) > MAX_RESULT:
            # Megabytes would be one log line, one event every client must take whole, and hours of speech.
            log.warning("a skill said %d characters; saying only the first %d", len(text), MAX_RESULT)
            text = _cut_between_words(text, MAX_RESULT)
        self.control.publish(Event("say", {"text": text}, *((request.id, request.client) if request else ())))
        # What is said may be the person's own words (a timer's name, a reminder): the journal, which more
        # people may read than may use the assistant, gets only that something was said.
        words = text.split()
        log.info("saying an announcement of %d words", len(words))
        shown = " ".join(words)
        log.debug("saying: %s", shown if len(shown) <= 200 else f"{shown[:200]}…")
        if self.voice is not None and (request is None or request.client is None):
            self.voice.announce(text)

    # -- the control socket (called on its thread: never blocks) ------------------------------------

    def handle(self, request: Request) -> None:
        def reply(kind: str, **fields) -> None:
            self.control.publish(Event(kind, fields, request.id, request.client))

        if request.type == "status":
            reply("status", **self.status())
        elif request.type == "cancel":
            target = request.fields.get("turn")
            if target is not None and not isinstance(target, str):
                reply("error", message="turn must be the id of a request")
                return
            reply("cancelled", turn=self.cancel(target))
        elif request.type == "say":
            text = request.fields.get("text")
            if not isinstance(text, str) or not text.strip():
                reply("error", message="say needs a non-empty text")
            elif self.state in (State.LOADING, State.STOPPING):
                reply("error", message=f"the assistant is {self.state.value}")
            elif request.id.startswith("voice-"):  # its events and its cancel would be taken for the voice turn's
                reply("error", message="ids voice-N name the microphone's turns; give the request another id")
            elif request.id.startswith(PICKED) and not request.picked:  # it would clash with one picked later
                reply("error", message=f"ids {PICKED}N.M are the ones the assistant picks; give the request another id")
            else:
                self._queue(TurnRequest(request.id, text, request.client), reply)
        else:
            # Named, not echoed whole: a type may be 64 KiB, and a client that never reads holds its answers.
            shown = repr(request.type) if len(repr(request.type)) <= 40 else f"{repr(request.type)[:37]}..."
            reply("error", message=f"unknown request type {shown}; the types are say, status and cancel")

    def _queue(self, request: TurnRequest, reply) -> None:
        with self.requests_lock:
            if request.id in self.requests:
                reply("error", message=f"request id {request.id!r} is already in use")
                return
            if self._turns_of(request.client):
                reply("error", message="this connection already has a turn; wait for its turn_done or cancel it")
                return
            self.requests[request.id] = request
        self.pending.put(request)

    def status(self) -> dict:
        status = {"state": self.state.value}
        if self.state is State.LOADING:
            return status
        return status | {
            "model": self.engine.manifest.name,
            "backend": self.engine.sessions.backend,
            "skills": sorted(self.registry.skills),
            "busy": self.turn_lock.locked(),
            "queued": self.pending.qsize(),
            "voice": self.voice is not None,
            "context_tokens": self.engine.pos,
        }

    def _voice_event(self, event: dict) -> None:
        """Wake, transcripts, latency: the assistant's own events, for every client."""
        self.control.publish(Event(event["type"], {k: v for k, v in event.items() if k != "type"}))

    # -- voice --------------------------------------------------------------------------------------

    def _voice(self):
        from assistant.voice.asr import Transcriber, load_model
        from assistant.voice.audio import MicSource, SpeakerSink
        from assistant.voice.pipeline import VoicePipeline
        from assistant.voice.tts import Voice
        from assistant.voice.wake import WakeDetector

        s = self.settings
        self._heard = ("", False)  # the last text _is_command was asked about, and its answer
        asr_model = load_model(s.asr.model, "asr.model")
        wake_model = load_model(s.wake.model, "wake.model") if s.wake.model else asr_model
        pipeline = VoicePipeline(
            WakeDetector(wake_model, s.wake.phrases, s.wake.min_confidence, s.wake.refractory_seconds),
            Transcriber(asr_model, s.asr.silence_timeout, s.asr.max_utterance_seconds, complete=self._is_command),
            Voice(s.tts.voice, s.tts.speaker, s.tts.length_scale),
            SpeakerSink(s.audio.output_device, s.audio.output_rate),
            self.voice_turn,
            on_event=self._voice_event,
            play_earcon=s.wake.earcon,
            follow_up_seconds=s.asr.follow_up_seconds,
            sentence_silence=s.tts.sentence_silence,
        )
        pipeline.source = MicSource(s.audio.input_device, s.audio.input_rate, s.audio.reopen_max_seconds)
        return pipeline

    def _is_command(self, text: str) -> bool:
        """Whether the words heard so far are already a command the local intents answer.

        Such an utterance is closed after a short silence instead of the longer pause that lets a
        sentence go on; asked for every audio frame, so the answer for the last text is kept.
        """
        if text != self._heard[0]:
            intents = self.manager.intents
            self._heard = (text, bool(intents and intents.match(text)))
        return self._heard[1]


def _cut_between_words(text: str, most: int) -> str:
    """The first `most` characters of text, ending at a space if there is one in their second half."""
    kept = text[:most]
    space = kept.rfind(" ", most // 2)
    return kept[:space] if space > 0 and not text[most].isspace() else kept


def check_state_dir(settings: Settings, make: bool = True) -> None:
    """Refuse a state folder another user could change (ConfigError): the notes, lists and timers are the
    household's, and such a user could put a file of theirs in it for them to be written to, or timers
    of theirs to be said. Made here if missing (unless not to `make` it), as the daemon makes files: for
    its user alone."""
    folder = state_dir(settings)
    with contextlib.suppress(OSError):  # one that cannot be made fails each store, said in its turn
        if make:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        why = folder_not_private(folder, "state_dir", STATE_FILES) if folder.is_dir() else None
    except OSError:  # a folder on the way this user may not enter: it can store nothing there either
        return
    if why:
        raise ConfigError(f"state_dir: {folder}: {why[0]}; {why[1]}")


def _give_back_memory() -> None:
    """Return the memory a reload freed to the system.

    A reload runs on threads of its own (the reload, each skill file's import), and glibc gives each
    thread an arena of its own that keeps what was freed in it: without this, every reload left the
    daemon a little larger, some 15 MB over the first hundred.
    """
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc's; other C libraries have none
    if trim is not None:
        trim(0)


def _describe(error: Exception) -> str:
    return str(error) if isinstance(error, (ConfigError, ModelError)) else f"{type(error).__name__}: {error}"


def run(config_path: Path, settings: Settings, text_only: bool = False) -> int:
    """Serve until stopped, starting from `settings` (read from `config_path`, which reloads read again)."""
    # Notes, shopping lists and timers are the household's: what the daemon writes (the state folder,
    # its databases) is for its own user only, whatever umask the shell or systemd started it with.
    os.umask(0o077)
    try:
        try:
            daemon = Daemon(config_path, settings, text_only)
        except Stopped:
            notify("STOPPING=1")
            log.info("stopped while loading")
            return 0
        return daemon.run()
    finally:
        # Exiting: a further stop has nothing left to stop, and Python's teardown gives a handled signal
        # its default action back, so it would end the process by the signal, the exit status lost.
        for stop in (signal.SIGTERM, signal.SIGINT):
            signal.signal(stop, signal.SIG_IGN)
        threading.Thread(target=_exit_after, args=(EXIT_SECONDS,), name="exit", daemon=True).start()


def _exit_after(seconds: float) -> None:
    """End the process if Python's teardown has not within `seconds`: it joins every thread a skill's
    ThreadPoolExecutor started, and one stuck past its timeout would hold the stop until systemd kills."""
    time.sleep(seconds)
    log.warning("still not ended %g s after stopping (a skill's thread that did not end); exiting now", seconds)
    logging.shutdown()
    os._exit(0)
