"""Health and memory probe of a server, run as its own process during load tests.

``python -m tests.load.probe URL PID OUT`` asks ``URL/_stcore/health`` every 0.25 s and reads
the resident memory of process ``PID``, appending ``seconds_since_start latency_s rss_bytes``
lines to ``OUT`` until it is terminated. A process of its own, so that the load clients'
work does not delay (and inflate) the probe's own timing.
"""

from __future__ import annotations

import sys
import time
import urllib.request


def _latency(url: str) -> float:
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5.0) as response:
            response.read()
            if response.status != 200:
                return float("inf")
    except OSError:
        return float("inf")
    return time.perf_counter() - t0


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def main(url: str, pid: int, out: str) -> None:
    start = time.perf_counter()
    with open(out, "a", buffering=1) as f:
        while True:
            tick = time.perf_counter()
            f.write(f"{tick - start:.3f} {_latency(url):.4f} {_rss(pid)}\n")
            time.sleep(max(0.0, 0.25 - (time.perf_counter() - tick)))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
