"""Compares flas-train on a site's two nodes (DIR/n2) with the same world size on one node (DIR/n1):
where the ranks ran (metrics.jsonl's start event against the job's node list), the losses of every step
(within 1e-5) and the checkpoints' weights (h5py, within 1e-5)."""
import glob
import json
import sys

import h5py
import numpy as np

d = sys.argv[1]
TOL = 1e-5


def run(tag):
    events = [json.loads(line) for line in open(f"{d}/{tag}/metrics.jsonl")]
    start = next(e for e in events if e["event"] == "start")
    losses = [e["loss"] for e in events if "event" not in e and "step" in e and "loss" in e]
    nodes = open(glob.glob(f"{d}/{tag}/nodes-*")[0]).read().split()
    return start, losses, nodes


s2, l2, nodes2 = run("n2")
s1, l1, nodes1 = run("n1")
if len(nodes2) != 2 or len(set(nodes2)) != 2:
    sys.exit(f"the 2-node job's node list is {nodes2}")
if (s2["ranks"], s2["tp"], s2["dp"]) != (4, 2, 2):
    sys.exit(f"the 2-node run is not 4 ranks = tp 2 x dp 2: {s2}")
hosts = s2["hosts"]
if sorted(set(hosts)) != sorted(nodes2):
    sys.exit(f"the ranks ran on {hosts}, the job's nodes are {nodes2}")
dp_hosts = [hosts[r] for r in range(0, s2["ranks"], s2["tp"])]  # the first rank of each dp replica
if len(set(dp_hosts)) != 2:
    sys.exit(f"the dp ranks ran on {dp_hosts}: not two nodes")
if any(hosts[r] != hosts[r - r % s2["tp"]] for r in range(s2["ranks"])):
    sys.exit(f"a tensor-parallel group spans nodes: {hosts}")
if len(set(s1["hosts"])) != 1 or s1["hosts"][0] != nodes1[0]:
    sys.exit(f"the 1-node run's ranks ran on {s1['hosts']}, its node is {nodes1}")
if len(l1) != 8 or len(l2) != 8:
    sys.exit(f"expected 8 steps each, got {len(l1)} and {len(l2)}")
worst = max(abs(a - b) for a, b in zip(l1, l2))
if worst > TOL:
    sys.exit(f"losses differ by {worst:.2e}: {l1} vs {l2}")
with h5py.File(f"{d}/n2/local.h5", "r") as a, h5py.File(f"{d}/n1/local.h5", "r") as b:
    if sorted(a["params"]) != sorted(b["params"]):
        sys.exit("the checkpoints hold different tensors")
    pw = max(float(np.max(np.abs(a["params"][k][...] - b["params"][k][...]))) for k in a["params"])
if pw > TOL:
    sys.exit(f"the weights differ by {pw:.2e}")
print(f"dp ranks on {dp_hosts} (the job's nodes {nodes2}); 8 losses within {worst:.1e} and weights within "
      f"{pw:.1e} of the same world size on {nodes1[0]}")
