"""make demo: the main job, end to end, in the lab.

Boots the Debian 13 lab, installs the built .deb with apt, puts the test gateway
image into theiaos's store (the stand-in, or with `--gateway real` the public
gateway built from npm, tests/gateway_image.py), starts the gateway with theiaosctl and prints its status
and URL. With a terminal it keeps the lab up until Enter; it always stops the lab
(by PID) before it exits.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from .gateway_image import load_real_image
from .lab import IMAGE_REF, Lab, LabError, build_test_image


def _show(title: str, text: str) -> None:
    print(f"\n== {title}")
    print(text.rstrip())


def main(argv: list[str]) -> int:
    real = argv[1:] == ["--gateway", "real"]
    if not argv or not Path(argv[0]).is_file() or not (len(argv) == 1 or real):
        print("usage: python3 -m tests.demo DEB [--gateway real]", file=sys.stderr)
        return 2
    deb = Path(argv[0])
    with tempfile.TemporaryDirectory(prefix="theiaos-demo-", dir="/var/tmp") as work, \
            Lab(Path(work)) as lab:
        print(f"lab {lab.machine} booted (nspawn PID {lab.nspawn_pid})")
        lab.put(deb, "/var/tmp/theiaos-podman.deb")
        proc = lab.run("apt-get", "install", "-y", "/var/tmp/theiaos-podman.deb", check=False,
                       timeout=600, env={"DEBIAN_FRONTEND": "noninteractive"})
        _show("apt-get install ./theiaos-podman.deb", proc.stdout + proc.stderr)
        if proc.returncode != 0:
            return 1
        if real:
            print("\n== loading the public gateway (npm openclaw) into theiaos's store")
            load_real_image(lab, "theiaos", IMAGE_REF)
        else:
            print("\n== loading the stand-in gateway image into theiaos's store")
            build_test_image(lab, "theiaos")
        for verb in ("start", "status"):
            proc = lab.run("theiaosctl", verb, check=False, timeout=400)
            _show(f"theiaosctl {verb}", proc.stdout + proc.stderr)
            if proc.returncode != 0:
                return 1
        print("\nThe gateway answers at http://127.0.0.1:18789/ (the lab shares this host's "
              "network); token: /home/theiaos/.theiaos/.env inside the lab.")
        if sys.stdin.isatty():
            print(f"Enter the lab: nsenter -t {lab.init_pid} -a bash")
            input("Press Enter to stop the lab... ")
    print("lab stopped")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except LabError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        sys.exit(1)
