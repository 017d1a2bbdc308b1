"""Built-in sample data: real LFW faces vs faces drawn from an eigenface generator fitted to them.

Real faces: the 100 LFW faces scikit-image ships (25x25 greyscale). No mirror images: a
mirrored twin is a near-duplicate that could sit in train while its original is tested.
"AI" faces: an actual generative model, a Gaussian over the principal components
of those faces (an eigenface sampler), fitted when the sample is made. Both classes then
get the same post-processing (bicubic upscale, the same noise, uncompressed 8-bit PNG), so the only
difference left is how the face was made. Deterministic for a seed; takes about a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from skimage.data import lfw_subset
from sklearn.decomposition import PCA

N_LFW_FACES = 100  # lfw_subset(): the first 100 of its 200 images are faces


def real_faces() -> np.ndarray:
    """(100, 25, 25) floats in [0, 1]: the LFW faces."""
    return lfw_subset()[:N_LFW_FACES]


def eigenface_samples(faces: np.ndarray, n: int, components: int, seed: int) -> np.ndarray:
    """Draw n new faces from a Gaussian fitted in PCA space to `faces`."""
    n_faces, height, width = faces.shape
    components = min(components, n_faces - 1)
    pca = PCA(n_components=components, random_state=seed).fit(faces.reshape(n_faces, -1))
    rng = np.random.default_rng(seed)
    codes = rng.standard_normal((n, components)) * np.sqrt(pca.explained_variance_)
    return np.clip(pca.inverse_transform(codes), 0, 1).reshape(n, height, width)


def postprocess(face: np.ndarray, size: int, noise_std: float, rng: np.random.Generator) -> Image.Image:
    """The same finishing for both classes: upscale, sensor-like noise, 8-bit greyscale."""
    image = Image.fromarray((face * 255).astype(np.float32), mode="F").resize((size, size), Image.BICUBIC)
    array = np.asarray(image, dtype=np.float64) + rng.normal(0, noise_std, (size, size))
    return Image.fromarray(np.clip(array + 0.5, 0, 255).astype(np.uint8), mode="L")


def make_sample(out_dir: Path, n_per_class: int, size: int, components: int, noise_std: float, seed: int) -> dict:
    """Write out_dir/{ai,real}/*.png; returns counts per class."""
    faces = real_faces()
    if n_per_class > len(faces):
        raise ValueError(f"sample.n_per_class={n_per_class}: at most {len(faces)} real faces are available")
    rng = np.random.default_rng(seed)
    real = faces[rng.permutation(len(faces))[:n_per_class]]
    fake = eigenface_samples(faces, n_per_class, components, seed)
    counts = {}
    for label, batch in (("ai", fake), ("real", real)):
        folder = Path(out_dir) / label
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png"):
            old.unlink()
        for i, face in enumerate(batch):
            # Stored uncompressed: a compressed size would leak how smooth (how "generated") a face is.
            postprocess(face, size, noise_std, rng).save(folder / f"{label}_{i:04d}.png", compress_level=0)
        counts[label] = len(batch)
    return counts
