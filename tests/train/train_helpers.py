"""Helpers of the training tests (the fixtures are in conftest.py)."""
import numpy as np
import pandas as pd
from PIL import Image

RISING = [0.01 * i for i in range(1, 100)]  # each validation above the one before: the last is kept


def make_folds(root, n_classes=4, per_class=6) -> pd.DataFrame:
    """Images of ``n_classes`` colours under ``root/train``: classes 0-1 are fold 0, the others fold 1;
    odd images are references, even ones queries."""
    rng, rows = np.random.default_rng(0), []
    for c in range(n_classes):
        colour = rng.integers(0, 255, 3)
        for i in range(per_class):
            img = np.clip(colour + rng.normal(0, 30, (48, 48, 3)), 0, 255).astype(np.uint8)
            path = root / f"train/c{c}/{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(path)
            role = "reference" if i % 2 else "query"
            rows.append({"image": f"train/c{c}/{i}.png", "id": f"c{c}_{i}", "label": f"c{c}",
                         "fold": int(c >= 2), "role": role})
    return pd.DataFrame(rows)


def record(ap) -> dict:
    """A validation record whose queries have APs ``ap``."""
    return {"map@1000": float(np.mean(ap)), "p@1": 1.0, "query_ap": list(ap)}
