"""The run door: children never hold root's terminal or descriptors."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest

from theiaos_pkg import pty_relay, run
from theiaos_pkg.errors import CommandError

PROBE = """
import os, sys
print(os.getsid(0) == os.getpid())          # a session of its own
st, null = os.fstat(0), os.stat('/dev/null')
print((st.st_rdev, st.st_ino) == (null.st_rdev, null.st_ino))   # stdin is /dev/null
try:
    os.open('/dev/tty', os.O_RDWR)
    print('tty')
except OSError:
    print('no tty')
print(sorted(int(fd) for fd in os.listdir('/proc/self/fd')))
"""


def test_a_child_gets_no_terminal_no_stdin_and_no_stray_descriptor() -> None:
    keep = os.open("/dev/null", os.O_RDONLY)  # an inheritable descriptor of the caller
    os.set_inheritable(keep, True)
    try:
        out = run.run([sys.executable, "-c", PROBE]).stdout.splitlines()
    finally:
        os.close(keep)
    assert out[:3] == ["True", "True", "no tty"]
    assert out[3] == "[0, 1, 2, 3]"  # 3: the listdir itself


def test_feed_copies_root_side_data_through_a_pipe(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    out = run.run([sys.executable, "-c",
                   "import os, sys, stat; print(stat.S_ISFIFO(os.fstat(0).st_mode), "
                   "len(sys.stdin.buffer.read()))"], feed=io.BytesIO(data))
    assert out.stdout.split() == ["True", "300000"]


def test_stream_relays_output_through_a_pipe() -> None:
    sink = io.BytesIO()
    code = run.stream([sys.executable, "-c", "import os, stat, sys; "
                       "print(stat.S_ISFIFO(os.fstat(1).st_mode)); sys.exit(3)"], out=sink)
    assert (code, sink.getvalue()) == (3, b"True\n")


def test_failure_and_missing_program_are_one_line() -> None:
    with pytest.raises(CommandError, match=r"failed: boom$"):
        run.run([sys.executable, "-c", "import sys; sys.exit('boom')"])
    with pytest.raises(CommandError, match="no-such-program: command not found"):
        run.run(["no-such-program"])
    with pytest.raises(CommandError, match="no result after 0 s"):
        run.run([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.3)


def test_the_wizard_gets_a_terminal_of_its_own() -> None:
    """pty_relay: the child's terminal is a new pty (its controlling terminal, in its own
    session); what root's side writes reaches it, what it prints comes back."""
    child = ("import os, sys\n"
             "print('tty', os.ttyname(0), os.getsid(0) == os.getpid(), flush=True)\n"
             "fd = os.open('/dev/tty', os.O_RDWR); os.close(fd)\n"
             "print('answer', input('name? '), flush=True)\n")
    stdin_r, stdin_w = os.pipe()
    out_r, out_w = os.pipe()
    os.write(stdin_w, b"wizard\n")
    os.close(stdin_w)
    code = pty_relay.run([sys.executable, "-c", child], stdin_fd=stdin_r, stdout_fd=out_w,
                         start_new_session=True)
    os.close(out_w)
    os.close(stdin_r)
    text = b""
    while chunk := os.read(out_r, 65536):
        text += chunk
    os.close(out_r)
    assert code == 0, text
    lines = text.decode().replace("\r", "").splitlines()
    tty_line = next(ln for ln in lines if ln.startswith("tty "))
    assert tty_line.startswith("tty /dev/pts/") and tty_line.endswith(" True")
    assert any(ln.endswith("answer wizard") for ln in lines), lines
