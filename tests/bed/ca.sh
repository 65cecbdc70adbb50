#!/usr/bin/env bash
# Test certificate authorities for SSH (sourced, not run): a CA key, user and host certificates signed
# by it, and the known_hosts line that trusts it. OpenSSH's ssh-keygen does the work; the functions only
# fix the arguments. Used by tests/stage/cert-tests.sh; the bed may reuse them.
#   source tests/bed/ca.sh
#   flas_ca_new DIR/user_ca [ed25519|rsa|ecdsa]      -> DIR/user_ca (private), DIR/user_ca.pub
#   flas_ca_sign_user CA KEY.pub PRINCIPALS VALIDITY  -> KEY-cert.pub (user certificate)
#   flas_ca_sign_host CA KEY.pub NAMES VALIDITY       -> KEY-cert.pub (host certificate)
#   flas_ca_known_hosts CA PATTERN                    -> prints "@cert-authority PATTERN <CA key>"
# PRINCIPALS/NAMES: comma-separated; VALIDITY: ssh-keygen -V syntax (-5m:+12h, 20200101:20200102, ...).

flas_ca_new() { # FILE [TYPE]
    local type=${2:-ed25519}
    rm -f "$1" "$1.pub"
    case $type in
    rsa) ssh-keygen -q -t rsa -b 3072 -N '' -C "flas test CA" -f "$1" ;;
    ecdsa) ssh-keygen -q -t ecdsa -b 384 -N '' -C "flas test CA" -f "$1" ;;
    *) ssh-keygen -q -t "$type" -N '' -C "flas test CA" -f "$1" ;;
    esac
}

flas_ca_sign_user() { # CA KEY.pub PRINCIPALS VALIDITY
    ssh-keygen -q -s "$1" -I "flas-test-user-$3" -n "$3" -V "$4" "$2"
}

flas_ca_sign_host() { # CA KEY.pub NAMES VALIDITY
    ssh-keygen -q -s "$1" -h -I "flas-test-host-$3" -n "$3" -V "$4" "$2"
}

flas_ca_known_hosts() { # CA PATTERN
    echo "@cert-authority $2 $(cut -d' ' -f1,2 "$1.pub")"
}
