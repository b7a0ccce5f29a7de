"""A real browser on the gateway's dashboard (the Control UI served at `/`), for tests that
must see what a person sees: Debian's chromium, headless, driven by python3-selenium through
Debian's chromium-driver.

Everything comes from Debian's archive (`apt-get install chromium chromium-driver
python3-selenium`) and runs with /usr/bin/python3: the Service is given
/usr/bin/chromedriver explicitly, so selenium never falls back to selenium-manager and nothing
is downloaded at run time. Tests that use this module should `pytest.importorskip("selenium")`
first: the project's .venv has no selenium.

Public API:
    Dashboard(*, chromedriver=..., chromium=..., window=(1280, 900), extra_args=())
        context manager: starts the browser on enter; on exit quits it and makes sure the
        chromedriver and chromium processes it started are gone (by PID), removing its profile
        .open(url, timeout=90, token=None)     load the dashboard, wait until connected
        .load(url) / .state() / .wait_connected(timeout, check_now=False)
                                               the steps of open(), for tests that act in
                                               between (approve a pending browser, ...)
        .sign_in_with_token(token, timeout=90) the login screen's "Gateway secret" + Connect
        .pairing_request() -> requestId | None the pending approval the page asks for
        .chat(message, expect, timeout=180) -> seconds until `expect` is in the conversation
        .screenshot(path) -> Path
        .driver                                the selenium WebDriver, for anything else
    DashboardError                             what a person would have seen, as the message

The Control UI is a Lit app that renders into the light DOM today, but some of its widgets
(Web Awesome) use shadow roots, so every lookup goes through one script that walks open
shadow roots too. Selectors are the ones a person or a screen reader uses: the "Gateway
secret" label, the "Connect" button, the "Chat composer" text box, the conversation's
role="log", role="status"/"alert" texts; never generated class names.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement

CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = "/usr/bin/chromium"

# Headless, no sandbox (we may be root), no GPU, and nothing that talks to the internet on its
# own (component updates, sync, background networking, QUIC probes): a test must not depend on
# or wait for the network, and must not leave a first-run dialog in the way.
CHROMIUM_ARGS: tuple[str, ...] = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

# Login-screen failures (the section's data-kind) that the page does not recover from by
# itself: waiting longer cannot help, so open() reports them at once. Everything else
# (pairing-required, network, rate limits, ...) the page retries on its own, so open() waits.
TERMINAL_FAILURES = frozenset(
    {
        "auth-required",
        "auth-failed",
        "origin-not-allowed",
        "protocol-mismatch",
        "insecure-context",
        "trusted-proxy",
        "verified-user-required",
    }
)

# The login screen's failures that a (different) gateway secret answers.
ASKS_FOR_SECRET = frozenset({"auth-required", "auth-failed"})

# Every open shadow root of the page, and the helpers both scripts below look with.
_ROOTS_JS = r"""
const roots = [];
(function walk(root) {
  roots.push(root);
  for (const el of root.querySelectorAll('*')) if (el.shadowRoot) walk(el.shadowRoot);
})(document);
const all = (sel) => roots.flatMap((r) => [...r.querySelectorAll(sel)]);
const shown = (el) => !!el && el.isConnected && (el.checkVisibility
  ? el.checkVisibility({ contentVisibilityAuto: true, visibilityProperty: true })
  : el.getClientRects().length > 0);
const squash = (s) => (s || '').replace(/\s+/g, ' ').trim();
"""

# One pass over the page, shadow roots included: what a person would see, as data.
_PROBE_JS = _ROOTS_JS + r"""
const words = (el) => squash(el.innerText || el.textContent);
// Text a person reads in `root`: rendered text only (no closed tooltips or menus), and no
// live-region announcements or aria-hidden decoration (screen-reader copies of the same text).
const readable = (root) => {
  if (!root) return '';
  const out = [];
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {
    acceptNode(node) {
      if (!shown(node.parentElement)) return NodeFilter.FILTER_REJECT;
      for (let el = node.parentElement; el && el !== root.parentElement; el = el.parentElement) {
        if (el.matches('[role=status],[aria-hidden=true],[hidden],script,style,template')) {
          return NodeFilter.FILTER_REJECT;
        }
      }
      return NodeFilter.FILTER_ACCEPT;
    },
  });
  while (walker.nextNode()) out.push(walker.currentNode.nodeValue);
  return squash(out.join(''));
};
const byLabel = (text) => {
  for (const label of all('label')) {
    if (squash(label.textContent) === text && label.control) return label.control;
  }
  return null;
};
const secret = byLabel('Gateway secret')
  || all('input[placeholder="Paste the token or type the password"]')[0] || null;
const composer = all('textarea[aria-label="Chat composer"]').find(shown)
  || all('textarea[placeholder^="Message"]').find(shown) || null;
const failure = all('[role=status]').find((el) => shown(el) && el.querySelector('h1'));
let failureInfo = null;
if (failure) {
  // The "Raw error" disclosure: the gateway's own words, which the page keeps collapsed.
  const raw = [...failure.querySelectorAll('details')]
    .filter((d) => /error/i.test(squash(d.querySelector('summary')?.textContent)))
    .map((d) => squash(d.textContent).replace(squash(d.querySelector('summary').textContent), '').trim())
    .filter(Boolean).join(' ');
  failureInfo = {
    kind: failure.getAttribute('data-kind') || '',
    title: words(failure.querySelector('h1')),
    summary: words(failure.querySelector('p') || failure),
    raw: raw,
    text: words(failure).slice(0, 1500),
  };
}
const logs = all('[role=log]');
return {
  url: location.href,
  title: document.title,
  gate: shown(secret),
  failure: failureInfo,
  composer: !!composer,
  composerEnabled: !!composer && !composer.disabled && composer.getAttribute('aria-disabled') !== 'true',
  statuses: all('[role=status]').map((el) => squash(el.textContent)).filter(Boolean).slice(0, 30),
  alerts: all('[role=alert]').filter(shown).map(words).filter(Boolean).slice(0, 10),
  dialogs: all('dialog[open],[role=dialog],[role=alertdialog]').filter(shown).map(words)
    .filter(Boolean).slice(0, 5),
  conversation: logs.map(readable).join(' '),
  body: words(document.body).slice(0, 3000),
};
"""

# The element a person would type into or click, found the same way as in the probe.
_FIND_JS = r"""
const [what, text] = arguments;
""" + _ROOTS_JS + r"""
if (what === 'label') {
  for (const label of all('label')) {
    if (squash(label.textContent) === text && label.control && shown(label.control)) return label.control;
  }
  return null;
}
if (what === 'placeholder') {
  return all('input,textarea').find((el) => el.placeholder === text && shown(el)) || null;
}
if (what === 'aria-label') {
  return all('[aria-label]').find((el) => el.getAttribute('aria-label') === text && shown(el)) || null;
}
if (what === 'button') {
  const named = (el) => squash(el.innerText || el.textContent) === text;
  return all('button,[role=button]').find((el) => shown(el) && named(el)) || null;
}
return null;
"""


class DashboardError(AssertionError):
    """The dashboard did not do what the test expected; the message says what was on screen."""


class Dashboard:
    """Headless chromium on the Control UI, with a fresh profile that is removed afterwards.

    A fresh --user-data-dir makes every Dashboard a new browser to the gateway (a new device
    identity, nothing remembered), which is what a first visit by a person looks like.
    """

    def __init__(
        self,
        *,
        chromedriver: str = CHROMEDRIVER,
        chromium: str = CHROMIUM,
        window: tuple[int, int] = (1280, 900),
        extra_args: Sequence[str] = (),
    ) -> None:
        self.chromedriver = chromedriver
        self.chromium = chromium
        self.window = window
        self.extra_args = tuple(extra_args)
        self._tmp: Path | None = None
        self._service: Service | None = None
        self._driver: webdriver.Chrome | None = None
        self._root_pid: int | None = None  # chromedriver's, also its process group's id

    # --- life cycle ----------------------------------------------------------------------

    def __enter__(self) -> Dashboard:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start chromedriver and chromium. No selenium-manager: a missing driver is an error
        here rather than a download."""
        for path in (self.chromedriver, self.chromium):
            if not os.access(path, os.X_OK):
                raise DashboardError(f"{path} is missing: apt-get install chromium chromium-driver")
        self._tmp = Path(tempfile.mkdtemp(prefix="theiaos-browser-"))
        profile = self._tmp / "profile"
        options = Options()
        options.binary_location = self.chromium
        for arg in (
            *CHROMIUM_ARGS,
            f"--user-data-dir={profile}",
            f"--window-size={self.window[0]},{self.window[1]}",
            *self.extra_args,
        ):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        # English, whatever the machine's locale: the selectors are the UI's English words.
        options.add_experimental_option("prefs", {"intl.accept_languages": "en-US,en"})
        # HOME and XDG dirs inside the temp dir: chromium writes nothing into the caller's home.
        env = {
            **os.environ,
            "LANGUAGE": "en_US",
            "HOME": str(self._tmp),
            "XDG_CONFIG_HOME": str(self._tmp / "config"),
            "XDG_CACHE_HOME": str(self._tmp / "cache"),
        }
        # Its own session, so that close() can find everything it started by process group too.
        self._service = Service(self.chromedriver, env=env, popen_kw={"start_new_session": True})
        try:
            self._driver = webdriver.Chrome(service=self._service, options=options)
        except BaseException:
            self._root_pid = getattr(getattr(self._service, "process", None), "pid", None)
            self.close()
            raise
        self._root_pid = self._service.process.pid

    def close(self) -> None:
        """Quit the browser, then make sure every process it started is gone and remove the
        profile. Processes are found by PID: the Service's process, its descendants, its
        process group, and anything running with this profile directory (chromium helpers
        reparented away from their browser)."""
        procs = self._our_processes()
        if self._driver is not None:
            # The browser may already be gone: the PIDs below are checked either way.
            with contextlib.suppress(Exception):
                self._driver.quit()
            self._driver = None
        if self._service is not None:
            with contextlib.suppress(Exception):
                self._service.stop()
            self._service = None
        procs |= self._our_processes()
        self._root_pid = None
        _stop_processes(procs)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            if self._tmp.exists():  # a straggler wrote into it after the first pass
                time.sleep(0.5)
                shutil.rmtree(self._tmp)
            self._tmp = None

    def _our_processes(self) -> set[tuple[int, int]]:
        """(pid, start time) of every process this Dashboard started and that still runs."""
        root = self._root_pid
        marker = str(self._tmp / "profile") if self._tmp else None
        table = _process_table()
        found: set[int] = set()
        if root is not None:
            if root in table:
                found.add(root)
            found |= {pid for pid, info in table.items() if info["pgid"] == root}
            changed = True
            while changed:
                changed = False
                for pid, info in table.items():
                    if pid not in found and info["ppid"] in found:
                        found.add(pid)
                        changed = True
        if marker:
            found |= {pid for pid, info in table.items() if marker in info["cmdline"]}
        found.discard(os.getpid())
        return {(pid, int(table[pid]["start"])) for pid in found}

    # --- pages -------------------------------------------------------------------------------

    @property
    def driver(self) -> webdriver.Chrome:
        """The selenium driver; an error if the browser is not running."""
        if self._driver is None:
            raise DashboardError("the browser is not running (use Dashboard as a context manager)")
        return self._driver

    def load(self, url: str) -> None:
        """Navigate to `url` and return once the document has loaded; no waiting for the app."""
        self.driver.get(url)

    def state(self) -> dict[str, Any]:
        """What the page shows right now (login screen, failure text, composer, statuses)."""
        result: dict[str, Any] = self.driver.execute_script(_PROBE_JS)
        return result

    @staticmethod
    def is_connected(state: dict[str, Any]) -> bool:
        """Connected as a person would tell: no login screen, the chat composer is there, and
        the sidebar's status line says "Connected"."""
        return not state["gate"] and state["composer"] and state["failure"] is None and "Connected" in state["statuses"]

    def open(self, url: str, timeout: float = 90, token: str | None = None) -> float:
        """Load the dashboard at `url` and wait until it is connected to the gateway; return
        the seconds that took. With `token`, a login screen asking for the gateway secret is
        answered like a person would (sign_in_with_token). The error on failure carries the
        UI's own words ("Gateway unreachable", "Approve this browser", ...)."""
        began = time.monotonic()
        self.load(url)
        deadline = began + timeout
        while True:
            state = self.state()
            if self.is_connected(state):
                return time.monotonic() - began
            failure = state["failure"]
            if token is not None and failure is not None and failure["kind"] in ASKS_FOR_SECRET:
                self.sign_in_with_token(token, timeout=max(1.0, deadline - time.monotonic()))
                return time.monotonic() - began
            if failure is not None and failure["kind"] in TERMINAL_FAILURES:
                # Give the page a moment: it can show a failure while it is still switching.
                time.sleep(1.0)
                state = self.state()
                if state["failure"] is not None and state["failure"]["kind"] in TERMINAL_FAILURES:
                    raise DashboardError(self._describe(f"the dashboard at {url} did not connect", state))
            if time.monotonic() > deadline:
                raise DashboardError(
                    self._describe(f"the dashboard at {url} was not connected after {timeout:.0f} s", state)
                )
            time.sleep(0.25)

    def wait_connected(self, timeout: float = 90, *, check_now: bool = False) -> float:
        """Wait until the page is connected; return the seconds waited. For a page that
        recovers on its own (a pending pairing approved on the host, a gateway coming back):
        every failure is waited out until `timeout`. The pairing screen retries with a
        growing delay; `check_now` clicks its "Check now" button once, as a person who just
        approved the browser would, instead of waiting for the next retry."""
        began = time.monotonic()
        while True:
            state = self.state()
            if self.is_connected(state):
                return time.monotonic() - began
            if check_now:
                button = self._find("button", "Check now")
                if button is not None:
                    with contextlib.suppress(WebDriverException):
                        button.click()
                        check_now = False
            if time.monotonic() - began > timeout:
                raise DashboardError(self._describe(f"not connected after {timeout:.0f} s", state))
            time.sleep(0.25)

    def pairing_request(self) -> str | None:
        """The requestId the pairing screen ("Approve this browser") asks the host to approve
        with `openclaw devices approve <requestId>`, or None when the page is not asking."""
        failure = self.state()["failure"]
        if failure is None or failure["kind"] != "pairing-required":
            return None
        found = re.search(
            r"devices approve ([0-9a-fA-F-]{8,})|requestId: ([0-9a-fA-F-]{8,})", f"{failure['text']} {failure['raw']}"
        )
        return (found.group(1) or found.group(2)) if found else None

    def sign_in_with_token(self, token: str, timeout: float = 90) -> float:
        """Paste `token` into the login screen's "Gateway secret" field and click Connect, as
        the product doc tells a person to; wait until connected and return the seconds that
        took. A page that is already connected is left alone."""
        began = time.monotonic()
        state = self._wait_for(
            lambda s: s["gate"] or self.is_connected(s), timeout=min(timeout, 30), what="the login screen"
        )
        if self.is_connected(state):
            return 0.0
        field = self._find("label", "Gateway secret") or self._find(
            "placeholder", "Paste the token or type the password"
        )
        if field is None:
            raise DashboardError(self._describe('no "Gateway secret" field on the login screen', state))
        try:
            field.click()
            field.send_keys(Keys.CONTROL, "a")
            field.send_keys(Keys.DELETE)
            field.send_keys(token)
            button = self._find("button", "Connect")
            if button is None:
                field.send_keys(Keys.ENTER)  # the field connects on Enter too
            else:
                button.click()
        except WebDriverException as err:
            raise DashboardError(self._describe(f'could not type into "Gateway secret": {err.msg}', state)) from err
        remaining = max(1.0, timeout - (time.monotonic() - began))
        deadline = time.monotonic() + remaining
        while True:
            state = self.state()
            if self.is_connected(state):
                return time.monotonic() - began
            failure = state["failure"]
            if failure is not None and failure["kind"] in ("auth-failed",):
                raise DashboardError(self._describe("the gateway refused the token", state))
            if time.monotonic() > deadline:
                raise DashboardError(
                    self._describe(f"not connected {timeout:.0f} s after signing in with the token", state)
                )
            time.sleep(0.25)

    def chat(self, message: str, expect: str, timeout: float = 180) -> float:
        """Type `message` into the chat composer, send it with Enter (the send button if Enter
        did not send it), and wait until `expect` shows up in the conversation as new text;
        return the seconds from sending to seeing it.

        "New": `expect` after the newest copy of `message` once that has appeared, so that an
        earlier identical exchange (or `expect` inside the message itself) does not count.
        Should the message not show up verbatim (markdown rendering, or the list dropped
        older rows), any added occurrence of `expect` counts instead. Newlines in `message`
        are typed as Shift+Enter, which the composer takes as a line break."""
        state = self._wait_for(lambda s: s["composer"] and s["composerEnabled"], timeout=60, what="the chat composer")
        said, want = _squash(message), _squash(expect)
        if not want:
            raise ValueError("chat() needs a non-empty `expect`")
        # Occurrences of `expect` are masked before looking for the message, so that an answer
        # that quotes the message is not taken for the message itself.
        said_before = state["conversation"].replace(want, "\x00").count(said)
        want_before = state["conversation"].count(want) + said.count(want)
        composer = self._type_into_composer(message, state)
        began = time.monotonic()
        composer.send_keys(Keys.ENTER)
        sent_by_button = False
        while True:
            state = self.state()
            masked = state["conversation"].replace(want, "\x00")
            if said and masked.count(said) > said_before:
                if "\x00" in masked[masked.rindex(said) + len(said) :]:
                    return time.monotonic() - began
            elif state["conversation"].count(want) > want_before:
                return time.monotonic() - began
            elapsed = time.monotonic() - began
            if not sent_by_button and elapsed > 3:
                sent_by_button = True
                with contextlib.suppress(WebDriverException):
                    left = self._find("aria-label", "Chat composer")
                    if left is not None and _squash(left.get_attribute("value") or "") == said:
                        button = self._find("aria-label", "Send message")
                        if button is not None:
                            button.click()
            if elapsed > timeout:
                raise DashboardError(
                    self._describe(
                        f"{expect!r} did not appear in the conversation {timeout:.0f} s after sending {message!r}",
                        state,
                    )
                )
            time.sleep(0.2)

    def _type_into_composer(self, message: str, state: dict[str, Any]) -> WebElement:
        """Click the composer and type `message` (Shift+Enter between lines). The app may
        re-render the text box while it settles; a stale element is looked up again, and the
        box is cleared before each attempt so that nothing is typed twice."""
        for attempt in (1, 2, 3):
            composer = self._find("aria-label", "Chat composer")
            if composer is None:
                raise DashboardError(self._describe('no "Chat composer" text box', state))
            try:
                composer.click()
                composer.send_keys(Keys.CONTROL, "a")
                composer.send_keys(Keys.DELETE)
                for number, line in enumerate(message.split("\n")):
                    if number:
                        composer.send_keys(Keys.SHIFT, Keys.ENTER)
                    composer.send_keys(line)
                return composer
            except WebDriverException:
                if attempt == 3:
                    raise
                time.sleep(0.5)
        raise DashboardError(self._describe("could not type into the chat composer", state))

    def screenshot(self, path: str | os.PathLike[str]) -> Path:
        """Save a PNG of the window at `path` (parents created); return the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not self.driver.save_screenshot(str(target)):
            raise DashboardError(f"chromium could not save a screenshot to {target}")
        return target

    # --- helpers -------------------------------------------------------------------------------

    def _find(self, what: str, text: str) -> WebElement | None:
        found = self.driver.execute_script(_FIND_JS, what, text)
        return found if isinstance(found, WebElement) else None

    def _wait_for(self, ready: Any, *, timeout: float, what: str) -> dict[str, Any]:
        began = time.monotonic()
        while True:
            state = self.state()
            if ready(state):
                return state
            if time.monotonic() - began > timeout:
                raise DashboardError(self._describe(f"{what} did not appear within {timeout:.0f} s", state))
            time.sleep(0.25)

    def _describe(self, headline: str, state: dict[str, Any]) -> str:
        """`headline`, then what the page showed: the login screen's failure (title, summary,
        raw error), alerts, dialogs, status lines, and the browser console's errors."""
        lines = [headline, f"  page: {state['url']}"]
        failure = state.get("failure")
        if failure:
            lines.append(f"  the page says: {failure['title']}" + (f" [{failure['kind']}]" if failure["kind"] else ""))
            if failure["summary"] and failure["summary"] != failure["title"]:
                lines.append(f"    {failure['summary']}")
            if failure["raw"]:
                lines.append(f"    raw error: {failure['raw']}")
        elif state.get("gate"):
            lines.append("  the page shows the login screen (Gateway URL / Gateway secret)")
        for alert in state.get("alerts", []):
            lines.append(f"  alert: {alert}")
        for dialog in state.get("dialogs", []):
            lines.append(f"  dialog: {dialog[:500]}")
        statuses = [s for s in state.get("statuses", []) if len(s) < 200]
        if statuses:
            lines.append(f"  status lines: {statuses}")
        if not failure:
            lines.append(f"  page text: {state.get('body', '')[:1200]}")
        conversation = state.get("conversation", "")
        if conversation:
            lines.append(f"  conversation (end): ...{conversation[-800:]}")
        errors = self._console_errors()
        if errors:
            lines.append("  browser console:")
            lines.extend(f"    {e}" for e in errors[-8:])
        return "\n".join(lines)

    def _console_errors(self) -> list[str]:
        try:
            entries = self.driver.get_log("browser")
        except WebDriverException:
            return []
        return [str(e.get("message", ""))[:400] for e in entries if e.get("level") in ("SEVERE", "WARNING")]


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _process_table() -> dict[int, dict[str, Any]]:
    """Every process now: ppid, process group, start time (to tell a reused PID), state,
    command line. From /proc, so that no tool outside the standard library is needed."""
    table: dict[int, dict[str, Any]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry)] = {
            "state": fields[0],
            "ppid": int(fields[1]),
            "pgid": int(fields[2]),
            "start": int(fields[19]),
            "cmdline": cmdline,
        }
    return table


def _alive(procs: Iterable[tuple[int, int]]) -> set[tuple[int, int]]:
    """Those of `procs` still running: same PID and start time, not a zombie."""
    table = _process_table()
    return {
        (pid, start)
        for pid, start in procs
        if pid in table and table[pid]["start"] == start and table[pid]["state"] != "Z"
    }


def _stop_processes(procs: set[tuple[int, int]], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds, each process by PID; an error if any
    survives, since a leaked browser would outlive the test and hold its ports and files."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = _alive(procs)
        if not left:
            return
        for pid, _ in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _alive(left):
            time.sleep(0.1)
    left = _alive(procs)
    if left:
        raise DashboardError(f"browser processes survived SIGKILL: {sorted(pid for pid, _ in left)}")
