"""One way to fail: every expected failure is a TheiaosError.

``cli.main`` and ``hooks.main`` turn it into one line on stderr and exit status 1;
a traceback is shown only with ``--debug``.
"""

from __future__ import annotations


class TheiaosError(Exception):
    """An expected failure, explained in one line (plus an optional fix)."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        if self.fix:
            return f"{self.message}\n  fix: {self.fix}"
        return self.message


class SettingError(TheiaosError):
    """A setting has a value we cannot use."""


class AccountError(TheiaosError):
    """The service account is missing or unsuitable."""


class SubidError(TheiaosError):
    """Subordinate ids cannot be read or allocated."""


class UnsafePathError(TheiaosError):
    """A path crosses a symlink or directory the service user controls."""


class ConfigError(TheiaosError):
    """The gateway's own config (.env, theiaos.json) is unusable."""


class CommandError(TheiaosError):
    """A program we ran failed or is missing."""


class BusError(TheiaosError):
    """systemd or logind refused or did not answer over D-Bus."""


class GatewayError(TheiaosError):
    """The gateway did not come up or is not healthy."""
