"""search: find the references most like new images, with the trained fold models.

Reads   the images or directories given, ``--params`` (cv.folds, rerank, ensemble, extract),
        the fold checkpoints (``--models``), the reference features the pipeline saved
        (``--references``) and the folds' whitening (``--whitening``): nothing is re-embedded
        but the new images; a fold's model that did not make its reference features (its
        weights' fingerprint is not the one the feature file records: retrained since) is refused
Prints  for each image its top ``--top`` reference ids with fused scores, or JSON (``--json``)
Writes  with ``--metrics OUT.json``: the images searched and the wall time (``wall``: seconds,
        images per second)

    python -m stages.search photo.jpg [more.jpg | a_directory] [--top 10] [--json] [--bad-images skip]

A directory's entries that are not files are skipped and counted; an undecodable image is an
error naming it, or, with ``--bad-images skip``, left out and reported on stderr.
"""
from __future__ import annotations

import json

from retrieval.cli import parser, stage
from retrieval.config import load_params
from retrieval.embed.query import decodable, list_inputs, search_images
from retrieval.io import write_json
from retrieval.resources import set_threads
from retrieval.timing import Clock


@stage
def main(argv=None) -> int:
    clock = Clock(__name__ == "__main__")
    ap = parser(__doc__)
    ap.add_argument("images", nargs="+", help="image files or directories of images")
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--models", default="outputs/train/fold{fold}/model.pt", help="pattern with {fold}")
    ap.add_argument("--references", default="outputs/extract/fold{fold}/reference.npz", help="pattern with {fold}")
    ap.add_argument("--whitening", default="outputs/extract/fold{fold}/whitening.npz", help="pattern with {fold}")
    ap.add_argument("--metrics", metavar="OUT.json", help="write the wall time and images per second here")
    ap.add_argument("--bad-images", choices=("error", "skip"), default="error",
                    help="an undecodable image: error (default), or skip it and report it")
    args = ap.parse_args(argv)
    if args.top < 1:
        ap.error("--top must be >= 1")
    set_threads(0)  # every core this process may use
    images = decodable(list_inputs(args.images), args.bad_images)
    ref_ids, scores, idx = search_images(images, load_params(args.params), args.models, args.references,
                                         args.whitening, args.top)
    results = {str(img): [{"id": str(ref_ids[i]), "score": round(float(s), 6)}
                          for s, i in zip(srow, irow) if i >= 0]
               for img, srow, irow in zip(images, scores, idx)}
    if args.metrics:
        write_json(args.metrics, clock.stamp({"top": args.top}, images=len(images)))
    if args.json:
        print(json.dumps(results, ensure_ascii=False))
    else:
        for img, hits in results.items():
            print(img)
            for rank_, hit in enumerate(hits, 1):
                print(f"  {rank_:>3}  {hit['id']}  {hit['score']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
