"""Prometheus text for `GET /metrics`: requests, a latency histogram and errors, per worker process.

No client library: a few counters under one lock, rendered in the text exposition format (version 0.0.4).
Each uvicorn worker keeps its own numbers (the service is stateless); a scraper that reaches the workers
through one port sees one of them per scrape, so run one worker per container/replica when exact totals
matter, or sum over replicas (each replica is its own scrape target).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import DefaultDict, Dict, List, Tuple

# Seconds. The matrix answers in milliseconds: the fine buckets are where the service lives.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
PATHS = ("/v1/resolve", "/v1/matrix", "/healthz", "/metrics", "/openapi.json")  # anything else is "other"


def path_label(path: str) -> str:
    """The path as a label: one of PATHS, else "other" (an unbounded label set would grow without end)."""
    return path if path in PATHS else "other"


class Metrics:
    """Counters and the histogram of one worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: DefaultDict[Tuple[str, str, int], int] = defaultdict(int)  # (method, path, status)
        self.errors: DefaultDict[Tuple[str, str], int] = defaultdict(int)  # (path, kind)
        self.hist: Dict[str, List[float]] = {}  # path -> per-bucket counts (cumulative at render), then sum, count
        self.cache: Dict[str, int] = {"hit": 0, "miss": 0}

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        """One finished request."""
        label = path_label(path)
        method = method if method in ("GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS") else "other"
        with self._lock:
            self.requests[(method, label, status)] += 1
            h = self.hist.get(label)
            if h is None:
                h = self.hist[label] = [0.0] * (len(BUCKETS) + 2)
            for i, edge in enumerate(BUCKETS):
                if seconds <= edge:
                    h[i] += 1
                    break
            h[-2] += seconds
            h[-1] += 1
            if status >= 500:
                self.errors[(label, "server")] += 1
            elif status >= 400:
                self.errors[(label, "client")] += 1

    def error(self, path: str, kind: str) -> None:
        """An error the status alone does not tell (an exception turned into a 422)."""
        with self._lock:
            self.errors[(path_label(path), kind)] += 1

    def cache_result(self, hit: bool) -> None:
        """Whether /v1/resolve was answered from the answer cache."""
        with self._lock:
            self.cache["hit" if hit else "miss"] += 1

    def render(self, info: Dict[str, str]) -> str:
        """The exposition text; `info` labels the worker's doctor_service_info series (version, matrix, etag)."""
        out: List[str] = []
        labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(info.items()))
        out += ["# HELP doctor_service_info The service and the matrix it serves.", "# TYPE doctor_service_info gauge",
                f"doctor_service_info{{{labels}}} 1"]
        with self._lock:
            out += ["# HELP doctor_service_requests_total Requests answered, by method, path and status.",
                    "# TYPE doctor_service_requests_total counter"]
            for (m, p, s), n in sorted(self.requests.items()):
                out.append(f'doctor_service_requests_total{{method="{m}",path="{p}",status="{s}"}} {n}')
            out += ["# HELP doctor_service_errors_total Error answers: client (4xx), server (5xx), exception (caught).",
                    "# TYPE doctor_service_errors_total counter"]
            for (p, k), n in sorted(self.errors.items()):
                out.append(f'doctor_service_errors_total{{path="{p}",kind="{k}"}} {n}')
            out += ["# HELP doctor_service_request_duration_seconds Time from request to the last byte handed to the server.",
                    "# TYPE doctor_service_request_duration_seconds histogram"]
            for p, h in sorted(self.hist.items()):
                acc = 0.0
                for edge, count in zip(BUCKETS, h):
                    acc += count
                    out.append(f'doctor_service_request_duration_seconds_bucket{{path="{p}",le="{edge}"}} {int(acc)}')
                out.append(f'doctor_service_request_duration_seconds_bucket{{path="{p}",le="+Inf"}} {int(h[-1])}')
                out.append(f'doctor_service_request_duration_seconds_sum{{path="{p}"}} {h[-2]:.6f}')
                out.append(f'doctor_service_request_duration_seconds_count{{path="{p}"}} {int(h[-1])}')
            out += ["# HELP doctor_service_answer_cache_total /v1/resolve answers from the answer cache (hit) or computed (miss).",
                    "# TYPE doctor_service_answer_cache_total counter"]
            for k in ("hit", "miss"):
                out.append(f'doctor_service_answer_cache_total{{result="{k}"}} {self.cache[k]}')
        return "\n".join(out) + "\n"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
