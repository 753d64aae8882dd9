"""bundle: the pipeline exported for search without torch (outputs/bundle, read by retrieval.bundle.Bundle).

Reads   ``--models`` (each fold's model.pt), ``--references`` (its reference.npz) and
        ``--whitening`` (its whitening.npz): patterns with {fold}, filled with each of cv.folds;
        ``--ensemble-metrics`` (the cross-validated score, copied into the metrics) and the
        reference images under data.root (thumbnails)
Writes  ``--out``: a bundle folder (each fold's models as ONNX, whitening, reference embeddings
        in faiss indexes, thumbnails, TTA and online re-ranking settings, a params snapshot,
        manifest.json with every file's sha256), written beside and swapped in whole;
        ``--metrics``: references, folds, the steps left out, the CV score, the wall time
Refuses reference features that the fold's model did not make (model fingerprints), or whose
        reference ids differ between folds (exit 2)
Params  data.root, cv.folds, extract, rerank, ensemble (the online steps: dba, qe; diffusion and
        kreciprocal rank all queries at once and are left out)
"""
from __future__ import annotations

import logging

from retrieval.bundle.edit import replace_bundle
from retrieval.bundle.export import bundle_parts
from retrieval.cli import stage, stage_args
from retrieval.embed.feature_file import check_made_by, load_features
from retrieval.embed.whitening import load_whitening
from retrieval.io import InputError, read_json, write_json
from retrieval.model.checkpoints import model_fingerprint, models_from_checkpoint
from retrieval.resources import set_threads
from retrieval.timing import Clock


@stage
def main(argv=None) -> int:
    clock = Clock(__name__ == "__main__")
    args, p = stage_args(__doc__, argv, required="--models --references --whitening --ensemble-metrics --out --metrics")
    set_threads(0)
    folds = {}
    for fold in p.cv.folds:
        model_path, ref_path, white_path = (a.format(fold=fold) for a in (args.models, args.references, args.whitening))
        models, refs, whitenings = models_from_checkpoint(model_path), load_features(ref_path), load_whitening(white_path)
        check_made_by(refs, ref_path, model_fingerprint(models), model_path)
        if len(whitenings) != len(models):
            raise InputError(f"{white_path}: {len(whitenings)} whitenings for {len(models)} backbones; re-run extract")
        folds[fold] = (models, whitenings, refs)
    parts = bundle_parts(p, folds)
    replace_bundle(args.out, parts)
    cv = read_json(args.ensemble_metrics).get("cv", {})
    info = {"references": len(parts.ids), "folds": list(folds), "steps": parts.settings["rerank"]["steps"],
            "offline_steps_left_out": parts.settings["rerank"]["offline_steps_left_out"], "cv": cv}
    write_json(args.metrics, clock.stamp(info))
    logging.getLogger("bundle").info("bundle of %d folds, %d references -> %s", len(folds), len(parts.ids), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
