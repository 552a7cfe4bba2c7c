# Sourced by scripts/run and scripts/test: create or reuse .venv/ at the repository root, and
# (re)install the package with its extras whenever pyproject.toml changes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
stamp="$venv/.installed-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  # torch exactly: this machine carries a CPU build of 2.13.0, and a looser pin would fetch a CUDA one.
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "torch==2.13.0"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    --config-settings editable_mode=compat -e "$root[torch,test]"
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
