"""`edge-agent ioc ...`: the province's tools: keys, signed commands, the receiver, the
fleet table and the operations-room view."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from edge_agent.errors import ConfigError

log = logging.getLogger(__name__)


def _broker_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("broker")
    group.add_argument("--host", default="localhost", help="broker host (default localhost)")
    group.add_argument("--port", type=int, default=1883, help="broker port (default 1883)")
    group.add_argument("--prefix", default="ioc/v1", help="topic prefix (default ioc/v1)")
    group.add_argument(
        "--protocol", choices=["5", "3.1.1"], default="5", help="MQTT version (default 5)"
    )
    group.add_argument("--username", help="broker username")
    group.add_argument("--password-file", type=Path, help="file holding the broker password")
    group.add_argument("--tls", action="store_true", help="connect over TLS")
    group.add_argument("--ca-file", type=Path, help="CA bundle of the broker certificate")
    group.add_argument("--cert-file", type=Path, help="client certificate (mutual TLS)")
    group.add_argument("--key-file", type=Path, help="key of the client certificate")
    group.add_argument("--keepalive", type=int, default=30, help="MQTT keepalive in seconds")


def _store_args(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--db", type=Path, help="SQLite file of the receiver (default ioc.sqlite3)")
    where.add_argument(
        "--dsn",
        help="PostgreSQL connection string instead of SQLite, e.g."
        " 'host=db.province.example dbname=ioc user=ioc' (password in PGPASSFILE)",
    )


def _link_options(args: argparse.Namespace, client_id: str, **extra: Any) -> Any:
    from edge_agent.sync.link import LinkOptions

    password = None
    if args.password_file is not None:
        try:
            password = args.password_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                [f"--password-file: cannot read {args.password_file}: {exc}"]
            ) from None
    if (args.cert_file is None) != (args.key_file is None):
        raise ConfigError(["--cert-file and --key-file go together"])
    return LinkOptions(
        host=args.host,
        port=args.port,
        client_id=client_id,
        protocol=args.protocol,
        keepalive_s=args.keepalive,
        username=args.username,
        password=password,
        tls=args.tls,
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
        **extra,
    )


def add_ioc_parser(sub: Any) -> None:
    ioc = sub.add_parser(
        "ioc",
        help="provincial-side tools: receiver, fleet, commands, keys",
        description="Tools for the provincial IOC: receive every node's feed into SQLite or"
        " PostgreSQL, show the fleet, send signed commands, create command keys.",
    )
    ioc_sub = ioc.add_subparsers(
        dest="ioc_command", metavar="IOC_COMMAND", required=True, help="what to do"
    )

    keygen = ioc_sub.add_parser(
        "keygen",
        help="create an Ed25519 key pair for signing commands",
        description="Write ioc-command.key (private, keep at the IOC) and ioc-command.pub"
        " (install on every node as mqtt.commands.public_keys).",
    )
    keygen.add_argument("--out", type=Path, default=Path("."), help="directory to write into")
    keygen.set_defaults(handler=cmd_keygen)

    sign = ioc_sub.add_parser(
        "sign",
        help="print a signed command (or, with --publish, send it and print the reply)",
        description="Print the topic and signed JSON payload of a command for one node, for"
        " scripts that publish it themselves. --publish does what 'ioc send' does.",
    )
    _command_args(sign)
    sign.add_argument("--publish", action="store_true", help="send it and wait for the reply")
    sign.set_defaults(handler=cmd_sign)

    send = ioc_sub.add_parser(
        "send",
        help="sign a command, send it to a node and print its reply",
        description="Sign VERB for one node, publish it with an MQTT 5 response topic under"
        " the node's reply subtree, wait for the reply and print it as JSON. Exit 0 when the"
        " node answered ok, 1 when it refused or nothing came in time. Without --district"
        " the node's district is read from its retained status.",
    )
    _command_args(send)
    send.set_defaults(handler=cmd_send, publish=True)

    receive = ioc_sub.add_parser(
        "receive",
        help="run the receiver: every node's feed into SQLite or PostgreSQL",
        description="Subscribe to every node's data and status (persistent session, manual"
        " acknowledgements: a message is acknowledged only after its rows are committed),"
        " store each event once per (node, epoch, seq), track holes, serve /metrics. Runs"
        " until SIGTERM or SIGINT.",
    )
    _broker_args(receive)
    _store_args(receive)
    receive.add_argument(
        "--client-id",
        help="MQTT client id, stable across restarts so the broker keeps the session"
        " (default ioc-receiver-{host name}; unique per receiver)",
    )
    receive.add_argument(
        "--share-group",
        help="receive data through the MQTT 5 shared subscription $share/GROUP/...,"
        " splitting the feed between the receivers of that group",
    )
    receive.add_argument(
        "--hole-timeout",
        type=float,
        default=300.0,
        help="seconds a missing seq may stay missing before it is reported as a hole (default 300)",
    )
    receive.add_argument(
        "--session-expiry",
        type=int,
        default=7 * 86400,
        help="seconds the broker keeps the session while the receiver is away (default 7 d)",
    )
    receive.add_argument(
        "--receive-maximum",
        type=int,
        default=2000,
        help="unacknowledged messages the broker may hand us at once (MQTT 5; default 2000)",
    )
    receive.add_argument(
        "--max-payload-bytes",
        type=int,
        default=16 * 1024 * 1024,
        help="larger messages are refused as oversized (default 16 MiB)",
    )
    receive.add_argument(
        "--sqlite-synchronous",
        choices=["FULL", "NORMAL"],
        default="FULL",
        help="SQLite durability: FULL (default) keeps every acknowledged commit on power loss",
    )
    receive.add_argument(
        "--metrics-host", default="127.0.0.1", help="address of /metrics (default 127.0.0.1)"
    )
    receive.add_argument(
        "--metrics-port", type=int, default=9108, help="port of /metrics (default 9108, 0 = any)"
    )
    receive.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default="INFO",
        help="lowest level logged",
    )
    receive.set_defaults(handler=cmd_receive)

    nodes = ioc_sub.add_parser(
        "nodes",
        help="print the fleet: every node, its area, state, backlog, holes and AQI",
        description="Print one line per node from the receiver's database: node, area (or"
        " district), online/offline and since when, version, last event, pending backlog as"
        " its last birth reported it, health verdict, open holes, last AQI.",
    )
    _store_args(nodes)
    nodes.add_argument("--json", action="store_true", help="print JSON instead of a table")
    nodes.set_defaults(handler=cmd_nodes)

    serve = ioc_sub.add_parser(
        "serve",
        help="serve the read-only fleet view for the operations room",
        description="Serve a small read-only web view of the fleet (nodes grouped by area,"
        " a page per node), Vietnamese or English, no external assets, strict CSP.",
    )
    _store_args(serve)
    serve.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8090, help="listen port (default 8090)")
    serve.add_argument(
        "--language", choices=["vi", "en"], default="vi", help="default language (default vi)"
    )
    serve.add_argument("--user", help="require HTTP basic login with this user name")
    serve.add_argument("--password-file", type=Path, help="file holding the login password")
    serve.add_argument("--timezone", default="Asia/Ho_Chi_Minh", help="zone the times are shown in")
    serve.set_defaults(handler=cmd_serve)


def _command_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("verb", help="ping, status, config.get, config.set, snapshot, outbox.stats")
    parser.add_argument("--node", required=True, help="node id the command is for")
    parser.add_argument("--district", help="district of the node (the topic level)")
    parser.add_argument(
        "--args", default="{}", help='command arguments as JSON, e.g. \'{"camera": "gate"}\''
    )
    parser.add_argument("--ttl", type=float, default=300.0, help="seconds the command stays valid")
    parser.add_argument("--key", type=Path, help="Ed25519 private key (PEM) from 'ioc keygen'")
    parser.add_argument("--hmac-key-file", type=Path, help="file holding the node's HMAC key")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a reply")
    _broker_args(parser)


def cmd_keygen(args: argparse.Namespace) -> int:
    from edge_agent.sync.signing import generate_keypair

    private, public = generate_keypair()
    args.out.mkdir(parents=True, exist_ok=True)
    key_path = args.out / "ioc-command.key"
    key_path.touch(mode=0o600)
    key_path.write_bytes(private)
    (args.out / "ioc-command.pub").write_bytes(public)
    print(f"wrote {key_path} (private) and {args.out / 'ioc-command.pub'} (for the nodes)")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    if args.publish:
        return cmd_send(args)
    from edge_agent.contract import Topics
    from edge_agent.ioc.send import signed

    if args.district is None:
        raise ConfigError(["--district: needed to name the topic (or use 'ioc send')"])
    command = signed(args)
    topic = Topics(args.prefix, args.district, args.node).cmd(args.verb)
    print(json.dumps({"topic": topic, "payload": command}, ensure_ascii=False))
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    from edge_agent.ioc.send import send

    reply = asyncio.run(send(args, _link_options(args, f"ioc-send-{socket.gethostname()}")))
    print(json.dumps(reply, ensure_ascii=False, indent=2))
    return 0 if reply.get("ok") else 1


def _store_opener(args: argparse.Namespace) -> Any:
    if args.dsn is not None:
        from edge_agent.ioc.postgres_store import PostgresStore

        return lambda: PostgresStore(args.dsn)
    from edge_agent.ioc.sqlite_store import SqliteStore

    path = args.db or Path("ioc.sqlite3")
    return lambda: SqliteStore(path, synchronous=args.sqlite_synchronous)


def cmd_receive(args: argparse.Namespace) -> int:
    from edge_agent.cli import configure_logging
    from edge_agent.ioc.receiver import Receiver, ReceiverOptions

    configure_logging(args.log_level)
    # Every decoded batch makes thousands of short-lived dicts, freed by reference counting;
    # with the default thresholds the cycle collector runs every 700 of them and took a
    # sixth of the receiver's CPU (bench/bench_ioc.py). Rarer collections still find cycles.
    gc.set_threshold(100_000, 50, 100)
    client_id = args.client_id or f"ioc-receiver-{socket.gethostname().split('.')[0]}"
    try:
        options = ReceiverOptions(
            prefix=args.prefix,
            share_group=args.share_group,
            hole_timeout_s=args.hole_timeout,
            max_payload_bytes=args.max_payload_bytes,
        )
    except ValueError as exc:
        raise ConfigError([f"receive: {exc}"]) from None
    if args.share_group is not None and args.protocol != "5":
        raise ConfigError(["--share-group: shared subscriptions need MQTT 5 (--protocol 5)"])
    link = _link_options(
        args,
        client_id,
        manual_ack=True,
        session_expiry_s=args.session_expiry,
        receive_maximum=args.receive_maximum,
    )
    receiver = Receiver(link, _store_opener(args), options=options)
    return asyncio.run(_receive(receiver, args.metrics_host, args.metrics_port))


async def _receive(receiver: Any, metrics_host: str, metrics_port: int) -> int:
    from edge_agent.ioc.metrics import serving

    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, main.cancel)
    try:
        async with receiver, serving(receiver.metrics, metrics_host, metrics_port) as port:
            log.info("metrics on http://%s:%d/metrics", metrics_host, port)
            await receiver.run()
    except asyncio.CancelledError:
        log.info("receiver stopped")
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    from edge_agent.ioc.fleet import Reader
    from edge_agent.ioc.fleet_text import table

    reader = Reader.open(path=args.db, dsn=args.dsn)
    try:
        fleet = reader.fleet()
    finally:
        reader.close()
    if args.json:
        print(json.dumps([n.to_json() for n in fleet], ensure_ascii=False, indent=2))
    else:
        sys.stdout.write(table(fleet))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from edge_agent.cli import configure_logging
    from edge_agent.ioc.web import ViewOptions, serve

    configure_logging("INFO")
    password = None
    if args.user is not None:
        if args.password_file is None:
            raise ConfigError(["--user: give the password with --password-file"])
        try:
            password = args.password_file.read_text().strip()
        except OSError as exc:
            raise ConfigError([f"--password-file: cannot read it: {exc}"]) from None
    options = ViewOptions(
        db=args.db,
        dsn=args.dsn,
        host=args.host,
        port=args.port,
        language=args.language,
        user=args.user,
        password=password,
        timezone=args.timezone,
    )
    asyncio.run(serve(options))
    return 0
