#!/usr/bin/env bash
# The downstream-task benchmark (W5-W7). Peers that pin other transformers versions get .venv-peers/.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/venv.sh"
ensure_venv "$root/.venv-peers" "$root/benchmarks/requirements-peers.txt" -r "$root/benchmarks/requirements-peers.txt"
cd "$root"
exec python benchmarks/tasks.py "$@"
