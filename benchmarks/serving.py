"""Serving latency: one image through a real `mlflow models serve` against the raw forward pass, on
eager PyTorch, ONNX Runtime and (for a model trained with `model.int8: true`) ONNX Runtime int8, in the
same run (AIVSREAL_ENGINE set for each server).

    python benchmarks/serving.py             # serves the champion (models:/ai-vs-real@champion) from ./mlflow.db
    python benchmarks/serving.py --image ../shared/facebench/dev/ai/fake_1.png   # after `make facebench`

Targets: median request time <= raw single-image forward time + 30 ms on PyTorch (issue 5), + 15 ms on
ONNX Runtime (issue 16), float or int8.
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
from timing import call_seconds, percentile  # benchmarks/timing.py

from aivsreal.engines import ENGINE_ENV
from aivsreal.model import ModelConfig
from aivsreal.predictor import Predictor
from aivsreal.serving.artifacts import download_model, saved_model_folder
from aivsreal.tracking import default_model_uri


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def forward_times(predictor, tensor) -> list[float]:
    """Milliseconds of 100 single-image forward passes on the predictor's engine (after one warm-up)."""
    with torch.inference_mode():
        return [1000 * seconds for seconds in call_seconds(lambda: predictor.network(tensor), 100)]


def request_times(model_uri: str, image_path: Path, engine: str) -> list[float]:
    """Milliseconds of 100 one-image requests to a real `mlflow models serve` running on `engine`."""
    port = free_port()
    env = dict(os.environ, **{ENGINE_ENV: engine})
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
            answer = session.post(f"{url}/invocations", json=payload)
            answer.raise_for_status()
        assert answer.json()["predictions"][0]["engine"] == engine, answer.text  # the engine asked for answered

        def post():
            session.post(f"{url}/invocations", json=payload).raise_for_status()

        return [1000 * seconds for seconds in call_seconds(post, 100, warmup=0)]
    finally:
        server.terminate()
        server.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model URI to serve (default: the champion, tracking.default_model_uri())")
    parser.add_argument("--image", type=Path, help="image to send (default: the first sample AI face)")
    args = parser.parse_args()
    model_uri = args.model or default_model_uri()
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    image_path = args.image or next(Path("data/sample/ai").glob("*.png"))
    rows = []
    folder = saved_model_folder(download_model(model_uri))  # once: every engine's predictor reads these files
    engines = [("torch", 30), ("onnx", 15)]  # targets: issue 5 (PyTorch), issue 16 (ONNX Runtime)
    if ModelConfig.read(folder).int8_file:
        engines.append(("onnx-int8", 15))
    for engine, slack in engines:
        os.environ[ENGINE_ENV] = engine
        predictor = Predictor.from_dir(folder)  # the very model the server loads, on the same engine
        tensor = predictor.transform(predictor.load(image_path)).unsqueeze(0)
        forward, served = forward_times(predictor, tensor), request_times(model_uri, image_path, engine)
        rows.append((engine, forward, served, slack))
    os.environ.pop(ENGINE_ENV)
    config = predictor.config
    print(f"# {model_uri}, image {image_path} ({config.eval_crop} px network input, filter {config.input_filter}), "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print("| engine | measurement | median ms | p99 ms | target |")
    print("|---|---|---|---|---|")
    for engine, forward_ms, request_ms, slack in rows:
        forward, median = statistics.median(forward_ms), statistics.median(request_ms)
        print(f"| {engine} | raw single-image forward | {forward:.1f} | {percentile(forward_ms, 99):.1f} | |")
        print(f"| {engine} | request through mlflow models serve | {median:.1f} | {percentile(request_ms, 99):.1f} | "
              f"<= {forward + slack:.1f} (forward + {slack}) |")  # fmt: skip
        print(f"| {engine} | overhead (median request - median forward) | {median - forward:.1f} | | <= {slack} |")


if __name__ == "__main__":
    main()
