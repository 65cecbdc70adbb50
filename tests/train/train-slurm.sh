#!/usr/bin/env bash
# flas-train under the real one-node Slurm test bed (fixture slurm_single; label slurm): the example
# batch script slurm-examples/flas-train.sbatch is submitted as the unprivileged bed user with
# --federation=flas and runs `srun --mpi=pmix` with 2 ranks of the installed flas-train.
#   publish        a tiny model trains from a staged global made with --init; the epilog publishes the
#                  local checkpoint: manifest in outbox/, file readable by h5py, tokens_trained > 0,
#                  base_sha256 = the staged global's sha256 (in the file and in the manifest)
#   signal         USR1 to the batch shell (scancel -b, what sbatch --signal=B: does): the script
#                  forwards it, flas-train checkpoints and the job ends COMPLETED with stop_reason signal
#   sbatch-signal  the real thing: --time=1 --signal=B:USR1@50; also shows flas-train learned the job's
#                  end from libslurm (walltime line)
#   refuse         a staged global that fails the prolog's sha256 check: FLAS_ERROR reaches flas-train,
#                  which refuses; the job FAILS and nothing is published
# usage: train-slurm.sh FIXTURE_DIR CASE   (FIXTURE_DIR: shards data/ valid/ of the train_fixture test)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BEDCTL="$HERE/../bed/flas-bed"
BED=${FLAS_BED_DIR:-/var/tmp/flas-bed}
BED_USER=${FLAS_BED_USER:-flastest}
PY=/usr/bin/python3
STAGE="$BED/single/stage"
CONF="$BED/single/etc/slurm.conf"
SCRIPT="$HERE/../../slurm-examples/flas-train.sbatch"
BIN="$BED/install/usr/local/bin"
FIXTURE=${1:?usage: train-slurm.sh FIXTURE_DIR CASE}
CASE=${2:?usage: train-slurm.sh FIXTURE_DIR CASE}

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "PASS: $*"; }
as_user() { "$BEDCTL" as-user single "$@"; }
[ -x "$BIN/flas-train" ] || fail "flas-train is not installed in the bed ($BIN): the install rule is missing"
[ -d "$FIXTURE/data" ] || fail "no fixture shards in $FIXTURE"

workdir() { # a directory the bed user owns, with the job script and a copy of the shards
    local d="$BED/work/train-$1"
    rm -rf "$d"
    install -d -m 755 -o "$BED_USER" -g "$BED_USER" "$d"
    cp -r "$FIXTURE/data" "$FIXTURE/valid" "$d/"
    install -m 755 "$SCRIPT" "$d/flas-train.sbatch"
    chown -R "$BED_USER:$BED_USER" "$d"
    echo "$d"
}
# The coordinator's staging of round R: the model (here made with flas-train --init as the user that
# owns global/), then its sha256 sidecar.
stage_global() { # ROUND
    local g="$STAGE/flas/global" name
    name=$(printf 'round-%06d.h5' "$1")
    find "$g" -mindepth 1 -delete
    runuser -u "$BED_USER" -- "$BIN/flas-train" --init --dim 64 --layers 2 --heads 4 --kv-heads 2 --vocab 128 \
        --seq-len 64 --round "$1" --output "$g/$name" >/dev/null
    runuser -u "$BED_USER" -- sh -c "cd '$g' && sha256sum '$name' > '$name.sha256'"
    cut -d' ' -f1 "$g/$name.sha256"
}
manifest() { echo "$STAGE/flas/outbox/$(printf 'round-%06d' "$1")/single-job$2.manifest.json"; }
json_get() { $PY -c 'import json,sys; v=json.load(open(sys.argv[1]))[sys.argv[2]]; print("null" if v is None else v)' "$1" "$2"; }
h5_attr() { $PY -c 'import h5py,sys; f=h5py.File(sys.argv[1],"r"); print(f[sys.argv[2]].attrs[sys.argv[3]])' "$1" "$2" "$3"; }
job_field() { SLURM_CONF=$CONF scontrol show job "$1" | tr ' ' '\n' | grep "^$2=" | cut -d= -f2; }
wait_gone() { local i; for i in $(seq 600); do [ -z "$(SLURM_CONF=$CONF squeue -h -j "$1" 2>/dev/null)" ] && return 0; sleep 0.2; done; fail "job $1 still queued"; }
published() { # ROUND JOB SHA -> the published checkpoint, checked
    local m ck
    m=$(manifest "$1" "$2")
    for _ in $(seq 50); do [ -f "$m" ] && break; sleep 0.2; done
    [ -f "$m" ] || fail "job $2: no manifest $m"
    [ "$(json_get "$m" job_state)" = COMPLETED ] || fail "job $2: job_state $(json_get "$m" job_state)"
    ck="$(dirname "$m")/$(json_get "$m" checkpoint)"
    [ -f "$ck" ] || fail "job $2: the manifest names no published checkpoint: $(cat "$m")"
    [ "$(json_get "$m" base_sha256)" = "$3" ] || fail "manifest base_sha256 $(json_get "$m" base_sha256) != staged $3"
    [ "$(sha256sum <"$ck" | cut -d' ' -f1)" = "$(json_get "$m" sha256)" ] || fail "published file differs from its manifest"
    [ "$(h5_attr "$ck" / complete)" = 1 ] || fail "published checkpoint lacks the completion marker"
    [ "$(h5_attr "$ck" / base_sha256)" = "$3" ] || fail "checkpoint base_sha256 $(h5_attr "$ck" / base_sha256) != $3"
    [ "$(h5_attr "$ck" / role)" = local ] && [ "$(h5_attr "$ck" / site)" = single ] || fail "role/site wrong"
    [ "$(h5_attr "$ck" / tokens_trained)" -gt 0 ] || fail "tokens_trained is 0"
    echo "$ck"
}

case_publish() {
    local d sha job ck
    d=$(workdir publish)
    sha=$(stage_global 0)
    job=$(as_user sbatch --wait --parsable --chdir="$d" -o "$d/out" --federation=flas --federation-round=0 \
        --signal=B:USR1@60 "$d/flas-train.sbatch" --data "$d/data" --valid "$d/valid" --steps 20 --batch 2 --seq 32 \
        --log-every 5) || fail "the job failed: $(cat "$d/out")"
    grep -q "OpenMP thread.*BLAS" "$d/out" || fail "no thread/BLAS start-up line: $(cat "$d/out")"
    grep -q "2 ranks = tp 1 x dp 2" "$d/out" || fail "not 2 MPI ranks: $(cat "$d/out")"
    ck=$(published 0 "$job" "$sha")
    [ "$(h5_attr "$ck" / tokens_trained)" = $((20 * 2 * 32 * 2)) ] || fail "tokens_trained $(h5_attr "$ck" / tokens_trained)"
    [ "$(h5_attr "$ck" / step)" = 20 ] || fail "step $(h5_attr "$ck" / step)"
    $PY -c 'import h5py,math,sys; m=h5py.File(sys.argv[1],"r")["metrics"].attrs; sys.exit(not math.isfinite(m["valid_loss"]))' "$ck" ||
        fail "no validation loss in the published checkpoint"
    [ -s "$STAGE/flas/jobs/$job/metrics.jsonl" ] || fail "no metrics.jsonl in FLAS_OUTPUT_DIR"
    pass "job $job: srun --mpi=pmix -n 2 flas-train trained 20 steps from the staged global; the epilog published a complete checkpoint (tokens_trained 2560, base_sha256 = staged $sha)"
}

case_signal() {
    local d sha job
    d=$(workdir signal)
    sha=$(stage_global 0)
    job=$(as_user sbatch --parsable --chdir="$d" -o "$d/out" --federation=flas --federation-round=0 \
        "$d/flas-train.sbatch" --data "$d/data" --steps 100000000 --batch 2 --seq 32 --log-every 200)
    for _ in $(seq 300); do grep -q "^step 200/" "$d/out" 2>/dev/null && break; sleep 0.2; done
    grep -q "^step 200/" "$d/out" || fail "job $job did not start training: $(cat "$d/out" 2>/dev/null)"
    as_user scancel --batch --signal=USR1 "$job"
    wait_gone "$job"
    [ "$(job_field "$job" JobState)" = COMPLETED ] && [ "$(job_field "$job" ExitCode)" = 0:0 ] ||
        fail "job $job: $(job_field "$job" JobState) $(job_field "$job" ExitCode): $(cat "$d/out")"
    grep -q "SIGUSR1 received" "$d/out" || fail "the batch script did not forward USR1"
    ck=$(published 0 "$job" "$sha")
    [ "$(h5_attr "$ck" metrics stop_reason)" = signal ] || fail "stop_reason $(h5_attr "$ck" metrics stop_reason)"
    pass "job $job: USR1 to the batch shell -> forwarded to srun and both ranks -> checkpoint at step $(h5_attr "$ck" / step), COMPLETED 0:0, published"
}

case_sbatch_signal() {
    local d sha job
    d=$(workdir sbatch-signal)
    sha=$(stage_global 0)
    # Slurm sends --signal within a minute of the requested time: with --time=1 and @50 it can come at
    # any moment of the job; flas-train's own walltime stop would come ~2 s before the end.
    job=$(as_user sbatch --wait --parsable --chdir="$d" -o "$d/out" --federation=flas --federation-round=0 --time=1 \
        --signal=B:USR1@50 "$d/flas-train.sbatch" --data "$d/data" --steps 100000000 --batch 2 --seq 32 \
        --log-every 2000) || fail "job failed: $(cat "$d/out")"
    grep -Eq "walltime: [0-9]+ s left" "$d/out" || fail "flas-train did not learn the job's end from Slurm: $(cat "$d/out")"
    left=$(grep -Eo "walltime: [0-9]+ s left" "$d/out" | grep -Eo "[0-9]+")
    [ "$left" -le 60 ] || fail "walltime $left s for a --time=1 job"
    # Slurm 22.05 exports no SLURM_JOB_END_TIME: the end must come from slurmctld through libslurm
    src=$(sed -n 's/^flas-train: the job ends in [0-9]* s (\(.*\))$/\1/p' "$d/out")
    [ "$src" = "libslurm slurm_get_rem_time" ] || fail "the job's end came from '$src', not libslurm"
    ck=$(published 0 "$job" "$sha")
    reason=$(h5_attr "$ck" metrics stop_reason)
    [ "$reason" = signal ] || fail "stop_reason $reason (expected signal): $(cat "$d/out")"
    pass "job $job (--time=1 --signal=B:USR1@50): libslurm gave flas-train ${left} s; USR1 arrived, the checkpoint (step $(h5_attr "$ck" / step)) was written and published, job COMPLETED"
}

case_refuse() {
    local d job g m
    d=$(workdir refuse)
    stage_global 0 >/dev/null
    g="$STAGE/flas/global/round-000000.h5"
    runuser -u "$BED_USER" -- sh -c "printf 'X' | dd of='$g' bs=1 seek=3000 conv=notrunc status=none"
    set +e
    job=$(as_user sbatch --wait --parsable --chdir="$d" -o "$d/out" --federation=flas --federation-round=0 \
        "$d/flas-train.sbatch" --data "$d/data" --steps 5 --batch 2 --seq 32)
    set -e
    job=$(echo "$job" | tail -n 1)
    grep -q "flas-train: error: refusing to train: the federation plugin reports:.*verification" "$d/out" ||
        fail "flas-train did not refuse with the plugin's reason: $(cat "$d/out")"
    [ "$(job_field "$job" JobState)" = FAILED ] || fail "job $job is $(job_field "$job" JobState)"
    m=$(manifest 0 "$job")
    for _ in $(seq 50); do [ -f "$m" ] && break; sleep 0.2; done
    [ "$(json_get "$m" checkpoint)" = null ] || fail "a checkpoint was published for a refused job"
    pass "job $job: a staged global failing its sha256 check -> FLAS_ERROR -> flas-train refuses, job FAILED, nothing published"
}

"case_${CASE//-/_}"
