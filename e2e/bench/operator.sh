#!/usr/bin/env bash
# Benchmark of the operator against 1,000 Node objects (no agents), on the
# local cluster (`e2e/cluster up` first). Prints the figures.
#
#   e2e/bench/operator.sh [NODES]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
nodes="${1:-1000}"
cargo build --release --locked -q -p nodeconfig-operator -p nodeconfig-e2e --bin bench-operator
# The cluster's replicas would hold the leader lease; stop them for the run.
e2e/cluster operator stop 1; e2e/cluster operator stop 2
trap 'e2e/cluster operator start 1; e2e/cluster operator start 2' EXIT
target/release/bench-operator "$nodes" "$PWD/target/release/nodeconfig-operator"
