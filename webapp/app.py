"""Streamlit page: upload face images, get a live verdict, class probabilities and a heatmap.

With "Find the faces" on (the default for a model trained with `data.faces: crop`), each picture's
faces are found and drawn with their verdicts, and each face gets its own probabilities and
Grad-CAM; a picture with no face found gets a warning, not a verdict.

Run from the project root:  streamlit run webapp/app.py   (or `make app`)
The model defaults to params.yaml's registered model at @champion in the project's MLflow store;
AIVSREAL_MODEL (an MLflow URI or a saved-model folder) changes the default.
"""

from __future__ import annotations

import os

import streamlit as st

from aivsreal.engines import ENGINE_NAMES
from aivsreal.experts import BOTH, SINGLE
from aivsreal.explain import grad_cam, overlay
from aivsreal.faces import FaceBox, draw_faces, square_crop
from aivsreal.images import IMAGE_SUFFIXES, BadImageError
from aivsreal.input_range import DEMO_NOTICE
from aivsreal.model import INPUT_FILTERS
from aivsreal.predictor import Predictor
from aivsreal.serving.artifacts import load_predictor
from aivsreal.tracking import CHAMPION, NO_MODEL_HINT, configure_tracking, default_model_uri, model_card, require_store

UPLOAD_TYPES = [suffix.lstrip(".") for suffix in IMAGE_SUFFIXES]  # what load_image reads
CONFIDENT = 0.8  # balloons only for a confident "real"


@st.cache_resource(show_spinner="Loading model...")
def cached_predictor(source: str) -> Predictor:
    """Loaded once per source and shared by every upload and session."""
    return load_predictor(source)


@st.cache_data(ttl=60, show_spinner=False)
def cached_card(source: str) -> dict:
    require_store(configure_tracking())  # reading the card must not create a store
    return model_card(source)


def model_source_ui() -> str:
    default = os.environ.get("AIVSREAL_MODEL") or default_model_uri()
    st.sidebar.header("Model")
    registered = default.startswith("models:/")
    kind = st.sidebar.radio(
        "Source", ["Registered model", "Local folder"], index=0 if registered else 1, horizontal=True
    )
    if kind == "Local folder":
        return st.sidebar.text_input(
            "Folder with weights.pt and config.json", default if not registered else "models/model"
        )
    if not registered:
        default = default_model_uri()
    name, _, choice = default.removeprefix("models:/").replace("/", "@").partition("@")
    name = st.sidebar.text_input("Registered name", name)
    choice = st.sidebar.text_input("Alias or version", choice or CHAMPION)
    return f"models:/{name}/{choice}" if choice.isdigit() else f"models:/{name}@{choice}"


def load_model_ui(source: str) -> Predictor | None:
    try:
        return cached_predictor(source)
    except Exception as error:  # no store yet, no alias yet, wrong folder: say how to get a model
        st.warning(
            f"No model found at `{source}`.\n\n"
            f"{NO_MODEL_HINT}, then reload this page. Or choose *Local folder* and enter `models/model`."
        )
        with st.expander("Details"):
            st.code(f"{type(error).__name__}: {str(error)[:500]}")
        return None


def model_card_ui(source: str, predictor: Predictor) -> None:
    config = predictor.config
    try:
        card = cached_card(source)
    except Exception:  # the card is a courtesy: never block predictions on it
        card = {}
    lines = []
    if card:
        aliases = f" (@{', @'.join(card['aliases'])})" if card["aliases"] else ""
        lines += [f"**{card['name']}** version {card['version']}{aliases}", f"Registered: {card['registered']}"]
        if "data" in card:
            lines += [f"Data: `{card['data']}` (hash {card['data_hash']})", f"Code: git {card['git_commit']}"]
            lines += [f"Test {name}: {value:.3f}" for name, value in card["test_metrics"].items()
                      if name in ("accuracy", "roc_auc", "average_precision")]  # fmt: skip
    else:
        lines.append(f"Model: `{source}`")
    lines += [
        f"Pretrained weights: {config.pretrained_used}",
        f"Input: {INPUT_FILTERS[config.input_filter].description}, {config.eval_crop} px centre crop"
        + (f" of {config.resize} px" if config.resize else ""),
        f"Decision threshold: AI when p({config.class_names[0]}) ≥ {config.threshold:.2f}",
        f"Runs on: {ENGINE_NAMES[predictor.engine]}",
        "Experts: "
        + (
            f"two: original lossless files of at least {predictor.forensic.config.eval_crop} px go to the forensic "
            "expert (pixel-level traces)"
            + (", averaged with the wild expert" if config.forensic_mix == "mean" else "")
            + ", everything else to the wild expert"
            if predictor.forensic
            else "one"
        ),
        "Face vote: "
        + (
            f"on: p(AI) averaged with the share of AI faces among the {predictor.face_vote.k} training faces "
            "nearest in a face network's description (model.face_vote)"
            if predictor.face_vote
            else "off"
        ),
        "Trained on: "
        + (
            "the faces found in each picture (data.faces: crop)"
            if config.faces == "crop"
            else "the pictures as given (data.faces: whole)"
        ),
    ]
    if config.demo:
        lines.append(f"**Demo model**: {DEMO_NOTICE}")
    st.sidebar.header("Model card")
    st.sidebar.markdown("  \n".join(lines))


def result_ui(name: str, data: bytes, predictor: Predictor, show_heatmap: bool, faces: bool) -> bool:
    """One uploaded file; returns True for a confident 'real' (balloons)."""
    try:
        image = predictor.load(data)
    except BadImageError as error:
        st.error(f"**{name}**: cannot use this file: {error}. The other files are still checked.")
        return False
    if faces:
        return faces_ui(name, image, predictor, show_heatmap)
    record = predictor.answer([image], "whole")[0]
    left, right = st.columns([1, 1])
    if show_heatmap:
        heatmap, seen = grad_cam(predictor, image, predictor.class_names.index(record["label"]))
        left.image(overlay(seen, heatmap), caption=f"{name}: Grad-CAM for '{record['label']}'", width="stretch")
    else:
        left.image(image, caption=name, width="stretch")
    return verdict_ui(right, record, predictor, "This face")


def verdict_ui(place, record: dict, predictor: Predictor, subject: str) -> bool:
    """Verdict, probability bars, warnings and a coloured conclusion; True for a confident 'real'."""
    label, first = record["label"], predictor.class_names[0]
    place.subheader(f"Verdict: {'AI-generated' if label == first else label.upper()}")
    for class_name in predictor.class_names:
        probability = record[f"p_{class_name}"]
        place.progress(probability, text=f"p({class_name}) = {probability:.1%}")
    if record["expert"] != SINGLE:  # a two-expert model: which one answered, and why (experts.py)
        who = "both experts, averaged" if record["expert"] == BOTH else f"the {record['expert']} expert"
        place.caption(f"Answered by **{who}**: {record['expert_reason']}")
    for warning in record["warnings"]:  # outside what the model was validated on (input_range.py)
        place.caption(f"⚠️ {warning}")
    if label == first:
        place.warning(f"{subject} looks AI-generated (p = {record[f'p_{first}']:.1%}).")
        return False
    if record[f"p_{label}"] >= CONFIDENT and not record["warnings"] and not predictor.config.demo:
        place.success(f"{subject} looks like a real photo (p = {record[f'p_{label}']:.1%}).")
        return True
    place.info("Probably real, but the model is not confident.")
    return False


def faces_ui(name: str, image, predictor: Predictor, show_heatmap: bool) -> bool:
    """Face mode: the picture with a box and verdict on each face found, the picture's verdict by the
    model's face_summary, then each face with its probabilities (and Grad-CAM)."""
    answer = predictor.answer([image], "crop")[0]
    if not answer["faces"]:
        st.image(image, caption=name, width=320)
        st.warning(f"**{name}**: {answer['warnings'][0]}", icon="⚠️")
        return False
    left, right = st.columns([1, 1])
    left.image(draw_faces(image, answer["faces"], predictor.class_names), caption=name, width="stretch")
    rule = {"any": "any face", "all": "every face"}[predictor.config.face_summary]
    right.markdown(f"**{len(answer['faces'])} face(s) found.** The picture is called {predictor.class_names[0]} "
                   f"when {rule} is; its probabilities are those of its deciding face.")  # fmt: skip
    confident = verdict_ui(right, answer, predictor, "This picture")
    for number, face in enumerate(answer["faces"], start=1):
        crop = square_crop(image, FaceBox(**face["box"]), predictor.config.face_margin)
        label = face["label"]
        with st.expander(f"Face {number}: {label} (p_{label} = {face[f'p_{label}']:.1%})", expanded=number == 1):
            face_left, face_right = st.columns([1, 2])
            if show_heatmap:
                heatmap, seen = grad_cam(predictor, crop, predictor.class_names.index(face["label"]))
                face_left.image(overlay(seen, heatmap), caption=f"face {number}: Grad-CAM", width="stretch")
            else:
                face_left.image(crop, caption=f"face {number}", width="stretch")
            verdict_ui(face_right, face, predictor, "This face")
    return confident


def main() -> None:
    st.set_page_config(page_title="AI or real?", page_icon=":mag:", layout="wide")
    st.title("AI-generated or real face?")
    source = model_source_ui()
    predictor = load_model_ui(source)
    if predictor is None:
        return
    model_card_ui(source, predictor)
    if predictor.config.demo:
        st.warning(f"This is a {DEMO_NOTICE}.", icon="⚠️")
    show_heatmap = st.sidebar.toggle("Show Grad-CAM heatmap", value=True, help="Regions that drove the decision")
    faces = st.sidebar.toggle(
        "Find the faces", value=predictor.config.faces == "crop",
        help="Find each face in the picture and judge each one (on by default for a model trained on face crops "
        "found this way: data.faces: crop)",
    )  # fmt: skip
    uploads = st.file_uploader("Upload face images", type=UPLOAD_TYPES, accept_multiple_files=True)
    if not uploads:
        st.info("Upload one or more face images (JPEG, PNG, WebP, ...) to get a verdict.")
        return
    confident_real = [result_ui(u.name, u.getvalue(), predictor, show_heatmap, faces) for u in uploads]
    if any(confident_real):
        st.balloons()


if __name__ == "__main__":  # streamlit runs the page as __main__
    main()
