"""Inside the sandbox (see sandbox.py), as root: take the unit's limits, drop every
capability from the bounding set, switch to the unit's user and groups, forbid new
privileges, install the seccomp program, then exec the command; systemd's order."""

import ctypes
import json
import os
import resource
import sys

PR_CAPBSET_DROP = 24
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def prctl(libc: ctypes.CDLL, option: int, arg: object) -> None:
    if libc.prctl(option, arg, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl({option}): {os.strerror(errno)}")


def main() -> None:
    with open(sys.argv[1]) as handle:
        spec = json.load(handle)
    libc = ctypes.CDLL(None, use_errno=True)
    resource.setrlimit(resource.RLIMIT_NOFILE, (spec["nofile"], spec["nofile"]))
    with open("/proc/sys/kernel/cap_last_cap") as handle:
        last_cap = int(handle.read())
    for cap in range(last_cap + 1):
        prctl(libc, PR_CAPBSET_DROP, cap)
    os.setgroups(spec["groups"])
    os.setresgid(spec["gid"], spec["gid"], spec["gid"])
    os.setresuid(spec["uid"], spec["uid"], spec["uid"])
    if spec["no_new_privileges"]:
        prctl(libc, PR_SET_NO_NEW_PRIVS, 1)
    os.umask(spec["umask"])
    os.chdir(spec["cwd"])
    with open(spec["seccomp"], "rb") as handle:
        program = handle.read()
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"seccomp: {os.strerror(errno)}")
    os.execve(spec["argv"][0], spec["argv"], spec["env"])


main()
