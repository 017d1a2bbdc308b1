"""Safe by default: weights load without running pickled code, and servers listen on this machine only."""

from __future__ import annotations

import shutil
import sys

import pytest
import torch
from conftest import PROJECT, free_port, isolated_env, listening_addresses, running_server

from aivsreal.model import WEIGHTS_FILE, load_saved_model


class Payload:
    """What a hostile weights file could carry: pickled code that runs on load."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))  # creates a file if it ever runs


def test_weights_with_pickled_code_are_refused_and_the_code_never_runs(tmp_path, tiny_model_dir):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    marker = tmp_path / "pwned"
    state = torch.load(folder / WEIGHTS_FILE, weights_only=True)
    torch.save({**state, "extra": Payload(marker)}, folder / WEIGHTS_FILE)
    with pytest.raises(Exception, match="(?i)weights only|unpickl|unsupported global"):
        load_saved_model(folder)
    assert not marker.exists()


@pytest.mark.parametrize("server", ["webapp", "guarded"])
def test_servers_listen_on_loopback_only_unless_told_otherwise(server, tiny_model_dir, tiny_champion_store):
    port = free_port()
    env = isolated_env()
    if server == "webapp":  # no --server.address: .streamlit/config.toml decides
        env["AIVSREAL_MODEL"] = str(tiny_model_dir)
        command = [shutil.which("streamlit") or "streamlit", "run", "webapp/app.py", "--server.headless", "true",
                   "--server.port", str(port)]  # fmt: skip
        health = "/_stcore/health"
    else:  # python -m aivsreal.serving.server without -H
        env["MLFLOW_TRACKING_URI"] = tiny_champion_store
        command = [sys.executable, "-m", "aivsreal.serving.server", "-p", str(port)]
        health = "/ping"
    with running_server(command, port, health, PROJECT, env, timeout=90):
        assert listening_addresses(port) == {"127.0.0.1"}
