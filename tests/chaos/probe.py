"""Polls ``GET /healthz`` from a process of its own, so that the harness's own load cannot
inflate what it measures; on SIGTERM prints one JSON line of figures and exits.

Each probe opens a new connection, as a monitoring system or a kubelet would.

    python -m tests.chaos.probe http://127.0.0.1:PORT/healthz [INTERVAL_S]
"""

from __future__ import annotations

import http.client
import json
import signal
import sys
import time
from types import FrameType
from urllib.parse import urlsplit


def main() -> None:
    url = urlsplit(sys.argv[1])
    interval = float(sys.argv[2]) if len(sys.argv) > 2 else 0.02
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    latencies: list[float] = []
    failures: list[str] = []
    while not stopping:
        began = time.perf_counter()
        try:
            conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=5)
            conn.request("GET", url.path)
            answer = conn.getresponse()
            answer.read()
            conn.close()
            if answer.status != 200:
                failures.append(f"status {answer.status}")
        except OSError as exc:
            failures.append(repr(exc))
        latencies.append(time.perf_counter() - began)
        time.sleep(interval)
    latencies.sort()
    figures = {
        "probes": len(latencies),
        "max_ms": round(latencies[-1] * 1000, 1) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1) if latencies else None,
        "median_ms": round(latencies[len(latencies) // 2] * 1000, 1) if latencies else None,
        "over_100ms": sum(1 for x in latencies if x > 0.1),
        "failures": failures[:10],
        "failure_count": len(failures),
    }
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
