#!/usr/bin/env bash
# The fuzz harnesses' runner (tests/fuzz/CMakeLists.txt, README.md).
#   run-fuzz.sh fuzz SRC WORK MINUTES NAME BIN [NAME BIN ...]
#       For each harness: copies SRC/corpus/NAME and SRC/regressions/NAME into WORK/NAME/corpus (the
#       committed corpus is never written to), fuzzes for MINUTES minutes (-rss_limit_mb=2048, with
#       SRC/dict/NAME.dict when there is one), prints the final figures and stops at the first crash,
#       leak, timeout or out-of-memory with the input's path. Log: WORK/NAME/fuzz.log.
#   run-fuzz.sh replay SRC NAME BIN
#       Runs BIN (a libFuzzer program) once over every committed input of NAME.
# FUZZ_ARGS (environment) adds libFuzzer flags, e.g. FUZZ_ARGS="-jobs=2 -workers=2".
set -uo pipefail
mode=${1:?usage: run-fuzz.sh fuzz|replay ...}
shift

inputs_of() { # the committed inputs of harness $2 under $1
    local d
    for d in "$1/corpus/$2" "$1/regressions/$2"; do
        [ -d "$d" ] && find "$d" -maxdepth 1 -type f ! -name '.*' | sort
    done
}

case "$mode" in
replay)
    src=$1 name=$2 bin=$3
    mapfile -t files < <(inputs_of "$src" "$name")
    [ ${#files[@]} -gt 0 ] || { echo "run-fuzz.sh: no committed input for $name" >&2; exit 2; }
    exec "$bin" "${files[@]}"
    ;;
fuzz)
    src=$1 work=$2 minutes=$3
    shift 3
    while [ $# -ge 2 ]; do
        name=$1 bin=$2
        shift 2
        dir=$work/$name
        mkdir -p "$dir/corpus" "$dir/artifacts"
        while read -r f; do
            [ -n "$f" ] && cp -n "$f" "$dir/corpus/"
        done < <(inputs_of "$src" "$name")
        dict=()
        [ -f "$src/dict/$name.dict" ] && dict=(-dict="$src/dict/$name.dict")
        echo "run-fuzz.sh: $name for $minutes min (corpus $dir/corpus, log $dir/fuzz.log)"
        # shellcheck disable=SC2086
        "$bin" -max_total_time=$((minutes * 60)) -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 \
            -artifact_prefix="$dir/artifacts/" "${dict[@]}" ${FUZZ_ARGS:-} "$dir/corpus" >"$dir/fuzz.log" 2>&1
        rc=$?
        execs=$(grep -Eo 'stat::number_of_executed_units: [0-9]+' "$dir/fuzz.log" | tail -1 | grep -Eo '[0-9]+$')
        cov=$(grep -Eo 'cov: [0-9]+' "$dir/fuzz.log" | tail -1 | grep -Eo '[0-9]+$')
        echo "run-fuzz.sh: $name: exit $rc, executions ${execs:-?}, cov ${cov:-?}"
        if [ $rc -ne 0 ]; then
            crash=$(grep -Eo 'Test unit written to [^ ]+' "$dir/fuzz.log" | tail -1 | sed 's/Test unit written to //')
            [ -n "$crash" ] || crash=$(ls -t "$dir/artifacts/"* 2>/dev/null | head -1)
            tail -n 60 "$dir/fuzz.log"
            echo "run-fuzz.sh: $name FAILED; crash file: ${crash:-none written} (reproduce: $bin ${crash:-})" >&2
            exit 1
        fi
    done
    ;;
*)
    echo "usage: run-fuzz.sh fuzz SRC WORK MINUTES NAME BIN... | replay SRC NAME BIN" >&2
    exit 2
    ;;
esac
