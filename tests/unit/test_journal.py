"""journal.tail's choice of lines, on records journalctl wrote in the lab: a failed
start of a gateway that answered its health check with 500 (fixtures/journal-unhealthy-
start.json, ``journalctl -o json`` trimmed to the fields tail reads)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from theiaos_pkg import journal

FIXTURE = Path(__file__).parent / "fixtures" / "journal-unhealthy-start.json"
VERDICT = "theiaos did not answer its health check within 15 s: stopping it"


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def records() -> list[dict[str, object]]:
    return journal.parse(FIXTURE.read_text())


def flooded() -> list[dict[str, object]]:
    """The CI run's shape: the gateway ignored SIGTERM for `podman stop`'s 10 s and
    logged 60 more requests after the verdict, before systemd's last lines."""
    recs = records()
    at = next(i for i, r in enumerate(recs) if r.get("MESSAGE") == VERDICT)
    request = next(r for r in recs if journal.from_container(r))
    return recs[:at + 1] + [dict(request) for _ in range(60)] + recs[at + 1:]


def test_a_record_prints_as_journalctl_short_iso_does() -> None:
    verdict = next(r for r in records() if r.get("MESSAGE") == VERDICT)
    # the line the lab's journalctl -o short-iso printed for the same record
    assert journal.format_record(verdict) == f"2026-12-07T16:40:29+00:00 vm theiaos[554]: {VERDICT}"


def test_the_verdict_and_systemds_lines_survive_a_flood_of_gateway_lines() -> None:
    recs = flooded()
    plain = [journal.format_record(r) for r in recs[-40:]]  # what `journalctl -n 40` showed
    assert not any(VERDICT in line for line in plain)
    chosen = journal.pick(recs, 40)
    text = "\n".join(journal.format_record(r) for r in chosen)
    assert len(chosen) == 40 and VERDICT in text, text
    assert text.endswith("theiaos.service: Consumed 6.252s CPU time."), text
    assert sum(journal.from_container(r) for r in chosen) == 20
    assert chosen == [r for r in recs if any(r is c for c in chosen)]  # in their order


def test_gateway_lines_fill_what_the_others_leave() -> None:
    recs = records()
    ours = [r for r in recs if not journal.from_container(r)]
    chosen = journal.pick(recs, 60)
    assert len(ours) < 30 and len(chosen) == 60
    assert all(any(r is c for c in chosen) for r in ours)
    assert journal.pick(recs, 0) == [] and journal.pick([], 40) == []
    assert journal.pick(ours, 5) == ours[-5:]


def test_control_characters_reach_roots_terminal_escaped() -> None:
    rec = {"__REALTIME_TIMESTAMP": "1796661629271987", "_HOSTNAME": "vm",
           "SYSLOG_IDENTIFIER": "theiaos", "_PID": "539", "CONTAINER_ID": "9a24",
           "MESSAGE": "\x1b]0;owned\x07\x1b[2Jhidden\rshown\tok"}
    line = journal.format_record(rec)
    assert "\x1b" not in line and "\r" not in line and "\x07" not in line
    assert line.endswith(r"theiaos[539]: \x1b]0;owned\x07\x1b[2Jhidden\rshown" + "\tok")


def test_several_lines_and_bytes_that_are_not_utf8() -> None:
    rec = {"__REALTIME_TIMESTAMP": "1796661629271987", "_HOSTNAME": "vm", "_COMM": "node",
           "_PID": "7", "MESSAGE": "Error: boom\n    at main (/app/x.js:1)\n"}
    assert journal.format_record(rec).split("\n") == [
        "2026-12-07T16:40:29+00:00 vm node[7]: Error: boom",
        " " * len("2026-12-07T16:40:29+00:00 vm node[7]: ") + "    at main (/app/x.js:1)"]
    raw = {"_HOSTNAME": "vm", "SYSLOG_IDENTIFIER": "theiaos",
           "MESSAGE": list(b"caf\xe9 \x1b[31m")}
    assert journal.format_record(raw) == r"- vm theiaos: caf� \x1b[31m"


def test_lines_that_are_not_records_are_skipped() -> None:
    text = FIXTURE.read_text().splitlines()[0]
    assert journal.parse(f"not json\n[1, 2]\n{text}\n\n") == [json.loads(text)]


def _gateway(message: str) -> dict[str, object]:
    return {"MESSAGE": message, "CONTAINER_ID": "47f1520e0925", "SYSLOG_IDENTIFIER": "theiaos"}


#: The public gateway's lines on SIGTERM with a turn in flight, as the lab's journal had them.
BUSY = [
    _gateway("2026-12-07T23:49:31.640+00:00 [admission] closed: stop (SIGTERM)"),
    _gateway("2026-12-07T23:49:31.664+00:00 [gateway] draining active work before stop with "
             "timeout 315000ms: queueSize=2 embeddedRuns=1 sessionAdmissions=1 rootRequests=1"),
    {"MESSAGE": "Stopping theiaos.service - TheiaOS gateway (rootless Podman)...",
     "SYSLOG_IDENTIFIER": "systemd"},
]


def test_a_draining_gateway_says_what_it_finishes() -> None:
    assert journal.drain_note(BUSY) == "1 agent run, 2 queued tasks, 1 open request (at most 315 s)"


def test_a_drain_that_settled_or_never_began_says_nothing() -> None:
    settled = [*BUSY, _gateway("2026-12-07T23:49:58.331+00:00 [gateway] active-work drain "
                               "settled; beginning server close")]
    assert journal.drain_note(settled) is None
    assert journal.drain_note(BUSY[:1]) is None
    # the line must be the gateway's own, not one a unit's command printed
    assert journal.drain_note([{"MESSAGE": BUSY[1]["MESSAGE"]}]) is None
