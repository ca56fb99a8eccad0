"""A bounded load test of a Triton model: concurrent clients, client-side latency, server-side batch sizes.

Each level of concurrency runs that many client threads, one ``tritonclient``
client each, sending requests of ``batch`` images drawn in turn from ``images``
until ``requests_per_level`` requests were answered or ``seconds_per_level``
passed (whichever comes first: the test always stops by itself). Latency is the
client's wall time per request; throughput is images answered per second of
the level's wall time. The server's side comes from Triton's statistics
extension, read before and after each level: the mean batch the dynamic
batcher formed (``inference_count / execution_count`` of the level) and the
count of executions per batch size (``batch_stats``).

The clients run in the same Python process on the same cores as the server, so
on a 2-core machine the figures describe the whole loop, client included.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Sequence

import numpy as np

__all__ = ["load_test", "model_statistics"]


def _client(protocol: str, url: str) -> Any:
    if protocol == "http":
        import tritonclient.http as client

        return client.InferenceServerClient(url, connection_timeout=30.0, network_timeout=60.0)
    if protocol == "grpc":
        import tritonclient.grpc as client

        return client.InferenceServerClient(url)
    raise ValueError(f"protocol must be 'http' or 'grpc', got {protocol!r}")


def _infer_input(protocol: str, name: str, x: np.ndarray) -> Any:
    mod = __import__(f"tritonclient.{protocol}", fromlist=["InferInput"])
    dtype = {np.dtype(np.float32): "FP32", np.dtype(np.float16): "FP16", np.dtype(np.float64): "FP64"}[x.dtype]
    inp = mod.InferInput(name, list(x.shape), dtype)
    inp.set_data_from_numpy(x)
    return inp


def model_statistics(protocol: str, url: str, model: str) -> dict[str, Any]:
    """Triton's statistics of ``model`` (latest version): counts and executions per batch size."""
    client = _client(protocol, url)
    if protocol == "grpc":
        raw = client.get_inference_statistics(model, as_json=True)
    else:
        raw = client.get_inference_statistics(model)
    stats = raw["model_stats"]
    out = {"inference_count": 0, "execution_count": 0, "batches": {}}
    for s in stats:
        out["inference_count"] += int(s.get("inference_count", 0))
        out["execution_count"] += int(s.get("execution_count", 0))
        for b in s.get("batch_stats", []):
            size = int(b["batch_size"])
            out["batches"][size] = out["batches"].get(size, 0) + int(b.get("compute_infer", {}).get("count", 0))
    return out


def load_test(
    url: str,
    model: str,
    images: np.ndarray,
    *,
    protocol: str = "grpc",
    concurrency: Sequence[int] = (1, 4, 16),
    batch: int = 1,
    requests_per_level: int = 400,
    seconds_per_level: float = 10.0,
    input_name: str = "input",
    output_name: str = "logits",
    warmup_requests: int = 5,
) -> dict[str, Any]:
    """Load ``model`` at each level of ``concurrency`` and report what clients and server saw.

    Args:
        url: ``host:port`` of the protocol's endpoint.
        model: model name.
        images: ``[N, ...]`` inputs; requests take ``batch`` consecutive ones, cycling.
        protocol: ``grpc`` or ``http``.
        concurrency: client threads per level.
        batch: images per request (the server's dynamic batcher combines requests).
        requests_per_level, seconds_per_level: each level stops at whichever comes first.

    Returns:
        ``{"protocol", "model", "batch", "levels": {clients: {"requests", "errors",
        "images", "seconds", "throughput", "p50_ms", "p99_ms", "mean_ms",
        "server_mean_batch", "server_batches": {size: executions}}}}``;
        ``errors`` holds the first error messages, if any.
    """
    if len(images) < batch:
        raise ValueError(f"need at least batch={batch} images, got {len(images)}")
    images = np.ascontiguousarray(images)
    warm = _client(protocol, url)
    for _ in range(warmup_requests):
        warm.infer(model, [_infer_input(protocol, input_name, images[:batch])])
    levels: dict[int, dict[str, Any]] = {}
    for clients in concurrency:
        before = _settled_statistics(protocol, url, model)
        latencies, errors, wall = _run_level(
            protocol,
            url,
            model,
            images,
            int(clients),
            batch,
            requests_per_level,
            seconds_per_level,
            input_name,
            output_name,
        )
        after = _settled_statistics(protocol, url, model, at_least=before["inference_count"] + len(latencies) * batch)
        levels[int(clients)] = {
            "clients": int(clients),
            **_client_figures(latencies, errors, wall, batch),
            **_server_figures(before, after),
        }
    return {"protocol": protocol, "model": model, "batch": batch, "levels": levels}


def _client_figures(latencies: list[float], errors: list[str], wall: float, batch: int) -> dict[str, Any]:
    """What the clients of one level saw: requests, errors, throughput, latency percentiles."""
    ms = np.asarray(latencies) * 1e3
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "error_messages": errors[:3],
        "images": len(latencies) * batch,
        "seconds": wall,
        "throughput": len(latencies) * batch / wall if wall > 0 else 0.0,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
        "mean_ms": float(ms.mean()) if len(ms) else None,
    }


def _server_figures(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What Triton did during one level, from its statistics read ``before`` and ``after`` it."""
    executions = after["execution_count"] - before["execution_count"]
    inferences = after["inference_count"] - before["inference_count"]
    batches = {
        size: n - before["batches"].get(size, 0)
        for size, n in sorted(after["batches"].items())
        if n - before["batches"].get(size, 0) > 0
    }
    return {
        "server_executions": executions,
        "server_mean_batch": inferences / executions if executions else None,
        "server_batches": batches,
    }


def _settled_statistics(protocol: str, url: str, model: str, at_least: int = 0, timeout: float = 3.0) -> dict[str, Any]:
    """``model_statistics`` once Triton has counted every answered request.

    Triton records a request's statistics after sending its response, so a read
    right after the last answer can miss it (measured: a level's batches summed to
    201 images for 200 requests, the late one a warmup's). Reads until the count
    reaches ``at_least`` and holds still for 50 ms, or ``timeout`` passes.
    """
    stats = model_statistics(protocol, url, model)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.05)
        again = model_statistics(protocol, url, model)
        if again["inference_count"] == stats["inference_count"] and again["inference_count"] >= at_least:
            return again
        stats = again
    return stats


def _run_level(
    protocol: str,
    url: str,
    model: str,
    images: np.ndarray,
    clients: int,
    batch: int,
    requests: int,
    seconds: float,
    input_name: str,
    output_name: str,
) -> tuple[list[float], list[str], float]:
    """``clients`` threads until ``requests`` answers or ``seconds``: (latencies s, error messages, wall s)."""
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    budget = [int(requests)]
    stop_at = time.perf_counter() + seconds

    def worker(seed: int) -> None:
        client = _client(protocol, url)
        k = seed * batch
        while True:
            with lock:
                if budget[0] <= 0 or time.perf_counter() >= stop_at:
                    return
                budget[0] -= 1
            start = k % (len(images) - batch + 1)
            x = images[start : start + batch]
            k += batch
            t0 = time.perf_counter()
            try:
                result = client.infer(model, [_infer_input(protocol, input_name, x)])
                out = result.as_numpy(output_name)
                if out is None or out.shape[0] != batch:
                    raise RuntimeError(f"bad output {None if out is None else out.shape}")
            except Exception as e:  # counted and reported, never raised from a thread
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                continue
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    t_start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    return latencies, errors, time.perf_counter() - t_start
