"""Scan a class-per-folder image tree and split it into train/val/test manifests.

Manifests list files (path, label, sha256, source), they never copy images. Files with the same
content hash always land in the same split, so a duplicate cannot leak from train to test.
When data.dir is a folder of sources (data.dir/<source>/<class>/), each file keeps its source's
name, and `split.test_sources` puts whole sources in the test split: an unseen-source test.

Every entry under a class folder is either kept (in exactly one manifest) or left out with
a reason, so kept + left out adds up to what is on disk. The data folder is only read.
What happens to the debatable cases, and why:

- Decodable images are kept whatever their layout: CMYK, 16-bit, palette with transparency
  (transparent pixels become white), EXIF-rotated (turned upright), and animated GIF/WebP
  (the first frame, which is what a viewer shows as the still). A complete 1x1 image is kept
  too: it decodes, and judging image quality is not the split's job.
- Left out: empty, truncated or corrupt files, files that are not images whatever their
  suffix (text, HTML), images over `split.max_pixels` (decompression bombs are turned away
  from their header, before any pixel is decoded), header-only files, files larger than any
  image within the pixel limit could be, pipes and devices (a link to /dev/zero), broken or
  looping links, hidden files and folders (names starting with "."), and the same bytes
  filed under two classes (no true label).
- A file name that is not valid UTF-8 (e.g. b"face\\xff.png" from an old Latin-1 system) is
  left out with a reason that says to rename it: the manifests are UTF-8 CSV that training,
  DVC and git all read, and no UTF-8 text can name that file. Paths in reasons show the
  undecodable bytes as backslash escapes ("face\\xff.png"), so the summary stays valid JSON.
  Names that are valid UTF-8 (accents, emoji, commas, quotes) are kept; the CSV quotes them.
- A file the split cannot read (no read permission) is left out with a reason saying to
  chmod it. Run as root, the split can read it, so it is kept: training, as the same user,
  reads it the same way.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
from collections import Counter, defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from aivsreal.images import BadImageError, decode_image, list_image_files, read_image_file
from aivsreal.layout import DatasetError, class_folders
from aivsreal.manifests import ImageRecord

SPLITS = ("train", "val", "test")

NOT_UTF8 = (
    "name is not valid UTF-8 (the file's or a folder's): rename it, e.g. `convmv -r -f latin1 -t utf-8 --notest`; "
    "the manifests are UTF-8 text and cannot name it"
)


@dataclass(frozen=True)
class Rejected:
    path: str
    label: str
    reason: str


def scan_dataset(
    data_dir: Path,
    class_names: list[str],
    max_pixels: int,
    root: Path | None = None,
    min_side: int = 1,
    class_map: dict[str, str] | None = None,
) -> tuple[list[ImageRecord], list[Rejected]]:
    """Read every file under data_dir's class folders, keeping those that decode as images with a smaller
    side of at least `min_side` pixels (the model refuses smaller inputs: model.min_side).

    A folder of sources, each with its own class folders (data_dir/<source>/<class>/, like
    facebench's dev/ and extra/), is read as the union of its sources; each record keeps its
    source's folder name (source "" in a flat data_dir/<class>/ tree). Class folders are named as
    class_names, or as `class_map` (data.class_map) maps them; records carry the class name.
    """
    records, rejected = _scan_classes(Path(data_dir), class_names, max_pixels, root, min_side, class_map or {})
    records, rejected = _drop_cross_class_duplicates(records, rejected)
    _check_every_class_kept(records, rejected, class_names, data_dir)
    return records, rejected


def scan_given_splits(
    folders: dict[str, Path],
    class_names: list[str],
    max_pixels: int,
    root: Path | None = None,
    min_side: int = 1,
    class_map: dict[str, str] | None = None,
) -> tuple[dict[str, list[ImageRecord]], list[Rejected]]:
    """The data's own splits (layout.given_split_folders), each read as scan_dataset reads a data folder:
    records per split, as given. The same bytes under two classes, in any splits, are left out."""
    scanned, rejected = {}, []
    for name, folder in folders.items():
        scanned[name], left_out = _scan_classes(folder, class_names, max_pixels, root, min_side, class_map or {})
        rejected += left_out
    every = [record for records in scanned.values() for record in records]
    conflicting = _conflicting_hashes(every)
    rejected += _conflict_rejections(every, conflicting)
    scanned = {name: [r for r in records if r.sha256 not in conflicting] for name, records in scanned.items()}
    for name, records in scanned.items():
        _check_every_class_kept(records, rejected, class_names, folders[name])
    return scanned, rejected


def _scan_classes(
    data_dir: Path, class_names: list[str], max_pixels: int, root: Path | None, min_side: int,
    class_map: dict[str, str],
) -> tuple[list[ImageRecord], list[Rejected]]:  # fmt: skip
    if not data_dir.is_dir():
        raise DatasetError(
            f"data folder {data_dir} does not exist: put one sub-folder per class "
            f"({', '.join(class_names)}) there, or set data.dir in params.yaml"
        )
    records: list[ImageRecord] = []
    rejected: list[Rejected] = []
    for label, folders in class_folders(data_dir, class_names, class_map).items():
        candidates, skipped = [], []
        for folder in folders:
            found, passed_over = list_image_files(folder)
            source = "" if folder.parent == data_dir else folder.parent.name
            candidates += [(path, source) for path in found]
            skipped += passed_over
        rejected += [Rejected(_escaped(_display(p, root)), label, reason) for p, reason in skipped]
        for path, source in tqdm(candidates, desc=f"checking {label}", unit="img", leave=False, disable=None):
            shown = _display(path, root)
            if not _is_utf8(shown):
                rejected.append(Rejected(_escaped(shown), label, NOT_UTF8))
                continue
            try:
                content = read_image_file(path, max_pixels)
                width, height = decode_image(content, max_pixels).size
                if min(width, height) < min_side:
                    raise BadImageError(f"too small: {width}x{height} px, below model.min_side ({min_side} px)")
            except BadImageError as error:
                rejected.append(Rejected(shown, label, str(error)))
                continue
            records.append(ImageRecord(shown, label, hashlib.sha256(content).hexdigest(), source))
    return records, rejected


def _check_every_class_kept(
    records: list[ImageRecord], rejected: list[Rejected], class_names: list[str], data_dir: Path
) -> None:
    """After dropping cross-class duplicates, which can empty a class: every class has an image."""
    for label in class_names:
        if not any(r.label == label for r in records):
            raise DatasetError(
                f"class folder {Path(data_dir) / label} has no usable images "
                f"({sum(r.label == label for r in rejected)} files left out, reasons below): "
                "add images or fix data.dir in params.yaml"
                + "".join(f"\n  {r.path}: {r.reason}" for r in rejected if r.label == label)[:2000]
            )


def _conflicting_hashes(records: list[ImageRecord]) -> set[str]:
    labels_by_hash: dict[str, set[str]] = defaultdict(set)
    for record in records:
        labels_by_hash[record.sha256].add(record.label)
    return {h for h, labels in labels_by_hash.items() if len(labels) > 1}


def _conflict_rejections(records: list[ImageRecord], conflicting: set[str]) -> list[Rejected]:
    return [
        Rejected(r.path, r.label, "same content appears under another class")
        for r in records
        if r.sha256 in conflicting
    ]


def _drop_cross_class_duplicates(
    records: list[ImageRecord], rejected: list[Rejected]
) -> tuple[list[ImageRecord], list[Rejected]]:
    """The same bytes filed under two classes have no true label: leave them all out."""
    conflicting = _conflicting_hashes(records)
    kept = [r for r in records if r.sha256 not in conflicting]
    return kept, rejected + _conflict_rejections(records, conflicting)


def split_manifest(
    records: list[ImageRecord], fractions: dict[str, float], seed: int, test_sources: Collection[str] = ()
) -> dict[str, list[ImageRecord]]:
    """Stratified, deterministic split by content hash: duplicates stay together.

    Every record of a source in `test_sources` goes to test, with every copy of its bytes found in
    other sources (no leak into training); the rest is split by `fractions` as if they were all there is."""
    check_test_sources(records, test_sources)
    held_out = {r.sha256 for r in records if r.source in test_sources}
    splits = _stratified(
        [r for r in records if r.sha256 not in held_out],
        fractions,
        seed,
        {r.label for r in records},
        bool(test_sources),
    )
    whole = sorted((r for r in records if r.sha256 in held_out), key=lambda r: (r.label, r.sha256, r.path))
    splits["test"] = whole + splits["test"]
    return splits


def given_split(
    scanned: dict[str, list[ImageRecord]], fractions: dict[str, float], seed: int, test_sources: Collection[str] = ()
) -> dict[str, list[ImageRecord]]:
    """The data's own splits kept file for file. A missing val split is carved from train by the
    train : val fractions, stratified by content hash with the usual seed. Sources in `test_sources`
    (and every copy of their bytes) go whole to test, from whichever split held them."""
    every = [record for records in scanned.values() for record in records]
    check_test_sources(every, test_sources)
    held_out = {r.sha256 for r in every if r.source in test_sources}
    splits = {name: [r for r in scanned.get(name, []) if r.sha256 not in held_out] for name in SPLITS}
    if "val" not in scanned:
        carve = {"train": fractions["train"], "val": fractions["val"]}
        labels = {r.label for r in every}
        carved = _stratified(
            splits["train"], {k: v / sum(carve.values()) for k, v in carve.items()}, seed, labels, False
        )
        splits["train"], splits["val"] = carved["train"], carved["val"]
    splits["test"] = [r for r in every if r.sha256 in held_out] + splits["test"]
    return splits


def cross_split_duplicates(splits: dict[str, list[ImageRecord]], examples: int = 5) -> dict:
    """Identical files in two or more splits (only given splits can have them: a random split keeps
    copies together): how many, per pair of splits, and a few examples (their paths, one per split)."""
    first_path: dict[str, dict[str, str]] = defaultdict(dict)
    for name in SPLITS:
        for record in splits[name]:
            first_path[record.sha256].setdefault(name, record.path)
    shared = [found for found in first_path.values() if len(found) > 1]
    pairs = Counter(f"{a}/{b}" for found in shared for a, b in itertools.combinations(found, 2))
    return {
        "images": len(shared),
        "pairs": dict(pairs),
        "examples": [list(found.values()) for found in shared[:examples]],
    }


def _stratified(
    records: list[ImageRecord], fractions: dict[str, float], seed: int, labels: set[str], held_out: bool
) -> dict[str, list[ImageRecord]]:
    """Each class's distinct contents shuffled with the seed and cut by `fractions`; a class of `labels`
    with too few images for every split (none, when only held-out sources have it) is an error."""
    names = tuple(name for name in SPLITS if name in fractions)
    splits: dict[str, list[ImageRecord]] = {name: [] for name in SPLITS}
    by_label: dict[str, dict[str, list[ImageRecord]]] = defaultdict(lambda: defaultdict(list))
    for record in sorted(records, key=lambda r: (r.label, r.sha256, r.path)):
        by_label[record.label][record.sha256].append(record)
    for label in sorted(labels):
        groups = sorted(by_label[label])  # hashes, sorted so the order does not depend on disk order
        random.Random(f"{seed}-{label}").shuffle(groups)
        counts = _split_counts(len(groups), fractions)
        if min(counts.values()) == 0:
            needed = next(n for n in range(len(names), 10_000) if min(_split_counts(n, fractions).values()) > 0)
            raise DatasetError(
                f"class {label!r} has {len(groups)} distinct usable images"
                f"{' outside split.test_sources' if held_out else ''}; the split needs at least "
                f"{needed} so that every split ({', '.join(names)}) gets one: add images"
            )
        start = 0
        for name in names:
            for sha in groups[start : start + counts[name]]:
                splits[name].extend(by_label[label][sha])
            start += counts[name]
    return splits


def check_test_sources(records: list[ImageRecord], test_sources: Collection[str]) -> None:
    """split.test_sources must name source folders that gave usable images, and leave one to train on."""
    if not test_sources:
        return
    found = sorted({r.source for r in records})
    if found == [""]:
        raise DatasetError(
            f"split.test_sources is {list(test_sources)} but data.dir is a flat class-per-folder tree, with no "
            "source folders: arrange it as data.dir/<source>/<class>/ or set split.test_sources: []"
        )
    unknown = [name for name in test_sources if name not in found]
    if unknown:
        raise DatasetError(
            f"split.test_sources names {', '.join(map(repr, unknown))}, not a source folder with usable images "
            f"under data.dir (found: {', '.join(found)}): fix the name in params.yaml"
        )
    if set(found) <= set(test_sources):
        raise DatasetError(
            f"split.test_sources holds out every source ({', '.join(found)}): nothing is left to train on; "
            "take at least one source out of split.test_sources"
        )


def _split_counts(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Largest-remainder rounding so the counts add up to n exactly (ties: the earlier split first)."""
    names = list(fractions)
    exact = {name: n * fractions[name] for name in names}
    counts = {name: int(value) for name, value in exact.items()}
    by_remainder = sorted(names, key=lambda name: (-(exact[name] - counts[name]), names.index(name)))
    for name in by_remainder[: n - sum(counts.values())]:
        counts[name] += 1
    return counts


NO_FACE = "no face found (data.faces: crop): the detector found no face to train on"


@dataclass(frozen=True)
class FileFaces:
    """Crop mode: what the face finder made of one kept file (data/processed/faces.csv)."""

    path: str
    label: str
    split: str
    faces: int
    boxes: str  # JSON list of [left, top, width, height], largest face first


def crop_faces(
    splits: dict[str, list[ImageRecord]],
    out_dir: Path,
    margin: float,
    max_pixels: int,
    finder=None,
    root: Path | None = None,
    detector: str = "mtcnn",
) -> tuple[dict[str, list[ImageRecord]], list[Rejected], list[FileFaces]]:
    """Crop mode: every face of every file, cropped square with `margin` and saved as a lossless PNG
    under out_dir/<split>/<label>/ (the file's pixels, never resized), each crop in its file's split.

    The split is made on files first, exactly as in whole mode, so a file's split never depends on
    the detector and every face of a file lands in the same split. Files with no face found are
    left out (NO_FACE). The faces are found by `finder`, else by the `detector` named.
    Returns the crops' manifests, the left-out files and what was found per file."""
    import json
    import shutil
    from concurrent.futures import ThreadPoolExecutor

    from aivsreal.faces import make_finder, square_crop

    finder = finder or make_finder(detector)  # data.face_detector
    shutil.rmtree(out_dir, ignore_errors=True)  # crops of an earlier run are never mixed in
    out_dir.mkdir(parents=True)

    def crops_of(record: ImageRecord):
        source = Path(record.path) if root is None else Path(root) / record.path  # manifest paths: from root
        image = decode_image(read_image_file(source, max_pixels), max_pixels)
        boxes = finder.find(image)
        return boxes, [square_crop(image, box, margin) for box in boxes]

    cropped: dict[str, list[ImageRecord]] = {name: [] for name in SPLITS}
    rejected: list[Rejected] = []
    per_file: list[FileFaces] = []
    work = [(name, record) for name in SPLITS for record in splits[name]]
    with ThreadPoolExecutor(max_workers=2) as pool:  # OpenCV and PNG encoding release the GIL
        results = pool.map(lambda item: crops_of(item[1]), work)
        for (name, record), (boxes, crops) in tqdm(zip(work, results), total=len(work), desc="finding faces",
                                                    unit="img", disable=None):  # fmt: skip
            boxes_json = json.dumps([[b.left, b.top, b.width, b.height] for b in boxes])
            per_file.append(FileFaces(record.path, record.label, name, len(boxes), boxes_json))
            if not boxes:
                rejected.append(Rejected(record.path, record.label, NO_FACE))
                continue
            folder = out_dir / name / record.label
            folder.mkdir(parents=True, exist_ok=True)
            for number, crop in enumerate(crops, start=1):
                target = folder / f"{record.sha256[:16]}_{number}.png"
                crop.save(target, format="PNG", compress_level=1)
                digest = hashlib.sha256(target.read_bytes()).hexdigest()
                cropped[name].append(ImageRecord(_display(target, root), record.label, digest, record.source))
    for name in SPLITS:
        for label in sorted({r.label for r in splits[name]}):
            if not any(r.label == label for r in cropped[name]):
                raise DatasetError(
                    f"crop mode: no face was found in any {label!r} image of the {name} split "
                    f"({sum(r.label == label for r in rejected)} {label!r} files with no face): "
                    "check that the pictures show frontal faces, or set data.faces: whole"
                )
    return cropped, rejected, per_file


def split_counts(
    splits: dict[str, list[ImageRecord]], rejected: list[Rejected], test_sources: Collection[str] = ()
) -> dict:
    """Counts per split and class, as the DVC metric `metrics/split.json`. From a folder of sources, also
    per source: `trained_sources` (per split and class) and `test_sources` (held out, per class)."""
    counts: dict = {name: dict(Counter(r.label for r in records)) for name, records in splits.items()}
    counts["rejected"] = dict(Counter(r.label for r in rejected))
    counts["total_kept"] = sum(len(records) for records in splits.values())
    counts["total_rejected"] = len(rejected)
    sources = sorted({r.source for records in splits.values() for r in records} - {""})
    if sources:
        counts["trained_sources"] = {
            source: {name: dict(Counter(r.label for r in records if r.source == source))
                     for name, records in splits.items()}
            for source in sources if source not in test_sources
        }  # fmt: skip
        counts["test_sources"] = {
            source: dict(Counter(r.label for r in splits["test"] if r.source == source))
            for source in sources
            if source in test_sources
        }
    return counts


def _display(path: Path, root: Path | None) -> str:
    """Path as written in the manifest: relative inside the project (portable), else absolute."""
    root = (Path.cwd() if root is None else root).absolute()
    path = Path(os.path.abspath(path))
    if path.is_relative_to(root):
        return path.relative_to(root).as_posix()
    return path.as_posix()


def _is_utf8(text: str) -> bool:
    """False for a path with bytes that are not UTF-8 (Python holds them as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _escaped(text: str) -> str:
    """The path with undecodable bytes as backslash escapes (face\\xff.png): printable, valid UTF-8."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")
