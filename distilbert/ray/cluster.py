"""Joining a Ray cluster, or starting a local one."""

from __future__ import annotations

import logging
import os

import ray

from ..errors import UserError, first_line

OBJECT_STORE_BYTES = 500 * 2**20  # of a local Ray: streaming keeps a few blocks in flight, not the data set


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join the cluster at `address`, or start a local Ray (quiet, on 127.0.0.1, a small object store) whose
    actors may use num_cpus (default: this machine's cores), plus one logical CPU for Ray Data's own tasks.
    Nothing when Ray is already initialised. True when this call connected (the caller then shuts Ray down)."""
    if ray.is_initialized():
        return False
    # Repeated worker log lines folded into one: read by the processes Ray starts, as they import it. Ray's own
    # default; set (where the user has not) when Ray is started, so that an import changes no environment
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    quiet = dict(logging_level=logging.ERROR, log_to_driver=False, include_dashboard=False)
    try:
        if address is None:
            from ..backends.onnx import usable_cores

            ray.init(num_cpus=(num_cpus or usable_cores()) + 1, object_store_memory=OBJECT_STORE_BYTES,
                     _node_ip_address="127.0.0.1", **quiet)
        else:
            quiet.pop("include_dashboard")
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UserError(f"cannot reach the Ray cluster at {address or 'a new local Ray'} ({first_line(e, 1000)}); "
                        "start one with `ray start --head` or check --address") from None
    return True
