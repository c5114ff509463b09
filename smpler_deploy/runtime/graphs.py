"""The one CUDA-graph policy of the torch and TensorRT sessions: when to run plainly, capture, or replay.

Plain code (no CUDA), so its transitions are tested on any machine; the sessions only execute what it decides.
A graph freezes shapes and buffer addresses, so each graph is held under a key the session builds (torch: the batch
size; TensorRT: the input shapes and tensor addresses). Per key:

- `warmup` plain runs with that key come first (TensorRT does lazy work on the first enqueue after a shape change,
  so its sessions ask for >= 1, as trtexec; torch asks for 0: its capture warms up on a side stream itself, as
  torch's CUDA-graph docs require);
- then one capture; later calls with the key replay;
- at most `max_graphs` graphs are held. A new key beyond that runs plainly (`replace=False`, torch: each graph
  pins its own static buffers, so the captured sizes keep replaying), or replaces the held graphs (`replace=True`,
  TensorRT: one execution context, whose graph is stale once shapes or addresses change);
- a failed capture turns graphs off for the session (some work is not capturable); `disabled_reason` says why.

`runtime=True` (TensorRT-RTX) means the runtime captures on its own: every decision is a plain run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, NamedTuple


class Decision(NamedTuple):
    action: str  # "run" (plain) | "capture" (capture, then launch) | "replay"
    release: tuple  # graphs the policy dropped (stale or replaced): the session destroys them before acting


@dataclass(frozen=True)
class GraphState:
    """What a session reports about its CUDA graphs."""

    mode: str  # "off" | "capture" (the session captures and replays) | "runtime" (TensorRT-RTX's runtime does)
    captured: int  # graphs held now
    disabled_reason: str | None = None  # a capture failed (graphs are off for the session since): why


GRAPHS_OFF = GraphState("off", 0)


class GraphPolicy:
    def __init__(self, enabled: bool = True, *, warmup: int = 0, max_graphs: int = 1, replace: bool = False,
                 runtime: bool = False):
        if warmup < 0 or max_graphs < 1:
            raise ValueError("warmup must be >= 0 and max_graphs >= 1")
        self.enabled = enabled and not runtime
        self.runtime = enabled and runtime
        self.warmup, self.max_graphs, self.replace = warmup, max_graphs, replace
        self.graphs: dict[Hashable, Any] = {}  # key -> whatever the session captured
        self.disabled_reason: str | None = None
        self._key, self._runs = None, 0  # the key being warmed up, and its plain runs so far

    def decide(self, key) -> Decision:
        if not self.enabled or self.disabled_reason:
            return Decision("run", ())
        if key in self.graphs:
            return Decision("replay", ())
        release = ()
        if len(self.graphs) >= self.max_graphs:
            if not self.replace:
                return Decision("run", ())
            release = tuple(self.graphs.values())
            self.graphs.clear()
        if key != self._key:
            self._key, self._runs = key, 0
        return Decision("capture" if self._runs >= self.warmup else "run", release)

    def ran(self, key) -> None:
        """A plain run with `key` happened (counts towards its warm-up)."""
        if key == self._key:
            self._runs += 1

    def captured(self, key, graph) -> None:
        self.graphs[key] = graph

    def graph(self, key):
        return self.graphs[key]

    def failed(self, reason: str) -> tuple:
        """A capture failed: graphs off for good. Returns the graphs still held, for the session to destroy."""
        self.disabled_reason = reason
        return self.release_all()

    def release_all(self) -> tuple:
        held = tuple(self.graphs.values())
        self.graphs.clear()
        return held

    @property
    def state(self) -> GraphState:
        mode = "runtime" if self.runtime else "capture" if self.enabled else "off"
        return GraphState(mode, len(self.graphs), self.disabled_reason)
