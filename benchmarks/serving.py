"""Serving latency: one image through a real `mlflow models serve` against the raw forward pass.

    python benchmarks/serving.py             # serves the champion (models:/ai-vs-real@champion) from ./mlflow.db
    python benchmarks/serving.py --image ../shared/facebench/dev/ai/fake_1.png   # after `make facebench`

Target (issue 5): median request time <= raw single-image forward time + 30 ms.
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests
import torch

from aivsreal.serving.artifacts import load_predictor
from aivsreal.tracking import default_model_uri


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model URI to serve (default: the champion, tracking.default_model_uri())")
    parser.add_argument("--image", type=Path, help="image to send (default: the first sample AI face)")
    args = parser.parse_args()
    model_uri = args.model or default_model_uri()
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    image_path = args.image or next(Path("data/sample/ai").glob("*.png"))
    predictor = load_predictor(model_uri)  # the very model the server loads
    tensor = predictor.transform(predictor.load(image_path)).unsqueeze(0)
    with torch.inference_mode():
        predictor.model(tensor)
        forward_ms = []
        for _ in range(50):
            started = time.perf_counter()
            predictor.model(tensor)
            forward_ms.append((time.perf_counter() - started) * 1000)

    port = free_port()
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    server = subprocess.Popen(
        ["mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if requests.get(f"{url}/ping", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        payload = {
            "dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(image_path.read_bytes()).decode()]]}
        }
        session = requests.Session()  # keep-alive, as a real client would
        for _ in range(5):
            session.post(f"{url}/invocations", json=payload).raise_for_status()
        request_ms = []
        for _ in range(100):
            started = time.perf_counter()
            session.post(f"{url}/invocations", json=payload).raise_for_status()
            request_ms.append((time.perf_counter() - started) * 1000)
    finally:
        server.terminate()
        server.wait(timeout=15)
    forward = statistics.median(forward_ms)
    median = statistics.median(request_ms)
    p99 = sorted(request_ms)[98]
    config = predictor.config
    print(f"# {model_uri}, image {image_path} ({config.eval_crop} px network input, filter {config.input_filter}), "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print("| measurement | median ms | p99 ms | target |")
    print("|---|---|---|---|")
    print(f"| raw single-image forward | {forward:.1f} | {sorted(forward_ms)[49]:.1f} | |")
    print(f"| request through mlflow models serve | {median:.1f} | {p99:.1f} | <= {forward + 30:.1f} (forward + 30) |")
    print(f"| overhead (median request - median forward) | {median - forward:.1f} | | <= 30 |")


if __name__ == "__main__":
    main()
