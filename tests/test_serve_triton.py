"""A real Triton Inference Server on loopback: the tritonserver NVIDIA's PyTriton wheel bundles, serving the
repository `smpler-export --format triton --ensemble python` writes (crop -> the project's ONNX Runtime session ->
uncrop, all in Triton's Python backend). Clients over HTTP and gRPC; every answer equals the direct session's;
the dynamic batcher batches; malformed requests get Triton errors and the server keeps serving; shutdown is clean."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc")
if importlib.util.find_spec("pytriton") is None:
    pytest.skip("the bundled tritonserver comes with nvidia-pytriton (extra [serve])", allow_module_level=True)

from smpler_deploy.serve import loadtest as L  # noqa: E402
from smpler_deploy.serve.local_server import LocalTriton, port_free  # noqa: E402
from smpler_deploy.serve.repository import RepoOptions, write_repository  # noqa: E402

SERVED = ("smpler_python", "smpler_crop", "smpler_uncrop", "smpler")  # the bundled build has no onnxruntime backend


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    import tiny_smpler

    hw = tiny_smpler.HW
    tiny_smpler.HW = 224  # SMPLer's crop size: the real crop step feeds it
    try:
        return tiny_smpler.tiny_smpler_onnx(tmp_path_factory.mktemp("g") / "tiny224.onnx")
    finally:
        tiny_smpler.HW = hw


def test_triton_serves_the_session_batches_refuses_bad_requests_and_stops_cleanly(graph, tmp_path):
    from smpler_deploy.runtime.ort_session import OnnxRuntimeSession

    repo = tmp_path / "repo"
    # a long queue delay makes the 4 concurrent clients' requests meet in the batcher on any machine speed
    write_repository(repo, onnx=graph, opts=RepoOptions(ensemble="python", onnx_device="cpu", max_batch=8,
                                                       preferred=(4, 8), queue_delay_us=100_000, session_threads=1))
    reqs = L.make_requests(8)
    sess = OnnxRuntimeSession(graph, threads=1)
    expected = [L.direct_outputs(sess, r) for r in reqs]
    sess.close()

    srv = LocalTriton(repo, models=SERVED, start_timeout=90, stop_timeout=10)
    with srv:
        load = L.run_load(srv, reqs, expected, clients=4, per_client=4, timeout_s=60)
        assert load["errors"] == [] and load["completed"] == 16 and load["hung_clients"] == 0
        assert load["protocols"] == {"http": 2, "grpc": 2}
        assert max(load["max_scaled_diff_vs_direct"].values()) <= L.TOLERANCE
        stats = L.model_stats(srv, "smpler_python")
        assert stats["inference_count"] == 16
        assert stats["execution_count"] < stats["inference_count"]  # requests were batched together
        assert any(int(b) > 1 for b in stats["batch_sizes"])

        bad = {c["case"]: c["error"] for c in L.malformed(srv)}
        assert all(bad.values()), bad  # every malformed request got an error back
        assert "expects 'UINT8'" in bad["image as FP32"]
        assert "unexpected shape for input 'image'" in bad["image with 4 channels"]
        assert "box: expected four finite numbers" in bad["box with NaN"]
        assert "contains NaN or Inf" in bad["NaN crop to the model"]
        m, c = L.connect("grpc", srv.grpc_url)  # still serving, and still right
        try:
            out = L.infer_one(m, c, reqs[3])
        finally:
            c.close()
        np.testing.assert_allclose(out["vertices"], expected[3]["vertices"], atol=1e-5)
        ports, proc = list(srv.ports), srv.proc
    assert proc.poll() is not None and proc.returncode == 0
    assert all(port_free(p) for p in ports)
    assert not list(Path("/dev/shm").glob(f"{srv._shm_prefix}*"))  # no Python-backend regions left behind
