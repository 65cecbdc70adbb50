#!/usr/bin/env bash
# Tests proving the test bed is real. Each case exits non-zero with a reason when it fails; none
# skips: a missing daemon, namespace or tool is a failure.
# usage: bed-tests.sh CASE [ARGS]
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BEDCTL="$HERE/flas-bed"
BED=${FLAS_BED_DIR:-/var/tmp/flas-bed}
BED_USER=${FLAS_BED_USER:-flastest}
PY=/usr/bin/python3
eval "$("$BEDCTL" paths | sed 's/^/P_/')"

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "PASS: $*"; }
# A per-test directory the test user owns, so jobs can write there and root-owned paths stay apart.
workdir() {
    local d="$BED/work/$1"
    rm -rf "$d"
    install -d -m 755 -o "$BED_USER" -g "$BED_USER" "$d"
    echo "$d"
}
stage_program() { # SRC DIR: copy a test program where the test user can run it
    install -m 755 "$1" "$2/$(basename "$1")"
    echo "$2/$(basename "$1")"
}
as_user() { "$BEDCTL" as-user "$@"; }
# Under ASan builds, Open MPI's and PMIx's own allocations (freed by nobody at exit, some from unloaded
# MCA components LeakSanitizer cannot even name) would fail every MPI program: leak checking of FLaS
# code is done by the unit tests; MPI programs keep ASan's memory-error checks only.
as_user_mpi() { local c=$1; shift; "$BEDCTL" as-user "$c" env ASAN_OPTIONS=detect_leaks=0 "$@"; }
nodes_of() { local v="P_${1}_nodes"; echo "${!v}" | tr , ' '; }
conf_of() { local v="P_${1}_conf"; echo "${!v}"; }
clusters_of() { if [ "$1" = all ]; then echo "single leonardo karolina"; else echo "$1"; fi; }

case_srun_hostname() { # CLUSTER: two tasks on a node, as the test user, with the node's hostname
    local c=$1 out want
    out=$(as_user "$c" srun -N1 -n2 hostname) || fail "srun -N1 -n2 hostname on $c exited $?"
    if [ "$c" = single ]; then want=$(hostname -s); else want=$(head -n1 <<<"$out"); fi
    [ "$c" = single ] || [[ " $(nodes_of "$c") " == *" $want "* ]] || fail "$c: a task ran on '$want', not a node of $c"
    [ "$(echo "$out" | grep -c "^$want\$")" = 2 ] || fail "$c: expected 2 lines '$want', got: $out"
    pass "$c: srun -n2 hostname -> $(echo "$out" | tr '\n' ' ')"
}

case_sbatch_exit() { # CLUSTER: sbatch --wait returns the job's exit code; the job runs unprivileged
    local c=$1 d rc
    d=$(workdir "sbatch-$c")
    set +e
    as_user "$c" sbatch --wait --chdir="$d" -o "$d/out" --wrap 'id -un; touch /root/flas-bed-probe 2>/dev/null && exit 99; exit 7' >/dev/null
    rc=$?
    set -e
    [ "$rc" = 7 ] || fail "$c: sbatch --wait returned $rc, expected the job's exit code 7 (99: job ran as root)"
    [ "$(cat "$d/out")" = "$BED_USER" ] || fail "$c: job ran as '$(cat "$d/out")', expected $BED_USER"
    [ "$(stat -c %U "$d/out")" = "$BED_USER" ] || fail "$c: job output not owned by $BED_USER"
    pass "$c: sbatch --wait propagated exit code 7 from a job running as $BED_USER"
}

case_mpi() { # CLUSTER PROGRAM: 2 ranks under srun --mpi=pmix
    local c=$1 d prog out
    d=$(workdir "mpi-$c")
    prog=$(stage_program "$2" "$d")
    out=$(as_user_mpi "$c" srun --mpi=pmix -n2 "$prog" 2) || fail "$c: srun --mpi=pmix -n2 exited $?: $out"
    echo "$out"
    grep -q "^MPI OK" <<<"$out" || fail "$c: MPI program did not report success"
    pass "$c: 2-rank MPI ring + allreduce under srun --mpi=pmix"
}

case_phdf5() { # CLUSTER PROGRAM: 2-rank collective HDF5 write under srun, read back by h5py
    local c=$1 d prog
    d=$(workdir "phdf5-$c")
    prog=$(stage_program "$2" "$d")
    as_user_mpi "$c" srun --mpi=pmix -n2 --chdir="$d" "$prog" "$d/x.h5" 3 5 || fail "$c: parallel HDF5 write failed"
    [ "$(stat -c %U "$d/x.h5")" = "$BED_USER" ] || fail "$c: HDF5 file not written by $BED_USER"
    $PY "$HERE/check_phdf5.py" "$d/x.h5" 2 3 5 || fail "$c: h5py read-back mismatch"
    pass "$c: 2-rank parallel HDF5 file read back by h5py"
}

case_ssh_sftp() { # SITE: an SSH command and an SFTP upload, with strict host-key checking
    local site=$1 out d src sum_local sum_remote addr_var="P_${1}_addr"
    local addr=${!addr_var}
    out=$("$BEDCTL" ssh "$site" 'hostname; id -un; echo "$SLURM_CONF"; sinfo -h -o %P') ||
        fail "$site: ssh command failed"
    [ "$(echo "$out" | sed -n 1p)" = "$site" ] || fail "$site: remote hostname is '$(echo "$out" | sed -n 1p)'"
    [ "$(echo "$out" | sed -n 2p)" = "$BED_USER" ] || fail "$site: remote user is not $BED_USER"
    [[ "$(sed -n 4p <<<"$out")" == *debug* ]] || fail "$site: sinfo over ssh did not reach the site's slurmctld"
    d=$(workdir "sftp-$site")
    src="$d/payload"
    head -c 3000000 /dev/urandom >"$src"
    chown "$BED_USER" "$src"
    sftp -q -b - -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$P_known_hosts" \
        -o GlobalKnownHostsFile=/dev/null -i "$P_user_key" "$BED_USER@$addr" >/dev/null <<EOF || fail "$site: sftp upload failed"
put $src $d/uploaded
EOF
    sum_local=$(sha256sum <"$src" | cut -d' ' -f1)
    sum_remote=$("$BEDCTL" ssh "$site" "sha256sum < $d/uploaded" | cut -d' ' -f1)
    [ "$sum_local" = "$sum_remote" ] || fail "$site: uploaded file differs ($sum_local vs $sum_remote)"
    pass "$site: ssh command (hostname $site, user $BED_USER) and a verified 3 MB SFTP upload"
}

case_host_key_strict() { # SITE: a wrong known_hosts entry makes ssh refuse the site
    local site=$1 d addr_var="P_${1}_addr"
    local addr=${!addr_var}
    d=$(workdir "hostkey-$site")
    ssh-keygen -q -t ed25519 -N '' -f "$d/impostor"
    echo "$addr $(cut -d' ' -f1,2 "$d/impostor.pub")" >"$d/known_hosts"
    if ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$d/known_hosts" \
        -o GlobalKnownHostsFile=/dev/null -i "$P_user_key" -l "$BED_USER" "$addr" true 2>"$d/err"; then
        fail "$site: ssh accepted a host key that is not in known_hosts"
    fi
    grep -q "HOST IDENTIFICATION HAS CHANGED\|Host key verification failed" "$d/err" || fail "$site: unexpected ssh error: $(cat "$d/err")"
    pass "$site: ssh refuses a site whose host key differs from known_hosts"
}

case_munge_isolation() { # a credential of one site is rejected by the other site
    local leo_sock="$P_leonardo_dir/run/munge.socket" kar_sock="$P_karolina_dir/run/munge.socket" d
    munge -S "$leo_sock" -n | unmunge -S "$leo_sock" >/dev/null || fail "leonardo cannot decode its own credential"
    if munge -S "$leo_sock" -n | unmunge -S "$kar_sock" >/dev/null 2>&1; then
        fail "karolina's munged accepted a credential made with leonardo's key"
    fi
    # The same at the Slurm level: leonardo's client configuration with karolina's munge socket.
    d=$(workdir munge-isolation)
    sed "s|^AuthInfo=.*|AuthInfo=socket=$kar_sock|" "$P_leonardo_conf" >"$d/slurm.conf"
    SLURM_CONF=$P_leonardo_conf sinfo -h >/dev/null || fail "leonardo's controller does not answer its own clients"
    if SLURM_CONF=$d/slurm.conf timeout 60 sinfo -h >/dev/null 2>&1; then
        fail "leonardo's slurmctld accepted a request signed with karolina's munge key"
    fi
    [ "$(cmp -s "$P_leonardo_dir/munge/munge.key" "$P_karolina_dir/munge/munge.key" && echo same)" != same ] ||
        fail "the sites share a munge key"
    pass "each site's munge key is its own: cross-site credentials are rejected (munge and slurmctld)"
}

case_namespaces() { # each site in its own netns, own hostname, no default route, reachable from root
    local site out addr_var
    for site in leonardo karolina; do
        [ -e "/run/netns/flas-$site" ] || fail "no network namespace flas-$site"
        [ -z "$(ip -n "flas-$site" route show default)" ] || fail "flas-$site has a default route"
        addr_var="P_${site}_addr"
        ping -c1 -W2 "${!addr_var}" >/dev/null 2>&1 || bash -c "exec 3<>/dev/tcp/${!addr_var}/22" ||
            fail "$site (${!addr_var}) unreachable from the root namespace"
        out=$(as_user "$site" srun -n1 cat /proc/self/net/dev) || fail "srun at $site failed"
        grep -q "eth0" <<<"$out" || fail "$site: job does not run in the site's namespace"
        [ "$(stat -L -c %i /proc/self/ns/net)" != "$(stat -L -c %i "/run/netns/flas-$site")" ] ||
            fail "flas-$site is the root network namespace"
    done
    pass "two sites, each in its own network namespace without a default route, reachable from root"
}

# ---------------------------------------------------------------- two nodes per site
job_hosts() { # SITE NODELIST: the job's node list as Slurm expands it, one per line, sorted
    SLURM_CONF=$(conf_of "$1") scontrol show hostnames "$2" | sort
}

case_multinode() { # SITE MPI_PROGRAM PHDF5_PROGRAM: jobs and MPI steps across the site's two nodes
    local site=$1 d out nl want prog node inodes=()
    want=$(nodes_of "$site" | tr ' ' '\n' | sort)
    [ "$(echo "$want" | wc -l)" = 2 ] || fail "$site: the bed lists nodes '$want', expected two"
    for node in $want; do
        [ -e "/run/netns/flas-$node" ] || fail "$site: node $node has no network namespace of its own"
        [ -z "$(ip -n "flas-$node" route show default)" ] || fail "$site: node $node has a default route"
        inodes+=("$(stat -L -c %i "/run/netns/flas-$node")")
    done
    [ "${inodes[0]}" != "${inodes[1]}" ] || fail "$site: both nodes share a network namespace"
    # one task per node, each reporting its hostname
    out=$(as_user "$site" srun -N2 -n2 sh -c 'echo "$(hostname) $SLURM_JOB_NODELIST"') || fail "$site: srun -N2 failed"
    nl=$(echo "$out" | awk 'NR == 1 {print $2}')
    [ "$(echo "$out" | awk '{print $1}' | sort)" = "$(job_hosts "$site" "$nl")" ] ||
        fail "$site: the tasks ran on '$(echo "$out" | awk '{print $1}' | tr '\n' ' ')', the job's node list is $nl"
    [ "$(job_hosts "$site" "$nl")" = "$want" ] || fail "$site: the job got nodes $nl, expected both of the site's"
    # node-local /tmp: a file task 0 makes there is not seen by the task on the other node
    out=$(as_user "$site" srun -N2 -n2 sh -c 'f=/tmp/flas-bed-probe-$SLURM_JOB_ID; [ $SLURM_PROCID = 0 ] && touch $f
        sleep 1; [ -e $f ] && echo "$(hostname) sees"; [ $SLURM_PROCID = 0 ] && rm -f $f; true') ||
        fail "$site: node-local /tmp probe failed"
    [ "$(echo "$out" | grep -c sees)" = 1 ] || fail "$site: /tmp is not node-local: $out"
    d=$(workdir "multinode-$site")
    prog=$(stage_program "$2" "$d")
    out=$(as_user_mpi "$site" srun --mpi=pmix -N2 -n4 "$prog" 4) || fail "$site: 4 ranks on 2 nodes exited $?: $out"
    grep -q "^MPI OK" <<<"$out" || fail "$site: MPI across the nodes did not report success: $out"
    [ "$(grep -o ' on [a-z0-9]*$' <<<"$out" | sort -u | wc -l)" = 2 ] || fail "$site: the ranks did not run on two nodes: $out"
    prog=$(stage_program "$3" "$d")
    as_user_mpi "$site" srun --mpi=pmix -N2 -n4 --chdir="$d" "$prog" "$d/x.h5" 3 5 || fail "$site: parallel HDF5 write from two nodes failed"
    $PY "$HERE/check_phdf5.py" "$d/x.h5" 4 3 5 || fail "$site: h5py read-back mismatch"
    pass "$site: tasks on both nodes ($(echo "$want" | paste -sd' ')), node-local /tmp, 4 MPI ranks across them, one parallel HDF5 file written from both"
}

# flas-train as a batch job, data parallel across the site's two nodes (tp 2 inside each), against the
# same world size on one node: the same losses within 1e-5, and the dp ranks on two different nodes.
case_multinode_train() { # SITE (fixture coord_data: the site's shards and the round-0 model)
    local site=$1 d data model n tag
    d=$(workdir "multinode-train-$site")
    data="$P_bed/sites/$site/data"
    model="$P_bed/coord/global0.h5"
    [ -f "$model" ] || fail "no round-0 model $model (the coord_data fixture)"
    printf '%s\n' '#!/bin/bash' '# the job'"'"'s nodes as Slurm expands them, then the ranks' \
        'scontrol show hostnames "$SLURM_JOB_NODELIST" >"nodes-$SLURM_JOB_ID"' \
        'exec srun --mpi=pmix flas-train "$@"' >"$d/train.sbatch"
    chmod 755 "$d/train.sbatch"
    for n in 2 1; do
        tag="n$n"
        install -d -m 755 -o "$BED_USER" "$d/$tag"
        as_user_mpi "$site" env FLAS_SITE="$site" sbatch --wait --parsable -N"$n" -n4 --overcommit --chdir="$d/$tag" \
            -o "$d/$tag/out" "$d/train.sbatch" --global "$model" --data "$data/train" --steps 8 --batch 2 --seq 64 \
            --tp 2 --threads 1 --log-every 1 --output "$d/$tag/local.h5" --output-dir "$d/$tag" >"$d/$tag/job" ||
            fail "$site: flas-train on $n node(s) failed: $(tail -5 "$d/$tag/out")"
    done
    $PY "$HERE/check_multinode.py" "$d" || fail "$site: two nodes and one node disagree (above)"
    pass "$site: flas-train dp 2 x tp 2 across both nodes = the same world size on one node (losses and weights within 1e-5)"
}

case="${1:?usage: bed-tests.sh CASE [ARGS]}"
shift
"case_${case//-/_}" "$@"
