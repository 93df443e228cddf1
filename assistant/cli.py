"""The `assistant` command: one subcommand a job, heavy imports only inside the one that runs."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import yaml

from assistant.config import ConfigError, check_model_paths, default_config_path, load_settings, settings_as_dict
from assistant.llm.manifest import ModelError
from assistant.logs import setup_logging

# sysexits' EX_CONFIG: the systemd unit lists it in RestartPreventExitStatus, so a broken
# config is reported once instead of restarting in a loop.
EXIT_CONFIG = 78

DESCRIPTION = "Offline voice assistant for the AXERA AX630C / AX650N."
log = logging.getLogger("assistant")


def cmd_config_check(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    check_model_paths(settings)
    print(f"# effective settings from {settings.source}")
    print(yaml.safe_dump(settings_as_dict(settings), sort_keys=False, allow_unicode=True), end="")
    from assistant.budget import plan_for_settings

    registry = _skills_registry(args.config)
    print("\n".join(plan_for_settings(settings, list(registry.skills.values())).budget.lines()), file=sys.stderr)
    print(f"{settings.source}: OK", file=sys.stderr)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    if args.model is None:  # attached to the running assistant
        return _attached_chat(args)
    from assistant.llm.chat import chat_repl

    return chat_repl(args)


def _socket(args: argparse.Namespace) -> Path:
    from assistant.daemon.control import default_socket_path

    config = args.config or default_config_path()
    if config.exists():
        socket = load_settings(config).control.socket
        if socket:
            return socket
    return default_socket_path()


def _say(path: Path, text: str) -> int:
    from assistant.daemon.control import request

    try:
        for event in request(path, {"type": "say", "text": text}, until=lambda e: e["type"] == "turn_done"):
            if event["type"] in ("text", "confirm"):
                print(event["text"], end="", flush=True)
            elif event["type"] == "error":
                print(event.get("text") or event.get("message"), end="", file=sys.stderr)
        print()
    except ConnectionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_say(args: argparse.Namespace) -> int:
    return _say(_socket(args), " ".join(args.text))


def _attached_chat(args: argparse.Namespace) -> int:
    from assistant.llm.chat import read_lines

    path = _socket(args)
    for line in read_lines():
        if _say(path, line) != 0:
            return 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from assistant.daemon.control import request

    try:
        for event in request(_socket(args), {"type": "status"}, until=lambda e: e["type"] == "status"):
            if event["type"] == "status":
                print(json.dumps(event, indent=2, ensure_ascii=False))
    except ConnectionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from assistant.daemon.run import run

    config = args.config or default_config_path()
    settings = load_settings(config)
    setup_logging(settings.logging.level if args.log_level == "info" else args.log_level)
    return run(config, text_only=args.text_only)


def cmd_service_install(args: argparse.Namespace) -> int:
    from assistant.daemon.service import install

    print(install(args.config.resolve(), args.unit_dir, args.user))
    return 0


def cmd_setup(args: argparse.Namespace) -> int:
    from assistant.setup.build import SetupOptions, build_model, fetch_speech_models, summary, verify_model
    from assistant.setup.download import SetupError

    try:
        if args.verify:
            print(verify_model(args.verify))
            return 0
        config = args.config or default_config_path()
        settings = load_settings(config) if config.exists() else None
        models_dir = (config.parent if settings else Path.cwd()) / "models"
        options = SetupOptions(
            model=args.model,
            target=args.target,
            kv_cache_len=args.kv_cache_len,
            prefill_len=args.prefill_len,
            weight_type=args.weight_type,
            out=args.out,
            pulsar2=args.pulsar2,
            pulsar2_image=args.pulsar2_image,
            host=not args.no_host,
            keep_intermediate=args.keep_intermediate,
        )
        model_dir, results = build_model(options, models_dir)
        print(summary(model_dir, results))
        if args.no_speech:
            return 0
        if settings is None:
            log.warning("no %s: speech models not fetched (they are named there)", config)
            return 0
        for path in fetch_speech_models(settings):
            print(f"speech model: {path}")
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _skills_registry(config_path: Path | None):
    from assistant.skills.registry import load_registry

    config = config_path or default_config_path()
    settings = load_settings(config) if config.exists() else None
    base = config.parent if settings else Path.cwd()
    folders = [base / "skills", *(settings.skills.paths if settings else [])]
    return load_registry(settings, folders)


def cmd_skills_list(args: argparse.Namespace) -> int:
    registry = _skills_registry(args.config)
    for found in registry.skills.values():
        confirm = " (asks for confirmation)" if found.confirm else ""
        print(f"{found.name}{confirm}: {found.description}")
        print(f"  source: {found.source}")
        print(f"  arguments: {json.dumps(found.parameters, ensure_ascii=False)}")
        for language, sentences in found.sentences.items():
            print(f"  say ({language}): " + " | ".join(sentences[:3]))
    return 1 if registry.problems else 0


def cmd_skills_call(args: argparse.Namespace) -> int:
    try:
        arguments = json.loads(args.args)
    except json.JSONDecodeError as e:
        print(f"error: --args is not JSON: {e}", file=sys.stderr)
        return 2
    result = _skills_registry(args.config).call(args.name, arguments)
    if result.error:
        print(f"error: {result.error}", file=sys.stderr)
        return 1
    print(result.text if result.text is not None else json.dumps(result.data, ensure_ascii=False))
    return 0


def cmd_audio_list(args: argparse.Namespace) -> int:
    from assistant.voice.audio import list_devices

    try:
        print(list_devices())
    except OSError as e:  # no PortAudio library, or no sound system at all
        print(f"error: cannot list audio devices: {e}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assistant", description=DESCRIPTION)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    config = sub.add_parser("config", help="inspect the configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_sub.add_parser("check", help="validate a config file and print the effective settings")
    check.add_argument(
        "--config", type=Path, default=None, help="config file (default: $ASSISTANT_CONFIG or ./config.yaml)"
    )
    check.set_defaults(func=cmd_config_check)

    chat = sub.add_parser("chat", help="text chat with the on-device LLM (streams tokens, prints tok/s)")
    chat.add_argument(
        "--model",
        type=Path,
        default=None,
        help="chat with this model directory; without it, with the running assistant",
    )
    chat.add_argument("--config", type=Path, default=None, help="config naming the control socket")
    chat.add_argument("--backend", default="auto", choices=["auto", "axengine", "onnxruntime"])
    chat.add_argument("--threads", type=int, default=2)
    chat.add_argument("--system", default="You are a helpful assistant.", help="system prompt")
    chat.add_argument("--max-new-tokens", type=int, default=256)
    chat.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    chat.add_argument("--seed", type=int, default=None)
    chat.set_defaults(func=cmd_chat)

    setup = sub.add_parser("setup", help="build a model directory and fetch the speech models")
    setup.add_argument("--model", default="Qwen/Qwen2-0.5B-Instruct", help="Hugging Face repo id or a local folder")
    setup.add_argument("--target", default="ax630c", choices=["ax630c", "ax650n", "host"])
    setup.add_argument("--kv-cache-len", type=int, default=1023)
    setup.add_argument("--prefill-len", type=int, default=128, help="board prefill chunk; 0: token by token")
    setup.add_argument("--weight-type", default="s8", choices=["s8", "s4"], help="board weight quantization")
    setup.add_argument("--out", type=Path, default=None, help="model directory (default: models/NAME)")
    builder = setup.add_mutually_exclusive_group()
    builder.add_argument("--pulsar2", default=None, help="pulsar2 executable (default: from PATH)")
    builder.add_argument("--pulsar2-image", default=None, help="run pulsar2 from this docker image instead")
    setup.add_argument("--no-host", action="store_true", help="skip the ONNX layers for a PC")
    setup.add_argument("--no-speech", action="store_true", help="skip the vosk model and piper voice")
    setup.add_argument("--keep-intermediate", action="store_true", help="also keep the .npy and float32 embeddings")
    setup.add_argument("--config", type=Path, default=None, help="config naming the speech models")
    setup.add_argument("--verify", type=Path, default=None, metavar="DIR", help="re-check a built model and run it")
    setup.set_defaults(func=cmd_setup)

    run = sub.add_parser("run", help="run the assistant (as the systemd service does)")
    run.add_argument(
        "--config", type=Path, default=None, help="config file (default: $ASSISTANT_CONFIG or ./config.yaml)"
    )
    run.add_argument(
        "--text-only", action="store_true", help="no microphone or speaker: turns come from the control socket"
    )
    run.set_defaults(func=cmd_run)

    say = sub.add_parser("say", help="send a text turn to the running assistant and print its reply")
    say.add_argument("text", nargs="+")
    say.add_argument("--config", type=Path, default=None)
    say.set_defaults(func=cmd_say)

    status = sub.add_parser("status", help="what the running assistant is doing")
    status.add_argument("--config", type=Path, default=None)
    status.set_defaults(func=cmd_status)

    service = sub.add_parser("service", help="the systemd service")
    service_sub = service.add_subparsers(dest="service_command", required=True, metavar="ACTION")
    install = service_sub.add_parser("install", help="write the unit file and print the systemctl commands")
    install.add_argument("--config", type=Path, default=Path("/etc/assistant/config.yaml"))
    install.add_argument("--unit-dir", type=Path, default=Path("/etc/systemd/system"))
    install.add_argument("--user", default="assistant")
    install.set_defaults(func=cmd_service_install)

    audio = sub.add_parser("audio", help="audio devices")
    audio_sub = audio.add_subparsers(dest="audio_command", required=True, metavar="ACTION")
    audio_sub.add_parser("list", help="the microphones and speakers, with their indexes").set_defaults(
        func=cmd_audio_list
    )

    skills = sub.add_parser("skills", help="list or call the installed skills")
    skills_sub = skills.add_subparsers(dest="skills_command", required=True, metavar="ACTION")
    listing = skills_sub.add_parser("list", help="each skill with its schema and example sentences")
    listing.add_argument("--config", type=Path, default=None)
    listing.set_defaults(func=cmd_skills_list)
    call = skills_sub.add_parser("call", help="run one skill")
    call.add_argument("name")
    call.add_argument("--args", default="{}", help="arguments as a JSON object")
    call.add_argument("--config", type=Path, default=None)
    call.set_defaults(func=cmd_skills_call)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        return args.func(args)
    except (ConfigError, ModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
