"""One simulated Modbus TCP device for the side-by-side benchmark, run as a child process.

Twenty holding registers (0-19). The device keeps one bank, reachable on one loopback port
per agent, so that it knows which agent it served: each time it serves register `i` on
port `p` it counts that serve, and the value it answers is `value(i, k)` for the k-th serve
(0-based). Every served value is thus a distinct, traceable reading: a value that reaches
the broker names the serve it came from, and a serve whose value never arrives is a lost
reading. That is "produced" in the benchmark: what the device really served, whoever asked.

Control on stdin/stdout, one line each: `counts` answers a JSON object
`{"<port>": [serves of register 0, ..., serves of register 19], ...}`; `quit` stops.

Usage: python bench/peer/device.py PORT [PORT ...]   (prints `ready` once listening);
`Device` starts it and asks for the counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import subprocess
import sys

REGISTERS = 20
# Values step by one per serve; registers start 3,000 apart so that a value names both its
# register and its serve (mod 65,536: a register wraps after 65,536 serves, 109 min at 10 Hz).
STRIDE = 3000
WRAP = 65536


def value(register: int, serve: int) -> int:
    return (serve + STRIDE * register) % WRAP


def serve_of(register: int, served_value: int) -> int:
    """The serve number (mod 65,536) that answered `served_value` for `register`."""
    return (served_value - STRIDE * register) % WRAP


async def _serve(
    counts: list[int],
    function_code: int,
    start_address: int,
    address: int,
    count: int,
    registers: list[int],
    set_values: list[int] | list[bool] | None,
) -> None:
    if set_values is not None or function_code not in (3, 4):
        return
    for register in range(address, min(address + count, REGISTERS)):
        registers[register - start_address] = value(register, counts[register])
        counts[register] += 1


async def main(ports: list[int]) -> None:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    counts = {port: [0] * REGISTERS for port in ports}
    servers = []
    for port in ports:
        device = SimDevice(
            id=0,
            simdata=[SimData(0, values=[0] * REGISTERS, datatype=DataType.REGISTERS)],
            action=functools.partial(_serve, counts[port]),
        )
        server = ModbusTcpServer(device, address=("127.0.0.1", port))
        await server.serve_forever(background=True)
        servers.append(server)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := (await reader.readline()).decode().strip():
            if line == "quit":
                break
            if line == "counts":
                print(json.dumps({str(p): c for p, c in counts.items()}), flush=True)
    finally:
        for server in servers:
            await server.shutdown()  # type: ignore[no-untyped-call]


class Device:
    """The device child: its serve counters, per agent, on request."""

    def __init__(self, ports: dict[str, int]) -> None:
        self.ports = ports
        self.process = subprocess.Popen(
            [sys.executable, __file__, *map(str, ports.values())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the Modbus device did not start")

    def counts(self) -> dict[str, list[int]]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("counts\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the Modbus device exited ({self.process.poll()})")
        by_port = json.loads(line)
        return {agent: by_port[str(port)] for agent, port in self.ports.items()}

    def close(self) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


if __name__ == "__main__":
    asyncio.run(main([int(p) for p in sys.argv[1:]]))
