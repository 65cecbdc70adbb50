#!/usr/bin/env cwl-runner
# The round's aggregation: flas-aggregate merges the sites' local checkpoints into the next global
# model, with the options flas-coordinator gives the same library (aggregator/coord_rounds.c:
# flas_coord_agg_options, then policy drop-bad, MinSites, and each input named by the site it was
# fetched from), inputs in the order of the sites. The same inputs give the same parameters.
cwlVersion: v1.2
class: CommandLineTool
label: merge a round's local checkpoints (flas-aggregate)
requirements:
  InlineJavascriptRequirement: {}
  ShellCommandRequirement: {}
  SchemaDefRequirement:
    types:
      - $import: flas-types.yml
inputs:
  round: int
  previous:
    type: File
    doc: the global model the round started from
  sites: flas-types.yml#Site[]
  checkpoints:
    type:
      type: array
      items: ["null", File]
    doc: each site's local checkpoint, in the order of sites; null for a site dropped this round
  strategy:
    type: string
    default: fedavg
  server_lr: double?
  server_momentum: double?
  server_beta1: double?
  server_beta2: double?
  server_tau: double?
  max_update_norm: double?
  max_update_ratio: double?
  min_sites:
    type: int?
    doc: fewest sites for a round (MinSites=); default every site
  flas_aggregate:
    type: string
    default: flas-aggregate
# cwltool hands a tool its input files as symbolic links to where they are, and flas-aggregate refuses
# to open a checkpoint through a symbolic link (a planted link is how a file is swapped): these links
# are the workflow engine's own, so the command names the files they point to (realpath -e).
baseCommand: []
arguments:
  - shellQuote: false
    valueFrom: |
      ${
        // shell quoting; no quote character appears inside a JS string (or comment) here: the expression
        // scanner of cwltool tracks quotes of both kinds, nested, and would not find the end of the expression
        var SQ = String.fromCharCode(39), DQ = String.fromCharCode(34), BS = String.fromCharCode(92);
        function q(s) { return SQ + String(s).split(SQ).join(SQ + BS + SQ + SQ) + SQ; }
        // the target of each file into a shell variable first: set -e stops at one that does not resolve
        // (backquotes: the scanner also counts parentheses inside JS strings)
        var pre = [];
        function real(f) { var v = "f" + pre.length; pre.push(v + "=`realpath -e -- " + q(f.path) + "`"); return DQ + "$" + v + DQ; }
        var next = "round-" + ("00000" + (inputs.round + 1)).slice(-6) + ".h5";
        var a = [q(inputs.flas_aggregate), "-q", "--previous", real(inputs.previous), "--output", q(next),
                 "--strategy", q(inputs.strategy)];
        var opt = {"--lr": inputs.server_lr, "--momentum": inputs.server_momentum, "--beta1": inputs.server_beta1,
                   "--beta2": inputs.server_beta2, "--tau": inputs.server_tau,
                   "--max-update-norm": inputs.max_update_norm, "--max-update-ratio": inputs.max_update_ratio};
        for (var k in opt)
          if (opt[k] !== null && opt[k] !== undefined)
            a.push(k, q(opt[k]));
        a.push("--policy", "drop-bad", "--min-sites", q(inputs.min_sites ? inputs.min_sites : inputs.sites.length));
        // --input SITE=FILE for every site that delivered, in the order of the sites
        for (var i = 0; i < inputs.sites.length; i++)
          if (inputs.checkpoints[i])
            a.push("--input", q(inputs.sites[i].name + "=") + real(inputs.checkpoints[i]));
        return "set -e; " + pre.join("; ") + "; exec " + a.join(" ");
      }
outputs:
  next_global:
    type: File
    outputBinding:
      glob: "$('round-' + ('00000' + (inputs.round + 1)).slice(-6) + '.h5')"
  next_round:
    type: int
    outputBinding:
      outputEval: $(inputs.round + 1)
