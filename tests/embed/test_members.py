"""A fold's backbones over one image list: each block embedded and whitened with its own
whitening, then concatenated with the weights; checked against the steps done by hand."""
import numpy as np
import pytest

from retrieval.embed.members import embed_members, member_blocks, whiten

EMB = {"a": np.array([[3.0, 4.0], [0.0, 2.0]], np.float32), "b": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 5.0]], np.float32)}


def test_no_whitening_leaves_a_block_as_it_is():
    x = EMB["a"]
    assert whiten(x, None) is x


def test_whitening_centres_projects_and_normalises_golden():
    # mean (0, 2), projection keeps the first axis doubled and the second as is:
    # (3, 4) -> (3, 2) -> (6, 2) -> /sqrt(40); (0, 2) -> (0, 0) -> a zero row stays zero
    mean, proj = np.array([0.0, 2.0], np.float32), np.array([[2.0, 0.0], [0.0, 1.0]], np.float32)
    got = whiten(EMB["a"], (mean, proj))
    np.testing.assert_allclose(got, [[6 / np.sqrt(40), 2 / np.sqrt(40)], [0.0, 0.0]], rtol=1e-6)


def test_each_member_gets_its_own_whitening_in_order():
    calls = []
    blocks = member_blocks(["a", "b"], [(np.zeros(2, np.float32), np.eye(2, 1, dtype=np.float32)), None],
                           lambda m: calls.append(m) or EMB[m])
    assert calls == ["a", "b"]
    np.testing.assert_allclose(blocks[0], [[1.0], [0.0]])  # first coordinate only, normalised; 0 stays 0
    assert blocks[1] is EMB["b"]
    with pytest.raises(ValueError, match="1 whitenings for 2 members"):
        member_blocks(["a", "b"], [None], EMB.get)


def test_fused_embedding_is_the_weighted_concatenation():
    # weights 1 and 3 -> 1/4 and 3/4: each normalised block scaled by the square root of its weight
    fused = embed_members(["a", "b"], [None, None], [1.0, 3.0], EMB.get)
    want = np.concatenate([EMB["a"] / np.linalg.norm(EMB["a"], axis=1, keepdims=True) * 0.5,
                           EMB["b"] / np.linalg.norm(EMB["b"], axis=1, keepdims=True) * np.sqrt(0.75)], axis=1)
    np.testing.assert_allclose(fused, want, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(fused, axis=1), 1.0, rtol=1e-6)  # cosine of the fused = weighted mean
