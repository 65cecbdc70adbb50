#!/usr/bin/env bash
# The FLaS demo, from nothing on a fresh Debian 12 machine (as root): installs what it needs, builds,
# boots two local SLURM "sites" (leonardo with Italian text, karolina with Czech text, each in its own
# network namespace with its own munge, slurmctld, slurmd and sshd), prepares each site's token shards
# AT the site, and runs federated rounds of a small LLaMA through the real path:
#   sbatch --federation=flas at each site -> flas-train under srun -> HDF5 checkpoint -> epilog publishes
#   -> staging over SSH -> flas-aggregate -> next round.
# Then it measures each round's global model on both languages (at the sites) and lets the final model
# write. Everything it starts is stopped at the end, also on failure or Ctrl-C.
#
# usage: flas-demo.sh [--rounds N] [--steps N] [--strategy NAME] [--plain] [--skip-build] [--check]
#   --rounds N      federated rounds (default 4)
#   --steps N       optimizer steps per site and round (default 100; x batch 8 x 128 tokens)
#   --strategy S    flas-aggregate strategy (default fedavg: over 4 rounds server momentum overshoots;
#                   docs/tuning.md)
#   --plain         FLaS's earlier training: AdamW restarted every round, constant lr, FedAvg (default:
#                   the sites keep their AdamW state, one cosine over the run; docs/tuning.md)
#   --skip-build    use the FLaS already installed in the test bed (tests/bed/flas-bed install BUILD)
#   --running-sites use sites that are already up (tests/bed/flas-bed start sites) and leave them up
#   --check         exit non-zero unless validation perplexity falls every round on both languages
# Larger models: FLAS_DEMO_DIM, FLAS_DEMO_LAYERS, FLAS_DEMO_HEADS, FLAS_DEMO_KV_HEADS, FLAS_DEMO_SEQ,
# FLAS_DEMO_VOCAB, FLAS_DEMO_DOCS (see demo-lib.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/demo-lib.sh"

ROUNDS=4 STEPS=100 STRATEGY="" BUILD=1 CHECK=0 BOOT=1
demo_option() {
    case "$1" in
    --strategy) STRATEGY=$2; DEMO_SHIFT=2 ;;
    --plain) TUNED=0; DEMO_SHIFT=1 ;;
    --running-sites) BOOT=0; DEMO_SHIFT=1 ;;
    --check) CHECK=1; DEMO_SHIFT=1 ;;
    *) return 1 ;;
    esac
}
demo_options 21 "$@"
STRATEGY=${STRATEGY:-fedavg}
demo_start

DEMO="$BED/demo"
WORK="$DEMO/$STRATEGY"
rm -rf "$WORK"
install -d -m 755 "$DEMO"
step "the round-0 model (at the coordinator)"
demo_init "$DEMO/global-0.h5"
demo_conf "$WORK" "$STRATEGY" "$ROUNDS" "$STEPS" "$DEMO/global-0.h5"

step "$ROUNDS federated rounds ($STRATEGY): $STEPS steps x $BATCH x $SEQ tokens per site and round"
bg_wait "$BIN/flas-coordinator" run "$WORK/coordinator.conf" 2>"$WORK/coordinator.log" ||
    { tail -5 "$WORK/coordinator.log" >&2; die "the federated run failed (log: $WORK/coordinator.log)"; }

step "validation perplexity of each round's global model, measured at each site on its held-out text"
models=()
for k in $(seq 0 "$ROUNDS"); do models+=("round$k:$WORK/global/round-$(printf %06d "$k").h5"); done
declare -A PPL
for s in "${SITES[@]}"; do
    k=0
    while read -r line; do
        PPL[$s,$k]=$(json_num "$line" perplexity)
        k=$((k + 1))
    done < <(demo_eval_at "$s" "${models[@]}")
done
printf '%-6s %14s %14s\n' round "Italian ppl" "Czech ppl" | tee "$DEMO/results.tsv"
falls=1
for k in $(seq 0 "$ROUNDS"); do
    printf '%-6s %14.2f %14.2f\n' "$k" "${PPL[leonardo,$k]}" "${PPL[karolina,$k]}" | tee -a "$DEMO/results.tsv"
    if [ "$k" -gt 0 ]; then
        for s in "${SITES[@]}"; do
            awk -v a="${PPL[$s,$((k - 1))]}" -v b="${PPL[$s,$k]}" 'BEGIN {exit !(b < a)}' || falls=0
        done
    fi
done
if [ $falls = 1 ]; then
    echo "validation perplexity fell every round, on Italian and on Czech"
else
    echo "validation perplexity did NOT fall every round on both languages"
fi

step "what the final model writes (flas-generate, seed 1)"
final="$WORK/global/round-$(printf %06d "$ROUNDS").h5"
for prompt in "Il programma " "Je to "; do
    "$BIN/flas-generate" -m "$final" -t "$TOKENIZER" -n 40 --seed 1 --threads 1 "$prompt" | sed 's/^/  /'
done

step "what this demo did"
cat <<TXT
Two SLURM sites, each in its own network namespace with its own munge key, slurmctld, slurmd and sshd.
Each site made its own token shards from its own text (Italian at leonardo, Czech at karolina) in a
batch job; the text and the shards never left the site. $ROUNDS rounds: the coordinator staged the global
model over SSH (verified), submitted 'sbatch --federation=flas --federation-round=K' at both sites, the
SPANK plugin verified the staged model and exported FLAS_*, flas-train trained it under srun and wrote
its HDF5 checkpoint, the epilog published it with a manifest, the coordinator fetched it (verified) and
flas-aggregate ($STRATEGY) merged both into the next global model.
$([ "$TUNED" = 1 ] && echo "Each site kept its AdamW state from round to round in its private state directory (the published
checkpoints carried weights only) and one learning-rate cosine spanned the $ROUNDS rounds (docs/tuning.md).")
Model: dim $DIM, $LAYERS layers, $HEADS heads ($KV_HEADS kv), vocabulary $VOCAB, context $SEQ.
Results: $DEMO/results.tsv; coordinator journal and models: $WORK. Took $(($(date +%s) - t0)) s.
TXT
[ $CHECK = 0 ] || [ $falls = 1 ] || exit 3
