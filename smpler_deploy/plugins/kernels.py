"""Triton kernels for SMPLer's two attention kinds, with the signatures of `smpler_deploy.model.attention`.

`local_attention(feat_nhwc, joints2d, qk, table, radius)` and `global_attention_multiscale(keys, qk)` equal the
reference functions (fp32 or fp16 storage; logits, softmax and sums in fp32; joints/window/bias math in fp32).

Interpreter vs compiler is a per-process choice in Triton 3.9: `@triton.jit` reads TRITON_INTERPRET when it
*decorates*, and that includes Triton's own library functions (`tl.sum`, `tl.max`, `tl.zeros`, ...), which are
decorated when `triton.language` is first imported. An interpreted kernel cannot call a compiled-mode `tl.sum`
("Cannot call @triton.jit'd outside of the scope of a kernel"), and `triton.compile` of a kernel calling an
interpreted `tl.sum` fails inside the code generator. Hence:
- without a CUDA device this module sets TRITON_INTERPRET=1 (unless the user set it) *before importing
  triton*, so the CPU path works; if triton was already imported in compiled mode, CPU calls raise a
  SmplerError saying to set TRITON_INTERPRET=1 in the environment;
- AOT compilation (`plugins.aot`) checks the mode and, in an interpreting process, compiles in a child process
  with TRITON_INTERPRET=0; `smpler-aot` itself forces TRITON_INTERPRET=0 before importing triton.
"""

from __future__ import annotations

import os

import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import triton  # noqa: E402  (must follow the TRITON_INTERPRET default above)
import triton.language as tl  # noqa: E402

from ..errors import SmplerError  # noqa: E402
# Sizes, tiling and the argument lists (KERNEL_ABI) are defined once, torch-free, in `abi`; heads are just
# more query rows in the global kernel, since qk already spans the full C channels of the raw keys.
from .abi import (  # noqa: E402,F401  (TRITON_VERSION_PIN, KERNEL_ABI: re-exported for callers of the kernels)
    GLOBAL_BLOCK_M, GLOBAL_BLOCK_N, KERNEL_ABI, NUM_SCALES, TRITON_VERSION_PIN, global_grid,
)

NUM_SCALES_C = tl.constexpr(NUM_SCALES)  # as a global the kernels may read


@triton.jit
def local_attention_kernel(
    feat_ptr, joints_ptr, qk_ptr, table_ptr, out_ptr,
    J, S, C,
    NH: tl.constexpr, R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """One program per (batch, joint), all heads: gather the 2r x 2r window once, reuse it for every head."""
    pid = tl.program_id(0)  # = b * J + j
    b = pid // J
    WIN: tl.constexpr = 2 * R
    N: tl.constexpr = WIN * WIN
    T: tl.constexpr = 2 * R + 1

    # Window and bias math in fp32, in the reference's operation order (floor() is discontinuous).
    jx = tl.load(joints_ptr + pid * 2).to(tl.float32)
    jy = tl.load(joints_ptr + pid * 2 + 1).to(tl.float32)
    smax = (S - 1).to(tl.float32)
    px = (jx + 1.0) * 0.5 * smax
    py = (jy + 1.0) * 0.5 * smax
    n = tl.arange(0, N)
    ox = (n // WIN - (R - 1)).to(tl.float32)  # key n = a*2r + b: a is the x offset, b the y offset
    oy = (n % WIN - (R - 1)).to(tl.float32)
    ix = tl.minimum(tl.maximum(tl.floor(px) + ox, 0.0), smax)  # clamped: border pixels repeat as keys
    iy = tl.minimum(tl.maximum(tl.floor(py) + oy, 0.0), smax)
    tx = R + (ix - px)  # fractional cell of the (2r+1)^2 table
    ty = R + (iy - py)
    x0 = tl.floor(tx)
    y0 = tl.floor(ty)
    fx = tx - x0
    fy = ty - y0

    c = tl.arange(0, BLOCK_C)
    cmask = c < C
    row = (b * S * S + iy.to(tl.int32) * S + ix.to(tl.int32)).to(tl.int64)
    keys = tl.load(feat_ptr + row[:, None] * C + c[None, :], mask=cmask[None, :], other=0.0).to(tl.float32)

    for h in tl.static_range(NH):
        bias = tl.zeros([N], dtype=tl.float32)
        for cx in tl.static_range(2):
            for cy in tl.static_range(2):
                xi = x0 + cx
                yi = y0 + cy
                wx = (1.0 - fx) if cx == 0 else fx
                wy = (1.0 - fy) if cy == 0 else fy
                valid = (xi >= 0.0) & (xi <= T - 1.0) & (yi >= 0.0) & (yi <= T - 1.0)  # zeros outside
                tidx = h * T * T + tl.where(valid, yi * T + xi, 0.0).to(tl.int32)
                bias += tl.load(table_ptr + tidx, mask=valid, other=0.0) * (wx * wy)
        qrow = (pid * NH + h).to(tl.int64) * C
        q = tl.load(qk_ptr + qrow + c, mask=cmask, other=0.0).to(tl.float32)
        logits = tl.sum(keys * q[None, :], axis=1) + bias
        p = tl.exp(logits - tl.max(logits, axis=0))
        p = p / tl.sum(p, axis=0)
        agg = tl.sum(p[:, None] * keys, axis=0)
        tl.store(out_ptr + qrow + c, agg.to(out_ptr.dtype.element_ty), mask=cmask)


@triton.jit
def global_attention_kernel(
    qk_ptr, k0_ptr, k1_ptr, k2_ptr, k3_ptr, out_ptr,
    M, C, N0, N1, N2, N3,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, IEEE: tl.constexpr,
):
    """Flash-style cross-attention; grid (cdiv(M, BLOCK_M), B, 4 scales), one launch for all scales.

    One launch wins over four: the critical path is the same (a scale-0 program streams 3136 keys, every
    other scale is 4x-64x shorter), but the small scales then run beside scale 0 on otherwise idle SMs
    instead of in three further launches; scale is the slowest grid axis, so the heaviest programs are
    dispatched first. Keys stay in four separate buffers (no concatenation copy).
    """
    pid_m = tl.program_id(0)
    b = tl.program_id(1)
    s = tl.program_id(2)
    if s == 0:
        k_ptr = k0_ptr
        n_keys = N0
    elif s == 1:
        k_ptr = k1_ptr
        n_keys = N1
    elif s == 2:
        k_ptr = k2_ptr
        n_keys = N2
    else:
        k_ptr = k3_ptr
        n_keys = N3
    k_ptr += b.to(tl.int64) * n_keys * C

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    c = tl.arange(0, BLOCK_C)
    rmask = rows < M
    cmask = c < C
    q_off = ((b * NUM_SCALES_C + s) * M + rows).to(tl.int64)[:, None] * C + c[None, :]
    q = tl.load(qk_ptr + q_off, mask=rmask[:, None] & cmask[None, :], other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_C], dtype=tl.float32)
    for start in range(0, n_keys, BLOCK_N):
        n = start + tl.arange(0, BLOCK_N)
        nmask = n < n_keys
        k = tl.load(k_ptr + n[:, None] * C + c[None, :], mask=nmask[:, None] & cmask[None, :], other=0.0)
        if IEEE:  # fp32 storage: exact fp32 products (the default TF32 would cost ~1e-3 relative)
            logits = tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            logits = tl.dot(q, tl.trans(k))
        logits = tl.where(nmask[None, :], logits, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(logits, axis=1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(logits - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if IEEE:
            acc = acc * alpha[:, None] + tl.dot(p, k, input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(k.dtype), k)
        m_i = m_new
    acc = acc / l_i[:, None]
    tl.store(out_ptr + q_off, acc.to(out_ptr.dtype.element_ty), mask=rmask[:, None] & cmask[None, :])


KERNELS = {"local_attention": local_attention_kernel, "global_attention": global_attention_kernel}


def as_jit_function(kernel):
    """The compiled-mode `JITFunction` for a kernel, whatever TRITON_INTERPRET was at import (AOT needs it)."""
    from triton.runtime.jit import JITFunction

    return kernel if isinstance(kernel, JITFunction) else JITFunction(kernel.fn)


_RUNNERS: dict = {}


def triton_interprets() -> bool:
    """True when this process's Triton library functions were decorated for the interpreter."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.sum, InterpretedFunction)


def _runner(kernel, device: torch.device):
    """Interpreter for CPU tensors, compiled kernel for CUDA tensors (each needs Triton imported in that mode)."""
    from triton.runtime.interpreter import InterpretedFunction

    want_interp = device.type == "cpu"
    if want_interp != triton_interprets():
        need = "TRITON_INTERPRET=1" if want_interp else "TRITON_INTERPRET unset (or 0)"
        raise SmplerError(f"{device.type} tensors: Triton was imported in the other mode; start the process with "
                          f"{need} (Triton decides interpreter vs compiler once, at import)")
    if isinstance(kernel, InterpretedFunction) == want_interp:
        return kernel
    key = (kernel.fn, want_interp)
    if key not in _RUNNERS:
        _RUNNERS[key] = InterpretedFunction(kernel.fn) if want_interp else as_jit_function(kernel)
    return _RUNNERS[key]


def _check_storage(name: str, t: torch.Tensor, dtype: torch.dtype | None = None) -> None:
    if t.dtype not in (torch.float32, torch.float16):
        raise SmplerError(f"{name}: dtype {t.dtype} not supported (float32 or float16)")
    if dtype is not None and t.dtype != dtype:
        raise SmplerError(f"{name}: dtype {t.dtype} differs from the feature dtype {dtype}")


def local_attention(
    feat_nhwc: torch.Tensor, joints2d: torch.Tensor, qk: torch.Tensor, table: torch.Tensor, radius: int = 4
) -> torch.Tensor:
    """Fused gather + bilinear bias + softmax + weighted sum; see `model.attention.local_attention`."""
    b, h, w, c = feat_nhwc.shape
    _, j, nh, c2 = qk.shape
    if h != w:
        raise SmplerError(f"feat_nhwc: square map expected, got {h}x{w}")
    if c2 != c or qk.shape[0] != b or joints2d.shape != (b, j, 2):
        raise SmplerError(f"local_attention: shapes feat {tuple(feat_nhwc.shape)}, joints {tuple(joints2d.shape)}, "
                          f"qk {tuple(qk.shape)} do not match [B,H,W,C], [B,J,2], [B,J,NH,C]")
    if radius < 1 or radius & (radius - 1):  # tl.arange needs a power-of-two window (SMPLer: r=4, 64 keys)
        raise SmplerError(f"radius {radius}: the kernel supports powers of two (1, 2, 4, 8)")
    if table.shape != (nh, 2 * radius + 1, 2 * radius + 1):
        raise SmplerError(f"table: shape {tuple(table.shape)}, expected ({nh}, {2 * radius + 1}, {2 * radius + 1})")
    _check_storage("feat_nhwc", feat_nhwc)
    _check_storage("qk", qk, feat_nhwc.dtype)
    out = torch.empty_like(qk, memory_format=torch.contiguous_format)
    if b * j == 0 or out.is_meta:  # nothing to launch (meta: shapes only, e.g. tracing a model on meta)
        return out
    kernel = _runner(local_attention_kernel, feat_nhwc.device)
    kernel[(b * j,)](
        feat_nhwc.contiguous(), joints2d.float().contiguous(), qk.contiguous(), table.float().contiguous(), out,
        j, h, c, NH=nh, R=radius, BLOCK_C=triton.next_power_of_2(c),
    )
    return out


def global_attention_multiscale(keys: list[torch.Tensor], qk: torch.Tensor) -> torch.Tensor:
    """Online-softmax cross-attention of qk [B,4,Q,NH,C] against 4 key maps [B,N_s,C] -> agg [B,4,Q,NH,C]."""
    if len(keys) != NUM_SCALES:
        raise SmplerError(f"keys: {NUM_SCALES} scales expected, got {len(keys)}")
    b, s, q, nh, c = qk.shape
    if s != NUM_SCALES:
        raise SmplerError(f"qk: shape {tuple(qk.shape)}, expected [B,{NUM_SCALES},Q,NH,C]")
    _check_storage("qk", qk)
    for i, k in enumerate(keys):
        if k.dim() != 3 or k.shape[0] != b or k.shape[2] != c or k.shape[1] == 0:
            raise SmplerError(f"keys[{i}]: shape {tuple(k.shape)}, expected [{b},N>0,{c}]")
        _check_storage(f"keys[{i}]", k, qk.dtype)
    out = torch.empty_like(qk, memory_format=torch.contiguous_format)
    m = q * nh
    if b * m == 0 or out.is_meta:
        return out
    kernel = _runner(global_attention_kernel, qk.device)
    kernel[global_grid(b, m)](
        qk.contiguous(), *[k.contiguous() for k in keys], out,
        m, c, *[k.shape[1] for k in keys],
        BLOCK_M=GLOBAL_BLOCK_M, BLOCK_N=GLOBAL_BLOCK_N, BLOCK_C=triton.next_power_of_2(c),
        IEEE=qk.dtype == torch.float32,
    )
    return out
