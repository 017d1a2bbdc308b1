"""How a data folder is laid out: which folders hold which class, and whether it brings its own splits.

Datasets come as people publish them. Three layouts are read, each with class folders at the bottom:

    data.dir/<class>/                      one class-per-folder tree (source "")
    data.dir/<source>/<class>/             a folder of sources (generators, collections): their union
    data.dir/<split>/[<source>/]<class>/   the data's own splits: train/, val/ (valid/, validation/), test/

Class folders are named as `data.class_names`, or as the data names them with `data.class_map`
({fake: ai, FAKE: ai, real: real}): nothing is renamed on disk. With a class map, a folder at the class
level that the map does not name is an error listing the folders found, never silently skipped.
"""

from __future__ import annotations

from pathlib import Path

# Split folder names (compared in lower case) -> the split they hold.
GIVEN_SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


class DatasetError(ValueError):
    """The data folder cannot be split: missing or empty class folder, unmapped folder, too few images."""


def given_split_folders(data_dir: Path) -> dict[str, Path]:
    """data_dir's own split folders by the split they hold (train, val, test), {} when it has none."""
    found: dict[str, Path] = {}
    for child in _subfolders(data_dir):
        name = GIVEN_SPLIT_FOLDERS.get(child.name.lower())
        if name is None:
            continue
        if name in found:
            raise DatasetError(
                f"{found[name].name}/ and {child.name}/ under {data_dir} both look like the {name} split: "
                "keep one of them, or set split.mode: random to pool and re-split everything"
            )
        found[name] = child
    return found


def split_mode(data_dir: Path, mode: str) -> str:
    """`given` or `random`: split.mode with auto resolved (given when data_dir has split folders)."""
    folders = given_split_folders(data_dir) if Path(data_dir).is_dir() else {}
    if mode == "auto":
        return "given" if folders else "random"
    if mode == "given":
        missing = [name for name in ("train", "test") if name not in folders]
        if missing:
            raise DatasetError(
                f"split.mode is given but {data_dir} has no {' and no '.join(f'{m}/' for m in missing)} folder "
                f"(found: {', '.join(p.name for p in _subfolders(data_dir)) or 'nothing'}): arrange the data as "
                "train/, val/ (optional: carved from train when missing) and test/, or set split.mode: random"
            )
    return mode


def folder_names(label: str, class_map: dict[str, str]) -> list[str]:
    """The folder names that hold `label` images: the class's own name, or those the class map gives it."""
    return sorted(name for name, mapped in class_map.items() if mapped == label) if class_map else [label]


def class_folders(data_dir: Path, class_names: list[str], class_map: dict[str, str]) -> dict[str, list[Path]]:
    """Every class's folders: data_dir/<folder> in a class-per-folder tree, else data_dir/<source>/<folder>
    for each source. A clear error for a class with no folder (naming the folders found and the map to
    write) and, with a class map, for a class-level folder the map does not name."""
    names = {label: folder_names(label, class_map) for label in class_names}
    every_name = {name for group in names.values() for name in group}
    flat = any((data_dir / name).is_dir() for name in every_name)
    parents = [data_dir] if flat else _subfolders(data_dir)
    if class_map:
        for parent in parents:
            found = [child.name for child in _subfolders(parent)]
            unmapped = [name for name in found if name not in class_map]
            if unmapped:
                raise DatasetError(
                    f"{parent} holds folder(s) {', '.join(unmapped)} that data.class_map does not name (folders "
                    f"found there: {', '.join(found)}; class_map: {class_map}): add each to data.class_map "
                    f"with its class ({' or '.join(class_names)}), or move it out of data.dir"
                )
    folders = {
        label: [p / name for p in parents for name in names[label] if (p / name).is_dir()] for label in class_names
    }
    for label, found in folders.items():
        if not found:
            seen = [f"{p.name}/{c.name}" for p in parents for c in _subfolders(p)] if not flat else []
            seen = seen or [p.name for p in _subfolders(data_dir)]
            raise DatasetError(
                f"class folder {data_dir / names[label][0]} is missing (and no {data_dir}/<source>/{names[label][0]} "
                f"either; folders found: {', '.join(seen) or 'none'}): create it and put {label!r} images there, "
                f"or map the data's own folder names in params.yaml, e.g. data.class_map: "
                f"{{fake: {class_names[0]}, real: {class_names[-1]}}}"
            )
    return folders


def _subfolders(folder: Path) -> list[Path]:
    """Visible sub-folders, sorted (hidden ones, like .ipynb_checkpoints, are never data)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(child for child in folder.iterdir() if child.is_dir() and not child.name.startswith("."))
