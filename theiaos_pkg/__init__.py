"""theiaos-podman: run the TheiaOS gateway in a rootless Podman container under systemd."""

__version__ = "0.4.0"
