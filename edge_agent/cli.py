"""The command line. The only place that turns errors into messages and exit codes."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from edge_agent import __version__
from edge_agent.errors import ConfigError, EdgeAgentError

log = logging.getLogger("edge_agent")

EXIT_OK = 0
EXIT_CONFIG = 78  # EX_CONFIG: systemd's RestartPreventExitStatus keeps it from restart-looping
OUTBOX_FILE = "outbox.sqlite3"


def configure_logging(
    level: str = "INFO", fmt: str = "auto", secret_params: Sequence[str] | None = None
) -> None:
    from edge_agent.redact import DEFAULT_SECRET_PARAMS, RedactingFormatter, Redactor

    journal = fmt == "journal" or (fmt == "auto" and bool(os.environ.get("JOURNAL_STREAM")))
    pattern = "%(levelname)s %(name)s: %(message)s"
    if not journal:
        pattern = "%(asctime)s " + pattern
    handler = logging.StreamHandler(sys.stderr)
    params = DEFAULT_SECRET_PARAMS if secret_params is None else secret_params
    handler.setFormatter(RedactingFormatter(pattern, Redactor(params)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        default=None,
        metavar="PATH",
        help="TOML configuration file (default: /etc/edge-agent/edge-agent.toml if it exists,"
        " else the embedded default)",
    )


def cmd_check_config(args: argparse.Namespace) -> int:
    from edge_agent.config import effective_config, load_settings

    settings = load_settings(args.config)
    print(json.dumps(effective_config(settings), indent=2, ensure_ascii=False))
    print(f"configuration ok ({args.config or 'embedded default'})", file=sys.stderr)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from edge_agent.app import run_agent
    from edge_agent.config import DEFAULT_CONFIG_PATH, load_settings

    settings = load_settings(args.config)
    configure_logging(
        args.log_level or settings.logging.level,
        settings.logging.format,
        settings.logging.secret_query_params,
    )
    path = args.config or (DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None)
    return asyncio.run(run_agent(settings, config_path=path))


def cmd_doctor(args: argparse.Namespace) -> int:
    from edge_agent.doctor import run_doctor

    return run_doctor(args.config, lang=args.lang, as_json=args.json, out=sys.stdout)


def cmd_detect(args: argparse.Namespace) -> int:
    from edge_agent.config import load_settings
    from edge_agent.inference.detect_cli import run_analytics, run_detect

    if args.analytics is not None:
        return run_analytics(
            args.files,
            settings=load_settings(args.analytics),
            camera=args.camera,
            start=args.start,
        )
    settings = load_settings(args.config)
    return run_detect(
        args.files,
        config=settings.detector,
        model_dir=settings.paths.model_dir,
        model=args.model,
        classes=args.classes,
        threshold=args.threshold,
        decoder=args.decoder,
        every=args.every,
    )


def _outbox_path(args: argparse.Namespace) -> Path:
    from edge_agent.config import load_settings

    settings = load_settings(args.config)
    return Path(settings.paths.state_dir) / OUTBOX_FILE


def cmd_outbox_stats(args: argparse.Namespace) -> int:
    from edge_agent.outbox import OutboxReader

    with OutboxReader(_outbox_path(args)) as reader:
        print(json.dumps(reader.stats(), indent=2))
    return EXIT_OK


def cmd_outbox_peek(args: argparse.Namespace) -> int:
    from edge_agent.outbox import OutboxReader

    with OutboxReader(_outbox_path(args)) as reader:
        for row in reader.peek(args.n):
            line = {
                "seq": row.seq,
                "priority": row.priority,
                "kind": row.kind,
                "stream": row.stream,
                "envelope": json.loads(row.payload),
            }
            print(json.dumps(line, ensure_ascii=False))
    return EXIT_OK


def cmd_outbox_export(args: argparse.Namespace) -> int:
    from edge_agent.outbox import OutboxReader

    count = 0
    last = args.since
    out = sys.stdout.buffer
    with OutboxReader(_outbox_path(args)) as reader:
        for row in reader.export(args.since):
            out.write(row.payload + b"\n")
            count += 1
            last = row.seq
    out.flush()
    print(f"exported {count} events (seq > {args.since}, last {last})", file=sys.stderr)
    return EXIT_OK


def cmd_version(args: argparse.Namespace) -> int:
    print(f"edge-agent {__version__}")
    return EXIT_OK


Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="District edge node of a provincial Intelligent Operations Centre: reads"
        " cameras and sensors, detects objects on the device, keeps every result in a durable"
        " outbox and syncs it over MQTT to the province.",
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run",
        help="run the agent until SIGTERM",
        description="Run the agent: sensors, cameras, outbox, sync and the status page."
        " Exit 0 on SIGTERM/SIGINT, 78 on bad configuration, 1 on a fatal error.",
    )
    _config_arg(run)
    run.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default=None,
        help="override [logging] level",
    )
    run.set_defaults(handler=cmd_run)

    check = sub.add_parser(
        "check-config",
        help="validate the configuration and print it with secrets masked",
        description="Validate the configuration. On success print the effective configuration"
        " (secrets masked) and exit 0; otherwise print one line per problem as"
        " 'dotted.key: what is wrong (source)' and exit 78.",
    )
    _config_arg(check)
    check.set_defaults(handler=cmd_check_config)

    doctor = sub.add_parser(
        "doctor",
        help="check this node: config, storage, model, cameras, sensors, broker, clock, page",
        description="Check everything this node needs and print one OK, WARN or FAIL line per"
        " check, with the fix for each problem: the configuration, the state directory and"
        " free space, the model (present, checksum, loads), each camera (a frame) and sensor"
        " (an answer), the broker (reachable, TLS, accepted, command subscription), the clock,"
        " the status page port and the node id. Exit 1 when anything fails, else 0.",
    )
    _config_arg(doctor)
    doctor.add_argument(
        "--lang",
        choices=["vi", "en"],
        default=None,
        help="language of the report (default: [web] language, else Vietnamese)",
    )
    doctor.add_argument("--json", action="store_true", help="print the findings as JSON")
    doctor.set_defaults(handler=cmd_doctor)

    detect = sub.add_parser(
        "detect",
        help="run the detector on images or videos",
        description="Run the configured detector on images or videos and print one JSON object"
        " per line per detection: file, frame, label, score, box [x1, y1, x2, y2] in pixels of"
        " the original image. Use it to check a camera's view or a province's own model.",
    )
    _config_arg(detect)
    from edge_agent.inference.detect_args import add_detect_arguments

    add_detect_arguments(detect)
    detect.set_defaults(handler=cmd_detect)

    outbox = sub.add_parser(
        "outbox",
        help="inspect or export the outbox (safe while the agent runs)",
        description="Inspect the durable outbox in the state directory, read-only and safe"
        " while the agent runs: counters, the next events to send, or an export of the"
        " backlog as JSON lines for carrying it out when the link is down.",
    )
    outbox_sub = outbox.add_subparsers(
        dest="outbox_command",
        metavar="ACTION",
        required=True,
        help="stats, peek or export",
    )
    stats = outbox_sub.add_parser(
        "stats",
        help="print pending rows and bytes, drops by reason, epoch and file size as JSON",
        description="Print the outbox counters as JSON: pending rows and bytes, oldest pending"
        " age, rows written, acknowledged and dropped by reason, epoch, last seq, file size.",
    )
    _config_arg(stats)
    stats.set_defaults(handler=cmd_outbox_stats)
    peek = outbox_sub.add_parser(
        "peek",
        help="print the next events the publisher would send",
        description="Print the next N pending events in the order the publisher sends them"
        " (priority, then seq), one JSON object per line.",
    )
    _config_arg(peek)
    peek.add_argument(
        "-n", type=int, default=10, metavar="N", help="how many events to show (default 10)"
    )
    peek.set_defaults(handler=cmd_outbox_peek)
    export = outbox_sub.add_parser(
        "export",
        help="write pending events with seq > SEQ to stdout as JSON lines",
        description="Write every pending event with seq greater than SEQ to stdout, one"
        " envelope per line in seq order (e.g. `edge-agent outbox export --since 0 >"
        " backlog.jsonl`). The envelopes keep (node, epoch, seq), so the IOC drops any it"
        " later also receives over MQTT. Nothing is deleted.",
    )
    _config_arg(export)
    export.add_argument(
        "--since",
        type=int,
        default=0,
        metavar="SEQ",
        help="export events with seq greater than this (default 0: all pending)",
    )
    export.set_defaults(handler=cmd_outbox_export)

    from edge_agent.ioc.cli import add_ioc_parser

    add_ioc_parser(sub)

    from edge_agent.derive.aqi_cli import add_aqi_parser

    add_aqi_parser(sub)

    version = sub.add_parser(
        "version", help="print the version", description="Print the edge-agent version."
    )
    version.set_defaults(handler=cmd_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    except EdgeAgentError as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_OK
