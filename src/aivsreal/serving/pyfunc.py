"""The MLflow pyfunc model: base64 image bytes in, label and class probabilities out.

Logged as "models from code" (pyfunc_entry.py, by artifacts.py), so nothing is pickled: the
artifacts are the state_dict and config.json written by the train stage.

Request: a string column `image` holding base64-encoded image files (JPEG, PNG, WebP...).
Response: per image, `label`, `p_<class>` for each class, `warnings`: a list (often empty)
saying when the image lies outside what the model was validated on (input_range.py), `engine`,
and `expert` with `expert_reason`: which expert answered and why (experts.py; "single" for a
model with one expert).
A model trained with `data.faces: crop` also answers `faces`, per image the list of faces found
(largest first), each with its `box` (left, top, width, height in the image's pixels), `label`,
`p_<class>` and `warnings`; the image's own label follows the model's `face_summary`, and an
image with no face found gets a null label and probabilities and the warning "no face found".
A request with any bad image, or one too small to judge, is rejected as a whole with a 400
naming the first bad row.
"""

from __future__ import annotations

import base64
import binascii
import logging
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models.signature import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, DataType, Schema
from mlflow.types.schema import Array, Object, Property

from aivsreal.engines import ENGINE_NAMES
from aivsreal.images import BadImageError
from aivsreal.predictor import Predictor

log = logging.getLogger(__name__)
INPUT_COLUMN = "image"
MAX_IMAGES_PER_REQUEST = 256


def signature(class_names: list[str], faces: str = "whole") -> ModelSignature:
    """What the model answers; a crop-mode model (`faces` = "crop") adds the `faces` column."""
    outputs = [ColSpec("string", "label")] + [ColSpec("double", f"p_{name}") for name in class_names]
    outputs.append(ColSpec(Array(DataType.string), "warnings"))
    outputs.append(ColSpec("string", "engine"))  # "onnx" | "onnx-int8" | "torch": which engine answered
    outputs += [ColSpec("string", "expert"), ColSpec("string", "expert_reason")]  # which expert, why (experts.py)
    if faces == "crop":
        box = Object([Property(side, DataType.long) for side in ("left", "top", "width", "height")])
        face = Object(
            [Property("box", box), Property("label", DataType.string)]
            + [Property(f"p_{name}", DataType.double) for name in class_names]
            + [Property("warnings", Array(DataType.string)), Property("engine", DataType.string)]
            + [Property("expert", DataType.string), Property("expert_reason", DataType.string)]
        )
        outputs.append(ColSpec(Array(face), "faces"))
    return ModelSignature(inputs=Schema([ColSpec("string", INPUT_COLUMN)]), outputs=Schema(outputs))


def encode_image(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_image_field(value: object, row: int) -> bytes:
    """A base64 string (or already-decoded bytes) -> raw file bytes, or a 400 naming the row."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if not isinstance(value, str) or not value:
        raise bad_request(f"row {row}: `{INPUT_COLUMN}` must be a non-empty base64 string")
    try:
        return base64.b64decode("".join(value.split()), validate=True)  # line breaks from `base64` are fine
    except (binascii.Error, ValueError):
        raise bad_request(f"row {row}: `{INPUT_COLUMN}` is not valid base64") from None


class BadRequest(MlflowException):
    """A 400 whose message stays what the model said. MLflow's scoring server (3.17) rewrites the
    message of any MlflowException raised in `predict` to "Failed to predict data '<the whole input
    frame>'. Error: ...": the client would read a DataFrame dump before the problem. The first
    message set is kept; later rewrites are ignored."""

    @property
    def message(self) -> str:
        return self._message

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_message"):
            self._message = value


def bad_request(message: str) -> MlflowException:
    return BadRequest(message, error_code=INVALID_PARAMETER_VALUE)


class AiVsRealModel(mlflow.pyfunc.PythonModel):
    """Wraps Predictor; holds no torch state until load_context runs."""

    predictor: Predictor

    def load_context(self, context) -> None:
        self.predictor = Predictor.from_dir(Path(context.artifacts["config"]).parent)
        log.info("model loaded; predictions run on %s", ENGINE_NAMES[self.predictor.engine])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame) or INPUT_COLUMN not in model_input.columns:
            found = list(model_input.columns) if isinstance(model_input, pd.DataFrame) else type(model_input).__name__
            raise bad_request(f"expected a column `{INPUT_COLUMN}` of base64-encoded image files, got {found}")
        values = model_input[INPUT_COLUMN].tolist()
        if not values:
            raise bad_request("the request holds no images")
        if len(values) > MAX_IMAGES_PER_REQUEST:
            raise bad_request(f"{len(values)} images in one request; send at most {MAX_IMAGES_PER_REQUEST}")
        images = []
        for row, value in enumerate(values):
            data = decode_image_field(value, row)
            try:
                images.append(self.predictor.load(data))
            except BadImageError as error:
                raise bad_request(f"row {row}: {error}") from None
        answers = pd.DataFrame(self.predictor.answer(images))
        if self.predictor.config.faces == "crop":  # only a crop-mode answer can hold nulls (no face found):
            answers = answers.astype(object).where(answers.notna(), None)  # JSON null, where floats would send NaN
        return answers
