"""Resuming a killed training run: the run's fingerprint (params, data, code, library versions),
the RNG state, and the state file ``last.pt`` that is read back only by a run of the same
fingerprint."""
from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import random
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from retrieval.config import Params
from retrieval.io import atomic_path, save_torch

log = logging.getLogger(__name__)


STATE_FILE = "last.pt"  # the resume state inside resume_dir
STATE_VERSION = 4  # 4: validation records carry each query's AP
PACKAGE = Path(__file__).resolve().parents[1]  # retrieval/
TRAIN_ENTRY = PACKAGE / "train" / "fold.py"  # the train stage's train_fold


def code_files(entry: Path = TRAIN_ENTRY) -> list[Path]:
    """The files of the ``retrieval`` package that ``entry`` imports, directly or not, itself
    included: the code whose change makes a saved state another run's. Read from the imports
    (AST), so no module can be left out by hand."""
    root = PACKAGE.parent
    seen, todo = {entry}, [entry]
    while todo:
        for node in ast.walk(ast.parse(todo.pop().read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                f = root / (name.replace(".", "/") + ".py")
                if name.startswith("retrieval.") and f.is_file() and f not in seen:
                    seen.add(f)
                    todo.append(f)
    return sorted(seen)


def run_fingerprint(params: Params, fold: int, root: str | Path, train_df: pd.DataFrame,
                    valid_df: pd.DataFrame) -> str:
    """sha256 of everything that decides a fold's training run: seed, fold, the model and train
    params, the training and validation images (path, label, role, byte size), the training
    code and the torch / timm / albumentations versions."""
    import albumentations
    import timm

    def images(df: pd.DataFrame) -> list:
        cols = [c for c in ("image", "label", "role") if c in df]
        sizes = [os.stat(Path(root) / i).st_size if (Path(root) / i).is_file() else -1 for i in df["image"]]
        return [list(map(str, row)) + [size] for row, size in zip(df[cols].itertuples(index=False), sizes)]

    doc = {
        "version": STATE_VERSION, "seed": params.seed, "fold": fold,
        "model": params.model.model_dump(mode="json"), "train": params.train.model_dump(mode="json"),
        "train_images": images(train_df), "valid_images": images(valid_df),
        "code": {f.relative_to(PACKAGE).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest() for f in code_files()},
        "versions": [torch.__version__, timm.__version__, albumentations.__version__],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def rng_state(loader_generator: torch.Generator) -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "loader": loader_generator.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }


def set_rng_state(state: dict, loader_generator: torch.Generator) -> None:
    loader_generator.set_state(state["loader"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])


def _read_state(path: Path) -> dict | None:
    """The dict saved at ``path`` if it is a resume state of this format, else None; raises
    whatever makes the file unreadable."""
    # weights_only: the state holds tensors and plain Python values only
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state if isinstance(state, dict) and state.get("version") == STATE_VERSION else None


def load_resume_state(path: Path, fingerprint: str) -> dict | None:
    """The state saved at ``path`` if it belongs to this run (same fingerprint), else None (logged)."""
    if not path.is_file():
        return None
    try:
        state = _read_state(path)
    except Exception as err:  # noqa: BLE001 - any unreadable state means: start afresh
        log.warning("%s: unreadable resume state (%s: %s); ignored, training from scratch",
                    path, type(err).__name__, err)
        return None
    if state is None or state.get("fingerprint") != fingerprint:
        log.warning("%s: resume state of other params, data or code; ignored, training from scratch", path)
        return None
    return state


def state_fingerprint(path: Path) -> str | None:
    """The fingerprint of the state saved at ``path`` (None if it cannot be read)."""
    try:
        state = _read_state(path)
    except Exception:  # noqa: BLE001 - unreadable: no run's state
        return None
    return None if state is None else state.get("fingerprint")


def save_resume_state(path: Path, fingerprint: str, progress, state: dict) -> None:
    """Write the state after ``progress.epoch`` atomically: the progress (history, best record and
    weights, start weights), ``state`` (modules, optimiser, RNG) and the run's fingerprint."""
    with atomic_path(path) as tmp:
        save_torch({"version": STATE_VERSION, "fingerprint": fingerprint, "epoch": progress.epoch,
                    "history": progress.history, "best": progress.best, "best_state": progress.best_state,
                    "start_state": progress.start_state, "notes": progress.notes, **state}, tmp)
