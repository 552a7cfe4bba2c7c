"""distilbert.ray on a real local Ray cluster (two actors on two cores), started once for the module.

The --ray output must equal the single-process output row for row, in the input's order, with the input's
columns kept; a killed actor must cost nothing but time; bad input must be one line.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest


pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pd = pytest.importorskip("pandas")

from distilbert import ray as on_ray  # noqa: E402
from distilbert.errors import UserError  # noqa: E402
from distilbert.pipelines import pipeline  # noqa: E402
from helpers.models import ROOT, data_file

N_TEXTS = 300


@pytest.fixture(scope="module")
def cluster():
    """A local Ray of two CPUs, its address for CLI subprocesses; shut down after the module."""
    import ray

    on_ray.connect(num_cpus=2)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def texts() -> list[str]:
    with open(data_file("glue", "SST-2", "dev.tsv"), encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    return [row[0] for row in rows[:N_TEXTS]]


def _export(checkpoint_factory, tmp_path_factory, arch: str) -> Path:
    from distilbert.onnx import export

    data_file("vocab", "bert-base-uncased-vocab.txt")
    folder, _ = checkpoint_factory("distilbert", arch, vocab="real")
    out = tmp_path_factory.mktemp(f"onnx-{arch}")
    export(folder, out, log=lambda line: None)
    return out


@pytest.fixture(scope="module")
def embedder(checkpoint_factory, tmp_path_factory) -> Path:
    return _export(checkpoint_factory, tmp_path_factory, "Model")


@pytest.fixture(scope="module")
def classifier(checkpoint_factory, tmp_path_factory) -> Path:
    return _export(checkpoint_factory, tmp_path_factory, "ForSequenceClassification")


@pytest.fixture(scope="module")
def jsonl(texts, tmp_path_factory) -> Path:
    """Rows with an identifier and other columns beside the text, to see them kept in order."""
    path = tmp_path_factory.mktemp("input") / "sst.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"id": f"sst-{i:04d}", "sentence": text, "n": i}) + "\n")
    return path


def _expected_embeddings(model: Path, texts: list[str]) -> np.ndarray:
    return pipeline("feature-extraction", model=model, backend="onnx")(texts, pooling="mean")


def test_embed_equals_single_process_in_order(cluster, embedder, jsonl, texts, tmp_path):
    out = tmp_path / "out.parquet"
    summary = on_ray.run_job("feature-extraction", str(jsonl), str(out), model=str(embedder), column="sentence",
                             num_actors=2, batch_size=8, blocks=6, log=lambda line: None)
    assert (summary.rows, summary.actors) == (N_TEXTS, 2)
    table = pq.read_table(out)
    assert table.column_names == ["id", "sentence", "n", "embedding"]
    assert table.column("id").to_pylist() == [f"sst-{i:04d}" for i in range(N_TEXTS)]
    assert table.column("n").to_pylist() == list(range(N_TEXTS))
    assert table.column("sentence").to_pylist() == texts
    got = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(got, _expected_embeddings(embedder, texts), atol=1e-6, rtol=0)
    frame = pd.read_parquet(out)  # pandas reads the folder too, rows in the same order
    assert list(frame["id"]) == table.column("id").to_pylist()
    np.testing.assert_array_equal(np.stack(frame["embedding"].to_numpy()), got)


@pytest.mark.slow
def test_cli_embed_equals_cli_without_ray(cluster, embedder, texts, tmp_path):
    """`distilbert embed FILE --ray` against `distilbert embed FILE` on the same lines (blank ones too)."""
    lines = texts[:120] + [""] + texts[120:200]
    source = tmp_path / "texts.txt"
    source.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    single = tmp_path / "single.npy"
    _cli("embed", source, "--model", embedder, "--output", single, "--batch-size", "8")
    out = tmp_path / "ray.parquet"
    done = _cli("embed", source, "--model", embedder, "--ray", "--address", cluster, "--num-actors", "2",
                "--batch-size", "8", "--output", out)
    assert f"wrote {len(lines)} rows to {out}" in done.stderr and "2 actor(s)" in done.stderr
    table = pq.read_table(out)
    assert table.column("text").to_pylist() == lines
    got = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(got, np.load(single), atol=1e-6, rtol=0)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The minimum number of concurrent actors")  # three small files make one block
def test_classify_equals_single_process_on_parquet(cluster, classifier, texts, tmp_path):
    source = tmp_path / "in.parquet"  # a folder of three files, read in the order of their names
    source.mkdir()
    table = pa.table({"key": list(range(N_TEXTS, 0, -1)), "text": texts})
    for part in range(3):
        pq.write_table(table.slice(part * 100, 100), source / f"part-{part}.parquet")
    out = tmp_path / "out.parquet"
    on_ray.run_job("text-classification", str(source), str(out), model=str(classifier), num_actors=2, batch_size=4,
                   log=lambda line: None)
    table = pq.read_table(out)
    assert table.column("key").to_pylist() == list(range(N_TEXTS, 0, -1))
    expected = pipeline("text-classification", model=classifier, backend="onnx")(texts)
    assert table.column("label").to_pylist() == [r["label"] for r in expected]
    assert table.column("score").to_pylist() == [r["score"] for r in expected]


@pytest.mark.slow
def test_killed_actor_is_replaced_and_every_row_written_once(cluster, embedder, jsonl, texts, tmp_path):
    """SIGKILL one actor process mid-job: Ray restarts it, reruns its batches; the output is still exact."""
    pids = tmp_path / "pids"
    pids.mkdir()

    class Recording(on_ray.Predictor):  # defined here, so Ray sends it by value
        def __call__(self, batch):
            (pids / str(os.getpid())).touch()
            time.sleep(0.5)  # long enough batches to be killed inside one
            return super().__call__(batch)

    out = tmp_path / "out.parquet"
    result = {}

    def job():
        try:
            result["summary"] = on_ray.run_job("feature-extraction", str(jsonl), str(out), model=str(embedder),
                                               column="sentence", num_actors=2, batch_size=4, blocks=25,
                                               actor=Recording, log=lambda line: None)
        except Exception as e:  # noqa: BLE001 - reported below
            result["error"] = e

    runner = threading.Thread(target=job)
    runner.start()
    deadline = time.monotonic() + 240
    while not any(pids.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    victim = int(next(pids.iterdir()).name)
    os.kill(victim, signal.SIGKILL)
    runner.join(timeout=300)
    assert not runner.is_alive() and "error" not in result, result.get("error")
    # the victim, the other actor, and the victim's replacement (same actor, a new process) all ran batches
    assert victim in {int(p.name) for p in pids.iterdir()} and len(list(pids.iterdir())) >= 3
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == [f"sst-{i:04d}" for i in range(N_TEXTS)]  # each row once, in order
    got = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(got, _expected_embeddings(embedder, texts), atol=1e-6, rtol=0)


def test_missing_column_is_one_line(cluster, embedder, jsonl, tmp_path):
    with pytest.raises(UserError, match=r"column 'text' is not in .*sst.jsonl \(its columns: id, sentence, n\)") as e:
        on_ray.run_job("feature-extraction", str(jsonl), str(tmp_path / "o"), model=str(embedder), num_actors=1)
    assert "\n" not in str(e.value)


def test_unreadable_input_is_one_line(cluster, embedder, tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not a parquet file")
    with pytest.raises(UserError, match="cannot read .*broken.parquet as parquet") as e:
        on_ray.run_job("feature-extraction", str(broken), str(tmp_path / "o"), model=str(embedder), num_actors=1)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="does not exist"):
        on_ray.run_job("feature-extraction", str(tmp_path / "none.txt"), str(tmp_path / "o"), model=str(embedder))


def test_model_the_workers_cannot_see_is_one_line(cluster, jsonl, tmp_path):
    """A folder that is not where the workers look (here: nowhere) fails the actors' start: one line naming it."""
    with pytest.raises(UserError, match="on worker node .*folder /no/such/model does not exist.*--ship-model") as e:
        on_ray.run_job("feature-extraction", str(jsonl), str(tmp_path / "o"), model="/no/such/model",
                       column="sentence", num_actors=1)
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_cli_errors_are_one_line(cluster, embedder, jsonl, tmp_path):
    done = _cli("embed", jsonl, "--model", embedder, "--ray", "--address", cluster, "--output", tmp_path / "o",
                check=False)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "column 'text' is not in" in done.stderr
    done = _cli("embed", jsonl, "--model", embedder, "--column", "sentence", check=False)
    assert done.returncode == 2 and done.stderr.strip() == "error: --column needs --ray"


@pytest.mark.slow
def test_ship_model_through_object_store(cluster, embedder, jsonl, texts, tmp_path):
    out = tmp_path / "out.parquet"
    on_ray.run_job("feature-extraction", str(jsonl), str(out), model=str(embedder), column="sentence",
                   num_actors=1, ship_model=True, log=lambda line: None)
    got = np.array(pq.read_table(out).column("embedding").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(got, _expected_embeddings(embedder, texts), atol=1e-6, rtol=0)


def _cli(*args, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "distilbert.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)
    if check:
        assert done.returncode == 0, done.stderr
    return done


@pytest.mark.slow
def test_cli_classify_equals_cli_without_ray(cluster, classifier, jsonl, texts, tmp_path):
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(texts[:100]) + "\n", encoding="utf-8")
    single = _cli("classify", "--file", source, "--model", classifier, "--json")
    expected = [json.loads(line)[0] for line in single.stdout.splitlines()]
    out = tmp_path / "labels.parquet"
    _cli("classify", jsonl, "--column", "sentence", "--model", classifier, "--ray", "--address", cluster,
         "--num-actors", "2", "--output", out)
    table = pq.read_table(out)
    assert table.column("id").to_pylist()[:100] == [f"sst-{i:04d}" for i in range(100)]
    assert [{"label": r["label"], "score": r["score"]} for r in table.to_pylist()[:100]] == expected


def test_nothing_else_imports_ray():
    """Ray is an extra: the package imports it in distilbert/ray/ alone."""
    package = ROOT / "distilbert"
    assert list((package / "ray").glob("*.py"))
    for path in package.rglob("*.py"):
        if package / "ray" not in path.parents:
            source = path.read_text(encoding="utf-8")
            assert "import ray" not in re.sub(r"from \.+ import ray as", "", source) and "from ray" not in source, path


def test_importing_changes_no_environment():
    """RAY_DEDUP_LOGS is set where Ray is started (connect), not by an import."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_DEDUP_LOGS"}
    probe = "import os, distilbert.ray; print(os.environ.get('RAY_DEDUP_LOGS'))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["None"], done.stderr[-2000:]


def test_a_workers_user_error_arrives_as_the_object_it_was():
    """Under Ray's wrappers the UserError itself is found (RayTaskError's cause, Ray Data's chained exceptions),
    never rebuilt from traceback text."""
    import ray

    mistake = UserError("column 'n' holds int values (0); it must hold text")
    wrapped = ray.exceptions.RayTaskError("Predictor.__call__", "Traceback ...\nUserError: column 'n' ...", mistake)
    try:
        try:
            raise wrapped.as_instanceof_cause()
        except Exception as e:
            raise RuntimeError("execution failed") from e
    except RuntimeError as e:
        assert on_ray.explain(e, "in.jsonl") is mistake
    text_only = RuntimeError("Traceback (most recent call last):\n  ...\ndistilbert.errors.UserError: a message")
    assert str(on_ray.explain(text_only, "in.jsonl")) == "the Ray job failed (RuntimeError: Traceback (most recent call last):)"


def test_a_column_without_text_is_one_line_from_the_workers(cluster, embedder, jsonl, tmp_path):
    """The actor's own UserError (raised in its call), through Ray Data to the driver."""
    with pytest.raises(UserError, match=r"^column 'n' holds int values \(0\); it must hold text$"):
        on_ray.run_job("feature-extraction", str(jsonl), str(tmp_path / "o"), model=str(embedder), column="n",
                       num_actors=1, log=lambda line: None)


@pytest.mark.slow
@pytest.mark.parametrize("aggregation", ["simple", "none"])
def test_ner_entities_equal_single_process(cluster, checkpoint_factory, tmp_path_factory, texts, tmp_path,
                                            aggregation):
    tagger = _export(checkpoint_factory, tmp_path_factory, "ForTokenClassification")
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(texts[:60]) + "\n", encoding="utf-8")
    out = tmp_path / "entities.parquet"
    on_ray.run_job("token-classification", str(source), str(out), model=str(tagger), num_actors=2, batch_size=4,
                   blocks=4, aggregation_strategy=aggregation, log=lambda line: None)
    expected = pipeline("token-classification", model=tagger, backend="onnx",
                        aggregation_strategy=aggregation)(texts[:60])
    assert pq.read_table(out).column("entities").to_pylist() == expected


@pytest.mark.slow
def test_answers_equal_single_process(cluster, checkpoint_factory, tmp_path_factory, tmp_path):
    reader = _export(checkpoint_factory, tmp_path_factory, "ForQuestionAnswering")
    squad = json.loads(data_file("squad", "dev-v1.1.json").read_text(encoding="utf-8"))
    rows = [{"question": qa["question"], "context": paragraph["context"][:300]}
            for paragraph in squad["data"][0]["paragraphs"][:10] for qa in paragraph["qas"][:3]]
    source = tmp_path / "questions.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "answers.parquet"
    on_ray.run_job("question-answering", str(source), str(out), model=str(reader), column="question",
                   pair_column="context", num_actors=2, batch_size=4, blocks=3, log=lambda line: None)
    expected = pipeline("question-answering", model=reader, backend="onnx")(
        question=[r["question"] for r in rows], context=[r["context"] for r in rows])
    got = pq.read_table(out).select(["score", "start", "end", "answer"]).to_pylist()
    assert got == [{k: e[k] for k in ("score", "start", "end", "answer")} for e in expected]
