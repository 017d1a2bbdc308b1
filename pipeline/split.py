"""Stage `split`: check every image under data.dir and write train/val/test manifests."""

import logging
import sys
from dataclasses import asdict
from pathlib import Path

from aivsreal.manifests import write_manifest
from aivsreal.split import DatasetError, scan_dataset, split_counts, split_manifest
from pipeline import stage
from pipeline.paths import MANIFESTS, METRICS, SPLIT_SUMMARY

log = logging.getLogger("pipeline.split")


def main(argv: list[str] | None = None) -> None:
    params = stage.start(__doc__, argv)
    fractions = {"train": params.split.train, "val": params.split.val, "test": params.split.test}
    try:
        records, rejected = scan_dataset(
            Path(params.data.dir), params.data.class_names, params.split.max_pixels, min_side=params.model.min_side
        )
        splits = split_manifest(records, fractions, params.split.seed)
    except DatasetError as error:
        sys.exit(f"split: {error}")
    for name, rows in splits.items():
        write_manifest(MANIFESTS[name], rows)
    counts = split_counts(splits, rejected)
    summary = {"data_dir": params.data.dir, "counts": counts, "rejected": [asdict(r) for r in rejected]}
    stage.write_json(SPLIT_SUMMARY, summary)
    stage.write_json(METRICS / "split.json", counts)
    for name in MANIFESTS:
        log.info("%-5s %s", name, counts[name])
    for r in rejected:
        log.warning("left out %s: %s", r.path, r.reason)
    log.info("%d images kept, %d left out (listed in %s)", counts["total_kept"], len(rejected), SPLIT_SUMMARY)
    if rejected:
        log.info("to include a left-out file, do what its reason says (or re-export it), then re-run the split")


if __name__ == "__main__":
    main()
