"""The perturbation metrics on hand-made cases whose curves are known in closed form."""

import math

import numpy as np
import pytest

from lrpgraph.metrics import auc, centre_blob, exact_masks, paper_masks
from lrpgraph.perturb import perturbation_curves

H, W, STEP = 20, 25, 50  # 500 pixels, 10 points


def fraction_model(batch):
    """p(class 0) = fraction of pixels that are not black: a known function of the pixels."""
    f = (batch.max(axis=3) > 0).mean(axis=(1, 2))
    return np.stack([f, 1 - f], axis=1)


def white():
    return np.ones((H, W, 3))


def expected_auc(values):
    v = np.asarray(values, dtype=np.float64)
    return (v.sum() - v[0] / 2 - v[-1] / 2) / (len(v) - 1)


def test_auc_is_the_normalised_trapezoid():
    assert auc([0, 1]) == 0.5
    assert auc([1, 1, 1]) == 1.0
    assert auc([0, 0.5, 1]) == pytest.approx(0.5)


def test_paper_protocol_with_distinct_attributions():
    a = np.random.default_rng(0).permutation(H * W).reshape(H, W).astype(float)
    curves = perturbation_curves(fraction_model, white(), a, label=0, step=STEP)
    n = math.ceil(H * W / STEP)
    ks = np.minimum(STEP * (np.arange(n) + 1), H * W - 1)
    inserted = (ks + 1) / (H * W)  # >= the (0-based) k-th largest: k + 1 distinct pixels
    np.testing.assert_allclose(curves.insertion, inserted)
    np.testing.assert_allclose(curves.deletion, 1 - inserted)
    s = curves.scores
    assert s["insertion"] == pytest.approx(expected_auc(inserted))
    assert s["id"] == pytest.approx(expected_auc(inserted) - expected_auc(1 - inserted))


def test_tied_maps_move_together_under_the_paper_protocol_but_not_tie_robust():
    const = np.ones((H, W))
    paper = perturbation_curves(fraction_model, white(), const, label=0, step=STEP).scores
    assert paper == {"insertion": 1.0, "deletion": 0.0, "id": 1.0}  # the flaw of SPEC.md section 3
    robust = perturbation_curves(fraction_model, white(), const, label=0, protocol="tie-robust",
                                 step=STEP, seeds=(0, 1)).scores
    n = math.ceil(H * W / STEP)
    ks = np.minimum(STEP * (np.arange(n) + 1), H * W - 1) / (H * W)
    assert robust["insertion"] == pytest.approx(expected_auc(ks))
    assert robust["deletion"] == pytest.approx(expected_auc(1 - ks))


def test_rise_protocol_steps_one_row_from_nothing_to_everything():
    a = np.random.default_rng(1).random((H, W))
    curves = perturbation_curves(fraction_model, white(), a, label=1, protocol="rise")
    ks = np.arange(0, H * W + 1, W)
    np.testing.assert_allclose(curves.deletion, 1 - ks / (H * W))  # predicted class 0, black substrate
    # insertion goes into a blurred copy of a white image: never black, so always "all pixels"
    np.testing.assert_allclose(curves.insertion, 1.0)


def test_exact_masks_take_exactly_k_and_break_ties_by_seed():
    a = np.zeros((H, W))
    a[0, :5] = 1.0
    masks = exact_masks(a, [3, 5, 7], np.random.default_rng(0))
    assert masks.reshape(3, -1).sum(1).tolist() == [3, 5, 7]
    assert masks[1, 0, :5].all()  # the 5 largest first
    again = exact_masks(a, [7], np.random.default_rng(0))
    np.testing.assert_array_equal(again[0], masks[2])
    other = exact_masks(a, [7], np.random.default_rng(1))
    assert not np.array_equal(other[0], masks[2])


def test_paper_masks_count_ties_in():
    a = np.zeros((H, W))
    a[0, :3] = 2.0
    masks = paper_masks(a, step=2)
    assert masks[0].sum() == 3  # k = 2: the 3rd largest is 2.0, all three move
    assert masks[1].sum() == H * W  # k = 4: threshold 0, everything moves


def test_centre_blob_peaks_in_the_middle():
    b = centre_blob((21, 21))
    assert b.argmax() == 10 * 21 + 10 and b.min() > 0
