"""The loop every training run shares: its pure arithmetic (plan, items, divisor, seeds, schedule) and its order
of work (accumulate, step, evaluate, checkpoint, resume) on a model of one linear layer."""

import copy

import numpy as np
import pytest
import torch

from distilbert.train import loop
from distilbert.train.optim import linear_schedule, lr_factor


def test_plan_skips_each_epochs_leftovers_and_stops_at_max_steps():
    p = loop.plan([21, 20, 19], world=2, accumulation=3)  # 6 micro-batches a step
    assert p.steps_per_epoch == (3, 3, 3) and p.total_steps == 9
    assert [p.micro_batches(e) for e in range(3)] == [9, 9, 9]  # each rank's: 3 of 21 batches are left over
    assert p.epoch_ends() == {3, 6, 9}
    assert loop.plan([21, 20, 19], world=2, accumulation=3, max_steps=4).total_steps == 4
    assert loop.plan([5], world=2, accumulation=3).steps_per_epoch == (0,)  # the caller refuses it


def test_batch_items_by_count_or_by_the_datas_mean_row():
    batches = [[0, 1], [2], [3, 4, 5]]
    row_items = [3, 1, 4, 1, 5, 4]  # e.g. labelled tokens per sentence
    assert loop.batch_items(batches, row_items, by_length=False) == [4, 4, 10]
    assert loop.batch_items(batches, row_items, by_length=True) == pytest.approx([6.0, 3.0, 9.0])  # rows x 3
    assert loop.batch_items([[0]], [], by_length=True) == [0.0]


@pytest.mark.parametrize("world, accumulation", [(1, 1), (1, 3), (2, 1), (2, 2), (3, 2)])
def test_a_steps_shares_add_up_to_one_whatever_the_ranks_and_accumulation(world, accumulation):
    """Each micro-batch's loss is summed over its items and divided by loss_divisor: over a step's micro-batches on
    every rank, the weights of the items add up to one (the step is one batch of all its rows)."""
    items = [float(n) for n in np.random.default_rng(0).integers(1, 20, size=4 * world * accumulation)]
    for step in range(4):
        micros = range(step * accumulation, (step + 1) * accumulation)
        shares = [items[m * world + r] / loop.loss_divisor(items, m, accumulation, world)
                  for m in micros for r in range(world)]
        assert sum(shares) == pytest.approx(1.0)
        first = step * accumulation * world
        assert loop.loss_divisor(items, micros[-1], accumulation, world) == sum(items[first:first + accumulation * world])


def test_a_step_without_items_divides_by_one():
    assert loop.loss_divisor([0, 0, 5], 0, 2, 1) == 1


def test_batch_seeds_are_fixed_and_differ_by_epoch_and_index():
    seeds = {(e, i): loop.batch_seed(42, e, i) for e in range(3) for i in range(50)}
    assert len(set(seeds.values())) == len(seeds) and all(0 <= s < 2**62 for s in seeds.values())
    assert loop.batch_seed(42, 1, 7) == seeds[1, 7] == int(np.random.default_rng([42, 1, 7]).integers(2**62))
    assert loop.batch_seed(43, 1, 7) != seeds[1, 7]


def test_lr_factor_is_the_schedule_pytorch_runs():
    assert [lr_factor(s, 2, 6) for s in range(7)] == pytest.approx([0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0])
    assert lr_factor(0, 0, 4) == 1.0 and lr_factor(9, 0, 4) == 0.0  # no warm-up; past the end
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = linear_schedule(opt, 3, 10)
    for step in range(10):
        assert sched.get_last_lr()[0] == pytest.approx(2.0 * lr_factor(step, 3, 10))
        opt.step()
        sched.step()


class Recipe:  # what loop.optimisation reads
    learning_rate, weight_decay, adam_betas, adam_epsilon, warmup = 0.05, 0.0, (0.9, 0.999), 1e-8, 0.0


def _run(start=None, steps=None, stop_at=None, accumulation=2, mean=True):
    """A linear layer trained for two epochs of 8 fixed random micro-batches; returns (position, stopped, weight,
    calls, checkpoints by step, log records)."""
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    p = loop.plan([8, 8], 1, accumulation, steps)
    opt = loop.optimisation(net, Recipe, p.total_steps, "fp32", torch.device("cpu"), 1)
    calls = {"batches": [], "saves": [], "evaluations": []}
    if start is not None:
        position, state = start
        net.load_state_dict(state["student"])
        opt.optimizer.load_state_dict(state["optimizer"])
        opt.scheduler.load_state_dict(state["scheduler"])
    else:
        position = loop.Position()
    saved = {}

    def batch(at):
        calls["batches"].append((at.epoch, at.micro, at.index, at.seed))
        g = torch.Generator().manual_seed(at.index)
        return {"x": torch.randn(4, 3, generator=g), "y": torch.randn(4, 1, generator=g),
                "attention_mask": torch.ones(4, 2)}

    def forward(inputs, at):
        error = net(inputs["x"]) - inputs["y"]
        dropped = torch.nn.functional.dropout(error, 0.5)  # seeded by the skeleton: at.seed
        return (dropped.square().mean(), {"mse": error.square().mean()})

    def save(position):
        calls["saves"].append((position.step, position.epoch, position.micro))
        saved[position.step] = (loop.Position(position.step, position.epoch, position.micro),
                                {k: copy.deepcopy(v.state_dict()) for k, v in opt.parts().items()})

    def evaluate(step, epoch):
        calls["evaluations"].append(step)
        return step % 3 == 0, step == stop_at

    records = []
    log = type("Log", (), {"step": lambda self, record: records.append(record)})()
    position, stopped = loop.run(p, position, opt, rank=0, seed=7, device=torch.device("cpu"), autocast_dtype=None,
                                 max_grad_norm=1.0, checkpoint_every=5, log=log, batch=batch, forward=forward,
                                 mean_of_micro_batches=mean, save=save, evaluate=evaluate)
    return position, stopped, net.weight.detach().clone(), calls, saved, records


def test_the_loop_steps_logs_and_checkpoints_in_order():
    position, stopped, _, calls, _, records = _run()
    assert (position.step, position.epoch, position.micro, stopped) == (8, 1, 8, False)
    assert [(e, m) for e, m, _, _ in calls["batches"]] == [(e, m) for e in range(2) for m in range(8)]
    assert all(seed == loop.batch_seed(7, e, i) for e, _, i, seed in calls["batches"])
    assert calls["evaluations"] == list(range(1, 9))
    # every 5 steps, after each evaluation that ran (3, 6), and at the end
    assert calls["saves"] == [(3, 0, 6), (5, 1, 2), (6, 1, 4), (8, 1, 8)]
    assert [r["step"] for r in records] == list(range(1, 9)) and records[0]["lr"] == pytest.approx(0.05)
    assert set(records[0]) == {"step", "epoch", "lr", "grad_norm", "tokens_per_second", "loss", "loss_mse"}


def test_an_evaluation_that_says_stop_ends_the_run_after_its_checkpoint():
    position, stopped, _, calls, _, _ = _run(stop_at=6)
    assert stopped and position.step == 6 and calls["saves"][-1] == (6, 1, 4)
    assert len(calls["batches"]) == 12


def test_a_resumed_run_is_the_uninterrupted_one():
    """From the checkpoint at step 5 (mid-epoch): the same micro-batches, seeds and weights as a run never stopped."""
    _, _, whole, calls, saved, _ = _run()
    resumed_from = saved[5]
    torch.manual_seed(123)  # the global RNG elsewhere: each micro-batch seeds its own dropout
    _, _, weight, again, _, _ = _run(start=resumed_from)
    assert again["batches"] == calls["batches"][10:]
    assert torch.equal(weight, whole)


def test_a_mean_of_micro_batches_logs_the_steps_mean():
    """Distillation's way: each micro-batch's loss is its own mean, a step's loss the mean of its micro-batches."""
    *_, records = _run(steps=1, accumulation=2, mean=True)
    *_, summed = _run(steps=1, accumulation=2, mean=False)
    assert records[0]["loss_mse"] == pytest.approx(summed[0]["loss_mse"] / 2)
