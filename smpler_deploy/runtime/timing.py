"""The one CUDA-event timer: device time between two events recorded on a stream (trtexec's "GPU Compute").

The events come from an `api` with event_create / event_record / event_elapsed_ms / event_destroy /
synchronize: `trt.cuda_mem` or `TrtCudaApi` (cuda-python; the TensorRT side imports no torch), or `TorchEvents`
(torch.cuda.Event: the torch sessions, and ONNX Runtime told to run on a torch stream).
"""

from __future__ import annotations

from typing import Callable


class EventTimer:
    def __init__(self, api, stream=None):
        """stream: where the events are recorded (None: torch's current stream, for `TorchEvents`)."""
        self.api, self.stream = api, stream
        self.events = (api.event_create(), api.event_create())

    def start(self) -> None:
        self.api.event_record(self.events[0], self.stream)

    def stop(self) -> None:
        self.api.event_record(self.events[1], self.stream)

    def elapsed_ms(self) -> float:
        """Between the last start and stop; call once the stream has passed the stop event (after a synchronize)."""
        return self.api.event_elapsed_ms(*self.events)

    def time_ms(self, fn: Callable[[], object], iters: int) -> list[float]:
        """Device time of `iters` calls of `fn`, each bracketed by the events and synchronized."""
        ms = []
        for _ in range(iters):
            self.start()
            fn()
            self.stop()
            self.api.synchronize(self.stream)
            ms.append(self.elapsed_ms())
        return ms

    def close(self) -> None:
        for ev in self.events:
            self.api.event_destroy(ev)


class TorchEvents:
    """torch.cuda.Event as the timer's api (streams are torch streams; None = the current one)."""

    def __init__(self):
        import torch

        self.torch = torch

    def event_create(self):
        return self.torch.cuda.Event(enable_timing=True)

    def event_record(self, event, stream) -> None:
        event.record(stream)

    def event_elapsed_ms(self, start, end) -> float:
        end.synchronize()  # elapsed_time needs the end event completed
        return float(start.elapsed_time(end))

    def event_destroy(self, event) -> None:
        pass  # freed with the Python object

    def synchronize(self, stream) -> None:
        (stream if stream is not None else self.torch.cuda.current_stream()).synchronize()
