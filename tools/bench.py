"""Benchmark: one process, one run, ratios against ORT's forward pass of the same model.

    python tools/bench.py --batches 1 8 --provider cpu --out docs/bench_cpu.md
    python tools/bench.py --batches 1 8 64 --provider cuda --out bench_gpu.md
    python tools/bench.py --batches 8 --targets 1 5 20 --skip zennit reference authors layout

Rows per batch size: ORT forward of the original model (the baseline), the lrpgraph
explainer (paper preset), zennit (EpsilonPlusFlat + ResNetCanonizer; a different rule set,
the one zennit users pick for ResNets), our lean PyTorch implementation of the paper's rules
(tests/reference.py, in float32) and the same rules computed as the authors' code computes
them (tools/authors_style.py: a model copy per call, blocks re-run for the ratio and for
their inner activations, autograd per conv).
Each: warm-up, >= 10 timed runs, the median; the ORT rows of a batch size in 3 alternating
rounds (--rounds), so a drift of the machine's speed reaches all of them. Seeded ResNet50
weights (timing does not depend on them).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
import types

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tools"), os.path.join(ROOT, "tests")]  # lrpgraph itself: installed


def timed(fn, runs, sync=None):
    """The times of ``runs`` calls of an already warmed-up ``fn``."""
    if sync:
        sync()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return times


def timed_in_rounds(calls, runs, rounds):
    """Times of each of ``calls`` (already warmed up), in ``rounds`` alternating blocks of
    ceil(runs / rounds) calls, each block after one untimed call: a machine whose speed
    drifts over a minute (a neighbour on the host) then slows every row alike instead of
    whichever row it happened to fall on, so the ratios between rows hold still."""
    per = -(-runs // rounds)
    times = [[] for _ in calls]
    for _ in range(rounds):
        for fn, t in zip(calls, times):
            fn()  # the other sessions' threads settle, this one's caches warm
            t += timed(fn, per)
    return times


class PeakMemory:
    """Working memory of one row: the peak above what was resident when it started (the
    model already loaded), in MB. CPU: this process's anonymous RSS, sampled every millisecond.
    CUDA: torch's peak allocation for torch rows; for ORT rows the device memory its
    session's arena grew by (an arena keeps its peak, so the growth is the peak)."""

    def __init__(self, device, torch_row):
        self.device, self.torch_row = device, torch_row

    @staticmethod
    def _rss():
        """Anonymous resident memory (heap, arenas): resident minus file-backed pages. A
        session from lrpgraph's CPU layout pass maps its weights from a file and pages them
        in on first use, which total RSS would book as the row's working memory."""
        with open("/proc/self/statm") as fh:
            fields = fh.read().split()
        return (int(fields[1]) - int(fields[2])) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        import threading

        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            if self.torch_row:
                torch.cuda.reset_peak_memory_stats()
                self.base = torch.cuda.memory_allocated()
            else:
                free, total = torch.cuda.mem_get_info()
                self.base = total - free
            return self
        try:  # hand freed heap pages back first, or the row reuses them unseen by RSS
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        self.base = self.peak = self._rss()
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.001):
                self.peak = max(self.peak, self._rss())
        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            if self.torch_row:
                peak = torch.cuda.max_memory_allocated()
            else:
                free, total = torch.cuda.mem_get_info()
                peak = total - free
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self.peak, self._rss())
        self.mb = (peak - self.base) / 2**20


def _zennit_resnet(ours, device):
    """zennit's ResNet canonizer matches torchvision's block classes; where torchvision is
    missing (its wheel is 5.5 GB here) our identical classes stand in under its name."""
    try:
        import torchvision

        tv = torchvision.models.resnet50()
        tv.load_state_dict(ours.state_dict())
        model = tv
    except ImportError:
        import torch_resnets

        shim = types.ModuleType("torchvision.models.resnet")
        shim.Bottleneck, shim.BasicBlock = torch_resnets.Bottleneck, torch_resnets.BasicBlock
        for name in ("torchvision", "torchvision.models"):
            sys.modules.setdefault(name, types.ModuleType(name))
        sys.modules["torchvision.models.resnet"] = shim
        model = ours
    import copy

    return copy.deepcopy(model).to(device).eval()


def _target_ratios(rows) -> list:
    """Each K-class explainer's time against the 1-class one of its batch and precision
    (or, without that row, the single-target explainer), measured in the same rounds."""
    lines = []
    for n, name, t, mb in rows:
        if " targets per image " not in name:
            continue
        dtype = name.rsplit(", ", 1)[1].rstrip(")")
        one = next((r for r in rows if r[0] == n and r[1] == f"lrpgraph explainer, K=1 targets per image (ORT, {dtype})"),
                   None) or next((r for r in rows if r[0] == n and r[1] == "lrpgraph explainer (ORT)"), None)
        if one is not None and one[1] != name:
            lines.append(f"batch {n}, {name}: {t / one[2]:.2f}x the time of '{one[1]}', {mb:.0f} MB working memory")
    return [""] + lines if lines else []


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3,
                   help="ORT rows: time the runs in this many alternating blocks per batch size")
    p.add_argument("--provider", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--skip", nargs="*", default=[], help="rows to leave out: zennit reference authors layout")
    p.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "float16"],
                   help="explainer precisions to time (float16 is meant for GPUs)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="CUDA only: also time explainers built with --no-target-input, captured "
                        "in a CUDA graph (enable_cuda_graph) and run with fixed IO bindings")
    p.add_argument("--cuda-nhwc", action="store_true",
                   help="CUDA only: also time the explainers with the CUDA EP's prefer_nhwc option")
    p.add_argument("--targets", type=int, nargs="*", default=[], metavar="K",
                   help="also time explainers of K classes per image (build --targets K), in the same rounds")
    p.add_argument("--workdir", default=os.path.join(ROOT, "exported_models"))
    p.add_argument("--out", help="write the markdown table here too")
    args = p.parse_args(argv)

    import onnxruntime as ort
    import torch

    from export_resnet import build_model, export
    from lrpgraph import preset
    from lrpgraph.cpu_layout import cpu_session
    from lrpgraph.driver import build_explainer, save_model
    from lrpgraph.float16 import to_float16
    from lrpgraph.load import canonicalise, load_model
    from lrpgraph.session import predicted_targets

    device = "cuda" if args.provider == "cuda" else "cpu"
    if device == "cuda" and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA and cuDNN from the nvidia-* wheels that torch brought
    model, _ = build_model("resnet50", seed=0)
    os.makedirs(args.workdir, exist_ok=True)
    onnx_path = os.path.join(args.workdir, "bench_resnet50.onnx")
    lrp_path = os.path.join(args.workdir, "bench_resnet50.lrp.onnx")
    export(model, onnx_path)
    t0 = time.perf_counter()
    explainer, _ = build_explainer(onnx_path)
    build_s = time.perf_counter() - t0
    save_model(explainer, lrp_path)
    half_paths = {}
    if "float16" in args.dtypes:
        half_paths["lrp"] = os.path.join(args.workdir, "bench_resnet50.lrp16.onnx")
        save_model(build_explainer(onnx_path, preset("paper", dtype="float16"))[0], half_paths["lrp"])
        half_paths["forward"] = os.path.join(args.workdir, "bench_resnet50.fp16.onnx")
        save_model(to_float16(canonicalise(load_model(onnx_path))), half_paths["forward"])

    if args.cuda_nhwc and device != "cuda":
        p.error("--cuda-nhwc needs --provider cuda")
    graph_paths = {}
    if args.cuda_graph:
        if device != "cuda":
            p.error("--cuda-graph needs --provider cuda")
        for dtype in args.dtypes:
            graph_paths[dtype] = os.path.join(args.workdir, f"bench_resnet50.lrp_graph_{dtype}.onnx")
            save_model(build_explainer(onnx_path, preset("paper", dtype=dtype, target_input=False))[0],
                       graph_paths[dtype])

    target_paths = {}
    for k in args.targets:
        for dtype in args.dtypes:
            target_paths[k, dtype] = os.path.join(args.workdir, f"bench_resnet50.lrp_k{k}_{dtype}.onnx")
            save_model(build_explainer(onnx_path, preset("paper", dtype=dtype, targets=k))[0], target_paths[k, dtype])

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]

    def configure(o):
        o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        o.log_severity_level = 3

    opts = ort.SessionOptions()
    configure(opts)  # the CUDA sessions' options; CPU sessions get theirs from cpu_session

    def session(path, provider_options=None, layout=True):
        if device == "cpu":
            # both the forward and the explainer get lrpgraph's CPU layout pass, as
            # lrpgraph's own sessions do (the forward has nothing left for it to move)
            return cpu_session(path, configure, layout=layout)
        chosen = [("CUDAExecutionProvider", provider_options or {}), "CPUExecutionProvider"]
        sess = ort.InferenceSession(path, opts, providers=chosen)
        assert sess.get_providers()[0] == providers[0], sess.get_providers()
        return sess

    def ort_runner(sess, outputs, x):
        if device == "cpu":
            feeds = predicted_targets(sess, {"input": x})
            return lambda: sess.run(outputs, feeds)
        binding = sess.io_binding()
        binding.bind_ortvalue_input("input", ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        for name, value in predicted_targets(sess, {"input": x}).items():
            if name != "input":
                binding.bind_cpu_input(name, value)
        for name in outputs:
            binding.bind_output(name, "cuda")
        return lambda: sess.run_with_iobinding(binding)

    def cuda_graph_runner(path, x):
        """A session per batch size: a captured graph replays fixed shapes and addresses."""
        sess = ort.InferenceSession(path, opts, providers=[("CUDAExecutionProvider", {"enable_cuda_graph": "1"})])
        return lambda: graph_run(sess, x)

    def graph_run(sess, x):
        if not hasattr(sess, "bench_binding"):
            sess.bench_binding = bind_fixed(sess, x)
            sess.run_with_iobinding(sess.bench_binding)  # the first run captures the graph
        sess.run_with_iobinding(sess.bench_binding)

    def bind_fixed(sess, x):
        binding = sess.io_binding()
        binding.bind_ortvalue_input("input", ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        n = len(x)
        for name, shape, dtype in (("logits", [n, 1000], np.float32), ("relevance_map", [n, 224, 224], np.float32),
                                   ("target_used", [n], np.int64)):
            binding.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, "cuda", 0))
        return binding

    def measure(n, name, make, runs, warmup=2, torch_row=False):
        """``make()`` loads what the row needs (a fresh ORT session: its arena starts empty)
        and returns the call to time. ORT rows are timed later, all of a batch size's
        together in alternating rounds (``timed_in_rounds``); torch rows now."""
        fn = make()
        # memory over the warm-up runs (a fresh session's first calls size its arena), time
        # after: the sampling thread would otherwise take CPU from the timed calls
        with PeakMemory(device, torch_row) as mem:
            for _ in range(warmup):
                fn()
        if torch_row:
            rows.append((n, name, statistics.median(timed(fn, runs, sync)), mem.mb))
        else:
            pending.append((n, name, fn, mem.mb))

    def time_pending():
        times = timed_in_rounds([fn for _, _, fn, _ in pending], args.runs, args.rounds)
        rows.extend((n, name, statistics.median(t), mb) for (n, name, _, mb), t in zip(pending, times))
        pending.clear()

    rows, checks, pending = [], [], []
    import authors_style
    import reference

    reference.DTYPE = torch.float32
    torch_model = model.to(device)
    zmodel = None
    if "zennit" not in args.skip:
        try:
            zmodel = _zennit_resnet(model, device)
            from zennit.attribution import Gradient
            from zennit.composites import EpsilonPlusFlat
            from zennit.torchvision import ResNetCanonizer
        except ImportError as exc:
            zmodel = None
            print(f"bench: zennit not available ({exc}); its rows are left out", file=sys.stderr)
    sync = torch.cuda.synchronize if device == "cuda" else None
    for n in args.batches:
        x = np.random.default_rng(0).standard_normal((n, 3, 224, 224)).astype(np.float32)
        ort_row = lambda name, path, outputs, options=None: measure(  # noqa: E731
            n, name, lambda: ort_runner(session(path, options), outputs, x), args.runs)
        ort_row("ORT forward (original model)", onnx_path, ["logits"])
        ort_row("lrpgraph explainer (ORT)", lrp_path, ["logits", "relevance_map"])
        if device == "cpu" and "layout" not in args.skip:
            measure(n, "lrpgraph explainer (ORT), without lrpgraph's CPU layout pass", lambda: ort_runner(
                session(lrp_path, layout=False), ["logits", "relevance_map"], x), args.runs)
        if half_paths:
            ort_row("ORT forward, float16 model", half_paths["forward"], ["logits"])
            ort_row("lrpgraph explainer (ORT, float16)", half_paths["lrp"], ["logits", "relevance_map"])
        if args.cuda_nhwc:
            for dtype, path in (("float32", lrp_path), ("float16", half_paths.get("lrp"))):
                if path is None:
                    continue
                try:
                    ort_row(f"lrpgraph explainer (ORT, {dtype}, prefer_nhwc)", path, ["logits", "relevance_map"],
                            {"prefer_nhwc": "1"})
                except Exception as exc:  # builds without NHWC kernels reject the option
                    checks.append(f"prefer_nhwc, {dtype}, batch {n}: failed: {str(exc).splitlines()[0][:300]}")
        for (k, dtype), path in target_paths.items():
            ort_row(f"lrpgraph explainer, K={k} targets per image (ORT, {dtype})", path, ["logits", "relevance_maps"])
        for dtype, path in graph_paths.items():
            try:
                measure(n, f"lrpgraph explainer (ORT, {dtype}, CUDA graph)", lambda: cuda_graph_runner(path, x), args.runs)
            except Exception as exc:  # ORT refuses capture when a node falls back to the CPU
                checks.append(f"CUDA graph, {dtype}, batch {n}: not captured: {str(exc).splitlines()[0][:300]}")
        time_pending()
        if device == "cuda" and n == args.batches[0]:
            cpu = ort.InferenceSession(lrp_path, opts, providers=["CPUExecutionProvider"])
            a = cpu.run(["relevance_map"], predicted_targets(cpu, {"input": x}))[0]
            gpu = session(lrp_path)
            b = gpu.run(["relevance_map"], predicted_targets(gpu, {"input": x}))[0]
            checks.append(f"CUDA vs CPU explainer, batch {n}: max |diff| / max |cpu| = "
                          f"{np.abs(a - b).max() / np.abs(a).max():.2e}")
            if half_paths:
                half = session(half_paths["lrp"])
                c = half.run(["relevance_map"], predicted_targets(half, {"input": x}))[0]
                checks.append(f"CUDA float16 vs CPU float32 explainer, batch {n}: max |diff| / max |cpu| = "
                              f"{np.abs(a - c).max() / np.abs(a).max():.2e}, correlation "
                              f"{np.corrcoef(a.ravel(), c.ravel())[0, 1]:.5f}, finite: {bool(np.isfinite(c).all())}")
        xt = torch.from_numpy(x).to(device)
        if zmodel is not None:
            composite = EpsilonPlusFlat(canonizers=[ResNetCanonizer()])

            def run_zennit():
                with Gradient(model=zmodel, composite=composite) as attributor:
                    out = zmodel(xt)
                    onehot = torch.nn.functional.one_hot(out.argmax(1), 1000).to(out.dtype)
                    attributor(xt, onehot)
            measure(n, "zennit EpsilonPlusFlat + ResNetCanonizer", lambda: run_zennit, max(3, args.runs // 2), 1, True)
        if "reference" not in args.skip:
            measure(n, "PyTorch, paper's rules (tests/reference.py)",
                    lambda: (lambda: reference.lrp(torch_model, xt)), max(3, args.runs // 2), 1, True)
        if "authors" not in args.skip:
            measure(n, "PyTorch, the authors' code's structure (tools/authors_style.py)",
                    lambda: (lambda: authors_style.explain(torch_model, xt)), max(3, args.runs // 2), 1, True)
            if 1 < n <= 8:
                # how the authors' code is run: its visualize.py feeds one image per call
                # (batch-1 loader; its batched start relevance is wrong, see SPEC.md); not at
                # 64, where n calls per timed run would crowd out the GPU bench's time limit
                singles = [xt[i:i + 1] for i in range(n)]
                measure(n, "PyTorch, the authors' code's structure, one image per call as its visualize.py runs it",
                        lambda: (lambda: [authors_style.explain(torch_model, one) for one in singles]),
                        max(3, args.runs // 2), 1, True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    if device == "cuda":
        machine = f"{torch.cuda.get_device_name(0)}, onnxruntime {ort.__version__}, torch {torch.__version__}"
    else:
        machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"onnxruntime {ort.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    lines = [f"ResNet50, 224x224, {args.provider.upper()} provider — {machine}", "",
             "| batch | method | median ms / batch | ms / image | images/s | × ORT forward | peak MB above the loaded model |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    baseline = {n: t for n, name, t, _ in rows if name == "ORT forward (original model)"}
    for n, name, t, mb in rows:
        lines.append(f"| {n} | {name} | {t * 1e3:.1f} | {t * 1e3 / n:.2f} | {n / t:.1f} | {t / baseline[n]:.2f} | {mb:.0f} |")
    lines += ["", f"Build of the explainer: {build_s:.2f} s. Process peak RSS: {peak_mb:.0f} MB."] + checks
    lines += _target_ratios(rows)
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
