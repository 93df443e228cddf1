"""The `assistant` command as a user runs it: help, export, chat."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from assistant.llm.chat_template import ChatTemplate
from tests.other_user import as_nobody


def assistant(*args: str, stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    return subprocess.run(
        [sys.executable, "-m", "assistant", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def test_help_lists_the_subcommands() -> None:
    result = assistant("--help")
    assert result.returncode == 0
    for command in ("config", "setup", "run", "say", "chat", "status", "skills", "audio", "service"):
        assert command in result.stdout
    chat = " ".join(assistant("chat", "--help").stdout.split())
    assert "0 is greedy, with --model (default: 0.0)" in chat  # a default of 0.0 is shown, though 0.0 == False


def test_setup_then_chat_streams_a_reply_with_its_speed(tiny_hf: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    result = assistant("setup", "--model", str(tiny_hf), "--target", "host", "--no-speech", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "manifest.yaml").is_file() and (out / "onnx/layer_1.onnx").is_file()

    result = assistant("chat", "--model", str(out), "--max-new-tokens", "12", stdin="turn on the light\n/reset\nhi\n")
    assert result.returncode == 0, result.stderr
    stats = [line for line in result.stderr.splitlines() if "tok/s" in line]
    assert len(stats) == 2  # one per reply
    assert "first token" in stats[0]
    assert result.stdout.count("> ") >= 3  # a prompt for each line and for the end of input


def test_setup_of_a_folder_without_a_model_is_one_clear_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = assistant("setup", "--model", str(empty), "--target", "host", "--no-speech", "--out", str(tmp_path / "o"))
    assert result.returncode == 78
    expected = f"error: {empty / 'config.json'}: not found; is {empty} a Hugging Face model folder?"
    assert result.stderr.strip() == expected


def test_chat_on_a_missing_model_names_the_fix(tmp_path: Path) -> None:
    result = assistant("chat", "--model", str(tmp_path / "nothing"))
    assert result.returncode == 78
    assert "assistant setup" in result.stderr and "Traceback" not in result.stderr


def test_chat_template_renders_like_transformers(tiny_hf: Path) -> None:
    from transformers import AutoTokenizer

    messages = [
        {"role": "system", "content": "You are a test."},
        {"role": "user", "content": "打开厨房的灯"},
        {"role": "assistant", "content": "好的 😀"},
        {"role": "user", "content": "thanks"},
    ]
    ours = ChatTemplate(tiny_hf).render(messages)
    theirs = AutoTokenizer.from_pretrained(tiny_hf).apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    assert ours == theirs
    # Without a system message the template adds its default one.
    assert ChatTemplate(tiny_hf).render(messages[1:2]).startswith("<|im_start|>system\nYou are a helpful assistant.")


def test_config_init_into_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "config.yaml"
    result = assistant("config", "init", str(target))
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: no such folder: {target.parent}; create it first, or choose another place"
    assert not (tmp_path / "no").exists()


def test_chat_options_are_checked_as_the_config_checks_them(tmp_path: Path) -> None:
    for option, value, expected in [
        ("--temperature", "nan", "must be 0 or more (0 is greedy), got nan"),
        ("--temperature", "-1", "must be 0 or more (0 is greedy), got -1.0"),
        ("--threads", "0", "must be at least 1, got 0"),
        ("--max-new-tokens", "0", "must be at least 1, got 0"),
        ("--seed", "-1", "must be 0 or more, or empty for a random one, got -1"),
    ]:
        result = assistant("chat", "--model", str(tmp_path), option, value)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1] == f"assistant chat: error: argument {option}: {expected}"


def test_service_install_writes_nothing_when_it_refuses(tmp_path: Path) -> None:
    root, models = tmp_path / "root", tmp_path / "models"
    (models / "tiny").mkdir(parents=True)
    (models / "tiny" / "manifest.yaml").write_text("name: tiny\n")
    # A config under /home, which the unit hides (ProtectHome=yes): refused, and it would be created.
    args = ["service", "install", "--root", str(root), "--config", "/home/someone/config.yaml"]
    result = assistant(*args, "--models", str(models), "--unit-dir", "/etc/systemd/system")
    assert result.returncode == 1
    assert "/home/someone/config.yaml (the config): hidden from the service by ProtectHome=yes" in result.stderr
    assert not root.exists()  # neither the config nor the models were written


def test_service_install_where_it_cannot_write_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/systemd").mkdir(parents=True)
    (root / "etc/systemd/system").write_text("")  # a file where the units' folder goes
    result = assistant("service", "install", "--root", str(root), "--allow-home")
    assert result.returncode == 1
    assert f"{root}/etc/systemd/system: cannot be written (a file in the way" in result.stderr
    assert not (root / "etc/assistant").exists()  # the config is not left behind


def test_service_install_for_an_existing_user_names_its_group_and_creates_no_user(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534::/nonexistent:/bin/false\n")
    (root / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    result = assistant("service", "install", "--root", str(root), "--allow-home", "--user", "nobody")
    assert result.returncode == 0, result.stderr
    assert "User=nobody\nGroup=nogroup\n" in (root / "etc/systemd/system/assistant.service").read_text()
    assert "useradd" not in result.stdout
    result = assistant("service", "install", "--root", str(root), "--allow-home", "--user", "someone")
    assert "sudo useradd --system --groups audio --home-dir /var/lib/assistant" in result.stdout
    assert "User=someone\nGroup=someone\n" in (root / "etc/systemd/system/assistant.service").read_text()


def test_service_install_says_where_a_hidden_skills_folder_or_config_goes(tmp_path: Path) -> None:
    (tmp_path / "skills").mkdir()
    config = tmp_path / "config.yaml"  # under /tmp, as the skills folder: the service's PrivateTmp hides both
    config.write_text(f"skills:\n  paths: [{tmp_path / 'skills'}]\n")
    result = assistant("service", "install", "--config", str(config), "--unit-dir", str(tmp_path / "units"))
    assert result.returncode == 1
    assert (
        f"{config} (the config): hidden from the service by PrivateTmp=yes in the unit; move it into /etc/assistant"
        in result.stderr
    )
    skills = f"{tmp_path / 'skills'} (skills.paths[0]): hidden from the service by PrivateTmp=yes in the unit; "
    assert skills + "move its skills into /etc/assistant/skills: a skills folder beside the config" in result.stderr


def _stand_in(path: Path, answer: list[dict], tail: bytes = b"") -> threading.Thread:
    """A stand-in assistant on `path` that answers one request with the events of `answer`, then `tail`."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()

    def serve() -> None:
        with server, server.accept()[0] as connection:
            line = connection.makefile("rb").readline()
            if not line:  # the client asked nothing
                return
            with contextlib.suppress(BrokenPipeError):  # a client may leave before the end (its stdout closed)
                for event in answer:
                    connection.sendall((json.dumps(event | {"request": json.loads(line)["id"]}) + "\n").encode())
                connection.sendall(tail)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_output_into_a_closed_pipe_stops_quietly(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"control:\n  socket: {tmp_path / 'control.sock'}\n")
    reply = [{"type": "text", "text": "hello " * 10_000}, {"type": "turn_done"}]
    server = _stand_in(tmp_path / "control.sock", reply)
    read, write = os.pipe()
    os.close(read)  # like `| head` that has read what it wanted
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    for args in (["say", "--config", str(config), "hi"], ["skills", "list"], ["doctor", "--config", str(config)]):
        result = subprocess.run(
            [sys.executable, "-m", "assistant", *args], stdout=write, stderr=subprocess.PIPE, text=True, env=env
        )
        assert result.returncode == 1 and result.stderr == "", (args, result.stderr)
    os.close(write)
    server.join(timeout=10)


def test_a_refused_say_is_one_whole_line_on_stderr(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"control:\n  socket: {tmp_path / 'control.sock'}\n")
    server = _stand_in(tmp_path / "control.sock", [{"type": "error", "message": "the assistant is still loading"}])
    result = assistant("say", "--config", str(config), "hi")
    server.join(timeout=10)
    assert result.returncode == 1
    assert (result.stdout, result.stderr) == ("", "error: the assistant is still loading\n")


def test_a_missing_config_is_named_not_replaced_by_the_defaults(tmp_path: Path) -> None:
    missing = tmp_path / "typo.yaml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    for args in (["skills", "list"], ["skills", "call", "current_time"], ["status"], ["say", "hi"]):
        given = assistant(*args, "--config", str(missing))
        named = subprocess.run(
            [sys.executable, "-m", "assistant", *args],
            capture_output=True,
            text=True,
            env=env | {"ASSISTANT_CONFIG": str(missing)},
            cwd=tmp_path,
        )
        for result in (given, named):
            assert result.returncode == 78 and result.stdout == "", args
            assert result.stderr == f"error: {missing}: config file not found\n"


def test_a_reply_cannot_send_control_sequences_to_the_terminal(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"control:\n  socket: {tmp_path / 'control.sock'}\n")
    reply = "\x1b]52;c;ZWNobyBoaQ==\x07two\tlines\x00\r\n\x1b[2Jdone\x9b"
    server = _stand_in(tmp_path / "control.sock", [{"type": "text", "text": reply}, {"type": "turn_done"}])
    result = assistant("say", "--config", str(config), "hi")
    server.join(timeout=10)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "]52;c;ZWNobyBoaQ==two\tlines\n[2Jdone\n"


def test_chat_refuses_a_line_that_is_not_utf8_and_goes_on(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"control:\n  socket: {tmp_path / 'control.sock'}\n")
    server = _stand_in(tmp_path / "control.sock", [{"type": "text", "text": "hello"}, {"type": "turn_done"}])
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")} | {"PYTHONIOENCODING": "utf-8"}
    result = subprocess.run(
        [sys.executable, "-m", "assistant", "chat", "--config", str(config)],
        input=b"caf\xe9\nhi\n",
        capture_output=True,
        env=env,
        timeout=60,
    )
    server.join(timeout=10)
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr
    assert b"error: the line is not valid UTF-8" in result.stderr and b"hello\n" in result.stdout


def test_chat_with_stdin_closed_ends_as_at_the_end_of_input(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"control:\n  socket: {tmp_path / 'control.sock'}\n")
    server = _stand_in(tmp_path / "control.sock", [])
    command = f"exec {sys.executable} -m assistant chat --config {config} <&-"
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
    server.join(timeout=10)
    assert (result.returncode, result.stderr) == (0, "")


def test_chat_refuses_a_line_too_long_to_send_and_goes_on(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"control:\n  socket: {tmp_path / 'control.sock'}\n")
    server = _stand_in(tmp_path / "control.sock", [{"type": "text", "text": "hello"}, {"type": "turn_done"}])
    result = assistant("chat", "--config", str(config), stdin="x" * 70_000 + "\nhi\n")
    server.join(timeout=10)
    assert result.returncode == 0, result.stderr
    assert "error: the text is longer than 65436 bytes; nothing was sent" in result.stderr
    assert "hello\n" in result.stdout


def test_local_chat_skips_a_line_that_is_not_utf8_and_goes_on(tiny_int8: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")} | {"PYTHONIOENCODING": "utf-8"}
    result = subprocess.run(
        [sys.executable, "-m", "assistant", "chat", "--model", str(tiny_int8), "--max-new-tokens", "4"],
        input=b"caf\xe9\nhi\n",
        capture_output=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr
    assert b"error: the line is not valid UTF-8" in result.stderr
    assert len([line for line in result.stderr.splitlines() if b"tok/s" in line]) == 1  # "hi" was answered


def test_another_users_socket_is_named_as_not_allowed_not_as_not_running(tmp_path: Path) -> None:
    from assistant.daemon.control import ControlClient

    folder = tmp_path / "run"
    folder.mkdir()
    path = folder / "control.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    os.chmod(path, 0o600)  # as the daemon makes it

    def connect() -> str:
        ControlClient(path)
        return "connected"

    message = as_nobody(connect)  # another local user: root would be let in
    server.close()
    refused = f"{path}: not allowed to connect (Permission denied); run this as the service's user"
    assert message.split(": ", 1)[-1].startswith(refused), message


def test_a_socket_set_in_the_environment_is_used_without_a_config_file(tmp_path: Path) -> None:
    server = _stand_in(tmp_path / "control.sock", [{"type": "status", "state": "ready"}])
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    result = subprocess.run(
        [sys.executable, "-m", "assistant", "status"],
        capture_output=True,
        text=True,
        env=env | {"ASSISTANT_CONTROL__SOCKET": str(tmp_path / "control.sock")},
        cwd=tmp_path,  # no config.yaml here
        timeout=60,
    )
    server.join(timeout=10)
    assert (result.returncode, result.stdout, result.stderr) == (0, "state: ready\n", "")


def test_a_socket_another_user_put_in_a_shared_folder_hears_nothing(tmp_path: Path) -> None:
    if os.geteuid() != 0:  # it takes a second user; CI runs as root
        pytest.skip("becoming another user needs root (CI runs as root)")
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)  # as /tmp, where the default /tmp/assistant-<uid> lives
    squatted = shared / "assistant-0"  # made by another user before this one's assistant started
    squatted.mkdir()
    path = squatted / "assistant.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    for made in (squatted, path):
        os.chown(made, 65534, 65534)
    path.chmod(0o777)
    config = tmp_path / "config.yaml"
    config.write_text(f"control:\n  socket: {path}\n")
    heard = os.pipe()
    child = os.fork()
    if child == 0:  # that user's program listening there (the peer's credentials are taken at listen)
        try:
            os.setgid(65534)
            os.setuid(65534)
            server.listen()
            connection = server.accept()[0]
            connection.settimeout(5)
            os.write(heard[1], connection.recv(4096) or b"-")
        finally:
            os._exit(0)
    os.close(heard[1])
    server.close()
    try:
        result = assistant("say", "--config", str(config), "the alarm code is 1234", timeout=30)
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    assert os.read(heard[0], 4096) in (b"", b"-")  # nothing said reached it
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"error: {path}: the program listening there runs as uid 65534"), result.stderr


def test_ctrl_c_while_the_prompt_is_read_prints_no_figures_of_another_reply(smollm2_model: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    command = [sys.executable, "-m", "assistant", "chat", "--model", str(smollm2_model), "--max-new-tokens", "4"]
    chat = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    figures = []
    try:
        chat.stdin.write(b"hi\n")
        chat.stdin.flush()
        while not figures:  # the first reply, with its figures
            line = chat.stderr.readline()
            assert line, "the chat ended before its first reply"
            figures += [line] if b"tok/s" in line else []
        chat.stdin.write(b"word " * 800 + b"\n")  # about a second of prefill on 2 cores (0.15 s a line of 150)
        chat.stdin.flush()
        time.sleep(0.3)
        chat.send_signal(signal.SIGINT)  # Ctrl-C at a terminal: the whole foreground group gets it
        out, err = chat.communicate(timeout=60)  # stdin closed: the chat ends after the stopped reply
    finally:
        chat.kill()
    assert chat.returncode == 0, err
    assert b"tok/s" not in err  # the first reply's figures were printed once, not again for this one
    assert out.endswith(b" [stopped]\n> ")


def test_cancel_of_an_empty_turn_id_is_refused_not_taken_for_the_running_turn() -> None:
    result = assistant("cancel", "--turn", "")  # `--turn "$ID"` with ID unset: not "whatever runs"
    assert result.returncode == 2
    assert (
        result.stderr.splitlines()[-1]
        == "assistant cancel: error: argument --turn: expected the id of a request, got nothing"
    )


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        (b'{"type": "te', "the assistant closed the connection in the middle of an answer (has it stopped?)"),
        (
            b"SSH-2.0-OpenSSH_9.6\n",
            "{socket}: the program listening there answered b'SSH-2.0-OpenSSH_9.6\\n', not as the assistant does",
        ),
        (b"[1, 2]\n", "{socket}: the program listening there answered b'[1, 2]\\n', not as the assistant does"),
    ],
    ids=["cut-off", "not-json", "not-an-event"],
)
def test_an_answer_cut_off_or_not_the_assistants_is_one_line_after_the_reply_so_far(
    tmp_path: Path, tail: bytes, expected: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"control:\n  socket: {tmp_path / 'control.sock'}\n")
    server = _stand_in(tmp_path / "control.sock", [{"type": "text", "text": "It is"}], tail)
    result = assistant("say", "--config", str(config), "what time is it")
    server.join(timeout=10)
    assert (result.returncode, result.stdout) == (1, "It is\n")
    assert result.stderr == f"error: {expected.format(socket=tmp_path / 'control.sock')}\n"


def test_text_that_is_not_utf8_is_printed_escaped_in_a_utf8_terminal(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")} | {"PYTHONIOENCODING": "utf-8"}
    config = tmp_path / "config.yaml"
    config.write_text(f"control:\n  socket: {tmp_path / 'control.sock'}\n")
    reply = [{"type": "text", "text": "caf\udce9 \ud800"}, {"type": "turn_done"}]  # a skill's, say: JSON allows it
    server = _stand_in(tmp_path / "control.sock", reply)
    said = subprocess.run(
        [sys.executable, "-m", "assistant", "say", "--config", str(config), "hi"], capture_output=True, env=env
    )
    server.join(timeout=10)
    assert (said.returncode, said.stdout, said.stderr) == (0, b"caf\\udce9 \\ud800\n", b"")
    written = subprocess.run(  # a file name in Latin-1, from an old archive
        [sys.executable, "-m", "assistant", "config", "init", b"caf\xe9.yaml"],
        capture_output=True,
        env=env,
        cwd=tmp_path,
    )
    assert (written.returncode, written.stderr) == (0, b"")
    assert (
        written.stdout.startswith(b"wrote caf\\udce9.yaml: ")
        and (tmp_path / b"caf\xe9.yaml".decode(errors="surrogateescape")).is_file()
    )


def test_a_config_or_skills_another_user_left_in_the_current_folder_are_not_used(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # as /tmp, where anyone may leave a folder
    ran = tmp_path / "ran"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    skill = f"import os\nopen({str(ran)!r}, 'w').write(str(os.getuid()))\n"
    for left in (["skills"], ["config.yaml", "skills"]):  # a folder of skills, and a config beside it
        for name in left:
            if name == "skills":
                (shared / "skills").mkdir()
                (shared / "skills" / "notes.py").write_text(skill)
                os.chown(shared / "skills" / "notes.py", 65534, 65534)
            else:
                (shared / name).write_text(f"skills:\n  paths: [{shared / 'skills'}]\n")
            os.chown(shared / name, 65534, 65534)  # another local user's
        found = left[0]
        # setup writes the speech models where the config says: /etc/cron.d/ would do.
        for command in (
            ["skills", "list"],
            ["config", "check"],
            ["doctor", "--text-only"],
            ["run", "--text-only"],
            ["setup", "--target", "host"],
        ):
            result = subprocess.run(
                [sys.executable, "-m", "assistant", *command], capture_output=True, text=True, env=env, cwd=shared
            )
            assert (result.returncode, result.stdout) == (78, ""), (command, result.stderr)
            assert result.stderr == (
                f"error: {shared / found}: belongs to uid 65534, not to this user, who would run the skills or write "
                "the files it names; run this from a folder of your own, or name the config with --config\n"
            )
        assert not ran.exists()  # nothing of theirs ran as root
        shutil.rmtree(shared / "skills")
        (shared / "config.yaml").unlink(missing_ok=True)


def test_status_of_an_assistant_that_does_not_answer_ends_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"control:\n  socket: {tmp_path / 'control.sock'}\n")
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # stopped (SIGSTOP) or stuck: connections still queue
    stuck.bind(str(tmp_path / "control.sock"))
    stuck.listen()
    with stuck:
        result = assistant("status", "--config", str(config), timeout=30)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "error: the assistant did not answer within 10 s; is it stopped or stuck? (`systemctl status assistant`, "
        "its log)\n"
    )


def test_skill_arguments_nested_too_deeply_are_one_line() -> None:
    result = assistant("skills", "call", "set_timer", "--args", "[" * 100_000)
    assert (result.returncode, result.stderr) == (2, "error: --args is nested too deeply to be read\n")


def test_skills_call_of_a_skill_stuck_past_its_timeout_ends_with_one_error(tmp_path: Path) -> None:
    """Its pool's thread would hold Python's exit for an hour; the error was printed twice (log and line)."""
    (tmp_path / "skills").mkdir()
    (tmp_path / "skills" / "news.py").write_text(
        "import time\nfrom concurrent.futures import ThreadPoolExecutor\n\nfrom assistant import skill\n\n"
        "POOL = ThreadPoolExecutor(2)\n\n\n@skill(timeout=0.5)\ndef news() -> str:\n"
        '    """Fetch the headlines."""\n    return POOL.submit(time.sleep, 3600).result()\n'
    )
    (tmp_path / "config.yaml").write_text(f"state_dir: {tmp_path / 'state'}\n")
    start = time.monotonic()
    result = assistant("skills", "call", "news", "--config", str(tmp_path / "config.yaml"), timeout=30)
    assert time.monotonic() - start < 15
    assert result.returncode == 1
    # The log names the file, its line and the fix; the error line says what happened, once.
    assert "news.py:9: skill news did not return within 0.5 s" in result.stderr
    assert result.stderr.endswith("\nerror: news took longer than 0.5 seconds\n"), result.stderr


def test_doctor_on_a_config_that_does_not_load_reports_that_and_nothing_about_the_defaults(
    tmp_path: Path, tiny_int8: Path
) -> None:
    config = tmp_path / "config.yaml"
    good = f"llm:\n  model_dir: {tiny_int8}\n  kv_cache_len: 8192\nstate_dir: {tmp_path / 'state'}\n"
    config.write_text(good + "control: {socket: [\n")  # one typo: the model and folders it names are fine
    result = assistant("doctor", "--text-only", "--config", str(config))
    problems = [line for line in result.stdout.splitlines() if line.startswith("PROBLEM")]
    assert result.returncode == 1 and len(problems) == 1, result.stdout
    assert problems[0].startswith(f"PROBLEM  config: {config}:") and "nothing else was checked" in problems[0]
    assert f"fix: edit {config}" in result.stdout and "assistant setup" not in result.stdout

    from assistant.doctor import diagnose, report

    config.write_text(good)
    config.chmod(0o600)  # the service's, read by an operator's account
    folder = tmp_path.parent
    tmp_path.chmod(0o755)
    folder.chmod(0o755)
    try:
        lines = as_nobody(lambda: report(diagnose(config, text_only=True))).splitlines()
    finally:
        folder.chmod(0o700)
    assert (
        lines[0] == f"PROBLEM  config: {config}: cannot read config file: Permission denied; nothing else was checked"
    )
    assert lines[1].strip().startswith("fix: run doctor as the service's user") and len(lines) == 3, lines


CTRL_C_AS_IMPORTED = """
import os
import signal
import sys


def audit(event, args):
    if event == "import" and args[0] == sys.argv[1]:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, as that module starts to load


sys.addaudithook(audit)
from assistant.cli import main  # as the installed `assistant` script starts

sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize(
    "module",
    [
        "assistant.skills.sdk",  # the skill API, which the package no longer imports before the command
        "assistant.llm.manifest",  # the command's own imports
        "locale",  # its options being read
        "assistant.daemon.run",  # the daemon's imports
    ],
)
def test_ctrl_c_as_the_assistant_starts_ends_it_without_a_traceback(module: str, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    command = [sys.executable, "-c", CTRL_C_AS_IMPORTED, module, "run", "--config", str(config), "--text-only"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert (result.returncode, result.stderr) == (130, ""), result.stderr


def test_importing_the_command_leaves_ctrl_c_as_python_has_it() -> None:
    """Only while the command starts is Ctrl-C a quiet exit: a program or test importing it keeps KeyboardInterrupt."""
    check = "import signal, assistant.cli; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert result.stdout == "True\n", result.stderr
