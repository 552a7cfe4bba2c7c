"""Readers of labelled data: GLUE by name, tables with named columns, CoNLL / JSONL NER, SQuAD JSON."""

import json
import logging

import pytest

from distilbert.data import Columns, read
from distilbert.data.glue import GLUE, files, read_glue, score
from distilbert.data.ner import tag_names
from distilbert.data.tables import label_names, problem_type_of
from distilbert.errors import UserError
from helpers.models import data_file

ROWS = {"cola": 1043, "sst2": 872, "mrpc": 408, "stsb": 1500, "qnli": 5463, "rte": 277}


@pytest.mark.parametrize("name", sorted(ROWS))
def test_glue_dev_files_read_whole_with_their_labels(name):
    glue = data_file("glue")
    _, dev = files(name, glue)
    examples = read_glue(name, dev)
    assert len(examples) == ROWS[name]
    task = GLUE[name]
    if task.labels is None:
        assert all(isinstance(e.label, float) for e in examples)
    else:
        assert {e.label for e in examples} == set(task.labels)
    assert (examples[0].text_pair is None) == (task.text_pair is None)


def test_glue_layouts():
    glue = data_file("glue")
    mrpc = read_glue("mrpc", files("mrpc", glue)[1])
    assert mrpc[0].text.startswith("He said the foodservice pie")  # the byte-order mark is not in the header
    assert mrpc[0].text_pair.startswith('"The foodservice pie')  # quote marks are text (QUOTE_NONE)
    cola = read_glue("cola", files("cola", glue)[1])
    assert cola[0].text == "The sailors rode the breeze clear of the rocks." and cola[0].label == "acceptable"
    assert score("mrpc", {"accuracy": 0.8, "f1": 0.9}) == pytest.approx(85.0)


def test_glue_bad_files(tmp_path):
    bad = tmp_path / "dev.tsv"
    bad.write_text("sentence\tlabel\nfine\t1\nodd\t7\n")
    with pytest.raises(UserError, match=r"line 3: label '7' is not one of GLUE SST-2's 0, 1"):
        read_glue("sst2", bad)
    bad.write_text("text\tlabel\nfine\t1\n")
    with pytest.raises(UserError, match="no column 'sentence'"):
        read_glue("sst2", bad)
    with pytest.raises(UserError, match="unknown GLUE task 'wnli'"):
        read_glue("wnli", bad)


def test_tables_csv_tsv_jsonl(tmp_path):
    (tmp_path / "a.csv").write_text('review,other,stars\n"good, really",x,5\nbad,y,1\n')
    ex = read("text-classification", tmp_path / "a.csv", Columns(text="review", text_pair="other", label="stars"))
    assert ex[0].text == "good, really" and ex[0].text_pair == "x" and ex[0].label == "5"
    assert problem_type_of(ex) == "single_label_classification" and label_names(ex, "") == ["1", "5"]
    (tmp_path / "b.jsonl").write_text('{"text": "a", "label": ["x", "y"]}\n\n{"text": "b", "label": []}\n')
    ex = read("text-classification", tmp_path / "b.jsonl")
    assert problem_type_of(ex) == "multi_label_classification" and ex[0].label == ["x", "y"]
    (tmp_path / "c.tsv").write_text('text\tlabel\n"quoted\t0.5\nb\t2.25\n')
    ex = read("text-classification", tmp_path / "c.tsv")
    assert ex[0].text == '"quoted' and problem_type_of(ex) == "regression"
    (tmp_path / "d.csv").write_text("text,label\na,\"x,y\"\n")
    ex = read("text-classification", tmp_path / "d.csv", Columns(problem_type="multi_label_classification"))
    assert ex[0].label == ["x", "y"]


def test_tables_bad_input(tmp_path):
    (tmp_path / "a.csv").write_text("review,stars\ngood,5\n")
    with pytest.raises(UserError, match="has no column 'text'.*--text-column"):
        read("text-classification", tmp_path / "a.csv")
    (tmp_path / "b.jsonl").write_text('{"text": "a", "label": 1}\n{"text": \n')
    with pytest.raises(UserError, match="b.jsonl line 2 is not JSON"):
        read("text-classification", tmp_path / "b.jsonl")
    with pytest.raises(UserError, match="does not exist"):
        read("text-classification", tmp_path / "none.csv")


def test_conll_2003():
    ex = read("token-classification", data_file("ner", "conll2003", "valid.txt"))
    assert len(ex) == 3250
    assert ex[0].tokens == ["CRICKET", "-", "LEICESTERSHIRE", "TAKE", "OVER", "AT", "TOP", "AFTER", "INNINGS", "VICTORY", "."]
    assert ex[0].tags[2] == "B-ORG"
    assert tag_names(ex) == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def test_ner_bad_input_and_jsonl(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ\n")
    with pytest.raises(UserError, match=r"bad.txt line 4 is malformed"):
        read("token-classification", bad)
    (tmp_path / "a.jsonl").write_text(json.dumps({"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}) + "\n")
    assert read("token-classification", tmp_path / "a.jsonl")[0].tags == ["B-ORG", "O"]
    (tmp_path / "b.jsonl").write_text(json.dumps({"tokens": ["EU", "rejects"], "tags": ["B-ORG"]}) + "\n")
    with pytest.raises(UserError, match="one per token"):
        read("token-classification", tmp_path / "b.jsonl")


def test_squad(tmp_path, caplog):
    ex = read("question-answering", data_file("squad", "dev-v1.1.json"))
    assert len(ex) > 10_000 and ex[0].answers["text"][0] == "Denver Broncos"
    bad = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": "Paris is in France.", "qas": [
        {"id": "1", "question": "Where?", "answers": [{"text": "France", "answer_start": 12}]},
        {"id": "2", "question": "What?", "answers": [{"text": "Paris", "answer_start": 3}]},
        {"id": "3", "question": "Who?", "answers": [], "is_impossible": True}]}]}]}
    (tmp_path / "s.json").write_text(json.dumps(bad))
    with caplog.at_level(logging.WARNING, logger="distilbert"):
        ex = read("question-answering", tmp_path / "s.json")
    assert [e.id for e in ex] == ["1", "3"] and ex[1].is_impossible
    assert "1 answer(s) whose offsets do not match" in caplog.text
    (tmp_path / "n.json").write_text("[]")
    with pytest.raises(UserError, match="not SQuAD JSON"):
        read("question-answering", tmp_path / "n.json")
