#!/usr/bin/env bash
# The tuning sweep (docs/tuning.md): at the bilingual experiment's fixed token budget, how close does
# each federated configuration come to pooled training? Round lengths x the site's inner state x the
# learning-rate schedule x the server optimizer x FedProx, three seeds for the key rows, against pooled
# and local-only runs of the same budget. Perplexity on each site's held-out text and on a held-out
# text neither site trains on (the aptitude manual in Italian and Czech, public to both).
#
# usage: flas-sweep.sh [--out DIR] [--seeds "1 2 3"] [--only REGEX] [--quick] [--reuse-data] [--skip-build]
#   --out DIR      results: sweep.tsv, runs.md, pareto.png (default: build/sweep); every run's models
#                  under DIR/runs/NAME-sSEED, kept, so that an interrupted sweep goes on where it stopped
#   --seeds LIST   seeds of the key rows (default "1 2 3"); every other row runs seed 1
#   --only REGEX   only the configurations whose name matches (grep -E)
#   --quick        a reduced sweep (budget / 6) that checks the script end to end in minutes
#   --reuse-data   use the sites' data prepared earlier in the bed (tests/bed/flas-bed data) instead
#                  of booting the sites and preparing it again
#
# How the rounds run here: each configuration simulates its federated rounds ON THIS HOST with the
# real tools (flas-train per site on that site's token shards, flas-aggregate between rounds), without
# Slurm and SSH, which move files but change no number: the experiment's FedAvg run through the bed
# (docs/experiment.md) is reproduced bit for bit by the `replay` row. The two sites train side by side,
# one thread each. The test suite runs the chosen configuration through the real path on the bed
# (`coord_tuned`).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/demo-lib.sh"

OUT="$ROOT/build/sweep" SEEDS="1 2 3" ONLY="" QUICK=0 REUSE=0 BUILD=1 ROUNDS=6 STEPS=150
demo_option() {
    case "$1" in
    --out) OUT=$2; DEMO_SHIFT=2 ;;
    --seeds) SEEDS=$2; DEMO_SHIFT=2 ;;
    --only) ONLY=$2; DEMO_SHIFT=2 ;;
    --quick) QUICK=1; DEMO_SHIFT=1 ;;
    --reuse-data) REUSE=1; DEMO_SHIFT=1 ;;
    *) return 1 ;;
    esac
}
demo_options 22 "$@"
t0=$(date +%s)
if [ "$REUSE" = 1 ]; then
    [ "$BUILD" = 1 ] && demo_build
    demo_paths 2>/dev/null || true
    for s in "${SITES[@]}"; do
        [ -d "$BED/sites/$s/data/train" ] || die "--reuse-data: no data at $BED/sites/$s/data (run once without it)"
    done
    TOKENIZER=$(cat "$BED/public/tokenizer")
else
    demo_start
fi
data_of() { echo "$BED/sites/$1/data"; }

# The budget: the experiment's 6 x 150 steps per site (--quick: 6 x 25). Every row's rounds x steps is
# that within 1.5 % (24 x 38 = 912 and 48 x 19 = 912 round 900 up).
if [ "$QUICK" = 1 ]; then
    BUDGET=150 SHAPES="6x25 24x6"
else
    BUDGET=900 SHAPES="6x150 12x75 24x38 45x20 48x19" # 45 x 20: the most rounds with >= 20 steps
fi
POOLED_STEPS=$((2 * BUDGET))
install -d -m 755 "$OUT/runs" "$OUT/public"

# --- one run -----------------------------------------------------------------------------------------
# The flas-train arguments every run shares: the experiment's (demo-lib's train_args), one thread.
base_args() { # SITE STEPS
    local d
    d=$(data_of "$1")
    echo "--data $d/train --steps $2 --batch $BATCH --seq $SEQ --lr $LR --threads 1 --log-every 100000 --peak-gflops 1"
}

# A round-0 model per seed (seed 1: the experiment's).
init_model() { # SEED -> path
    local m="$OUT/runs/global-0-s$1.h5"
    [ -f "$m" ] || "$BIN/flas-train" --init --dim "$DIM" --layers "$LAYERS" --heads "$HEADS" --kv-heads "$KV_HEADS" \
        --vocab "$VOCAB" --seq-len "$SEQ" --seed "$1" --output "$m" >/dev/null
    echo "$m"
}
# The data order's seed: seed 1 is flas-train's default (1234), the experiment's.
data_seed() { echo $((1233 + $1)); }

# The heterogeneity control: both sites drawing from the same mixture of both languages (each with its own
# data order), i.e. IID sites. Only to measure what non-IID data costs; no real federation looks so.
iid_data() {
    [ -f "$OUT/iid-data/.done" ] && return 0
    rm -rf "$OUT/iid-data" && install -d "$OUT/iid-data"
    for s in "${SITES[@]}"; do for f in "$(data_of "$s")"/train/*.flastok; do cp "$f" "$OUT/iid-data/$s-$(basename "$f")"; done; done
    touch "$OUT/iid-data/.done"
}

# fed_run NAME SEED RxS STRATEGY "AGG ARGS" "TRAIN ARGS": R rounds of S steps per site; writes
# DIR/final.h5, DIR/bytes (what crossed the network: every round's global to each site, each site's
# published file back), DIR/drift (last round: the global's step / the mean of the sites' updates).
fed_run() {
    local name=$1 seed=$2 shape=$3 strategy=$4 agg=$5 extra=$6
    local R=${shape%x*} S=${shape#*x} dir="$OUT/runs/$name-s$seed" k s g next bytes=0 pids
    [ -f "$dir/final.h5" ] && return 0
    rm -rf "$dir" && install -d "$dir/state-leonardo" "$dir/state-karolina"
    g=$(init_model "$seed")
    local iid=() i
    [[ $name == iid-* ]] && iid_data
    for k in $(seq 0 $((R - 1))); do
        pids=() i=0
        for s in "${SITES[@]}"; do
            [[ $name == iid-* ]] && iid=(--data "$OUT/iid-data" --seed $(($(data_seed "$seed") + 100 * ++i)))
            # shellcheck disable=SC2046,SC2086
            "$BIN/flas-train" --global "$g" --output "$dir/local-$k-$s.h5" --site "$s" --round "$k" \
                --federation sweep --seed "$(data_seed "$seed")" --state-dir "$dir/state-$s" --rounds "$R" \
                $(base_args "$s" "$S") $extra "${iid[@]}" >"$dir/train-$k-$s.log" 2>&1 &
            pids+=($!)
        done
        for p in "${pids[@]}"; do wait "$p" || die "$name seed $seed round $k: flas-train failed (logs in $dir)"; done
        next="$dir/global-$((k + 1)).h5"
        # shellcheck disable=SC2086
        "$BIN/flas-aggregate" -p "$g" -o "$next" -s "$strategy" $agg --max-update-norm 1e30 \
            -i "leonardo=$dir/local-$k-leonardo.h5" -i "karolina=$dir/local-$k-karolina.h5" >"$dir/agg-$k.log" 2>&1 ||
            die "$name seed $seed round $k: flas-aggregate failed ($dir/agg-$k.log)"
        bytes=$((bytes + 2 * $(stat -c %s "$g") + $(stat -c %s "$dir/local-$k-leonardo.h5") + $(stat -c %s "$dir/local-$k-karolina.h5")))
        if [ "$k" = $((R - 1)) ]; then
            local un step
            un=$(sed -n 's/.*update norm \([0-9.e+-]*\).*/\1/p' "$dir/agg-$k.log" | awk '{s += $1; n++} END {print s / n}')
            step=$("$BIN/flas-update" encode --encoding bf16 --base "$g" --target "$next" --output "$dir/step.h5" 2>&1 |
                sed -n 's/.*delta norm \([0-9.e+-]*\).*/\1/p' | head -1)
            rm -f "$dir/step.h5"
            echo "$un ${step:-nan}" | awk '{printf "%.6g %.6g %.4f\n", $1, $2, $2 / $1}' >"$dir/drift"
        fi
        [ "$k" -gt 0 ] && rm -f "$g"
        rm -f "$dir"/local-"$k"-*.h5
        g=$next
    done
    echo "$bytes" >"$dir/bytes"
    mv "$g" "$dir/final.h5"
    rm -rf "$dir"/state-*
}

# single_run NAME SEED "DATA DIRS" "TRAIN ARGS": one place, POOLED_STEPS or the given steps.
single_run() {
    local name=$1 seed=$2 data=$3 extra=$4 dir="$OUT/runs/$1-s$2"
    [ -f "$dir/final.h5" ] && return 0
    rm -rf "$dir" && install -d "$dir/data"
    # the experiment's names (SITE-part-*.flastok), so that seed 1 reads the experiment's data order
    for d in $data; do for f in "$d"/*.flastok; do cp "$f" "$dir/data/$(basename "$(dirname "$(dirname "$d")")")-$(basename "$f")"; done; done
    # shellcheck disable=SC2086
    "$BIN/flas-train" --global "$(init_model "$seed")" --output "$dir/out.h5" --site single --round 0 \
        --seed "$(data_seed "$seed")" --data "$dir/data" --batch "$BATCH" --seq "$SEQ" --lr "$LR" --threads 1 \
        --log-every 100000 --peak-gflops 1 $extra >"$dir/train.log" 2>&1 || die "$name: flas-train failed ($dir/train.log)"
    echo 0 >"$dir/bytes"
    mv "$dir/out.h5" "$dir/final.h5"
    rm -rf "$dir/data"
}

# --- the configurations --------------------------------------------------------------------------------
# NAME SEEDS SHAPE STRATEGY "AGG ARGS" "TRAIN ARGS"   (SEEDS: key = every seed of --seeds, 1 = seed 1)
MINLR=$(awk -v l="$LR" 'BEGIN {print l / 10}') # the cosine's end
CONST="--min-lr $LR --warmup 0"
COS="--lr-schedule run --min-lr $MINLR"
CONFIGS=()
add() { CONFIGS+=("$*"); }
first=${SHAPES%% *}
mid=$(echo "$SHAPES" | awk '{print $3 ? $3 : $NF}')
most=$(echo "$SHAPES" | awk '{print $4 ? $4 : $NF}') # the most rounds with >= 20 steps (45 x 20)
# In the order they run (seed 1 of every row first, then the other seeds of the key rows), so that an
# interrupted sweep has the most telling rows: the proposed configuration at every round length, one
# lever at a time at the middle length, the old and the fixed default, server optimizers, FedProx.
# each_shape NAME KEY_SHAPE STRATEGY AGG ARGS...: the row NAME-SHAPE at KEY_SHAPE first (every seed), then
# at every other shape (seed 1)
each_shape() {
    local name=$1 key=$2 strategy=$3 agg=$4 sh
    shift 4
    add "$name-$key key $key $strategy $agg $*"
    for sh in $SHAPES; do [ "$sh" = "$key" ] || add "$name-$sh 1 $sh $strategy $agg $*"; done
}
each_shape keep-cos "$mid" fedavg - $COS --inner-state keep
add "keep-const-$mid 1 $mid fedavg - $CONST --inner-state keep"
add "reset-cos-$mid 1 $mid fedavg - $COS"
add "reset-warm10-const-$mid 1 $mid fedavg - $CONST --round-warmup 10"
# replay: every round starting the data at epoch 0, as earlier FLaS did: the bed experiment's FedAvg
add "replay-$first 1 $first fedavg - $CONST --data-epoch 0"
each_shape reset-const "$first" fedavg - $CONST
add "keep-cos-fedadam-$mid 1 $mid fedadam --lr,0.01,--tau,1e-3 $COS --inner-state keep"
add "keep-cos-diloco-$mid 1 $mid diloco --lr,0.7,--momentum,0.9 $COS --inner-state keep"
add "keep-cos-prox0.01-$mid 1 $mid fedavg - $COS --inner-state keep --prox 0.01"
# The same with IID sites: what the two sites' different languages cost
add "iid-keep-cos-$mid 1 $mid fedavg - $COS --inner-state keep"
add "iid-reset-const-$first 1 $first fedavg - $CONST"
# Server extrapolation (a server step above 1, FedExP's idea with a fixed step): the sites' updates
# partly cancel, so the mean under-steps; and the learning rate itself, for federated and pooled alike.
add "keep-cos-fedavgm-lr1.5-m0-$mid 1 $mid fedavgm --lr,1.5,--momentum,0 $COS --inner-state keep"
add "keep-cos-fedavgm-lr2-m0-$mid 1 $mid fedavgm --lr,2,--momentum,0 $COS --inner-state keep"
add "keep-cos-lr2e-3-$mid 1 $mid fedavg - $COS --inner-state keep --lr 2e-3"
# Server momentum (FedAvgM, lr 1, momentum 0.5: a server step of 2 once it settles) at every round
# length; three seeds at 45 x 20, the most rounds with at least 20 local steps.
each_shape keep-cos-fedavgm "$most" fedavgm --lr,1,--momentum,0.5 $COS --inner-state keep
add "keep-cos-fedavgm-lr1.5-m0-$most 1 $most fedavgm --lr,1.5,--momentum,0 $COS --inner-state keep"
# The peak learning rate, for the best federated configuration and for pooled training alike
add "keep-cos-fedavgm-lr2e-3-$most key $most fedavgm --lr,1,--momentum,0.5 $COS --inner-state keep --lr 2e-3"
add "keep-cos-fedavgm-lr3e-3-$most 1 $most fedavgm --lr,1,--momentum,0.5 $COS --inner-state keep --lr 3e-3"

SINGLES=(
    "pooled-const 1 $(data_of leonardo)/train $(data_of karolina)/train|--steps $POOLED_STEPS $CONST"
    "pooled-cos key $(data_of leonardo)/train $(data_of karolina)/train|--steps $POOLED_STEPS --min-lr $MINLR"
    "pooled-cos-lr2e-3 1 $(data_of leonardo)/train $(data_of karolina)/train|--steps $POOLED_STEPS --lr 2e-3 --min-lr $MINLR"
    "pooled-cos-lr3e-3 1 $(data_of leonardo)/train $(data_of karolina)/train|--steps $POOLED_STEPS --lr 3e-3 --min-lr $MINLR"
    "pooled-cos-b16 1 $(data_of leonardo)/train $(data_of karolina)/train|--steps $BUDGET --batch $((2 * BATCH)) --min-lr $MINLR"
    "local-it-const 1 $(data_of leonardo)/train|--steps $POOLED_STEPS $CONST"
    "local-cs-const 1 $(data_of karolina)/train|--steps $POOLED_STEPS $CONST"
    "local-it-cos 1 $(data_of leonardo)/train|--steps $POOLED_STEPS --min-lr $MINLR"
    "local-cs-cos 1 $(data_of karolina)/train|--steps $POOLED_STEPS --min-lr $MINLR"
)

selected() { [ -z "$ONLY" ] || grep -qE "$ONLY" <<<"$1"; }
seeds_of() { if [ "$1" = key ]; then echo "$SEEDS"; else echo 1; fi; }

step "single-place runs (pooled: the data MOVED, a reference only; local-only: one site's data)"
pids=()
for c in "${SINGLES[@]}"; do
    spec=${c%%|*} args=${c#*|}
    read -r name seeds data <<<"$spec"
    selected "$name" || continue
    for seed in $(seeds_of "$seeds"); do
        single_run "$name" "$seed" "$data" "$args" &
        pids+=($!)
        if [ "${#pids[@]}" -ge 2 ]; then wait "${pids[0]}" || die "a single-place run failed"; pids=("${pids[@]:1}"); fi
    done
done
for p in "${pids[@]}"; do wait "$p" || die "a single-place run failed"; done

step "federated configurations (${#CONFIGS[@]}), simulated rounds on this host"
for pass in first rest; do
    for c in "${CONFIGS[@]}"; do
        read -r name seeds shape strategy agg extra <<<"$c"
        selected "$name" || continue
        [ "$agg" = - ] && agg="" || agg=${agg//,/ }
        for seed in $(seeds_of "$seeds"); do
            [ "$pass" = first ] && [ "$seed" != "${SEEDS%% *}" ] && [ "$seed" != 1 ] && continue
            [ "$pass" = rest ] && { [ "$seed" = "${SEEDS%% *}" ] || [ "$seed" = 1 ]; } && continue
            [ -f "$OUT/runs/$name-s$seed/final.h5" ] && continue
            ts=$(date +%s)
            fed_run "$name" "$seed" "$shape" "$strategy" "$agg" "$extra"
            echo "  $name seed $seed: $(($(date +%s) - ts)) s"
        done
    done
done

rm -rf "$OUT/iid-data" # the moved data is deleted once used (the IID rows' copies of both sites' shards)

# --- evaluation: every final model on the four held-out texts --------------------------------------------
# --- the public held-out text: neither site trains on it ---------------------------------------------
step "public held-out text (aptitude-doc-it / -cs): tokenized here, it is public"
for lang in it cs; do
    pub="$OUT/public/$lang"
    if [ ! -f "$pub/shards/.done" ]; then
        rm -rf "$pub" && install -d "$pub"
        "$ROOT/runtime/tools/flas-corpus" --lang "$lang" --sources aptitude --valid-permille 0 --out "$pub/text" --quiet
        "$BIN/flas-prepare" --tokenizer "$TOKENIZER" --out "$pub/shards" "$pub/text/train.txt" >/dev/null
        touch "$pub/shards/.done"
    fi
done

step "perplexity of every final model: Italian / Czech held-out (the sites' valid splits), public aptitude manual"
eval_one() { # MODEL VALID_DIR -> perplexity
    "$BIN/flas-train" --eval "$1" --valid "$2" --json --threads 1 | sed -n 's/.*"perplexity":\([0-9.e+-]*\).*/\1/p'
}
for dir in "$OUT"/runs/*-s*/; do
    dir=${dir%/}
    [ -f "$dir/final.h5" ] && [ ! -f "$dir/eval" ] || continue
    printf '%s %s %s %s\n' "$(eval_one "$dir/final.h5" "$(data_of leonardo)/valid")" \
        "$(eval_one "$dir/final.h5" "$(data_of karolina)/valid")" "$(eval_one "$dir/final.h5" "$OUT/public/it/shards")" \
        "$(eval_one "$dir/final.h5" "$OUT/public/cs/shards")" >"$dir/eval.tmp"
    mv "$dir/eval.tmp" "$dir/eval"
done

# --- the table, mean and spread over seeds, and the Pareto plot ------------------------------------------
step "results"
{
    printf 'name\tseed\trounds\tsteps\tbytes\tppl_it\tppl_cs\tppl_pub_it\tppl_pub_cs\tmean_update_norm\tglobal_step_norm\tstep_over_update\n'
    for dir in "$OUT"/runs/*-s*/; do
        dir=${dir%/}
        [ -f "$dir/eval" ] || continue
        base=$(basename "$dir") name=${base%-s*} seed=${base##*-s}
        shape=$(grep -oE '[0-9]+x[0-9]+$' <<<"$name" || echo "1x$POOLED_STEPS")
        drift="nan nan nan"
        [ -f "$dir/drift" ] && drift=$(cat "$dir/drift")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$seed" "${shape%x*}" "${shape#*x}" "$(cat "$dir/bytes")" \
            "$(tr ' ' '\t' <"$dir/eval")" "$(tr ' ' '\t' <<<"$drift")"
    done
} >"$OUT/sweep.tsv"
awk -F'\t' -v OFS='\t' 'NR > 1 {
        k = $1; n[k]++; b[k] = $5; r[k] = $3; s[k] = $4
        for (i = 6; i <= 9; i++) { x[k, i] += $i; xx[k, i] += $i * $i }
        d[k] += ($12 == "nan" ? 0 : $12); dn[k] += ($12 == "nan" ? 0 : 1)
    }
    END {
        print "name", "seeds", "rounds", "steps", "MB_moved", "ppl_it", "sd_it", "ppl_cs", "sd_cs", "ppl_pub_it", "ppl_pub_cs", "step_over_update"
        for (k in n) {
            line = k OFS n[k] OFS r[k] OFS s[k] OFS sprintf("%.1f", b[k] / 1e6)
            for (i = 6; i <= 9; i++) {
                m = x[k, i] / n[k]; v = xx[k, i] / n[k] - m * m
                line = line OFS sprintf("%.1f", m)
                if (i <= 7) line = line OFS sprintf("%.1f", (n[k] > 1 && v > 0) ? sqrt(v * n[k] / (n[k] - 1)) : 0)
            }
            print line, (dn[k] ? sprintf("%.3f", d[k] / dn[k]) : "-")
        }
    }' "$OUT/sweep.tsv" | { read -r h; echo "$h"; sort -t$'\t' -k6,6g; } >"$OUT/summary.tsv"
{
    echo "| configuration | seeds | rounds x steps | MB moved | Italian ppl | Czech ppl | public it | public cs | step / update |"
    echo "|---|---|---|---|---|---|---|---|---|"
    tail -n +2 "$OUT/summary.tsv" | awk -F'\t' '{
        sd = ($2 > 1) ? sprintf(" ± %s", $7) : ""; sdc = ($2 > 1) ? sprintf(" ± %s", $9) : ""
        printf "| %s | %s | %s x %s | %s | %s%s | %s%s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, sd, $8, sdc, $10, $11, $12 }'
} >"$OUT/runs.md"
cat "$OUT/runs.md"
# Pareto: final perplexity (geometric mean of the two languages) against megabytes moved, one curve
# per method (the row's name without its shape).
awk -F'\t' 'NR > 1 && $3 > 1 { m = $1; sub(/-[0-9]+x[0-9]+$/, "", m); print m, $5, sqrt($6 * $8) }' "$OUT/summary.tsv" |
    sort -k1,1 -k2,2g >"$OUT/pareto.dat"
# the pooled references as horizontal lines (built here: quotes inside ${..:+..} in a here-document
# would reach gnuplot without their quotes)
plots=""
for m in $(awk '{print $1}' "$OUT/pareto.dat" | sort -u); do # a method run at one shape is one point
    plots+="${plots:+, }\"< grep '^$m ' $OUT/pareto.dat\" u 2:3 w lp lw 2 ps 1.5 t \"$m\""
done
for ref in "pooled-cos:2:pooled, cosine (data moved)" "pooled-const:3:pooled, constant lr (data moved)"; do
    IFS=: read -r name dt label <<<"$ref"
    y=$(awk -F'\t' -v n="$name" '$1 == n { print sqrt($6 * $8) }' "$OUT/summary.tsv")
    [ -n "$y" ] && plots+=", $y w l dt $dt lw 2 t \"$label\""
done
gnuplot <<GP
set terminal pngcairo size 1200,650 font "sans,10"
set output "$OUT/pareto.png"
set title "FLaS tuning sweep: final perplexity against bytes moved (same token budget)"
set xlabel "megabytes moved over the whole run (both directions, both sites)"; set logscale x
set ylabel "perplexity, geometric mean of Italian and Czech held-out"; set grid; set key outside right
plot $plots
GP
echo "results in $OUT (sweep.tsv, summary.tsv, runs.md, pareto.png); took $(($(date +%s) - t0)) s"
