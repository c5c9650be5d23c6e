"""A fixed-seed slice of tools/fuzz.py (random residual CNNs written as ONNX): every model
builds with both MaxPool rules, no explanation with finite logits has NaN or Inf relevance,
and the explainer's logits are the model's own."""

import fuzz


def test_fuzz_slice():
    report = fuzz.main(["--models", "12", "--seed", "7"])
    for maxpool, tallies in report.items():
        assert tallies["build_failed"] == {}, maxpool
        assert tallies["explanations"] == 12 * 12  # 12 models, 12 inputs each
        assert tallies["nonfinite_rows"] == 0, maxpool
        assert tallies["logits_mismatch_rows"] == 0, maxpool
    # the exact MaxPool rule conserves: half the explanations keep all but 1e-3 of the start
    assert report["winner"]["kept_quantiles"]["median"] >= 0.999
