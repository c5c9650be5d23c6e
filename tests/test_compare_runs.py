"""tools/compare_runs.py: pooling runs, reading a run still going, and the class groups."""

import importlib.util
import json
import os
import re

import numpy as np
import pytest

_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools", "compare_runs.py")
_spec = importlib.util.spec_from_file_location("compare_runs", _PATH)
compare_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_runs)


def _record(i, label, method, score):
    return {"file": f"p{i}.jpg", "label": label, "method": method, "protocol": "tie-robust",
            "insertion": score, "deletion": 0.0, "id": score}


@pytest.fixture
def run(tmp_path):
    """A partial file (settings line, one line of records per photo): labels 0..9 and 500..509."""
    rng = np.random.default_rng(0)
    labels = list(range(10)) + list(range(500, 510))
    scores = {m: rng.uniform(0, 1, len(labels)) for m in ("gradcam", "lrp-paper")}
    path = tmp_path / "per_image.partial.jsonl"
    lines = [json.dumps({"settings": {}})]
    for i, label in enumerate(labels):
        recs = [_record(i, label, m, float(s[i])) for m, s in scores.items()]
        lines.append(json.dumps({"file": f"p{i}.jpg", "records": recs}))
    path.write_text("\n".join(lines) + "\n")
    return path, np.array(labels), scores


def test_groups_score_only_their_classes(run, capsys):
    path, labels, scores = run
    compare_runs.main([str(path), "--groups", "animals:0-397,objects:398-999"])
    out = capsys.readouterr().out
    sections = re.split(r"^## ", out, flags=re.M)[1:]
    titles = [s.split(":")[0] for s in sections]
    assert titles == ["all, 1 run(s)", "animals (classes 0-397)", "objects (classes 398-999)"]
    for section, keep in zip(sections, (labels >= 0, labels <= 397, labels >= 398)):
        assert f"{int(keep.sum())} photos" in section
        row = next(line for line in section.splitlines() if line.startswith("| gradcam | "))
        assert row.split("|")[5].split()[0] == f"{scores['gradcam'][keep].mean():.3f}"


def test_rows_disagreeing_between_runs_are_an_error(run, tmp_path):
    path, _, _ = run
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps(_record(0, 0, "gradcam", 2.0)) + "\n")
    with pytest.raises(SystemExit, match="scores 2.0 here"):
        compare_runs.main([str(path), str(other)])


def test_a_malformed_group_says_how_to_write_one(run):
    path, _, _ = run
    with pytest.raises(SystemExit, match="NAME:LO-HI"):
        compare_runs.main([str(path), "--groups", "animals0-397"])
