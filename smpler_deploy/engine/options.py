"""How an engine is built, as one typed value (`EngineOptions`) from the command line to the builder, its child
process and the manifest, with every check of those values in one place.

`check_values` needs nothing installed; `resolve` also needs the TensorRT flavour's module (the valid `sms` targets
and hardware compatibility levels depend on it). Errors are `OptionError`s naming the field; the commands name
their flag. Pure code: no TensorRT import here (callers pass the module).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace

from ..errors import OptionError
from ..outputs import parse_batch
from .targets import DEFAULT_SMS, check_sms, valid_sms

# trtexec --memPoolSize pool names -> trt.MemoryPoolType members.
MEM_POOLS = {
    "workspace": "WORKSPACE",
    "dlasram": "DLA_MANAGED_SRAM",
    "dlalocaldram": "DLA_LOCAL_DRAM",
    "dlaglobaldram": "DLA_GLOBAL_DRAM",
    "tacticsharedmem": "TACTIC_SHARED_MEMORY",
}
_UNITS = {"": 1 << 20, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}  # trtexec: bare number = MiB
HW_COMPAT = ("none", "ampere_plus", "same_compute_capability")


@dataclass(frozen=True)
class EngineOptions:
    """One engine build's options. Resolved (`resolve`), it is what the manifest records as `build.options`."""

    flavour: str | None = None  # tensorrt | tensorrt-rtx (None: whichever is installed)
    # Lists, not tuples: `asdict` is then the JSON the manifest and the build worker get, and reads back equal.
    sms: list[int] | None = None  # TensorRT-RTX targets (None: 89); full TensorRT: the local GPU
    batch: list[int] = field(default_factory=lambda: [1, 1, 8])  # MIN:OPT:MAX
    timing_cache: str | None = None
    builder_optimization_level: int | None = None
    mem_pool_size: str | None = None  # trtexec syntax, e.g. workspace:2G
    version_compatible: bool = False
    hardware_compatibility_level: str = "none"
    tf32: bool = True  # fp32 layers may use TF32 tensor cores, as trtexec (False = trtexec --noTF32)

    def to_json(self) -> dict:
        """The manifest's `build.options` and the build worker's job: `asdict`, already plain JSON."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "EngineOptions":
        return cls(**data)


def parse_mem_pool_size(spec: str | None) -> dict[str, int]:
    """trtexec syntax: "workspace:2G,tacticSharedMem:48K" -> {"WORKSPACE": 2147483648, ...} (bare number = MiB)."""
    if not spec:
        return {}
    out = {}
    for item in spec.split(","):
        m = re.fullmatch(r"\s*(\w+)\s*:\s*([0-9]*\.?[0-9]+)\s*([BKMG]?)(?:i?B)?\s*", item, re.IGNORECASE)
        pool = MEM_POOLS.get(m.group(1).lower()) if m else None
        if not m or pool is None:
            raise OptionError("mem_pool_size", spec, f"expected POOL:SIZE[B|K|M|G] with POOL in {', '.join(MEM_POOLS)} "
                              "(e.g. workspace:2G)")
        out[pool] = int(float(m.group(2)) * _UNITS[m.group(3).upper()])
    return out


def normalize_hcl(level: str | None) -> str:
    """Hardware compatibility level spellings (ampere+, ampere-plus, ...) -> none | ampere_plus |
    same_compute_capability."""
    hcl = (level or "none").lower().replace("-", "_").replace("+", "_plus")
    if hcl not in HW_COMPAT:
        raise OptionError("hardware_compatibility_level", level, f"expected {', '.join(HW_COMPAT)}")
    return hcl


def check_values(opts: EngineOptions) -> EngineOptions:
    """Every check that needs no TensorRT: batch, memory pools, optimisation level, compatibility level.
    Returns the options normalized (batch a tuple, the level's canonical spelling)."""
    parse_mem_pool_size(opts.mem_pool_size)
    lvl = opts.builder_optimization_level
    if lvl is not None and not 0 <= int(lvl) <= 5:
        raise OptionError("builder_optimization_level", lvl, "expected 0..5")
    return replace(opts, batch=list(parse_batch(opts.batch)), hardware_compatibility_level=normalize_hcl(
        opts.hardware_compatibility_level), timing_cache=str(opts.timing_cache) if opts.timing_cache else None)


def resolve(opts: EngineOptions, trt, flavour: str, local_sm: int | None = None) -> EngineOptions:
    """`check_values`, then what depends on the imported flavour: its `sms` targets (TensorRT-RTX; full TensorRT
    builds for the local GPU, `local_sm`) and whether it knows the compatibility level. Idempotent."""
    opts = check_values(replace(opts, flavour=flavour))
    if flavour == "tensorrt-rtx":
        sms = check_sms(opts.sms if opts.sms is not None else DEFAULT_SMS, valid_sms(trt))
    elif opts.sms and list(opts.sms) != ([local_sm] if local_sm else []):  # resolved before: the local GPU
        raise OptionError("sms", None, "applies to TensorRT-RTX builds only; full TensorRT builds for the local GPU")
    else:
        sms = [local_sm] if local_sm else []
    hcl = opts.hardware_compatibility_level
    if hcl != "none" and not hasattr(trt.HardwareCompatibilityLevel, hcl.upper()):
        raise OptionError("hardware_compatibility_level", hcl, f"not available in {flavour} {trt.__version__}")
    return replace(opts, sms=sms)

