"""The official-style baseline costs what the official forward costs: it allocates what the literal transcription
of the official code (tests/official_ops.py) allocates, not per-token copies of the keys."""

import torch

from official_ops import official_forward
from smpler_deploy.model.smpler import SMPLer


def _allocated_bytes(fn) -> int:
    """Bytes the CPU allocator handed out during fn() (every allocation counted once, frees ignored)."""
    prof = torch.profiler
    with torch.inference_mode(), prof.profile(activities=[prof.ProfilerActivity.CPU], profile_memory=True) as p:
        fn()
    return sum(e.self_cpu_memory_usage for e in p.events() if e.self_cpu_memory_usage > 0)


def test_official_style_allocates_what_the_official_forward_allocates():
    torch.manual_seed(0)
    model = SMPLer("smpler").eval()  # weights do not change what is allocated
    model.official_style = True
    x = torch.randn(1, 3, 224, 224)
    ours = _allocated_bytes(lambda: model(x))
    official = _allocated_bytes(lambda: official_forward(model, x))
    # The keys broadcast against each query token (the old layout) allocated 2.2x the official forward.
    assert 0.85 < ours / official < 1.15, (ours / 1e6, official / 1e6)
