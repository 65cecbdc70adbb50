# Readers of the two-site bed and of FLaS's files, shared by tests/coordinator/coord-tests.sh and
# tests/cwl/cwl-tests.sh (sourced after `eval "$(flas-bed paths | sed 's/^/P_/')"`).
# shellcheck shell=bash
addr() { local v="P_${1}_addr"; echo "${!v}"; }
sdir() { local v="P_${1}_dir"; echo "${!v}"; }
sconf() { local v="P_${1}_conf"; echo "${!v}"; }
sha() { sha256sum <"$1" | cut -d' ' -f1; }
h5attr() { /usr/bin/python3 -c 'import h5py,sys; v=h5py.File(sys.argv[1],"r").attrs[sys.argv[2]]; print(v.decode() if isinstance(v,bytes) else v)' "$1" "$2"; }
# Same weights (the new global's params) as another file: provenance and timestamps differ per run.
same_params() {
    /usr/bin/python3 - "$1" "$2" <<'PY'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
names = sorted(a["params"].keys())
assert names == sorted(b["params"].keys()), "different tensors"
bad = [n for n in names if not np.array_equal(a["params"][n][...], b["params"][n][...])]
sys.exit(f"{len(bad)} tensors differ, e.g. {bad[:3]}" if bad else 0)
PY
}
input_shas() { # GLOBAL: sha256 of every input merged into it, in merge order
    /usr/bin/python3 -c 'import h5py,sys; a=h5py.File(sys.argv[1],"r")["provenance"].attrs; print(" ".join(x.decode() if isinstance(x,bytes) else x for x,u in zip(a["input_sha256"], a["input_used"]) if u))' "$1"
}
manifest_sha() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sha256"])' "$1"; }
