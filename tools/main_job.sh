#!/bin/bash
# The README's main job, run from the repository root after a build in
# ./build: smoke-runs the tensor core on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
./build/tools/bench_ops --quick
