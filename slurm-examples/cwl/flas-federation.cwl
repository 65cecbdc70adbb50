#!/usr/bin/env cwl-runner
# FLaS's federated loop as a CWL v1.2 workflow: ROUNDS rounds of (every site trains the global model
# in a Slurm job submitted with --federation; flas-aggregate merges the local checkpoints into the
# next global model). It does per site and round what flas-coordinator does (the same staging names,
# sbatch flags, manifest checks and aggregation options), so that the same description gives a model
# with the same parameters; without the coordinator's journal, accounting, speed-aware steps,
# compressed updates or DP (docs/user.md, "Two ways to run a federation").
#
# The rounds are cwltool's Loop extension (cwltool --enable-ext; StreamFlow reads it too):
#   cwltool --enable-ext flas-federation.cwl inputs.yml
#   streamflow run streamflow.yml
cwlVersion: v1.2
class: Workflow
label: FLaS federated training across Slurm sites
$namespaces:
  cwltool: "http://commonwl.org/cwltool#"
requirements:
  InlineJavascriptRequirement: {}
  SubworkflowFeatureRequirement: {}
  ScatterFeatureRequirement: {}
  StepInputExpressionRequirement: {}
  SchemaDefRequirement:
    types:
      - $import: flas-types.yml
inputs:
  federation:
    type: string
    default: flas
  rounds:
    type: int
    doc: train rounds first_round .. rounds-1 (Rounds=)
  first_round:
    type: int
    default: 0
  initial_global:
    type: File
    doc: the global model of the first round (InitialGlobal=)
  sites:
    type: flas-types.yml#Site[]
    doc: the sites, in the order the coordinator's description lists them (the merge order)
  known_hosts:
    type: string
    doc: known_hosts holding every site's host key (KnownHosts=); unknown or changed keys are refused
  signal:
    type: string
    default: USR1@60
    doc: sbatch --signal=B:SIGNAL (Signal=)
  run_id:
    type: string?
    doc: ends every job name; default a new one per site and round
  deadline:
    type: int
    default: 3600
    doc: seconds a site's part of a round may take (RoundDeadline=)
  poll_min:
    type: int
    default: 2
  poll_max:
    type: int
    default: 30
  strategy:
    type: string
    default: fedavg
    doc: fedavg, mean, fedavgm, fedadam, fedyogi or diloco (Strategy=)
  server_lr: double?
  server_momentum: double?
  server_beta1: double?
  server_beta2: double?
  server_tau: double?
  max_update_norm: double?
  max_update_ratio: double?
  min_sites:
    type: int?
    doc: fewest sites that must deliver for a round (MinSites=); default all
  flas_stage:
    type: string
    default: flas-stage
  flas_aggregate:
    type: string
    default: flas-aggregate
outputs:
  global:
    type: File
    doc: the global model after the last round (round-NNNNNN.h5, NNNNNN = rounds)
    outputSource: loop/next_global
  jobs:
    type:
      type: array
      items: ["null", long]
    doc: the Slurm job of every site (in the order of sites) in the last round
    outputSource: loop/jobs
steps:
  loop:
    run: flas-round.cwl
    in:
      round: first_round
      rounds: rounds
      global: initial_global
      federation: federation
      sites: sites
      known_hosts: known_hosts
      signal: signal
      run_id: run_id
      deadline: deadline
      poll_min: poll_min
      poll_max: poll_max
      strategy: strategy
      server_lr: server_lr
      server_momentum: server_momentum
      server_beta1: server_beta1
      server_beta2: server_beta2
      server_tau: server_tau
      max_update_norm: max_update_norm
      max_update_ratio: max_update_ratio
      min_sites: min_sites
      flas_stage: flas_stage
      flas_aggregate: flas_aggregate
    out: [next_global, next_round, jobs]
    requirements:
      cwltool:Loop:
        # evaluated before every iteration, on the inputs that iteration would get
        loopWhen: $(inputs.round < inputs.rounds)
        # the next iteration's round and global model are this one's outputs (cwltool 3.1.20230209
        # and StreamFlow 0.2 name the field loopSource; later cwltool renamed it outputSource)
        loop:
          round:
            loopSource: next_round
          global:
            loopSource: next_global
        outputMethod: last
