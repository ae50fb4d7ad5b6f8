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
EXIT_FAILURE = 1
EXIT_CONFIG = 78  # EX_CONFIG: systemd's RestartPreventExitStatus keeps it from restart-looping


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    journal = fmt == "journal" or (fmt == "auto" and bool(os.environ.get("JOURNAL_STREAM")))
    pattern = "%(levelname)s %(name)s: %(message)s"
    if not journal:
        pattern = "%(asctime)s " + pattern
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(pattern))
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
    configure_logging(args.log_level or settings.logging.level, settings.logging.format)
    path = args.config or (DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None)
    return asyncio.run(run_agent(settings, config_path=path))


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

    from edge_agent.ioc.cli import add_ioc_parser

    add_ioc_parser(sub)

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
