"""Run a command the way systemd would run edge-agent.service, without systemd: bubblewrap
builds the mount namespace, and `launch.py` (run inside it) drops to the unit's user and
installs the unit's seccomp rules, translated here into a BPF program.

What this reproduces from the unit, read from the unit file itself:
- ProtectSystem=strict: the whole tree read-only, only the state directory writable;
- ProtectHome=yes and PrivateTmp=yes: empty /home, /root and /run/user, a private /tmp;
- DevicePolicy=closed as far as a minimal /dev goes (null, zero, random, tty, shm);
- ProtectKernelTunables=yes: /sys and /proc/sys read-only; ProtectProc=invisible: a /proc
  that shows only the sandbox's own processes (a PID namespace);
- User=, Group=, SupplementaryGroups= (numeric, from the staged tree), UMask=,
  LimitNOFILE=, Environment=, WorkingDirectory=, $STATE_DIRECTORY, $CREDENTIALS_DIRECTORY,
  NOTIFY_SOCKET and WATCHDOG_USEC;
- NoNewPrivileges=yes and CapabilityBoundingSet= (every capability dropped from the bounding
  set before the user switch);
- SystemCallFilter= (the groups as `systemd-analyze syscall-filter` defines them, allow-list
  minus deny-list) with SystemCallErrorNumber=, SystemCallArchitectures=native,
  RestrictAddressFamilies= and MemoryDenyWriteExecute= (the same argument checks systemd 252
  installs: mmap W+X, mprotect/pkey_mprotect X, shmat SHM_EXEC), on x86-64.

What it cannot reproduce: the cgroup device controller (DeviceAllow=), RestrictNamespaces=,
LockPersonality=, RestrictRealtime= and ProtectClock= filters (their seccomp argument checks
are not rebuilt here), MemoryMax=/CPUWeight= (cgroups), journald, LoadCredential='s copying
(the test hands over a directory of files instead), and systemd's own start-up and watchdog
enforcement (the test reads the notify socket itself).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000
LD_ABS_W, JEQ_K, JGE_K, AND_K, RET_K = 0x20, 0x15, 0x35, 0x54, 0x06
ERRNO = {"EPERM": 1, "EACCES": 13, "EAFNOSUPPORT": 97}
FAMILIES = {"AF_UNIX": 1, "AF_LOCAL": 1, "AF_INET": 2, "AF_INET6": 10, "AF_NETLINK": 16}
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
UNISTD = (
    Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
    Path("/usr/include/asm/unistd_64.h"),
)


def unit_settings(unit: Path) -> dict[str, list[str]]:
    """Every `Key=value` of the unit file, in order, per key (comments dropped)."""
    settings: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def syscall_numbers() -> dict[str, int]:
    for header in UNISTD:
        if header.exists():
            text = header.read_text()
            return {m[1]: int(m[2]) for m in re.finditer(r"#define __NR_(\w+) (\d+)", text)}
    raise FileNotFoundError("no unistd_64.h: install the Debian package linux-libc-dev")


def expand_group(name: str, cache: dict[str, set[str]] | None = None) -> set[str]:
    """The system calls of `@group` (or just `name`), groups expanded recursively."""
    if not name.startswith("@"):
        return {name}
    cache = {} if cache is None else cache
    if name not in cache:
        listing = subprocess.run(
            ["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True
        ).stdout
        members: set[str] = set()
        for line in listing.splitlines()[1:]:
            entry = line.strip()
            if entry and not entry.startswith("#"):
                members |= expand_group(entry, cache)
        cache[name] = members
    return cache[name]


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def _arg(index: int) -> int:
    return 16 + 8 * index  # offsetof(struct seccomp_data, args[index]), low 32 bits


def seccomp_program(settings: dict[str, list[str]]) -> bytes:
    """The unit's system call rules as a classic BPF program for x86-64."""
    allowed: set[str] = set()
    cache: dict[str, set[str]] = {}
    for value in settings.get("SystemCallFilter", []):
        deny = value.startswith("~")
        names = set().union(*(expand_group(n, cache) for n in value.lstrip("~").split()))
        allowed = allowed - names if deny else allowed | names
    # Always allowed by systemd (see systemd.exec(5), SystemCallFilter=).
    allowed |= {"execve", "exit", "exit_group", "getrlimit", "rt_sigreturn"}
    numbers = syscall_numbers()
    errno = ERRNO[settings.get("SystemCallErrorNumber", ["EPERM"])[-1]]
    deny = RET_ERRNO | errno
    families = {FAMILIES[f] for v in settings.get("RestrictAddressFamilies", []) for f in v.split()}
    mdwe = settings.get("MemoryDenyWriteExecute", ["no"])[-1] == "yes"

    program = [
        _insn(LD_ABS_W, 4),  # arch
        _insn(JEQ_K, AUDIT_ARCH_X86_64, jt=1),
        _insn(RET_K, RET_KILL_PROCESS),
        _insn(LD_ABS_W, 0),  # nr
        _insn(JGE_K, X32_SYSCALL_BIT, jf=1),
        _insn(RET_K, deny),
    ]

    def masked(nr: int, arg: int, mask: int, forbidden: int) -> list[bytes]:
        # if nr matches and (args[arg] & mask) == forbidden: deny, else allow.
        return [
            _insn(JEQ_K, nr, jf=5),
            _insn(LD_ABS_W, _arg(arg)),
            _insn(AND_K, mask),
            _insn(JEQ_K, forbidden, jf=1),
            _insn(RET_K, RET_ERRNO | ERRNO["EPERM"]),
            _insn(RET_K, RET_ALLOW),
        ]

    if mdwe:
        checks = [
            ("mmap", PROT_WRITE | PROT_EXEC, PROT_WRITE | PROT_EXEC),
            ("mprotect", PROT_EXEC, PROT_EXEC),
            ("pkey_mprotect", PROT_EXEC, PROT_EXEC),
            ("shmat", SHM_EXEC, SHM_EXEC),
        ]
        for name, mask, forbidden in checks:
            if name in allowed:
                program += masked(numbers[name], 2, mask, forbidden)
    if families and "socket" in allowed:
        ordered = sorted(families)
        program.append(_insn(JEQ_K, numbers["socket"], jf=len(ordered) + 3))
        program.append(_insn(LD_ABS_W, _arg(0)))
        for i, family in enumerate(ordered):
            program.append(_insn(JEQ_K, family, jt=len(ordered) - i))
        program.append(_insn(RET_K, RET_ERRNO | ERRNO["EAFNOSUPPORT"]))
        program.append(_insn(RET_K, RET_ALLOW))
    for name in sorted(allowed):
        if name in numbers:
            program += [_insn(JEQ_K, numbers[name], jf=1), _insn(RET_K, RET_ALLOW)]
    program.append(_insn(RET_K, deny))
    return b"".join(program)


def _octal(value: str) -> int:
    return int(value, 8)


@dataclass
class Sandbox:
    """The unit's restrictions around the staged tree `root` (see the module docstring)."""

    root: Path
    unit: Path
    state: Path
    config_dir: Path
    credentials: Path
    work: Path
    binds: list[tuple[Path, str]] = field(default_factory=list)
    notify_socket: Path | None = None
    watchdog_usec: int | None = None

    def ids(self, name: str, table: str) -> int:
        for line in (self.root / "etc" / table).read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name:
                return int(fields[2])
        raise LookupError(f"{name} not in {self.root}/etc/{table}")

    def spec(self, argv: list[str]) -> dict[str, object]:
        settings = unit_settings(self.unit)
        user = settings["User"][-1]
        group = settings.get("Group", [user])[-1]
        supplementary = " ".join(settings.get("SupplementaryGroups", [])).split()
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin",
            "HOME": "/var/lib/edge-agent",
            "USER": user,
            "LOGNAME": user,
            "SHELL": "/usr/sbin/nologin",
            "LANG": "C.UTF-8",
            "STATE_DIRECTORY": "/var/lib/edge-agent",
            "CONFIGURATION_DIRECTORY": "/etc/edge-agent",
            "CREDENTIALS_DIRECTORY": "/run/credentials/edge-agent.service",
        }
        for assignment in settings.get("Environment", []):
            key, value = assignment.split("=", 1)
            env[key] = value
        if self.notify_socket is not None:
            env["NOTIFY_SOCKET"] = "/run/notify/socket"
        if self.watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(self.watchdog_usec)
        return {
            "argv": argv,
            "env": env,
            "uid": self.ids(user, "passwd"),
            "gid": self.ids(group, "group"),
            "groups": [self.ids(g, "group") for g in supplementary],
            "umask": _octal(settings.get("UMask", ["0022"])[-1]),
            "nofile": int(settings.get("LimitNOFILE", ["1024"])[-1]),
            "cwd": settings.get("WorkingDirectory", ["/"])[-1],
            "seccomp": str(Path("/run/sandbox/seccomp.bpf")),
            "no_new_privileges": settings.get("NoNewPrivileges", ["no"])[-1] == "yes",
        }

    def command(self, argv: list[str]) -> list[str]:
        """bwrap + launcher running `argv` under the unit's restrictions."""
        sandbox_dir = self.work / "sandbox"
        sandbox_dir.mkdir(exist_ok=True)
        (sandbox_dir / "seccomp.bpf").write_bytes(seccomp_program(unit_settings(self.unit)))
        (sandbox_dir / "spec.json").write_text(json.dumps(self.spec(argv)))
        shutil.copy(HERE / "launch.py", sandbox_dir / "launch.py")
        bwrap = shutil.which("bwrap") or "bwrap"
        command = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        command += ["--ro-bind", "/sys", "/sys", "--ro-bind", "/proc/sys", "/proc/sys"]
        command += ["--tmpfs", "/tmp", "--tmpfs", "/var/tmp", "--tmpfs", "/home"]
        command += ["--tmpfs", "/root", "--tmpfs", "/run", "--tmpfs", "/opt", "--tmpfs", "/srv"]
        command += ["--ro-bind", str(self.root / "opt" / "edge-agent"), "/opt/edge-agent"]
        command += _rebuilt(
            "/etc", "edge-agent", ["--ro-bind", str(self.config_dir), "/etc/edge-agent"]
        )
        command += _rebuilt(
            "/var/lib", "edge-agent", ["--bind", str(self.state), "/var/lib/edge-agent"]
        )
        command += ["--perms", "0755", "--dir", "/run/credentials"]
        command += ["--ro-bind", str(self.credentials), "/run/credentials/edge-agent.service"]
        command += ["--ro-bind", str(sandbox_dir), "/run/sandbox"]
        if self.notify_socket is not None:
            command += ["--bind", str(self.notify_socket.parent), "/run/notify"]
        for source, target in self.binds:
            command += ["--ro-bind", str(source), target]
        # Every namespace but the user one: the launcher switches to the unit's user itself.
        command += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
        command += ["--unshare-cgroup-try", "--die-with-parent", "--new-session"]
        python = "/opt/edge-agent/.venv/bin/python"
        return [*command, "--", python, "-I", "/run/sandbox/launch.py", "/run/sandbox/spec.json"]


def _rebuilt(parent: str, child: str, mount: list[str]) -> list[str]:
    """`parent` as on the host, read-only, plus `mount` at `parent/child`: a tmpfs holding a
    bind of every host entry (bwrap cannot make a mount point in a read-only directory)."""
    args = ["--tmpfs", parent]
    for entry in sorted(Path(parent).iterdir()):
        if entry.name == child:
            continue
        if entry.is_symlink():
            args += ["--symlink", os.readlink(entry), str(entry)]
        else:
            args += ["--ro-bind-try", str(entry), str(entry)]
    return [*args, *mount, "--remount-ro", parent]


def is_supported() -> str | None:
    """None when this machine can run the sandbox, else why not."""
    if os.uname().machine != "x86_64":
        return "the seccomp translation covers x86-64 only"
    if os.geteuid() != 0:
        return "the sandbox switches to the unit's user: run as root"
    for tool, package in (("bwrap", "bubblewrap"), ("systemd-analyze", "systemd")):
        if shutil.which(tool) is None:
            return f"{tool} not found: install the Debian package {package}"
    if not any(header.exists() for header in UNISTD):
        return "unistd_64.h not found: install the Debian package linux-libc-dev"
    return None
