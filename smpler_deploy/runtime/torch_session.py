"""PyTorch backend: the reference model on CPU or CUDA at fp32/fp16/bf16, with per-batch CUDA graphs; or the
official-style eager forward used as the baseline.

fp16/bf16 follow the fp16 ONNX export's policy (`SMPLer.set_precision`: the same fp32 islands), so a torch
fp16 cell and an ONNX fp16 graph differ only by backend. What can be decided without a GPU (device, precision)
lives in `torch_plan`, when to capture in the one graph policy (`graphs.GraphPolicy`); both are tested on CPU.
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import torch

from ..errors import one_line
from ..outputs import SMPLOutput
from ..precision import FP32
from .base import Session, SessionInfo
from .graphs import GraphState
from .timing import EventTimer, TorchEvents
from .torch_plan import plan_torch, torch_graph_policy


class TorchSession(Session):
    backend = "torch"
    where = "torch session"

    def __init__(self, model=None, *, variant="smpler", checkpoint=None, smpl_model=None, precision=FP32,
                 official=False, threads=None, attention="torch", device="cpu", cuda_graphs=None, compile=False,
                 graph_warmup: int = 3, max_graphs: int = 8, cuda_check=None):
        """precision: a `Precision` the torch backend runs (fp32, fp16, bf16), or its report spelling;
        graph_warmup: forwards on a side stream before each capture (torch's CUDA-graph docs require it);
        max_graphs: batch sizes captured at most (each graph pins its static buffers), others run eagerly."""
        self.plan = plan = plan_torch(device, precision, cuda_graphs=cuda_graphs, compile=compile,
                                      attention=attention, cuda_check=cuda_check)
        with self._device_guard():  # cuda:N current while the model moves and events are made
            if model is None:
                from ..model.checkpoint import load_model

                model = load_model(variant, checkpoint, smpl_model, attention=attention, official_style=official)
            elif plan.precision != FP32 or plan.device != "cpu":
                model = copy.deepcopy(model)  # casting/moving must not change the caller's model
            self.device = torch.device(plan.device)
            model = model.eval().to(self.device)
            if plan.precision != FP32:
                model.set_precision(plan.precision)
            self.model = model
            self.precision = plan.precision
            self.official = bool(model.official_style)
            self.threads = threads
            if threads:  # process-wide in torch; set once (re-setting per call rebuilds the pool)
                torch.set_num_threads(int(threads))
            # torch.compile traces per batch size (dynamic=False: static shapes, as the CUDA graphs need anyway).
            self._forward = torch.compile(model, dynamic=False) if plan.compile else model
            self._graphs = torch_graph_policy(plan.cuda_graphs, max_graphs)
            self.graph_warmup = graph_warmup
            self._timer = EventTimer(TorchEvents()) if plan.is_cuda else None  # the forward alone (no copies)
            mi = model.info
            self.info = SessionInfo(
                variant=mi.get("variant"), untrained=mi.get("untrained"), standin_body=mi.get("standin_body"),
                checkpoint=mi.get("checkpoint"), checkpoint_sha256=mi.get("checkpoint_sha256"),
                body_model=mi.get("body_model"), device=plan.device, fp32_parts=tuple(plan.fp32_parts),
                compiled=plan.compile)

    def _device_guard(self):
        """cuda:N current for everything the session does on the GPU: torch.cuda.graph captures on a side stream of
        the *current* device and events record on it, so without this a session on cuda:1 would capture an empty
        graph (every replay returning the first output) and time cuda:0."""
        index = self.plan.cuda_index
        return torch.cuda.device(index) if index is not None else contextlib.nullcontext()

    @property
    def cuda_graphs(self) -> GraphState:
        return self._graphs.state

    @property
    def smpl_layer(self):
        return self.model.smpl_handler if self.model is not None else None

    # -- CUDA graphs
    def _capture(self, batch: int, x: torch.Tensor):
        """Warm up on a side stream, capture one forward into a graph with static input/output; replay it.
        Any failure turns graphs off for the session (`cuda_graphs.disabled_reason`) and this call runs eagerly."""
        try:
            static_x = x.clone()
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(self.graph_warmup):
                    self._forward(static_x)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._forward(static_x)
        except Exception as e:  # noqa: BLE001 - not capturable (host sync, unsupported op): eager for good
            self._graphs.failed(one_line(e))  # the graphs held are dropped with their references
            torch.cuda.synchronize(self.device)
            return self._forward(x)
        self._graphs.captured(batch, (graph, static_x, static_out))
        graph.replay()
        return static_out

    def _replay(self, batch: int, x: torch.Tensor):
        graph, static_x, static_out = self._graphs.graph(batch)
        static_x.copy_(x)
        graph.replay()
        return static_out  # read before the next replay: infer copies it to the host at once

    # -- Session
    def _run(self, images: np.ndarray) -> SMPLOutput:
        x = torch.from_numpy(images)
        with torch.inference_mode(), self._device_guard():
            if not self.plan.is_cuda:
                return self._forward(x).numpy()
            x = x.to(self.device)
            batch = x.shape[0]
            decision = self._graphs.decide(batch)  # torch graphs are never replaced: nothing to release
            self._timer.start()
            if decision.action == "replay":
                out = self._replay(batch, x)
            elif decision.action == "capture":
                out = self._capture(batch, x)
            else:
                out = self._forward(x)
                self._graphs.ran(batch)
            self._timer.stop()
            res = out.numpy()  # device -> host copy (synchronizes)
            self.last_device_ms = self._timer.elapsed_ms()
            return res

    def _release(self) -> None:
        self._graphs.release_all()
        self.model = self._forward = None
        if self.plan.is_cuda:
            torch.cuda.empty_cache()
