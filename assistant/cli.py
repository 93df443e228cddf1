"""The `assistant` command: one subcommand a job, heavy imports only inside the one that runs."""

# ruff: noqa: E402 (the imports come after Ctrl-C is taken care of)

from __future__ import annotations

import signal
import threading


def _starting_interrupted(*_: object) -> None:
    raise SystemExit(130)


_hung_up: list[int] = []  # a SIGHUP while the command starts, for main() to act on once it knows the command


def _starting_hung_up(signum: int, _: object) -> None:
    _hung_up.append(signum)


# Ctrl-C while the command starts (a tenth of a second of imports, more on a board) ends it as it does
# later, with status 130 and no traceback: until this module is loaded, and from then on main() takes it.
# Not where it is ignored (`nohup`, `&`), nor when imported on a thread (signals are the main thread's).
if (
    signal.getsignal(signal.SIGINT) is signal.default_int_handler
    and threading.current_thread() is threading.main_thread()
):
    signal.signal(signal.SIGINT, _starting_interrupted)
# SIGHUP while the command starts: for `assistant run` a reload (`kill -HUP`, `systemctl reload`) that has
# nothing to do yet, since the config is read after; its default action would end the service, which
# systemd counts as a clean exit and does not restart. Any other command hears of it in main().
if signal.getsignal(signal.SIGHUP) is signal.SIG_DFL and threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGHUP, _starting_hung_up)

import argparse
import json
import logging
import os
import re
import sys
import typing
from pathlib import Path

import yaml

from assistant import __version__
from assistant.config import (
    CONFIG_ENV,
    ConfigError,
    bound_problem,
    check_config_file,
    check_model_paths,
    default_config_path,
    load_settings,
    settings_as_dict,
    settings_from_text,
)
from assistant.llm.manifest import ModelError
from assistant.logs import setup_logging, to_journal

# sysexits' EX_CONFIG: the systemd unit lists it in RestartPreventExitStatus, so a broken
# config is reported once instead of restarting in a loop.
EXIT_CONFIG = 78

# Control characters but newline and tab: a reply must not move the cursor or reprogram the terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# The assistant answers status and cancel on a thread of their own, however busy it is: no answer by
# then means it is stopped or stuck, which is what whoever asks wants to know (a turn may take longer).
ANSWER_SECONDS = 10.0
DESCRIPTION = "Offline voice assistant for the AXERA AX630C / AX650N."
log = logging.getLogger("assistant")


def cmd_config_check(args: argparse.Namespace) -> int:
    settings = load_settings(_trusted_config(args.config))
    check_model_paths(settings, voice=not args.text_only)
    effective = settings_as_dict(settings)
    if effective["mqtt"].get("password"):  # the output gets pasted into bug reports
        effective["mqtt"]["password"] = "(set, not shown)"
    print(f"# effective settings from {settings.source}")
    print(yaml.safe_dump(effective, sort_keys=False, allow_unicode=True), end="")
    from assistant.budget import plan_for_settings
    from assistant.skills.registry import load_registry, skill_folders

    registry = load_registry(settings, skill_folders(settings))
    print("\n".join(plan_for_settings(settings, list(registry.skills.values())).budget.lines()), file=sys.stderr)
    print(f"{settings.source}: OK", file=sys.stderr)
    return 0


def cmd_config_init(args: argparse.Namespace) -> int:
    from assistant.daemon.service import DEFAULT_CONFIG
    from assistant.setup.download import write_atomic, write_problem

    if args.path.exists():
        print(f"error: {args.path} exists; edit it, or remove it first", file=sys.stderr)
        return 1
    try:  # whole or not at all: an empty file left by a full disk would load as the defaults
        write_atomic(args.path, DEFAULT_CONFIG.read_text())
    except OSError as e:
        print(f"error: {write_problem(e, args.path)}", file=sys.stderr)
        return 1
    print(f"wrote {args.path}: paths in it are relative to its folder; next: `assistant setup --target host`")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from assistant.doctor import diagnose, report

    findings = diagnose(_trusted_config(args.config), text_only=args.text_only)
    print(report(findings))
    return 1 if any(f.fix for f in findings) else 0


def cmd_chat(args: argparse.Namespace) -> int:
    if args.model is None:  # attached to the running assistant
        return _attached_chat(args)
    from assistant.llm.chat import chat_repl

    return chat_repl(args)


def _optional_config(given: Path | None) -> Path:
    """--config, else $ASSISTANT_CONFIG, else ./config.yaml; only the last may be missing (ConfigError)."""
    config = given or default_config_path()
    if (given is not None or CONFIG_ENV in os.environ) and not config.exists():
        raise ConfigError(f"{config}: config file not found")
    return config


def _trusted_config(given: Path | None) -> Path:
    """The config of a command that runs its skills or writes where it says: --config, else
    $ASSISTANT_CONFIG, else ./config.yaml.

    Found only by being in the current folder, ./config.yaml and ./skills must be this user's or root's:
    in a folder others may write (/tmp), another user could have put them there, to have their skills
    run, or their files written where they like, as this user. Named on the command line or in the
    environment, they are the user's choice.
    """
    config = given or default_config_path()
    found_here = given is None and CONFIG_ENV not in os.environ
    for path in (config, config.parent / "skills") if found_here else ():
        try:
            owner = path.lstat().st_uid
        except OSError:  # not there: nothing of anyone's is used
            continue
        if owner not in (0, os.geteuid()):
            raise ConfigError(
                f"{path.absolute()}: belongs to uid {owner}, not to this user, who would run the skills or write "
                "the files it names; run this from a folder of your own, or name the config with --config"
            )
    check_config_file(config)  # however it was found: one that anyone may change names what skills run
    return config


def _socket(args: argparse.Namespace) -> Path:
    """The configured socket; else this user's own assistant's; else the installed service's."""
    from assistant.daemon.control import default_socket_path
    from assistant.daemon.service import service_socket

    config = _optional_config(args.config)  # a typo must not reach another assistant
    # Without a file, the environment may still name one (ASSISTANT_CONTROL__SOCKET).
    settings = load_settings(config) if config.exists() else settings_from_text("", config)
    if settings.control.socket:
        return settings.control.socket
    own = default_socket_path()
    service = service_socket()
    return service if service is not None and not own.exists() and service.exists() else own


def _say(client, text: str) -> int:
    """One turn on an open connection: its reply on stdout, its errors on stderr."""
    from assistant.daemon.control import MAX_LINE

    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # bytes the terminal's encoding could not read
        print("error: the text is not valid UTF-8 (is the terminal set to UTF-8?); nothing was sent", file=sys.stderr)
        return 1
    # The assistant closes a connection whose request is too long; refused here, a chat goes on.
    if len(json.dumps(text, ensure_ascii=False).encode()) > MAX_LINE - 100:  # 100: the request's other fields
        print(f"error: the text is longer than {MAX_LINE - 100} bytes; nothing was sent", file=sys.stderr)
        return 1
    request = client.send("say", text=text)
    code = 0
    last = None  # the stream written last: it gets the closing newline
    ended = False  # the output so far ends with a line of its own
    try:
        for event in client.events(request, until=lambda e: e["type"] == "turn_done"):
            if event["type"] == "say":  # what a skill says while it works: a line of its own
                if last is not None:
                    print(file=last)
                print(_CONTROL.sub("", event["text"]), flush=True)
                last, ended = None, True
            elif event["type"] in ("text", "confirm"):
                print(_CONTROL.sub("", event["text"]), end="", flush=True)
                last = sys.stdout
            elif event["type"] == "error":
                print(_CONTROL.sub("", event.get("text") or f"error: {event.get('message')}"), end="", file=sys.stderr)
                code = 0 if "text" in event else 1  # a spoken apology ends the turn as usual
                last = sys.stderr
            elif event["type"] == "turn_done" and event.get("cancelled"):
                print(" (cancelled)", end="", file=sys.stderr)
                code = 1
                last = sys.stderr
    except KeyboardInterrupt:  # Ctrl-C stops the reply; a second one leaves at once
        client.send("cancel", turn=request)
        for _ in client.events(request, until=lambda e: e["type"] == "turn_done"):
            pass
        print(" (cancelled)", end="", file=sys.stderr)
        code = 130
        last = sys.stderr
    except ConnectionError:
        if last is not None:  # the reply cut short ends its line before the error is said
            print(file=last)
        raise
    if last is not None or not ended:
        print(file=last or sys.stdout)
    return code


def _connected(args: argparse.Namespace, work, timeout: float | None = None) -> int:
    """Run `work(client)` on a connection to the running assistant; a lost connection is one line,
    and so is no answer within `timeout` seconds.

    Ctrl-C closes the connection, and the assistant cancels the turn of a connection that closes.
    """
    from assistant.daemon.control import ControlClient

    try:
        with ControlClient(_socket(args), timeout) as client:
            return work(client)
    except BrokenPipeError:  # stdout's reader went away (`| head`): main() handles it
        raise
    except TimeoutError:  # its socket still takes connections: the kernel queues them
        fix = "is it stopped or stuck? (`systemctl status assistant`, its log)"
        print(f"error: the assistant did not answer within {timeout:g} s; {fix}", file=sys.stderr)
        return 1
    except (ConnectionError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def cmd_say(args: argparse.Namespace) -> int:
    return _connected(args, lambda client: _say(client, " ".join(args.text)))


def _attached_chat(args: argparse.Namespace) -> int:
    from assistant.llm.chat import read_lines

    def chat(client) -> int:
        for line in read_lines():
            _say(client, line)  # a cancelled or failed turn leaves the chat open; a lost connection ends it
        return 0

    return _connected(args, chat)


def _ask(client, request_type: str, answer_type: str, **fields) -> dict | None:
    """One request and its answer; an error answer is printed and gives None."""
    request = client.send(request_type, **fields)
    for event in client.events(request, until=lambda e: e["type"] == answer_type):
        if event["type"] == "error":
            print(f"error: {event['message']}", file=sys.stderr)
            return None
        if event["type"] == answer_type:
            return event
    return None


def cmd_status(args: argparse.Namespace) -> int:
    def status(client) -> int:
        if (event := _ask(client, "status", "status")) is None:
            return 1
        print(json.dumps(event, indent=2, ensure_ascii=False) if args.json else format_status(event))
        return 0

    return _connected(args, status, ANSWER_SECONDS)


def cmd_cancel(args: argparse.Namespace) -> int:
    def cancel(client) -> int:
        if (event := _ask(client, "cancel", "cancelled", **({"turn": args.turn} if args.turn else {}))) is None:
            return 1
        print(f"cancelled turn {event['turn']}" if event["turn"] else "nothing to cancel")
        return 0

    return _connected(args, cancel, ANSWER_SECONDS)


def format_status(event: dict) -> str:
    """The status event as `key: value` lines, nested values indented, lists joined."""
    lines: list[str] = []

    def add(data: dict, indent: str) -> None:
        for key, value in data.items():
            label = key.replace("_", " ")
            if isinstance(value, dict):
                lines.append(f"{indent}{label}:")
                add(value, indent + "  ")
            elif isinstance(value, list):
                lines.append(f"{indent}{label}: {', '.join(map(str, value)) or '(none)'}")
            elif isinstance(value, bool):
                lines.append(f"{indent}{label}: {'yes' if value else 'no'}")
            else:
                lines.append(f"{indent}{label}: {value}")

    add({k: v for k, v in event.items() if k not in ("type", "id", "request")}, "")
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    # Until the daemon takes SIGHUP over, a reload has nothing to do: the config is read below. Its
    # default action would end the service, which systemd counts as a clean exit and does not restart.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from assistant.daemon.run import run

    setup_logging(args.log_level or "info")  # before the config is read: its warnings go to the journal too
    config = _trusted_config(args.config)
    settings = load_settings(config)
    logging.getLogger().setLevel((args.log_level or settings.logging.level).upper())
    return run(config, settings, text_only=args.text_only)


def cmd_service_install(args: argparse.Namespace) -> int:
    from assistant.daemon.service import InstallError, install
    from assistant.setup.download import write_problem

    try:
        report = install(
            args.config, args.unit_dir, args.user, root=args.root, models=args.models, allow_home=args.allow_home
        )
    except InstallError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {write_problem(e, args.root)}", file=sys.stderr)
        return 1
    print(report)
    return 0


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_setup(args: argparse.Namespace) -> int:
    from assistant.setup import build
    from assistant.setup.download import SetupError, write_problem

    writing = Path.cwd()  # where the files go, for a write error that names no file
    signal.signal(signal.SIGTERM, _interrupted)  # `kill` or a supervisor's stop: cleaned up as Ctrl-C is
    signal.signal(signal.SIGHUP, _interrupted)  # the terminal or ssh connection gone: likewise
    try:
        if args.verify:
            print(build.verify_model(args.verify))
            return 0
        _optional_config(args.config)  # a mistyped one must not send the build elsewhere, without speech models
        config = _trusted_config(args.config)  # it says where the speech models are written
        settings = load_settings(config) if config.exists() else None
        models_dir = (config.parent if settings else Path.cwd()) / "models"
        options = build.SetupOptions(
            model=args.model,
            target=args.target,
            kv_cache_len=args.kv_cache_len,
            prefill_len=args.prefill_len,
            kv_history=args.last_kv_cache_len,
            weight_type=args.weight_type,
            out=args.out,
            pulsar2=args.pulsar2,
            pulsar2_image=args.pulsar2_image,
            host=not args.no_host,
            keep_intermediate=args.keep_intermediate,
        )
        build.check_builder(options)
        writing = build.destination(options, models_dir)  # before the speech models: a refusal comes at once
        speech = not args.no_speech and settings is not None
        if not args.no_speech and settings is None:
            log.warning("no %s: speech models not fetched (config.yaml names them)", config)
        if speech:  # first: they are small, and a download problem shows before a long build
            for path in build.fetch_speech_models(settings, options):
                print(f"speech model: {path}")
        model_dir, results = build.build_model(options, models_dir, force=args.force)
        if results:
            print(build.summary(model_dir, results))
        print(build.next_command(model_dir, options, settings, speech))
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a full disk, a read-only --out
        print(f"error: {write_problem(e, writing)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        message = "interrupted: finished steps and partial downloads are kept; run the same command again to resume"
        print(f"\n{message}", file=sys.stderr)
        return 130
    return 0


def _skills_registry(config_path: Path | None):
    from assistant.skills.registry import load_registry, skill_folders

    config = _optional_config(config_path)  # a typo must not list another setup's skills
    _trusted_config(config_path)  # nor may another user's ./skills run as this user
    settings = load_settings(config) if config.exists() else None
    return load_registry(settings, skill_folders(settings) if settings else [Path.cwd() / "skills"])


def cmd_skills_list(args: argparse.Namespace) -> int:
    registry = _skills_registry(args.config)
    for found in registry.skills.values():
        confirm = " (asks for confirmation)" if found.confirm else ""
        print(f"{found.name}{confirm}: {found.description}")
        print(f"  source: {found.source}")
        print(f"  arguments: {json.dumps(found.parameters, ensure_ascii=False)}")
        for heading, by_language in (("say", found.sentences), ("answer its question", found.answers)):
            for language, sentences in by_language.items():
                templates = [s[0] if isinstance(s, tuple) else s for s in sentences[:3]]
                print(f"  {heading} ({language}): " + " | ".join(templates))
        if found.intents:
            print("  answers Home Assistant intents: " + ", ".join(found.intents))
    return 1 if registry.problems else 0


def cmd_skills_call(args: argparse.Namespace) -> int:
    try:
        arguments = json.loads(args.args)
    except json.JSONDecodeError as e:
        print(f"error: --args is not JSON: {e}", file=sys.stderr)
        return 2
    except RecursionError:
        print("error: --args is nested too deeply to be read", file=sys.stderr)
        return 2
    registry = _skills_registry(args.config)
    registry.context.language = args.language  # as for a request in that language
    logging.getLogger("assistant.skills.registry").setLevel(logging.ERROR)  # "call not run" is the line below
    result = registry.call(args.name, arguments)
    if result.error:
        print(f"error: {result.error}", file=sys.stderr)
    else:
        print(result.text if result.text is not None else json.dumps(result.data, ensure_ascii=False))
    code = 1 if result.error else 0
    if any(thread.is_alive() for thread in registry.left_running.values()):
        # Still running past its timeout: Python's exit would wait for it (and for its pool's threads).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def cmd_audio_list(args: argparse.Namespace) -> int:
    from assistant.voice.audio import list_devices

    try:
        print(list_devices())
    except OSError as e:  # no PortAudio library, or no sound system at all
        print(f"error: cannot list audio devices: {e}", file=sys.stderr)
        return 1
    return 0


def _setting(key: str, kind: type) -> typing.Callable[[str], typing.Any]:
    """An argparse type for an option that stands for a config key: the config's bounds apply to it too."""

    def parse(text: str) -> typing.Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'a whole number' if kind is int else 'a number'}, got {text!r}"
            ) from None
        if problem := bound_problem(key, value):
            raise argparse.ArgumentTypeError(problem)
        return value

    return parse


def _request_id(text: str) -> str:
    """An argparse type for a request id: an empty one (an unset shell variable) would stop whichever turn runs."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected the id of a request, got nothing")
    return text


class _HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default, except where there is none to show (None, False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        nothing = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if "%(default)" in text or nothing or not action.option_strings:  # `is False`: 0.0 == False
            return text
        return f"{text} (default: %(default)s)"


def _common_options() -> argparse.ArgumentParser:
    # A parent of every subcommand as well as of the top-level parser, so the options are accepted
    # on either side of the subcommand; SUPPRESS keeps a value given before it from being reset.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-level",
        default=argparse.SUPPRESS,
        choices=["debug", "info", "warning", "error"],
        help="how much to log (default: info; `assistant run` takes logging.level from the config)",
    )
    return common


def _actions(parser: argparse.ArgumentParser):
    """The actions of a command that has some; the command given alone prints its help."""
    parser.set_defaults(func=lambda args: _print_help(parser))
    return parser.add_subparsers(title="actions", metavar="ACTION")


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="assistant",
        description=DESCRIPTION,
        epilog="First time here? `assistant setup --target host`, then `assistant run`; "
        "`assistant doctor` lists what is missing.",
        formatter_class=_HelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.set_defaults(func=lambda args: _print_help(parser))
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(subparsers, name: str, help: str) -> argparse.ArgumentParser:
        return subparsers.add_parser(
            name, help=help, description=help, formatter_class=_HelpFormatter, parents=[common]
        )

    def config_option(p: argparse.ArgumentParser, what: str = "config file") -> None:
        p.add_argument(
            "--config",
            type=Path,
            default=None,
            metavar="FILE",
            help=f"{what} (default: $ASSISTANT_CONFIG, else ./config.yaml)",
        )

    run = command(sub, "run", "run the assistant: microphone, wake phrase, speech, replies (as the service does)")
    config_option(run)
    run.add_argument(
        "--text-only", action="store_true", help="no microphone, speaker or speech models: turns come from the socket"
    )
    run.set_defaults(func=cmd_run)

    setup = command(sub, "setup", "build the model directory for this machine or the board, and fetch speech models")
    setup.add_argument(
        "--model",
        default="Qwen/Qwen2-0.5B-Instruct",
        metavar="REPO|DIR",
        help="Hugging Face repo id, or a local checkpoint folder",
    )
    setup.add_argument(
        "--target",
        default="ax630c",
        choices=["ax630c", "ax650n", "host"],
        help="host: ONNX layers for this PC only; ax630c / ax650n: also the board's axmodels (needs Pulsar2)",
    )
    setup.add_argument("--kv-cache-len", type=int, default=1023, metavar="N", help="context length in tokens")
    setup.add_argument(
        "--prefill-len", type=int, default=128, metavar="N", help="board prefill chunk; 0: token by token"
    )
    setup.add_argument(
        "--last-kv-cache-len",
        type=int,
        action="append",
        default=None,
        metavar="ROWS",
        help="a board prefill group after ROWS cached rows (repeatable; default: every --prefill-len rows that fit)",
    )
    setup.add_argument("--weight-type", default="s8", choices=["s8", "s4"], help="s4: 4-bit layers")
    setup.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="model directory (default: models/NAME beside the config)"
    )
    builder = setup.add_mutually_exclusive_group()
    builder.add_argument("--pulsar2", default=None, metavar="PATH", help="pulsar2 executable (default: from PATH)")
    builder.add_argument(
        "--pulsar2-image", default=None, metavar="IMAGE", help="run pulsar2 from this docker image instead"
    )
    setup.add_argument("--no-host", action="store_true", help="skip the ONNX layers for a PC")
    setup.add_argument("--no-speech", action="store_true", help="skip the vosk model and piper voice")
    setup.add_argument("--keep-intermediate", action="store_true", help="also keep the .npy and float32 embeddings")
    setup.add_argument("--force", action="store_true", help="rebuild even if the model is up to date")
    config_option(setup, "config naming the speech models")
    setup.add_argument("--verify", type=Path, default=None, metavar="DIR", help="re-check a built model and run it")
    setup.set_defaults(func=cmd_setup)

    doctor = command(sub, "doctor", "list everything missing or wrong before `assistant run`, each with its fix")
    config_option(doctor)
    doctor.add_argument("--text-only", action="store_true", help="check only what `assistant run --text-only` needs")
    doctor.set_defaults(func=cmd_doctor)

    say = command(sub, "say", "send a text turn to the running assistant and print its reply")
    say.add_argument("text", nargs="+", help="what to say")
    config_option(say, "config naming the control socket")
    say.set_defaults(func=cmd_say)

    chat = command(sub, "chat", "chat in text: with the running assistant, or with a model directory (prints tok/s)")
    chat.add_argument(
        "--model",
        type=Path,
        default=None,
        metavar="DIR",
        help="chat with this model directory; without it, with the running assistant",
    )
    config_option(chat, "config naming the control socket")
    chat.add_argument("--backend", default="auto", choices=["auto", "axengine", "onnxruntime"], help="with --model")
    chat.add_argument(
        "--threads", type=_setting("llm.threads", int), default=2, help="CPU threads of the ONNX backend, with --model"
    )
    chat.add_argument("--system", default="You are a helpful assistant.", help="system prompt, with --model")
    chat.add_argument(
        "--max-new-tokens", type=_setting("llm.max_new_tokens", int), default=256, help="longest reply, with --model"
    )
    chat.add_argument(
        "--temperature", type=_setting("llm.sampling.temperature", float), default=0.0, help="0 is greedy, with --model"
    )
    chat.add_argument(
        "--seed", type=_setting("llm.sampling.seed", int), default=None, help="sampling seed, with --model"
    )
    chat.set_defaults(func=cmd_chat)

    status = command(sub, "status", "what the running assistant is doing")
    config_option(status, "config naming the control socket")
    status.add_argument("--json", action="store_true", help="print the status event as JSON")
    status.set_defaults(func=cmd_status)

    cancel = command(sub, "cancel", "stop the running assistant's turn (whoever started it), or the one given")
    cancel.add_argument(
        "--turn", type=_request_id, default=None, metavar="ID", help="the request id of the turn to stop"
    )
    config_option(cancel, "config naming the control socket")
    cancel.set_defaults(func=cmd_cancel)

    config_sub = _actions(command(sub, "config", "check the configuration, or write the default one"))
    check = command(config_sub, "check", "validate a config file and print the effective settings")
    config_option(check)
    check.add_argument("--text-only", action="store_true", help="not the speech models: what `run --text-only` needs")
    check.set_defaults(func=cmd_config_check)
    init = command(config_sub, "init", "write the default, commented config.yaml to start from")
    init.add_argument("path", type=Path, nargs="?", default=Path("config.yaml"), help="where to write it")
    init.set_defaults(func=cmd_config_init)

    service_sub = _actions(command(sub, "service", "the systemd service"))
    install = command(
        service_sub,
        "install",
        "write the systemd unit and /etc/assistant/config.yaml, check the service can reach its files",
    )
    install.add_argument(
        "--config",
        type=Path,
        default=Path("/etc/assistant/config.yaml"),
        metavar="FILE",
        help="the service's config (created if missing)",
    )
    install.add_argument(
        "--models", type=Path, default=None, metavar="DIR", help="copy this models folder where the service reads it"
    )
    install.add_argument(
        "--unit-dir", type=Path, default=Path("/etc/systemd/system"), metavar="DIR", help="where the unit goes"
    )
    install.add_argument("--user", default="assistant", help="the user the service runs as")
    install.add_argument(
        "--allow-home", action="store_true", help="let the service read /home and /root (ProtectHome=read-only)"
    )
    install.add_argument(
        "--root", type=Path, default=Path("/"), metavar="DIR", help="install into this root folder (for images)"
    )
    install.set_defaults(func=cmd_service_install)

    audio_sub = _actions(command(sub, "audio", "sound devices"))
    command(audio_sub, "list", "the microphones and speakers, with their indexes").set_defaults(func=cmd_audio_list)

    skills_sub = _actions(command(sub, "skills", "list or call the installed skills"))
    listing = command(skills_sub, "list", "each skill with its schema and example sentences")
    config_option(listing)
    listing.set_defaults(func=cmd_skills_list)
    call = command(skills_sub, "call", "run one skill as the assistant would (validation, timeout)")
    call.add_argument("name", help="the skill's name, from `assistant skills list`")
    call.add_argument("--args", default="{}", help="arguments as a JSON object")
    call.add_argument("--language", choices=("en", "zh"), default="en", help="the language it answers in")
    config_option(call)
    call.set_defaults(func=cmd_skills_call)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        # As stderr already does: a name given in bytes that are not UTF-8, or a lone surrogate in a reply,
        # is printed escaped rather than ending the command with a traceback (after its work is done).
        if hasattr(sys.stdout, "reconfigure"):
            sys.stdout.reconfigure(errors="backslashreplace")
        args = build_parser().parse_args(argv)
        if args.func is not cmd_run and signal.getsignal(signal.SIGHUP) is _starting_hung_up:
            signal.signal(signal.SIGHUP, signal.SIG_DFL)  # the terminal gone: ended as it would have been
            if _hung_up:
                os.kill(os.getpid(), signal.SIGHUP)
        args.log_level = getattr(args, "log_level", None)
        setup_logging(args.log_level or "info")
        return args.func(args)
    except (ConfigError, ModelError) as e:
        # Why the service did not start: an error for `journalctl -p err`, where a plain line is "info".
        prefix = "<3>" if to_journal() else ""
        for line in str(e).splitlines():  # every wrong setting is a line, and a record of its own in the journal
            print(f"{prefix}error: {line}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader of stdout went away (`| head`): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 1


if signal.getsignal(signal.SIGINT) is _starting_interrupted:  # loaded: main() takes Ctrl-C as KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.default_int_handler)
