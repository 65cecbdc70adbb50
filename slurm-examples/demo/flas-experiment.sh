#!/usr/bin/env bash
# The bilingual experiment (docs/experiment.md): for the same token budget, trains
#   local-IT   only Italian, at leonardo            local-CS   only Czech, at karolina
#   pooled     both languages in one place (the data MOVED: a reference upper bound, not federated)
#   tuned      federated: kept AdamW state, one cosine over the run, FedAvgM (docs/tuning.md)
#   FedAvg     federated as FLaS did before: AdamW restarted every round, constant lr, FedAvg
# then measures every model's validation perplexity on Italian (at leonardo) and on Czech (at
# karolina), writes a table and gnuplot plots of the federated runs' validation loss per round.
#
# usage: flas-experiment.sh [--rounds N] [--steps N] [--plain] [--out DIR] [--skip-build]
#   --rounds N   federated rounds (default 45)
#   --steps N    steps per site and round (default 20); local-only and pooled runs train
#                2 x rounds x steps steps, so every model sees the same number of tokens
#   --plain      the experiment as first published: 6 x 150, constant lr for every model, FedAvg and
#                DiLoCo (outer Nesterov lr 0.7, momentum 0.9) with AdamW restarted every round
#   --out DIR    results (default: build/experiment)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/demo-lib.sh"

ROUNDS="" STEPS="" OUT="$ROOT/build/experiment" BUILD=1
demo_option() {
    case "$1" in
    --out) OUT=$2; DEMO_SHIFT=2 ;;
    --plain) TUNED=0; DEMO_SHIFT=1 ;;
    *) return 1 ;;
    esac
}
demo_options 16 "$@"
# Each federated run: NAME:STRATEGY:TUNED:LABEL. 45 rounds need no --begin synchronisation on one host
# (the bed's scheduler would hold every round up to its 30-second pass).
if [ "$TUNED" = 1 ]; then
    ROUNDS=${ROUNDS:-45} STEPS=${STEPS:-20}
    # the sweep's best peak learning rate, for the federated and the single-place runs alike
    [ -n "${FLAS_DEMO_LR:-}" ] || LR=2e-3
    FED_RUNS=("tuned:fedavgm:1:FedAvgM, kept AdamW state, cosine over the run" "fedavg:fedavg:0:FedAvg as before (AdamW restarted, constant lr)")
    export DEMO_SYNC=none
else
    ROUNDS=${ROUNDS:-6} STEPS=${STEPS:-150}
    FED_RUNS=("fedavg:fedavg:0:FedAvg" "diloco:diloco:0:DiLoCo outer Nesterov")
fi
FED_NAMES=()
for r in "${FED_RUNS[@]}"; do FED_NAMES+=("${r%%:*}"); done
demo_start
EXP="$BED/experiment"
rm -rf "$EXP"
install -d -m 755 "$EXP" "$OUT"
LONG=$((2 * ROUNDS * STEPS)) # steps of the single-place runs: the federated runs' total
TOKENS=$((LONG * BATCH * SEQ))
step "the round-0 model, shared by every run"
demo_init "$EXP/global-0.h5"
echo "budget: $TOKENS tokens per model ($ROUNDS rounds x 2 sites x $STEPS steps x $BATCH x $SEQ)"

# --- federated runs --------------------------------------------------------------------------------
for r in "${FED_RUNS[@]}"; do
    IFS=: read -r name strategy tuned label <<<"$r"
    step "federated: $label, $ROUNDS rounds"
    TUNED=$tuned demo_conf "$EXP/$name" "$strategy" "$ROUNDS" "$STEPS" "$EXP/global-0.h5"
    bg_wait "$BIN/flas-coordinator" run "$EXP/$name/coordinator.conf" 2>"$EXP/$name/coordinator.log" \
        >"$EXP/$name/rounds.txt" || die "$name failed (log: $EXP/$name/coordinator.log)"
    sed 's/^/  /' "$EXP/$name/rounds.txt"
done

# --- single-place runs -----------------------------------------------------------------------------
# Local-only: a plain batch job at the site (no federation), the data never leaves it; only the model
# comes back. Both sites train at the same time.
step "local-only: Italian at leonardo and Czech at karolina ($LONG steps each)"
declare -A JOB
for s in "${SITES[@]}"; do
    remote="/home/$P_user/flas-exp-$s" # per site: in this bed both sites share the user's home
    stage_cmd "$s" exec "mkdir -p $remote" >/dev/null
    stage_cmd "$s" put "$EXP/global-0.h5" "$remote/global-0.h5" >/dev/null
    args=$(train_args "$s" "$LONG" | tr ',' ' ')
    JOB[$s]=$(stage_cmd "$s" exec "cd $remote && sbatch --parsable --ntasks=1 --cpus-per-task=1 --output=local-%j.out \
        --wrap 'srun --mpi=pmix flas-train --global $remote/global-0.h5 --output $remote/local.h5 --site $s --round 0 $args'")
done
for s in "${SITES[@]}"; do
    remote="/home/$P_user/flas-exp-$s" # per site: in this bed both sites share the user's home
    while [ -n "$(stage_cmd "$s" exec "squeue -h -j ${JOB[$s]} -o %i")" ]; do sleep 2; done
    stage_cmd "$s" get "$remote/local.h5" "$EXP/local-${LANG_OF[$s]}.h5" >/dev/null ||
        die "the local-only run at $s produced no model (see $remote/local-${JOB[$s]}.out there)"
    echo "  local-${LANG_OF[$s]}: job ${JOB[$s]} at $s"
done

# Pooled: both sites' token shards copied to one place. This is exactly what federated learning
# avoids; it is here only as the upper bound a centralised run would reach.
step "pooled (data moved to one place; reference only): $LONG steps on Italian + Czech"
POOL="$EXP/pooled-data-MOVED-reference-only"
install -d -m 700 "$POOL/train" "$POOL/valid"
for s in "${SITES[@]}"; do
    for part in "$(site_dir "$s")"/data/train/*.flastok; do cp "$part" "$POOL/train/$s-$(basename "$part")"; done
done
cp "$(site_dir leonardo)"/data/valid/*.flastok "$POOL/valid/"
bg_wait "$BIN/flas-train" --global "$EXP/global-0.h5" --output "$EXP/pooled.h5" --site pooled --round 0 \
    $(train_args leonardo "$LONG" | tr ',' ' ' | sed "s|--data [^ ]*|--data $POOL/train|; s|--valid [^ ]*|--valid $POOL/valid|") \
    >"$EXP/pooled.log" 2>&1 || die "the pooled run failed (log: $EXP/pooled.log)"
rm -rf "$POOL" # the moved data is deleted once used

# --- evaluation at the sites -----------------------------------------------------------------------
step "validation perplexity of every model, at each site on its held-out text"
models=("local-it:$EXP/local-it.h5" "local-cs:$EXP/local-cs.h5" "pooled:$EXP/pooled.h5")
for name in "${FED_NAMES[@]}"; do
    for k in $(seq 0 "$ROUNDS"); do models+=("$name-r$k:$EXP/$name/global/round-$(printf %06d "$k").h5"); done
done
declare -A LOSS PPL
for s in "${SITES[@]}"; do
    i=0
    while read -r line; do
        name=${models[$i]%%:*}
        LOSS[$name,$s]=$(json_num "$line" loss)
        PPL[$name,$s]=$(json_num "$line" perplexity)
        i=$((i + 1))
    done < <(demo_eval_at "$s" "${models[@]}")
    [ "$i" = "${#models[@]}" ] || die "$s evaluated $i of ${#models[@]} models"
done

# --- the table and the plots -----------------------------------------------------------------------
{
    echo "| model | data it saw | Italian ppl | Czech ppl |"
    echo "|---|---|---|---|"
    row() { printf '| %s | %s | %.1f | %.1f |\n' "$1" "$2" "${PPL[$3,leonardo]}" "${PPL[$3,karolina]}"; }
    row "round-0 model" "none" "${FED_NAMES[0]}-r0"
    row "local-only Italian" "Italian, at leonardo" local-it
    row "local-only Czech" "Czech, at karolina" local-cs
    row "pooled (data moved; reference)" "both, in one place" pooled
    for r in "${FED_RUNS[@]}"; do
        IFS=: read -r name strategy tuned label <<<"$r"
        row "$label, $ROUNDS x $STEPS" "both, each at its site" "$name-r$ROUNDS"
    done
} | tee "$OUT/table.md"
{
    echo "# round ${FED_NAMES[0]}_it ${FED_NAMES[0]}_cs ${FED_NAMES[1]}_it ${FED_NAMES[1]}_cs"
    for k in $(seq 0 "$ROUNDS"); do
        a=${FED_NAMES[0]} b=${FED_NAMES[1]}
        echo "$k ${LOSS[$a-r$k,leonardo]} ${LOSS[$a-r$k,karolina]} ${LOSS[$b-r$k,leonardo]} ${LOSS[$b-r$k,karolina]}"
    done
} >"$OUT/rounds.dat"
{
    echo "# model it_loss cs_loss it_ppl cs_ppl"
    for m in local-it local-cs pooled "${FED_NAMES[0]}-r$ROUNDS" "${FED_NAMES[1]}-r$ROUNDS"; do
        echo "$m ${LOSS[$m,leonardo]} ${LOSS[$m,karolina]} ${PPL[$m,leonardo]} ${PPL[$m,karolina]}"
    done
} >"$OUT/models.dat"
L0=${FED_RUNS[0]##*:} L1=${FED_RUNS[1]##*:}
xtics=1
[ "$ROUNDS" -gt 12 ] && xtics=5
gnuplot <<GP
set terminal pngcairo size 1000,480 font "sans,10"
set output "$OUT/validation-loss.png"
set multiplot layout 1,2 title "FLaS bilingual experiment: validation loss of the global model per round"
set xlabel "round"; set ylabel "validation loss (nats/token)"; set grid; set xtics $xtics; set key outside bottom center horizontal maxrows 2
set title "Italian held-out text (measured at leonardo)"
plot "$OUT/rounds.dat" u 1:2 w lp lw 2 t "$L0", "" u 1:4 w lp lw 2 t "$L1", \
     ${LOSS[local-it,leonardo]} w l dt 2 t "local-only Italian", ${LOSS[local-cs,leonardo]} w l dt 3 t "local-only Czech", \
     ${LOSS[pooled,leonardo]} w l dt 4 t "pooled (data moved)"
set title "Czech held-out text (measured at karolina)"
plot "$OUT/rounds.dat" u 1:3 w lp lw 2 t "$L0", "" u 1:5 w lp lw 2 t "$L1", \
     ${LOSS[local-it,karolina]} w l dt 2 t "local-only Italian", ${LOSS[local-cs,karolina]} w l dt 3 t "local-only Czech", \
     ${LOSS[pooled,karolina]} w l dt 4 t "pooled (data moved)"
unset multiplot
GP

# --- what the numbers show -------------------------------------------------------------------------
step "checks"
better() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a < b)}'; }
ok=1
for name in "${FED_NAMES[@]}"; do
    f="$name-r$ROUNDS"
    if better "${PPL[$f,karolina]}" "${PPL[local-it,karolina]}" && better "${PPL[$f,leonardo]}" "${PPL[local-cs,leonardo]}"; then
        echo "$name beats local-only Italian on Czech and local-only Czech on Italian"
    else
        echo "$name does NOT beat each local-only model on the language it never saw"; ok=0
    fi
done
first=${FED_NAMES[0]} rose=0
for k in $(seq 1 "$ROUNDS"); do
    for s in "${SITES[@]}"; do better "${PPL[$first-r$k,$s]}" "${PPL[$first-r$((k - 1)),$s]}" || { echo "$first: perplexity at $s rose in round $k"; rose=1; }; done
done
[ $rose = 0 ] && echo "$first: perplexity fell every round on both languages"
better "${PPL[$first-r$ROUNDS,leonardo]}" "${PPL[$first-r0,leonardo]}" && better "${PPL[$first-r$ROUNDS,karolina]}" "${PPL[$first-r0,karolina]}" ||
    { echo "$first ended no better than the round-0 model"; ok=0; }
for lang in it:leonardo:"Il " cs:karolina:"Je to "; do
    IFS=: read -r l s prompt <<<"$lang"
    echo "$first model, $l prompt: $("$BIN/flas-generate" -m "$EXP/$first/global/round-$(printf %06d "$ROUNDS").h5" -t "$TOKENIZER" -n 40 --seed 1 --threads 1 "$prompt")"
done | tee "$OUT/samples.txt"
echo "results in $OUT (table.md, rounds.dat, models.dat, validation-loss.png, samples.txt); took $(($(date +%s) - t0)) s"
[ $ok = 1 ]
