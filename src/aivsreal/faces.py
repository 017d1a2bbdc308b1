"""Finding the faces in a photo and judging each one: `data.faces: crop` (params.yaml).

In crop mode the split stage trains on the faces it finds (split.crop_faces), and every interface
(Predictor.answer: the server, the CLI, the app, Spark) finds the faces of a picture, crops each
square with `data.face_margin` and judges each one; the picture's own label follows
`data.face_summary`. The choice travels in the model's config.json. A whole-picture model finds
the faces too, once per picture, only to warn when the picture is not a face (whole_picture_warning).

Two detectors, `data.face_detector` (it travels in config.json too):
- `mtcnn` (the default): MTCNN (Zhang et al. 2016) as facenet-pytorch implements it, with its three
  small networks' weights inside the wheel (`facenet_pytorch/data/{pnet,rnet,onet}.pt`), run by our
  PyTorch. The wheel pins an old torch, numpy and Pillow it does not need: it is installed with
  `pip install --no-deps` (requirements-nodeps.txt; `make setup` does it).
- `haar`: OpenCV's Haar cascade for frontal faces (`haarcascade_frontalface_default.xml`, inside the
  opencv-python-headless wheel), the fallback and the detector of models saved before the choice.
Nothing is ever downloaded: MediaPipe 1.2.2's wheel ships no face model, OpenCV's DNN detectors
(YuNet, the res10 SSD) and RetinaFace packages fetch their model files. Measured recall, false boxes
and time per image: benchmarks/RESULTS.md, "Face finding".

A box is (left, top, width, height) in the pixels of the image as given. Large images are shrunk
first (boxes are scaled back).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

CASCADE_FILE = "haarcascade_frontalface_default.xml"


@dataclass(frozen=True)
class FaceBox:
    left: int
    top: int
    width: int
    height: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @property
    def center(self) -> tuple[float, float]:
        return self.left + self.width / 2, self.top + self.height / 2


class FaceFinder:
    """Frontal faces in a PIL image, largest first, by OpenCV's Haar cascade (`data.face_detector: haar`).

    min_side: the smallest face reported, in pixels of the image as given; border: the replicated
    margin added around the image, as a fraction of its larger side; max_side: images larger than
    this are shrunk before detection (boxes are scaled back); scale_factor and min_neighbors are
    the cascade's. 8 neighbours (OpenCV's examples use 5) cut the boxes on no face in composed
    multi-face pictures from 19 to 3 (250 faces) and halved the second boxes on facebench's face
    crops (2.7 % -> 1.2 %), for more crops with no face found (5.3 % -> 7.8 %): benchmarks/RESULTS.md,
    "Face finding"."""

    def __init__(
        self, min_side: int = 32, border: float = 0.25, max_side: int = 1024, scale_factor: float = 1.1,
        min_neighbors: int = 8,
    ):  # fmt: skip
        self.name = "haar"
        self._local = threading.local()
        _ = self.cascade  # loads now: a broken install fails here, not at the first image
        self.min_side, self.border, self.max_side = min_side, border, max_side
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors

    @property
    def cascade(self):
        """This thread's classifier: one CascadeClassifier shared by threads fails inside OpenCV."""
        cascade = getattr(self._local, "cascade", None)
        if cascade is None:
            import cv2

            cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE_FILE)
            if cascade.empty():
                raise RuntimeError(f"OpenCV's {CASCADE_FILE} did not load: reinstall opencv-python-headless")
            self._local.cascade = cascade
        return cascade

    def find(self, image: Image.Image) -> list[FaceBox]:
        import cv2

        scale = min(1.0, self.max_side / max(image.size))
        grey = image.convert("L")
        if scale < 1.0:
            grey = grey.resize(
                (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR
            )
        pixels = np.asarray(grey)
        pad = round(self.border * max(pixels.shape))
        padded = cv2.copyMakeBorder(pixels, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        smallest = max(24, round(self.min_side * scale))  # the cascade's window is 24 px
        found = self.cascade.detectMultiScale(
            padded, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(smallest, smallest)
        )
        boxes = []
        for x, y, w, h in np.asarray(found).reshape(-1, 4):
            left, top = max(0.0, (x - pad) / scale), max(0.0, (y - pad) / scale)
            right = min(float(image.width), (x - pad + w) / scale)
            bottom = min(float(image.height), (y - pad + h) / scale)
            if right - left >= self.min_side / 2 and bottom - top >= self.min_side / 2:  # mostly inside the image
                boxes.append(FaceBox(round(left), round(top), round(right - left), round(bottom - top)))
        return sorted(boxes, key=lambda box: box.width * box.height, reverse=True)


MTCNN_INSTALL = "pip install --no-deps facenet-pytorch==2.6.0 (requirements-nodeps.txt; make setup does it)"


class MtcnnFinder:
    """Faces in a PIL image, largest first, by MTCNN (`data.face_detector: mtcnn`; facenet-pytorch's
    implementation and weights, run on the CPU).

    min_side: the smallest face reported, in pixels of the image as given (also the network
    pyramid's smallest face, so small values cost time); max_side: larger images are shrunk first;
    min_probability: boxes the last network scores lower are dropped; border: a replicated margin
    added around the image, as a fraction of its larger side (0: none); thresholds: the three networks'
    candidate scores; factor: the image pyramid's step (both facenet-pytorch's defaults: a coarser step or
    stricter candidates missed more covered faces). benchmarks/faces.py measured the values:
    benchmarks/RESULTS.md, "Face finding"."""

    def __init__(
        self, min_side: int = 28, max_side: int = 1024, min_probability: float = 0.9, border: float = 0.0,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7), factor: float = 0.709,
    ):  # fmt: skip
        try:
            from facenet_pytorch import MTCNN
        except ImportError as error:
            raise RuntimeError(f"data.face_detector: mtcnn needs facenet-pytorch: {MTCNN_INSTALL}; "
                               "or choose data.face_detector: haar") from error  # fmt: skip
        self.name = "mtcnn"
        self.min_side, self.max_side, self.min_probability, self.border = min_side, max_side, min_probability, border
        self._mtcnn = MTCNN(keep_all=True, min_face_size=max(12, min_side), thresholds=list(thresholds),
                            factor=factor, device="cpu", post_process=False)  # fmt: skip

    def find(self, image: Image.Image) -> list[FaceBox]:
        scale = min(1.0, self.max_side / max(image.size))
        rgb = image.convert("RGB")
        if scale < 1.0:
            rgb = rgb.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
        pad = round(self.border * max(rgb.size))
        if pad:
            import cv2

            rgb = Image.fromarray(cv2.copyMakeBorder(np.asarray(rgb), pad, pad, pad, pad, cv2.BORDER_REPLICATE))
        smallest = max(12, round(self.min_side * scale))
        import torch
        from facenet_pytorch.models.utils.detect_face import detect_face

        mtcnn = self._mtcnn
        with torch.no_grad():  # detect_face, not MTCNN.detect: the smallest face varies per call, threads share it
            batch_boxes, _ = detect_face(rgb, smallest, mtcnn.pnet, mtcnn.rnet, mtcnn.onet, mtcnn.thresholds,
                                         mtcnn.factor, mtcnn.device)  # fmt: skip
        found = []
        for box in np.asarray(batch_boxes[0]).reshape(-1, 5):
            if box[4] < self.min_probability:
                continue
            left, top = max(0.0, (box[0] - pad) / scale), max(0.0, (box[1] - pad) / scale)
            right = min(float(image.width), (box[2] - pad) / scale)
            bottom = min(float(image.height), (box[3] - pad) / scale)
            if right - left >= self.min_side / 2 and bottom - top >= self.min_side / 2:  # mostly inside the image
                found.append(FaceBox(round(left), round(top), round(right - left), round(bottom - top)))
        return sorted(found, key=lambda box: box.width * box.height, reverse=True)


DETECTORS = {"mtcnn": MtcnnFinder, "haar": FaceFinder}  # data.face_detector


def make_finder(name: str = "mtcnn", **options) -> FaceFinder | MtcnnFinder:
    """The detector `data.face_detector` names; options go to its constructor."""
    if name not in DETECTORS:
        raise ValueError(f"face detector must be one of {', '.join(DETECTORS)}, got {name!r}")
    return DETECTORS[name](**options)


def square_crop(image: Image.Image, box: FaceBox, margin: float = 0.25) -> Image.Image:
    """The face as a square: the box's larger side plus `margin` of it on every side, centred on the
    box and moved (not shrunk) to stay inside the image where it can."""
    side = round(max(box.width, box.height) * (1 + 2 * margin))
    side = min(side, max(image.size))
    cx, cy = box.center
    left = int(round(min(max(cx - side / 2, 0), max(image.width - side, 0))))
    top = int(round(min(max(cy - side / 2, 0), max(image.height - side, 0))))
    return image.crop((left, top, left + side, top + side))


NO_FACE_WARNING = "no face found: not judged (the model judges faces: crop the face, or judge the whole picture)"
FIND_FACES_ADVICE = "find the faces first (CLI --faces, the app's 'Find the faces')"


def whole_picture_warning(image: Image.Image, boxes: list[FaceBox], min_share: float) -> str | None:
    """A whole-picture model's warning for a picture that is not a face: none found, or the largest face's
    box covers less than `min_share` of the picture. On facebench's 256 px face crops, the kind of picture
    such a model is trained on, MTCNN's box covers a median 22-52 % per source and class, under 15 % in
    0.6 % of them (benchmarks/RESULTS.md "Face finding"). None when the picture is a face."""
    if not boxes:
        return (
            f"no face found: this model judges pictures of one face, its answer here says little; {FIND_FACES_ADVICE}"  # noqa: E501
        )
    share = boxes[0].width * boxes[0].height / (image.width * image.height)
    if share >= min_share:
        return None
    return (f"the largest face fills {share:.0%} of the picture (this model judges pictures the face fills, "
            f"warned below {min_share:.0%}): its answer is about the picture, not the face; "
            f"{FIND_FACES_ADVICE}")  # fmt: skip


SUMMARY_RULES = ("any", "all")  # image-level verdict: positive class if any face / every face is judged so


def find_faces(finder: FaceFinder, images: list[Image.Image], threads: int = 2) -> list[list[FaceBox]]:
    """The faces of each image; OpenCV releases the GIL while it looks, so threads overlap."""
    if len(images) < 2:
        return [finder.find(image) for image in images]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(finder.find, images))


def judge_images(
    predictor, images: list[Image.Image], finder: FaceFinder, margin: float = 0.25, rule: str = "any",
    batch_size: int = 64,
) -> list[dict]:  # fmt: skip
    """Crop mode's answer for each picture (image_answer): its faces found, each cropped square with
    `margin` and judged on its own, the crops of all pictures in batches of `batch_size`."""
    boxes = find_faces(finder, images)
    crops = [square_crop(image, box, margin) for image, found in zip(images, boxes) for box in found]
    records = iter(predictor.predict_records(crops, batch_size) if crops else [])
    answers = []
    for found in boxes:
        faces = [{"box": box.as_dict(), **next(records)} for box in found]
        answers.append(image_answer(faces, predictor.class_names, rule, predictor.engine))
    return answers


def image_answer(faces: list[dict], class_names: list[str], rule: str, engine: str) -> dict:
    """A picture's answer from its faces' answers (largest face first):
    {"label", "p_<class>"..., "warnings", "engine", "expert", "expert_reason", "faces": [{"box", "label",
    "p_<class>"..., "warnings", "engine", "expert", "expert_reason"}]}.

    `label` follows `rule` (image_verdict). The picture's probabilities and warnings are those of
    its deciding face (and so are its expert and the reason): with "any", the face most likely of the
    first (AI) class, so the picture is AI exactly when that face is; with "all", the least likely one.
    No face found: no label, no probabilities, no expert, and NO_FACE_WARNING; never a guess."""
    if not faces:
        return {"label": None, **{f"p_{name}": None for name in class_names}, "warnings": [NO_FACE_WARNING],
                "engine": engine, "expert": None, "expert_reason": None, "faces": []}  # fmt: skip
    key = f"p_{class_names[0]}"
    deciding = (max if rule == "any" else min)(faces, key=lambda face: face[key])
    probabilities = {f"p_{name}": deciding[f"p_{name}"] for name in class_names}
    label = image_verdict(faces, class_names, rule)
    return {"label": label, **probabilities, "warnings": list(deciding["warnings"]), "engine": engine,
            "expert": deciding["expert"], "expert_reason": deciding["expert_reason"], "faces": faces}  # fmt: skip


def image_verdict(faces: list[dict], class_names: list[str], rule: str = "any") -> str | None:
    """The image-level label from its faces' labels. Rule "any": the first (positive, AI) class when
    any face was judged so; "all": only when every face was. Otherwise the most frequent other label
    among the faces. None without faces."""
    from collections import Counter

    if rule not in SUMMARY_RULES:
        raise ValueError(f"summary rule must be one of {', '.join(SUMMARY_RULES)}, got {rule!r}")
    if not faces:
        return None
    positive = class_names[0]
    hits = [face["label"] == positive for face in faces]
    if any(hits) if rule == "any" else all(hits):
        return positive
    others = Counter(face["label"] for face in faces if face["label"] != positive)
    return others.most_common(1)[0][0] if others else class_names[1]


def draw_faces(image: Image.Image, faces: list[dict], class_names: list[str]) -> Image.Image:
    """A copy of `image` with each face's box and verdict drawn on it: red for the first (AI) class,
    green otherwise, numbered as listed."""
    from PIL import ImageDraw

    drawn = image.convert("RGB")
    draw = ImageDraw.Draw(drawn)
    width = max(2, round(max(image.size) / 200))
    for number, face in enumerate(faces, start=1):
        box, label = face["box"], face["label"]
        colour = (220, 30, 30) if label == class_names[0] else (20, 170, 60)
        corners = (box["left"], box["top"], box["left"] + box["width"], box["top"] + box["height"])
        draw.rectangle(corners, outline=colour, width=width)
        text = f"{number}: {label} {face[f'p_{label}']:.0%}"
        size = max(12, box["width"] // 7)
        draw.text((box["left"] + width, max(0, box["top"] - size - width)), text, fill=colour, font_size=size)
    return drawn
