"""Entry points for the maintainer scripts; .deb and .rpm call the same ones.

    python3 -I -m theiaos_pkg.hooks configure   # postinst configure, %post (install, upgrade)
    python3 -I -m theiaos_pkg.hooks remove      # prerm remove, %preun on erase

``-I``: root's import path is the system's alone, whatever the caller's directory and
PYTHON* variables. Purge (postrm purge, %postun on erase) runs after the Python code
is gone: it is plain sh in the packaging.

apt and dnf are never wedged:
- configure fails (exit 1) only for what the admin must fix first, found before
  anything is written (a bad setting, an unfit account, a taken port), like a daemon's
  config check. A gateway that does not answer within HOOK_UP_TIMEOUT (or any other
  trouble starting it) is reported with what to run, and the install completes.
- remove always exits 0: what it could not do is reported, and the package goes.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import bus, configure, files, podman, quadlet, runtime, service, settings
from .errors import TheiaosError
from .settings import UNIT

POLICY_RC_D = "/usr/sbin/policy-rc.d"


def _report(line: str) -> None:
    print(f"theiaos-podman: {line}", flush=True)


def _warn(line: str) -> None:
    print(f"theiaos-podman: warning: {line}", file=sys.stderr, flush=True)


def starting_allowed() -> bool:
    """What policy-rc.d says about starting our service (as deb-systemd-invoke asks it):
    101 and 106 forbid it; no policy-rc.d allows everything."""
    if not os.access(POLICY_RC_D, os.X_OK):
        return True
    from .run import run

    return run([POLICY_RC_D, UNIT, "start"], check=False).returncode not in (101, 106)


def _effective(s: settings.Settings) -> settings.Settings:
    from . import account

    acct = account.lookup("/etc", s.user)
    return quadlet.effective(s, acct.uid if acct else None)


def do_configure() -> int:
    s = _effective(settings.load())
    may_start = starting_allowed()
    with files.operation_lock("postinst configure", say=_report):
        plan = configure.preflight(s, "/etc", podman.detect(),
                                   will_start=may_start and bus.systemd_running())
        out = runtime.Outcome()
        acct = configure.apply(plan, "/etc", out, _report)
        try:
            configure.activate(s, acct, out, _report, may_start,
                               timeout=service.HOOK_UP_TIMEOUT, features=plan.features)
        except TheiaosError as exc:
            _warn(f"the gateway is installed but not up: {exc.message}")
            _warn(f"then run: {exc.fix or 'sudo theiaosctl doctor'}; start it with: "
                  "sudo theiaosctl start")
            return 0
    if out.healthy:
        _report(f"Setup complete: the gateway answers at {s.url} "
                f"(its token is THEIAOS_GATEWAY_TOKEN in {s.env_file})")
    return 0


def do_remove() -> int:
    try:
        s = _effective(settings.load())
    except TheiaosError as exc:
        # A broken /etc/theiaos/podman.env must not keep the package from going: fall
        # back to what setup chose and the defaults, and say so.
        _warn(f"{exc.message}; removing with the default settings")
        s = settings.load(admin={})
    try:
        with files.operation_lock("prerm remove", say=_report):
            configure.remove(s, "/etc", _report)
    except TheiaosError as exc:
        _warn(f"{exc.message}; the package is removed anyway: stop the gateway yourself: "
              f"sudo systemctl --machine {s.user}@ --user stop {UNIT}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="theiaos_pkg.hooks")
    parser.add_argument("action", choices=["configure", "remove"])
    parser.add_argument("old_version", nargs="?", default="")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    try:
        return do_configure() if args.action == "configure" else do_remove()
    except TheiaosError as exc:
        if args.debug:
            raise
        print(f"theiaos-podman: error: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
