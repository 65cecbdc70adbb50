#!/usr/bin/env cwl-runner
# One federated round: every site trains the round's global model (scattered: the sites work in
# parallel), then flas-aggregate merges what they delivered into the next global model.
cwlVersion: v1.2
class: Workflow
label: one federated round
requirements:
  InlineJavascriptRequirement: {}
  ScatterFeatureRequirement: {}
  StepInputExpressionRequirement: {}
  SchemaDefRequirement:
    types:
      - $import: flas-types.yml
inputs:
  round: int
  rounds: int
  global: File
  federation: string
  sites: flas-types.yml#Site[]
  known_hosts: string
  signal: string
  run_id: string?
  deadline: int
  poll_min: int
  poll_max: int
  strategy: string
  server_lr: double?
  server_momentum: double?
  server_beta1: double?
  server_beta2: double?
  server_tau: double?
  max_update_norm: double?
  max_update_ratio: double?
  min_sites: int?
  flas_stage: string
  flas_aggregate: string
outputs:
  next_global:
    type: File
    outputSource: aggregate/next_global
  next_round:
    type: int
    outputSource: aggregate/next_round
  jobs:
    type:
      type: array
      items: ["null", long]
    outputSource: train/job
steps:
  train:
    run: flas-site-round.cwl
    scatter: site
    in:
      site: sites
      # after the scatter: this instance's site
      site_name: {valueFrom: $(inputs.site.name)}
      federation: federation
      round: round
      global: global
      known_hosts: known_hosts
      signal: signal
      run_id: run_id
      deadline: deadline
      poll_min: poll_min
      poll_max: poll_max
      flas_stage: flas_stage
    out: [checkpoint, job, dropped]
  aggregate:
    run: flas-aggregate.cwl
    in:
      round: round
      previous: global
      sites: sites
      checkpoints: train/checkpoint
      strategy: strategy
      server_lr: server_lr
      server_momentum: server_momentum
      server_beta1: server_beta1
      server_beta2: server_beta2
      server_tau: server_tau
      max_update_norm: max_update_norm
      max_update_ratio: max_update_ratio
      min_sites: min_sites
      flas_aggregate: flas_aggregate
    out: [next_global, next_round]
