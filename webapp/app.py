"""Streamlit page: upload face images, get the model's verdict and class probabilities.

streamlit run webapp/app.py        (or `make app`)
"""

from __future__ import annotations

import streamlit as st

from aivsreal.images import BadImageError
from aivsreal.predict import DEFAULT_MODEL
from aivsreal.predictor import Predictor, load_predictor

UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"]
CONFIDENT = 0.8  # balloons only for a confident "real"


@st.cache_resource(show_spinner="Loading model...")
def cached_predictor(source: str) -> Predictor:
    return load_predictor(source)


def model_ui() -> Predictor | None:
    source = st.sidebar.text_input("Model (MLflow URI or folder)", DEFAULT_MODEL)
    try:
        predictor = cached_predictor(source)
    except Exception as error:  # no store, no alias yet, bad folder: say how to get one
        st.error(
            f"No model at `{source}` yet ({type(error).__name__}). Train and register one with "
            "`make pipeline` (or `dvc repro`), or enter the folder `models/model`."
        )
        return None
    config = predictor.config
    st.sidebar.markdown(
        f"**Classes:** {', '.join(config.class_names)}  \n**Input:** {config.image_size} px  \n"
        f"**Threshold (p_{config.class_names[0]}):** {config.threshold:.2f}  \n"
        f"**Pretrained weights:** {config.pretrained_used}"
    )
    return predictor


def result_ui(name: str, data: bytes, predictor: Predictor) -> None:
    try:
        image = predictor.load(data)
    except BadImageError as error:
        st.error(f"**{name}**: cannot use this file: {error}")
        return
    record = predictor.predict_records([image])[0]
    left, right = st.columns([1, 2])
    left.image(image, caption=name, use_container_width=True)
    label = record["label"]
    right.subheader(f"Verdict: {label.upper()}")
    for class_name in predictor.class_names:
        probability = record[f"p_{class_name}"]
        right.progress(probability, text=f"{class_name}: {probability:.1%}")
    if label == predictor.class_names[0]:
        right.warning("This face looks AI-generated.")
    elif record[f"p_{label}"] >= CONFIDENT:
        right.success("This looks like a real photo.")
        st.balloons()
    else:
        right.info("Probably real, but the model is not confident.")


def main() -> None:
    st.set_page_config(page_title="AI or real?", page_icon=":mag:")
    st.title("AI-generated or real face?")
    predictor = model_ui()
    if predictor is None:
        return
    uploads = st.file_uploader("Upload face images", type=UPLOAD_TYPES, accept_multiple_files=True)
    for upload in uploads or []:
        result_ui(upload.name, upload.getvalue(), predictor)


main()
