#!/usr/bin/env bash
# DP-FedAvg on the bilingual experiment (docs/experiment.md, "Differential privacy"): the same sites,
# data, model and token budget as flas-experiment.sh's FedAvg run, federated with equal weights
#   none       no clipping, no noise (the reference)
#   clip       every site's update clipped to L2 norm --clip, no noise (what clipping alone costs)
#   sigma=S    clipped, plus Gaussian noise S x clip / 2 on the mean, for each S of --noise
# then measures every final model's validation perplexity on Italian (at leonardo) and on Czech (at
# karolina), with the epsilon each run spent (RDP accountant, delta 1e-5), into a table.
#
# usage: flas-experiment-dp.sh [--rounds N] [--steps N] [--clip C] [--noise "S1 S2 ..."] [--out DIR]
#                              [--skip-build] [--running-sites]
#   --rounds N         federated rounds (default 6)
#   --steps N          steps per site and round (default 150)
#   --clip C           L2 bound of a site's update (default 10: round 0 moves a site 24, later rounds less)
#   --noise "S ..."    noise multipliers to run (default "0.001 0.01 1")
#   --out DIR          results (default: build/experiment-dp)
#   --running-sites    use sites already started (tests/bed/flas-bed start sites); leave them up
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/demo-lib.sh"

ROUNDS=6 STEPS=150 OUT="$ROOT/build/experiment-dp" BUILD=1 CLIP=10 NOISE="0.001 0.01 1" DELTA=1e-5
TUNED=0 # the DP rows compare with the experiment's plain FedAvg (docs/experiment.md)
demo_option() {
    case "$1" in
    --out) OUT=$2; DEMO_SHIFT=2 ;;
    --clip) CLIP=$2; DEMO_SHIFT=2 ;;
    --noise) NOISE=$2; DEMO_SHIFT=2 ;;
    --running-sites) BOOT=0; DEMO_SHIFT=1 ;;
    *) return 1 ;;
    esac
}
demo_options 17 "$@"
demo_start
EXP="$BED/experiment-dp"
rm -rf "$EXP"
install -d -m 755 "$EXP" "$OUT"
step "the round-0 model, shared by every run"
demo_init "$EXP/global-0.h5"

runs=(none clip)
for s in $NOISE; do runs+=("sigma=$s"); done
for run in "${runs[@]}"; do
    step "federated, equal weights, $ROUNDS rounds x $STEPS steps: $run"
    work="$EXP/${run//=/-}"
    demo_conf "$work" fedavg "$ROUNDS" "$STEPS" "$EXP/global-0.h5"
    case "$run" in
    none) keys="" ;;
    clip) keys="DpClip=$CLIP DpDelta=$DELTA" ;;
    *) keys="DpClip=$CLIP DpNoise=${run#sigma=} DpDelta=$DELTA" ;;
    esac
    # federation keys go on the Federation= record (the first three lines), before any Site=
    [ -z "$keys" ] || sed -i "3s|\$| $keys|" "$work/coordinator.conf"
    bg_wait "$BIN/flas-coordinator" run "$work/coordinator.conf" 2>"$work/coordinator.log" >"$work/rounds.txt" ||
        die "$run failed (log: $work/coordinator.log)"
    sed 's/^/  /' "$work/rounds.txt" | cut -c1-400
done

step "validation perplexity of every final model, at each site on its held-out text"
models=()
for run in "${runs[@]}"; do models+=("$run:$EXP/${run//=/-}/global/round-$(printf %06d "$ROUNDS").h5"); done
declare -A PPL
for s in "${SITES[@]}"; do
    i=0
    while read -r line; do
        PPL[${models[$i]%%:*},$s]=$(json_num "$line" perplexity)
        i=$((i + 1))
    done < <(demo_eval_at "$s" "${models[@]}")
    [ "$i" = "${#models[@]}" ] || die "$s evaluated $i of ${#models[@]} models"
done

# epsilon from the final global's own ledger (its provenance), as the aggregator wrote it
eps_of() {
    /usr/bin/python3 -c 'import h5py,sys; p=h5py.File(sys.argv[1],"r")["provenance"].attrs
print("%.4g" % p["hyper.dp_epsilon"] if "hyper.dp_epsilon" in p else "no DP")' "$1"
}
{
    echo "| run | noise stddev per coordinate | epsilon (delta $DELTA) | Italian ppl | Czech ppl |"
    echo "|---|---|---|---|---|"
    for run in "${runs[@]}"; do
        g="$EXP/${run//=/-}/global/round-$(printf %06d "$ROUNDS").h5"
        sd="0"
        [[ "$run" == sigma=* ]] && sd=$(awk -v s="${run#sigma=}" -v c="$CLIP" 'BEGIN { printf "%.4g", s * c / 2 }')
        echo "| $run | $sd | $(eps_of "$g") | ${PPL[$run,leonardo]} | ${PPL[$run,karolina]} |"
    done
} | tee "$OUT/results.md"
grep -h "update norm" "$EXP"/*/rounds.txt | grep -o "[a-z]* job [0-9]* [A-Z]* [^;]*clipped x[0-9.e-]*" |
    sed 's/ loss.*update norm/ update norm/' >"$OUT/update-norms.txt" || true
echo "update norms (per site and round): $OUT/update-norms.txt"
echo "results: $OUT/results.md; finished in $(($(date +%s) - t0)) s"
