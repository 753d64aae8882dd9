"""The retrieval report: what the pipeline retrieves, for people to look at.

Pure table functions (:func:`class_table`, :func:`confused_pairs`, :func:`pick_examples`) and
two renderers: :func:`render_html` (one self-contained page, thumbnails embedded as JPEG data
URIs; the run's charts from :mod:`retrieval.results.run_section`) and
:func:`retrieval.results.thumbnails.render_grid` (a PNG of query rows, each followed by its top
references, with green and red frames where labels are known).
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from retrieval.data.folds import QUERY
from retrieval.data.images import ID, IMAGE, scan_test
from retrieval.embed.feature_file import load_features
from retrieval.io import InputError, atomic_path
from retrieval.metrics import MAP, P1, ranking_ap
from retrieval.rank.ranking_file import load_ranking
from retrieval.results.submission import read_submission
from retrieval.results.thumbnails import RIGHT, WRONG, data_uri, mark, render_grid, thumbnail

@dataclass
class Example:
    """One query row: its image, label (None on the test set) and top references."""
    query_id: str
    query_image: Path
    query_label: str | None
    ref_ids: list[str]
    ref_images: list[Path]
    ref_labels: list[str | None]
    scores: list[float] | None  # None: the ranks are shown instead (a submission has no scores)
    ap: float | None = None
    fold: int | None = None
    tags: list[str] = field(default_factory=list)


def class_table(query_labels: Sequence[str], ap: np.ndarray, first_hit: np.ndarray) -> pd.DataFrame:
    """Per query class: queries, AP (mean over its queries) and P@1; hardest (lowest AP) first."""
    df = pd.DataFrame({"label": np.asarray(query_labels, dtype=str), "ap": np.asarray(ap, float),
                       "hit": np.asarray(first_hit, bool)})
    out = df.groupby("label").agg(queries=("ap", "size"), ap=("ap", "mean"), p_at_1=("hit", "mean"))
    return out.reset_index().sort_values(["ap", "label"], kind="stable").reset_index(drop=True)


def confused_pairs(ranked: np.ndarray, query_labels: Sequence[str], ref_labels: Sequence[str],
                   top: int, limit: int = 10) -> pd.DataFrame:
    """The (query class, retrieved class) pairs most often wrong in the first ``top`` places.

    Counts, over all queries, the references of another class among their first ``top``
    (padding ``-1`` ignored); ``share`` is that count over the query class's ``queries x top``
    places. Most frequent first, ties by class names.
    """
    ql, rl = np.asarray(query_labels, dtype=str), np.asarray(ref_labels, dtype=str)
    cols = np.asarray(ranked)[:, :top]
    rows = []
    for q, row in zip(ql, cols):
        for r in row[row >= 0]:
            if rl[r] != q:
                rows.append((q, rl[r]))
    if not rows:
        return pd.DataFrame(columns=["query_label", "retrieved_label", "count", "share"])
    df = pd.DataFrame(rows, columns=["query_label", "retrieved_label"])
    out = df.value_counts().rename("count").reset_index()
    per_class = pd.Series(ql).value_counts()
    out["share"] = out["count"] / (out["query_label"].map(per_class) * top)
    return _most_confused_first(out, limit)


def _most_confused_first(pairs: pd.DataFrame, limit: int) -> pd.DataFrame:
    """The first ``limit`` pairs by count, most first, ties by class names."""
    pairs = pairs.sort_values(["count", "query_label", "retrieved_label"], ascending=[False, True, True],
                              kind="stable")
    return pairs.head(limit).reset_index(drop=True)


def pick_examples(ap: np.ndarray, n: int) -> np.ndarray:
    """Indices of ``n`` queries spread over the AP range, worst first: the queries at evenly
    spaced ranks of the ascending AP order (ties by index), so the page shows failures,
    middling cases and successes rather than a random handful."""
    order = np.lexsort((np.arange(len(ap)), np.asarray(ap)))
    if n >= len(order):
        return order
    picks = np.unique(np.round(np.linspace(0, len(order) - 1, n)).astype(int))
    return order[picks]


# -- rendering --------------------------------------------------------------------------------

def _css(thumb: int) -> str:
    """The page's style; thumbnails shown at their own size ``thumb`` (``report.thumb``) in a 4 px frame."""
    return CSS.replace("THUMB", str(thumb)).replace("CELL", str(thumb + 8))


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1f2328;max-width:1400px}
h1{margin-bottom:4px} h2{margin-top:32px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0} td,th{padding:3px 10px;border-bottom:1px solid #eaeef2;text-align:left}
th{background:#f6f8fa} td.num{text-align:right;font-variant-numeric:tabular-nums}
.row{display:flex;align-items:flex-start;gap:6px;margin:10px 0;flex-wrap:nowrap;overflow-x:auto}
.cell{display:flex;flex-direction:column;align-items:center;font-size:11px;width:CELLpx;flex:none}
.cell img{border:4px solid #8c8c8c;width:THUMBpx;height:THUMBpx}
.q img{border-color:#1f6feb}.ok img{border-color:#2ea043}.bad img{border-color:#cf222e}
.cell span{max-width:CELLpx;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.meta{color:#57606a;font-size:13px}.sep{width:10px;flex:none}
.charts{display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start;margin:8px 0}
"""


def _cell(uri: str, cls: str, lines: Sequence[str]) -> str:
    text = "".join(f"<span title='{html.escape(t, quote=True)}'>{html.escape(t)}</span>" for t in lines)
    return f"<div class='cell {cls}'><img src='{uri}' alt=''>{text}</div>"


def _example_row(e: Example, thumb: int) -> str:
    head = [e.query_id] + ([f"class {e.query_label}"] if e.query_label is not None else [])
    if e.ap is not None:
        head.append(f"AP {e.ap:.3f}" + (f" · fold {e.fold}" if e.fold is not None else ""))
    cells = [_cell(data_uri(thumbnail(e.query_image, thumb)), "q", head), "<div class='sep'></div>"]
    scores = e.scores if e.scores is not None else [None] * len(e.ref_ids)
    for n, (rid, img, lab, s) in enumerate(zip(e.ref_ids, e.ref_images, e.ref_labels, scores), 1):
        colour = mark(e.query_label, lab)
        cls = "ok" if colour == RIGHT else "bad" if colour == WRONG else ""
        lines = [rid, f"{s:.3f}" if s is not None else f"#{n}"] + ([lab] if lab is not None and e.query_label is not None else [])
        cells.append(_cell(data_uri(thumbnail(img, thumb)), cls, lines))
    return "<div class='row'>" + "".join(cells) + "</div>"


def _table(df: pd.DataFrame, floats: Sequence[str] = ()) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        tds = []
        for c, v in zip(df.columns, row):
            if c in floats:
                tds.append(f"<td class='num'>{v:.3f}</td>")
            elif isinstance(v, (int, np.integer)):
                tds.append(f"<td class='num'>{v}</td>")
            else:
                tds.append(f"<td>{html.escape(str(v))}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def render_html(summary: pd.DataFrame, valid_examples: Sequence[Example], classes: pd.DataFrame,
                pairs: pd.DataFrame, test_examples: Sequence[Example], grid_name: str, thumb: int,
                title: str = "Retrieval report", run_html: str = "") -> str:
    """The whole page as one string: summary, the run (``run_html``: charts, placed as given),
    validation examples (right/wrong marked), per-class AP (hardest first), the most confused
    pairs, and test examples (no labels); ``thumb``: the thumbnails' side (``report.thumb``)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_css(thumb)}</style></head><body><h1>{html.escape(title)}</h1>",
             "<p class='meta'>Validation: each fold's held-out classes, ranked by that fold's model with the "
             "configured re-ranking; frames: <b style='color:#2ea043'>same class</b>, "
             "<b style='color:#cf222e'>other class</b>, <b style='color:#1f6feb'>query</b>. "
             f"A PNG of the validation rows: <a href='{html.escape(grid_name)}'>{html.escape(grid_name)}</a>.</p>",
             "<h2>Validation summary</h2>", _table(summary, floats=(MAP, P1)), run_html,
             f"<h2>Validation queries, worst to best ({len(valid_examples)})</h2>"]
    parts += [_example_row(e, thumb) for e in valid_examples]
    parts += ["<h2>Hardest classes (per-class AP of the validation queries, lowest first)</h2>",
              _table(classes, floats=("ap", "p_at_1")),
              "<h2>Most confused pairs (wrong first results)</h2>",
              _table(pairs, floats=("share",)) if len(pairs) else "<p>No wrong first result.</p>",
              f"<h2>Test queries ({len(test_examples)}), fused ranking of the submission</h2>"]
    parts += [_example_row(e, thumb) for e in test_examples]
    parts.append("</body></html>\n")
    return "\n".join(parts)


# -- the report of a pipeline run ----------------------------------------------------------------

@dataclass
class _FoldRows:
    """One fold's validation queries as the report shows them."""
    summary: dict
    examples: list[Example]
    query_labels: np.ndarray
    ap: np.ndarray
    hit: np.ndarray
    ranked: tuple  # (indices, query labels, reference labels), for the confused pairs


def _fold_rows(fold: int, valid_path: str | Path, ranking_path: str | Path, root: Path, image_of: dict,
               top: int) -> _FoldRows:
    """Fold ``fold``'s validation queries ranked as ``rerank`` ranked them (its saved validation
    ranking), their AP@1000 and first hits, the summary row and the example rows."""
    v = load_features(valid_path)
    if v.labels is None or v.roles is None:
        raise ValueError(f"{valid_path}: a validation feature file needs labels and roles")
    q = v.roles == QUERY
    qids, rids, ql, rl = v.ids[q], v.ids[~q], v.labels[q], v.labels[~q]
    r = load_ranking(ranking_path)
    if not (np.array_equal(r["query_ids"], qids) and np.array_equal(r["reference_ids"], rids)):
        raise InputError(f"{ranking_path}: its queries or references are not those of {valid_path}; re-run rerank")
    scores, idx = r["scores"], r["indices"]
    k = idx.shape[1]  # rerank.k, or fewer references
    ap = ranking_ap(idx, ql, rl, max(k, 1))
    hit = np.array([r[0] >= 0 and rl[r[0]] == lab for r, lab in zip(idx, ql)]) if k else np.zeros(len(ql), bool)
    summary = {"fold": str(fold), "queries": int(q.sum()), "references": int((~q).sum()),
               MAP: float(ap.mean()) if len(ap) else 0.0, P1: float(hit.mean()) if len(hit) else 0.0}
    examples = []
    for i in range(len(qids)):
        shown = [j for j in idx[i, :top] if j >= 0]
        examples.append(Example(qids[i], root / image_of[qids[i]], ql[i], [rids[j] for j in shown],
                                [root / image_of[rids[j]] for j in shown], [rl[j] for j in shown],
                                [float(scores[i, c]) for c in range(len(shown))], float(ap[i]), fold))
    return _FoldRows(summary, examples, ql, ap, hit, (idx, ql, rl))


def _validation_tables(folds: list[_FoldRows]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, np.ndarray]:
    """The summary (a row per fold, then all), the per-class table, the most confused pairs, and
    every query's AP, over the folds."""
    ap_all = np.concatenate([f.ap for f in folds])
    hit_all = np.concatenate([f.hit for f in folds])
    rows = [f.summary for f in folds]
    rows.append({"fold": "all", "queries": int(len(ap_all)), "references": int(sum(r["references"] for r in rows)),
                 MAP: float(ap_all.mean()) if len(ap_all) else 0.0,
                 P1: float(hit_all.mean()) if len(hit_all) else 0.0})
    classes = class_table(np.concatenate([f.query_labels for f in folds]).tolist(), ap_all, hit_all)
    pairs = pd.concat([confused_pairs(i, ql, rl, top=1, limit=10**9) for i, ql, rl in (f.ranked for f in folds)])
    if len(pairs):  # pairs of different folds never share a class: concatenating the counts is exact
        pairs = _most_confused_first(pairs, 10)
    return pd.DataFrame(rows), classes, pairs, ap_all


def _test_examples(root: Path, submission: str | Path, cfg) -> list[Example]:
    """A seeded sample of ``cfg.n_test`` test queries with their top ``cfg.top`` of the submission."""
    sub = read_submission(submission)
    tq, tr = scan_test(root, "query"), scan_test(root, "reference")
    q_img, r_img = dict(zip(tq[ID], tq[IMAGE])), dict(zip(tr[ID], tr[IMAGE]))
    rng = np.random.default_rng(cfg.seed)
    test_ids = sorted(sub)
    picked = sorted(rng.choice(len(test_ids), size=min(cfg.n_test, len(test_ids)), replace=False)) if test_ids else []
    examples = []
    for i in picked:
        qid = test_ids[i]
        refs = sub[qid][:cfg.top]
        examples.append(Example(qid, root / q_img[qid], None, refs, [root / r_img[r] for r in refs],
                                [None] * len(refs), None))
    return examples


def make_report(params, root: str | Path, folds: pd.DataFrame, valid_paths: Sequence[str | Path],
                ranking_paths: Sequence[str | Path], submission: str | Path, out_dir: str | Path,
                run_html: str = "") -> dict:
    """Write ``index.html`` and ``grid.png`` under ``out_dir``; return a summary dict.

    ``params`` is the whole :class:`retrieval.config.Params` (``cv.folds``, ``report`` for
    sizes); ``valid_paths`` holds each fold's ``valid.npz`` and ``ranking_paths`` each fold's
    ``valid_ranking.npz`` (its validation queries ranked by ``rerank``), in ``cv.folds`` order;
    ``run_html``: the section on the run (:func:`retrieval.results.run_section.run_section`).
    """
    root, out_dir, cfg = Path(root), Path(out_dir), params.report
    image_of = dict(zip(folds[ID].astype(str), folds[IMAGE].astype(str)))
    per_fold = [_fold_rows(fold, v, r, root, image_of, cfg.top)
                for fold, v, r in zip(params.cv.folds, valid_paths, ranking_paths)]
    summary, classes, pairs, ap_all = _validation_tables(per_fold)
    examples = [e for f in per_fold for e in f.examples]
    valid_examples = [examples[i] for i in pick_examples(ap_all, cfg.n_valid)]
    test_examples = _test_examples(root, submission, cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "grid.png") as tmp:
        size = render_grid(valid_examples, tmp, cfg.thumb)
    page = render_html(summary, valid_examples, classes, pairs, test_examples, "grid.png", cfg.thumb,
                       run_html=run_html)
    with atomic_path(out_dir / "index.html") as tmp:
        tmp.write_text(page, encoding="utf-8")
    return {"valid_examples": len(valid_examples), "test_examples": len(test_examples), "grid_size": list(size),
            "classes": int(len(classes)), "hardest_class": classes["label"].iloc[0] if len(classes) else None,
            MAP: float(summary[MAP].iloc[-1])}
