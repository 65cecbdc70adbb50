#!/usr/bin/env bash
# Integration tests of flas.so on the real one-node test-bed cluster (fixture slurm_single). Jobs are
# submitted as the unprivileged bed user; the staging area is the bed's (see tests/bed/bed-lib.sh).
# usage: spank-tests.sh CASE
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BEDCTL="$HERE/../bed/flas-bed"
BED=${FLAS_BED_DIR:-/var/tmp/flas-bed}
BED_USER=${FLAS_BED_USER:-flastest}
PY=/usr/bin/python3
STAGE="$BED/single/stage"
CONF="$BED/single/etc/slurm.conf"

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "PASS: $*"; }
as_user() { "$BEDCTL" as-user single "$@"; }
workdir() {
    local d="$BED/work/spank-$1"
    rm -rf "$d"
    install -d -m 755 -o "$BED_USER" -g "$BED_USER" "$d"
    echo "$d"
}
# Stage a global model for FED round R the way the coordinator does: as its login user, the data first,
# then the sha256 sidecar.
stage_model() { # FED ROUND
    local g="$STAGE/$1/global" name
    name=$(printf 'round-%06d.h5' "$2")
    runuser -u "$BED_USER" -- sh -c "head -c 200000 /dev/urandom > '$g/$name' && cd '$g' && sha256sum '$name' > '$name.sha256'"
}
# Each case starts from empty global/ directories, so "the newest staged round" is the case's own.
reset_stage() {
    local g
    for g in "$STAGE"/*/global; do find "$g" -mindepth 1 -delete; done
}
sha_of_staged() { cut -d' ' -f1 "$STAGE/$1/global/$(printf 'round-%06d.h5' "$2").sha256"; }
job_count() { SLURM_CONF=$CONF scontrol show jobs -o 2>/dev/null | grep -c JobId= || true; }
node_not_drained() {
    local st
    st=$(SLURM_CONF=$CONF sinfo -h -N -o %T)
    case "$st" in drain* | *drain* | down*) fail "the node is '$st' after: $1" ;; esac
}
# Runs a batch script as the bed user, waits, prints the job id; the job's output goes to DIR/out.
submit_wait() { # DIR SBATCH_ARGS... (script on stdin)
    local d=$1 out
    shift
    cat >"$d/job.sh"
    chmod 755 "$d/job.sh"
    out=$(as_user sbatch --wait --parsable --chdir="$d" -o "$d/out" "$@" "$d/job.sh") || true
    echo "$out" | tail -n 1
}
env_of() { grep -m 1 "^$2=" "$1" | cut -d= -f2-; }
manifest() { echo "$STAGE/$1/outbox/$(printf 'round-%06d' "$2")/single-job$3.manifest.json"; }
json_get() { $PY -c 'import json,sys; v=json.load(open(sys.argv[1]))[sys.argv[2]]; print("null" if v is None else v)' "$1" "$2"; }

case_help() {
    local h
    h=$(as_user sbatch --help)
    grep -q -- "--federation=NAME" <<<"$h" || fail "sbatch --help does not list --federation=NAME"
    grep -q -- "--federation-round=N" <<<"$h" || fail "sbatch --help does not list --federation-round=N"
    h=$(as_user salloc --help)
    grep -q -- "--federation=NAME" <<<"$h" || fail "salloc --help does not list --federation"
    h=$(as_user srun --help)
    grep -q -- "--federation=NAME" <<<"$h" || fail "srun --help does not list --federation"
    pass "sbatch, salloc and srun --help list the options"
}

case_directive() { # #SBATCH --federation=flas: the batch step and an inner srun see FLAS_*
    local d job
    d=$(workdir directive)
    stage_model flas 1
    stage_model flas 2
    job=$(submit_wait "$d" <<'EOF'
#!/bin/bash
#SBATCH --federation=flas
env | grep ^FLAS_ | sort > batch.env
srun env | grep ^FLAS_ | sort > step.env
EOF
)
    [ -s "$d/batch.env" ] || fail "job $job wrote no environment: $(cat "$d/out" 2>/dev/null)"
    [ "$(env_of "$d/batch.env" FLAS_FEDERATION)" = flas ] || fail "FLAS_FEDERATION: $(cat "$d/batch.env")"
    [ "$(env_of "$d/batch.env" FLAS_SITE)" = single ] || fail "FLAS_SITE wrong"
    [ "$(env_of "$d/batch.env" FLAS_ROUND)" = 2 ] || fail "default round is not the newest staged (2): $(env_of "$d/batch.env" FLAS_ROUND)"
    [ "$(env_of "$d/batch.env" FLAS_GLOBAL_SHA256)" = "$(sha_of_staged flas 2)" ] || fail "FLAS_GLOBAL_SHA256 wrong"
    [ "$(env_of "$d/batch.env" FLAS_GLOBAL_CHECKPOINT)" = "$STAGE/flas/global/round-000002.h5" ] || fail "FLAS_GLOBAL_CHECKPOINT wrong"
    [ "$(env_of "$d/batch.env" FLAS_OUTPUT_CHECKPOINT)" = "$STAGE/flas/jobs/$job/local.h5" ] || fail "FLAS_OUTPUT_CHECKPOINT wrong"
    [ "$(env_of "$d/batch.env" FLAS_STAGE_DIR)" = "$STAGE/flas" ] || fail "FLAS_STAGE_DIR wrong"
    [ -z "$(env_of "$d/batch.env" FLAS_ERROR)" ] || fail "unexpected FLAS_ERROR: $(env_of "$d/batch.env" FLAS_ERROR)"
    cmp -s "$d/batch.env" "$d/step.env" || fail "inner srun sees a different FLAS_* environment: $(diff "$d/batch.env" "$d/step.env")"
    [ "$(stat -c %U:%a "$STAGE/flas/jobs/$job")" = "$BED_USER:700" ] || fail "job directory not owned by $BED_USER with mode 700"
    node_not_drained directive
    pass "#SBATCH --federation=flas: batch step and inner srun see FLAS_* (round 2, verified sha256)"
}

case_cmdline_round() { # sbatch --federation=flas --federation-round=1 on the command line
    local d job
    d=$(workdir cmdline)
    stage_model flas 1
    stage_model flas 2
    job=$(submit_wait "$d" --federation=flas --federation-round=1 <<'EOF'
#!/bin/bash
env | grep ^FLAS_ | sort > batch.env
EOF
)
    [ "$(env_of "$d/batch.env" FLAS_ROUND)" = 1 ] || fail "job $job: FLAS_ROUND is not 1: $(cat "$d/batch.env")"
    [ "$(env_of "$d/batch.env" FLAS_GLOBAL_SHA256)" = "$(sha_of_staged flas 1)" ] || fail "sha256 of round 1 wrong"
    pass "command-line --federation=flas --federation-round=1"
}

case_srun_override() { # an inner srun --federation=other overrides the job's federation for that step
    local d
    d=$(workdir override)
    stage_model flas 1
    stage_model other 4
    submit_wait "$d" --federation=flas <<'EOF' >/dev/null
#!/bin/bash
srun env | grep ^FLAS_ | sort > inherit.env
srun --federation=other env | grep ^FLAS_ | sort > other.env
EOF
    [ "$(env_of "$d/inherit.env" FLAS_FEDERATION)" = flas ] || fail "plain inner srun lost the federation"
    [ "$(env_of "$d/other.env" FLAS_FEDERATION)" = other ] || fail "srun --federation=other did not override: $(cat "$d/other.env")"
    [ "$(env_of "$d/other.env" FLAS_ROUND)" = 4 ] || fail "the overriding step does not see round 4 of 'other'"
    [ -n "$(env_of "$d/other.env" FLAS_ERROR)" ] || fail "a step of another federation must not get an output checkpoint"
    [ -z "$(env_of "$d/other.env" FLAS_OUTPUT_CHECKPOINT)" ] || fail "overriding step got FLAS_OUTPUT_CHECKPOINT"
    pass "srun --federation=other overrides the batch job's federation for its step"
}

case_srun_direct() { # srun --federation=flas without sbatch (local context + prolog)
    local d out
    d=$(workdir srun)
    stage_model flas 3
    out=$(cd "$d" && as_user srun --chdir="$d" --federation=flas env) || fail "srun --federation=flas failed"
    grep -q "^FLAS_ROUND=3$" <<<"$out" || fail "srun step lacks FLAS_ROUND=3"
    grep -q "^FLAS_OUTPUT_CHECKPOINT=" <<<"$out" || fail "srun step lacks FLAS_OUTPUT_CHECKPOINT"
    pass "srun --federation=flas exports FLAS_* to its tasks"
}

case_refused() { # bad values and unknown or closed federations: exit != 0, no job, one clear line
    local before after a out rc
    stage_model flas 1
    before=$(job_count)
    for a in "--federation=-x" "--federation=a/b" "--federation=" "--federation-round=abc" "--federation-round=-1" \
        "--federation=nosuch" "--federation=closed" "--federation=flas --federation-round=99" "--federation-round=1"; do
        set +e
        # shellcheck disable=SC2086
        out=$(as_user sbatch $a --wrap true 2>&1)
        rc=$?
        set -e
        [ $rc != 0 ] || fail "sbatch $a was accepted: $out"
        grep -q "Submitted batch job" <<<"$out" && fail "sbatch $a created a job"
        grep -q "^sbatch: error: flas: " <<<"$out" || fail "sbatch $a gave no flas message: $out"
        echo "refused: sbatch $a -> $(echo "$out" | grep 'flas: ' | head -n 1)"
    done
    as_user sbatch --federation --wrap true >/dev/null 2>&1 && fail "'--federation --wrap true' was accepted"
    after=$(job_count)
    [ "$before" = "$after" ] || fail "refused submissions created jobs ($before -> $after)"
    node_not_drained refused
    pass "bad values, unknown and closed federations and unstaged rounds are refused with no job"
}

case_export_none() { # sbatch --export=NONE: the job still gets FLAS_* (documented in docs/user.md)
    local d
    d=$(workdir export-none)
    stage_model flas 1
    # Under --export=NONE, inner steps inherit SLURM_EXPORT_ENV=NONE too: they have no PATH, and no
    # FLAS_* from the batch step; the plugin exports FLAS_* to them itself.
    submit_wait "$d" --export=NONE --federation=flas <<'EOF' >/dev/null
#!/bin/bash
/usr/bin/env | grep ^FLAS_ | sort > batch.env
srun /usr/bin/env | grep ^FLAS_ | sort > step.env
EOF
    [ "$(env_of "$d/batch.env" FLAS_FEDERATION)" = flas ] || fail "--export=NONE: no FLAS_FEDERATION in the batch step"
    [ -n "$(env_of "$d/batch.env" FLAS_OUTPUT_CHECKPOINT)" ] || fail "--export=NONE: no FLAS_OUTPUT_CHECKPOINT"
    cmp -s "$d/batch.env" "$d/step.env" || fail "--export=NONE: the inner step differs"
    pass "--export=NONE keeps the FLAS_* environment (batch step and inner srun)"
}

case_publish() { # the epilog publishes the checkpoint with a correct manifest
    local d job m ck
    d=$(workdir publish)
    stage_model flas 5
    job=$(submit_wait "$d" --federation=flas <<'EOF'
#!/bin/bash
head -c 123457 /dev/urandom > "$FLAS_OUTPUT_CHECKPOINT"
sha256sum < "$FLAS_OUTPUT_CHECKPOINT" | cut -d' ' -f1 > written.sha
EOF
)
    m=$(manifest flas 5 "$job")
    [ -f "$m" ] || fail "no manifest $m"
    ck="$(dirname "$m")/$(json_get "$m" checkpoint)"
    [ -f "$ck" ] || fail "manifest names a missing checkpoint $ck"
    [ "$(json_get "$m" sha256)" = "$(cat "$d/written.sha")" ] || fail "manifest sha256 differs from what the job wrote"
    [ "$(sha256sum <"$ck" | cut -d' ' -f1)" = "$(cat "$d/written.sha")" ] || fail "published file differs"
    [ "$(json_get "$m" size)" = 123457 ] || fail "manifest size wrong"
    [ "$(json_get "$m" round)" = 5 ] || fail "manifest round wrong"
    [ "$(json_get "$m" site)" = single ] || fail "manifest site wrong"
    [ "$(json_get "$m" job_id)" = "$job" ] || fail "manifest job id wrong"
    [ "$(json_get "$m" job_state)" = COMPLETED ] || fail "manifest job_state $(json_get "$m" job_state)"
    [ "$(json_get "$m" base_sha256)" = "$(sha_of_staged flas 5)" ] || fail "manifest base_sha256 wrong"
    [ "$(stat -c %U "$ck")" = "$BED_USER" ] || fail "published checkpoint not owned by the job's user"
    [ "$(stat -c %U:%a "$m")" = root:644 ] || fail "manifest is not root's, mode 644"
    [[ "$(ls -a "$(dirname "$m")")" == *.tmp.* ]] && fail "temporary files left in the outbox"
    pass "epilog published job $job's checkpoint and a correct manifest"
}

case_failed_job() { # a failing job without a checkpoint gets a manifest saying so
    local d job m
    d=$(workdir failed)
    stage_model flas 6
    job=$(submit_wait "$d" --federation=flas <<'EOF'
#!/bin/bash
exit 3
EOF
)
    m=$(manifest flas 6 "$job")
    [ -f "$m" ] || fail "no manifest for the failed job"
    [ "$(json_get "$m" job_state)" = FAILED ] || fail "job_state $(json_get "$m" job_state), expected FAILED"
    [ "$(json_get "$m" exit_code)" = 3 ] || fail "exit_code $(json_get "$m" exit_code)"
    [ "$(json_get "$m" checkpoint)" = null ] || fail "a checkpoint was published for a job that wrote none"
    node_not_drained failed_job
    pass "a failed job is recorded (FAILED, exit 3, no checkpoint), node not drained"
}

case_symlink_attack() { # a symlink or hard link in place of the checkpoint never makes root read or write elsewhere
    local d job m target kind
    stage_model flas 7
    target="$BED/work/spank-victim"
    echo "not a checkpoint" >"$target"
    chown "$BED_USER" "$target"
    for kind in shadow own fifo hardlink dirlink; do
        d=$(workdir "symlink-$kind")
        job=$(submit_wait "$d" --federation=flas <<EOF
#!/bin/bash
case $kind in
shadow) ln -s /etc/shadow "\$FLAS_OUTPUT_CHECKPOINT" ;;
own) ln -s $target "\$FLAS_OUTPUT_CHECKPOINT" ;;
fifo) mkfifo "\$FLAS_OUTPUT_CHECKPOINT" ;;
hardlink) ln $target "\$FLAS_OUTPUT_CHECKPOINT" ;;
dirlink) # the job directory sits in a root-owned directory: the user can neither move nor replace it
    mv "\$FLAS_OUTPUT_DIR" "\$FLAS_OUTPUT_DIR.moved" 2>/dev/null && echo moved > swapped
    rm -rf "\$FLAS_OUTPUT_DIR" 2>/dev/null; ln -snfT /etc "\$FLAS_OUTPUT_DIR" 2>/dev/null && echo linked >> swapped ;;
esac
exit 0
EOF
)
        m=$(manifest flas 7 "$job")
        [ -f "$m" ] || fail "$kind: no manifest"
        [ "$(json_get "$m" checkpoint)" = null ] || fail "$kind: root published a checkpoint: $(json_get "$m" checkpoint)"
        echo "$kind: refused: $(json_get "$m" error)"
        [ -e "$(dirname "$m")/single-job$job.h5" ] && fail "$kind: a file was published"
        [ ! -e "$d/swapped" ] || fail "$kind: the user could replace the job directory: $(cat "$d/swapped")"
    done
    [ "$(cat "$target")" = "not a checkpoint" ] || fail "the symlink target was modified"
    [ "$(stat -c %U "$target")" = "$BED_USER" ] || fail "the symlink target changed owner"
    node_not_drained symlink_attack
    pass "symlinks, FIFOs, hard links and a swapped job directory are refused; nothing outside is touched"
}

case_corrupt_model() { # a staged model that fails sha256 verification: the job learns it, node stays up
    local d job g
    d=$(workdir corrupt)
    stage_model flas 8
    g="$STAGE/flas/global/round-000008.h5"
    runuser -u "$BED_USER" -- sh -c "printf 'X' | dd of='$g' bs=1 seek=1000 conv=notrunc status=none"
    job=$(submit_wait "$d" --federation=flas --federation-round=8 <<'EOF'
#!/bin/bash
env | grep ^FLAS_ | sort > batch.env
EOF
)
    [[ "$(env_of "$d/batch.env" FLAS_ERROR)" == *"failed verification"* ]] || fail "no verification error: $(cat "$d/batch.env")"
    [ -z "$(env_of "$d/batch.env" FLAS_OUTPUT_CHECKPOINT)" ] || fail "an unverified model got an output checkpoint"
    grep -q "flas-train will refuse" "$d/out" || fail "the job's output does not explain the refusal"
    [ "$(json_get "$(manifest flas 8 "$job")" checkpoint)" = null ] || fail "published for an unverified model"
    node_not_drained corrupt_model
    pass "a corrupt staged model is caught by the prolog's sha256 check; job told, node not drained"
}

case_cli_filter() { # slurm-examples/cli_filter.lua puts a --federation-round=K job in the round's reservation
    local d job res
    d=$(workdir cli-filter)
    stage_model flas 3
    # a client-side configuration with the cli_filter plugin (only clients read CliFilterPlugins)
    install -d -m 755 "$d/etc"
    sed "s|^PlugStackConfig=|CliFilterPlugins=cli_filter/lua\nPlugStackConfig=|" "$CONF" >"$d/etc/slurm.conf"
    install -m 644 "$HERE/../../slurm-examples/cli_filter.lua" "$d/etc/cli_filter.lua"
    # (a reservation that held jobs cannot be deleted while they are remembered: reuse it then)
    SLURM_CONF=$CONF scontrol delete reservation=flas-flas-r3 >/dev/null 2>&1 || true
    SLURM_CONF=$CONF scontrol show reservation flas-flas-r3 >/dev/null 2>&1 ||
        SLURM_CONF=$CONF scontrol create reservation ReservationName=flas-flas-r3 StartTime=now Duration=10 \
            Users="$BED_USER" Nodes=ALL Flags=IGNORE_JOBS >/dev/null || fail "cannot create the reservation"
    job=$(cd "$d" && runuser -u "$BED_USER" -- env SLURM_CONF="$d/etc/slurm.conf" sbatch --parsable --hold \
        --federation=flas --federation-round=3 --wrap true) || fail "sbatch with the cli_filter failed"
    res=$(SLURM_CONF=$CONF scontrol show job "$job" | grep -o 'Reservation=[^ ]*' || true)
    SLURM_CONF=$CONF scancel "$job"
    [ "$res" = "Reservation=flas-flas-r3" ] || fail "job $job is in '$res', not flas-flas-r3"
    # a round without a reservation is left alone
    stage_model flas 4
    job=$(cd "$d" && runuser -u "$BED_USER" -- env SLURM_CONF="$d/etc/slurm.conf" sbatch --parsable --hold \
        --federation=flas --federation-round=4 --wrap true) || fail "sbatch of a round without reservation failed"
    res=$(SLURM_CONF=$CONF scontrol show job "$job" | grep -o 'Reservation=[^ ]*' || true)
    SLURM_CONF=$CONF scancel "$job"
    SLURM_CONF=$CONF scontrol delete reservation=flas-flas-r3 >/dev/null 2>&1 || true
    [ -z "$res" ] || [ "$res" = "Reservation=(null)" ] || fail "round 4's job was put in '$res'"
    pass "cli_filter.lua: --federation-round=3 lands in reservation flas-flas-r3; round 4 (no reservation) is left alone"
}

case="${1:?usage: spank-tests.sh CASE}"
reset_stage
"case_${case//-/_}"
