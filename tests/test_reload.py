"""`systemctl reload` (SIGHUP) of the running daemon: what each change does, and reloads in bulk."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import test_daemon
from tests.other_user import NOBODY
from tests.test_daemon import (
    NAP_SKILL,
    Daemon,
    Notifications,
    chatty_config,
    reload,
    run_assistant,
    spoken,
    story,
    turn,
    write_config,
)

chatty = test_daemon.chatty  # the model that never stops on its own, as a fixture here too
REFUSED = "reload failed, keeping the running configuration"


@pytest.fixture()
def running(tmp_path: Path, tiny_int8: Path) -> Iterator[tuple[Path, Path, Daemon]]:
    """A text-only daemon on the tiny model: its config file, its control socket and the daemon."""
    config = write_config(tmp_path, tiny_int8)
    notify = Notifications(tmp_path / "notify.sock")
    daemon = Daemon(tmp_path, config, notify)
    try:
        yield config, tmp_path / "run" / "control.sock", daemon
    finally:
        assert daemon.stop() == 0
        notify.close()


def test_a_reload_to_a_broken_model_is_refused_in_one_line_and_the_running_one_answers(
    running, tiny_int8: Path, tmp_path: Path
) -> None:
    config, control, daemon = running
    good = config.read_text()
    bad_manifest = tmp_path / "bad-manifest"
    shutil.copytree(tiny_int8, bad_manifest)
    (bad_manifest / "manifest.yaml").write_text("format: [cut short\n")
    cut_layer = tmp_path / "cut-layer"
    shutil.copytree(tiny_int8, cut_layer)
    layer = cut_layer / "onnx" / "layer_1.onnx"
    layer.write_bytes(layer.read_bytes()[:100])
    missing = tmp_path / "not-installed"
    for broken, named in ((bad_manifest, "unreadable manifest"), (cut_layer, layer.name), (missing, "does not exist")):
        config.write_text(good.replace(str(tiny_int8), str(broken)))
        before = daemon.log_text()
        reload(daemon)
        said = daemon.log_text()[len(before) :]
        refused = [line for line in said.splitlines() if REFUSED in line]
        assert len(refused) == 1 and named in refused[0], said
        assert "takes effect when the service restarts" not in said and "reloaded " not in said
        assert spoken(turn(control, "what time is it")).startswith("It is ")


def test_a_reload_to_a_context_too_small_for_the_prompt_is_refused_as_the_next_start_would_be(running) -> None:
    """The context is set once, at the start; a reload that took it in would leave the next start (a reboot, a
    restart) failing with the status systemd does not retry: the assistant gone until someone looks."""
    config, control, daemon = running
    config.write_text(config.read_text().replace("kv_cache_len: 8192", "kv_cache_len: 16"))
    before = daemon.log_text()
    reload(daemon)
    said = daemon.log_text()[len(before) :]
    refused = [line for line in said.splitlines() if REFUSED in line]
    assert len(refused) == 1 and "of kv_cache_len 16 tokens" in refused[0], said
    assert "takes effect when the service restarts" not in said and "reloaded " not in said
    assert spoken(turn(control, "what time is it")).startswith("It is ")


def test_a_reload_to_a_state_or_socket_folder_the_next_start_would_refuse_is_refused(running, tmp_path: Path) -> None:
    """Both are taken at the next start, which refuses a folder other users could change (status 78, not retried)."""
    config, control, daemon = running
    good = config.read_text()
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    for changed in (
        re.sub(r"state_dir: .*", f"state_dir: {shared}", good),
        re.sub(r"socket: .*", f"socket: {shared / 'control.sock'}", good),
    ):
        config.write_text(changed)
        before = daemon.log_text()
        reload(daemon)
        said = daemon.log_text()[len(before) :]
        refused = [line for line in said.splitlines() if REFUSED in line]
        assert len(refused) == 1 and f"{shared}: writable by other users" in refused[0], said
        assert "takes effect when the service restarts" not in said and "reloaded " not in said
        assert spoken(turn(control, "what time is it")).startswith("It is ")
    assert list(shared.iterdir()) == []  # nothing made there


def test_20_sighups_in_a_second_during_a_reply_end_in_one_reload_of_the_last_file(tmp_path: Path, chatty: Path) -> None:
    config = chatty_config(tmp_path, chatty, max_new_tokens=4000)
    control, notify = tmp_path / "run" / "control.sock", Notifications(tmp_path / "notify.sock")
    text = config.read_text()
    daemon = Daemon(tmp_path, config, notify)
    try:

        def storm() -> None:
            for i in range(20):
                changed = text.replace("max_new_tokens: 4000", f"max_new_tokens: {31 + i}\n  threads: 1")
                config.write_text(changed)
                daemon.process.send_signal(signal.SIGHUP)
                time.sleep(0.05)

        reply = story(control, during=storm)
        assert reply[-1]["generated_tokens"] == 3999, reply[-1]  # the reply went on as it started
        daemon.wait_for_log("reloaded ")
        time.sleep(1)  # a second reload would be done by now
        assert daemon.log_text().count("reloaded ") == 1, daemon.log_text()
        assert daemon.log_text().count("llm.threads changed: it takes effect when the service restarts") == 1
        assert turn(control, "go on")[-1]["generated_tokens"] == 49  # max_new_tokens 50, the last file's
    finally:
        assert daemon.stop() == 0
        notify.close()


def test_50_reloads_leave_no_thread_open_file_or_memory_behind(running) -> None:
    config, control, daemon = running
    good = config.read_text()
    pid = daemon.process.pid

    def footprint() -> tuple[int, int, float]:
        """Threads, open files and resident MB, the fewest of 10 looks: the timers' clock opens its
        database for a moment."""
        looks = []
        for _ in range(10):
            status = Path(f"/proc/{pid}/status").read_text()
            resident = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024
            looks.append((len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd")), resident))
            time.sleep(0.05)
        return tuple(min(look[i] for look in looks) for i in range(3))

    for _ in range(15):  # the first reloads fill caches that then stay as they are
        reload(daemon)
    threads0, fds0, mb0 = footprint()
    for i in range(50):  # every other one with a change: new prompt, new skills list
        config.write_text(good.replace("llm:\n", f"llm:\n  system_prompt: Reload {i}.\n") if i % 2 else good)
        reload(daemon)
    assert spoken(turn(control, "what time is it")).startswith("It is ")
    threads1, fds1, mb1 = footprint()
    assert threads1 <= threads0 and fds1 <= fds0, (threads0, threads1, fds0, fds1)
    # Each reload used to leave its skill modules and its threads' freed memory behind: 20 MB more here.
    assert mb1 - mb0 < 6, (mb0, mb1)
    assert daemon.log_text().count("reloaded ") == 65


def test_a_skill_call_left_running_before_a_reload_is_not_started_again_after_it(running) -> None:
    config, control, daemon = running
    (config.parent / "extra_skills" / "sleepy.py").write_text(NAP_SKILL)
    reload(daemon)
    assert spoken(turn(control, "take a nap")) == "Sorry, nap took longer than 0.3 seconds."
    reload(daemon)
    assert spoken(turn(control, "take a nap")) == "Sorry, nap is still busy with the last request."


SLOW_SKILL = """import pathlib
import time
from assistant import skill

# Each reload imports it again; the import goes on once the test says so.
here = pathlib.Path(__file__)
here.with_suffix(".importing").touch()
deadline = time.monotonic() + 60
while not here.with_suffix(".go").exists() and time.monotonic() < deadline:
    time.sleep(0.02)


@skill(sentences={'en': ['wait a bit']})
def wait_a_bit() -> str:
    '''Wait.'''
    return 'Waited.'
"""


def hangup_pending(pid: int) -> bool:
    """Whether a SIGHUP sent to the process is yet to reach it."""
    status = Path(f"/proc/{pid}/status").read_text()
    return bool(int(re.search(r"ShdPnd:\s+([0-9a-f]+)", status).group(1), 16) & 1 << (signal.SIGHUP - 1))


def test_a_reload_asked_for_during_a_reload_follows_it_at_once(tmp_path: Path, tiny_int8: Path) -> None:
    """At once: as the first ends, not at the main loop's next beat (5 s, as under systemd), which
    tells the watchdog first. So no WATCHDOG=1 comes between the first's READY=1 and the second's
    RELOADING=1, the beat being seconds apart and the second reload's start a moment."""
    config = write_config(tmp_path, tiny_int8)
    skill = tmp_path / "extra_skills" / "slow.py"
    skill.write_text(SLOW_SKILL)
    importing, go = skill.with_suffix(".importing"), skill.with_suffix(".go")
    go.touch()  # the start imports it too
    notify = Notifications(tmp_path / "notify.sock")
    daemon = Daemon(tmp_path, config, notify, watchdog_usec=60_000_000)  # the unit's WatchdogSec=60
    try:
        for _ in range(5):
            before = daemon.log_text().count("reloaded ")
            go.unlink()
            importing.unlink()
            notify.received.clear()
            daemon.process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 60
            while not importing.exists():  # the first reload is under way, held in the skill's import
                assert time.monotonic() < deadline and daemon.process.poll() is None, daemon.log_text()
                time.sleep(0.02)
            daemon.process.send_signal(signal.SIGHUP)  # `systemctl reload` again
            while hangup_pending(daemon.process.pid):
                assert time.monotonic() < deadline, daemon.log_text()
                time.sleep(0.01)
            go.touch()
            notify.wait_for("READY=1", process=daemon.process, count=2, timeout=60)  # both over
            lifecycle = [field for field in notify.received if field in ("RELOADING=1", "READY=1", "WATCHDOG=1")]
            first_over = lifecycle.index("READY=1")
            assert lifecycle[first_over + 1] == "RELOADING=1", lifecycle
            assert lifecycle.count("RELOADING=1") == 2, lifecycle
            # The first, superseded, gave way to the second: one reload done, of the newest file.
            assert daemon.log_text().count("reloaded ") == before + 1, daemon.log_text()
    finally:
        assert daemon.stop() == 0
        notify.close()


def test_a_config_every_user_may_change_is_refused_at_start_and_at_reload(running, tmp_path: Path) -> None:
    config, control, daemon = running
    theirs = tmp_path / "theirs"  # another user's folder, with a skill of theirs
    theirs.mkdir()
    (theirs / "theirs.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    os.chown(theirs, NOBODY, NOBODY)
    config.write_text(config.read_text().replace("paths: [", f"paths: [{theirs}, "))
    config.chmod(0o666)  # so that every user could have written that line
    before = daemon.log_text()
    reload(daemon)
    refused = [line for line in daemon.log_text()[len(before) :].splitlines() if REFUSED in line]
    assert len(refused) == 1 and f"{config}: every user may change it" in refused[0], daemon.log_text()
    assert not (tmp_path / "ran").exists()
    assert spoken(turn(control, "what time is it")).startswith("It is ")
    started = run_assistant("run", "--config", str(config), "--text-only")
    assert started.returncode == 78 and f"{config}: every user may change it" in started.stderr, started.stderr
    assert len(started.stderr.strip().splitlines()) == 1 and not (tmp_path / "ran").exists()
    for command in ("doctor", "config check", "skills list"):  # each would run the skills it names
        refused = run_assistant(*command.split(), "--config", str(config))
        assert refused.returncode == 78 and f"{config}: every user may change it" in refused.stderr, refused.stderr
    assert not (tmp_path / "ran").exists()
