"""A bounded load test of a running model server: N concurrent clients, M requests, loopback only.

    make serve &                                      # or: python -m aivsreal.serving.server &
    python benchmarks/load.py --url http://127.0.0.1:5001 --clients 4 --requests 1000

Each request posts one real image (`--image`, default the first sample face) in the
`dataframe_split` format, on a keep-alive connection per client. Prints requests per second,
latency percentiles and the count of errors (any answer but 200 with one prediction, or a
connection failure). `tests/test_serving_fuzz.py` runs the same function against a real
`mlflow models serve` and requires zero errors.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import threading
import time
from pathlib import Path

import requests


def hammer(url: str, image: bytes, clients: int = 4, total: int = 1000, timeout: float = 30) -> dict:
    """Send `total` single-image requests from `clients` threads; returns throughput, latencies and errors."""
    payload = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(image).decode()]]}}
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    shares = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]

    def client(count: int) -> None:
        with requests.Session() as session:
            for _ in range(count):
                start = time.perf_counter()
                try:
                    answer = session.post(f"{url}/invocations", json=payload, timeout=timeout)
                    ok = answer.status_code == 200 and len(answer.json()["predictions"]) == 1
                    problem = "" if ok else f"HTTP {answer.status_code}: {answer.text[:200]}"
                except requests.RequestException as error:
                    problem = f"{type(error).__name__}: {error}"
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    if problem:
                        errors.append(problem)

    threads = [threading.Thread(target=client, args=(n,)) for n in shares]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "requests": len(latencies), "clients": clients, "errors": len(errors), "first_errors": errors[:3],
        "seconds": wall, "per_second": len(latencies) / wall, "p50_ms": 1000 * cuts[49], "p99_ms": 1000 * cuts[98],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:5001")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--image", type=Path, help="image file to send (default: the first sample face)")
    args = parser.parse_args()
    image = args.image or sorted(Path("data/sample/ai").glob("*.png"))[0]
    result = hammer(args.url, image.read_bytes(), args.clients, args.requests)
    print(f"# {args.url}, {image} ({image.stat().st_size:,} bytes)")
    print("| clients | requests | errors | requests/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    print(f"| {result['clients']} | {result['requests']} | {result['errors']} | {result['per_second']:.1f} | "
          f"{result['p50_ms']:.1f} | {result['p99_ms']:.1f} |")  # fmt: skip
    for problem in result["first_errors"]:
        print("error:", problem)


if __name__ == "__main__":
    main()
