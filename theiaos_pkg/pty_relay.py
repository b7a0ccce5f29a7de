"""An interactive program on a pseudo-terminal of its own (part of the run door).

The onboarding wizard needs a terminal. Giving it root's would let any process of the
service account read root's keystrokes or inject input (TIOCSTI) through the wizard's
descriptors. Instead the wizard gets a new pty as its controlling terminal, in a new
session, and root copies bytes between its own terminal and the pty's master side,
as script(1) does.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import subprocess
import sys
import termios
import tty
from collections.abc import Iterator
from types import FrameType
from typing import Any

_EOF = b"\x04"  # what a terminal sends for Ctrl-D: end of input for a canonical reader


def _take_terminal() -> None:
    """In the child, after setsid: make the pty on stdin its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _copy_size(src: int, dst: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.ioctl(dst, termios.TIOCSWINSZ, fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8))


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    """Root's terminal in raw mode while relaying (the pty does the line editing)."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)  # not TCSAFLUSH: keep what was typed ahead
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run(argv: list[str], stdin_fd: int | None = None, stdout_fd: int | None = None,
        **popen: Any) -> int:
    """Run ``argv`` on a new pty and relay until it exits; its exit status."""
    stdin_fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
    stdout_fd = sys.stdout.fileno() if stdout_fd is None else stdout_fd
    master, slave = os.openpty()
    try:
        if os.isatty(stdin_fd):
            _copy_size(stdin_fd, slave)
        proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                preexec_fn=_take_terminal, **popen)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)

    def resized(signum: int, frame: FrameType | None) -> None:
        _copy_size(stdin_fd, master)

    follow_size = os.isatty(stdin_fd)
    old = signal.signal(signal.SIGWINCH, resized) if follow_size else None
    try:
        with _raw(stdin_fd):
            _relay(master, stdin_fd, stdout_fd)
    finally:
        if follow_size:
            signal.signal(signal.SIGWINCH, old)
        os.close(master)
        code = proc.wait()
    return code


def _relay(master: int, stdin_fd: int, stdout_fd: int) -> None:
    watch = [master, stdin_fd]
    while True:
        try:
            ready, _, _ = select.select(watch, [], [])
        except InterruptedError:
            continue
        if master in ready:
            try:
                data = os.read(master, 65536)
            except OSError as exc:
                if exc.errno == errno.EIO:  # the child closed its side: it is done
                    return
                raise
            if not data:
                return
            _write_all(stdout_fd, data)
        if stdin_fd in ready:
            data = os.read(stdin_fd, 65536)
            if not data:  # our input ended: tell the child as a terminal would
                watch.remove(stdin_fd)
                data = _EOF
            _write_all(master, data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
