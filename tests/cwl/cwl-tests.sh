#!/usr/bin/env bash
# The CWL workflow of the federated loop (slurm-examples/cwl) under cwltool.
# usage: cwl-tests.sh validate          the workflow and its tools are valid CWL v1.2 (+ cwltool:Loop)
#        cwl-tests.sh two-rounds        on the two-site bed (fixtures slurm_sites, coord_data): two
#                                       rounds by the workflow, then by flas-coordinator from the same
#                                       description; the final global models have equal parameters
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CWL=$(cd "$HERE/../../slurm-examples/cwl" && pwd)
CASE=${1:?usage: cwl-tests.sh validate|two-rounds}
fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "PASS: $*"; }
command -v cwltool >/dev/null || fail "cwltool is not installed (tests/bed/install-deps.sh installs it)"

case_validate() {
    local f out
    for f in flas-federation.cwl flas-round.cwl flas-site-round.cwl flas-aggregate.cwl; do
        out=$(cwltool --enable-ext --validate "$CWL/$f" 2>&1) || fail "$f: $out"
        grep -q "is valid CWL" <<<"$out" || fail "$f: $out"
    done
    # the Loop really is cwltool's extension: without --enable-ext it is refused
    cwltool --validate "$CWL/flas-federation.cwl" >/dev/null 2>&1 && fail "cwltool:Loop accepted without --enable-ext"
    python3 -c 'import ast,sys; ast.parse(open(sys.argv[1]).read())' "$CWL/flas-cwl-site" || fail "flas-cwl-site does not parse"
    pass "flas-federation.cwl (cwltool:Loop over flas-round.cwl: scattered flas-site-round.cwl, flas-aggregate.cwl) is valid CWL v1.2"
}


# ---------------------------------------------------------------------------- the two-site bed
bed_setup() {
    BEDCTL="$HERE/../bed/flas-bed"
    eval "$("$BEDCTL" paths | sed 's/^/P_/')"
    BED=$P_bed
    BIN="$BED/install/usr/local/bin"
    EXAMPLES="$BED/install/usr/local/share/doc/FLaS/slurm-examples"
    SITES=(leonardo karolina)
    WORK="$BED/coord/cwl-$CASE"
}
# shellcheck source=tests/coordinator/coord-lib.sh
source "$HERE/../coordinator/coord-lib.sh"
clear_staging() { # as coord-tests.sh write_conf: every run starts from empty staging areas
    local s
    for s in "${SITES[@]}"; do
        find "$(sdir "$s")/stage/flas" -mindepth 1 -maxdepth 1 ! -name global -exec rm -rf {} +
        find "$(sdir "$s")/stage/flas/global" -mindepth 1 -delete
    done
}
script_args() { # SITE: coord-tests.sh's ScriptArgs for `write_conf 2 2 20`
    echo "--data,$(sdir "$1")/data/train,--valid,$(sdir "$1")/data/valid,--steps,20,--batch,4,--seq,64,--threads,1,--log-every,5"
}
# Jobs named for round K at SITE with this run's id, as Slurm lists them: "ID STATE" lines.
slurm_jobs() { # SITE ROUND RUN
    SLURM_CONF=$(sconf "$1") squeue -h -t all -o '%i %j %T' | awk -v n="flas-flas-r$2-$1-a1-$3" '$2 == n {print $1, $3}'
}
cancel_run() { # RUN: this run's jobs at the sites, if any still run
    local s
    for s in "${SITES[@]}"; do
        SLURM_CONF=$(sconf "$s") squeue -h -o '%i %j' | awk -v r="-$1" 'index($2, r) {print $1}' |
            xargs -r env SLURM_CONF="$(sconf "$s")" scancel || true
    done
}

case_two_rounds() {
    bed_setup
    [ -f "$BED/coord/global0.h5" ] || fail "no $BED/coord/global0.h5: run tests/coordinator/coord-tests.sh setup (fixture coord_data)"
    local run="cwl$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')" s k
    rm -rf "$WORK"
    install -d -m 755 "$WORK" "$WORK/tmp"
    CWL_PID=""
    trap '[ -n "$CWL_PID" ] && kill $CWL_PID 2>/dev/null; cancel_run '"$run"'; rm -rf "$WORK/tmp"' EXIT
    clear_staging
    # The federation as the workflow's inputs: what coord-tests.sh `write_conf 2 2 20` describes
    # (each site's job on both of its nodes).
    {
        echo "federation: flas"
        echo "rounds: 2"
        echo "initial_global: {class: File, path: $BED/coord/global0.h5}"
        echo "known_hosts: $P_known_hosts"
        echo "strategy: fedavg"
        echo "signal: USR1@20"
        echo "deadline: 600"
        echo "poll_min: 1"
        echo "poll_max: 2"
        echo "run_id: $run"
        echo "flas_stage: $BIN/flas-stage"
        echo "flas_aggregate: $BIN/flas-aggregate"
        echo "sites:"
        for s in "${SITES[@]}"; do
            echo "  - name: $s"
            echo "    host: $(addr "$s")"
            echo "    user: $P_user"
            echo "    identity: $P_user_key"
            echo "    staging_root: $(sdir "$s")/stage"
            echo "    script: $EXAMPLES/flas-train.sbatch"
            echo "    nodes: 2"
            echo "    tasks: 2"
            echo "    cpus_per_task: 1"
            echo "    time: 5"
            echo "    script_args: [\"$(script_args "$s" | sed 's/,/", "/g')\"]"
        done
    } >"$WORK/inputs.yml"
    # cwltool runs as root here, as the coordinator does in coord-tests.sh: it holds the jobs' user's key
    # and reaches the sites over SSH as that user, so everything at the sites runs as $P_user. Its
    # directories hold models only (the sites' text and shards never leave them).
    cwltool --enable-ext --parallel --outdir "$WORK/out" --tmpdir-prefix "$WORK/tmp/" --tmp-outdir-prefix "$WORK/tmp/" \
        "$CWL/flas-federation.cwl" "$WORK/inputs.yml" >"$WORK/result.json" 2>"$WORK/cwl.log" &
    CWL_PID=$!
    wait $CWL_PID || fail "the workflow failed: $(grep -E 'flas-cwl-site|ERROR|flas-aggregate' "$WORK/cwl.log" | tail -8)"
    CWL_PID=""
    local g="$WORK/out/round-000002.h5"
    [ -f "$g" ] || fail "the workflow wrote no round-2 global"
    [ "$(h5attr "$g" round)" = 2 ] && [ "$(h5attr "$g" role)" = global ] || fail "$g is not round 2's global"
    grep -q "flas-cwl-site" "$WORK/cwl.log" || fail "no site step ran"
    # Slurm ran the jobs: one job per site and round with this run's name, COMPLETED, whose published
    # checkpoint (its manifest's sha256) is what the workflow merged into that round's global
    local jobs line id state m r1="$WORK/cwl-round-000001.h5" shas
    cp "$(sdir leonardo)/stage/flas/global/round-000001.h5" "$r1" # the round-1 global the workflow staged
    for k in 0 1; do
        shas=""
        for s in "${SITES[@]}"; do
            jobs=$(slurm_jobs "$s" $k "$run")
            [ "$(wc -l <<<"$jobs")" = 1 ] && [ -n "$jobs" ] || fail "Slurm at $s lists $(grep -c . <<<"$jobs") jobs of round $k for run $run"
            read -r id state <<<"$jobs"
            [ "$state" = COMPLETED ] || fail "$s's round-$k job $id is $state"
            m="$(sdir "$s")/stage/flas/outbox/round-00000$k/$s-job$id.manifest.json"
            [ -f "$m" ] || fail "no manifest of job $id at $s"
            shas+="$(manifest_sha "$m") "
            echo "round $k: $s job $id $state"
        done
        [ "$(input_shas "$([ $k = 0 ] && echo "$r1" || echo "$g")")" = "${shas% }" ] ||
            fail "round $k's global does not merge the checkpoints the Slurm jobs published"
    done
    cmp -s "$(sdir karolina)/stage/flas/global/round-000001.h5" "$r1" || fail "the sites trained round 1 from different globals"
    # The same federation by flas-coordinator: coord-tests.sh's description for `write_conf 2 2 20`
    clear_staging
    {
        echo "Federation=flas WorkDir=$WORK/coord InitialGlobal=$BED/coord/global0.h5 KnownHosts=$P_known_hosts"
        echo "  Rounds=2 MinSites=2 Strategy=fedavg Sync=begin BeginDelay=1 PollInterval=1 PollMax=2"
        echo "  RoundDeadline=600 Signal=USR1@20"
        for s in "${SITES[@]}"; do
            echo "Site=$s Host=$(addr "$s") User=$P_user Identity=$P_user_key StagingRoot=$(sdir "$s")/stage"
            echo "  Script=$EXAMPLES/flas-train.sbatch Nodes=2 Tasks=2 CpusPerTask=1 Time=5"
            echo "  ScriptArgs=$(script_args "$s")"
        done
    } >"$WORK/coordinator.conf"
    "$BIN/flas-coordinator" run "$WORK/coordinator.conf" >"$WORK/coord.out" 2>"$WORK/coord.err" ||
        fail "flas-coordinator failed: $(tail -3 "$WORK/coord.err")"
    local c1="$WORK/coord/global/round-000001.h5" c2="$WORK/coord/global/round-000002.h5"
    same_params "$r1" "$c1" || fail "round 1: the workflow's global and the coordinator's differ"
    same_params "$g" "$c2" || fail "round 2: the workflow's global and the coordinator's differ"
    same_params "$g" "$BED/coord/global0.h5" 2>/dev/null && fail "the rounds did not change the model"
    rm -rf "$WORK/tmp"
    [ -z "$(find "$WORK" -name '*.flastok')" ] || fail "a token shard in $WORK"
    pass "two rounds by the CWL workflow (Slurm ran one COMPLETED job per site and round, their published checkpoints were merged) equal flas-coordinator's two rounds parameter for parameter (rounds 1 and 2)"
}

case "${CASE//-/_}" in
validate) case_validate ;;
two_rounds) case_two_rounds ;;
*) fail "unknown case $CASE" ;;
esac
