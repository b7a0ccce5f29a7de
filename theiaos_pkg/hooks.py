"""Entry points for the maintainer scripts; .deb and .rpm call the same ones.

    python3 -m theiaos_pkg.hooks configure [OLD-VERSION]
"""

from __future__ import annotations

import argparse
import sys

from . import configure, settings
from .errors import TheiaosError


def _report(line: str) -> None:
    print(f"theiaos-podman: {line}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="theiaos_pkg.hooks")
    parser.add_argument("action", choices=["configure"])
    parser.add_argument("old_version", nargs="?", default="")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    try:
        s = settings.load()
        configure.configure(s, report=_report)
    except TheiaosError as exc:
        if args.debug:
            raise
        print(f"theiaos-podman: error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
