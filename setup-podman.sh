#!/bin/sh
# The product doc's setup script, a thin shim over `theiaosctl setup` running this
# checkout's code (as root). As in the doc: no flag = manual mode (--container);
# --quadlet = systemd user service; THEIAOS_PODMAN_QUADLET=1|0 overrides the flags.
set -e
top=$(dirname "$(readlink -f "$0")")
PYTHONPATH="$top${PYTHONPATH:+:$PYTHONPATH}" exec python3 -m theiaos_pkg.cli setup --doc-defaults "$@"
