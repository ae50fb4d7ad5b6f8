"""The installed unit: `systemd-analyze verify` and `security` on the staged tree, and the
agent itself running under the unit's restrictions.

systemd is not PID 1 on every machine that runs this suite (containers, CI), so the agent
runs under an emulation of the unit built from the unit file (see tests/install/sandbox.py
for exactly what it reproduces and what it cannot); where systemd does run, a transient unit
with the same settings loads the model as well.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.camera.test_rtsp_e2e import wait_until
from tests.conftest import IN_CI, REPO
from tests.install.conftest import UNIT, Staged
from tests.install.sandbox import Sandbox, is_supported, unit_settings

# Real installs (a venv of ~400 MB each) on a shared machine: slow, but bounded.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+\.\d+)")
PROBE = """
import errno, mmap, os, socket
def attempt(name, action):
    try:
        action()
        print(name, "allowed")
    except OSError as exc:
        print(name, "denied", errno.errorcode.get(exc.errno, exc.errno))
attempt("mmap_write_exec", lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_WRITE | mmap.PROT_EXEC))
attempt("mmap_write", lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_WRITE | mmap.PROT_READ))
attempt("set_affinity", lambda: os.sched_setaffinity(0, os.sched_getaffinity(0)))
attempt("packet_socket", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
attempt("inet_socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close())
attempt("write_etc", lambda: open("/etc/edge-agent/x", "w"))
attempt("write_usr", lambda: open("/usr/x", "w"))
attempt("write_state", lambda: open("/var/lib/edge-agent/probe", "w").close())
print("home", os.listdir("/home") + os.listdir("/root"))
print("uid", os.getuid(), "umask", oct(os.umask(0)))
for line in open("/proc/self/status"):
    if line.startswith(("CapBnd", "CapEff", "NoNewPrivs")):
        print(line.replace(":", "").split()[0], line.split()[1])
"""


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60)


def verify_in(staged_prefix: Path | None, units: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` with /opt/edge-agent resolved in the staged tree (bound
    there in a mount namespace), or absent when `staged_prefix` is None."""
    mounts = ["--tmpfs", "/opt"]
    if staged_prefix is not None:
        mounts += ["--ro-bind", str(staged_prefix), "/opt/edge-agent"]
    command = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    command += ["--tmpfs", "/tmp", *mounts, "--ro-bind", str(units), "/tmp/units"]
    command += ["--", "systemd-analyze", "verify", f"/tmp/units/{UNIT}"]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.fixture
def sandbox_ready() -> None:
    why = is_supported()
    if why is not None:
        if IN_CI:
            pytest.fail(why)
        pytest.skip(why)


def test_unit_verifies_with_the_staged_binary(staged: Staged, sandbox_ready: None) -> None:
    units = staged.root / "etc" / "systemd" / "system"
    result = verify_in(staged.prefix, units)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == "", result.stdout + result.stderr
    # The same check fails without the program in place: it does look at the binary.
    missing = verify_in(None, units)
    assert missing.returncode != 0 and "is not executable" in missing.stderr


def test_security_exposure_is_at_most_2_5(staged: Staged) -> None:
    for unit in (REPO / "systemd" / UNIT, staged.root / "etc" / "systemd" / "system" / UNIT):
        result = analyze("security", "--offline=true", str(unit))
        assert result.returncode == 0, result.stderr
        assert "Invalid" not in result.stderr and "Unknown" not in result.stderr, result.stderr
        match = EXPOSURE.search(result.stdout)
        assert match, result.stdout
        assert float(match.group(1)) <= 2.5, result.stdout


@pytest.fixture
def sandbox(staged: Staged, tmp_path: Path, sandbox_ready: None) -> Sandbox:
    uid, gid = staged.ids()
    config_dir = tmp_path / "etc"
    config_dir.mkdir(mode=0o750)
    os.chown(config_dir, 0, gid)
    state = tmp_path / "state"
    state.mkdir(mode=0o750)
    os.chown(state, uid, gid)
    # As systemd hands them over: a directory only the unit's user reads, and the empty
    # defaults (SetCredential=) of the secrets this node has no file for.
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name in unit_settings(staged.root / "etc" / "systemd" / "system" / UNIT)["SetCredential"]:
        secret = credentials / name.split(":")[0]
        secret.write_text("\n")
        os.chown(secret, uid, gid)
        secret.chmod(0o400)
    os.chown(credentials, uid, gid)
    credentials.chmod(0o500)
    return Sandbox(
        root=staged.root,
        unit=staged.root / "etc" / "systemd" / "system" / UNIT,
        state=state,
        config_dir=config_dir,
        credentials=credentials,
        work=tmp_path,
    )


def test_the_restrictions_are_in_force(sandbox: Sandbox, staged: Staged) -> None:
    probe = sandbox.work / "probe.py"
    probe.write_text(PROBE)
    sandbox.binds.append((probe, "/srv/probe.py"))
    result = subprocess.run(
        sandbox.command(["/opt/edge-agent/.venv/bin/python", "/srv/probe.py"]),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    seen = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert seen["mmap_write_exec"] == "denied EPERM"  # MemoryDenyWriteExecute=
    assert seen["mmap_write"] == "allowed"
    assert seen["set_affinity"] == "denied EPERM"  # SystemCallFilter=~@resources
    assert seen["packet_socket"] == "denied EAFNOSUPPORT"  # RestrictAddressFamilies=
    assert seen["inet_socket"] == "allowed"
    assert seen["write_etc"] == "denied EROFS" and seen["write_usr"] == "denied EROFS"
    assert seen["write_state"] == "allowed"
    assert seen["home"] == "[]"  # ProtectHome=
    assert seen["uid"] == f"{staged.ids()[0]} umask 0o77"
    assert seen["CapBnd"] == seen["CapEff"] == "0000000000000000" and seen["NoNewPrivs"] == "1"


@contextlib.contextmanager
def notify_socket(directory: Path) -> Iterator[socket.socket]:
    directory.mkdir()
    directory.chmod(0o755)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(directory / "socket"))
    (directory / "socket").chmod(0o777)
    sock.settimeout(120)
    try:
        yield sock
    finally:
        sock.close()


def wait_for_message(sock: socket.socket, wanted: str) -> None:
    while wanted not in sock.recv(4096).decode().splitlines():
        pass


def test_agent_loads_the_model_and_writes_its_outbox_under_the_unit(
    sandbox: Sandbox, staged: Staged, media_dir: Path, tmp_path: Path
) -> None:
    """The staged agent, as ExecStartPre and ExecStart, under the emulated unit: read-only
    root, only the state directory writable, no home, private /tmp, the unit's user and
    groups, no capabilities, NoNewPrivileges, the unit's system call filter, address
    families and MemoryDenyWriteExecute. It loads the real model, detects people in the
    sample clip, writes its outbox (0600, umask 0077), sends READY=1 and WATCHDOG=1, and
    stops cleanly on SIGTERM. Not emulated: DeviceAllow=, RestrictNamespaces=,
    LockPersonality=, RestrictRealtime=, ProtectClock= and the cgroup limits (see
    sandbox.py); systemd itself does not supervise it here."""
    uid, gid = staged.ids()
    config = sandbox.config_dir / "edge-agent.toml"
    config.write_text(
        '[node]\nid = "sandbox-node"\ndistrict = "d1"\n'
        '[paths]\nmodel_dir = "/opt/edge-agent/models"\n'
        "[mqtt]\nenabled = false\n[web]\nport = 0\n"
        '[[sensors]]\nkind = "system"\nname = "host"\ninterval_s = 1.0\n'
        '[[cameras]]\nname = "gate"\nsource = "/srv/vtest.avi"\nfps = 4.0\nloop = true\n'
    )
    os.chown(config, 0, gid)
    config.chmod(0o640)
    sandbox.binds.append((media_dir / "vtest.avi", "/srv/vtest.avi"))
    settings = unit_settings(sandbox.unit)
    pre = subprocess.run(
        sandbox.command(settings["ExecStartPre"][-1].split()),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pre.returncode == 0, pre.stderr

    with notify_socket(tmp_path / "notify") as notify:
        sandbox.notify_socket = tmp_path / "notify" / "socket"
        sandbox.watchdog_usec = 2_000_000
        agent = subprocess.Popen(
            sandbox.command(settings["ExecStart"][-1].split()),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            try:
                wait_for_message(notify, "READY=1")
            except TimeoutError:
                agent.kill()
                output, _ = agent.communicate(timeout=60)
                raise AssertionError(
                    f"no READY=1 from the agent under the unit:\n{output}"
                ) from None
            events = wait_until(
                sandbox.state / "outbox.sqlite3",
                agent,
                lambda ev: any(
                    e["kind"] == "detection" and e["data"]["label"] == "person" for e in ev
                ),
                "a person detected in the sample clip under the unit's restrictions",
                timeout_s=120,
            )
            wait_for_message(notify, "WATCHDOG=1")
            (main,) = [
                p
                for p in psutil.Process(agent.pid).children(recursive=True)
                if "run" in p.cmdline()
            ]
            main.send_signal(signal.SIGTERM)
            output, _ = agent.communicate(timeout=60)
        finally:
            agent.kill()
            agent.wait()
            if agent.stdout is not None:
                agent.stdout.close()
    assert agent.returncode == 0, output
    assert any(e["kind"] == "reading" for e in events)
    for trouble in ("Read-only file system", "Permission denied", "Operation not permitted"):
        assert trouble not in output, output
    outbox = sandbox.state / "outbox.sqlite3"
    assert (outbox.stat().st_uid, oct(outbox.stat().st_mode & 0o777)) == (uid, "0o600")


def test_transient_unit_where_systemd_runs(staged: Staged, media_dir: Path) -> None:
    """Only where systemd is PID 1: `edge-agent detect` as a transient unit with the unit's
    own sandboxing settings (a dynamic user stands in for edge-agent)."""
    if not Path("/run/systemd/system").is_dir() or shutil.which("systemd-run") is None:
        pytest.skip("systemd is not PID 1 here; the emulation above covers the unit instead")
    keep = re.compile(
        r"^(NoNewPrivileges|CapabilityBoundingSet|AmbientCapabilities|Protect\w+|Private\w+"
        r"|UMask|Device\w+|Restrict\w+|LockPersonality|RemoveIPC|KeyringMode|MemoryDeny\w+"
        r"|SystemCall\w+|LimitNOFILE|Environment|WorkingDirectory)$"
    )
    properties = [
        f"--property={key}={value}"
        for key, values in unit_settings(staged.root / "etc" / "systemd" / "system" / UNIT).items()
        if keep.match(key)
        for value in values
    ]
    properties += [
        "--property=DynamicUser=yes",
        f"--property=BindReadOnlyPaths={staged.prefix}:/opt/edge-agent",
        f"--property=BindReadOnlyPaths={media_dir / 'astronaut.png'}:/srv/astronaut.png",
    ]
    command = ["systemd-run", f"--unit=edge-agent-test-{uuid.uuid4().hex[:8]}", "--wait"]
    command += ["--pipe", "--collect", "--quiet", *properties, "--"]
    command += ["/opt/edge-agent/.venv/bin/edge-agent", "detect", "/srv/astronaut.png"]
    command += ["--model", "/opt/edge-agent/models/nanodet.onnx"]
    command += ["--classes", "/opt/edge-agent/models/coco.names"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert '"label": "person"' in result.stdout, result.stdout
