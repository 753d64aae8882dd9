"""The retrieval report: its tables on hand-worked cases, and the page and grid it renders."""
import base64
import io
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from retrieval.results.report import Example, class_table, confused_pairs, pick_examples, render_html


def test_class_table_golden():
    # class a: APs 1.0 and 0.5 (mean 0.75), hits 1 of 2; class b: AP 0.25, no hit
    t = class_table(["a", "b", "a"], np.array([1.0, 0.25, 0.5]), np.array([True, False, False]))
    assert t["label"].tolist() == ["b", "a"]  # hardest first
    assert t["queries"].tolist() == [1, 2]
    assert t["ap"].tolist() == pytest.approx([0.25, 0.75])
    assert t["p_at_1"].tolist() == pytest.approx([0.0, 0.5])


def test_confused_pairs_golden():
    ref_labels = np.array(["a", "b", "c", "b"])
    ranked = np.array([[1, 0, 2],    # query a: first b (wrong), then a, c
                       [3, 2, -1],   # query a: first b (wrong)
                       [1, 3, 0],    # query b: first b (right)
                       [-1, -1, -1]])  # query c: empty ranking, counted nowhere
    q = ["a", "a", "b", "c"]
    top1 = confused_pairs(ranked, q, ref_labels, top=1)
    assert top1[["query_label", "retrieved_label", "count"]].values.tolist() == [["a", "b", 2]]
    assert top1["share"].tolist() == [1.0]  # 2 of a's 2 first places
    top2 = confused_pairs(ranked, q, ref_labels, top=2)
    # a -> b: 1 (row 0) + 1 (row 1) ; a -> c: 1 (row 1, second place); b: none wrong
    assert top2[["query_label", "retrieved_label", "count"]].values.tolist() == [["a", "b", 2], ["a", "c", 1]]
    assert top2["share"].tolist() == pytest.approx([0.5, 0.25])  # over 2 queries x 2 places
    assert confused_pairs(np.array([[0]]), ["a"], ["a"], top=1).empty  # nothing wrong: an empty table


def test_pick_examples_spreads_from_worst_to_best():
    ap = np.array([0.9, 0.1, 0.5, 0.3, 0.7, 0.1])
    # ascending order with ties by index: 1 (0.1), 5 (0.1), 3, 2, 4, 0
    # positions 0, 2.5 -> 2 (round half to even), 5 of that order: queries 1, 3, 0
    assert pick_examples(ap, 3).tolist() == [1, 3, 0]
    assert pick_examples(ap, 2).tolist() == [1, 0]
    assert pick_examples(ap, 10).tolist() == [1, 5, 3, 2, 4, 0]


@pytest.fixture()
def examples(tmp_path):
    colours = {"q": (10, 10, 200), "r1": (10, 200, 10), "r2": (200, 10, 10)}
    for name, c in colours.items():
        Image.new("RGB", (40, 30), c).save(tmp_path / f"{name}.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    valid = Example("q<1>", tmp_path / "q.jpg", "cola", ["r1", "r2"], [tmp_path / "r1.jpg", tmp_path / "broken.jpg"],
                    ["cola", "fanta"], [0.9, 0.8], ap=0.5, fold=0)
    test = Example("t1", tmp_path / "q.jpg", None, ["r2"], [tmp_path / "r2.jpg"], [None], None)
    return valid, test


def test_html_is_self_contained_and_escaped(examples):
    valid, test = examples
    summary = pd.DataFrame([{"fold": "0", "queries": 1, "references": 2, "map@1000": 0.5, "p@1": 1.0}])
    classes = class_table(["cola"], np.array([0.5]), np.array([True]))
    pairs = pd.DataFrame([{"query_label": "cola", "retrieved_label": "fanta", "count": 1, "share": 0.5}])
    page = render_html(summary, [valid], classes, pairs, [test], "grid.png", 96)
    assert "q&lt;1&gt;" in page and "q<1>" not in page  # ids are escaped
    assert page.count("data:image/jpeg;base64,") == 3 + 2  # 3 validation + 2 test thumbnails, inline
    assert not re.search(r"src='(?!data:)", page)  # no image loaded from elsewhere
    assert page.count("class='cell ok'") == 1 and page.count("class='cell bad'") == 1
    assert "#1" in page  # test references show their rank (a submission has no scores)
    assert "AP 0.500 · fold 0" in page and "<td class='num'>0.500</td>" in page


def test_html_places_the_run_section_after_the_summary(examples):
    valid, test = examples
    summary = pd.DataFrame([{"fold": "0", "queries": 1, "references": 2, "map@1000": 0.5, "p@1": 1.0}])
    classes = class_table(["cola"], np.array([0.5]), np.array([True]))
    page = render_html(summary, [valid], classes, pd.DataFrame(), [test], "grid.png", 96, run_html="<h2>The run</h2><svg/>")
    assert page.index("Validation summary") < page.index("<h2>The run</h2><svg/>") < page.index("Validation queries")


def test_html_shows_thumbnails_at_report_thumb(examples):
    valid, test = examples
    summary = pd.DataFrame([{"fold": "0", "queries": 1, "references": 2, "map@1000": 0.5, "p@1": 1.0}])
    classes = class_table(["cola"], np.array([0.5]), np.array([True]))
    page = render_html(summary, [valid], classes, pd.DataFrame(), [test], "grid.png", 40)
    assert ".cell img{border:4px solid #8c8c8c;width:40px;height:40px}" in page
    assert "width:48px;flex:none" in page and "max-width:48px" in page  # the cell: thumbnail and frame
    uri = re.search(r"src='data:image/jpeg;base64,([^']+)'", page).group(1)
    assert Image.open(io.BytesIO(base64.b64decode(uri))).size == (40, 40)
