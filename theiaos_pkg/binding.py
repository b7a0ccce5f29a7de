"""pystemd's low-level binding (pystemd.dbuslib and pystemd.dbusexc) at the cost of the
binding itself, which is most of what `theiaosctl status` spends beyond Python's own
start (README, Benchmark). bus.py is its only user.

- Without pystemd's package __init__, which loads its high-level object layer and with
  it lxml (for introspection), which nothing here needs: bus.py only makes calls whose
  signatures it knows. Python's import machinery creates the package module from its
  spec without executing it; the submodules then import as usual.
- With two of the binding's own imports stood in for while it loads: ``pprint`` (which
  loads dataclasses and inspect, about 20 ms; the binding formats one error message with
  it) and ``pystemd.utils`` (pathlib, shlex, typing, about 10 ms; the binding takes one
  function from it). They leave sys.modules as soon as the binding is loaded, so every
  other importer gets the real modules. A pystemd whose binding wants more than these
  names fails to import with them: it is then loaded as it is, only slower.

When something already imported pystemd in full, that is used. tests/unit/test_binding.py
checks all of it in fresh interpreters; tests/system/test_binding_versions.py with
Debian 12's python3-pystemd (0.11) and Debian 13's (0.13).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from typing import Any

from .errors import BusError


def load(stand_ins: dict[str, types.ModuleType] | None = None) -> tuple[Any, Any]:
    """(pystemd.dbuslib, pystemd.dbusexc). ``stand_ins``: the modules put in place while
    the binding loads (default: stand_ins_for_missing())."""
    if "pystemd" not in sys.modules:
        spec = importlib.util.find_spec("pystemd")
        if spec is None:
            raise BusError("python3-pystemd is not installed", "apt install python3-pystemd")
        sys.modules["pystemd"] = importlib.util.module_from_spec(spec)
    if "pystemd.dbuslib" not in sys.modules:
        _load_binding(stand_ins_for_missing() if stand_ins is None else stand_ins)
    import pystemd.dbusexc
    import pystemd.dbuslib

    return pystemd.dbuslib, pystemd.dbusexc


def _pformat(obj: object, *args: Any, **kwargs: Any) -> str:
    import pprint  # the real one: the stand-in left sys.modules once the binding loaded

    return pprint.pformat(obj, *args, **kwargs)


def _x2char_star(what: Any, convert_all: bool = False) -> Any:
    """pystemd.utils.x2char_star: what the binding passes to libsystemd as char*."""
    if isinstance(what, bytes):
        return what
    if isinstance(what, str):
        return what.encode()
    if isinstance(what, os.PathLike):
        return os.fsencode(what)
    if convert_all:
        return str(what).lower().encode() if isinstance(what, bool) else repr(what).encode()
    return what


def stand_ins_for_missing() -> dict[str, types.ModuleType]:
    """The stand-ins for those of ``pprint`` and ``pystemd.utils`` not yet imported."""
    out = {}
    if "pprint" not in sys.modules:
        out["pprint"] = types.ModuleType("pprint")
        out["pprint"].pformat = _pformat  # type: ignore[attr-defined]
    if "pystemd.utils" not in sys.modules:
        out["pystemd.utils"] = types.ModuleType("pystemd.utils")
        out["pystemd.utils"].x2char_star = _x2char_star  # type: ignore[attr-defined]
    return out


def _load_binding(stand_ins: dict[str, types.ModuleType]) -> None:
    """Import pystemd.dbuslib with ``stand_ins`` in sys.modules; they leave it afterwards
    (also when the import fails: then nothing of the attempt stays, and load imports the
    binding as it is)."""
    sys.modules.update(stand_ins)
    try:
        import pystemd.dbuslib  # noqa: F401
    except ImportError:
        sys.modules.pop("pystemd.dbuslib", None)
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
