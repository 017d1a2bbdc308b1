"""Stage `sample`: write the built-in sample faces to data/sample/{ai,real}/."""

import json
import logging

from aivsreal.sample_data import make_sample
from pipeline import stage
from pipeline.paths import SAMPLE_DIR

log = logging.getLogger("pipeline.sample")


def main(argv: list[str] | None = None) -> None:
    p = stage.start(__doc__, argv).sample
    counts = make_sample(SAMPLE_DIR, p.n_per_class, p.size, p.components, p.noise_std, p.seed)
    log.info("wrote sample faces to %s: %s", SAMPLE_DIR, json.dumps(counts))


if __name__ == "__main__":
    main()
