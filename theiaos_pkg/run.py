"""The only door to other programs.

``run()`` pins the locale, echoes ``+ argv`` with --debug, turns a missing program
into one clear error and reports a failure once, with the program's own words.
Running a program as the service account goes through here too (``as_user``).

Every child is isolated from root's session: standard input is /dev/null (or a pipe
root feeds), output goes to pipes root reads, and it runs in a new session without a
controlling terminal. A process of the account could otherwise open
``/proc/PID/fd/0`` of its own child to read root's keystrokes or inject input.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

if TYPE_CHECKING:
    import subprocess

from .errors import CommandError

#: Set by `theiaosctl --debug`: every command is echoed to stderr before it runs.
#: (No logging module: it would cost `theiaosctl status` its start-up time.)
DEBUG = False


def _trace(argv: Sequence[str], as_user: Identity | None) -> None:
    if DEBUG:
        import shlex

        who = f"[{as_user.name}] " if as_user else ""
        print(f"+ {who}{shlex.join(argv)}", file=sys.stderr, flush=True)


class Identity(NamedTuple):
    """Who a program runs as: the service account, with its home and runtime dir."""

    name: str
    uid: int
    gid: int
    home: str

    @property
    def runtime_dir(self) -> str:
        return f"/run/user/{self.uid}"

    def environ(self) -> dict[str, str]:
        env = {
            "HOME": self.home,
            "USER": self.name,
            "LOGNAME": self.name,
            "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
            "LANG": "C.UTF-8",
        }
        if os.path.isdir(self.runtime_dir):
            env["XDG_RUNTIME_DIR"] = self.runtime_dir
            bus = f"{self.runtime_dir}/bus"
            if os.path.exists(bus):
                env["DBUS_SESSION_BUS_ADDRESS"] = f"unix:path={bus}"
        return env


def _environ(as_user: Identity | None, extra: Mapping[str, str] | None) -> dict[str, str]:
    if as_user is not None:
        env = as_user.environ()
    else:
        env = dict(os.environ)
        env["LANG"] = env["LC_ALL"] = "C.UTF-8"
    if extra:
        env.update(extra)
    return env


def _ids(as_user: Identity | None) -> tuple[int | None, int | None, list[int] | None]:
    """Credentials to switch to; none when we already are that user (its read-only verbs)."""
    if as_user is None or os.geteuid() == as_user.uid:
        return None, None, None
    return as_user.uid, as_user.gid, []


def _popen_args(argv: Sequence[str], as_user: Identity | None,
                env: Mapping[str, str] | None) -> dict[str, Any]:
    """What every child gets: a new session (no controlling terminal: nothing it runs can
    reach root's terminal through /dev/tty or TIOCSTI), the account's credentials and
    environment, and its home as working directory."""
    user, group, groups = _ids(as_user)
    return dict(env=_environ(as_user, env), cwd=as_user.home if as_user else None,
                user=user, group=group, extra_groups=groups, start_new_session=True,
                close_fds=True)


def _failed(argv: Sequence[str], code: int, stderr: str, stdout: str = "") -> CommandError:
    import shlex

    detail = (stderr or stdout or "").strip().splitlines()
    why = detail[-1] if detail else f"exit status {code}"
    return CommandError(f"{shlex.join(argv)} failed: {why}")


def run(
    argv: Sequence[str],
    *,
    as_user: Identity | None = None,
    check: bool = True,
    input: str | None = None,
    feed: BinaryIO | None = None,
    relay: BinaryIO | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = 300,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with its output captured; with ``check`` a non-zero exit raises
    CommandError with its stderr.

    Its standard input is /dev/null, ``input`` (text), or what root reads from ``feed``
    and copies through a pipe: a child never holds one of root's descriptors. With
    ``relay``, its stderr (Podman's progress) is also copied there as it comes.
    """
    import shlex
    import subprocess

    _trace(argv, as_user)
    try:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL if input is None and feed is None
            else subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            **_popen_args(argv, as_user, env))
    except FileNotFoundError:
        raise CommandError(f"{argv[0]}: command not found") from None
    with proc:
        try:
            if feed is None and relay is None:
                out, err = proc.communicate(input.encode() if input is not None else None,
                                            timeout=timeout)
            else:
                import io

                source = feed if feed is not None or input is None else io.BytesIO(input.encode())
                out, err = _feed(proc, source, timeout, relay)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise CommandError(f"{shlex.join(argv)}: no result after {timeout:.0f} s") from None
        except BaseException:
            _kill(proc)
            raise
    result: subprocess.CompletedProcess[str] = subprocess.CompletedProcess(list(argv), proc.returncode,
                                         out.decode("utf-8", "replace"),
                                         err.decode("utf-8", "replace"))
    if check and result.returncode != 0:
        raise _failed(argv, result.returncode, result.stderr, result.stdout)
    return result


def _feed(proc: subprocess.Popen[bytes], feed: BinaryIO | None, timeout: float | None,
          relay: BinaryIO | None = None) -> tuple[bytes, bytes]:
    """Copy ``feed`` into the child's stdin (root reads; the child only gets a pipe)
    while threads collect its output (and relay its stderr); (stdout, stderr)."""
    import threading

    assert proc.stdout is not None and proc.stderr is not None
    got: dict[int, bytes] = {}

    def drain(key: int, pipe: BinaryIO) -> None:
        chunks = []
        while chunk := os.read(pipe.fileno(), 1 << 16):
            chunks.append(chunk)
            if key == 1 and relay is not None:
                with contextlib.suppress(OSError):
                    relay.write(chunk)
                    relay.flush()
        got[key] = b"".join(chunks)

    readers = [threading.Thread(target=drain, args=(i, pipe), daemon=True)
               for i, pipe in enumerate((proc.stdout, proc.stderr))]
    for t in readers:
        t.start()
    if feed is not None:
        assert proc.stdin is not None
        try:
            while chunk := feed.read(1 << 16):
                proc.stdin.write(chunk)
        except BrokenPipeError:
            pass  # the child stopped reading: its exit status and stderr say why
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
    proc.wait(timeout)
    for t in readers:
        t.join()
    return got.get(0, b""), got.get(1, b"")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's whole session (it was started in a new one), then reap it."""
    import signal

    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def stream(
    argv: Sequence[str],
    *,
    as_user: Identity | None = None,
    env: Mapping[str, str] | None = None,
    out: BinaryIO | None = None,
) -> int:
    """Run ``argv`` and relay its output (stdout and stderr merged) to ``out`` as it
    comes, for progress and logs; its exit status. The child writes to a pipe, never to
    root's terminal."""
    import subprocess

    _trace(argv, as_user)
    sink = out if out is not None else sys.stdout.buffer
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, **_popen_args(argv, as_user, env))
    except FileNotFoundError:
        raise CommandError(f"{argv[0]}: command not found") from None
    with proc:
        assert proc.stdout is not None
        try:
            while chunk := os.read(proc.stdout.fileno(), 1 << 16):
                sink.write(chunk)
                sink.flush()
        except BrokenPipeError:
            _kill(proc)  # our reader went away (| head): stop the child too
        except BaseException:
            _kill(proc)
            raise
        return proc.wait()


def interactive(argv: Sequence[str], *, as_user: Identity) -> int:
    """Run an interactive program (the onboarding wizard) on a pseudo-terminal of its own;
    root relays between its own terminal and the pty. The child never sees root's
    terminal: no keystrokes to steal, nothing to inject. Its exit status."""
    from . import pty_relay

    _trace(argv, as_user)
    return pty_relay.run(list(argv), **_popen_args(argv, as_user, None))
