"""Stage `sample`: write the built-in sample faces to data/sample/{ai,real}/."""

import argparse
import json
import logging

from aivsreal.logs import setup_logging
from aivsreal.params import Params
from aivsreal.sample_data import make_sample
from pipeline.paths import SAMPLE_DIR

log = logging.getLogger("pipeline.sample")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args(argv)
    setup_logging()
    p = Params.load(args.params).sample
    counts = make_sample(SAMPLE_DIR, p.n_per_class, p.size, p.components, p.noise_std, p.seed)
    log.info("wrote sample faces to %s: %s", SAMPLE_DIR, json.dumps(counts))


if __name__ == "__main__":
    main()
