"""GPU targets of an engine build: `sms` values parsed and checked against what the installed TensorRT-RTX can
target (full TensorRT builds for the local GPU). Pure functions, no TensorRT import (callers pass its module)."""

from __future__ import annotations

import re

from ..errors import OptionError, opt

DEFAULT_SMS = (89,)
# GPUs TensorRT-RTX cannot target: their engines come from full TensorRT on the device (docs/jetson.md).
ON_DEVICE_SMS = {87: "Jetson Orin", 90: "Hopper"}


def parse_sm(text) -> int:
    """"89", 89, "8.9", "sm_89", "SM89", "sm89" -> 89; anything else a one-line error (field `sms`)."""
    t = str(text).strip().lower().removeprefix("sm").lstrip("_")
    m = re.fullmatch(r"(\d+)\.(\d)", t)
    if m:
        t = m.group(1) + m.group(2)
    if not t.isdigit():
        raise OptionError("sms", text, "expected a compute capability such as 89, 8.9 or sm_89")
    return int(t)


def parse_sms(values, valid: list[int] | None = None, what: str = "a TensorRT-RTX target") -> list[int] | None:
    """Repeatable and comma-separated SM values, normalized and de-duplicated in order; checked against `valid`
    (`what` says whose targets they are). The one SM parser: engine builds and smpler-aot both use it."""
    if not values:
        return None
    out: list[int] = []
    for v in values:
        for item in str(v).split(","):
            if not item.strip():
                continue
            sm = parse_sm(item)
            if valid is not None and sm not in valid:
                hint = (f"; {ON_DEVICE_SMS[sm]} (SM{sm}) engines are built on the device itself with "
                        f"{opt('flavour')} tensorrt"
                        if sm in ON_DEVICE_SMS else "")
                raise OptionError("sms", item.strip(), f"not {what}; valid: {', '.join(map(str, valid))}" + hint)
            if sm not in out:
                out.append(sm)
    if not out:
        raise OptionError("sms", None,
                          "give at least one target" + (f"; valid: {', '.join(map(str, valid))}" if valid else ""))
    return out


def valid_sms(trt) -> list[int]:
    """Compute capabilities this TensorRT-RTX can target, e.g. [75, 80, 86, 89, 120, 121]."""
    return sorted(int(n[2:]) for n in trt.ComputeCapability.__members__ if re.fullmatch(r"SM\d+", n))


def check_sms(sms, valid: list[int]) -> list[int]:
    """Normalize ("89", 8.9, "sm_120", 120) -> ints and refuse unknown targets, listing the valid ones."""
    out = parse_sms(list(sms), valid)
    if not out:
        raise OptionError("sms", None, f"give at least one target; valid: {', '.join(map(str, valid))}")
    return out
