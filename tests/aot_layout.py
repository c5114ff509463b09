"""A kernel directory laid out as smpler-aot writes it (index.json with every field, one binary per entry and
image), with placeholder binaries and their real checksums: what the index checks and the plugins' loader read."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def write_kernel_dir(path, sm: int = 89) -> Path:
    from smpler_deploy.plugins import abi
    from smpler_deploy.plugins.kernel_store import INDEX_FORMAT

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    entries = []
    for kernel in abi.KERNEL_NAMES:
        for dtype in abi.DTYPES:
            spec, stem = abi.variant_spec(kernel, dtype), f"{kernel}_{dtype}_sm{sm}"
            cubin, ptx = f"CUBIN {stem}".encode(), f"// PTX {stem}\n"
            (path / f"{stem}.cubin").write_bytes(cubin)
            (path / f"{stem}.ptx").write_text(ptx)
            entries.append({"kernel": kernel, "dtype": dtype, "sm": sm, "entry_name": f"{kernel}_kernel",
                            "cubin": f"{stem}.cubin", "cubin_sha256": hashlib.sha256(cubin).hexdigest(),
                            "ptx": f"{stem}.ptx", "ptx_sha256": hashlib.sha256(ptx.encode()).hexdigest(),
                            "num_warps": 4, "threads_per_block": 128, "num_stages": 1, "shared": 2048,
                            "num_ctas": 1, "ptx_version": "8.5", "ptx_target": f"sm_{sm}", "ptx_min_driver": 12050,
                            "ptxas_cuda": "12.9", "grid": spec["grid"],
                            "args": [{"name": n, "type": t} for n, t in spec["args"]]
                            + [{"name": n, "type": "*i8"} for n in abi.HIDDEN_ARGS],
                            "constexprs": spec["constexprs"],
                            "divisible_by_16": [spec["args"][i][0] for i in spec["div16"]]})
    (path / "index.json").write_text(json.dumps({"format": INDEX_FORMAT, "triton_version": abi.TRITON_VERSION_PIN,
                                                 "kernel_abi": abi.KERNEL_ABI, "kernels": entries}, indent=1))
    return path
