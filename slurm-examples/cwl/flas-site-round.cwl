#!/usr/bin/env cwl-runner
# One site's part of one round: stage the global model at the site, submit the round's federation
# job there, wait for it, fetch the checkpoint its epilog published (verified against the site's
# manifest). All of it is flas-cwl-site over flas-stage, the coordinator's SSH/SFTP code with strict
# host-key checking; see that script's header for each step and what is checked.
#
# Runs wherever the workflow engine puts it (cwltool: here; StreamFlow: the deployment the site's
# binding names, see streamflow.yml): it needs flas-stage, python3, the site's SSH key and known_hosts
# there, and reaches the site over SSH itself. It holds nothing of the site's but the checkpoint.
cwlVersion: v1.2
class: CommandLineTool
label: one site, one round (stage, sbatch --federation, poll, fetch)
requirements:
  InlineJavascriptRequirement: {}
  SchemaDefRequirement:
    types:
      - $import: flas-types.yml
  # The job at the site takes minutes to hours; the step polls (RoundDeadline= of the coordinator).
  ToolTimeLimit:
    timelimit: $(inputs.deadline + 600)
  NetworkAccess:
    networkAccess: true
baseCommand: [python3]
inputs:
  helper:
    type: File
    default: {class: File, location: flas-cwl-site}
    inputBinding: {position: 0}
  site:
    type: flas-types.yml#Site
  site_name:
    type: string
    doc: >-
      the site's name (the workflow passes site.name): a plain string input, so that StreamFlow's
      matching binding filter can send each scattered instance to its site's deployment
  federation: string
  round: int
  global: File
  known_hosts:
    type: string
    doc: known_hosts with the sites' host keys (KnownHosts=); a path where this step runs
  signal:
    type: string
    default: USR1@60
  run_id:
    type: string?
    doc: ends every job name (flas-FED-rK-SITE-aN-RUNID), so that a run's jobs can be found at the sites
  deadline:
    type: int
    default: 3600
  poll_min:
    type: int
    default: 2
  poll_max:
    type: int
    default: 30
  flas_stage:
    type: string
    default: flas-stage
    doc: the flas-stage program (a path, or a name found in PATH)
arguments:
  - {prefix: --federation, valueFrom: $(inputs.federation), position: 1}
  - {prefix: --round, valueFrom: $(inputs.round), position: 1}
  - {prefix: --global, valueFrom: $(inputs.global.path), position: 1}
  - {prefix: --site, valueFrom: $(inputs.site_name), position: 1}
  - {prefix: --host, valueFrom: $(inputs.site.host), position: 1}
  - {prefix: --port, valueFrom: $(inputs.site.port), position: 1}
  - {prefix: --user, valueFrom: $(inputs.site.user), position: 1}
  - {prefix: --identity, valueFrom: $(inputs.site.identity), position: 1}
  - {prefix: --jump, valueFrom: $(inputs.site.jump), position: 1}
  - {prefix: --known-hosts, valueFrom: $(inputs.known_hosts), position: 1}
  - {prefix: --staging-root, valueFrom: $(inputs.site.staging_root), position: 1}
  - {prefix: --script, valueFrom: $(inputs.site.script), position: 1}
  - {prefix: --partition, valueFrom: $(inputs.site.partition), position: 1}
  - {prefix: --account, valueFrom: $(inputs.site.account), position: 1}
  - {prefix: --nodes, valueFrom: $(inputs.site.nodes), position: 1}
  - {prefix: --tasks, valueFrom: $(inputs.site.tasks), position: 1}
  - {prefix: --cpus-per-task, valueFrom: $(inputs.site.cpus_per_task), position: 1}
  - {prefix: --time, valueFrom: $(inputs.site.time), position: 1}
  - {prefix: --signal, valueFrom: $(inputs.signal), position: 1}
  - {prefix: --run-id, valueFrom: $(inputs.run_id), position: 1}
  - {prefix: --deadline, valueFrom: $(inputs.deadline), position: 1}
  - {prefix: --poll-min, valueFrom: $(inputs.poll_min), position: 1}
  - {prefix: --poll-max, valueFrom: $(inputs.poll_max), position: 1}
  - {prefix: --flas-stage, valueFrom: $(inputs.flas_stage), position: 1}
  # the batch script's arguments: after "--", each one a word of its own (they start with "--")
  - {valueFrom: "--", position: 2}
  - {valueFrom: "$(inputs.site.script_args ? inputs.site.script_args : [])", position: 3}
outputs:
  checkpoint:
    type: File?
    doc: the site's local checkpoint of the round (null when the site was dropped this round)
    outputBinding:
      glob: $(inputs.site_name).h5
  job:
    type: long?
    doc: the Slurm job id at the site that trained it
    outputBinding:
      glob: $(inputs.site_name).job
      loadContents: true
      outputEval: "$(self.length ? parseInt(self[0].contents) : null)"
  dropped:
    type: string?
    doc: why the site was dropped this round
    outputBinding:
      glob: $(inputs.site_name).dropped
      loadContents: true
      outputEval: "$(self.length ? self[0].contents.trim() : null)"
