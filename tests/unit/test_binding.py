"""theiaos_pkg/binding.py, each case in a fresh interpreter (it is about sys.modules):
the binding loads without pystemd's object layer, leaves sys.modules as it found it
but for pystemd's own modules, falls back to the binding as it is, and works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]

# Prints what a case found, as JSON; run by the build machine's python3 (Debian's
# python3-pystemd) and, in tests/system/test_binding_versions.py, by other releases'.
PROBE = r'''
import json, sys
before = dict(sys.modules)
CASE
from theiaos_pkg import binding
dbuslib, dbusexc = binding.load(STAND_INS)
added = sorted(set(sys.modules) - set(before))
changed = sorted(n for n, m in before.items() if sys.modules.get(n) is not m)
import pprint
bus = dbuslib.DBusAddress(b"unix:path=/nonexistent", peer_to_peer=True)
try:
    bus.open()
    opened = "opened"
except dbusexc.DBusBaseError as exc:
    opened = type(exc).__name__
print(json.dumps({
    "added": added, "changed": changed, "opened": opened,
    "real_pprint": hasattr(pprint, "PrettyPrinter"),
    "full": "pystemd.base" in sys.modules or "lxml" in sys.modules,
}))
'''


def probe(case: str = "", stand_ins: str = "None", python: str = sys.executable,
          prefix: list[str] | None = None, top: str = str(TOP)) -> dict[str, object]:
    code = PROBE.replace("CASE", case).replace("STAND_INS", stand_ins)
    proc = subprocess.run([*(prefix or []), python, "-B", "-c", code], text=True,
                          capture_output=True, check=False, timeout=60,
                          env={"PYTHONPATH": top, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def test_the_binding_loads_alone_and_leaves_sys_modules_as_it_was() -> None:
    got = probe()
    assert got["changed"] == []  # no module replaced
    stray = [m for m in got["added"]  # type: ignore[union-attr]
             if not m.startswith(("pystemd", "theiaos_pkg"))]
    assert "pprint" not in stray and "pystemd.utils" not in got["added"]  # type: ignore[operator]
    assert not got["full"]  # neither pystemd's object layer nor lxml
    assert got["real_pprint"]  # whoever imports pprint later gets the real one
    assert got["opened"] != "opened"  # and it works: a D-Bus error, as pystemd raises it


def test_a_binding_that_wants_more_than_the_stand_ins_loads_as_it_is() -> None:
    """A stand-in without what the binding imports: the import fails, nothing of it
    stays, and the binding is loaded with the real modules."""
    got = probe(stand_ins='{"pystemd.utils": __import__("types").ModuleType("pystemd.utils")}')
    assert "pystemd.utils" in got["added"] and "pprint" in got["added"]  # type: ignore[operator]
    assert got["changed"] == [] and got["real_pprint"] and got["opened"] != "opened"


def test_a_pystemd_imported_in_full_is_used() -> None:
    got = probe(case="import pystemd.systemd1")
    assert got["full"] and got["changed"] == [] and got["opened"] != "opened"
