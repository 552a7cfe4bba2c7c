"""The real `distilbert` command in a subprocess, and what a user error must look like."""

import os
import subprocess
import sys
from pathlib import Path

COMMAND = str(Path(sys.executable).parent / "distilbert")
ROOT = Path(__file__).resolve().parents[2]


def environment(**changes) -> dict:
    """The test's environment, offline, importing this checkout's package (the venv may point at another)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path, **changes}


def run(*args, stdin=None, ok=True, env=None):
    p = subprocess.run([COMMAND, *map(str, args)], input=stdin, capture_output=True, text=True,
                       env=env or environment(), timeout=120)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def assert_user_error(p, *words):
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr
    for word in words:
        assert word in lines[0], lines[0]
