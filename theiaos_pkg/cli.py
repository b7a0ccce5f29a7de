"""theiaosctl: operate the TheiaOS gateway (a rootless Podman container under systemd).

One function per verb; every verb has --help. Root runs everything; the service
account itself may run the read-only verbs (status, url, doctor, image list).
"""

from __future__ import annotations

import os
import pwd
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from . import __version__, settings
from .errors import TheiaosError
from .settings import Settings

if TYPE_CHECKING:
    import argparse

    from .account import Account

# Verbs import what they use when they run: `theiaosctl status` must start fast
# (bench/), so it loads neither jinja2 nor the setup steps nor doctor.

READ_ONLY = {"status", "url", "doctor", "image list", "dashboard"}
#: Verbs the service account may run on itself (the product doc's launch script).
SELF = {"launch"}


def _account_or_none(s: Settings) -> Account | None:
    from . import account

    return account.lookup("/etc", s.user)


def _account(s: Settings) -> Account:
    acct = _account_or_none(s)
    if acct is None:
        raise TheiaosError(f"account {s.user} does not exist: the gateway is not set up",
                           "sudo theiaosctl setup")
    return acct


#: Verbs that write the unit from the settings; the others use the unit on disk.
WRITERS = {"setup", "restore"}


def _effective(s: Settings, on_disk: bool = False) -> Settings:
    """The settings with the published port of the Quadlet on disk (quadlet.effective):
    an admin-edited one always; ours too for the verbs that do not rewrite it."""
    from . import quadlet

    acct = _account_or_none(s)
    return quadlet.effective(s, acct.uid if acct else None, on_disk)


def _report(line: str) -> None:
    print(line, flush=True)


def cmd_status(s: Settings, args: argparse.Namespace) -> int:
    from . import status

    st = status.collect(s)
    print(status.format_json(st) if args.json else status.format_text(st))
    return st.exit_code


def cmd_start(s: Settings, args: argparse.Namespace) -> int:
    from . import runtime

    runtime.of(s, _account(s)).start(_report)
    return 0


def cmd_stop(s: Settings, args: argparse.Namespace) -> int:
    from . import runtime

    stopped, now = runtime.of(s, _account(s)).stop(_report)
    print(now)
    return 0 if stopped else 1


def cmd_restart(s: Settings, args: argparse.Namespace) -> int:
    from . import runtime

    runtime.of(s, _account(s)).restart(_report)
    return 0


def _positive(text: str) -> int:
    import argparse

    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of lines")
    return int(text)


def cmd_logs(s: Settings, args: argparse.Namespace) -> int:
    from . import runtime

    lines = None if args.follow and args.lines is None else (args.lines or 100)
    return runtime.of(s, _account(s)).logs(lines, args.follow, args.since)


def _setup_choices(s: Settings, args: argparse.Namespace) -> dict[str, str] | None:
    """The choices setup's flags make (None: no flag given). Nothing is saved here."""
    mode, kind, user, home = (settings.env_name(a)
                              for a in ("quadlet", "account_kind", "user", "home"))
    if args.doc_defaults and not args.mode and mode not in os.environ:
        args.mode = "container"  # setup-podman.sh without flags: the doc's manual mode
    if not args.mode and not args.user:
        return None
    choices = settings.read_choices()
    if args.mode and mode not in os.environ:
        choices[mode] = "1" if args.mode == "quadlet" else "0"
    if args.user:
        for key in (kind, user, home):
            choices.pop(key, None)
        if args.user != settings.load(environ={}, admin={}, chosen={}).user:
            from . import account

            settings.check_user(args.user)
            acct = account.lookup("/etc", args.user)
            if acct is None:
                raise TheiaosError(f"there is no account {args.user}",
                                   f"create it first: useradd --create-home {args.user}")
            choices.update({kind: "existing", user: acct.name, home: acct.home})
    return choices


def cmd_setup(s: Settings, args: argparse.Namespace) -> int:
    from . import configure, podman

    choices = _setup_choices(s, args)
    new = s
    if choices is not None:
        new = _effective(settings.load(chosen=choices))
    old_acct = _account_or_none(s)
    # One gateway: the old account's stops for the new one, so its ports count as ours.
    ours = frozenset({old_acct.uid}) if old_acct is not None and new.user != s.user \
        else frozenset()
    plan = configure.preflight(new, "/etc", podman.detect(), ours)  # refuses: nothing written
    if choices is not None:
        from . import state

        state.write(state.CHOICES, settings.format_choices(choices))
    if new.user != s.user and old_acct is not None:
        configure.remove(s, "/etc", _report)
    configure.configure(new, report=_report, plan=plan)  # failures raise; no image is none
    return 0


def cmd_launch(s: Settings, args: argparse.Namespace) -> int:
    """The doc's launch script: manual mode's container, whatever the setting says."""
    from . import runtime

    rt = runtime.Manual(s, _account(s))
    if args.what == "setup":
        return rt.onboard()
    rt.start(_report)
    return 0


def cmd_token(s: Settings, args: argparse.Namespace) -> int:
    from . import gateway, tokens

    acct = _account(s)
    if args.action == "show":
        value = gateway.read_token(s, acct.uid)
        if not value:
            raise TheiaosError(f"no THEIAOS_GATEWAY_TOKEN in {s.env_file}", "sudo theiaosctl setup")
        print(value)
        return 0
    new = tokens.rotate(s, acct, _report)
    if args.show:
        print(new)
    return 0


def cmd_image(s: Settings, args: argparse.Namespace) -> int:
    from . import images

    acct = _account(s)
    if args.action == "list":
        return images.list_(s, acct)
    if args.action == "rollback":
        return images.rollback(s, acct, _report)
    if args.action == "pull" and not args.source:
        raise TheiaosError("image pull needs a reference", "theiaosctl image pull REF")
    return images.change(s, acct, args.action, args.source, _report,
                         rollback=not args.no_rollback)


def cmd_backup(s: Settings, args: argparse.Namespace) -> int:
    from . import backup

    backup.backup(s, _account(s), args.file, args.with_image,
                  lambda line: print(line, file=sys.stderr if args.file == "-" else sys.stdout,
                                     flush=True))
    return 0


def cmd_restore(s: Settings, args: argparse.Namespace) -> int:
    from . import backup

    backup.restore(s, args.file, _report)
    return 0


def cmd_doctor(s: Settings, args: argparse.Namespace) -> int:
    from . import doctor

    checks = doctor.run_checks(s)
    for check in checks:
        print(check.line())
    failed = [c for c in checks if not c.ok]
    print(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def cmd_url(s: Settings, args: argparse.Namespace) -> int:
    print(s.url)
    return 0


def cmd_devices(s: Settings, args: argparse.Namespace) -> int:
    from . import dashboard

    print(dashboard.devices(s, _account(s), args.action, args.request))
    return 0


def cmd_dashboard(s: Settings, args: argparse.Namespace) -> int:
    from . import dashboard

    link = dashboard.sign_in_link(s, _account(s))
    print("Open this link in a browser on this host within ten minutes: it signs that "
          "browser in to the dashboard, once. It is a credential: do not share it.",
          file=sys.stderr, flush=True)
    print(link)
    return 0


def _logs_args(v: argparse.ArgumentParser) -> None:
    v.add_argument("-n", "--lines", type=_positive, help="show this many lines (default 100)")
    v.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    v.add_argument("--since", help="start at this time (journalctl --since syntax)")


def _setup_args(v: argparse.ArgumentParser) -> None:
    import argparse

    g = v.add_mutually_exclusive_group()
    g.add_argument("--quadlet", dest="mode", action="store_const", const="quadlet",
                   help="run the gateway as a systemd user service (the default)")
    g.add_argument("--container", dest="mode", action="store_const", const="container",
                   help="manual mode: no Quadlet (removes ours); start with theiaosctl launch")
    v.add_argument("--doc-defaults", action="store_true", help=argparse.SUPPRESS)
    v.add_argument("--user", metavar="NAME", help="run the gateway as this existing account "
                   "(yours) instead of the theiaos system account; --user theiaos goes back")


def _launch_args(v: argparse.ArgumentParser) -> None:
    v.add_argument("what", nargs="?", choices=["setup"], help="run the onboarding wizard")


def _token_args(v: argparse.ArgumentParser) -> None:
    v.add_argument("action", choices=["show", "rotate"])
    v.add_argument("--show", action="store_true", help="with rotate: print the new token")


def _image_args(v: argparse.ArgumentParser) -> None:
    v.add_argument("action", choices=["build", "pull", "load", "list", "rollback"])
    v.add_argument("source", nargs="?", help="build: a TheiaOS checkout (default .); "
                   "pull: an image reference; load: an archive file or - for stdin")
    v.add_argument("--no-rollback", action="store_true",
                   help="keep a new image even when the gateway does not answer on it")


def _backup_args(v: argparse.ArgumentParser) -> None:
    v.add_argument("file", nargs="?", default="-", metavar="FILE",
                   help="the archive to write (default -: standard output)")
    v.add_argument("--with-image", action="store_true", help="add the gateway's image")


def _restore_args(v: argparse.ArgumentParser) -> None:
    v.add_argument("file", metavar="FILE", help="the archive, or - for standard input")


def _devices_args(v: argparse.ArgumentParser) -> None:
    v.add_argument("action", nargs="?", choices=["list", "approve"], default="list")
    v.add_argument("request", nargs="?", metavar="REQUEST_ID",
                   help="approve: the pairing request id the dashboard shows")


class Verb(NamedTuple):
    name: str
    func: Callable[[Settings, Any], int]
    text: str
    args: Callable[[argparse.ArgumentParser], None] | None = None
    #: on/off options ("--json", its help): argparse's store_true, and all a command
    #: line of a verb without ``args`` may hold for the fast path (quick_parse)
    flags: tuple[tuple[str, str], ...] = ()


#: Every verb once: its function, its help and its arguments.
VERBS: tuple[Verb, ...] = (
    Verb("status", cmd_status, "unit state, gateway health, image, ports, URL, linger "
         "(exit 0 running, 3 not running, 4 not installed)",
         flags=(("--json", "machine-readable output"),)),
    Verb("start", cmd_start, "start the gateway; succeed only when /healthz answers"),
    Verb("stop", cmd_stop, "stop the gateway"),
    Verb("restart", cmd_restart, "restart the gateway; succeed only when /healthz answers"),
    Verb("logs", cmd_logs, "the gateway's journal lines (its unit, in the system journal)",
         _logs_args),
    Verb("setup", cmd_setup, "run the package's setup again: account, subids, config, "
         "Quadlet, service (THEIAOS_PODMAN_QUADLET=1|0 overrides the flags)", _setup_args),
    Verb("launch", cmd_launch, "manual mode: run the gateway container directly "
         "(podman run --replace), or the onboarding wizard with 'launch setup'", _launch_args),
    Verb("token", cmd_token, "show or rotate the gateway token", _token_args),
    Verb("image", cmd_image, "build, pull, load or list gateway images in the service "
         "account's store; a new image restarts a running gateway, which must answer or "
         "the image it ran before is put back; rollback goes back by hand", _image_args),
    Verb("backup", cmd_backup, "write the gateway's state (config with the token, "
         "workspace, settings) to one archive, 0600, with a manifest of checksums", _backup_args),
    Verb("restore", cmd_restore, "check an archive of `backup`, put its state and "
         "settings back, run setup and wait until the gateway answers", _restore_args),
    Verb("doctor", cmd_doctor, "check the host and the install, with the fix for each problem"),
    Verb("url", cmd_url, "print the dashboard URL"),
    Verb("dashboard", cmd_dashboard, "print a single-use sign-in link to the dashboard for a "
         "browser on this host (the gateway's own handoff; no token in it)"),
    Verb("devices", cmd_devices, "list the browsers waiting to be paired with the gateway, "
         "or approve one by the request id the dashboard shows", _devices_args),
)


def parser(only: str | None = None) -> argparse.ArgumentParser:
    """theiaosctl's parser; with ``only`` (a verb's name), one that knows that verb alone:
    the same code builds it, so it parses that verb's command lines exactly as the full
    one does, at a fraction of the cost (`theiaosctl status` is run the most)."""
    import argparse

    p = argparse.ArgumentParser(prog="theiaosctl", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"theiaosctl {__version__}")
    p.add_argument("--debug", action="store_true", help="show commands run and tracebacks")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in VERBS:
        if only is None or verb.name == only:
            v = sub.add_parser(verb.name, help=verb.text, description=verb.text)
            v.set_defaults(func=verb.func)
            for flag, text in verb.flags:
                v.add_argument(flag, action="store_true", help=text)
            if verb.args:
                verb.args(v)
    return p


#: theiaosctl's own flags besides --version and --help (parser adds them).
_TOP_FLAGS = ("--debug",)


def quick_parse(argv: list[str]) -> Any:
    """What ``parser().parse_args(argv)`` returns, without building argparse (about 10 ms
    of `theiaosctl status`), for the command lines that need nothing more: [--debug]
    VERB [its flags], for a verb whose options are all flags. None for anything else
    (argparse then parses it, with its help and errors). Derived from VERBS, as the
    parser is: tests/unit/test_cli.py compares the two on every such command line.
    A SimpleNamespace with argparse's attributes (argparse itself is not imported)."""
    from types import SimpleNamespace

    top = 0
    while top < len(argv) and argv[top] in _TOP_FLAGS:
        top += 1
    verb = next((v for v in VERBS if top < len(argv) and v.name == argv[top]), None)
    if verb is None or verb.args is not None:
        return None
    flags = {f for f, _ in verb.flags}
    given = argv[top + 1:]
    if not set(given) <= flags:
        return None
    ns = SimpleNamespace(debug="--debug" in argv[:top], verb=verb.name)
    for flag in sorted(flags):
        setattr(ns, flag[2:].replace("-", "_"), flag in given)
    ns.func = verb.func
    return ns


def _allowed(verb: str, s: Settings) -> bool:
    if os.geteuid() == 0:
        return True
    try:
        me = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return False
    return me == s.user and (verb in READ_ONLY or verb in SELF)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The first word names the verb (flags such as --debug come first otherwise).
    first = argv[0] if argv and argv[0] in {v.name for v in VERBS} else None
    args = quick_parse(argv) or parser(first).parse_args(argv)
    if args.debug:
        from . import run

        run.DEBUG = True
    verb = args.verb + (f" {args.action}" if args.verb in ("image", "token") else "")
    try:
        s = settings.load()
        if not _allowed(verb, s):
            print(f"theiaosctl: {verb} needs root; run: sudo theiaosctl {verb}", file=sys.stderr)
            return 1
        s = _effective(s, on_disk=verb not in WRITERS)
        if verb in READ_ONLY or verb == "token show" or os.geteuid() != 0:
            code: int = args.func(s, args)  # the account's own verbs cannot take root's lock
            return code
        from . import files

        with files.operation_lock(f"theiaosctl {verb}",
                                  say=lambda line: print(line, file=sys.stderr, flush=True)):
            code = args.func(s, args)
        return code
    except TheiaosError as exc:
        if args.debug:
            raise
        print(f"theiaosctl: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
