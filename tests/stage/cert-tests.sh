#!/usr/bin/env bash
# OpenSSH certificates against a real sshd of our own (no test bed): a user CA and a host CA made with
# ssh-keygen (tests/bed/ca.sh), sshd on 127.0.0.1 at a free port trusting only the user CA
# (TrustedUserCAKeys, AuthorizedKeysFile none) and presenting a host certificate.
# usage: cert-tests.sh FLAS_STAGE FLAS_COORDINATOR CASE   (as root: sshd must run as root)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../bed/ca.sh
source "$HERE/../bed/ca.sh"
STAGE_BIN=$1
COORD_BIN=$2
CASE=$3
T=$(mktemp -d /tmp/flas-cert-test.XXXXXX)
chmod 755 "$T"
SSHD_PID=
MADE_USER=

fail() { echo "FAIL: $*" >&2; [ -f "$T/sshd.log" ] && tail -n 5 "$T/sshd.log" >&2; exit 1; }
pass() { echo "PASS: $*"; }
cleanup() {
    [ -n "$SSHD_PID" ] && kill "$SSHD_PID" 2>/dev/null && wait "$SSHD_PID" 2>/dev/null || true
    [ -n "$MADE_USER" ] && userdel "$MADE_USER" 2>/dev/null || true
    rm -rf "$T"
}
trap cleanup EXIT
[ "$(id -u)" = 0 ] || { echo "SKIP: sshd must run as root"; exit 77; }

# The login user: the bed's unprivileged user if there is one, else a throwaway one.
if id flastest >/dev/null 2>&1; then
    U=flastest
else
    U=flascert$$
    useradd -M -d "$T" -s /bin/bash "$U"
    MADE_USER=$U
fi

free_port() {
    local p
    for _ in $(seq 50); do
        p=$((20001 + RANDOM % 40000))
        ss -Hltn "sport = :$p" | grep -q . || { echo "$p"; return; }
    done
    fail "no free port"
}

# CAs, the host key with its certificate, and sshd.
setup() {
    flas_ca_new "$T/user_ca"
    flas_ca_new "$T/host_ca"
    flas_ca_new "$T/other_ca"
    ssh-keygen -q -t ed25519 -N '' -f "$T/hostkey"
    flas_ca_sign_host "$T/host_ca" "$T/hostkey.pub" 127.0.0.1,localhost -5m:+1h
    PORT=$(free_port)
    cat >"$T/sshd_config" <<CONF
ListenAddress 127.0.0.1
Port $PORT
HostKey $T/hostkey
HostCertificate $T/hostkey-cert.pub
TrustedUserCAKeys $T/user_ca.pub
AuthorizedKeysFile none
AuthorizedPrincipalsFile none
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
PidFile none
StrictModes no
Subsystem sftp internal-sftp
LogLevel VERBOSE
CONF
    /usr/sbin/sshd -t -f "$T/sshd_config" || fail "sshd refuses its configuration"
    /usr/sbin/sshd -D -f "$T/sshd_config" -E "$T/sshd.log" &
    SSHD_PID=$!
    for _ in $(seq 100); do
        ss -Hltn "sport = :$PORT" | grep -q . && break
        sleep 0.05
    done
    ss -Hltn "sport = :$PORT" | grep -q . || fail "sshd did not start"
    # known_hosts files: the host CA, another CA, the plain host key (pinned)
    flas_ca_known_hosts "$T/host_ca" "[127.0.0.1]:$PORT" >"$T/kh_ca"
    flas_ca_known_hosts "$T/other_ca" "[127.0.0.1]:$PORT" >"$T/kh_other_ca"
    echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$T/hostkey.pub")" >"$T/kh_plain"
}

user_key() { # NAME PRINCIPALS VALIDITY: a key and its certificate by the user CA
    ssh-keygen -q -t ed25519 -N '' -f "$T/$1"
    flas_ca_sign_user "$T/user_ca" "$T/$1.pub" "$2" "$3"
}

fs() { # KNOWN_HOSTS KEY [ARGS...] exec CMD
    local kh=$1 key=$2
    shift 2
    "$STAGE_BIN" -q -t "$U@127.0.0.1:$PORT" -k "$T/$kh" -i "$T/$key" "$@"
}

case_user_cert() { # the key is nowhere in authorized_keys: only the CA's certificate lets it in
    user_key id "$U" -5m:+12h
    local out
    out=$(fs kh_ca id exec 'id -un') || fail "login with a valid user certificate failed"
    [ "$out" = "$U" ] || fail "ran as '$out', not $U"
    # the default: IDENTITY-cert.pub is used without --certificate; with the certificate moved away the
    # bare key is refused by sshd (so the certificate is what authenticated)
    mv "$T/id-cert.pub" "$T/moved-cert.pub"
    fs kh_ca id exec true 2>"$T/err" && fail "the bare key (no authorized_keys) was accepted"
    grep -q "public-key authentication failed" "$T/err" || fail "unclear refusal: $(cat "$T/err")"
    out=$(fs kh_ca id --certificate "$T/moved-cert.pub" exec 'echo ok') || fail "--certificate FILE was not used"
    [ "$out" = ok ] || fail "unexpected output '$out'"
    pass "user certificate authenticates (sshd trusts only the CA); IDENTITY-cert.pub by default, --certificate"
}

case_user_expired() {
    user_key id "$U" 20200101:20200102
    fs kh_ca id exec true 2>"$T/err" && fail "an expired certificate was used"
    grep -q "certificate $T/id-cert.pub expired at 2020-01-02T" "$T/err" || fail "unclear message: $(cat "$T/err")"
    grep -q "Accepted\|Failed publickey" "$T/sshd.log" && fail "the expired certificate was offered to sshd"
    pass "expired user certificate: refused before authenticating, with its end time ($(cat "$T/err"))"
}

case_user_principal() {
    user_key id someoneelse -5m:+1h
    fs kh_ca id exec true 2>"$T/err" && fail "a certificate for another principal was used"
    grep -q "is for someoneelse, not for '$U'" "$T/err" || fail "unclear message: $(cat "$T/err")"
    # sshd itself refuses it as well (the check above is not what keeps it out)
    grep -q "Failed publickey\|Accepted" "$T/sshd.log" && fail "offered to sshd"
    pass "certificate for another principal refused ($(cat "$T/err"))"
}

case_host_unknown_ca() {
    user_key id "$U" -5m:+1h
    fs kh_other_ca id exec true 2>"$T/err" && fail "a host certificate of an unknown CA was accepted"
    grep -q "signed by CA SHA256:.*which no @cert-authority line in $T/kh_other_ca trusts" "$T/err" ||
        fail "unclear message: $(cat "$T/err")"
    grep -q "Accepted" "$T/sshd.log" && fail "authenticated to a host that was not verified"
    pass "host certificate of an unknown CA refused ($(cat "$T/err"))"
}

case_host_ca() {
    user_key id "$U" -5m:+1h
    [ "$(fs kh_ca id exec 'echo ok')" = ok ] || fail "host certificate of the trusted CA refused"
    # a CA line for another host does not vouch for this one
    flas_ca_known_hosts "$T/host_ca" "otherhost.example,[127.0.0.2]:$PORT" >"$T/kh_wronghost"
    fs kh_wronghost id exec true 2>"$T/err" && fail "a CA line for other hosts was used"
    grep -q "is not in $T/kh_wronghost" "$T/err" || fail "unclear message: $(cat "$T/err")"
    # @revoked: the CA, then the host key itself
    { cat "$T/kh_ca"; echo "@revoked * $(cut -d' ' -f1,2 "$T/host_ca.pub")"; } >"$T/kh_revoked_ca"
    fs kh_revoked_ca id exec true 2>"$T/err" && fail "a revoked CA was trusted"
    grep -q "revokes" "$T/err" || fail "unclear message: $(cat "$T/err")"
    { cat "$T/kh_plain"; echo "@revoked * $(cut -d' ' -f1,2 "$T/hostkey.pub")"; } >"$T/kh_revoked_key"
    fs kh_revoked_key id exec true 2>"$T/err" && fail "a revoked host key was accepted"
    grep -q "is revoked in" "$T/err" || fail "unclear message: $(cat "$T/err")"
    # a malformed marker line is an error, not skipped
    { cat "$T/kh_ca"; echo "@cert-authority [127.0.0.1]:$PORT ssh-ed25519 not-base64"; } >"$T/kh_bad"
    fs kh_bad id exec true 2>"$T/err" && fail "a malformed @cert-authority line was ignored"
    grep -q "kh_bad:2:" "$T/err" || fail "unclear message: $(cat "$T/err")"
    pass "@cert-authority accepted for its host only; @revoked CA and host key refused; bad marker lines refused"
}

case_host_plain() {
    user_key id "$U" -5m:+1h
    [ "$(fs kh_plain id exec 'echo ok')" = ok ] || fail "the pinned plain host key was refused"
    pass "plain known_hosts host key still accepted"
}

case_coord_expired() { # stops before the round stages anything
    user_key leo "$U" 20200101:20200102
    install -d -o "$U" "$T/staging"
    head -c 4096 /dev/urandom >"$T/global0.h5"
    cat >"$T/coordinator.conf" <<CONF
Federation=certs WorkDir=$T/work InitialGlobal=$T/global0.h5 KnownHosts=$T/kh_ca Rounds=1 CommandTimeout=5
Site=leonardo Host=127.0.0.1 Port=$PORT User=$U Identity=$T/leo StagingRoot=$T/staging Script=/none.sbatch
CONF
    local rc=0
    "$COORD_BIN" run "$T/coordinator.conf" >"$T/out" 2>&1 || rc=$?
    [ "$rc" = 3 ] || fail "exit status $rc, not 3: $(cat "$T/out")"
    grep -q "certificate for site leonardo ($T/leo-cert.pub) expired at 2020-01-02T.*; renew it (e.g. log in again through the site's 2FA) and run flas-coordinator again" "$T/out" ||
        fail "unclear message: $(cat "$T/out")"
    [ -z "$(find "$T/staging" -mindepth 1)" ] || fail "something was staged: $(find "$T/staging" -mindepth 1)"
    grep -q "Connection from" "$T/sshd.log" && fail "the coordinator connected to the site"
    [ -f "$T/work/journal" ] || fail "no journal kept"
    "$COORD_BIN" status "$T/coordinator.conf" | grep -q "round 0 of 1, phase staging" || fail "journal not at round 0 staging"
    # a certificate that will not outlast one command (CommandTimeout=5) is refused the same way
    flas_ca_sign_user "$T/user_ca" "$T/leo.pub" "$U" -5m:+3s
    rc=0
    "$COORD_BIN" run "$T/coordinator.conf" >"$T/out" 2>&1 || rc=$?
    [ "$rc" = 3 ] && grep -q "less than the 5 s it must have left" "$T/out" || fail "short-lived certificate: rc $rc $(cat "$T/out")"
    # one for another user, and Certificate= pointing at garbage
    flas_ca_sign_user "$T/user_ca" "$T/leo.pub" nobody-else -5m:+1h
    rc=0
    "$COORD_BIN" run "$T/coordinator.conf" >"$T/out" 2>&1 || rc=$?
    [ "$rc" = 3 ] && grep -q "is for nobody-else, not for '$U'" "$T/out" || fail "wrong principal: rc $rc $(cat "$T/out")"
    echo "ssh-ed25519-cert-v01@openssh.com AAAAgarbage" >"$T/garbage-cert.pub"
    sed -i "s|Identity=$T/leo|Identity=$T/leo Certificate=$T/garbage-cert.pub|" "$T/coordinator.conf"
    rc=0
    "$COORD_BIN" run "$T/coordinator.conf" >"$T/out" 2>&1 || rc=$?
    [ "$rc" = 3 ] && grep -q "site leonardo: certificate $T/garbage-cert.pub: " "$T/out" || fail "garbage: rc $rc $(cat "$T/out")"
    [ -z "$(find "$T/staging" -mindepth 1)" ] || fail "something was staged"
    pass "coordinator with an expired/short/foreign/garbage certificate stops with exit 3 before staging, journal kept"
}

setup
"case_${CASE//-/_}"
