#!/usr/bin/env bash
# `cmake --install` puts every part where users and admins expect it (checked in a DESTDIR).
# usage: check-install.sh BUILD_DIR SLURM_PLUGIN_DIR SLURM_CONF_DIR
set -euo pipefail
build=$1 plugindir=$2 confdir=$3
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
DESTDIR="$d" cmake --install "$build" >/dev/null
fail() { echo "FAIL: $*" >&2; exit 1; }
[ -f "$d$plugindir/flas.so" ] || fail "flas.so is not in Slurm's PluginDir ($plugindir)"
dropin="$d$confdir/plugstack.conf.d/flas.conf"
[ -f "$dropin" ] || fail "no plugstack.conf.d drop-in"
grep -Eq "^(optional|required) $plugindir/flas.so conf=$confdir/flas.conf$" "$dropin" ||
    fail "the drop-in does not load $plugindir/flas.so with conf=$confdir/flas.conf: $(grep -v '^#' "$dropin")"
for tool in flas-train flas-prepare flas-corpus flas-vocab flas-aggregate flas-coordinator flas-stage flas-generate; do
    if [ "$tool" = flas-train ] && [ ! -e "$build/runtime/flas-train" ]; then continue; fi
    [ -x "$d/usr/local/bin/$tool" ] || fail "$tool is not installed in bin"
done
for page in man8/flas.so.8 man5/flas.conf.5 man1/flas-aggregate.1 man1/flas-prepare.1 man1/flas-stage.1 \
    man1/flas-coordinator.1 man1/flas-train.1 man1/flas-generate.1; do
    [ -f "$d/usr/local/share/man/$page" ] || fail "man page $page is not installed"
done
echo "PASS: plugin in $plugindir, drop-in $confdir/plugstack.conf.d/flas.conf, tools and man pages installed"
