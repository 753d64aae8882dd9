"""check: params.yaml and the data root checked before any other stage runs.

DVC removes a stage's outputs just before running it; this stage runs first (every later
stage depends on its ``--out``), so a params mistake stops the pipeline here, before any result
is removed or any time is spent.

Reads   ``--params`` (every key: unknown keys, types, ranges, checks across keys), the data
        root's layout (train/<class>/, test/query, test/reference: listed, not decoded), the
        backbone names and pretrained weights
Writes  ``--out``: one fixed line, the same whatever the params, so that a change of one
        section reruns only the stages that read it; ``--metrics`` (optional): counts (with
        ``skipped_train_files``: files under train/ not taken, loose, one folder too deep or
        not images, each logged) and the stage's wall time (``wall``), written only once every
        check passed. Test images in a subfolder of test/query or test/reference are refused.
Params  the whole of params.yaml
"""
from __future__ import annotations

import logging

from retrieval.checks import check_root, checked_folds, shared_test_ids
from retrieval.cli import stage, stage_args
from retrieval.data.images import data_unchanged, scan_test, scan_train, skipped_train_files
from retrieval.io import atomic_path, write_json
from retrieval.model.network import check_backbone
from retrieval.timing import Clock

PASSED = "params.yaml and data.root passed the checks\n"


@stage
def main(argv=None) -> int:
    clock = Clock(__name__ == "__main__")
    args, p = stage_args(__doc__, argv, required="--out", optional="--metrics")
    for backbone in p.model.backbones:
        check_backbone(backbone, p.model.pretrained)
    with data_unchanged(p.data.root, "check"):  # data changed meanwhile: refused
        check_root(p.data.root)
        folds = checked_folds(p, scan_train(p.data.root))
        skipped = skipped_train_files(p.data.root)  # logged by scan_train, counted here
        shared_test_ids(scan_test(p.data.root, "query"), scan_test(p.data.root, "reference"))
    with atomic_path(args.out) as tmp:
        tmp.write_text(PASSED)
    if args.metrics:
        write_json(args.metrics, clock.stamp({"train_images": len(folds), "classes": int(folds["label"].nunique()),
                                             "skipped_train_files": len(skipped)}))
    logging.getLogger("check").info("%s: %d classes in %d folds, %s", args.params, folds["label"].nunique(),
                                    p.cv.n_folds, PASSED.strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
