#!/usr/bin/env bash
# Installs every Debian 12 package FLaS needs to build, test and run its demo (as root, no
# recommends: they would pull in systemd/logind). Package installs here never start services:
# the test bed starts its own daemons by hand.
set -euo pipefail
PACKAGES=(
    # build
    gcc g++ make cmake pkg-config
    # Slurm (spank.h, daemons, clients) and munge
    slurm-wlm slurmctld slurmd slurm-client munge libslurm-dev
    # MPI with PMIx, parallel and serial HDF5
    openmpi-bin libopenmpi-dev libpmix-dev libhdf5-dev libhdf5-openmpi-dev hdf5-tools
    # libraries FLaS links
    libssh-dev libssl-dev check libopenblas-dev sentencepiece libsentencepiece-dev libjansson-dev zlib1g-dev
    # oneDNN: bf16 mixed precision on the CPU (flas-train --precision bf16)
    libdnnl-dev
    # the test bed: sshd, namespaces, process tools
    openssh-server openssh-client iproute2 util-linux procps time bc
    # the CWL workflow of the federated loop (slurm-examples/cwl) and its test
    cwltool
    # oracles and plots
    python3 python3-torch python3-h5py python3-numpy python3-sentencepiece gnuplot-nox
    # llama.cpp, the oracle of the GGUF export (tests/interop/llamacpp), runs on Node.js; npm below
    nodejs
    # real Italian and Czech text for the demo corpora, and the public held-out text (aptitude manual)
    fortunes-it fortunes-cs libreoffice-help-it libreoffice-help-cs aptitude-doc-it aptitude-doc-cs
)
[ "$(id -u)" = 0 ] || { echo "install-deps: run as root" >&2; exit 1; }
missing=()
for p in "${PACKAGES[@]}"; do
    [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == *"ok installed"* ]] || missing+=("$p")
done
# npm: a NodeSource nodejs bundles it (and conflicts with Debian's npm package); Debian's nodejs does not.
if ! command -v npm >/dev/null && [[ " ${missing[*]} " != *" nodejs "* ]]; then
    missing+=(npm)
fi
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all ${#PACKAGES[@]} packages present"
    exit 0
fi
echo "install-deps: installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Services must not start from maintainer scripts (no systemd here; the bed runs its own daemons).
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
# nodejs was just installed: Debian's comes without npm.
if ! command -v npm >/dev/null; then
    apt-get install -y -q --no-install-recommends npm
fi
echo "install-deps: done"
