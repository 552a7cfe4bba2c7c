"""Our encoder and heads against transformers: tiny odd configs, weights through our own loader, padded batches."""

import pytest
import torch

from distilbert.checkpoint import load
from distilbert.config import Config
from distilbert.model import build, sinusoidal_positions, task_of
from helpers.models import ARCHS, OUTPUTS, TASK_OF_ARCH, batch, make_reference, save_reference

def compare(ref, net, family, vocab_size=99):
    ids, mask, types = batch(family, vocab_size)
    kw = {"token_type_ids": types} if types is not None else {}
    with torch.no_grad():
        a = ref(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True, **kw)
        b = net(ids, mask, types, output_hidden_states=True, output_attentions=True)
    compared = 0
    for name in OUTPUTS:
        if getattr(a, name, None) is not None:
            torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-5)
            assert not torch.isnan(b[name]).any()
            compared += 1
    assert compared >= 1
    assert len(b["hidden_states"]) == len(a.hidden_states) == net.config.n_layers + 1
    for x, y in zip(b["hidden_states"], a.hidden_states):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-5)
    assert len(b["attentions"]) == net.config.n_layers
    for x, y in zip(b["attentions"], a.attentions):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-5)
    return b


@pytest.mark.parametrize("family", ["distilbert", "bert"])
@pytest.mark.parametrize("arch", ARCHS)
def test_every_head_matches_transformers(checkpoint_factory, family, arch):
    folder, ref = checkpoint_factory(family, arch)
    net, config, _ = load(folder)
    assert task_of(net) == TASK_OF_ARCH[arch] and config.family == family  # the head the checkpoint was saved with
    assert config.architectures == [type(ref).__name__]
    compare(ref, net, family)


@pytest.mark.parametrize(
    "family, overrides",
    [
        ("distilbert", {"sinusoidal_pos_embds": True}),
        ("distilbert", {"activation": "relu"}),
        ("bert", {"hidden_act": "gelu_new", "layer_norm_eps": 1e-5}),
        ("bert", {"hidden_act": "relu"}),
    ],
)
def test_config_variants_match(tmp_path, family, overrides):
    ref = make_reference(family, "ForMaskedLM", **overrides)
    save_reference(ref, tmp_path, tokenizer=False)
    net, _, _ = load(tmp_path)
    compare(ref, net, family)


def test_batched_equals_one_by_one(checkpoint_factory):
    folder, _ = checkpoint_factory("distilbert", "ForMaskedLM")
    net, _, _ = load(folder)
    ids, mask, _ = batch("distilbert")
    with torch.no_grad():
        together = net(ids, mask)["logits"]
        for i in range(len(ids)):
            n = int(mask[i].sum())
            alone = net(ids[i : i + 1, :n], mask[i : i + 1, :n])["logits"]
            torch.testing.assert_close(together[i, :n], alone[0], rtol=0, atol=1e-5)


def test_logits_at_selected_positions(checkpoint_factory):
    folder, _ = checkpoint_factory("bert", "ForMaskedLM")
    net, _, _ = load(folder)
    ids, mask, types = batch("bert")
    at = torch.zeros_like(ids, dtype=torch.bool)
    at[0, 3] = at[1, 2] = at[3, 7] = True
    with torch.no_grad():
        full = net(ids, mask, types)["logits"]
        some = net(ids, mask, types, logits_at=at)["logits"]
    torch.testing.assert_close(some, full[at], rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", ["distilbert", "bert"])
def test_heads_that_read_few_positions_match_transformers(checkpoint_factory, family):
    """The classifier reads [CLS] alone, and a masked LM asked for logits alone at some positions reads those:
    the last feed-forward runs at those rows only. Logits and training gradients stay transformers'."""
    ids, mask, types = batch(family)
    kw = {"token_type_ids": types} if types is not None else {}
    folder, ref = checkpoint_factory(family, "ForSequenceClassification")
    net, _, _ = load(folder)
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, **kw).logits
    out = net(ids, mask, types)
    assert "last_hidden_state" not in out
    torch.testing.assert_close(out["logits"], expected, rtol=0, atol=1e-5)
    out["logits"].square().sum().backward()
    pruned = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
    net.zero_grad()
    net(ids, mask, types, output_hidden_states=True)["logits"].square().sum().backward()  # every row, every layer
    full = {name: p.grad for name, p in net.named_parameters() if p.grad is not None}
    assert pruned.keys() == full.keys() and len(full) > 10
    for name in full:
        torch.testing.assert_close(pruned[name], full[name], rtol=1e-5, atol=1e-6, msg=name)

    folder, ref = checkpoint_factory(family, "ForMaskedLM")
    net, _, _ = load(folder)
    at = torch.zeros_like(ids, dtype=torch.bool)
    at[0, 3] = at[0, 9] = at[1, 2] = at[3, 0] = True  # two in a row, one in the padded row, none in row 2
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, **kw).logits[at]
        out = net(ids, mask, types, logits_at=at, logits_only=True)
        assert "last_hidden_state" not in out and out["logits"].shape == expected.shape
        torch.testing.assert_close(out["logits"], expected, rtol=0, atol=1e-5)
        with pytest.raises(ValueError, match="output_hidden_states"):
            net.encode(ids, mask, types, keep=at, output_hidden_states=True)


def test_sinusoidal_table_matches_transformers():
    from transformers.models.distilbert.modeling_distilbert import create_sinusoidal_embeddings

    ref = create_sinusoidal_embeddings(23, 38, torch.empty(23, 38))
    torch.testing.assert_close(sinusoidal_positions(23, 38), ref, rtol=0, atol=0)


def test_fresh_model_initialisation():
    config = Config(vocab_size=50, dim=12, n_layers=1, n_heads=3, hidden_dim=20, sinusoidal_pos_embds=True)
    net = build(config, "fill-mask")
    assert net.vocab_projector.weight is net.encoder.embeddings.word_embeddings.weight
    assert torch.all(net.encoder.embeddings.word_embeddings.weight[0] == 0)  # padding row
    torch.testing.assert_close(net.encoder.embeddings.position_embeddings.weight, sinusoidal_positions(512, 12))
    assert abs(net.encoder.transformer.layer[0].ffn.lin1.weight.std().item() - 0.02) < 0.005
    out = net(torch.tensor([[1, 2, 3]]))
    assert out["logits"].shape == (1, 3, 50)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_keeps_each_element_with_probability_1_minus_p(p):
    from distilbert.model import dropout

    x = torch.randn(1000, 1000, requires_grad=True)
    torch.manual_seed(0)
    y = dropout(x, p, True)
    keep = y != 0
    assert abs(keep.float().mean().item() - (1 - p)) < 0.003  # seeded; 10^6 draws: 6 to 10 standard deviations
    torch.testing.assert_close(y[keep], x[keep] * (1 / (1 - p)), rtol=0, atol=0)
    y.sum().backward()
    torch.testing.assert_close(x.grad, keep.float() / (1 - p), rtol=1e-6, atol=0)
    torch.manual_seed(0)
    assert torch.equal(dropout(x, p, True), y)  # the global generator's stream: seeded runs repeat
    assert not torch.equal(dropout(x, p, True), y)
    assert dropout(x, p, False) is x and dropout(x, 0.0, True) is x
    assert not dropout(x, 1.0, True).any()
    with pytest.raises(ValueError, match="between 0 and 1, got -0.1"):
        dropout(x, -0.1, True)


def test_training_attention_is_the_same_function_as_inference(checkpoint_factory, monkeypatch):
    """On a CPU, training with attention dropout takes the explicit path; with every mask all ones it
    computes what inference computes (SDPA)."""
    import distilbert.model as model

    folder, _ = checkpoint_factory("distilbert", "ForMaskedLM")
    net, config, _ = load(folder, "fill-mask")
    assert config.attention_dropout > 0 and config.dropout > 0
    ids, mask, _ = batch("distilbert", config.vocab_size)
    with torch.no_grad():
        expected = net.eval()(ids, mask)["logits"]
        monkeypatch.setattr(model, "dropout", lambda x, p, training: x)
        got = net.train()(ids, mask)["logits"]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
