"""Hugging Face checkpoints in every layout, in and out, and the errors a broken one gives."""

import json

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from distilbert.checkpoint import load, read_state_dict, save
from distilbert.hub import resolve
from distilbert.errors import MissingHead, UserError
from helpers.models import ARCHS, TASK_OF_ARCH, batch, make_reference, save_reference


def outputs(model, family, ours=False):
    ids, mask, types = batch(family)
    with torch.no_grad():
        if ours:
            out = model(ids, mask, types)
        else:
            out = model(input_ids=ids, attention_mask=mask, **({"token_type_ids": types} if types is not None else {}))
    return {k: out[k] for k in ("last_hidden_state", "logits", "start_logits", "end_logits", "pooler_output")
            if k in out and out[k] is not None}


@pytest.mark.parametrize("layout", ["sharded-safetensors", "bin", "sharded-bin"])
def test_other_layouts_load(tmp_path, layout):
    ref = make_reference("bert", "ForMaskedLM")
    sharded = layout.startswith("sharded")
    save_reference(ref, tmp_path, tokenizer=False, max_shard_size="20KB" if sharded else "5GB")
    if "bin" in layout:  # transformers 5 writes safetensors only; write the .bin layouts as older versions did
        state = {}
        for path in sorted(tmp_path.glob("*.safetensors")):
            state.update(load_file(path))
            path.unlink()
        (tmp_path / "model.safetensors.index.json").unlink(missing_ok=True)
        if sharded:
            keys = sorted(state)
            half = len(keys) // 2
            shards = {"pytorch_model-00001-of-00002.bin": keys[:half], "pytorch_model-00002-of-00002.bin": keys[half:]}
            for name, names in shards.items():
                torch.save({k: state[k] for k in names}, tmp_path / name)
            weight_map = {k: name for name, names in shards.items() for k in names}
            (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
        else:
            torch.save(state, tmp_path / "pytorch_model.bin")
    else:
        assert (tmp_path / "model.safetensors.index.json").exists()
    net, _, _ = load(tmp_path)
    for name, value in outputs(ref, "bert").items():
        torch.testing.assert_close(outputs(net, "bert", ours=True)[name], value, rtol=0, atol=1e-5)


def test_pickled_code_is_never_run(tmp_path):
    ref = make_reference("distilbert", "Model")
    save_reference(ref, tmp_path, tokenizer=False)
    (tmp_path / "model.safetensors").unlink()

    class Evil:
        def __reduce__(self):
            return (exec, ("open('%s', 'w').write('ran')" % (tmp_path / "pwned"),))

    torch.save({"x": Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(UserError, match="not a readable PyTorch weights file"):
        load(tmp_path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("family", ["distilbert", "bert"])
@pytest.mark.parametrize("arch", ARCHS)
def test_what_we_save_transformers_loads(checkpoint_factory, tmp_path, family, arch):
    folder, ref = checkpoint_factory(family, arch)
    net, _, _ = load(folder)
    save(net, tmp_path, TASK_OF_ARCH[arch])
    assert set(load_file(tmp_path / "model.safetensors")) == set(load_file(folder / "model.safetensors"))
    cls = getattr(transformers, ("DistilBert" if family == "distilbert" else "Bert") + arch)
    again = cls.from_pretrained(tmp_path).eval()
    theirs, ours = outputs(again, family), outputs(ref, family)
    assert theirs
    for name in ours:
        torch.testing.assert_close(theirs[name], ours[name], rtol=0, atol=1e-6)
    # and we load our own save
    ours_again, _, _ = load(tmp_path)
    mine = outputs(ours_again, family, ours=True)
    for name, value in ours.items():
        torch.testing.assert_close(mine[name], value, rtol=0, atol=1e-5)


def test_task_override_drops_or_demands_a_head(checkpoint_factory):
    folder, ref = checkpoint_factory("distilbert", "ForMaskedLM")
    net, _, _ = load(folder, task="feature-extraction")  # head keys of another task are fine to drop
    assert not hasattr(net, "vocab_transform")
    with pytest.raises(UserError, match="has a fill-mask head, not a text-classification head; run it as fill-mask"):
        load(folder, task="text-classification")
    fresh, _, _ = load(folder, task="text-classification", allow_new_head=True)
    torch.testing.assert_close(fresh.encoder.embeddings.word_embeddings.weight, ref.distilbert.embeddings.word_embeddings.weight)


def test_missing_unexpected_and_misshaped_keys_are_all_listed(tmp_path):
    ref = make_reference("distilbert", "ForMaskedLM")
    save_reference(ref, tmp_path, tokenizer=False)
    state = load_file(tmp_path / "model.safetensors")
    del state["distilbert.transformer.layer.1.ffn.lin2.bias"]
    state["distilbert.transformer.layer.7.ffn.lin2.bias"] = torch.zeros(39)
    state["vocab_transform.weight"] = torch.zeros(39, 40)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(UserError) as e:
        load(tmp_path)
    message = str(e.value)
    assert "missing keys: encoder.transformer.layer.1.ffn.lin2.bias" in message
    assert "unexpected keys: distilbert.transformer.layer.7.ffn.lin2.bias" in message
    assert "vocab_transform.weight (39, 40) vs (39, 39)" in message
    assert "\n" not in message


def test_a_missing_head_is_its_own_error_type(tmp_path, checkpoint_factory):
    """Callers that need one head (distillation needs the masked-LM head) catch MissingHead by type; a checkpoint
    broken in its encoder is a plain UserError."""
    bare, _ = checkpoint_factory("bert", "Model")
    with pytest.raises(MissingHead) as e:
        load(bare, task="fill-mask")
    assert (e.value.has, e.value.wanted) == ("feature-extraction", "fill-mask")
    # architectures says masked LM, the weights lack its head: the same type, naming the missing keys
    ref = make_reference("distilbert", "ForMaskedLM")
    save_reference(ref, tmp_path / "headless", tokenizer=False)
    state = load_file(tmp_path / "headless" / "model.safetensors")
    save_file({k: v for k, v in state.items() if not k.startswith("vocab_")}, tmp_path / "headless" / "model.safetensors")
    with pytest.raises(MissingHead, match="missing keys: vocab_layer_norm.bias") as e:
        load(tmp_path / "headless")
    assert (e.value.has, e.value.wanted) == ("fill-mask", "fill-mask")
    del state["distilbert.transformer.layer.1.ffn.lin2.bias"]
    save_file(state, tmp_path / "headless" / "model.safetensors")
    with pytest.raises(UserError) as e:
        load(tmp_path / "headless")
    assert not isinstance(e.value, MissingHead)


def test_config_that_does_not_match_the_weights(tmp_path):
    ref = make_reference("bert", "ForSequenceClassification")
    save_reference(ref, tmp_path, tokenizer=False)
    config = json.loads((tmp_path / "config.json").read_text())
    config["vocab_size"] = 100
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"mis-shaped keys .*word_embeddings.weight \(99, 39\) vs \(100, 39\)"):
        load(tmp_path)


def test_broken_folders(tmp_path):
    ref = make_reference("distilbert", "Model")
    save_reference(ref, tmp_path, tokenizer=False)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupted or truncated"):
        load(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(UserError, match="no weights in .*is the download complete"):
        load(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(UserError, match="no config.json"):
        load(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        load(tmp_path / "nowhere")
    with pytest.raises(UserError, match="does not exist"):
        resolve("./not/a/model")


def test_hub_id_offline_says_what_to_do(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(UserError, match="not reachable .*pass its path instead"):
        resolve("distilbert-base-uncased")


def test_state_dict_reader_gives_every_tensor(checkpoint_factory):
    folder, ref = checkpoint_factory("distilbert", "ForQuestionAnswering")
    assert set(read_state_dict(folder)) == set(ref.state_dict()) - {"distilbert.embeddings.position_ids"}
    # cast as read (the bf16 fast mode): same keys, bf16 values equal to the fp32 ones rounded
    fp32, bf16 = read_state_dict(folder), read_state_dict(folder, torch.bfloat16)
    assert set(bf16) == set(fp32) and all(v.dtype == torch.bfloat16 for v in bf16.values())
    assert all(torch.equal(bf16[k], fp32[k].to(torch.bfloat16)) for k in fp32)


def test_an_interrupted_save_leaves_the_previous_model_whole(tmp_path, mlm_checkpoint):
    """Every file is written beside the folder first: a crash in the middle changes nothing that is read."""
    from distilbert.tokenizer import Tokenizer

    source, _ = mlm_checkpoint
    folder = tmp_path / "model"
    net, _, _ = load(source)
    save(net, folder, "fill-mask", Tokenizer.from_pretrained(source))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)  # a model that differs everywhere

    class CrashingTokenizer:  # writes part of its files, then fails, as a full disk would
        def save(self, where):
            (where / "tokenizer.json").write_text('{"half')
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        save(net, folder, "fill-mask", CrashingTokenizer())
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no new weights, no stray staging folder
    again, expected = load(folder)[0].state_dict(), load(source)[0].state_dict()
    assert again.keys() == expected.keys()
    for name, value in again.items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0)
    assert Tokenizer.from_pretrained(folder).vocab_size == 30522


def test_a_save_stopped_during_its_swap_never_mixes_old_and_new(tmp_path, mlm_checkpoint, monkeypatch):
    """Stopped after any number of its renames, a save leaves the old model whole, the new one whole, or a folder
    without config.json that loading refuses, saying a save was interrupted: never new files beside an old config."""
    import os
    import shutil

    from distilbert.tokenizer import Tokenizer

    source, _ = mlm_checkpoint
    tokenizer = Tokenizer.from_pretrained(source)
    net, newer = load(source)[0], load(source)[0]
    with torch.no_grad():
        for p in newer.parameters():
            p.add_(1.0)  # weights that differ everywhere
    newer.config = newer.config.replace(dropout=0.25)  # and a config.json of its own

    def files(folder):
        return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}

    old, new = (files(save(model, tmp_path / name, "fill-mask", tokenizer))
                for model, name in ((net, "old"), (newer, "new")))
    real_replace, seen = os.replace, []
    for stop_at in range(1, 30):
        folder = shutil.copytree(tmp_path / "old", tmp_path / f"stopped-{stop_at}")
        calls = []

        def replace(src, dst):
            calls.append(dst)
            if len(calls) == stop_at:
                raise OSError(f"stopped at rename {stop_at}")
            return real_replace(src, dst)

        monkeypatch.setattr(os, "replace", replace)
        try:
            save(newer, folder, "fill-mask", tokenizer)
        except OSError:
            pass
        monkeypatch.setattr(os, "replace", real_replace)
        got = files(folder)
        if got in (old, new):
            seen.append("old" if got == old else "new")
        else:
            assert "config.json" not in got, f"stopped at rename {stop_at}: new files beside the old config.json"
            with pytest.raises(UserError, match="interrupted"):
                load(folder)
            seen.append("no config")
        if got == new:
            break
    assert seen[-1] == "new" and len(seen) > 2, seen  # stopped in the middle at least once, then finished

