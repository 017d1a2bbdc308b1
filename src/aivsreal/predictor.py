"""Batch prediction with a saved model: used by evaluate, the CLI, the pyfunc server and the app."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from aivsreal.calibration import clip_confidence, probabilities
from aivsreal.engines import ChannelsLastNetwork, OnnxNetwork, chosen_engine, graph_file
from aivsreal.experts import BOTH, FORENSIC, SINGLE, SINGLE_REASON, WILD, route, shift_to_threshold
from aivsreal.face_vote import FaceVote
from aivsreal.images import load_image
from aivsreal.input_range import input_warnings, refuse_if_too_small
from aivsreal.model import ModelConfig, load_saved_model
from aivsreal.transforms import normalise_batch


class Predictor:
    """A trained network plus the preprocessing it was trained with; in a two-expert model (experts.py)
    this is the wild expert, and `forensic` the expert that judges original files; with a face vote
    (face_vote.py, config.face_vote) its answer is averaged with the vote's."""

    def __init__(
        self,
        model: torch.nn.Module,
        config: ModelConfig,
        network=None,
        engine: str = "torch",
        forensic: Predictor | None = None,
        face_vote: FaceVote | None = None,
    ):
        self.model = model.eval()  # PyTorch, always: Grad-CAM needs its gradients
        self.network = network or self.model  # what predictions run on: the model, or its ONNX Runtime twin
        self.engine = engine  # "torch" | "onnx" | "onnx-int8"
        self.config = config
        self.transform = config.eval_transform()  # one image -> normalised tensor (Grad-CAM, the app)
        self.geometry = config.eval_geometry()
        self.forensic = forensic
        self.face_vote = face_vote
        self._finder = None

    @classmethod
    def from_dir(cls, folder: str | Path) -> Predictor:
        """A saved model, on ONNX Runtime when it has an exported graph (engines.chosen_engine); with its
        forensic expert when the config names one (a sub-folder saved the same way)."""
        model, config = load_saved_model(Path(folder))
        engine = chosen_engine(Path(folder), config)
        if engine == "torch":
            network = ChannelsLastNetwork(model)  # a model of its own: the layout is free to change
        else:
            network = OnnxNetwork(Path(folder) / graph_file(config, engine))
        forensic = cls.from_dir(Path(folder) / config.forensic) if config.forensic else None
        face_vote = FaceVote.load(Path(folder) / config.face_vote) if config.face_vote else None
        return cls(model, config, network, engine, forensic, face_vote)

    def experts(self, images: list[Image.Image]) -> list[tuple[str, str]]:
        """(expert, why) for each image: experts.route in a two-expert model, SINGLE otherwise."""
        if self.forensic is None:
            return [(SINGLE, SINGLE_REASON)] * len(images)
        return [route(image, self.forensic.config.eval_crop, self.config.forensic_mix) for image in images]

    @property
    def class_names(self) -> list[str]:
        return list(self.config.class_names)

    def load(self, source: str | Path | bytes) -> Image.Image:
        """Decode with the same limits the model was trained under; too small to judge: TooSmallError."""
        image = load_image(source, max_pixels=self.config.max_pixels)
        refuse_if_too_small(image, self.config)
        return image

    def load_many(self, sources: list[str | Path | bytes], threads: int = 4) -> list[Image.Image]:
        """Decode several files at once: Pillow releases the GIL while decoding, so threads overlap."""
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(self.load, sources))

    def input_batches(self, images: list[Image.Image], batch_size: int = 64, threads: int = 4):
        """The network's input, `batch_size` images at a time: resized, cropped and normalised tensors,
        several images at once in threads (transforms.normalise_batch)."""
        mean, std = tuple(self.config.mean), tuple(self.config.std)
        for start in range(0, len(images), batch_size):
            yield normalise_batch(images[start : start + batch_size], mean, std, self.geometry, threads)

    @torch.inference_mode()
    def predict_logits(self, images: list[Image.Image], batch_size: int = 64) -> np.ndarray:
        """Raw network outputs, shape (n_images, n_classes), before temperature and softmax. In a two-expert
        model, the images routed to the forensic expert get its logits, shifted onto this (the wild)
        expert's temperature and threshold (experts.shift_to_threshold); those routed to BOTH the mean of
        those and the wild expert's own. With a face vote, the answer is then joined with the vote's
        (FaceVote.join: the mean p(AI), decided at the mean of both thresholds)."""
        logits = self.routed_logits(images, batch_size)
        if self.face_vote is None:
            return logits
        return self.face_vote.join(logits, images, self.config.temperature, self.config.threshold)

    def routed_logits(self, images: list[Image.Image], batch_size: int = 64) -> np.ndarray:
        """The network's answer (both experts' in a two-expert model, predict_logits), without the face vote."""
        if self.forensic is None:
            return self.own_logits(images, batch_size)
        routed = np.array([expert for expert, _ in self.experts(images)])
        logits = np.zeros((len(images), len(self.class_names)), dtype=np.float64)
        wild = np.flatnonzero(routed != FORENSIC)  # WILD and BOTH
        if len(wild):
            logits[wild] = self.own_logits([images[i] for i in wild], batch_size)
        forensic_side = np.flatnonzero(routed != WILD)  # FORENSIC and BOTH
        if len(forensic_side):
            forensic = self.forensic.config
            shifted = shift_to_threshold(
                self.forensic.own_logits([images[i] for i in forensic_side], batch_size), forensic.temperature,
                forensic.threshold, self.config.threshold, self.config.temperature,
            )  # fmt: skip
            both = routed[forensic_side] == BOTH
            logits[forensic_side] = np.where(both[:, None], (logits[forensic_side] + shifted) / 2, shifted)
        return logits

    def own_logits(self, images: list[Image.Image], batch_size: int = 64) -> np.ndarray:
        """This network's raw outputs (no routing), shape (n_images, n_classes)."""
        chunks = [self.forward(batch) for batch in self.input_batches(images, batch_size)]
        if not chunks:
            return np.zeros((0, len(self.class_names)), dtype=np.float64)
        return np.concatenate(chunks).astype(np.float64)

    def forward(self, batch: torch.Tensor) -> np.ndarray:
        """Logits of a normalised batch; with `tta_hflip`, averaged with those of the mirrored batch."""
        logits = self.network(batch)
        if self.config.tta_hflip:
            logits = (logits + self.network(batch.flip(-1))) / 2
        return logits.numpy()

    def predict_proba(self, images: list[Image.Image], batch_size: int = 64) -> np.ndarray:
        """Class probabilities, shape (n_images, n_classes): calibrated temperature, then clipped to
        [1 - max_confidence, max_confidence] (no answer is more certain than validation can support)."""
        calibrated = probabilities(self.predict_logits(images, batch_size), self.config.temperature)
        return clip_confidence(calibrated, self.config.max_confidence)

    def labels(self, probabilities: np.ndarray) -> list[str]:
        """Two classes: the first (AI) at or above the threshold; more classes: the most likely."""
        names = self.class_names
        if len(names) == 2:
            return [names[0] if p[0] >= self.config.threshold else names[1] for p in probabilities]
        return [names[i] for i in probabilities.argmax(axis=1)]

    @property
    def face_finder(self):
        """The model's face detector (config.face_detector), made on first use: loading it takes a moment.
        A whole-picture model whose detector is not installed (MTCNN's facenet-pytorch) looks with the
        Haar cascade instead and logs so: it only looks to warn. A crop-mode model needs its own detector."""
        if self._finder is None:
            from aivsreal.faces import make_finder

            try:
                self._finder = make_finder(self.config.face_detector)
            except RuntimeError as error:
                if self.config.faces == "crop":
                    raise
                logging.getLogger(__name__).warning("%s; the not-a-face warning looks with the Haar cascade", error)
                self._finder = make_finder("haar")
        return self._finder

    def answer(self, images: list[Image.Image], faces: str | None = None, batch_size: int = 64) -> list[dict]:
        """What every interface answers for each picture, by the model's `faces` mode (or `faces` given):
        "whole", predict_records' record for the picture, plus a warning when the picture is not a face
        (faces.whole_picture_warning: no face found, or the largest fills less than config.min_face_share;
        the faces are found once per picture, and only by a model with a min_face_share); "crop", its faces
        found and each one judged, with the picture's label by `face_summary` (faces.image_answer: the
        record plus `faces`)."""
        if (faces or self.config.faces) != "crop":
            records = self.predict_records(images, batch_size)
            if self.config.min_face_share > 0:
                from aivsreal.faces import find_faces, whole_picture_warning

                for record, image, boxes in zip(records, images, find_faces(self.face_finder, images)):
                    warning = whole_picture_warning(image, boxes, self.config.min_face_share)
                    record["warnings"] += [warning] if warning else []
            return records
        from aivsreal.faces import judge_images

        margin, rule = self.config.face_margin, self.config.face_summary
        return judge_images(self, images, self.face_finder, margin, rule, batch_size)

    def predict_records(self, images: list[Image.Image], batch_size: int = 64) -> list[dict]:
        """[{"label": ..., "p_ai": ..., "p_real": ..., "warnings": [...], "engine": ..., "expert": ...,
        "expert_reason": ...}, ...] in input order; `warnings` (input_range.py) says when an input lies
        outside what the model was validated on, `engine` which engine computed the answer ("onnx",
        "onnx-int8" or "torch"), `expert` which expert answered ("forensic", "forensic+wild" or "wild" in a
        two-expert model, else "single") and `expert_reason` why (experts.route)."""
        probabilities = self.predict_proba(images, batch_size)
        records = []
        for label, row, image, (expert, reason) in zip(
            self.labels(probabilities), probabilities, images, self.experts(images)
        ):
            answering = self if expert in (WILD, SINGLE) else self.forensic  # an original: the forensic input checks
            records.append(
                {
                    "label": label,
                    **{f"p_{name}": float(p) for name, p in zip(self.class_names, row)},
                    "warnings": input_warnings(image, answering.config),
                    "engine": answering.engine,
                    "expert": expert,
                    "expert_reason": reason,
                }
            )
        return records
