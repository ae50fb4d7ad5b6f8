"""`edge-agent ioc ...`: the province's tools (sign commands, keys, reference receiver)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from edge_agent.contract import Topics


def add_ioc_parser(sub: Any) -> None:
    ioc = sub.add_parser(
        "ioc",
        help="provincial-side tools: sign commands, make keys, receive events",
        description="Tools for the provincial IOC: create Ed25519 command keys, sign (and"
        " optionally send) commands to a node, and run the reference receiver.",
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
        help="create a signed command (and optionally publish it and print the reply)",
        description="Print the topic and signed JSON payload of a command for one node."
        " With --publish, send it to the broker and print the node's reply.",
    )
    sign.add_argument("verb", help="ping, status, config.get, config.set, snapshot, outbox.stats")
    sign.add_argument("--node", required=True, help="node id the command is for")
    sign.add_argument("--district", required=True, help="district of the node")
    sign.add_argument("--prefix", default="ioc/v1", help="topic prefix (default ioc/v1)")
    sign.add_argument(
        "--args", default="{}", help='command arguments as JSON, e.g. \'{"camera": "gate"}\''
    )
    sign.add_argument("--ttl", type=float, default=300.0, help="seconds the command stays valid")
    sign.add_argument("--key", type=Path, help="Ed25519 private key (PEM) from 'ioc keygen'")
    sign.add_argument("--hmac-key-file", type=Path, help="file holding the node's HMAC key")
    sign.add_argument("--publish", action="store_true", help="send it and wait for the reply")
    sign.add_argument("--host", default="localhost", help="broker host for --publish")
    sign.add_argument("--port", type=int, default=1883, help="broker port for --publish")
    sign.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a reply")
    sign.set_defaults(handler=cmd_sign)

    receive = ioc_sub.add_parser(
        "receive",
        help="run the reference receiver (dedupe into SQLite, report gaps)",
        description="Subscribe to every node's data and status, store events once per"
        " (node, epoch, seq) in SQLite, and log gaps. Runs until interrupted.",
    )
    receive.add_argument("--host", default="localhost", help="broker host")
    receive.add_argument("--port", type=int, default=1883, help="broker port")
    receive.add_argument("--prefix", default="ioc/v1", help="topic prefix (default ioc/v1)")
    receive.add_argument("--db", type=Path, default=Path("ioc.sqlite3"), help="SQLite file")
    receive.set_defaults(handler=cmd_receive)


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
    from edge_agent.contract import dumps
    from edge_agent.errors import ConfigError
    from edge_agent.sync.signing import load_private_key, sign_command

    try:
        command_args = json.loads(args.args)
    except json.JSONDecodeError as exc:
        raise ConfigError([f"--args: not JSON: {exc}"]) from None
    if (args.key is None) == (args.hmac_key_file is None):
        raise ConfigError(["sign: give exactly one of --key or --hmac-key-file"])
    command = sign_command(
        node=args.node,
        verb=args.verb,
        args=command_args,
        ttl_s=args.ttl,
        private_key=load_private_key(args.key) if args.key else None,
        hmac_key=args.hmac_key_file.read_text().strip().encode() if args.hmac_key_file else None,
    )
    topics = Topics(args.prefix, args.district, args.node)
    topic = topics.cmd(args.verb)
    if not args.publish:
        print(json.dumps({"topic": topic, "payload": command}, ensure_ascii=False))
        return 0
    reply = asyncio.run(_send(args, topic, topics.reply(args.verb), dumps(command)))
    print(reply)
    return 0 if json.loads(reply).get("ok") else 1


async def _send(args: argparse.Namespace, topic: str, reply_topic: str, payload: bytes) -> str:
    import secrets

    from edge_agent.sync.link import Link, LinkOptions, Message

    replies: asyncio.Queue[Message] = asyncio.Queue()
    options = LinkOptions(args.host, args.port, client_id=f"ioc-sign-{secrets.token_hex(4)}")
    async with Link(options, on_message=replies.put_nowait) as link:
        await link.subscribe(reply_topic)
        await link.publish(topic, payload)
        async with asyncio.timeout(args.timeout):
            while True:
                message = await replies.get()
                if json.loads(message.payload).get("id") == json.loads(payload)["id"]:
                    return message.payload.decode()


def cmd_receive(args: argparse.Namespace) -> int:
    from edge_agent.ioc.receiver import Receiver, receive
    from edge_agent.sync.link import LinkOptions

    receiver = Receiver(args.db)
    options = LinkOptions(args.host, args.port, client_id="ioc-receiver")
    try:
        asyncio.run(receive(options, receiver, prefix=args.prefix))
    except KeyboardInterrupt:
        pass
    finally:
        print(
            json.dumps(
                {
                    "events": receiver.count(),
                    "duplicates": receiver.duplicates,
                    "gaps": {f"{n}/{e}": g for (n, e), g in receiver.gaps().items()},
                }
            ),
            file=sys.stderr,
        )
        receiver.close()
    return 0
