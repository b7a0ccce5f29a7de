"""What `theiaosctl status` reports: collected through the doors, formatted purely."""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

from . import account, container, files, health, podman, podstore, runtime, state
from .errors import CommandError
from .settings import UNIT, Settings

EXIT_RUNNING, EXIT_NOT_RUNNING, EXIT_UNKNOWN = 0, 3, 4


class Status(NamedTuple):
    installed: bool
    user: str
    uid: int | None
    unit_load: str = "unknown"
    unit_active: str = "unknown"
    unit_sub: str = "unknown"
    since_usec: int = 0
    manager_running: bool = False
    healthy: bool = False
    container_health: str = "none"
    image: str = ""
    image_id: str | None = None
    ports: tuple[str, ...] = ()
    url: str = ""
    linger: bool = False
    config_dir: str = ""
    token_file: str = ""
    mode: str = "service"  # service (Quadlet) | manual (theiaosctl launch)
    unit_file: str = ""  # the unit that runs the gateway: "Quadlet PATH" or "plain user unit PATH"
    pending: str = ""  # a change the running gateway has not picked up (state.PENDING)
    failing_since: str | None = None  # the first failed health check of the current streak
    journal: str = ""  # the unit's last lines, when it failed
    draining: str = ""  # what a stopping gateway finishes first (its own drain line)
    exit_status: int = 0  # the main process's, when the unit failed
    config_file: str = ""
    problem: str = ""  # what could not be asked (status shows what it can)

    @property
    def verdict(self) -> str:
        """running | not answering | starting | stopping | failed | stopped | not installed: the
        unit's state and the gateway's answer together (ActiveState alone can read
        "active" while a refused config exits and systemd restarts it)."""
        if not self.installed:
            return "not installed"
        if self.unit_active == "deactivating":
            return "stopping" + (f": finishing {self.draining}" if self.draining else "")
        if self.unit_active == "active":
            return "running" if self.healthy else "not answering"
        if self.unit_active in ("activating", "reloading") or self.unit_sub == "auto-restart":
            return "starting"
        if self.unit_active == "failed" and self.exit_status == container.CONFIG_REFUSED:
            return f"failed: the gateway refused its configuration (exit {self.exit_status})"
        return "failed" if self.unit_active == "failed" else "stopped"

    @property
    def exit_code(self) -> int:
        if not self.installed:
            return EXIT_UNKNOWN
        return EXIT_RUNNING if self.unit_active == "active" and self.healthy else EXIT_NOT_RUNNING

    def as_dict(self) -> dict[str, Any]:
        d = self._asdict()
        d["ports"] = list(self.ports)
        d["since"] = _iso(self.since_usec)
        d["exit_code"] = self.exit_code
        d["verdict"] = self.verdict
        return d


def _iso(usec: int) -> str | None:
    import datetime

    if not usec:
        return None
    return datetime.datetime.fromtimestamp(usec / 1e6, datetime.timezone.utc).isoformat(
        timespec="seconds")


def collect(s: Settings, etc: str = "/etc") -> Status:
    acct = account.lookup(etc, s.user)
    if acct is None:
        return Status(installed=False, user=s.user, uid=None, url=s.url,
                      config_dir=s.config_dir, token_file=s.env_file)
    sp = container.spec(s)
    fields: dict[str, Any] = {
        "installed": True, "user": acct.name, "uid": acct.uid, "url": s.url,
        "config_dir": s.config_dir, "token_file": s.env_file, "image": s.image,
        "config_file": s.config_file,
        "ports": tuple(p.spec() for p in sp.ports),
        # logind's Linger is this file (read at boot and by loginctl): no bus round trip
        "linger": files.lstat(f"{os.path.dirname(etc)}/var/lib/systemd/linger/{acct.name}")
        is not None,
        "pending": state.pending() or "",
    }
    rt = runtime.of(s, acct)
    fields["mode"] = rt.mode
    try:
        fields.update(rt.facts())
    except CommandError as exc:  # manual mode asks podman
        fields["problem"] = exc.message
    who = acct.identity()
    fast = podstore.unit_state(who, UNIT.removesuffix(".service"), s.image) \
        if fields.get("unit_active") == "active" else None
    if fast is not None:
        fields["container_health"], fields["image_id"], fields["failing_since"] = fast
    else:
        try:
            fields["image_id"] = podman.image_id(who, s.image)
            info = podman.inspect_container(who, s.container_name)
        except CommandError as exc:
            fields["problem"] = exc.message
            info = None
        state_ = (info or {}).get("State") or {}
        if info is not None:
            hc = state_.get("Health") or state_.get("Healthcheck") or None
            if hc:
                fields["container_health"], fields["failing_since"] = podstore.health_summary(hc)
            else:
                fields["container_health"] = state_.get("Status", "unknown")
    fields["healthy"] = health.healthy(s)
    if fields.get("unit_active") == "failed" or fields.get("unit_sub") == "auto-restart":
        from . import journal

        fields["journal"] = journal.tail(acct.uid, 10)
    elif fields.get("unit_active") == "deactivating":
        from . import journal

        fields["draining"] = journal.draining(acct.uid) or ""
    return Status(**fields)


def format_text(st: Status) -> str:
    if not st.installed:
        return (f"{UNIT}: not installed (no account {st.user})\n"
                "  run: sudo theiaosctl setup")
    since = _iso(st.since_usec)
    state = f"{st.unit_active} ({st.unit_sub})" + (f" since {since}" if since else "")
    if st.unit_load not in ("loaded", "unknown", "manual"):
        state += f", unit {st.unit_load}"
    image_id = st.image_id[:12] if st.image_id else "missing: see sudo theiaosctl doctor"
    head = f"{UNIT}: {state}" if st.mode == "service" else \
        f"manual mode (theiaosctl launch): {state}"
    verdict = st.verdict
    if verdict == "not answering" and st.failing_since:
        verdict += f" since {st.failing_since}"
    lines = [
        head,
        f"  state:     {verdict}",
        *([f"  unit:      {st.unit_file}"] if st.unit_file else []),
        f"  gateway:   {'answers' if st.healthy else 'does not answer'} ({st.url}healthz)",
        f"  container: {st.container_health}",
        f"  image:     {st.image} ({image_id})",
        f"  ports:     {', '.join(st.ports)}",
        f"  url:       {st.url}",
        f"  linger:    {'yes' if st.linger else 'no'}",
        f"  config:    {st.config_dir}",
        f"  token:     THEIAOS_GATEWAY_TOKEN in {st.token_file} (sudo theiaosctl token show)",
    ]
    if st.pending:
        lines.append(f"  pending:   {st.pending}, not applied yet: sudo theiaosctl restart")
    if st.problem:
        lines.append(f"  problem:   {st.problem}")
    if st.exit_status == container.CONFIG_REFUSED and st.unit_active == "failed":
        lines.append(f"  fix:       correct {st.config_file} as its last lines say (restarting "
                     "changes nothing), then: sudo theiaosctl restart")
    if st.journal:
        lines += ["  last lines:", *(f"    {ln}" for ln in st.journal.splitlines())]
    return "\n".join(lines)


def format_json(st: Status) -> str:
    return json.dumps(st.as_dict(), indent=2, sort_keys=True)
