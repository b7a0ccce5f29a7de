"""A program on a real pseudo-terminal, driven as a person at a keyboard would: what it
shows (escape sequences stripped), keys sent, and the whole session ended by its
process group (for the onboarding wizard, `theiaosctl launch setup`)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Sequence
from types import TracebackType

#: Terminal escapes (CSI, OSC, charset selection) and carriage returns.
_ESCAPES = re.compile(r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9AB]|\x1b[=>78]|\r")


def plain(raw: bytes) -> str:
    return _ESCAPES.sub("", raw.decode("utf-8", "replace"))


class Terminal:
    """``argv`` on a pty of ``rows`` x ``cols`` as its controlling terminal, in a new session."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None,
                 rows: int = 40, cols: int = 120) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.raw = b""
        self.master = master
        try:
            self.proc = subprocess.Popen(
                list(argv), stdin=slave, stdout=slave, stderr=slave, env=env,
                start_new_session=True, close_fds=True,
                preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        finally:
            os.close(slave)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def screen(self) -> str:
        return plain(self.raw)

    def _read(self, wait: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], wait)
        if not ready:
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the other side is closed (the program ended)
            return False
        self.raw += data
        return bool(data)

    def expect(self, pattern: str, timeout: float) -> re.Match[str]:
        """Wait until ``pattern`` (a regular expression) is on the screen; its match."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            found = regex.search(self.screen)
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not on the terminal after {timeout:.0f} s; "
                                     f"it shows:\n{self.screen[-3000:]}")
            if not self._read(0.2) and self.proc.poll() is not None:
                self._read(0)
                if not regex.search(self.screen):
                    raise AssertionError(f"the program ended ({self.proc.returncode}) without "
                                         f"showing {pattern!r}:\n{self.screen[-3000:]}")

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def wait(self, timeout: float) -> int:
        """Its exit status; what it shows meanwhile is kept."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"still running after {timeout:.0f} s:\n{self.screen[-3000:]}")
            self._read(0.2)
        while self._read(0):
            pass
        return self.proc.returncode

    def close(self) -> None:
        """End the session: its whole process group, by the leader's PID."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        os.close(self.master)
