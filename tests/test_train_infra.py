"""The training infrastructure every loop shares: parameter groups, schedule, checkpoints, resume checks, the log."""

import json
from pathlib import Path

import pytest
import torch

from distilbert.errors import UserError
from distilbert.train import checkpointing, distributed, runlog
from distilbert.train.optim import adamw, linear_schedule, warmup_steps


def test_no_weight_decay_on_biases_and_layer_norms():
    net = torch.nn.Module()
    net.dense, net.LayerNorm = torch.nn.Linear(3, 4), torch.nn.LayerNorm(4)
    opt = adamw(net, 1e-3, 0.01)
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.01 and plain["weight_decay"] == 0.0
    assert [p.shape for p in decayed["params"]] == [torch.Size([4, 3])]
    assert len(plain["params"]) == 3  # the Linear bias, the LayerNorm weight and bias


def test_adamw_is_the_fused_kernel_with_the_same_update():
    """One pass over all parameters (the for-loop AdamW cost 105 ms a step on MiniLM on two cores, fused 18),
    and the same update as PyTorch's plain AdamW up to rounding."""
    torch.manual_seed(0)
    nets = [torch.nn.Linear(5, 3) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    fused = adamw(nets[0], 1e-2, 0.01)
    assert all(group["fused"] for group in fused.param_groups)
    plain = torch.optim.AdamW([{"params": [nets[1].weight], "weight_decay": 0.01},
                               {"params": [nets[1].bias], "weight_decay": 0.0}], lr=1e-2)
    x = torch.randn(7, 5)
    for _ in range(3):
        for net, opt in zip(nets, (fused, plain)):
            net(x).square().sum().backward()
            opt.step()
            opt.zero_grad()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_linear_warmup_then_decay_to_zero():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = linear_schedule(opt, warmup=2, total_steps=6)
    lrs = []
    for _ in range(6):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.0, 0.5, 1.0, 0.75, 0.5, 0.25])  # transformers' and BERT's
    assert warmup_steps(0.1, 95) == 10 and warmup_steps(7, 95) == 7


def test_checkpoint_round_trip_and_atomic_write(tmp_path):
    net = torch.nn.Linear(2, 2)
    opt = adamw(net, 1e-3, 0.0)
    path = tmp_path / "checkpoint.pt"
    checkpointing.write(path, {"seed": 1}, 1, {"step": 3}, model=net, optimizer=opt)
    assert not (tmp_path / "checkpoint.pt.tmp").exists()
    state = checkpointing.read(path)
    assert state["step"] == 3 and state["world"] == 1
    other = torch.nn.Linear(2, 2)
    checkpointing.restore(state, model=other)
    assert torch.equal(other.weight, net.weight)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match="corrupt or unreadable"):
        checkpointing.read(path)
    with pytest.raises(UserError, match="nothing to resume"):
        checkpointing.read(tmp_path / "none.pt")


def test_resume_takes_back_the_runs_number_of_threads(tmp_path):
    net = torch.nn.Linear(2, 2)
    path = tmp_path / "checkpoint.pt"
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        checkpointing.write(path, {}, 1, {"step": 1}, model=net)
        torch.set_num_threads(3)
        checkpointing.restore(checkpointing.read(path), model=net)
        assert torch.get_num_threads() == 1
        state = checkpointing.read(path)
        del state["threads"]  # a checkpoint from before the count was saved: left as it is
        checkpointing.restore(state, model=net)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_resume_refuses_settings_that_differ_naming_them():
    saved = {"epochs": 3, "learning_rate": 2e-5, "adam_betas": [0.9, 0.999], "out": "a"}
    assert checkpointing.resumed_recipe(saved, {"epochs": 3, "adam_betas": (0.9, 0.999), "out": "b"})["out"] == "b"
    with pytest.raises(UserError, match=r"differ: epochs \(4; the run has 3\), learning_rate") as e:
        checkpointing.resumed_recipe(saved, {"epochs": 4, "learning_rate": 1e-4, "out": "a"})
    assert "\n" not in str(e.value)


def test_resume_refuses_another_number_of_processes(tmp_path):
    with pytest.raises(UserError, match=r"2 process\(es\), this one has 1"):
        checkpointing.check_world({"world": 2}, 1, tmp_path / "checkpoint.pt")
    checkpointing.check_world({"world": 2}, 2, tmp_path / "checkpoint.pt")


def test_fp16_on_a_cpu_is_a_clear_error():
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        distributed.autocast_dtype("fp16", torch.device("cpu"))
    assert distributed.autocast_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    assert distributed.autocast_dtype("fp32", torch.device("cpu")) is None


def test_auto_precision_is_bf16_where_the_cpu_computes_it(monkeypatch):
    cpu = torch.device("cpu")
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else None
    if flags is not None:  # the probe agrees with the kernel's view of this CPU
        assert distributed.cpu_has_amx() == ("amx_bf16" in flags)
    monkeypatch.setattr(distributed, "cpu_has_amx", lambda: True)
    assert distributed.best_precision(cpu) == "bf16"
    monkeypatch.setattr(distributed, "cpu_has_amx", lambda: False)
    assert distributed.best_precision(cpu) == "fp32"


def test_the_log_is_cut_back_to_the_checkpoint_on_resume(tmp_path):
    log = runlog.RunLog(tmp_path, True, total=5, progress=False)
    for step in range(1, 6):
        log.step({"step": step, "loss": 1.0 / step})
    log.close()
    with open(tmp_path / "log.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # a line cut short by SIGKILL
    resumed = runlog.RunLog(tmp_path, True, total=5, progress=False, initial=3)
    resumed.step({"step": 4, "loss": 0.0})
    resumed.close()
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    fresh = runlog.RunLog(tmp_path, True, total=5, progress=False)  # a new run starts a new log
    fresh.close()
    assert (tmp_path / "log.jsonl").read_text() == ""


KEEP_FREED_MEMORY_PROBE = """
import ctypes
import torch
from distilbert.train import distributed

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                                               "uordblks", "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
kept = distributed.keep_freed_memory()
mapped = mallinfo2().hblkhd
big = torch.zeros(48 << 20, dtype=torch.uint8)  # over glibc's largest mmap threshold (32 MB)
from_heap = mallinfo2().hblkhd == mapped  # not a fresh mapping
del big
print(kept, from_heap, mallinfo2().fordblks >= 48 << 20)  # freed and kept, not given back
"""


@pytest.mark.parametrize("setting", [None, "0"])
def test_freed_memory_is_kept_for_reuse_on_glibc(setting):
    """In a process of its own: the setting is for the whole process."""
    import ctypes
    import os
    import platform
    import subprocess
    import sys

    if platform.libc_ver()[0] != "glibc" or not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("needs glibc 2.33 or later (mallinfo2) to observe")
    env = {k: v for k, v in os.environ.items() if k != "DISTILBERT_KEEP_FREED_MEMORY"}
    if setting is not None:
        env["DISTILBERT_KEEP_FREED_MEMORY"] = setting
    out = subprocess.run([sys.executable, "-c", KEEP_FREED_MEMORY_PROBE], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == (["True", "True", "True"] if setting is None else ["False", "False", "False"])


def test_max_grad_norm_must_be_positive(tmp_path):
    from distilbert.train.finetune import FinetuneRecipe
    from distilbert.train.recipe import Recipe

    with pytest.raises(UserError, match="--max-grad-norm must be above 0, got -1"):
        FinetuneRecipe(model="m", out=str(tmp_path), task="text-classification", max_grad_norm=-1.0).resolved()
    with pytest.raises(UserError, match="max_grad_norm must be above 0, got 0"):
        Recipe(student="s", data="d", out=str(tmp_path), max_grad_norm=0.0).validate()


@pytest.mark.parametrize("max_grad_norm", [1e-7, 1e3])  # clipped to the size of Adam's epsilon, and not clipped
def test_clipping_inside_the_fused_step_is_clip_grad_norm_then_step(max_grad_norm):
    from distilbert.train.optim import optimizer_step

    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Linear(4, 3)) for _ in range(3)]
    for net in nets[1:]:
        net.load_state_dict(nets[0].state_dict())
    opts = [adamw(net, 1e-2, 0.01) for net in nets]
    scheds = [linear_schedule(opt, 0, 10) for opt in opts]
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    x = torch.randn(7, 5)
    for _ in range(3):
        for net in nets:
            net(x).square().sum().backward()
        norm, lr = optimizer_step(nets[0], opts[0], scheds[0], scaler, max_grad_norm)
        expected = float(torch.nn.utils.clip_grad_norm_(nets[1].parameters(), max_grad_norm))
        assert not hasattr(opts[0], "grad_scale")
        assert norm == pytest.approx(expected, rel=1e-6)
        for opt, sched in zip(opts[1:], scheds[1:]):  # nets[1]: clipped in place, then stepped; nets[2]: never clipped
            opt.step(), sched.step(), opt.zero_grad(set_to_none=True)
    for ours, clipped, unclipped in zip(*(net.parameters() for net in nets)):
        if max_grad_norm > 1:
            assert torch.equal(ours, clipped) and torch.equal(ours, unclipped)
        else:
            torch.testing.assert_close(ours, clipped, rtol=1e-6, atol=1e-7)
            assert (ours - unclipped).abs().max() > 1e-3  # the clipping took effect
