# Shared by flas-demo.sh and flas-experiment.sh: the two-site test bed (tests/bed/flas-bed) as the
# "supercomputers", the coordinator on this host, every step through FLaS's real path.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BEDCTL="$ROOT/tests/bed/flas-bed"
BED=${FLAS_BED_DIR:-/var/tmp/flas-bed}
BIN="$BED/install/usr/local/bin"
EXAMPLES="$BED/install/usr/local/share/doc/FLaS/slurm-examples"
SITES=(leonardo karolina)
declare -A LANG_OF=([leonardo]=it [karolina]=cs)

# Model and round sizes (a 2-core machine finishes the demo in minutes; larger via the environment).
DIM=${FLAS_DEMO_DIM:-128}
LAYERS=${FLAS_DEMO_LAYERS:-4}
HEADS=${FLAS_DEMO_HEADS:-4}
KV_HEADS=${FLAS_DEMO_KV_HEADS:-2}
SEQ=${FLAS_DEMO_SEQ:-128}
BATCH=${FLAS_DEMO_BATCH:-8}
VOCAB=${FLAS_DEMO_VOCAB:-1024}
DOCS=${FLAS_DEMO_DOCS:-4000}
LR=${FLAS_DEMO_LR:-1e-3}

step() { printf '\n== %s\n' "$*"; }
die() { echo "flas-demo: $*" >&2; exit 1; }

# Signals. Bash runs a trap only once the foreground command has finished, so a SIGTERM would wait for
# a whole federated run. Long steps therefore run in the background under `bg_wait` (a trapped signal
# interrupts `wait` at once), and the handler ends every process this script started before exiting
# (the EXIT trap then stops the sites, which cancels their jobs).
bg_wait() { "$@" & wait $!; }
kill_tree() { # PID: its descendants, deepest first
    local child
    for child in $(pgrep -P "$1" 2>/dev/null); do
        kill_tree "$child"
        kill -TERM "$child" 2>/dev/null || true
    done
}
on_signal() { # SIGNAL-NAME EXIT-CODE
    trap - INT TERM
    echo "flas-demo: SIG$1: stopping what the demo started" >&2
    kill_tree $$
    exit "$2"
}
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM

# The options both scripts take: --rounds N, --steps N, --skip-build (sets BUILD=0) and -h/--help, which
# prints the script's header comment (lines 2 to HELP_END). Any other option goes to the script's own
# demo_option, which sets what it means and DEMO_SHIFT (how many arguments it took), or returns non-zero
# when it does not know it. Then refuses to go on unless run as root.
demo_options() { # HELP_END ARGS...
    local help_end=$1
    shift
    while [ $# -gt 0 ]; do
        case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --steps) STEPS=$2; shift 2 ;;
        --skip-build) BUILD=0; shift ;;
        -h | --help) sed -n "2,${help_end}p" "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *)
            DEMO_SHIFT=0
            demo_option "$@" || die "unknown option $1 (see --help)"
            shift "$DEMO_SHIFT"
            ;;
        esac
    done
    [ "$(id -u)" = 0 ] || die "run as root (it boots SLURM daemons and network namespaces)"
}

demo_paths() { eval "$("$BEDCTL" paths | sed 's/^/P_/')"; }
site_dir() { local v="P_${1}_dir"; echo "${!v}"; }
site_addr() { local v="P_${1}_addr"; echo "${!v}"; }
site_stage() { echo "$(site_dir "$1")/stage/flas"; }

# Install packages, build, and install FLaS where the bed's sites (and their unprivileged user) find it.
demo_build() {
    step "installing packages"
    bg_wait bash "$ROOT/tests/bed/install-deps.sh"
    step "building FLaS"
    bg_wait cmake -S "$ROOT" -B "$ROOT/build" >/dev/null
    bg_wait cmake --build "$ROOT/build" -j"$(nproc)"
    "$BEDCTL" install "$ROOT/build"
}

demo_boot() {
    step "booting two SLURM sites: leonardo (Italian data) and karolina (Czech data)"
    "$BEDCTL" restart sites
    demo_paths
}

# The EXIT trap while the sites are the script's own: stops them, and exits non-zero if that fails.
demo_cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    demo_stop || rc=1
    exit $rc
}

# What both scripts do first: builds unless BUILD=0, boots the sites (stopped again on exit) unless BOOT=0,
# when it uses the running ones and leaves them up, and prepares each site's data. Sets t0, the start time.
demo_start() {
    t0=$(date +%s)
    [ "$BUILD" = 1 ] && demo_build
    if [ "${BOOT:-1}" = 1 ]; then
        trap demo_cleanup EXIT # INT and TERM: on_signal, which exits through this
        demo_boot
    else
        "$BEDCTL" status sites >/dev/null || die "--running-sites: the sites are not up (tests/bed/flas-bed start sites)"
        demo_paths
    fi
    demo_data
}

# Each site's private corpus and token shards, made AT the site by a batch job.
demo_data() {
    step "preparing each site's private data at the site (flas-corpus + flas-prepare in a batch job)"
    bg_wait "$BEDCTL" data --vocab-size "$VOCAB" --max-docs "$DOCS"
    TOKENIZER=$(cat "$BED/public/tokenizer")
}

demo_init() { # OUT
    "$BIN/flas-train" --init --dim "$DIM" --layers "$LAYERS" --heads "$HEADS" --kv-heads "$KV_HEADS" \
        --vocab "$VOCAB" --seq-len "$SEQ" --seed 1 --output "$1" | sed 's/^/  /'
}

# How the federated runs train (docs/tuning.md). TUNED=1 (default): each site keeps its AdamW state
# between rounds (InnerState=keep) and one warmup + cosine decay from LR to LR/10 spans the whole run
# (LrSchedule=run); with Strategy fedavgm the server momentum is 0.5 at lr 1 (the experiment: the
# tuning sweep's best at its budget; the demo's 4 rounds are too few for momentum and use FedAvg). TUNED=0 (--plain): FLaS's earlier way, AdamW restarted every round at a constant
# learning rate, and the strategy's own server settings. Single-place runs take the same schedule over
# their steps, so that every model of one experiment is trained alike.
TUNED=${FLAS_DEMO_TUNED:-1}

# The flas-train arguments of one site's round (or a single-place run of STEPS steps).
train_args() { # SITE STEPS
    local d sched
    d="$(site_dir "$1")/data"
    sched="--lr,$LR,--min-lr,$LR,--warmup,0"
    [ "$TUNED" = 1 ] && sched="--lr,$LR,--min-lr,$(awk -v l="$LR" 'BEGIN {print l / 10}')"
    echo "--data,$d/train,--valid,$d/valid,--steps,$2,--batch,$BATCH,--seq,$SEQ,$sched,--threads,1,--log-every,50"
}

demo_conf() { # WORKDIR STRATEGY ROUNDS STEPS INITIAL
    local work=$1 strategy=$2 rounds=$3 steps=$4 init=$5 s tuning=""
    if [ "$TUNED" = 1 ]; then
        tuning="InnerState=keep LrSchedule=run"
        [ "$strategy" = fedavgm ] && tuning+=" ServerLR=1 ServerMomentum=0.5"
    fi
    install -d -m 755 "$work"
    {
        echo "Federation=flas WorkDir=$work InitialGlobal=$init KnownHosts=$P_known_hosts"
        echo "  Rounds=$rounds MinSites=2 Strategy=$strategy Sync=${DEMO_SYNC:-begin} BeginDelay=1 PollInterval=1 PollMax=2"
        echo "  RoundDeadline=3600 Signal=USR1@30 $tuning"
        for s in "${SITES[@]}"; do
            echo "Site=$s Host=$(site_addr "$s") User=$P_user Identity=$P_user_key StagingRoot=$(site_dir "$s")/stage"
            echo "  Script=$EXAMPLES/flas-train.sbatch Tasks=1 CpusPerTask=1 Time=60"
            echo "  ScriptArgs=$(train_args "$s" "$steps")"
        done
    } >"$work/coordinator.conf"
    # a kept inner state belongs to one run: a new run of the same federation starts AdamW fresh
    [ "$TUNED" = 1 ] && for s in "${SITES[@]}"; do
        stage_cmd "$s" exec "rm -rf ~/.local/state/flas/flas/$s" >/dev/null
    done
    return 0
}

stage_cmd() { "$BIN/flas-stage" -q -t "$P_user@$(site_addr "$1")" -k "$P_known_hosts" -i "$P_user_key" "${@:2}"; }

# Evaluates MODELS on SITE's held-out text, AT the site (the text never leaves it; the numbers do).
# Prints the JSON lines of flas-train --eval, one per model, in order.
demo_eval_at() { # SITE NAME:MODEL...
    local site=$1 remote job out name model args=()
    shift
    remote="/home/$P_user/flas-eval/$(date +%s%N)"
    stage_cmd "$site" exec "mkdir -p $remote" >/dev/null
    for nm in "$@"; do
        name=${nm%%:*} model=${nm#*:}
        stage_cmd "$site" put "$model" "$remote/$name.h5" >/dev/null
        args+=("$remote/$name.h5")
    done
    job=$(stage_cmd "$site" exec "cd $remote && sbatch --parsable --wait $EXAMPLES/demo/eval-models.sbatch \
        $(site_dir "$site")/data/valid $remote/eval.jsonl ${args[*]}") || die "evaluation at $site failed"
    out=$(stage_cmd "$site" exec "cat $remote/eval.jsonl; rm -rf $remote") || die "no evaluation results from $site"
    echo "$out"
}

json_num() { sed -n "s/.*\"$2\":\\([-0-9.eE+nainf]*\\).*/\\1/p" <<<"$1"; }

demo_stop() {
    step "stopping the sites"
    "$BEDCTL" stop sites
}
