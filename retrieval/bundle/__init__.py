"""The exported pipeline ("bundle"): the folds' models in ONNX, their whitening, the reference
embeddings in faiss indexes, the TTA and online re-ranking settings, checked by a manifest;
searched without torch (ONNX Runtime, faiss, numpy, PIL).

    from retrieval.bundle import Bundle, decode_image, add_references, remove_references
    bundle = Bundle.open("outputs/bundle")
    bundle.search([decode_image(data, "photo.jpg")], k=10)  # [[(reference id, score), ...]]

Written by the ``bundle`` stage (:mod:`retrieval.bundle.export`, which needs torch); stage
scripts import the submodules themselves (tests/test_dvc_contract.py follows those imports).
"""
from retrieval.bundle.edit import add_references, remove_references
from retrieval.bundle.manifest import FORMAT_VERSION
from retrieval.bundle.preprocess import decode_image
from retrieval.bundle.store import Bundle
from retrieval.io import InputError

__all__ = ["Bundle", "FORMAT_VERSION", "InputError", "add_references", "decode_image", "remove_references"]
