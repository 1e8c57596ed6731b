"""Load on `doctor serve`: p50/p99 latency and throughput of POST /v1/resolve answered from the matrix.

One uvicorn worker pinned to core 0 (taskset), the load generator wrk (compiled, from the distribution's
packages) pinned to core 1, on loopback. The document is realistic: the recorded S4 world (76 distributions
of an Unsloth stack with every Requires-Dist line, torch and xformers builds, an A100, ~76 KB), as the client
sends it. Two cases:

  cached    the same document again and again (a fleet of identical machines: a course's notebooks, a cluster's
            nodes): the worker answers from its answer cache (keyed by the request's bytes)
  computed  every request different (a GPU's memory_mib counts up, never repeating across runs; the cache keeps 256):
            validation, the rules twice (the findings, and the offline plan's would-be environment), the pins, the plan

Debian's wrk is the original (no wrk2 `-R`; oha is not packaged for Debian 12): a fixed offered rate is made
with wrk's Lua `delay()` hook and a wall clock through LuaJIT's ffi: request k is due at start + k/rate, a
connection waits for its slot, and when the server falls behind the free connections catch up (open loop,
capped at C connections). wrk times a request from its send, not from its slot, so a server that falls
behind is under-reported (coordinated omission): the achieved rate next to the offered one shows when that
happens. The "max" rows run without delay (closed loop, C connections).

    python benchmarks/service_load.py [--duration 10] [--rates 250,500,750,1000] [--computed-rates 10,20,40,80,160]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("%(body)s", "rb"); local body = f:read("*a"); f:close()
local vary = %(vary)s
local prefix, suffix
if vary then
  local s, e = string.find(body, '"memory_mib": 81920', 1, true)
  prefix = string.sub(body, 1, s - 1) .. '"memory_mib": '
  suffix = string.sub(body, e + 1)
end
-- a fixed offered rate: each request gets the next slot of a schedule (1000/rate ms apart); a connection
-- waits for its slot, and when the server falls behind, the free connections catch up (open loop, capped at C)
local step = %(step_ms)s
local n = 0
if step > 0 then
  local ffi = require("ffi")
  ffi.cdef[[ typedef struct { long tv_sec; long tv_usec; } s2_timeval; int gettimeofday(s2_timeval *tv, void *tz); ]]
  local tv = ffi.new("s2_timeval")
  local function now_ms() ffi.C.gettimeofday(tv, nil); return tonumber(tv.tv_sec) * 1000 + tonumber(tv.tv_usec) / 1000 end
  local next_at = nil
  function delay()
    local t = now_ms()
    if next_at == nil then next_at = t end
    next_at = next_at + step
    local d = next_at - t
    if d < 0 then return 0 end
    return math.floor(d)
  end
end
if vary then
  function request()
    n = n + 1
    return wrk.format(nil, nil, nil, prefix .. tostring(%(offset)s + n) .. suffix)
  end
else
  wrk.body = body  -- one request string, built once by wrk
end
function done(summary, latency, requests)
  local out = {
    requests = summary.requests, duration_us = summary.duration,
    errors = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    p50_us = latency:percentile(50), p90_us = latency:percentile(90), p99_us = latency:percentile(99),
    p999_us = latency:percentile(99.9), max_us = latency.max, mean_us = latency.mean,
  }
  local parts = {}
  for k, v in pairs(out) do table.insert(parts, string.format('"%%s": %%s', k, v)) end
  io.write("RESULT {" .. table.concat(parts, ", ") .. "}\n")
end
"""


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(port: int, log: Path, cores: str, request_log: bool) -> "subprocess.Popen[bytes]":
    import httpx

    cmd = ["taskset", "-c", cores, sys.executable, "-m", "doctor", "serve", "--port", str(port), "--workers", "1"]
    if not request_log:
        cmd.append("--no-request-log")
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server did not start: {log.read_text()[-1000:]}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_RUNS = [0]


def wrk(url: str, body: Path, rate: Optional[float], connections: int, duration: int, vary: bool, tmp: Path,
        core: str, server_pid: int) -> Dict[str, Any]:
    """One wrk run; rate None: as fast as the connections go. Also the server's CPU time per request: what one
    request costs a core whatever else runs on it (the latency figures depend on what shares the core)."""
    _RUNS[0] += 1
    step = 0 if rate is None else 1000.0 / rate  # one wrk thread holds the schedule
    script = tmp / "load.lua"
    script.write_text(LUA % {"body": body, "vary": "true" if vary else "false", "step_ms": step,
                             "offset": 1_000_000 * _RUNS[0]})
    cpu0 = cpu_seconds(server_pid)
    cmd = ["taskset", "-c", core, "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "5s", "-s", str(script),
           url + "/v1/resolve"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"wrk gave no result: {out.stdout[-800:]} {out.stderr[-800:]}")
    r = json.loads(line[len("RESULT "):])
    r["server_cpu_ms_per_request"] = (cpu_seconds(server_pid) - cpu0) * 1000 / max(1, r["requests"])
    r["offered"] = rate
    r["connections"] = connections
    r["achieved"] = r["requests"] / (r["duration_us"] / 1e6)
    return r


def row(case: str, r: Dict[str, Any]) -> str:
    offered = "max" if r["offered"] is None else f"{r['offered']:.0f}"
    return (f"| {case} | {offered} | {r['connections']} | {r['achieved']:.0f} | {r['p50_us'] / 1000:.2f} | "
            f"{r['p99_us'] / 1000:.2f} | {r['p999_us'] / 1000:.2f} | {r['errors']} | "
            f"{r['server_cpu_ms_per_request']:.2f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per run")
    ap.add_argument("--rates", default="250,500,750,1000", help="offered rates for the cached case (req/s)")
    ap.add_argument("--computed-rates", default="10,20,40,80,160", help="offered rates for the computed case (req/s)")
    ap.add_argument("--scenario", default="S4", help="recorded world (tests/resolve/index/data/scenarios.json)")
    ap.add_argument("--no-request-log", action="store_true", help="run the server without its JSON request lines")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    from tests.service.worlds import recorded_doc

    doc = recorded_doc(args.scenario)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        body = tmp / "body.json"
        body.write_text(json.dumps(doc))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start(port, tmp / "server.log", "0", not args.no_request_log)
        results: List[Dict[str, Any]] = []
        try:
            import httpx

            first = httpx.post(url + "/v1/resolve", content=body.read_bytes(), timeout=30)
            assert first.status_code == 200, first.text[:300]
            impl = "httptools" if _has("httptools") else "h11"
            loop = "uvloop" if _has("uvloop") else "asyncio"
            print(f"uvicorn http={impl} loop={loop}; document: {args.scenario}, {len(doc['facts']['distributions'])} distributions, "
                  f"{body.stat().st_size} bytes; answer {len(first.content)} bytes; "
                  f"request log {'off' if args.no_request_log else 'on'}", flush=True)
            print("| case | offered req/s | conns | achieved req/s | p50 ms | p99 ms | p99.9 ms | errors | server CPU ms/req |")
            print("|---|---|---|---|---|---|---|---|---|", flush=True)
            plan = [("cached", float(x), 8) for x in args.rates.split(",") if x] + [("cached", None, 4)]
            plan += [("computed", float(x), 4) for x in args.computed_rates.split(",") if x] + [("computed", None, 2)]
            for case, rate, conns in plan:
                r = wrk(url, body, rate, conns, args.duration, case == "computed", tmp, "1", server.pid)
                r["case"] = case
                results.append(r)
                print(row(case, r), flush=True)
            metrics = httpx.get(url + "/metrics", timeout=10).text
            server_errors = sum(float(x.rsplit(" ", 1)[1]) for x in metrics.splitlines()
                                if x.startswith("doctor_service_requests_total") and 'status="5' in x)
            cache = [x for x in metrics.splitlines() if x.startswith("doctor_service_answer_cache_total")]
            print(f"server 5xx: {server_errors:.0f}; {'; '.join(cache)}")
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        if args.json:
            Path(args.json).write_text(json.dumps({"scenario": args.scenario, "results": results,
                                                   "load_average": os.getloadavg()}, indent=2))
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (other processes share these 2 cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
