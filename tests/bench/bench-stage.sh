#!/usr/bin/env bash
# Staging throughput: flas-stage (libssh SFTP, with its sha256 verification) against OpenSSH's sftp
# on the same link (root namespace -> leonardo's sshd over the bed's veth), alternating runs, medians.
# usage: bench-stage.sh FLAS_STAGE [SIZE_MB] [RUNS]     (needs the sites of the test bed running)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STAGE_BIN=$1
MB=${2:-512}
RUNS=${3:-5}
eval "$("$HERE/../bed/flas-bed" paths | sed 's/^/P_/')"
"$HERE/../bed/flas-bed" status sites >/dev/null || { echo "bench-stage: start the sites first: tests/bed/flas-bed start sites" >&2; exit 1; }
L=$(mktemp -d /var/tmp/flas-bench-stage.XXXXXX)
R="$P_bed/work/bench-stage"
trap 'rm -rf "$L" "$R"' EXIT
install -d -o "$P_user" "$R"
head -c "$((MB << 20))" /dev/urandom >"$L/file"
TARGET="$P_user@$P_leonardo_addr"
# OpenSSH insists on a private key file only its owner can read.
install -m 600 "$P_user_key" "$L/key"
SFTP=(sftp -q -b - -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$P_known_hosts" -i "$L/key" "$TARGET")
FS=("$STAGE_BIN" -q -t "$TARGET" -k "$P_known_hosts" -i "$P_user_key")
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
SHA=$(sha256sum <"$L/file" | cut -d' ' -f1)
declare -A T
for i in $(seq "$RUNS"); do
    rm -f "$R"/* "$L"/down*
    T[fs_put]+="$(secs "${FS[@]}" put "$L/file" "$R/a")"$'\n'
    T[ssh_put]+="$(secs "${SFTP[@]}" <<<"put $L/file $R/b")"$'\n'
    # as the coordinator does: the expected size and sha256 come from the site's manifest
    T[fs_get]+="$(secs "${FS[@]}" --size "$((MB << 20))" --sha256 "$SHA" get "$R/a" "$L/down1")"$'\n'
    T[ssh_get]+="$(secs "${SFTP[@]}" <<<"get $R/b $L/down2")"$'\n'
done
echo "staging benchmark: $MB MiB file, $RUNS alternating runs, median wall time per transfer (whole command)"
printf '%-8s %14s %14s %8s\n' dir "flas-stage MB/s" "openssh MB/s" ratio
for dir in put get; do
    a=$(printf '%s' "${T[fs_$dir]}" | median)
    b=$(printf '%s' "${T[ssh_$dir]}" | median)
    printf '%-8s %14.0f %14.0f %8.2f\n' "$dir" "$(echo "$MB * 1.048576 / $a" | bc -l)" "$(echo "$MB * 1.048576 / $b" | bc -l)" "$(echo "$b / $a" | bc -l)"
done
echo "(flas-stage times include its sha256 verification at both ends; OpenSSH sftp verifies nothing)"
