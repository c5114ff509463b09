"""Bounded load test of a running Triton server: N concurrent clients (HTTP and gRPC alternating) x M requests
to the `smpler` ensemble, every response compared with the direct session's answer for the same image and box,
latency percentiles, throughput and the server's own batching statistics."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from ..outputs import OUTPUT_NAMES
from . import handlers

TOLERANCE = 1e-5  # on |diff| / max(1, |value|): absolute for metres and normalized coordinates, relative for pixels

ALL_OUTPUTS = (*OUTPUT_NAMES, "joints2d_image")


@dataclass
class Request:
    image: np.ndarray  # uint8 [H,W,3]
    box: np.ndarray  # float32 [4]


def make_requests(n: int, seed: int = 0) -> list[Request]:
    """Seeded person-sized boxes over scikit-image's sample photos (no download)."""
    from ..preprocess import sample_images

    rng = np.random.default_rng(seed)
    imgs = [im for _, im in sample_images()]
    out = []
    for i in range(n):
        im = imgs[i % len(imgs)]
        h, w = im.shape[:2]
        bw, bh = rng.uniform(0.2, 0.6) * w, rng.uniform(0.4, 0.9) * h
        out.append(Request(im, np.array([rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh], np.float32)))
    return out


def direct_outputs(session, req: Request) -> dict[str, np.ndarray]:
    """What the ensemble should answer: the same crop, the session at batch 1, the same uncrop."""
    images, crop_box = handlers.crop_one(req.image, req.box)
    out = session.infer(images[None]).numpy()
    res = {n: getattr(out, n) for n in OUTPUT_NAMES}
    res["joints2d_image"] = handlers.uncrop_joints(res["smpl_joints2d"][0], crop_box)[None]
    return res


def connect(protocol: str, url: str, timeout_s: float = 120):
    """(tritonclient module, client) for "http" or "grpc"."""
    if protocol == "http":
        import tritonclient.http as m

        return m, m.InferenceServerClient(url, network_timeout=timeout_s, connection_timeout=timeout_s)
    import tritonclient.grpc as m

    return m, m.InferenceServerClient(url)


def infer_one(m, client, req: Request, model: str = "smpler", timeout_s: float = 120) -> dict[str, np.ndarray]:
    """One image + box through the ensemble; raises tritonclient's InferenceServerException on a server error."""
    a = m.InferInput("image", [1, *req.image.shape], "UINT8")
    a.set_data_from_numpy(req.image[None])
    b = m.InferInput("box", [1, 4], "FP32")
    b.set_data_from_numpy(req.box[None].astype(np.float32))
    kw = {} if m.__name__.endswith("http") else {"client_timeout": timeout_s}
    r = client.infer(model, [a, b], **kw)
    return {n: r.as_numpy(n) for n in ALL_OUTPUTS}


def run_load(server, requests: list[Request], expected: list[dict], clients: int, per_client: int,
             timeout_s: float = 120) -> dict:
    """clients threads x per_client requests each; returns latencies, throughput and the largest differences."""
    lat: list[list[float]] = [[] for _ in range(clients)]
    diffs = {n: 0.0 for n in ALL_OUTPUTS}
    scaled = {n: 0.0 for n in ALL_OUTPUTS}  # |diff| / max(1, |value|): pixels (~500) carry float32 rounding
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def work(k: int):
        protocol = "http" if k % 2 == 0 else "grpc"
        m, c = connect(protocol, server.http_url if protocol == "http" else server.grpc_url, timeout_s)
        try:
            start.wait(timeout_s)
            for j in range(per_client):
                i = (k * per_client + j) % len(requests)
                t0 = time.perf_counter()
                out = infer_one(m, c, requests[i], timeout_s=timeout_s)
                lat[k].append(time.perf_counter() - t0)
                with lock:
                    for n in ALL_OUTPUTS:
                        d = float(np.abs(out[n] - expected[i][n]).max())
                        diffs[n] = max(diffs[n], d)
                        scaled[n] = max(scaled[n], d / max(1.0, float(np.abs(expected[i][n]).max())))
        except Exception as e:  # noqa: BLE001 - reported, the test fails on it
            with lock:
                errors.append(f"client {k} ({protocol}): {e.__class__.__name__}: {e}")
        finally:
            c.close()

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s * per_client)
    wall = time.perf_counter() - t0
    flat = np.array([x for xs in lat for x in xs]) * 1e3
    done = len(flat)
    return {
        "clients": clients, "requests_per_client": per_client, "completed": done, "errors": errors,
        "hung_clients": sum(t.is_alive() for t in threads),
        "protocols": {"http": (clients + 1) // 2, "grpc": clients // 2},
        "wall_s": round(wall, 3), "throughput_rps": round(done / wall, 2) if wall else None,
        "latency_ms": {"p50": _pct(flat, 50), "p90": _pct(flat, 90), "p99": _pct(flat, 99),
                       "mean": round(float(flat.mean()), 2) if done else None,
                       "min": round(float(flat.min()), 2) if done else None,
                       "max": round(float(flat.max()), 2) if done else None},
        "max_abs_diff_vs_direct": diffs,
        "max_scaled_diff_vs_direct": scaled,
    }


def _pct(x, q):
    return round(float(np.percentile(x, q)), 2) if len(x) else None


def model_stats(server, model: str) -> dict:
    """inference_count / execution_count and the batch-size histogram, from Triton's statistics endpoint."""
    import tritonclient.http as th

    c = th.InferenceServerClient(server.http_url)
    try:
        s = c.get_inference_statistics(model)["model_stats"][0]
    finally:
        c.close()
    return {"inference_count": int(s["inference_count"]), "execution_count": int(s["execution_count"]),
            "batch_sizes": {str(b["batch_size"]): int(b["compute_infer"]["count"]) for b in s.get("batch_stats", [])}}


def malformed(server) -> list[dict]:
    """Bad requests: each must come back as a Triton error, not a crash or a hang."""
    import tritonclient.grpc as tg
    import tritonclient.http as th
    from tritonclient.utils import InferenceServerException

    img = np.zeros((64, 48, 3), np.uint8)
    cases = []

    def case(name, protocol, model, inputs):
        m = th if protocol == "http" else tg
        c = m.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)
        ins = []
        for n, arr, dt in inputs:
            i = m.InferInput(n, list(arr.shape), dt)
            i.set_data_from_numpy(arr)
            ins.append(i)
        try:
            c.infer(model, ins)
            cases.append({"case": name, "protocol": protocol, "error": None})
        except InferenceServerException as e:
            cases.append({"case": name, "protocol": protocol, "error": str(e.message())[:300]})
        finally:
            c.close()

    box = np.array([[4, 4, 30, 50]], np.float32)
    case("image with 4 channels", "http", "smpler", [("image", np.zeros((1, 64, 48, 4), np.uint8), "UINT8"),
                                                     ("box", box, "FP32")])
    case("image as FP32", "grpc", "smpler", [("image", img[None].astype(np.float32), "FP32"), ("box", box, "FP32")])
    case("box of 3 numbers", "http", "smpler", [("image", img[None], "UINT8"), ("box", box[:, :3], "FP32")])
    case("box with NaN", "grpc", "smpler", [("image", img[None], "UINT8"),
                                           ("box", np.array([[np.nan, 0, 10, 10]], np.float32), "FP32")])
    case("box outside the image", "http", "smpler", [("image", img[None], "UINT8"),
                                                    ("box", np.array([[500, 500, 10, 10]], np.float32), "FP32")])
    case("NaN crop to the model", "grpc", "smpler_python",
         [("images", np.full((1, 3, 224, 224), np.nan, np.float32), "FP32")])
    case("crop of the wrong size", "http", "smpler_python", [("images", np.zeros((1, 3, 200, 200), np.float32), "FP32")])
    return cases
