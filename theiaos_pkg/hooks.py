"""Entry points for the maintainer scripts; .deb and .rpm call the same ones.

    python3 -m theiaos_pkg.hooks configure   # postinst configure, %post (install, upgrade)
    python3 -m theiaos_pkg.hooks remove      # prerm remove, %preun on erase

Purge (postrm purge, %postun on erase) runs after the Python code is gone: it is plain
sh in the packaging and removes only the package's state directory.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import configure, settings
from .errors import TheiaosError
from .settings import UNIT

POLICY_RC_D = "/usr/sbin/policy-rc.d"


def _report(line: str) -> None:
    print(f"theiaos-podman: {line}", flush=True)


def starting_allowed() -> bool:
    """What policy-rc.d says about starting our service (as deb-systemd-invoke asks it):
    101 and 106 forbid it; no policy-rc.d allows everything."""
    if not os.access(POLICY_RC_D, os.X_OK):
        return True
    from .run import run

    return run([POLICY_RC_D, UNIT, "start"], check=False).returncode not in (101, 106)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="theiaos_pkg.hooks")
    parser.add_argument("action", choices=["configure", "remove"])
    parser.add_argument("old_version", nargs="?", default="")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    try:
        from . import quadlet

        s = quadlet.effective(settings.load())
        if args.action == "configure":
            configure.configure(s, report=_report, may_start=starting_allowed())
        else:
            configure.remove(s, "/etc", _report)
    except TheiaosError as exc:
        if args.debug:
            raise
        print(f"theiaos-podman: error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
