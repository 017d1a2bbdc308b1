"""One run of the tiny pipeline that test_team_server.py checks twice (a pipeline run costs most of a minute):
a dataset as people publish it (own train/valid/test folders, own class folder names), logged to a team server
when one can run here. The module checks what the run did with the data (splits kept file for file, class map,
per-source results) and where it logged: PostgreSQL from Debian's packages, `mlflow server` on it with an
artifact root, the pipeline pointed at it only through MLFLOW_TRACKING_URI, then `mlflow models serve` of the
champion it registered.

Without PostgreSQL the run logs to the project's own sqlite store: the data checks still run, the team
checks skip and say why. PostgreSQL runs from a throwaway data folder on 127.0.0.1 and is stopped after;
`.ci/run` installs the package when it is missing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import free_port, running_server
from helpers_images import encode, random_image
from helpers_project import run, set_params, tiny_project

CLASS_MAP = {"fake": "ai", "FAKE": "ai", "real": "real", "REAL": "real"}
NO_POSTGRES = "PostgreSQL is not installed (apt-get install postgresql; .ci/run does it)"


def publish(root: Path) -> dict[str, set[str]]:
    """root/{train,valid,test}/{gan,diffusion}/{fake|FAKE,real|REAL}/: brighter fakes (something to learn),
    diffusion's folders in upper case as some sets have them. The files written per split, as manifest paths."""
    written: dict[str, set[str]] = {"train": set(), "val": set(), "test": set()}
    seed = 0
    for folder, split, n in (("train", "train", 8), ("valid", "val", 3), ("test", "test", 4)):
        for source in ("gan", "diffusion"):
            for name in ("fake", "real"):
                name = name.upper() if source == "diffusion" else name
                for i in range(n):
                    seed += 1
                    lift = 128 * (name.lower() == "fake")
                    image = random_image((32, 32), seed).point(lambda v, lift=lift: v // 2 + lift)
                    path = root / folder / source / name / f"{i}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(encode(image, "PNG"))
                    written[split].add(f"data/published/{folder}/{source}/{name}/{i}.png")
    return written


def postgres_bin() -> Path | None:
    """The folder with initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    candidates = [shutil.which("pg_ctl"), *sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)]
    for pg_ctl in filter(None, candidates):
        if Path(pg_ctl).with_name("initdb").exists():
            return Path(pg_ctl).resolve().parent
    return None


def why_no_team_server() -> str | None:
    """None when PostgreSQL can run here, else why not."""
    if postgres_bin() is None:
        return NO_POSTGRES
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without `runuser` to start PostgreSQL as another user"
    return None


@contextlib.contextmanager
def postgres_server():
    """A PostgreSQL server on 127.0.0.1 with a database `mlflow`; yields its SQLAlchemy URI."""
    reason = why_no_team_server()
    if reason is not None:
        pytest.skip(reason)
    bin_dir = postgres_bin()
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="aivsreal-pg-"))  # not under pytest's root-only tmp folder
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as Debian's `postgres` user
        shutil.chown(folder, user="postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port, data = free_port(), folder / "data"
    try:
        subprocess.run(
            [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust", "-E", "UTF8",
             "--no-sync"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w",
             "start"],
            check=True, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        import psycopg

        with psycopg.connect(f"postgresql://mlflow@127.0.0.1:{port}/postgres", autocommit=True) as connection:
            connection.execute("CREATE DATABASE mlflow")
        yield f"postgresql://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def team_server(root: Path):
    """PostgreSQL + `mlflow server` on it with an artifact root under `root`: yields url, database, artifacts."""
    with postgres_server() as database:
        port = free_port()
        artifacts = root / "artifacts"
        command = ["mlflow", "server", "--backend-store-uri", database, "--artifacts-destination", str(artifacts),
                   "-h", "127.0.0.1", "-p", str(port), "--workers", "1"]  # fmt: skip
        with running_server(command, port, "/health", root, dict(os.environ), timeout=120) as url:
            yield {"url": url, "database": database, "artifacts": artifacts}


@contextlib.contextmanager
def published_run(root: Path):
    """The published dataset through one `dvc repro` (against the team server when PostgreSQL is installed):
    yields repo, env, uri (where it logged), team (None without PostgreSQL, and no_team says why), output,
    written (files per split). test_team_server.py's module fixture `published_project` holds it."""
    with contextlib.ExitStack() as stack:
        no_team = why_no_team_server()
        team = stack.enter_context(team_server(root)) if no_team is None else None
        repo = root / "project"
        repo.mkdir()
        env = tiny_project(repo)
        written = publish(repo / "data" / "published")
        set_params(repo, {"data": {"dir": "data/published", "class_map": CLASS_MAP}})
        uri = f"sqlite:///{repo / 'mlflow.db'}"
        if team is not None:
            env, uri = env | {"MLFLOW_TRACKING_URI": team["url"]}, team["url"]
        output = run(["dvc", "repro"], repo, env)
        yield {"repo": repo, "env": env, "uri": uri, "team": team, "no_team": no_team, "output": output,
               "written": written}  # fmt: skip
