"""synthetic/products.py: the made-up products (designs seeded from (seed, class)) and their drawing."""
import numpy as np
import pytest

from synthetic.products import LOGOS, PALETTE, PATTERNS, SHAPES, Design, class_design, render_design, seeded_rng


def test_seeded_rng_golden_and_independent_of_earlier_draws():
    # the first draws of one generator: any change here changes every image of the demo set
    assert seeded_rng(0, "x").integers(1000, size=3).tolist() == [123, 691, 760]
    seeded_rng(0, "y").random(50)  # another generator's draws do not move this one
    assert seeded_rng(0, "x").integers(1000, size=3).tolist() == [123, 691, 760]
    assert seeded_rng(0, "x", 1).integers(1000, size=3).tolist() != [123, 691, 760]


def test_class_design_golden():
    d = class_design(0, 0)
    assert (d.shape, d.pattern, d.logo) == ("jar", "disc", "circle")
    assert d.colors == ((245, 245, 240), (30, 70, 170), (150, 200, 230))
    assert len(d.params) == 9 and d.params[0] == pytest.approx(0.7874363097728689, abs=0)
    assert class_design(0, 0) == d  # a pure function of (seed, index)


def test_the_first_30_classes_never_share_shape_and_pattern():
    combos = [(class_design(7, c).shape, class_design(7, c).pattern) for c in range(31)]
    assert len(set(combos[:30])) == 30 == len(SHAPES) * len(PATTERNS)
    assert combos[30] == combos[0]  # then the permutation starts over
    assert [class_design(8, c).shape for c in range(30)] != [s for s, _ in combos[:30]]  # another seed, another order


def test_colours_are_three_distinct_palette_entries_and_logos_known():
    for c in range(40):
        d = class_design(1, c)
        assert len(set(d.colors)) == 3 and set(d.colors) <= set(PALETTE)
        assert d.logo in LOGOS and all(0 <= q < 1 for q in d.params)


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_is_an_opaque_product_on_a_transparent_canvas(shape):
    design = Design(shape, "bands", "star", PALETTE[:3], (0.5,) * 9)
    im = render_design(design, 64)
    assert (im.mode, im.size) == ("RGBA", (64, 64))
    alpha = np.asarray(im.getchannel("A"))
    assert alpha[32, 32] == 255 and alpha[0, 0] == alpha[0, 63] == alpha[63, 0] == 0
    assert 0.15 < (alpha > 0).mean() < 0.75


def test_shapes_and_patterns_draw_differently():
    masks = {s: np.asarray(render_design(Design(s, "bands", "star", PALETTE[:3], (0.5,) * 9), 64).getchannel("A"))
             for s in SHAPES}
    assert len({m.tobytes() for m in masks.values()}) == len(SHAPES)
    colours = {p: np.asarray(render_design(Design("box", p, "star", PALETTE[:3], (0.5,) * 9), 64).convert("RGB"))
               for p in PATTERNS}
    assert len({c.tobytes() for c in colours.values()}) == len(PATTERNS)
