"""Benchmark (run by hand, not a test): `theiaosctl status` against
`systemctl --machine theiaos@ --user status theiaos.service`, side by side in one lab.

    make deb && /usr/bin/python3 -m bench.status_bench dist/theiaos-podman_*_all.deb [ROUNDS]

Both commands run alternately inside the booted lab (timed there, so nsenter is not
counted), ROUNDS times each; prints both medians and their ratio. Target: ratio <= 1.0
while status reports more (health, image, ports, linger, URL).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from tests.lab import Lab, build_test_image

TIMER = r"""
import json, statistics, subprocess, sys, time
rounds = int(sys.argv[1])
cmds = {
    "theiaosctl status": ["theiaosctl", "status"],
    "systemctl status": ["systemctl", "--machine", "theiaos@", "--user", "--no-pager",
                         "status", "theiaos.service"],
}
times = {k: [] for k in cmds}
for _ in range(3):  # warm caches for both
    for argv in cmds.values():
        subprocess.run(argv, capture_output=True)
for _ in range(rounds):
    for name, argv in cmds.items():
        t = time.perf_counter()
        p = subprocess.run(argv, capture_output=True)
        times[name].append(time.perf_counter() - t)
        if p.returncode != 0:
            sys.exit(f"{name} failed ({p.returncode}): {p.stdout.decode()}{p.stderr.decode()}")
print(json.dumps({k: statistics.median(v) for k, v in times.items()}))
"""


def main(argv: list[str]) -> int:
    if not argv or not Path(argv[0]).is_file():
        print(__doc__, file=sys.stderr)
        return 2
    rounds = int(argv[1]) if len(argv) > 1 else 21
    with tempfile.TemporaryDirectory(prefix="theiaos-bench-", dir="/var/tmp") as work, \
            Lab(Path(work)) as lab:
        lab.put(Path(argv[0]), "/var/tmp/theiaos-podman.deb")
        lab.run("apt-get", "install", "-y", "/var/tmp/theiaos-podman.deb", timeout=600,
                env={"DEBIAN_FRONTEND": "noninteractive"})
        build_test_image(lab, "theiaos")
        lab.run("theiaosctl", "start", timeout=400)
        out = lab.run("python3", "-c", TIMER, str(rounds), timeout=900).stdout
    medians = json.loads(out)
    ours, theirs = medians["theiaosctl status"], medians["systemctl status"]
    print(f"theiaosctl status       median {ours * 1000:7.1f} ms")
    print(f"systemctl --user status median {theirs * 1000:7.1f} ms")
    print(f"ratio (theiaosctl / systemctl): {ours / theirs:.2f}  (target <= 1.00; {rounds} rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
