"""The report's SVG charts: points placed where hand-worked coordinates say, the start, the
kept model and the WiSE-FT mixes marked, bars to scale, and well-formed SVG."""
import re
import xml.etree.ElementTree as ET

import pandas as pd
import pytest

from retrieval.results.charts import Frame, ablation_chart, bar_chart, curve_chart, padded_range

SVG = "{http://www.w3.org/2000/svg}"

# epochs 0, 1, 2 at val mAP@1000 0.2, 0.5, 0.4; one WiSE-FT mix (alpha 0.5) at 0.45, not kept
HISTORY = pd.DataFrame({"epoch": [0, 1, 2], "val_map@1000": [0.2, 0.5, 0.4]})
TRAIN = {"epoch0_val_map@1000": 0.2, "val_map@1000": 0.5, "best_epoch": 1, "wise_alpha": None,
         "wise_val_map@1000": {"0.5": 0.45}}


def parsed(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # well-formed XML, or this raises


def test_frame_maps_data_onto_the_plotting_area():
    f = Frame((0.0, 2.0), (0.2, 0.5))  # 440 x 260, margins left 48, right 16, top 28, bottom 40
    assert (f.x(0), f.x(1), f.x(2)) == (48.0, 236.0, 424.0)  # 376 px wide
    assert f.point(0, 0.5) == "48.0,28.0" and f.point(2, 0.2) == "424.0,220.0"  # 192 px high, y down
    assert f.point(1, 0.4) == "236.0,92.0"  # 0.1 below the top of a 0.3 range: 64 px down


def test_padded_range():
    assert padded_range([0.2, 0.5, 0.4]) == (0.2, 0.5)
    assert padded_range([0.23, 0.41]) == (0.2, 0.5)
    assert padded_range([0.5, 0.5]) == (0.5, 0.6)  # one step at least
    assert padded_range([1.0, float("nan")]) == (0.9, 1.0)  # within [0, 1]; NaN ignored


def test_curve_points_and_marks_golden():
    svg = curve_chart(HISTORY, TRAIN, fold=3)
    root = parsed(svg)
    lines = root.findall(f"{SVG}polyline")
    assert [p.get("points") for p in lines] == ["48.0,220.0 236.0,28.0 424.0,92.0"]
    # the kept model: a ring around epoch 1's point, labelled
    rings = [c for c in root.findall(f"{SVG}circle") if c.get("class") == "mark"]
    assert [(c.get("cx"), c.get("cy")) for c in rings] == [("236.0", "28.0")]
    assert "kept" in [t.text for t in root.findall(f"{SVG}text")]
    # the mix: a diamond at x = 0.5 x last epoch (2) = 1, y 0.45 (32 px below 0.5)
    diamonds = [p.get("points") for p in root.findall(f"{SVG}polygon")]
    assert diamonds == ["236.0,55.0 241.0,60.0 236.0,65.0 231.0,60.0"]
    # epoch 0, the start: a square on its point
    squares = [(r.get("x"), r.get("y")) for r in root.findall(f"{SVG}rect") if r.get("class") == "mark"]
    assert squares == [("44.0", "216.0")]
    assert "fold 3: validation mAP@1000 by epoch" in svg
    texts = [t.text for t in root.findall(f"{SVG}text")]
    assert ["0.2", "0.3", "0.4", "0.5"] == [t for t in texts if t and t.startswith("0.")]  # y ticks


def test_a_kept_wise_mix_is_ringed_where_its_diamond_is():
    train = {**TRAIN, "val_map@1000": 0.6, "best_epoch": 2, "wise_alpha": 0.5, "wise_val_map@1000": {"0.5": 0.6}}
    root = parsed(curve_chart(HISTORY, train, fold=0))
    rings = [c for c in root.findall(f"{SVG}circle") if c.get("class") == "mark"]
    # range now 0.2-0.6: 0.6 at the top (y 28), x = 0.5 x 2 = 1
    assert [(c.get("cx"), c.get("cy")) for c in rings] == [("236.0", "28.0")]
    assert [p.get("points") for p in root.findall(f"{SVG}polygon")] == ["236.0,23.0 241.0,28.0 236.0,33.0 231.0,28.0"]
    assert "kept: mix 0.5" in [t.text for t in root.findall(f"{SVG}text")]


def test_several_backbones_draw_one_line_each():
    hist = HISTORY.assign(**{"val_map@1000/lite2": [0.3, 0.3, 0.5]})
    members = {"lite0": TRAIN, "lite2": {**TRAIN, "epoch0_val_map@1000": 0.3, "best_epoch": 2, "val_map@1000": 0.5,
                                         "wise_val_map@1000": {}}}
    root = parsed(curve_chart(hist, {**TRAIN, "members": members}, fold=0))
    assert [p.get("points") for p in root.findall(f"{SVG}polyline")] == \
        ["48.0,220.0 236.0,28.0 424.0,92.0", "48.0,156.0 236.0,156.0 424.0,28.0"]
    rings = [(c.get("cx"), c.get("cy")) for c in root.findall(f"{SVG}circle") if c.get("class") == "mark"]
    assert rings == [("236.0", "28.0"), ("424.0", "28.0")]


def test_bars_to_scale_and_escaped():
    svg = bar_chart(["a<b", "c"], [0.5, 1.0], ["0.5", "1.0"], "t & u")
    root = parsed(svg)
    widths = [r.get("width") for r in root.findall(f"{SVG}rect") if r.get("class") == "bar"]
    assert widths == ["137.0", "274.0"]  # 440 - 96 - 70 = 274 px for the largest
    assert "a&lt;b" in svg and "t &amp; u" in svg


def test_ablation_colours_the_chain_and_the_baseline():
    table = pd.DataFrame({"method": ["none", "qe", "final"], "map@1000": [0.4, 0.5, 0.8], "p@1": [1, 1, 1]})
    root = parsed(ablation_chart(table, fold=1))
    fills = [r.get("fill") for r in root.findall(f"{SVG}rect") if r.get("class") == "bar"]
    assert fills == ["#8c959f", "#1f6feb", "#2ea043"]
    assert re.findall(r">(0\.\d{4})<", ablation_chart(table, 1)) == ["0.4000", "0.5000", "0.8000"]


def test_a_label_at_the_right_edge_turns_left():
    root = parsed(curve_chart(HISTORY, {**TRAIN, "best_epoch": 2, "val_map@1000": 0.4}, fold=0))
    kept = [t for t in root.findall(f"{SVG}text") if t.text == "kept"]
    assert [(t.get("x"), t.get("text-anchor")) for t in kept] == [("415.0", "end")]  # ring at x 424, 9 px left
