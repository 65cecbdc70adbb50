# Functions behind flas-bed. Sourced; expects BED, BED_USER, SUBNET, BRIDGE, SITES, HERE.
# shellcheck shell=bash

die() { echo "flas-bed: $*" >&2; exit 1; }
say() { echo "flas-bed: $*"; }
need_root() { [ "$(id -u)" = 0 ] || die "must run as root (it starts daemons and creates namespaces)"; }

site_index() { # leonardo -> 1, karolina -> 2
    local i
    for i in "${!SITES[@]}"; do [ "${SITES[$i]}" = "$1" ] && { echo $((i + 1)); return; }; done
    die "unknown site '$1' (sites: ${SITES[*]})"
}
site_addr() { echo "$SUBNET.$((10 + $(site_index "$1")))"; }
netns_of() { echo "flas-$1"; }
# Each site has two compute nodes. The first carries the site's name and also hosts its controller,
# munged and sshd (the login node, as on a small cluster); the second ("leonardo2") runs only a slurmd.
# Each node is a network namespace of its own (site i: .1i and .2i) and sees the site's file system,
# except its own /tmp (node-local, as on a real cluster).
site_nodes() { echo "$1 ${1}2"; }
node_site() { echo "${1%2}"; }
node_addr() { # NODE
    local site
    site=$(node_site "$1")
    if [ "$1" = "$site" ]; then site_addr "$site"; else echo "$SUBNET.$((20 + $(site_index "$site")))"; fi
}
node_tmp() { echo "$(cluster_dir "$(node_site "$1")")/nodes/$1/tmp"; }
cluster_dir() { if [ "$1" = single ]; then echo "$BED/single"; else echo "$BED/sites/$1"; fi; }

# ---------------------------------------------------------------- process bookkeeping
# Each daemon the bed starts gets a line "PID NAME" in its cluster's pids file.
pid_alive() { # a zombie is not alive
    local st
    st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
record_pid() { echo "$2 $3" >>"$1/pids"; }
stop_pid() { # PID NAME: TERM, wait up to 10 s, then KILL
    local pid=$1 name=$2 i
    pid_alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 100); do pid_alive "$pid" || return 0; sleep 0.1; done
    say "$name ($pid) ignored SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 50); do pid_alive "$pid" || return 0; sleep 0.1; done
    die "could not stop $name ($pid)"
}
stop_recorded() { # DIR: stop what DIR/pids lists, newest first
    local dir=$1 pid name
    [ -f "$dir/pids" ] || return 0
    while read -r pid name; do stop_pid "$pid" "$name"; done < <(tac "$dir/pids")
    rm -f "$dir/pids"
}
daemon_state() { # DIR NAME -> "up PID" or "down"
    local pid name
    if [ -f "$1/pids" ]; then
        while read -r pid name; do
            [ "$name" = "$2" ] || continue
            pid_alive "$pid" && { echo "up $pid"; return; }
        done <"$1/pids"
    fi
    echo down
}
# Launch a foreground daemon in the background, detached from our session, and record its PID.
# The wrappers (setsid, nsenter, unshare, setpriv) all exec, so $! is the daemon itself.
# Daemons start in / (a daemon's working directory is a path it returns to: slurmstepd does, and the
# directory the bed was started from, under /tmp say, does not exist on a node whose /tmp is its own).
launch() { # DIR NAME LOG CMD...
    local dir=$1 name=$2 log=$3 here=$PWD
    shift 3
    cd /
    setsid "$@" </dev/null >>"$log" 2>&1 &
    record_pid "$dir" "$!" "$name"
    cd "$here"
}

# ---------------------------------------------------------------- the test user
ensure_user() {
    if ! id "$BED_USER" >/dev/null 2>&1; then
        useradd --create-home --shell /bin/bash --comment "FLaS test bed user" "$BED_USER"
        say "created user $BED_USER"
    fi
    # No password at all, but not "locked" ('!'): sshd without PAM refuses locked accounts even for keys.
    [ "$(getent shadow "$BED_USER" | cut -d: -f2)" = '*' ] || usermod -p '*' "$BED_USER"
    local home
    home=$(getent passwd "$BED_USER" | cut -d: -f6)
    if [ ! -f "$home/.ssh/id_ed25519" ]; then
        install -d -m 700 -o "$BED_USER" -g "$BED_USER" "$home/.ssh"
        runuser -u "$BED_USER" -- ssh-keygen -q -t ed25519 -N '' -C "$BED_USER@flas-bed" -f "$home/.ssh/id_ed25519"
        install -m 600 -o "$BED_USER" -g "$BED_USER" "$home/.ssh/id_ed25519.pub" "$home/.ssh/authorized_keys"
    fi
    install -d -m 755 "$BED"
    install -d -m 755 -o "$BED_USER" -g "$BED_USER" "$BED/work"
}

# ---------------------------------------------------------------- install
bed_install() { # BUILD_DIR: install FLaS into $BED/install so the test user can read it
    local build=${1:?usage: flas-bed install BUILD_DIR}
    [ -f "$build/CMakeCache.txt" ] || die "$build is not a CMake build directory"
    install -d -m 755 "$BED"
    rm -rf "$BED/install.new"
    DESTDIR="$BED/install.new" cmake --install "$build" >"$BED/install.log" 2>&1 ||
        { cat "$BED/install.log" >&2; die "cmake --install failed"; }
    chmod -R a+rX "$BED/install.new"
    rm -rf "$BED/install.old"
    [ -d "$BED/install" ] && mv "$BED/install" "$BED/install.old"
    mv "$BED/install.new" "$BED/install"
    rm -rf "$BED/install.old"
    say "installed $build into $BED/install"
}
installed_plugin() {
    local so
    so=$(find "$BED/install" -name flas.so -type f -print -quit 2>/dev/null)
    [ -n "$so" ] || die "no flas.so under $BED/install: run 'flas-bed install BUILD_DIR' first"
    echo "$so"
}
installed_bin() { echo "$BED/install/usr/local/bin"; }
installed_examples() { echo "$BED/install/usr/local/share/doc/FLaS/slurm-examples"; }

# ---------------------------------------------------------------- munge
make_munge() { # DIR: a private munge key and directories owned by the munge user
    local d=$1
    install -d -m 700 -o munge -g munge "$d/munge"
    install -d -m 755 -o munge -g munge "$d/run"
    if [ ! -f "$d/munge/munge.key" ]; then
        mungekey --create --keyfile="$d/munge/munge.key"
        chown munge:munge "$d/munge/munge.key"
        chmod 400 "$d/munge/munge.key"
    fi
}
munged_cmd() { # DIR
    local d=$1
    echo setpriv --reuid=munge --regid=munge --init-groups -- /usr/sbin/munged -F \
        --socket="$d/run/munge.socket" --key-file="$d/munge/munge.key" --pid-file="$d/run/munged.pid" \
        --log-file="$d/munge/munged.log" --seed-file="$d/munge/munged.seed"
}
wait_for() { # SECONDS WHAT CMD...: poll CMD until it succeeds
    local secs=$1 what=$2 i
    shift 2
    for i in $(seq $((secs * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    die "timed out after ${secs}s waiting for $what"
}

# ---------------------------------------------------------------- slurm
write_slurm_conf() { # DIR CLUSTER HOST ADDR SITE
    local d=$1 cluster=$2 host=$3 addr=$4 site=$5 cpus mem
    cpus=$(nproc)
    mem=$(($(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) / 3))
    install -d -m 755 "$d/etc" "$d/log" "$d/state" "$d/spool"
    # Each node has a /tmp of its own: sites number their jobs from 1 alike, and slurmstepd's PMIx plugin
    # makes <TmpFS>/spmix_appdir_<uid>_<job>.<step> on every node of a step: on a shared /tmp, job 7 at
    # one site and job 7 at the other (or the two nodes of one job) collide and a step fails to launch.
    # The single cluster has its own TmpFS; a site node's /tmp is its nodes/NODE/tmp bound over /tmp.
    install -d -m 1777 "$d/tmp"
    local nodes node tmpfs=/tmp parts preempt="" slurm_user=root
    # The operator role (scontrol create reservation) belongs to root, SlurmUser and, with slurmdbd, the
    # accounts given AdminLevel=Operator. The bed has no slurmdbd: `flas-bed operator on` makes the test
    # user SlurmUser, which is what lets the coordinator book reservations at such a site.
    if [ -f "$d/etc/operator" ]; then
        slurm_user=$BED_USER
        chown -R "$BED_USER" "$d/state"
        touch "$d/log/slurmctld.log"
        chown "$BED_USER" "$d/log/slurmctld.log"
    fi
    parts="PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
    if [ "$site" = single ]; then
        tmpfs=$d/tmp
        install -d -m 755 "$d/spool/$host"
        nodes="NodeName=$host NodeAddr=$addr CPUs=$cpus RealMemory=$mem State=UNKNOWN"
    else
        nodes=""
        for node in $(site_nodes "$site"); do
            install -d -m 755 "$d/nodes/$node" "$d/spool/$node"
            install -d -m 1777 "$d/nodes/$node/tmp"
            nodes+="NodeName=$node NodeAddr=$(node_addr "$node") CPUs=$cpus RealMemory=$mem State=UNKNOWN"$'\n'
        done
        nodes=${nodes%$'\n'}
        # A site preempts like a real one: jobs of the higher-tier partition "urgent" cancel those of
        # "debug" (where FLaS runs), which first get SIGTERM and GraceTime seconds to write a checkpoint (10 s:
        # ample for the bed's models, short enough for the tests).
        preempt="PreemptType=preempt/partition_prio"$'\n'"PreemptMode=CANCEL"
        parts+=" PriorityTier=1 GraceTime=10"$'\n'"PartitionName=urgent Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF"
    fi
    cat >"$d/etc/slurm.conf.new" <<EOF
# Written by flas-bed for cluster $cluster. Private: its own munge socket, state, logs and plugins.
ClusterName=$cluster
SlurmctldHost=$host($addr)
SlurmUser=$slurm_user
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$d/run/munge.socket
CryptoType=crypto/munge
MpiDefault=pmix
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
MailProg=/bin/true
MinJobAge=300
KillWait=5
StateSaveLocation=$d/state
SlurmdSpoolDir=$d/spool/%n
TmpFS=$tmpfs
SlurmctldPidFile=$d/run/slurmctld.pid
SlurmdPidFile=$d/run/slurmd-%n.pid
SlurmctldLogFile=$d/log/slurmctld.log
SlurmdLogFile=$d/log/slurmd-%n.log
PlugStackConfig=$d/etc/plugstack.conf
$preempt
$nodes
$parts
EOF
    mv "$d/etc/slurm.conf.new" "$d/etc/slurm.conf"
    write_plugstack "$d" "$site"
}
write_plugstack() { # DIR SITE: the plugin stack this cluster loads (the bed's installed flas.so)
    local d=$1 site=$2 so
    so=$(installed_plugin)
    echo "required $so conf=$d/etc/flas.conf" >"$d/etc/plugstack.conf.new"
    mv "$d/etc/plugstack.conf.new" "$d/etc/plugstack.conf"
    write_flas_conf "$d" "$site"
}
# flas.conf(5) for the cluster, and the staging area an admin would prepare: the staging root and each
# federation's directory belong to root, global/ to the account the coordinator logs in as ($BED_USER).
# "other" tests overriding the federation of a step; "closed" admits nobody but root.
write_flas_conf() { # DIR SITE
    local d=$1 site=$2 fed stage="$1/stage"
    [ -n "$d" ] && [ -n "$site" ] || die "write_flas_conf: missing arguments"
    cat >"$d/etc/flas.conf.new" <<EOF
# flas.conf written by flas-bed for site $site
Federation=flas Site=$site StagingRoot=$stage
Federation=other Site=$site StagingRoot=$stage
Federation=closed Site=$site StagingRoot=$stage AllowUsers=root
EOF
    chmod 644 "$d/etc/flas.conf.new"
    mv "$d/etc/flas.conf.new" "$d/etc/flas.conf"
    install -d -m 755 -o root -g root "$stage"
    for fed in flas other closed; do
        install -d -m 755 -o root -g root "$stage/$fed"
        install -d -m 755 -o "$BED_USER" -g "$BED_USER" "$stage/$fed/global"
    done
}
# The daemons the bed starts for a cluster, by the names their PIDs are recorded under.
cluster_daemons() { # CLUSTER
    local node
    if [ "$1" = single ]; then echo munged slurmctld slurmd; return; fi
    echo munged slurmctld
    for node in $(site_nodes "$1"); do echo "slurmd@$node"; done
    echo sshd
}
wait_for_node() { # SECONDS DIR: until every node is idle; fail fast with the log if a daemon died
    local secs=$1 d=$2 i name state resumed=0
    for i in $(seq $((secs * 10))); do
        slurm_up "$d" && return 0
        # A fresh boot recovers the controller's saved state: a node drained or set down in an earlier
        # session (an epilog failure, a test's State=DOWN) would keep this cluster unusable. Say so and
        # return it to service once.
        if [ $resumed = 0 ] && [ $((i % 10)) = 0 ]; then
            state=$(SLURM_CONF="$d/etc/slurm.conf" timeout 15 sinfo -h -N -o '%T|%E' 2>/dev/null || true)
            case "$state" in
            drain* | down*)
                say "$(basename "$d"): node was ${state%%|*} from an earlier session (reason: ${state#*|}); resuming it"
                SLURM_CONF="$d/etc/slurm.conf" scontrol update NodeName=ALL State=RESUME 2>/dev/null || true
                resumed=1 ;;
            esac
        fi
        for name in $(cluster_daemons "$(basename "$d")"); do
            [ "$name" = sshd ] && continue
            if [ "$(daemon_state "$d" "$name")" = down ]; then
                tail -n 5 "$d/log/$name.out" >&2 2>/dev/null || true
                die "$name of $(basename "$d") died during start-up (log: $d/log/)"
            fi
        done
        sleep 0.1
    done
    die "timed out after ${secs}s waiting for the node of $(basename "$d") to become idle"
}
slurm_up() { # DIR: every node is idle (or allocated) according to its controller
    local states st
    # a client asking a controller that is not there retries for minutes: do not ask then
    [ "$(daemon_state "$1" slurmctld)" != down ] || return 1
    states=$(SLURM_CONF="$1/etc/slurm.conf" timeout 15 sinfo -h -N -o %T 2>/dev/null) || return 1
    [ -n "$states" ] || return 1
    for st in $states; do
        case "$st" in idle* | alloc* | mix*) ;; *) return 1 ;; esac
    done
}
cancel_all_jobs() { # DIR: cancel every job so no slurmstepd outlives slurmd
    local conf="$1/etc/slurm.conf" i
    SLURM_CONF=$conf scancel --full --quiet --user="$BED_USER" 2>/dev/null || true
    SLURM_CONF=$conf scancel --full --quiet --user=root 2>/dev/null || true
    for i in $(seq 100); do
        [ -z "$(SLURM_CONF=$conf squeue -h -t R,CG,PD -o %i 2>/dev/null)" ] && return 0
        sleep 0.2
    done
    say "jobs still listed in $1 after scancel; stopping anyway"
}

# ---------------------------------------------------------------- single
start_single() {
    ensure_user
    local d host
    d=$(cluster_dir single)
    host=$(hostname -s)
    install -d -m 755 "$d"
    if [ "$(daemon_state "$d" slurmd | cut -d' ' -f1)" = up ] && slurm_up "$d"; then
        say "single: already running"
        return 0
    fi
    stop_recorded "$d"
    make_munge "$d"
    write_slurm_conf "$d" flas-single "$host" 127.0.0.1 single
    # shellcheck disable=SC2046
    launch "$d" munged "$d/log/munged.out" $(munged_cmd "$d")
    wait_for 10 "munged (single)" test -S "$d/run/munge.socket"
    launch "$d" slurmctld "$d/log/slurmctld.out" /usr/sbin/slurmctld -D -f "$d/etc/slurm.conf"
    launch "$d" slurmd "$d/log/slurmd.out" /usr/sbin/slurmd -D -f "$d/etc/slurm.conf"
    wait_for_node 60 "$d"
    say "single: up (node $host on 127.0.0.1, SLURM_CONF=$d/etc/slurm.conf)"
}
stop_single() {
    local d
    d=$(cluster_dir single)
    [ -d "$d" ] || return 0
    [ "$(daemon_state "$d" slurmctld | cut -d' ' -f1)" = up ] && cancel_all_jobs "$d"
    stop_recorded "$d"
    say "single: stopped"
}

# ---------------------------------------------------------------- sites (network namespaces)
ensure_bridge() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
        ip addr add "$SUBNET.1/24" dev "$BRIDGE"
        ip link set "$BRIDGE" up
        echo "$BRIDGE" >"$BED/sites/bridge"
    fi
}
ensure_netns() { # NODE: the node's namespace on the bridge, and its site's name service
    local node=$1 site ns veth addr
    site=$(node_site "$node")
    ns=$(netns_of "$node")
    veth="flv-$node"
    addr=$(node_addr "$node")
    if [ ! -e "/run/netns/$ns" ]; then
        ip netns add "$ns"
        ip link add "$veth" type veth peer name eth0 netns "$ns"
        ip link set "$veth" master "$BRIDGE" up
        ip -n "$ns" addr add "$addr/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
        echo "$ns" >>"$BED/sites/netns"
    fi
    # Private name service for the site: its own /etc/hosts, no DNS (no default route either).
    local d
    d=$(cluster_dir "$site")
    install -d -m 755 "$d/etc"
    {
        echo "127.0.0.1 localhost"
        local s n
        for s in "${SITES[@]}"; do for n in $(site_nodes "$s"); do echo "$(node_addr "$n") $n"; done; done
    } >"$d/etc/hosts"
    : >"$d/etc/resolv.conf"
}
# The command prefix that runs CMD on a node of a site: the node's network namespace, plus a private UTS
# (hostname) and mount namespace in which /etc/hosts and /etc/resolv.conf are the site's and /tmp is the
# node's own. Every wrapper execs, so the PID launch records is the daemon's own.
SITE_WRAP=()
site_wrap() { # SITE [NODE] -> sets SITE_WRAP (NODE: default the site's first node)
    local site=$1 node=${2:-$1} d
    d=$(cluster_dir "$site")
    SITE_WRAP=(nsenter --net="/run/netns/$(netns_of "$node")" unshare --uts --mount -- /bin/sh -c
        'mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && mount --bind "$3" /tmp &&
         hostname "$4" && shift 4 && exec "$@"'
        sh "$d/etc/hosts" "$d/etc/resolv.conf" "$(node_tmp "$node")" "$node")
}
# The bed's certificate authorities (tests/bed/ca.sh): user_ca signs user certificates as a site's 2FA
# portal would (every site's sshd trusts it, next to plain authorized keys), host_ca signs each site's
# host key (for known_hosts' @cert-authority). Private keys stay root's.
ensure_cas() {
    local ca="$BED/sites/ca"
    install -d -m 755 "$ca"
    [ -f "$ca/user_ca" ] || flas_ca_new "$ca/user_ca"
    [ -f "$ca/host_ca" ] || flas_ca_new "$ca/host_ca"
    chmod 600 "$ca/user_ca" "$ca/host_ca"
    chmod 644 "$ca/user_ca.pub" "$ca/host_ca.pub"
}
write_sshd_conf() { # SITE
    local site=$1 d sanitizer=""
    d=$(cluster_dir "$site")
    # A sanitizer build of FLaS (tests/run.sh --sanitize) needs its options in jobs submitted over SSH
    # too: the suppressions of what MPI and OpenSSL keep for the life of a process.
    [ -n "${LSAN_OPTIONS:-}" ] && sanitizer+=" LSAN_OPTIONS=$LSAN_OPTIONS"
    [ -n "${ASAN_OPTIONS:-}" ] && sanitizer+=" ASAN_OPTIONS=$ASAN_OPTIONS"
    install -d -m 755 "$d/ssh"
    [ -f "$d/ssh/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C "$site-host" -f "$d/ssh/ssh_host_ed25519_key"
    ensure_cas
    # a host certificate for the site's address and name, renewed at every start (valid 30 days)
    flas_ca_sign_host "$BED/sites/ca/host_ca" "$d/ssh/ssh_host_ed25519_key.pub" "$(site_addr "$site"),$site" -5m:+30d
    cat >"$d/ssh/sshd_config" <<EOF
# Written by flas-bed: key-only sshd for site $site.
ListenAddress $(site_addr "$site")
Port 22
HostKey $d/ssh/ssh_host_ed25519_key
HostCertificate $d/ssh/ssh_host_ed25519_key-cert.pub
# users log in with a plain key (authorized_keys) or a certificate of the bed's user CA
TrustedUserCAKeys $BED/sites/ca/user_ca.pub
PidFile $d/run/sshd.pid
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
AllowUsers $BED_USER
AuthorizedKeysFile .ssh/authorized_keys
# A site's login environment: its Slurm, and FLaS installed in PATH (as a module would do).
SetEnv SLURM_CONF=$d/etc/slurm.conf PATH=$(installed_bin):/usr/local/bin:/usr/bin:/bin$sanitizer
Subsystem sftp internal-sftp
EOF
}
write_known_hosts() {
    local site tmp="$BED/sites/known_hosts.new"
    : >"$tmp"
    for site in "${SITES[@]}"; do
        echo "$(site_addr "$site") $(cut -d' ' -f1,2 "$(cluster_dir "$site")/ssh/ssh_host_ed25519_key.pub")" >>"$tmp"
    done
    chmod 644 "$tmp"
    mv "$tmp" "$BED/sites/known_hosts"
    # the same sites vouched for by the host CA instead of their keys
    flas_ca_known_hosts "$BED/sites/ca/host_ca" "$SUBNET.*" >"$tmp"
    chmod 644 "$tmp"
    mv "$tmp" "$BED/sites/known_hosts_ca"
}
start_site() { # SITE
    local site=$1 d addr node name up=1
    d=$(cluster_dir "$site")
    addr=$(site_addr "$site")
    for node in $(site_nodes "$site"); do ensure_netns "$node"; done
    for name in $(cluster_daemons "$site"); do
        [ "$(daemon_state "$d" "$name" | cut -d' ' -f1)" = up ] || up=0
    done
    if [ $up = 1 ] && slurm_up "$d"; then
        say "$site: already running"
        return 0
    fi
    stop_recorded "$d"
    make_munge "$d"
    write_slurm_conf "$d" "$site" "$site" "$addr" "$site"
    write_sshd_conf "$site"
    mkdir -p /run/sshd
    site_wrap "$site"
    # shellcheck disable=SC2046
    launch "$d" munged "$d/log/munged.out" "${SITE_WRAP[@]}" $(munged_cmd "$d")
    wait_for 10 "munged ($site)" test -S "$d/run/munge.socket"
    launch "$d" slurmctld "$d/log/slurmctld.out" "${SITE_WRAP[@]}" /usr/sbin/slurmctld -D -f "$d/etc/slurm.conf"
    for node in $(site_nodes "$site"); do
        site_wrap "$site" "$node"
        launch "$d" "slurmd@$node" "$d/log/slurmd@$node.out" "${SITE_WRAP[@]}" /usr/sbin/slurmd -D -N "$node" -f "$d/etc/slurm.conf"
    done
    site_wrap "$site"
    launch "$d" sshd "$d/log/sshd.out" "${SITE_WRAP[@]}" /usr/sbin/sshd -D -f "$d/ssh/sshd_config" -E "$d/log/sshd.log"
}
site_operator() { # on|off [SITE...]: give the test user the operator role at the sites (restarts them)
    local action=${1:-} site d
    shift || true
    [ "$action" = on ] || [ "$action" = off ] || die "usage: flas-bed operator on|off [SITE...]"
    local sites=("$@")
    [ ${#sites[@]} -gt 0 ] || sites=("${SITES[@]}")
    for site in "${sites[@]}"; do
        site_index "$site" >/dev/null
        d=$(cluster_dir "$site")
        install -d -m 755 "$d/etc"
        if [ "$action" = on ]; then touch "$d/etc/operator"; else rm -f "$d/etc/operator"; fi
    done
    stop_sites
    start_sites
    for site in "${SITES[@]}"; do
        d=$(cluster_dir "$site")
        say "$site: SlurmUser=$(sed -n 's/^SlurmUser=//p' "$d/etc/slurm.conf")"
    done
}
site_ctld() { # stop|start SITE: only the site's slurmctld (a controller outage; jobs keep running)
    local action=$1 site=$2 d st
    d=$(cluster_dir "$site")
    [ -d "$d" ] || die "no site '$site'"
    st=$(daemon_state "$d" slurmctld)
    case "$action" in
    stop)
        [ "${st%% *}" = up ] || die "$site: slurmctld is not running"
        stop_pid "${st#up }" "slurmctld ($site)"
        say "$site: slurmctld stopped (state saved; slurmd, sshd and jobs go on)" ;;
    start)
        [ "${st%% *}" = up ] && { say "$site: slurmctld already running"; return 0; }
        site_wrap "$site"
        launch "$d" slurmctld "$d/log/slurmctld.out" "${SITE_WRAP[@]}" /usr/sbin/slurmctld -D -f "$d/etc/slurm.conf"
        wait_for 60 "slurmctld of $site" slurm_up "$d"
        say "$site: slurmctld started, node up" ;;
    *) die "usage: flas-bed ctld stop|start SITE" ;;
    esac
}
start_sites() {
    ensure_user
    install -d -m 755 "$BED/sites"
    ensure_bridge
    local site
    for site in "${SITES[@]}"; do start_site "$site"; done
    write_known_hosts
    for site in "${SITES[@]}"; do
        wait_for_node 60 "$(cluster_dir "$site")"
        wait_for 10 "sshd of site $site" bash -c "exec 3<>/dev/tcp/$(site_addr "$site")/22"
        say "$site: up ($(site_addr "$site"), netns $(netns_of "$site"), SLURM_CONF=$(cluster_dir "$site")/etc/slurm.conf)"
    done
}
netns_pids() { # NODE: every process whose network namespace is the node's
    local ns_ino p
    ns_ino=$(stat -L -c %i "/run/netns/$(netns_of "$1")" 2>/dev/null) || return 0
    for p in /proc/[0-9]*; do
        [ "$(stat -L -c %i "$p/ns/net" 2>/dev/null)" = "$ns_ino" ] && echo "${p#/proc/}"
    done
    return 0
}
stop_sites() {
    local site d pid node
    for site in "${SITES[@]}"; do
        d=$(cluster_dir "$site")
        [ -d "$d" ] || continue
        [ "$(daemon_state "$d" slurmctld | cut -d' ' -f1)" = up ] && cancel_all_jobs "$d"
        stop_recorded "$d"
        # Whatever is still inside the nodes' namespaces was started by these daemons (job steps, sessions).
        for node in $(site_nodes "$site"); do
            for pid in $(netns_pids "$node"); do stop_pid "$pid" "leftover process on $node"; done
        done
        say "$site: stopped"
    done
    if [ -f "$BED/sites/netns" ]; then
        local ns
        while read -r ns; do ip netns del "$ns" 2>/dev/null || true; done <"$BED/sites/netns"
        rm -f "$BED/sites/netns"
    fi
    for site in "${SITES[@]}"; do
        for node in $(site_nodes "$site"); do ip link del "flv-$node" 2>/dev/null || true; done
    done
    if [ -f "$BED/sites/bridge" ]; then
        ip link del "$BRIDGE" 2>/dev/null || true
        rm -f "$BED/sites/bridge"
    fi
}

# ---------------------------------------------------------------- clients
cluster_env() { # CLUSTER
    local c=${1:?usage: flas-bed env single|SITE} d
    [ "$c" = single ] || site_index "$c" >/dev/null
    d=$(cluster_dir "$c")
    echo "export SLURM_CONF=$d/etc/slurm.conf"
    echo "export PATH=$(installed_bin):\$PATH"
}
as_user() { # CLUSTER CMD...
    local c=${1:?usage: flas-bed as-user CLUSTER CMD...} d
    shift
    [ "${1:-}" = -- ] && shift
    [ "$c" = single ] || site_index "$c" >/dev/null
    d=$(cluster_dir "$c")
    cd "$BED/work"
    exec runuser -u "$BED_USER" -- env SLURM_CONF="$d/etc/slurm.conf" PATH="$(installed_bin):/usr/local/bin:/usr/bin:/bin" "$@"
}
site_ssh() { # SITE CMD...
    local site=${1:?usage: flas-bed ssh SITE CMD...}
    shift
    site_ssh_cmd "$site" "$@"
}
bed_paths() {
    local home site
    home=$(getent passwd "$BED_USER" 2>/dev/null | cut -d: -f6)
    echo "bed=$BED"
    echo "user=$BED_USER"
    echo "user_key=$home/.ssh/id_ed25519"
    echo "known_hosts=$BED/sites/known_hosts"
    echo "known_hosts_ca=$BED/sites/known_hosts_ca"
    echo "user_ca=$BED/sites/ca/user_ca"
    echo "single_conf=$(cluster_dir single)/etc/slurm.conf"
    for site in "${SITES[@]}"; do
        echo "${site}_addr=$(site_addr "$site")"
        echo "${site}_conf=$(cluster_dir "$site")/etc/slurm.conf"
        echo "${site}_dir=$(cluster_dir "$site")"
        echo "${site}_nodes=$(site_nodes "$site" | tr ' ' ,)"
    done
}
bed_status() { # [single|sites|all]: prints daemons and nodes; non-zero unless all requested are up
    local target=$1 ok=0 c d name st clusters=()
    case "$target" in
    single) clusters=(single) ;;
    sites) clusters=("${SITES[@]}") ;;
    all) clusters=(single "${SITES[@]}") ;;
    *) die "unknown target '$target'" ;;
    esac
    for c in "${clusters[@]}"; do
        d=$(cluster_dir "$c")
        for name in $(cluster_daemons "$c"); do
            st=$(daemon_state "$d" "$name")
            printf '%-9s %-16s %s\n' "$c" "$name" "$st"
            [ "${st%% *}" = up ] || ok=1
        done
        if slurm_up "$d"; then
            printf '%-9s %-16s %s\n' "$c" nodes "$(SLURM_CONF=$d/etc/slurm.conf sinfo -h -N -o '%N %T' | paste -sd' ')"
        else
            printf '%-9s %-16s %s\n' "$c" nodes "not responding"
            ok=1
        fi
        if [ "$c" != single ]; then
            local node
            for node in $(site_nodes "$c"); do
                if [ -e "/run/netns/$(netns_of "$node")" ]; then
                    printf '%-9s %-16s %s\n' "$c" netns "$(netns_of "$node") ($(node_addr "$node"))"
                else
                    printf '%-9s %-16s %s\n' "$c" netns "$(netns_of "$node") missing"
                    ok=1
                fi
            done
        fi
    done
    return $ok
}

# ---------------------------------------------------------------- site data (demo and tests)
# Each site gets its private corpus (leonardo: Italian, karolina: Czech), extracted and tokenized AT
# the site by a batch job; the shared tokenizer is trained here on text every site may publish and is
# uploaded to the sites like any other public file. Both come from the same Debian packages, so to keep
# "private" and "public" text apart (and the privacy tests meaningful) the sites train on the FIRST
# --max-docs documents of their language and the vocabulary is trained on the LAST 2000 of each.
site_lang() { case "$1" in leonardo) echo it ;; karolina) echo cs ;; *) die "no language for site $1" ;; esac; }
bed_data() { # [--vocab-size N] [--max-docs N]
    local vocab=512 max=3000 pub="$BED/public" bin site d job jobs=() lang
    while [ $# -gt 0 ]; do
        case "$1" in
        --vocab-size) vocab=$2; shift 2 ;;
        --max-docs) max=$2; shift 2 ;;
        *) die "data: unknown option $1" ;;
        esac
    done
    bin=$(installed_bin)
    [ -x "$bin/flas-prepare" ] || die "FLaS is not installed in the bed: run 'flas-bed install BUILD_DIR'"
    install -d -m 755 "$pub"
    [ "$max" -gt 0 ] && [ "$max" -le 5000 ] || die "data: --max-docs must be 1..5000 (disjoint from the vocabulary's text)"
    if [ ! -f "$pub/shared-$vocab.model" ]; then
        for lang in it cs; do
            "$bin/flas-corpus" --quiet --lang "$lang" --out "$pub/$lang.tmp"
            tail -n 2000 "$pub/$lang.tmp/train.txt" >"$pub/vocab-text-$lang.txt"
            rm -rf "$pub/$lang.tmp"
        done
        "$bin/flas-vocab" --out "$pub/shared-$vocab" --vocab-size "$vocab" "$pub/vocab-text-it.txt" "$pub/vocab-text-cs.txt" >/dev/null
    fi
    local home want="vocab=$vocab docs=$max"
    home=$(getent passwd "$BED_USER" | cut -d: -f6)
    # already prepared with the same sizes (the demo and the tests share it)?
    if [ "$(cat "$pub/prepared" 2>/dev/null)" = "$want" ] &&
        [ -d "$(cluster_dir leonardo)/data/train" ] && [ -d "$(cluster_dir karolina)/data/train" ]; then
        say "site data already prepared ($want)"
        return 0
    fi
    rm -f "$pub/prepared"
    for site in "${SITES[@]}"; do
        d=$(cluster_dir "$site")/data
        install -d -m 700 -o "$BED_USER" -g "$BED_USER" "$d"
        "$bin/flas-stage" -q -t "$BED_USER@$(site_addr "$site")" -k "$BED/sites/known_hosts" -i "$home/.ssh/id_ed25519" \
            put "$pub/shared-$vocab.model" "$d/tokenizer.model" >/dev/null
        job=$(site_ssh_cmd "$site" "sbatch --parsable --chdir=$d $(installed_examples)/demo/prepare-data.sbatch \
            $(site_lang "$site") $d $d/tokenizer.model $max") || die "$site: cannot submit the data preparation"
        jobs+=("$site:$job")
        say "$site: preparing $(site_lang "$site") data in job $job"
    done
    for job in "${jobs[@]}"; do
        site=${job%%:*}
        wait_for 600 "data preparation at $site" job_done "$site" "${job#*:}"
        d=$(cluster_dir "$site")/data
        [ -d "$d/train" ] && [ -d "$d/valid" ] || die "$site: data preparation failed (see $d/flas-prepare-${job#*:}.out)"
        say "$site: $(du -sh "$d/train" | cut -f1) of training shards in $d/train"
    done
    echo "$pub/shared-$vocab.model" >"$BED/public/tokenizer"
    echo "$want" >"$pub/prepared"
}
site_ssh_cmd() { # SITE CMD: like site_ssh, without exec
    local site=$1 home
    shift
    home=$(getent passwd "$BED_USER" | cut -d: -f6)
    ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$BED/sites/known_hosts" \
        -o GlobalKnownHostsFile=/dev/null -i "$home/.ssh/id_ed25519" -l "$BED_USER" "$(site_addr "$site")" "$@"
}
job_done() { # SITE JOBID: the job has left the queue
    [ -z "$(SLURM_CONF=$(cluster_dir "$1")/etc/slurm.conf squeue -h -j "$2" -t PD,R,CG -o %i 2>/dev/null)" ]
}
