"""`ioc send`: sign a command, publish it, wait for the node's reply.

The reply is asked for on `{prefix}/{district}/{node}/reply/{verb}/{command id}` (MQTT 5
response topic, with the command id as correlation data): under the node's own reply
subtree, the only place a node answers, and unique per command, so concurrent senders never
read each other's replies. An MQTT 3.1.1 node answers on `reply/{verb}`; the reply is then
picked out by the command id it carries.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from edge_agent.contract import ContractError, Topics
from edge_agent.errors import ConfigError, SyncError
from edge_agent.ioc.broker import first_message, request
from edge_agent.sync.link import LinkOptions, Message


def signed(args: argparse.Namespace) -> dict[str, Any]:
    """The signed command that `args` describe (verb, node, args, ttl, key)."""
    from edge_agent.sync.signing import load_private_key, sign_command

    try:
        command_args = json.loads(args.args)
    except json.JSONDecodeError as exc:
        raise ConfigError([f"--args: not JSON: {exc}"]) from None
    if not isinstance(command_args, dict):
        raise ConfigError(['--args: a JSON object, e.g. \'{"camera": "gate"}\''])
    if (args.key is None) == (args.hmac_key_file is None):
        raise ConfigError(["--key: give exactly one of --key or --hmac-key-file"])
    hmac_key = None
    if args.hmac_key_file is not None:
        try:
            hmac_key = args.hmac_key_file.read_text().strip().encode()
        except OSError as exc:
            raise ConfigError([f"--hmac-key-file: cannot read it: {exc}"]) from None
    return sign_command(
        node=args.node,
        verb=args.verb,
        args=command_args,
        ttl_s=args.ttl,
        private_key=load_private_key(args.key) if args.key else None,
        hmac_key=hmac_key,
    )


async def district_of(options: LinkOptions, prefix: str, node: str, *, timeout_s: float) -> str:
    """The district level of a node's topics, from its retained status."""
    message = await first_message(options, f"{prefix}/+/{node}/status", timeout_s=timeout_s)
    if message is None:
        raise ConfigError(
            [f"--district: node {node!r} has no retained status on the broker; name it"]
        )
    return message.topic[len(prefix) + 1 :].split("/")[0]


async def send(args: argparse.Namespace, options: LinkOptions) -> dict[str, Any]:
    command = signed(args)
    try:
        Topics(args.prefix, "district", args.node)
    except ContractError as exc:
        raise ConfigError([f"--node: {exc}"]) from None
    district = args.district or await district_of(
        options, args.prefix, args.node, timeout_s=min(args.timeout, 10.0)
    )
    try:
        topics = Topics(args.prefix, district, args.node)
    except ContractError as exc:
        raise ConfigError([f"--district: {exc}"]) from None
    v5 = options.protocol == "5"
    reply_topic = f"{topics.reply(args.verb)}/{command['id']}" if v5 else topics.reply(args.verb)
    correlation = str(command["id"]).encode()

    def matches(message: Message) -> bool:
        if message.correlation_data is not None:
            return message.correlation_data == correlation
        try:
            return bool(json.loads(message.payload).get("id") == command["id"])
        except (ValueError, AttributeError):
            return False

    try:
        reply = await request(
            options,
            topic=topics.cmd(args.verb),
            payload=json.dumps(command, ensure_ascii=False).encode(),
            reply_topic=reply_topic,
            correlation=correlation,
            matches=matches,
            timeout_s=args.timeout,
        )
    except TimeoutError:
        raise SyncError(
            f"no reply from {args.node} to {args.verb} within {args.timeout:.0f} s"
        ) from None
    try:
        answer = json.loads(reply.payload)
    except ValueError as exc:
        raise SyncError(f"the reply on {reply.topic} is not JSON: {exc}") from None
    if not isinstance(answer, dict):
        raise SyncError(f"the reply on {reply.topic} is not a JSON object")
    return answer
