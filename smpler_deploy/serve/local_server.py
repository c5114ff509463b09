"""Start the tritonserver that NVIDIA's PyTriton wheel bundles on a model repository, on loopback only.

PyTriton ships `tritonserver` with the Python backend and one backend stub per Python version. We run that binary
directly on our own repository (PyTriton's bound-function path is not used): the stub for this interpreter,
`LD_LIBRARY_PATH` leading with this interpreter's own libpython (the 3.11 stub otherwise binds the system
libpython, whose C modules do not match this interpreter's standard library), and this environment's `bin` first
on PATH so the stub imports the same packages (smpler_deploy, onnxruntime) as the caller.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SmplerError

LOOPBACK = "127.0.0.1"


def bundled_server() -> tuple[Path, Path]:
    """(PyTriton's tritonserver directory, its shared libraries); a one-line error if PyTriton is missing."""
    import importlib.util

    spec = importlib.util.find_spec("pytriton")  # located, not imported: only its files are used
    if spec is None or not spec.origin:
        raise SmplerError("the local Triton server needs NVIDIA's PyTriton wheel (pip install nvidia-pytriton)")
    root = Path(spec.origin).parent
    dist, libs = root / "tritonserver", root.parent / "nvidia_pytriton.libs"
    if not (dist / "bin" / "tritonserver").is_file():
        raise SmplerError(f"{dist}: no bundled tritonserver binary in this PyTriton install")
    return dist, libs


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on loopback (bound and released; the server binds them right after)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_free(port: int) -> bool:
    """Whether a new server could listen on `port` (SO_REUSEADDR, as servers bind: closed connections lingering in
    TIME_WAIT do not count, a listener does)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
            return True
        except OSError:
            return False


@dataclass
class LocalTriton:
    """`with LocalTriton(repo) as srv:` -> srv.http_url / srv.grpc_url on 127.0.0.1; stopped (and waited for) on exit."""

    repository: Path
    start_timeout: float = 120.0
    stop_timeout: float = 15.0
    shm_bytes: int = 16 << 20  # python backend's per-model shared memory to start with (grows as needed)
    log_path: Path | None = None
    models: tuple[str, ...] = ()  # load only these (explicit model control); () loads the whole repository
    proc: subprocess.Popen | None = field(default=None, init=False)
    ports: list[int] = field(default_factory=list, init=False)

    @property
    def http_url(self) -> str:
        return f"{LOOPBACK}:{self.ports[0]}"

    @property
    def grpc_url(self) -> str:
        return f"{LOOPBACK}:{self.ports[1]}"

    def _prepare(self) -> tuple[list[str], dict]:
        dist, libs = bundled_server()
        ver = f"{sys.version_info[0]}.{sys.version_info[1]}"
        stub = dist / "python_backend_stubs" / ver / "triton_python_backend_stub"
        if not stub.is_file():
            raise SmplerError(f"PyTriton has no Python backend stub for Python {ver} ({stub})")
        self._tmp = Path(tempfile.mkdtemp(prefix="smpler-triton-"))
        self._shm_prefix = f"smpler{secrets.token_hex(6)}"
        backends = self._tmp / "backends" / "python"
        shutil.copytree(dist / "backends" / "python", backends)  # the stub must sit beside the backend library
        shutil.copy2(stub, backends / "triton_python_backend_stub")
        env = dict(os.environ)
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        so = sysconfig.get_config_var("INSTSONAME") or ""
        lib_path = [libdir] if so and (Path(libdir) / so).exists() else []
        env["LD_LIBRARY_PATH"] = ":".join([*lib_path, str(libs), *filter(None, [env.get("LD_LIBRARY_PATH")])])
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        self.ports = free_ports(3)
        http, grpc, metrics = self.ports
        cmd = [str(dist / "bin" / "tritonserver"), f"--model-repository={self.repository}",
               f"--backend-directory={self._tmp / 'backends'}",
               f"--http-address={LOOPBACK}", f"--http-port={http}", f"--grpc-address={LOOPBACK}",
               f"--grpc-port={grpc}", f"--metrics-address={LOOPBACK}", f"--metrics-port={metrics}",
               "--allow-metrics=false", "--allow-gpu-metrics=false", "--strict-readiness=true",
               f"--exit-timeout-secs={int(self.stop_timeout)}",
               # our own shared-memory names: servers of concurrent tests must not meet in /dev/shm
               f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
               f"--backend-config=python,shm-default-byte-size={self.shm_bytes}"]
        if self.models:  # e.g. leave out models whose backend this build lacks (onnxruntime, tensorrt)
            cmd += ["--model-control-mode=explicit", *(f"--load-model={m}" for m in self.models)]
        return cmd, env

    def start(self) -> "LocalTriton":
        cmd, env = self._prepare()
        self.log_path = self.log_path or self._tmp / "tritonserver.log"
        self._log = open(self.log_path, "wb")
        # its own process group: stop() signals the server and the backend stubs it started, nothing else
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        import tritonclient.http as th

        client = th.InferenceServerClient(self.http_url)
        deadline = time.monotonic() + self.start_timeout
        try:
            while True:
                if self.proc.poll() is not None:
                    raise SmplerError(f"tritonserver exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
                try:
                    if client.is_server_ready():
                        return self
                except Exception:  # noqa: BLE001 - not listening yet
                    pass
                if time.monotonic() > deadline:
                    raise SmplerError(f"tritonserver not ready after {self.start_timeout:.0f} s:\n{self.log_tail()}")
                time.sleep(0.25)
        except BaseException:
            self.stop()
            raise
        finally:
            client.close()

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> int | None:
        """SIGINT (Triton drains and unloads), then SIGKILL to its group after stop_timeout; returns the exit code."""
        rc = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                try:
                    self.proc.wait(self.stop_timeout + 5)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
            rc = self.proc.returncode
            try:  # backend stubs left behind by a killed server
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._log.close()
        if getattr(self, "_tmp", None):
            shutil.rmtree(self._tmp, ignore_errors=True)
            # a server that had to exit immediately (exit timeout) leaves its Python-backend regions behind
            for region in Path("/dev/shm").glob(f"{self._shm_prefix}*"):
                region.unlink(missing_ok=True)
        return rc

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
