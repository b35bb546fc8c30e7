"""Turns a freshly forked child of the zygote into a confined worker.

Order matters: file descriptors first (so nothing inherited survives), then the file
system view (chroot needs root and must precede dropping it), then privileges, then
rlimits, and the seccomp filter last, because setting up the others needs syscalls the
filter forbids. After `confine` the process can compute and use fd 0 (its socket to the
host) and little else: no opening files, no sockets, no execve, no new processes.
"""

from __future__ import annotations

import errno
import os
import resource
import socket
from dataclasses import dataclass

import pyseccomp

NOBODY = 65534

# What CPython needs to compute, manage memory, handle signals and talk over fd 0.
# Everything else fails with EPERM (not a kill, so a forbidden call is an ordinary Python
# OSError that the contract cannot catch anyway, and a missed harmless call does not crash
# the worker into a retry loop).
ALLOWED_SYSCALLS = (
    "read",
    "write",
    "readv",
    "writev",
    "recvfrom",
    "sendto",
    "recvmsg",
    "sendmsg",
    "close",
    "brk",
    "mmap",
    "munmap",
    "mremap",
    "madvise",
    "mprotect",
    "rt_sigreturn",
    "rt_sigaction",
    "rt_sigprocmask",
    "sigaltstack",
    "exit",
    "exit_group",
    "futex",
    "clock_gettime",
    "clock_getres",
    "gettimeofday",
    "getpid",
    "gettid",
    "fstat",
    "newfstatat",
    "lseek",
    "getrandom",
    "poll",
    "ppoll",
    "fcntl",
    "getrusage",
)


@dataclass(frozen=True)
class WorkerLimits:
    cpu_seconds: int = 3600  # cumulative per worker; a backstop, the host deadline acts first
    address_space_bytes: int = 1 << 30
    stack_bytes: int = 8 << 20


def confine(sock_fd: int, workdir: str, limits: WorkerLimits) -> socket.socket:
    """Confines the calling process; returns its socket to the host, now on fd 0."""
    if sock_fd != 0:
        os.dup2(sock_fd, 0)
    os.set_inheritable(0, False)
    os.closerange(1, 1 << 20)
    os.chdir(workdir)
    if os.geteuid() == 0:
        os.chroot(workdir)
        os.chdir("/")
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    os.environ.clear()
    for limit, value in (
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NOFILE, 1),  # fd 0 is open; no fd number above it can be made
        (resource.RLIMIT_NPROC, 0),
        (resource.RLIMIT_FSIZE, 0),
        (resource.RLIMIT_CPU, limits.cpu_seconds),
        (resource.RLIMIT_AS, limits.address_space_bytes),
        (resource.RLIMIT_STACK, limits.stack_bytes),
    ):
        resource.setrlimit(limit, (value, value))
    # Made before the filter: wrapping an fd may query it with syscalls the filter denies.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, fileno=0)
    _install_seccomp()
    return sock


def _install_seccomp() -> None:
    syscall_filter = pyseccomp.SyscallFilter(defaction=pyseccomp.ERRNO(errno.EPERM))
    for name in ALLOWED_SYSCALLS:
        try:
            syscall_filter.add_rule(pyseccomp.ALLOW, name)
        except (ValueError, OSError):
            continue  # not a syscall on this architecture (e.g. newfstatat on some)
    syscall_filter.load()
