"""Two experts, one answer: which of a two-expert model's networks judges an image, and why.

The forensic expert (noise residual, native resolution: params/facebench-lossless.yaml) reads
pixel-level traces: near perfect on original files, blind once they are re-saved or resized, since
re-saving replaces those traces. The wild expert (RGB at 96 px, trained on re-saved and shrunk
copies) is the reverse. So an original, a file in a lossless format at least as large as the
forensic expert's input, goes to the forensic expert; everything else (JPEG, WebP, a shrunk copy,
a picture decoded from who knows what) goes to the wild one. The rule reads only what the file
says about itself (its format and size): a PNG saved from a JPEG looks like an original to it.

The forensic expert's log-odds are shifted so that both experts decide at the wild expert's
threshold (`shift_to_threshold`): the model keeps one threshold and one temperature, and every
consumer (evaluation, sweeps, calibration checks) treats it as one model. With `forensic_mix: mean`
an original gets the mean of both experts' shifted log-odds (expert BOTH): the forensic expert reads
the traces of the sources it was trained on and misleads on an unseen one, where the wild expert is
steadier (benchmarks/RESULTS.md, "make facebench with the two-expert preset").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from aivsreal.images import SOURCE_FORMAT
from aivsreal.params import Params, load_overrides

FORENSIC, WILD, SINGLE = "forensic", "wild", "single"
BOTH = "forensic+wild"  # model.forensic_mix: mean: an original gets the mean of both experts' log-odds
FORENSIC_FOLDER = "forensic"  # the forensic expert's saved model, inside the two-expert model's folder
FORENSIC_RECIPE = "params/facebench-lossless.yaml"  # model.forensic: true trains it with these model./train. keys
# Formats that store pixels exactly: the file can still hold the generator's or the camera's traces.
LOSSLESS_FORMATS = ("PNG", "BMP", "TIFF", "PPM", "TGA")
SINGLE_REASON = "the model has one expert"


# how and where a training runs, not what it learns: the forensic expert keeps the run's own settings
HARDWARE_KEYS = ("train.device", "train.precision", "train.num_workers", "train.augment_on", "train.augment_graphs",
                 "train.cache_images", "train.launcher", "train.nproc")  # fmt: skip


def forensic_recipe(params: Params, root: Path = Path()) -> Params:
    """The params of the forensic expert: `params` with the `model.` and `train.` keys of FORENSIC_RECIPE (read
    from the project folder `root`), except the hardware settings (HARDWARE_KEYS), which stay the run's: a
    `-S train.num_workers=auto` on a GPU machine reaches both experts."""
    recipe = {key: value for key, value in load_overrides(root / FORENSIC_RECIPE).items()
              if key.startswith(("model.", "train.")) and key not in HARDWARE_KEYS}  # fmt: skip
    return params.with_overrides(recipe | {"model.forensic": False})


def route(image: Image.Image, min_side: int, mix: str = "alone") -> tuple[str, str]:
    """(FORENSIC, BOTH or WILD, why) for one decoded image; `min_side` is the forensic expert's input side,
    `mix` the model's forensic_mix ("alone": an original goes to the forensic expert, "mean": to both)."""
    file_format = image.info.get(SOURCE_FORMAT, "")
    width, height = image.size
    if file_format not in LOSSLESS_FORMATS:
        described = f"a {file_format} file" if file_format else "not read from a file (format unknown)"
        return WILD, f"{described}: re-compressed or of unknown history, so the wild expert answers"
    if min(width, height) < min_side:
        return WILD, (
            f"{file_format} at {width}x{height} px, smaller than the {min_side} px the forensic expert reads: "
            "a resized copy, so the wild expert answers"
        )
    original = f"an original ({file_format}, lossless, {width}x{height} px)"
    if mix == "mean":
        return BOTH, f"{original}: the forensic expert reads its pixel-level traces, averaged with the wild expert"
    return FORENSIC, f"{original}: the forensic expert reads its pixel-level traces"


def shift_to_threshold(logits: np.ndarray, temperature: float, threshold: float, target_threshold: float,
                       target_temperature: float) -> np.ndarray:  # fmt: skip
    """Two-class logits of one expert (calibrated by `temperature`, deciding at `threshold`) rewritten so
    that, divided by `target_temperature`, they give the same decisions at `target_threshold`: the
    calibrated log-odds shifted by logit(target_threshold) - logit(threshold)."""
    if logits.shape[1] != 2:
        raise ValueError("a two-expert model needs exactly two classes")
    log_odds = (logits[:, 0] - logits[:, 1]) / temperature + _logit(target_threshold) - _logit(threshold)
    half = log_odds * target_temperature / 2
    return np.stack([half, -half], axis=1)


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return float(np.log(p / (1 - p)))
