"""How long ``build_explainer`` takes, for this checkout against another one (a baseline
commit checked out with ``git worktree add /tmp/base REV``), in alternating processes so a
drift of the machine's speed reaches both alike.

    python tools/bench_build.py exported_models/resnet50.onnx --baseline /tmp/base --rounds 3

Each process loads the lrpgraph of its tree, builds the paper explainer ``--builds`` times
(the first, cold, reported apart) and prints the seconds; the medians and their ratio are
printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHILD = """
import gc, json, sys, time
sys.path.insert(0, sys.argv[1])
from lrpgraph import preset
from lrpgraph.driver import build_explainer
seconds = []
for _ in range(int(sys.argv[3])):
    gc.collect()
    t = time.perf_counter()
    build_explainer(sys.argv[2], preset("paper"))
    seconds.append(time.perf_counter() - t)
print(json.dumps(seconds))
"""


def run(tree, model, builds):
    out = subprocess.run([sys.executable, "-c", _CHILD, tree, model, str(builds)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the classifier, .onnx")
    parser.add_argument("--baseline", required=True, help="another checkout's root (git worktree)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating process pairs (default 3)")
    parser.add_argument("--builds", type=int, default=3, help="builds per process (default 3)")
    args = parser.parse_args(argv)
    times = {"baseline": {"cold": [], "warm": []}, "this": {"cold": [], "warm": []}}
    for _ in range(args.rounds):
        for label, tree in (("baseline", args.baseline), ("this", HERE)):
            seconds = run(tree, args.model, args.builds)
            times[label]["cold"].append(seconds[0])
            times[label]["warm"] += seconds[1:]
    for kind in ("cold", "warm"):
        base, this = (statistics.median(times[k][kind]) for k in ("baseline", "this"))
        print(f"{kind}: baseline {base:.3f} s, this {this:.3f} s, ratio {this / base:.3f}")


if __name__ == "__main__":
    main()
