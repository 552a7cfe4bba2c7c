"""Prometheus metrics, named as text-embeddings-inference names them (te_*), so its dashboards read ours.

One registry per server. With several worker processes (`--workers`), prometheus_client's multiprocess
mode sums the workers' files (PROMETHEUS_MULTIPROC_DIR, set by `run` before the workers start).
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (re-exported for the /metrics route)

# seconds: TEI's geometric 1.5x buckets from 15 us, thinned to every other one
DURATION_BUCKETS = tuple(1e-5 * 1.5 ** (2 * i + 1) for i in range(18))
POWERS_OF_TWO = tuple(float(2 ** i) for i in range(21))


class Metrics:
    def __init__(self):
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry()
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(self.registry)
        own = None if self.multiprocess else self.registry  # multiprocess: values go to files, the collector reads them

        def histogram(name, doc, buckets=DURATION_BUCKETS, labels=()):
            return Histogram(name, doc, labels, buckets=buckets, registry=own)

        self.requests = Counter("te_request_count", "Requests received", ["route"], registry=own)
        self.successes = Counter("te_request_success", "Requests answered with 200", ["route"], registry=own)
        self.failures = Counter("te_request_failure", "Requests refused or failed, by reason", ["err"], registry=own)
        self.duration = histogram("te_request_duration", "Time from request to answer (s)")
        self.tokenization = histogram("te_request_tokenization_duration", "Validation and tokenisation time (s)")
        self.queue = histogram("te_request_queue_duration", "Time waiting for a batch (s)")
        self.inference = histogram("te_request_inference_duration", "Time in the model (s)")
        self.input_length = histogram("te_request_input_length", "Tokens per request", POWERS_OF_TWO)
        self.batch_size = histogram("te_batch_next_size", "Rows per model batch", POWERS_OF_TWO)
        self.batch_tokens = histogram("te_batch_next_tokens", "Padded tokens per model batch", POWERS_OF_TWO)
        self.batch_duration = histogram("te_batch_inference_duration",
                                        "Time the model took for one batch, on the inference thread (s)")
        gauge = {"multiprocess_mode": "livesum"} if self.multiprocess else {}
        self.queue_size = Gauge("te_queue_size", "Rows waiting for the model", registry=own, **gauge)
        self.in_flight = Gauge("te_inputs_in_flight", "Inputs accepted and not yet answered", registry=own, **gauge)

    def render(self) -> bytes:
        return generate_latest(self.registry)
