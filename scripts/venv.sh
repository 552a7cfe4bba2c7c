# Sourced by scripts/run and scripts/test: create or reuse .venv/ at the repository root, and
# (re)install the package with its extras whenever pyproject.toml changes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pip_install() { "$1/bin/python" -m pip install -q --disable-pip-version-check "${@:2}"; }

# ensure_venv DIR STAMP-SOURCE INSTALL-ARGS...: make DIR once, reinstall when STAMP-SOURCE changes.
ensure_venv() {
  local venv="$1" source="$2"
  shift 2
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  local stamp="$venv/.installed-$(sha256sum "$source" | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    # torch exactly: this machine carries a CPU build of 2.13.0; a looser pin would fetch a CUDA one.
    pip_install "$venv" "torch==2.13.0"
    pip_install "$venv" "$@"
    rm -f "$venv"/.installed-*
    touch "$stamp"
  fi
}

ensure_venv "$root/.venv" "$root/pyproject.toml" --config-settings editable_mode=compat -e "$root[torch,train,test,serve,tf,ray,openvino]"
export PATH="$root/.venv/bin:$PATH"

# transformers.js for the tests that load our exports in it (tests/test_transformers_js.py, the browser page), in
# .venv/js, outside the tracked tree: --ignore-scripts keeps onnxruntime-node from fetching GPU binaries (its CPU
# binary ships in the package). Skipped, and those tests say why, where npm is missing.
ensure_js() {
  local js="$root/.venv/js" version="4"
  [ -d "$js/node_modules/@huggingface/transformers" ] && return 0
  command -v npm >/dev/null || { echo "npm not found: the transformers.js tests will be skipped" >&2; return 0; }
  mkdir -p "$js"
  (cd "$js" && [ -f package.json ] || echo '{"private": true}' > package.json
   npm install --silent --no-audit --no-fund --ignore-scripts "@huggingface/transformers@$version" >/dev/null) \
    || echo "npm install @huggingface/transformers@$version failed: the transformers.js tests will be skipped" >&2
}
