"""Searching a bundle: the same embeddings and ranking as the pipeline's torch path, no torch loaded."""
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from bundle_helpers import torch_embed

from retrieval.bundle import Bundle, InputError, decode_image
from retrieval.data.images import IMAGE, scan_test
from retrieval.embed.whitening import apply_whitening
from retrieval.rank.fold_fusion import fuse_rankings
from retrieval.rank.chain import rank

ROOT = Path(__file__).resolve().parents[2]


def query_images(root: Path) -> tuple[list[str], list]:
    paths = scan_test(root, "query")[IMAGE].tolist()
    return paths, [decode_image((root / p).read_bytes(), p) for p in paths]


def pipeline_queries(source) -> dict[int, np.ndarray]:
    """Each fold's torch embeddings of the queries, whitened as extract whitens them."""
    params, folds, root = source
    paths = scan_test(root, "query")[IMAGE].tolist()
    out = {}
    for fold, ((model, meta),), (w,), _ in ((f, m, w, r) for f, (m, w, r) in folds.items()):
        e = torch_embed(model, meta, root, paths)
        out[fold] = apply_whitening(e, *w) if w is not None else e
    return out


def test_bundle_embeddings_equal_the_pipelines(bundle_source, built_bundle):
    _, images = query_images(bundle_source[2])
    got = Bundle.open(built_bundle).embed(images)
    for fold, want in pipeline_queries(bundle_source).items():
        cos = (got[fold] * want).sum(axis=1)
        assert cos.min() >= 0.9999, (fold, cos)


def test_search_ranks_as_the_pipeline_with_the_online_steps(bundle_source, built_bundle):
    # the pipeline: each fold's rank() with steps [dba, qe] over rerank.k, the folds fused as
    # the ensemble fuses them (weights 1 and 2); diffusion is offline and not in the bundle
    params, folds, root = bundle_source
    rp = params.rerank.model_copy(update={"steps": ["dba", "qe"]})
    queries = pipeline_queries(bundle_source)
    runs = [rank(queries[f], folds[f][2].embeddings, rp, rp.k) for f in (0, 1)]
    k = 6
    fused_s, fused_i = fuse_rankings([s for s, _ in runs], [i for _, i in runs], len(folds[0][2].ids), k, [1.0, 2.0])
    ids = folds[0][2].ids
    bundle = Bundle.open(built_bundle)
    got = bundle.search(query_images(root)[1], k)
    assert [[r for r, _ in row] for row in got] == [ids[row].tolist() for row in fused_i]
    # the score is the weighted mean cosine (a missing reference counting its list's floor): the
    # fused score plus the same constant for every reference of a query
    floors = sum(w * s.min(axis=1) for w, (s, _) in zip((1.0, 2.0), runs))
    want = (fused_s + floors[:, None]) / 3.0
    np.testing.assert_allclose([[s for _, s in row] for row in got], want, atol=2e-4)
    assert all(a[1] >= b[1] for row in got for a, b in zip(row, row[1:]))


def test_a_reference_image_finds_itself_first(bundle_source, built_bundle):
    root = bundle_source[2]
    refs = scan_test(root, "reference")
    bundle = Bundle.open(built_bundle)
    images = [decode_image((root / p).read_bytes(), p) for p in refs[IMAGE]]
    assert [row[0][0] for row in bundle.search(images, 1)] == refs["id"].tolist()


def test_k_beyond_the_references_gives_them_all_and_a_bad_k_is_refused(built_bundle, bundle_source):
    bundle = Bundle.open(built_bundle)
    _, images = query_images(bundle_source[2])
    rows = bundle.search(images[:2], 1000)
    assert [len(r) for r in rows] == [len(bundle.ids)] * 2 and sorted(r for r, _ in rows[0]) == sorted(bundle.ids)
    assert bundle.search([], 5) == []
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="k must be a positive integer"):
            bundle.search(images[:1], bad)
    with pytest.raises(InputError, match="image 0: expected a PIL image"):
        bundle.search([b"not an image"], 3)


def test_thumbnails_are_small_jpegs_of_each_reference(built_bundle):
    from PIL import Image
    import io

    bundle = Bundle.open(built_bundle)
    for ref_id in bundle.ids:
        im = Image.open(io.BytesIO(bundle.thumbnail(ref_id)))
        assert im.format == "JPEG" and max(im.size) <= 128
    assert bundle.thumbnail("no-such-id") is None


def test_open_and_search_load_no_torch(built_bundle, bundle_source):
    root = bundle_source[2]
    query = root / scan_test(root, "query")[IMAGE].iloc[0]
    code = textwrap.dedent(f"""
        import sys
        from retrieval.bundle import Bundle, decode_image
        b = Bundle.open({str(built_bundle)!r})
        hits = b.search([decode_image(open({str(query)!r}, "rb").read(), "q")], 3)
        assert len(hits[0]) == 3, hits
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "timm", "torchvision", "albumentations"))
        print("loaded:", heavy)
        assert not heavy, heavy
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
