"""Full-state checkpoints of a training run (weights, optimiser, schedule, scaler, RNG, position), and resume.

A checkpoint is written whole under a temporary name, synced and renamed: a run killed at any moment
leaves the previous checkpoint or the new one, never half a file. Resuming checks that nothing that
decides the run's arithmetic changed: the recipe and the number of processes. It also takes back the
run's number of CPU threads, which decides how matrix products split their sums on a CPU (MiniLM-sized
runs end with other weights on 1 thread than on 2).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError

FORMAT = "distilbert-train-checkpoint/1"
CHECKPOINT = "checkpoint.pt"


def write(path: Path, recipe: dict, world: int, position: dict, **parts) -> None:
    """parts: name -> object with state_dict() (model, optimizer, scheduler, scaler, ...)."""
    import torch

    state = {"format": FORMAT, "recipe": recipe, "world": world, "rng": {"torch": torch.get_rng_state()},
             "threads": torch.get_num_threads(), **position,
             **{name: part.state_dict() for name, part in parts.items()}}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read(path: Path) -> dict:
    import torch

    from ..checkpoint import UNREADABLE

    if not path.is_file():
        raise UserError(f"nothing to resume: {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except UNREADABLE as e:
        raise UserError(f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}); it was left as it is") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"checkpoint {path} is corrupt or unreadable (not one of this trainer's); it was left as it is")
    return state


def restore(state: dict, **parts) -> None:
    """Load each part's state from a checkpoint read by `read`, the RNG, and the run's number of CPU threads
    (where this process would use another: a machine with other cores, another OMP_NUM_THREADS)."""
    import torch

    for name, part in parts.items():
        part.load_state_dict(state[name])
    torch.set_rng_state(state["rng"]["torch"])
    threads = state.get("threads")  # absent from checkpoints written before it was saved
    if threads and threads != torch.get_num_threads():
        torch.set_num_threads(threads)


def resumed_recipe(saved: dict, given: dict, ignore: tuple[str, ...] = ("out",)) -> dict:
    """The run's own recipe; a setting given now that differs from it is refused, naming each one.

    Silently keeping the saved value would run something other than what the user asked for; silently
    taking the new one would change a half-finished run's arithmetic.
    """
    differs = [f"{k} ({_show(given[k])}; the run has {_show(saved.get(k))})"
               for k in sorted(given) if k not in ignore and _norm(given[k]) != _norm(saved.get(k))]
    if differs:
        raise UserError(f"--resume continues a run with its own recipe, but these settings differ: {', '.join(differs)}; "
                        "drop them, or start a new run with another --out")
    return {**saved, **{k: given[k] for k in ignore if k in given}}


def resume(path: Path, world: int, recipe, given: set[str] | None = None):
    """Read the run's checkpoint at `path` for a resume on `world` processes: the state and the run's own
    recipe (of `recipe`'s type). The settings named in `given` (default: all of `recipe`'s) must equal the
    run's own; the number of processes must too."""
    state = read(path)
    check_world(state, world, path)
    mine = recipe.to_dict()
    chosen = {k: mine[k] for k in (mine if given is None else given)}
    return state, type(recipe).from_dict(resumed_recipe(state["recipe"], chosen))


def check_world(state: dict, world: int, path: Path) -> None:
    saved = state.get("world", 1)
    if saved != world:
        raise UserError(f"{path} was written by a run on {saved} process(es), this one has {world}: each process's "
                        f"batches would change; resume with {saved} process(es)")


def _norm(value):
    return list(value) if isinstance(value, tuple) else value


def _show(value) -> str:
    return repr(_norm(value))
