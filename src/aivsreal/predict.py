"""Command-line predictor: label and class probabilities for image files.

python -m aivsreal.predict face1.jpg face2.png                      # models:/ai-vs-real@champion
python -m aivsreal.predict --model models/model face.jpg            # the train stage's output folder
python -m aivsreal.predict --model models:/ai-vs-real/3 --json *.png

Each answer carries `warnings` when the image lies outside what the model was validated on
(re-compressed JPEG on a model that fails on them, smaller than any validation image); images
too small to judge are skipped with the reason. A demo model (trained on the built-in sample)
says so once on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

from aivsreal.images import BadImageError

DEFAULT_MODEL = "models:/ai-vs-real@champion"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aivsreal.predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, WebP, ...)")
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"MLflow model URI or saved model folder (default: {DEFAULT_MODEL})"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per line")
    args = parser.parse_args(argv)

    from aivsreal.predictor import load_predictor  # after --help: importing torch takes a moment

    try:
        predictor = load_predictor(args.model)
    except Exception as error:
        print(
            f"cannot load model {args.model!r}: {error}\n"
            "Train and register one with `make pipeline` (or `dvc repro`), or pass --model models/model.",
            file=sys.stderr,
        )
        return 2
    if predictor.config.demo:
        from aivsreal.input_range import DEMO_NOTICE

        print(f"note: this is a {DEMO_NOTICE}", file=sys.stderr)
    failures = 0
    for path in args.images:
        try:
            image = predictor.load(path)
        except BadImageError as error:
            failures += 1
            print(f"{path}: skipped: {error}", file=sys.stderr)
            continue
        record = predictor.predict_records([image])[0]
        if args.json:
            print(json.dumps({"path": path, **record}))
        else:
            probabilities = "  ".join(f"{k}={v:.3f}" for k, v in record.items() if k.startswith("p_"))
            print(f"{path}: {record['label']}  ({probabilities})")
            for warning in record["warnings"]:
                print(f"    warning: {warning}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
