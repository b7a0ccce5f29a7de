#!/bin/sh
# Debian's package tester on our .deb, in a Debian 13 chroot whose base already holds
# the package's dependencies (built once with mmdebstrap and cached, keyed by them).
#
#   tests/piuparts.sh NEW.deb [OLD.deb]
#
# Runs piuparts' install/purge test of NEW.deb and, with OLD.deb (the last release),
# its upgrade test OLD -> NEW. piuparts runs in a network namespace of its own (only
# loopback): nothing is downloaded, and the host's ports (a lab publishing 18789) are
# not the chroot's business. In the chroot there is no systemd and piuparts installs a
# policy-rc.d that forbids starts: setup writes files only.
#
# Allowed leftovers after purge, the documented user data: the theiaos account and its
# subuid/subgid lines (piuparts ignores /etc/passwd, group, shadow, gshadow, subuid and
# subgid itself) and /home/theiaos (ignored with ':' so every such path is still listed
# in the log). Nothing else: any other leftover fails. /etc/vconsole.conf and
# /etc/default/locale are dangling symlinks trixie's systemd makes in the base itself.
set -eu

NEW=$1
OLD=${2:-}
CACHE=${THEIAOS_LAB_CACHE:-/var/cache/theiaos-lab}
MIRROR=http://deb.debian.org/debian
DEPS=python3,python3-pystemd,python3-jinja2,python3-dotenv,podman,uidmap,dbus-user-session,systemd-container,passt,passwd,eatmydata
KEY=$(printf '%s %s 1' "$DEPS" "$MIRROR" | sha256sum | cut -c1-16)
BASE=$CACHE/piuparts-trixie-$KEY.tar.gz
WORK=$(mktemp -d "$CACHE/.piuparts.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

mkdir -p "$CACHE"
if [ ! -s "$BASE" ] || [ -n "$(find "$BASE" -mtime +7)" ]; then
    echo "piuparts: building the Debian 13 base with the package's dependencies" \
         "(about a minute; cached in $BASE)"
    # /var/cache/debconf/tmp.ci: apt's debconf hook makes it at piuparts' first install;
    # made here, piuparts does not count it against the package.
    mmdebstrap --variant=minbase --include="$DEPS" --skip=cleanup/apt/lists \
        --aptopt='Acquire::Languages "none"' \
        --customize-hook='rm -f "$1"/etc/hostname' \
        --customize-hook='mkdir -p "$1"/var/cache/debconf/tmp.ci' \
        trixie "$BASE.tmp.tar.gz" "$MIRROR" > "$WORK/base.log" 2>&1 \
        || { tail -30 "$WORK/base.log"; exit 1; }
    mv "$BASE.tmp.tar.gz" "$BASE"
fi

# Offline: apt-get update fails at once (a proxy on a closed port, no retries), and apt
# keeps the lists of the base; every dependency is in the base already.
mkdir -p "$WORK/scripts" "$WORK/tmp"
printf '#!/bin/sh\necho '"'"'Acquire::Retries "0";'"'"' > /etc/apt/apt.conf.d/98offline\n' \
    > "$WORK/scripts/post_chroot_unpack_offline"
chmod 755 "$WORK/scripts/post_chroot_unpack_offline"

set -- --no-upgrade-test
if [ -n "$OLD" ]; then
    # The upgrade test installs the old version "from the archive": a local flat repo.
    mkdir -p "$WORK/repo"
    cp "$OLD" "$WORK/repo/"
    (cd "$WORK/repo" && dpkg-scanpackages --multiversion . > Packages)
    set -- --bindmount="$WORK/repo" "--extra-repo=deb [trusted=yes] file://$WORK/repo ./"
fi

rc=0
unshare --net sh -c 'ip link set lo up && exec "$@"' sh \
    piuparts --tmpdir="$WORK/tmp" --distribution=trixie --mirror="$MIRROR main" \
    --basetgz="$BASE" --proxy=http://127.0.0.1:9 --scriptsdir="$WORK/scripts" "$@" \
    --ignore-regex=':/home/theiaos/.*' \
    --ignore=/etc/vconsole.conf --ignore=/etc/default/locale \
    --log-file="$WORK/piuparts.log" "$NEW" > "$WORK/stdout" 2>&1 || rc=$?
# The verdicts, every ignored path, and the path lists under a FAIL or WARN.
awk '/(FAIL|WARN|PASS|IGNORED)/ {print; body = /(FAIL|WARN)/; next}
     body && /^  / {print; next} {body = 0}' "$WORK/piuparts.log"
[ "$rc" = 0 ] || tail -60 "$WORK/piuparts.log"
exit "$rc"
