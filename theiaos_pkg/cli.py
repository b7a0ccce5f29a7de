"""theiaosctl: operate the TheiaOS gateway. One function per verb."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import __version__, account, bus, configure, health, settings
from .errors import TheiaosError
from .settings import UNIT, Settings

EXIT_RUNNING, EXIT_NOT_RUNNING, EXIT_UNKNOWN = 0, 3, 4


def _account(s: Settings) -> account.Account:
    acct = account.lookup("/etc", s.user)
    if acct is None:
        raise TheiaosError(f"account {s.user} does not exist: the gateway is not set up",
                           "sudo theiaosctl setup")
    return acct


def cmd_status(s: Settings, args: argparse.Namespace) -> int:
    acct = account.lookup("/etc", s.user)
    if acct is None:
        print(f"{UNIT}: not installed (no account {s.user}); run: sudo theiaosctl setup")
        return EXIT_UNKNOWN
    if not os.path.exists(bus.private_socket(acct.uid)):
        print(f"{UNIT}: inactive (the user manager of {s.user} is not running)")
        return EXIT_NOT_RUNNING
    with bus.UserManager(acct.uid) as mgr:
        st = mgr.state(UNIT)
    print(f"{UNIT}: {st.active} ({st.sub})" + ("" if st.load == "loaded" else f", {st.load}"))
    code = health.probe(s)
    print(f"health: {'ok' if code == 200 else 'no answer' if code is None else code} "
          f"({s.url}healthz)")
    print(f"url: {s.url}")
    return EXIT_RUNNING if st.running and code == 200 else EXIT_NOT_RUNNING


def cmd_start(s: Settings, args: argparse.Namespace) -> int:
    out = configure.Outcome()
    configure.activate(s, _account(s), out, print)
    if not out.healthy:
        return 1
    print(f"the gateway answers at {s.url}")
    return 0


def cmd_stop(s: Settings, args: argparse.Namespace) -> int:
    acct = _account(s)
    if not os.path.exists(bus.private_socket(acct.uid)):
        print(f"{UNIT}: already stopped (user manager not running)")
        return 0
    with bus.UserManager(acct.uid) as mgr:
        mgr.stop(UNIT)
        st = mgr.wait(UNIT, ("inactive",), configure.START_TIMEOUT)
    print(f"{UNIT}: {st.active}")
    return 0 if st.active in ("inactive", "failed") else 1


def cmd_setup(s: Settings, args: argparse.Namespace) -> int:
    out = configure.configure(s)
    return 0 if out.healthy or any(st.state == "missing" for st in out.steps) else 1


VERBS = {
    "status": (cmd_status, "show the service state and the gateway's health"),
    "start": (cmd_start, "start the gateway and wait until it answers"),
    "stop": (cmd_stop, "stop the gateway"),
    "setup": (cmd_setup, "run the package's setup again (account, subids, config, "
              "Quadlet, service)"),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="theiaosctl", description=__doc__)
    p.add_argument("--version", action="version", version=f"theiaosctl {__version__}")
    p.add_argument("--debug", action="store_true", help="show commands and tracebacks")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, (_func, text) in VERBS.items():
        sub.add_parser(name, help=text, description=text)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.debug:
        logging.basicConfig(level=logging.DEBUG, format="%(message)s")
    if os.geteuid() != 0:
        print(f"theiaosctl: {args.verb} needs root; run: sudo theiaosctl {args.verb}",
              file=sys.stderr)
        return 1
    func, _text = VERBS[args.verb]
    try:
        return func(settings.load(), args)
    except TheiaosError as exc:
        if args.debug:
            raise
        print(f"theiaosctl: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
