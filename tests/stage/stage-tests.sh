#!/usr/bin/env bash
# Staging over SSH (flas-stage, i.e. libflas_stage) against the two-site test bed: real sshd in each
# site's namespace, host keys from the bed's known_hosts, the bed user's key.
# usage: stage-tests.sh FLAS_STAGE_BINARY CASE
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BEDCTL="$HERE/../bed/flas-bed"
STAGE_BIN=$1
CASE=$2
eval "$("$BEDCTL" paths | sed 's/^/P_/')"
BED=$P_bed
LEO=$P_leonardo_addr
KAR=$P_karolina_addr
WORK="$BED/work/stage-$CASE"
LOCAL=$(mktemp -d /tmp/flas-stage-test.XXXXXX)
trap 'rm -rf "$LOCAL"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "PASS: $*"; }
fs() { "$STAGE_BIN" -q -k "$P_known_hosts" -i "$P_user_key" "$@"; }
at() { local addr=$1; shift; fs -t "$P_user@$addr" exec "$*"; }
sha() { sha256sum <"$1" | cut -d' ' -f1; }
fresh_remote() { # a work directory at the site owned by the bed user
    rm -rf "$WORK"
    install -d -m 755 -o "$P_user" -g "$P_user" "$WORK"
}
make_file() { head -c "$2" /dev/urandom >"$1"; }
# The sshd processes serving the bed user's sessions at a site (children of the site's listening sshd).
kill_sessions() { # SITE_DIR
    local sshd
    local child
    sshd=$(awk '$2 == "sshd" {print $1}' "$1/pids" | tail -n 1)
    # each connection is a privileged monitor and its unprivileged child that does the work: kill both
    for child in $(pgrep -P "$sshd"); do
        pkill -KILL -P "$child" 2>/dev/null || true
        kill -KILL "$child" 2>/dev/null || true
    done
}

case_roundtrip() { # upload and download, verified, atomic names, sidecar in sha256sum format
    fresh_remote
    make_file "$LOCAL/model.h5" 40000000
    fs -t "$P_user@$LEO" --sidecar put "$LOCAL/model.h5" "$WORK/round-000001.h5" || fail "upload failed"
    [ "$(sha "$WORK/round-000001.h5")" = "$(sha "$LOCAL/model.h5")" ] || fail "uploaded bytes differ"
    (cd "$WORK" && sha256sum -c --quiet round-000001.h5.sha256) || fail "sidecar is not sha256sum-compatible"
    [ "$(stat -c %U "$WORK/round-000001.h5")" = "$P_user" ] || fail "remote file not owned by the login user"
    grep -q '\.part$\|\.tmp' <<<"$(ls -a "$WORK")" && fail "temporary files left at the site"
    fs -t "$P_user@$KAR" put "$LOCAL/model.h5" "$WORK/at-karolina.h5" || fail "upload to the second site failed"
    fs -t "$P_user@$LEO" --sha256 "$(sha "$LOCAL/model.h5")" --size 40000000 get "$WORK/round-000001.h5" "$LOCAL/back.h5" ||
        fail "download failed"
    cmp -s "$LOCAL/model.h5" "$LOCAL/back.h5" || fail "downloaded bytes differ"
    grep -q '\.part$' <<<"$(ls -a "$LOCAL")" && fail "temporary files left locally"
    pass "verified upload (with sidecar) and download to two sites"
}

case_resume_upload() { # the link is cut mid-upload; the retry resumes from the verified prefix
    local out
    fresh_remote
    make_file "$LOCAL/big.h5" 400000000
    fs -t "$P_user@$LEO" --chunk 8 put "$LOCAL/big.h5" "$WORK/big.h5" >"$LOCAL/first.out" 2>&1 &
    local pid=$!
    # cut once part of the file is there
    for _ in $(seq 200); do
        [ "$(stat -c %s "$WORK/.big.h5.part" 2>/dev/null || echo 0)" -gt 60000000 ] && break
        sleep 0.01
    done
    kill_sessions "$P_leonardo_dir"
    wait $pid && fail "the first upload survived the cut: $(cat "$LOCAL/first.out")"
    grep -Eq "cut at|connection lost|disconnected" "$LOCAL/first.out" ||
        fail "no clear message for the cut: $(cat "$LOCAL/first.out")"
    [ ! -e "$WORK/big.h5" ] || fail "a partial upload got the final name"
    # damage the partial file at the site inside the first chunk that will be kept
    printf 'X' | dd of="$WORK/.big.h5.part" bs=1 seek=20000000 conv=notrunc status=none
    out=$(fs -t "$P_user@$LEO" --chunk 8 put "$LOCAL/big.h5" "$WORK/big.h5") || fail "retry failed"
    echo "$out"
    local resumed
    resumed=$(echo "$out" | sed -n 's/.*resumed at \([0-9]*\).*/\1/p')
    [ "$resumed" -eq $((16 << 20)) ] || fail "expected to resume after the damaged chunk (at 16 MiB), resumed at $resumed"
    [ "$(sha "$WORK/big.h5")" = "$(sha "$LOCAL/big.h5")" ] || fail "resumed upload differs"
    pass "upload cut by killing the SSH session, damaged partial detected, resumed at the verified prefix"
}

case_resume_download() { # the link is cut mid-download; the retry resumes and verifies
    local out
    fresh_remote
    make_file "$WORK/ckpt.h5" 400000000
    chown "$P_user" "$WORK/ckpt.h5"
    local want
    want=$(sha "$WORK/ckpt.h5")
    fs -t "$P_user@$KAR" --chunk 8 --sha256 "$want" get "$WORK/ckpt.h5" "$LOCAL/ckpt.h5" >"$LOCAL/first.out" 2>&1 &
    local pid=$!
    for _ in $(seq 200); do
        [ "$(stat -c %s "$LOCAL/.ckpt.h5.part" 2>/dev/null || echo 0)" -gt 60000000 ] && break
        sleep 0.01
    done
    kill_sessions "$P_karolina_dir"
    wait $pid && fail "the first download survived the cut"
    [ ! -e "$LOCAL/ckpt.h5" ] || fail "a partial download got the final name"
    out=$(fs -t "$P_user@$KAR" --chunk 8 --sha256 "$want" get "$WORK/ckpt.h5" "$LOCAL/ckpt.h5") || fail "retry failed"
    echo "$out"
    grep -q "resumed at 0," <<<"$out" && fail "the retry started from scratch"
    [ "$(sha "$LOCAL/ckpt.h5")" = "$want" ] || fail "resumed download differs"
    pass "download cut by killing the SSH session, resumed from the verified prefix"
}

case_refusals() { # sizes and hashes from the manifest are enforced; nothing gets the final name
    fresh_remote
    make_file "$WORK/x.h5" 1000000
    chown "$P_user" "$WORK/x.h5"
    fs -t "$P_user@$LEO" --size 999 get "$WORK/x.h5" "$LOCAL/x.h5" 2>"$LOCAL/err" && fail "size mismatch accepted"
    grep -q "manifest says 999" "$LOCAL/err" || fail "unclear size message: $(cat "$LOCAL/err")"
    fs -t "$P_user@$LEO" --sha256 "$(printf '0%.0s' $(seq 64))" get "$WORK/x.h5" "$LOCAL/x.h5" 2>"$LOCAL/err" &&
        fail "sha256 mismatch accepted"
    grep -q "was expected: refused" "$LOCAL/err" || fail "unclear sha256 message: $(cat "$LOCAL/err")"
    [ ! -e "$LOCAL/x.h5" ] || fail "a refused download got its final name"
    fs -t "$P_user@$LEO" get "$WORK/" "$LOCAL/y" 2>/dev/null && fail "a directory was downloaded"
    fs -t "$P_user@$LEO" get "$WORK/missing.h5" "$LOCAL/m.h5" 2>/dev/null && fail "a missing file was downloaded"
    pass "size and sha256 mismatches, directories and missing files are refused"
}

case_host_keys() { # unknown and changed host keys are refused; trust-new-host records only new ones
    local kh="$LOCAL/known_hosts"
    : >"$kh"
    "$STAGE_BIN" -q -k "$kh" -i "$P_user_key" -t "$P_user@$LEO" exec true 2>"$LOCAL/err" && fail "unknown host accepted"
    grep -q "is not in $kh" "$LOCAL/err" || fail "unclear unknown-host message: $(cat "$LOCAL/err")"
    ssh-keygen -q -t ed25519 -N '' -f "$LOCAL/impostor"
    echo "$LEO $(cut -d' ' -f1,2 "$LOCAL/impostor.pub")" >"$kh"
    "$STAGE_BIN" -q -k "$kh" -i "$P_user_key" -t "$P_user@$LEO" --trust-new-host exec true 2>"$LOCAL/err" &&
        fail "a changed host key was accepted (even with --trust-new-host)"
    grep -q "has CHANGED" "$LOCAL/err" || fail "unclear changed-key message: $(cat "$LOCAL/err")"
    "$STAGE_BIN" -q -k "$LOCAL/none" -i "$P_user_key" -t "$P_user@$LEO" exec true 2>/dev/null &&
        fail "a missing known_hosts file was accepted"
    : >"$kh"
    "$STAGE_BIN" -q -k "$kh" -i "$P_user_key" -t "$P_user@$LEO" --trust-new-host exec true 2>/dev/null ||
        fail "--trust-new-host did not accept a new host"
    grep -q "ssh-ed25519" "$kh" || fail "--trust-new-host did not record the key"
    "$STAGE_BIN" -q -k "$kh" -i "$P_user_key" -t "$P_user@$LEO" exec true || fail "the recorded key is not accepted"
    pass "unknown and changed host keys refused; trust on first use records new hosts only"
}

case_jump() { # ProxyJump-style: reach karolina through leonardo
    local out log="$P_karolina_dir/log/sshd.log" before after
    # karolina is reachable directly too: its sshd's log tells where each session came from
    before=$(grep -c "Accepted publickey for $P_user from $LEO " "$log" || true)
    out=$(fs -J "$P_user@$LEO" -t "$P_user@$KAR" exec hostname) || fail "jump connection failed"
    [ "$out" = karolina ] || fail "jump reached '$out'"
    fresh_remote
    make_file "$LOCAL/j.h5" 5000000
    fs -J "$P_user@$LEO" -t "$P_user@$KAR" put "$LOCAL/j.h5" "$WORK/j.h5" >/dev/null || fail "upload through the jump host failed"
    [ "$(sha "$WORK/j.h5")" = "$(sha "$LOCAL/j.h5")" ] || fail "jump upload differs"
    after=$(grep -c "Accepted publickey for $P_user from $LEO " "$log" || true)
    [ "$after" -ge $((before + 2)) ] || fail "karolina's sshd saw $((after - before)) sessions from leonardo, expected 2"
    pass "jump host: command and verified upload at karolina through leonardo (karolina's sshd saw both sessions come from $LEO)"
}

case_agent() { # no key file: authentication through ssh-agent
    local sock="$LOCAL/agent.sock" apid out
    ssh-agent -a "$sock" >/dev/null
    apid=$(pgrep -o -f -- "ssh-agent -a $sock")
    # shellcheck disable=SC2064
    trap "kill $apid 2>/dev/null; rm -rf '$LOCAL'" EXIT
    # the bed user's key is not in the agent yet: refused
    env -u SSH_AUTH_SOCK "$STAGE_BIN" -q -k "$P_known_hosts" -t "$P_user@$LEO" exec true 2>"$LOCAL/err" &&
        fail "authenticated with no key file and no agent"
    SSH_AUTH_SOCK=$sock "$STAGE_BIN" -q -k "$P_known_hosts" -t "$P_user@$LEO" exec true 2>"$LOCAL/err" &&
        fail "authenticated with an empty agent"
    grep -q "public-key authentication failed (ssh-agent)" "$LOCAL/err" || fail "unclear refusal: $(cat "$LOCAL/err")"
    SSH_AUTH_SOCK=$sock ssh-add -q "$P_user_key" 2>/dev/null || fail "ssh-add failed"
    out=$(SSH_AUTH_SOCK=$sock "$STAGE_BIN" -q -k "$P_known_hosts" -t "$P_user@$LEO" exec hostname) || fail "agent authentication failed"
    [ "$out" = leonardo ] || fail "agent session reached '$out'"
    fresh_remote
    make_file "$LOCAL/a.h5" 3000000
    SSH_AUTH_SOCK=$sock "$STAGE_BIN" -q -k "$P_known_hosts" -t "$P_user@$LEO" put "$LOCAL/a.h5" "$WORK/a.h5" >/dev/null ||
        fail "upload with agent authentication failed"
    [ "$(sha "$WORK/a.h5")" = "$(sha "$LOCAL/a.h5")" ] || fail "agent upload differs"
    pass "ssh-agent: refused while the agent lacks the key, then command and verified upload with the agent's key"
}

case_exec_limit() { # a command that outlives --limit is killed at the site; flas-stage fails right after
    local start ms rc=0 out
    start=$(date +%s%N)
    fs -t "$P_user@$LEO" --limit 2 exec "sleep 3737" >"$LOCAL/out" 2>"$LOCAL/err" || rc=$?
    ms=$((($(date +%s%N) - start) / 1000000))
    [ $rc != 0 ] || fail "a command past its limit succeeded"
    grep -qx "flas-stage: $P_user@$LEO:22: remote command ran past its limit of 2 s" "$LOCAL/err" ||
        fail "unclear message: $(cat "$LOCAL/err")"
    # the limit counts from the start of the command; connecting and authenticating come on top
    [ $ms -ge 2000 ] && [ $ms -lt 4500 ] || fail "returned after $ms ms with a limit of 2 s"
    # sshd was asked to kill it: nothing of it is left at the site
    for _ in $(seq 30); do pgrep -u "$P_user" -fx 'sleep 3737' >/dev/null || break; sleep 0.1; done
    pgrep -u "$P_user" -fx 'sleep 3737' >/dev/null && fail "the command still runs at the site after its limit"
    # a command that ends within its limit is unaffected: its output and exit status come back
    out=$(fs -t "$P_user@$LEO" --limit 5 exec "sleep 1; hostname") || fail "a command within its limit failed"
    [ "$out" = leonardo ] || fail "a command within its limit printed '$out'"
    rc=0
    fs -t "$P_user@$LEO" --limit 5 exec "exit 3" || rc=$?
    [ $rc = 3 ] || fail "a command within its limit exited $rc, not 3"
    pass "a remote command past --limit 2 was killed at the site and reported in one line after $ms ms"
}

"case_${CASE//-/_}"
