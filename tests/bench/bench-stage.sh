#!/usr/bin/env bash
# Staging throughput on the test bed's link (root namespace -> leonardo's sshd over the veth pair):
# flas-stage (libssh SFTP) against OpenSSH's sftp, alternating runs, medians of whole commands.
# Three views, because flas-stage does more than sftp:
#   data      flas-stage's data-movement phase alone (its own timer) vs the whole sftp command
#   whole     the whole flas-stage command (connect, sha256 at both ends, fsync, rename) vs sftp
#   same      sftp followed by what it takes to give the same guarantees by hand: sha256 at both ends
#             (openssl at the site, like flas-stage) and sync
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
SHA=$(sha256sum <"$L/file" | cut -d' ' -f1)
TARGET="$P_user@$P_leonardo_addr"
install -m 600 "$P_user_key" "$L/key" # OpenSSH insists on a key file only its owner can read
SSHOPTS=(-q -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$P_known_hosts" -i "$L/key")
FS=("$STAGE_BIN" -q -t "$TARGET" -k "$P_known_hosts" -i "$P_user_key")
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
declare -A T
add() { T[$1]+="$2"$'\n'; }
for i in $(seq "$RUNS"); do
    rm -f "$R"/* "$L"/down*
    t0=$(now); out=$("${FS[@]}" put "$L/file" "$R/a$i"); t1=$(now)
    add fs_put "$(echo "$t1 - $t0" | bc -l)"; add fs_put_data "$(sed -n 's/.* in \([0-9.]*\) s .*/\1/p' <<<"$out")"
    t0=$(now); sftp "${SSHOPTS[@]}" -b - "$TARGET" <<<"put $L/file $R/b$i" >/dev/null; t1=$(now)
    ssh "${SSHOPTS[@]}" "$TARGET" "openssl dgst -sha256 -r $R/b$i >/dev/null; sync $R/b$i"; sha256sum "$L/file" >/dev/null; t2=$(now)
    add ssh_put "$(echo "$t1 - $t0" | bc -l)"; add ssh_put_same "$(echo "$t2 - $t0" | bc -l)"
    t0=$(now); out=$("${FS[@]}" --size "$((MB << 20))" --sha256 "$SHA" get "$R/a$i" "$L/down1"); t1=$(now)
    add fs_get "$(echo "$t1 - $t0" | bc -l)"; add fs_get_data "$(sed -n 's/.* in \([0-9.]*\) s .*/\1/p' <<<"$out")"
    t0=$(now); sftp "${SSHOPTS[@]}" -b - "$TARGET" <<<"get $R/b$i $L/down2" >/dev/null; t1=$(now)
    sha256sum "$L/down2" >/dev/null; sync "$L/down2"; t2=$(now)
    add ssh_get "$(echo "$t1 - $t0" | bc -l)"; add ssh_get_same "$(echo "$t2 - $t0" | bc -l)"
    rm -f "$L"/down*
done
mbs() { echo "$MB * 1.048576 / $1" | bc -l; }
echo "staging benchmark: $MB MiB file, $RUNS alternating runs, medians (MB/s)"
printf '%-4s %-7s %12s %12s %8s\n' dir view flas-stage openssh ratio
for dir in put get; do
    sftp_raw=$(printf '%s' "${T[ssh_$dir]}" | median)
    for view in data whole same; do
        case $view in
        data) a=$(printf '%s' "${T[fs_${dir}_data]}" | median) b=$sftp_raw ;;
        whole) a=$(printf '%s' "${T[fs_$dir]}" | median) b=$sftp_raw ;;
        same) a=$(printf '%s' "${T[fs_$dir]}" | median) b=$(printf '%s' "${T[ssh_${dir}_same]}" | median) ;;
        esac
        printf '%-4s %-7s %12.0f %12.0f %8.2f\n' "$dir" "$view" "$(mbs "$a")" "$(mbs "$b")" "$(echo "$b / $a" | bc -l)"
    done
done
