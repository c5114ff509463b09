"""Latency statistics in the trtexec vocabulary (min/mean/median/p90/p95/p99, throughput)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import SmplerError

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency in milliseconds over `iters` timed calls of `batch` images each."""

    iters: int
    batch: int
    min_ms: float
    mean_ms: float
    p50_ms: float  # median
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    std_ms: float
    throughput_ips: float  # images per second = batch / mean latency

    def to_dict(self) -> dict:
        return asdict(self)


def latency_stats(times_s, batch: int) -> LatencyStats:
    """Stats from per-iteration wall times in seconds. Percentiles use linear interpolation (numpy default);
    throughput is batch / mean latency — the sustained rate of back-to-back calls, as trtexec reports qps."""
    t = np.asarray(times_s, dtype=np.float64) * 1e3
    if t.ndim != 1 or t.size == 0:
        raise SmplerError("latency_stats: need at least one timed iteration")
    if batch < 1:
        raise SmplerError(f"latency_stats: batch must be >= 1, got {batch}")
    p50, p90, p95, p99 = np.percentile(t, PERCENTILES)
    mean = float(t.mean())
    return LatencyStats(iters=int(t.size), batch=int(batch), min_ms=float(t.min()), mean_ms=mean,
                        p50_ms=float(p50), p90_ms=float(p90), p95_ms=float(p95), p99_ms=float(p99),
                        max_ms=float(t.max()), std_ms=float(t.std()),
                        throughput_ips=float(batch * 1e3 / mean) if mean > 0 else float("inf"))
