"""The split on a data folder holding every kind of bad file we know of (tests/helpers_badfiles.py).

Each bad file must be named in the summary with its reason, each good one kept in exactly
one manifest and readable back by training, the counts must add up, nothing may crash or
hang, and the data folder must be left exactly as it was. `python tests/helpers_badfiles.py`
lists the corpus: 26 bad files of 25 kinds, 38 good files of 21 kinds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading

import pytest
import yaml
from conftest import PROJECT
from helpers_badfiles import Corpus, make_bad_data_corpus, reads_past_permissions, snapshot

from aivsreal.images import DEFAULT_MAX_PIXELS
from aivsreal.manifests import read_manifest, write_manifest
from aivsreal.split import SPLITS, scan_dataset, split_counts, split_manifest
from aivsreal.training import ManifestDataset

CLASSES = ["ai", "real"]
FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}


@pytest.fixture
def corpus(tmp_path):
    corpus = make_bad_data_corpus(tmp_path / "project" / "data" / "raw")
    yield corpus
    corpus.restore_permissions()  # so that pytest can clean up tmp_path as any user


def within(seconds: float, function):
    """function(), failing the test (rather than hanging the run) if it takes longer: a pipe or /dev/zero can."""
    result, error = [], []

    def call():
        try:
            result.append(function())
        except BaseException as exception:  # re-raised in the test's thread
            error.append(exception)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s: a file made it block or read forever"
    if error:
        raise error[0]
    return result[0]


def check_outcomes(corpus: Corpus, privileged: bool, kept: list[tuple[str, str]], rejected: list[dict]) -> None:
    """kept: (path, label) per manifest row; rejected: the summary's entries, paths relative to the corpus root."""
    expected = corpus.expected(privileged)
    kept_paths = [path for path, _ in kept]
    assert sorted(kept_paths) == sorted(corpus.kept(privileged)), "every good file kept, once, and no bad one"
    reasons = {entry["path"]: entry["reason"] for entry in rejected}
    assert len(reasons) == len(rejected), "a file is named twice in the summary"
    assert set(reasons) == set(corpus.rejected(privileged)), "every bad file named in the summary, and only those"
    wrong = {
        path: (f.kind, f.reason, reasons[path])
        for path, f in corpus.rejected(privileged).items()
        if f.reason.lower() not in reasons[path].lower()
    }
    assert not wrong, f"reasons without their keyword (kind, keyword, reason): {wrong}"
    assert all(label == expected[path].label for path, label in kept)
    assert all(entry["label"] == expected[entry["path"]].label for entry in rejected)
    assert len(kept) + len(rejected) == len(expected), "kept + left out = entries under the class folders"


def check_manifests_load(rows: list[dict[str, str]], corpus: Corpus, strip: str = "") -> None:
    """Every manifest row reads back through training's dataset as an RGB image of the expected size."""
    sizes = {f.path: f.size for f in corpus.files}
    dataset = ManifestDataset(rows, CLASSES, transform=lambda image: image, max_pixels=DEFAULT_MAX_PIXELS)
    for index, row in enumerate(rows):
        image, target = dataset[index]
        assert image.mode == "RGB" and image.size == sizes[row["path"].removeprefix(strip)], row["path"]
        assert CLASSES[target] == row["label"]


def test_library_split_on_the_bad_data_corpus(corpus, tmp_path, monkeypatch):
    # As root this process reads chmod-000 files (CAP_DAC_OVERRIDE), so they are kept here, as
    # training would read them too; the stage test below runs without that privilege.
    privileged = reads_past_permissions(corpus)
    before = snapshot(corpus.root)

    records, rejected = within(120, lambda: scan_dataset(corpus.root, CLASSES, DEFAULT_MAX_PIXELS, root=corpus.root))
    splits = split_manifest(records, FRACTIONS, seed=0)

    check_outcomes(corpus, privileged, [(r.path, r.label) for r in records], [vars(r) for r in rejected])
    in_splits = [r.path for name in SPLITS for r in splits[name]]
    assert sorted(in_splits) == sorted(r.path for r in records), "every kept file in exactly one split"
    split_of = {r.path: name for name in SPLITS for r in splits[name]}
    assert split_of["real/copy_of_plain_00.png"] == split_of["real/plain_00.png"]
    counts = split_counts(splits, rejected)
    assert counts["total_kept"] + counts["total_rejected"] == len(corpus.expected(privileged))

    for name in SPLITS:  # through the CSV and back, as training reads it (names with a newline, quotes, emoji)
        write_manifest(tmp_path / f"{name}.csv", splits[name])
    rows = [row for name in SPLITS for row in read_manifest(tmp_path / f"{name}.csv")]
    assert sorted(row["path"] for row in rows) == sorted(in_splits)
    monkeypatch.chdir(corpus.root)
    check_manifests_load(rows, corpus)

    assert snapshot(corpus.root) == before, "the split changed the data folder"


def without_permission_bypass(corpus: Corpus) -> tuple[list[str], bool]:
    """A command prefix that drops root's permission bypass, and whether the command still reads past permissions.

    Root keeps its uid but loses CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (util-linux `setpriv`), so it
    is refused a chmod-000 file like anyone else, yet still reaches pytest's root-only tmp_path as owner.
    """
    if os.geteuid() != 0:
        return [], reads_past_permissions(corpus)
    setpriv = shutil.which("setpriv")
    if setpriv:
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]
        probe = [*prefix, sys.executable, "-c", "import sys; open(sys.argv[1], 'rb')", str(corpus.locked[0])]
        if subprocess.run(probe, capture_output=True).returncode != 0:
            return prefix, False
    return [], True  # root with no way to drop the bypass: chmod-000 files are readable, and expected kept


def test_split_stage_on_the_bad_data_corpus(corpus, monkeypatch):
    """`python -m pipeline.split`, as DVC runs it, without root's permission bypass where it can be dropped."""
    project = corpus.root.parent.parent
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["data"]["dir"] = "data/raw"
    params["model"]["min_side"] = 1  # the corpus's good files are 8-16 px: this test is about files, not sizes
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    prefix, privileged = without_permission_bypass(corpus)
    before = snapshot(corpus.root)

    result = subprocess.run(
        [*prefix, sys.executable, "-m", "pipeline.split", "--params", "params.yaml"],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr[-4000:]
    assert "Traceback" not in result.stderr
    summary = json.loads((project / "data/processed/split_summary.json").read_text())
    rejected = [{**entry, "path": entry["path"].removeprefix("data/raw/")} for entry in summary["rejected"]]
    rows = {name: read_manifest(project / f"data/processed/{name}.csv") for name in SPLITS}
    kept = [(row["path"].removeprefix("data/raw/"), row["label"]) for name in SPLITS for row in rows[name]]
    check_outcomes(corpus, privileged, kept, rejected)
    for entry in rejected:  # each left-out file is also named in the stage's log
        assert f"left out data/raw/{entry['path']}: " in result.stderr
    metrics = json.loads((project / "metrics/split.json").read_text())
    assert metrics == summary["counts"]
    assert metrics["total_kept"] == sum(sum(metrics[name].values()) for name in SPLITS) == len(kept)
    assert metrics["total_kept"] + metrics["total_rejected"] == len(corpus.expected(privileged))

    monkeypatch.chdir(project)  # manifest paths are relative to the project, as in the real pipeline
    check_manifests_load([row for name in SPLITS for row in rows[name]], corpus, strip="data/raw/")
    assert snapshot(corpus.root) == before, "the split stage changed the data folder"


def test_corpus_lists_everything_it_wrote(corpus):
    """The expectations cover the whole tree: no entry on disk the tests would not account for."""
    expected = {f.path for f in corpus.files}
    folders = {p for p in expected if os.path.isdir(corpus.root / p) and not os.path.islink(corpus.root / p)}
    for relative in snapshot(corpus.root):
        shown = os.fsencode(relative).decode("utf-8", "backslashreplace")
        if shown in expected or relative.startswith("not-a-class"):
            continue
        inside = any(shown.startswith(folder + "/") for folder in folders)
        parent_of = any(path.startswith(shown + "/") for path in expected)
        assert inside or parent_of, f"{shown} is on disk but not in the corpus's expectations"
    counts = corpus.counts()
    assert corpus.describe() in __doc__.replace("\n", " ")
    assert counts["bad_kinds"] >= 20 and counts["good_kinds"] >= 15
