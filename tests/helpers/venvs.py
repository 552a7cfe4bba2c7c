"""A fresh virtual environment with this checkout and one extra installed, as a user would: no system packages."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def fresh_install(tmp_path: Path, extra: str) -> tuple[str, Path]:
    """`pip install '.[extra]'` into tmp_path/venv; returns its python and an empty working folder beside it."""
    venv, work = tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{ROOT}[{extra}]"],
                             capture_output=True, text=True, timeout=1500, cwd=work)
    assert install.returncode == 0, install.stderr[-3000:]
    return python, work
