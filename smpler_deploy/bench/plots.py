"""PNG plots for a report dict: latency per cell (p50 bar, p90 tick, whisker to p99) and speed-up vs fidelity."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless; no display needed
import matplotlib.pyplot as plt  # noqa: E402

from ..fileio import atomic_path  # noqa: E402

COLORS = {"official": "#888888", "reference": "#1f77b4", "deployed": "#2ca02c"}


def _save(fig, path: Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def plot_latency(rep: dict, path) -> Path:
    cells = [c for c in rep["cells"] if c["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(cells) + 2), 4))
    for i, c in enumerate(cells):
        lat = c["latency"]
        ax.bar(i, lat["p50_ms"], color=COLORS.get(c["kind"], "C2"), width=0.6)
        ax.errorbar(i, lat["p50_ms"], yerr=[[0], [lat["p99_ms"] - lat["p50_ms"]]], color="k", capsize=4, lw=1)
        ax.plot(i, lat["p90_ms"], "k_", ms=10)
    ax.set_xticks(range(len(cells)), [c["id"] for c in cells], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("latency per call (ms)")
    ax.set_title("p50 (bar), p90 (tick), p99 (whisker top)")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, Path(path))


def plot_speedup_fidelity(rep: dict, path) -> Path:
    cells = [c for c in rep["cells"] if c["status"] == "ok" and c.get("speedup_vs_official") is not None]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for c in cells:
        dev = ((c.get("fidelity") or {}).get("vertices") or {}).get("mean_mm")
        x = dev if dev is not None else float("nan")
        ax.scatter(x, c["speedup_vs_official"], color=COLORS.get(c["kind"], "C2"))
        ax.annotate(c["id"], (x, c["speedup_vs_official"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("symlog", linthresh=1e-3)  # the reference itself sits at 0 mm
    ax.set_xlabel("mean vertex deviation vs PyTorch fp32 (mm)")
    ax.set_ylabel("speed-up vs official eager fp32 (×)")
    ax.axhline(1.0, color="#888888", lw=0.8, ls="--")
    ax.grid(alpha=0.3)
    return _save(fig, Path(path))


def write_plots(rep: dict, out_dir) -> list[Path]:
    out = Path(out_dir)
    return [plot_latency(rep, out / "latency.png"), plot_speedup_fidelity(rep, out / "speedup_vs_fidelity.png")]
