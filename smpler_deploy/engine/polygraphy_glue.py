"""The builder's Polygraphy glue: which TensorRT flavour Polygraphy binds, its log records captured (TensorRT's
messages arrive through them), Ctrl-C turned into a cancelled build, and the most telling error on one line."""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
import warnings
from contextlib import contextmanager

from ..errors import OptionError


def _polygraphy_for(flavour: str):
    """Point Polygraphy at the flavour's module. Its loaders bind `tensorrt` or `tensorrt_rtx` at first import
    (from POLYGRAPHY_USE_TENSORRT_RTX), so a process can only ever build with one flavour through them."""
    import polygraphy.config as pcfg

    want = flavour == "tensorrt-rtx"
    if "polygraphy.backend.trt.loader" not in sys.modules:
        os.environ["POLYGRAPHY_USE_TENSORRT_RTX"] = "1" if want else "0"
        pcfg.USE_TENSORRT_RTX = want
    elif pcfg.USE_TENSORRT_RTX != want:
        other = "tensorrt-rtx" if pcfg.USE_TENSORRT_RTX else "tensorrt"
        raise OptionError("flavour", flavour, f"this process already builds with {other}; use one flavour per process")
    import polygraphy.backend.trt as ptrt

    return ptrt


class _Capture(logging.Handler):
    """Collects Polygraphy's log records (TensorRT's messages arrive through them)."""

    def __init__(self, log):
        super().__init__(level=1)
        self.messages: list[tuple[int, str]] = []
        self.log = log

    def emit(self, record):
        msg = record.getMessage()
        self.messages.append((record.levelno, msg))
        if record.levelno == logging.WARNING:
            self.log("  " + msg.strip())

    def errors(self) -> list[str]:
        return [re.sub(r"^\[[A-Z!]\] ", "", m).strip() for lv, m in self.messages if lv >= logging.ERROR]


@contextmanager
def _captured_polygraphy_logs(log):
    """Route Polygraphy's logger (and TensorRT's, which it wraps) into a handler, down to VERBOSE TRT messages,
    so the `Layers:` dump can be read and nothing is printed behind the caller's back."""
    from polygraphy.logger import G_LOGGER

    plog = logging.getLogger("Polygraphy")
    saved = (G_LOGGER.module_severity, G_LOGGER.colors, G_LOGGER.use_python_logging_system, plog.propagate, plog.level)
    handler = _Capture(log)
    plog.addHandler(handler)
    plog.propagate, G_LOGGER.colors = False, False
    plog.setLevel(1)
    G_LOGGER.use_python_logging_system = True
    G_LOGGER.module_severity = G_LOGGER.EXTRA_VERBOSE  # TRT VERBOSE -> G_LOGGER.extra_verbose
    try:
        with warnings.catch_warnings():
            # Polygraphy always attaches a timing cache; TRT-RTX flags every cache call as a deprecated no-op.
            warnings.filterwarnings("ignore", message=".*Timing cache operations are no-ops.*")
            yield handler
    finally:
        plog.removeHandler(handler)
        G_LOGGER.module_severity, G_LOGGER.colors = saved[0], saved[1]
        G_LOGGER.use_python_logging_system = saved[2]
        plog.propagate = saved[3]
        plog.setLevel(saved[4])


class _CancelOnInterrupt:
    """Ctrl-C during `build_serialized_network`: a KeyboardInterrupt raised inside TensorRT's callbacks is swallowed
    and the build runs to the end. Instead our SIGINT handler records the request and the builder's
    IProgressMonitor (called on this thread between steps) returns False at its next step, which cancels the
    build. A second Ctrl-C raises at once."""

    def __init__(self, trt, log):
        self.cancelled = False
        self.log = log
        base = trt.IProgressMonitor
        outer = self

        class Monitor(base):
            def __init__(self):
                base.__init__(self)

            def phase_start(self, phase_name, parent_phase, num_steps):
                outer.phase_start(phase_name, parent_phase, num_steps)

            def step_complete(self, phase_name, step):
                return not outer.cancelled

            def phase_finish(self, phase_name):
                pass

        self.monitor = Monitor()

    def phase_start(self, phase_name, parent_phase, num_steps):  # a hook for tests and verbose logs
        pass

    def _on_sigint(self, signum, frame):
        if self.cancelled:
            raise KeyboardInterrupt
        self.cancelled = True
        self.log("interrupt: cancelling the engine build (Ctrl-C again to abort at once)")

    @contextmanager
    def sigint(self):
        """Install the handler for the block (main thread only: elsewhere Python delivers no signals anyway)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


def _first_error(handler: _Capture, default: str) -> str:
    """The most telling TensorRT/Polygraphy error, on one line: the parser's per-node summary
    ("In node 3 with name: ... and operator: ...: reason"), else an assertion/error-code line, else the first."""
    errs = [" ".join(e.split()) for e in handler.errors() if e.strip()]
    errs = [e for e in errs if not e.startswith(("Traceback", "File "))]
    for pattern in (r"^In node \d+", r"Assertion failed|Error Code|ERROR", r"."):
        hit = next((e for e in errs if re.search(pattern, e)), None)
        if hit:
            return f"{default}: {hit[:400]}"
    return default
