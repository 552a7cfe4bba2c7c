"""`distilbert serve` against its own /openapi.json, as Schemathesis (4.x) checks it: for a server of every task,
every operation the document lists, with every check Schemathesis has (status codes, content types, response
schemas, schema-valid bodies accepted and schema-violating ones refused, undeclared methods, missing auth,
...), a fixed seed and a bounded number of examples per operation. Any finding fails the test.

Schemathesis runs as a user would run it (its CLI, in a subprocess), with the project's schemathesis.toml,
which names the two statuses the document gives and Schemathesis does not expect unless told (413 for more
inputs than maxItems; 424 from a route of another task).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.models import ROOT, TASK_OF_ARCH, data_file
from helpers.serving import ready, start, stop

pytest.importorskip("fastapi")
pytest.importorskip("schemathesis")

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
EXAMPLES = 60  # per operation and phase
SEED = 1
KEY = "k3y"
# tiny, with BERT-base's 512 positions: the fuzzer's texts (rarely over a few hundred characters) then fit the
# model, as a real user's do; what happens past the model's maximum is checked in test_serve.py
TINY = dict(max_position_embeddings=512)


@pytest.fixture(scope="module")
def task_servers(checkpoint_factory, tmp_path_factory):
    """A server for every task (and one feature-extraction server with an API key), started at once."""
    data_file("vocab", "bert-base-uncased-vocab.txt")
    tmp = tmp_path_factory.mktemp("schemathesis-servers")
    folders = {task: checkpoint_factory("distilbert", arch, vocab="real", **TINY)[0]
               for arch, task in TASK_OF_ARCH.items()}
    started = {task: start(tmp, folder) for task, folder in folders.items()}
    started["feature-extraction, --api-key"] = start(tmp, folders["feature-extraction"], "--api-key", KEY)
    yield started
    for served in started.values():
        stop(served)


@pytest.mark.slow
def test_schemathesis_finds_nothing_for_any_task(task_servers, tmp_path, capsys):
    if not SCHEMATHESIS.exists():
        pytest.skip(f"no schemathesis command beside {sys.executable}")
    results, failed = {}, []
    for name, served in task_servers.items():
        ready(served)
        reports = tmp_path / name.replace(",", "").replace(" ", "-")
        auth = ["-H", f"Authorization: Bearer {KEY}"] if "--api-key" in name else []
        p = subprocess.run(
            [str(SCHEMATHESIS), "--config-file", str(ROOT / "schemathesis.toml"), "run", served.url + "/openapi.json",
             "--checks", "all", "--max-examples", str(EXAMPLES), "--seed", str(SEED), "--workers", "1", *auth,
             "--report", "json", "--report-dir", str(reports)],
            capture_output=True, text=True, timeout=600, cwd=tmp_path)
        found = list(reports.glob("*.json"))
        assert found, f"{name}: no report (exit {p.returncode}):\n{p.stdout[-3000:]}{p.stderr[-2000:]}"
        report = json.loads(found[0].read_text())
        operations, cases = report["operations"], report["test_cases"]
        results[name] = (operations["tested"], operations["selected"], cases["generated"], cases["unique_failures"],
                         len(report["errors"]))
        if cases["unique_failures"] or report["errors"] or operations["tested"] != operations["selected"]:
            failed.append(f"{name}:\n{p.stdout[-6000:]}")
    with capsys.disabled():  # the figures in the log, passed or not
        print(f"\nSchemathesis {json.loads(found[0].read_text())['schemathesis_version']}, --checks all, "
              f"--max-examples {EXAMPLES}, --seed {SEED}")
        for name, (tested, selected, generated, failures, errors) in results.items():
            print(f"  {name:32} operations {tested}/{selected}, requests {generated}, findings {failures}, "
                  f"errors {errors}")
    assert not failed, "\n\n".join(failed)
    for served in task_servers.values():  # and no server logged a traceback on the way
        assert "Traceback" not in served.log.read_text(), served.log.read_text()[-3000:]

