#!/bin/sh
# The product doc's launch script, a thin shim over `theiaosctl launch` (manual mode).
# Setup installs it as ~theiaos/run-theiaos-podman.sh; in a source checkout it runs the
# checkout's code.   run-theiaos-podman.sh [launch] [setup]
set -e
[ "${1-}" = launch ] && shift
top=$(dirname "$(readlink -f "$0")")/..
if [ -f "$top/theiaos_pkg/cli.py" ]; then
    PYTHONPATH="$top${PYTHONPATH:+:$PYTHONPATH}" exec python3 -m theiaos_pkg.cli launch "$@"
fi
exec theiaosctl launch "$@"
