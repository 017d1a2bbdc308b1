"""What a model knows: inputs too small to judge are refused, inputs outside what it was validated on
get warnings. One place decides; the server, the CLI, batch scoring and the app all call it."""

from __future__ import annotations

from PIL import Image

from aivsreal.images import SOURCE_FORMAT, BadImageError
from aivsreal.model import ModelConfig

DEMO_NOTICE = (
    "demo model trained on the built-in sample faces: it does not tell real photos from AI ones; "
    "run `make facebench` or train on your own data"
)

# File formats that mean "this image was re-compressed", and the validation condition that matches.
LOSSY_FORMATS = {"JPEG": ("jpeg", "JPEG"), "MPO": ("jpeg", "JPEG"), "WEBP": ("webp", "WebP")}


class TooSmallError(BadImageError):
    """The image's smaller side is below the model's `min_side`: refused, not scored."""


def refuse_if_too_small(image: Image.Image, config: ModelConfig) -> None:
    width, height = image.size
    if min(width, height) < config.min_side:
        raise TooSmallError(
            f"image is {width}x{height} px, too small to judge: its smaller side must be at least "
            f"{config.min_side} px (send the original file, not a thumbnail)"
        )


def input_warnings(image: Image.Image, config: ModelConfig) -> list[str]:
    """Plain-language warnings for an input outside the range the model was validated on (may be empty).

    `config.validated` holds what calibration measured on the validation images and their wild
    copies: the smallest side seen, and the accuracy per condition. A re-compressed input (JPEG,
    WebP) is flagged when the model's validation accuracy on such copies fell by more than
    `config.warn_accuracy_drop`; an input smaller than every validation image is flagged always.
    """
    warnings = []
    accuracy = config.validated.get("accuracy", {})
    clean = accuracy.get("none")
    kind, name = LOSSY_FORMATS.get(image.info.get(SOURCE_FORMAT, ""), (None, None))
    if kind in accuracy and clean is not None and clean - accuracy[kind] > config.warn_accuracy_drop:
        warnings.append(
            f"re-compressed {name}: this model scored {accuracy[kind]:.0%} on such images in validation "
            f"({clean:.0%} on the originals)"
        )
    smallest = config.validated.get("min_side")
    if smallest and min(image.size) < smallest:
        width, height = image.size
        warnings.append(
            f"smaller than {smallest} px ({width}x{height}): this model was not validated on images this small"
        )
    return warnings
