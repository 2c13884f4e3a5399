"""Load on the explorer (``panda serve``): concurrent and sequential edit requests on 127.0.0.1.

The server runs in this process (uvicorn in a thread, as `panda serve` runs it) on a model fitted here; clients are
threads with their own connections. Stops by itself.

    python benchmarks/serve_load.py            # -> benchmarks/serve_load.md
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from common import device_label, table

import panda
from panda.features import FeatureSource
from panda.model import PandA
from panda.serve import MAX_WAITING, allowed_hosts, create_app, server_config

HERE = Path(__file__).resolve().parent


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def request(url: str) -> tuple[int, float]:
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            r.read()
            code = r.status
    except urllib.error.HTTPError as err:
        code = err.code
    except OSError:
        code = -1  # connection refused or reset
    return code, time.perf_counter() - t


def summary(name: str, results: list[tuple[int, float]], rss: tuple[float, float], wall: float) -> list[str]:
    ok = sorted(t for c, t in results if c == 200)
    shed = sum(c == 503 for c, _ in results)
    errors = sum(c not in (200, 503) for c, _ in results)

    def pct(q):
        return f"{1000 * ok[min(len(ok) - 1, int(q * len(ok)))]:.0f}" if ok else "-"
    return [name, str(len(results)), str(len(ok)), str(shed), str(errors), pct(0.5), pct(0.95), pct(1.0),
            f"{wall:.1f}", f"{rss[0]:.0f} -> {rss[1]:.0f}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrent", type=int, default=200)
    ap.add_argument("--sequential", type=int, default=2000)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--out", default=str(HERE / "serve_load.md"))
    args = ap.parse_args()
    g = panda.load_generator("dcgan-celeba")
    model = PandA(rank_parts=12).fit(FeatureSource(g, "relu2", range(2000), progress=False))
    app = create_app(model, g, hosts=allowed_hosts("127.0.0.1", args.port))
    import uvicorn
    server = uvicorn.Server(server_config(app, "127.0.0.1", args.port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{args.port}/api/edit.png"
    request(f"{base}?seed=0&part=1&appearance=2&alpha=1")  # warm-up
    rows = []

    def url(i: int) -> str:
        return f"{base}?seed={i}&part={i % 12}&appearance={i % 7}&alpha=1.5"

    def together(name: str, client) -> None:
        """``client(i)`` -> (status, seconds) from ``args.concurrent`` threads released at the same moment."""
        results: list[tuple[int, float]] = []
        barrier = threading.Barrier(args.concurrent)

        def run(i: int) -> None:
            barrier.wait()
            results.append(client(i))
        before, t = rss_mb(), time.perf_counter()
        threads = [threading.Thread(target=run, args=(i,)) for i in range(args.concurrent)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        rows.append(summary(name, results, (before, rss_mb()), time.perf_counter() - t))

    def patient(i: int) -> tuple[int, float]:
        """Retry a 503 after a short wait, as the explorer's page does."""
        t0 = time.perf_counter()
        for attempt in range(200):
            code, _ = request(url(i))
            if code != 503:
                break
            time.sleep(0.05 * (1 + attempt % 4))
        return code, time.perf_counter() - t0

    # all at once, each client its own seed, as many people opening the page would
    together(f"{args.concurrent} concurrent, no retry", lambda i: request(url(i)))
    together(f"{args.concurrent} concurrent, retrying 503s", patient)

    results, before, t = [], rss_mb(), time.perf_counter()
    for i in range(args.sequential):
        results.append(request(url(i)))
        if (i + 1) % 500 == 0:
            print(f"  {i + 1} sequential requests", file=sys.stderr, flush=True)
    rows.append(summary(f"{args.sequential} sequential", results, (before, rss_mb()), time.perf_counter() - t))
    server.should_exit = True
    thread.join(timeout=10)

    import torch
    lines = ["# Explorer under load", "",
             f"Made by `python benchmarks/serve_load.py` on {device_label('cpu')}, torch {torch.__version__}: "
             f"dcgan-celeba, layer relu2, R_S = 12; each request one 64 px edit drawn as a 256 px PNG, served on "
             f"127.0.0.1 by uvicorn in the same process as the clients (threads, one connection each). The server "
             f"generates one picture at a time and lets at most {MAX_WAITING} requests wait; others get 503 at once "
             "(the page retries them). Latency of answered requests (200), in ms; the retrying row's latency is from "
             "the first attempt to the picture.", ""]
    lines += table(["load", "requests", "200", "503 (shed)", "errors", "p50 ms", "p95 ms", "max ms", "wall s", "RSS MB"], rows)
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
