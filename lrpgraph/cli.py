"""lrpgraph: compile LRP explanations of residual classifiers into ONNX explainer graphs,
and run, check and evaluate them. (The CLI calls the same Python API users import.)"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import sys
import warnings

from .config import METHOD_NAMES, VARIANTS, Preprocess, preset
from .errors import LrpGraphError
from .heatmaps import require_pictures


def _floats(text):
    return tuple(float(x) for x in text.split(","))


def _classes(text):
    """One class (``281``) or a comma list (``281,282,285``) for K classes per image."""
    values = [int(x) for x in text.split(",")]
    return values[0] if len(values) == 1 else values


def _add_rule_flags(p):
    p.add_argument("--preset", default="paper", choices=["paper"],
                   help="rule preset: paper, the authors' code (default)")
    p.add_argument("--variant", choices=sorted(VARIANTS),
                   help="the paper's ablation variant (i)-(iv); iv is the paper preset")
    p.add_argument("--identity-skip", dest="identity_skip", action="store_true", default=None,
                   help="send relevance into identity skips (paper)")
    p.add_argument("--no-identity-skip", dest="identity_skip", action="store_false",
                   help="identity skips get no relevance (variants i, iii)")
    p.add_argument("--split", choices=["ratio", "symmetric"], help="skip-merge split (paper: ratio)")
    p.add_argument("--maxpool", choices=["avg2x2", "winner"],
                   help="avg2x2: the paper's 2x2-average stand-in; winner: exact arg-max")
    p.add_argument("--first-layer", choices=["ones", "zplus"], help="paper: ones (w+ rule)")
    p.add_argument("--eps", type=float, help="stabiliser (paper: 1e-5)")
    p.add_argument("--start", choices=["probability", "logit"],
                   help="start relevance (paper: the target's probability)")


def _config(args, **extra):
    return preset(args.preset, args.variant, method=getattr(args, "method", None),
                  identity_skip=args.identity_skip, split=args.split, maxpool=args.maxpool,
                  first_layer=args.first_layer, eps=args.eps, start=args.start, **extra)


def _print_table(title, rows, headers):
    widths = [max(len(str(r[i])) for r in rows + [headers]) for i in range(len(headers))]
    print(title)
    print("  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    for r in rows:
        print("  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


def cmd_build(args):
    from .driver import build_explainer, check_output_path, save_model

    config = _config(args, hq_levels=args.hq_levels if args.hq else None,
                     full_relevance=args.full_relevance, tokens=args.tokens, conservation=args.conservation,
                     dtype=args.dtype, ig_steps=args.ig_steps, ig_method=args.ig_method,
                     target_input=args.target_input, targets=args.targets)
    pre = None  # the model's own input size, ImageNet's mean and std
    image_size = _image_size(args.size)
    if any(v is not None for v in (args.size, args.resize, args.mean, args.std)):
        base = Preprocess()
        size = image_size[0] if image_size else base.size
        pre = Preprocess(size=size, resize=args.resize or round(size * 256 / 224),
                         mean=args.mean or base.mean, std=args.std or base.std)
    output = args.output or _default_output(args.model)
    check_output_path(args.model, output)
    model, report = build_explainer(args.model, config, pre, args.output_name, image_size)
    save_model(model, output)
    ops = sorted(set(report.ops_before) | set(report.ops_after))
    rows = [(op, report.ops_before.get(op, 0), report.ops_after.get(op, 0)) for op in ops]
    _print_table(f"built {output} in {report.seconds:.2f} s", rows, ["op", "before", "after"])
    merges = ", ".join(f"{n} {k}" for k, n in sorted(report.merges.items())) or "none"
    print(f"skip merges: {merges}; outputs: {', '.join(report.outputs[:6])}"
          + (" ..." if len(report.outputs) > 6 else ""))
    for w in report.warnings:
        print(f"note: {w}")
    return 0


def _image_size(values):
    """``--size S`` or ``--size H W`` as (H, W), or None."""
    if not values:
        return None
    if len(values) > 2 or min(values) < 1:
        raise LrpGraphError(f"--size {' '.join(map(str, values))}: give S or H W, positive")
    h, w = values[0], values[-1]
    if h != w:
        raise LrpGraphError(f"--size {h} {w}: explain's preprocessing crops squares; build a non-square "
                            "explainer with the API (build_explainer(..., size=(H, W))) and feed it arrays")
    return h, w


def _default_output(path):
    stem = path[:-5] if path.endswith(".onnx") else path
    return stem + ".lrp.onnx"


def cmd_inspect(args):
    from .driver import inspect
    from .rules.composites import DEFAULT_REASONS

    config = _config(args)
    report = inspect(args.model, config, size=_image_size(args.size))
    rules, merges, problems, layout = report
    _print_table(f"{args.model}: {len(rules)} nodes on the relevance path with a rule", rules,
                 ["node", "op", "rule"])
    described = ", ".join(f"{n} {k}" for k, n in sorted(merges.items())) or "none"
    why = DEFAULT_REASONS.get(report.composite) if config.method == "lrp" and config.composite == "auto" else None
    print(f"composite: {report.composite}" + (f" (the default here: {why})" if why else "")
          + f"; skip merges: {described}; input layout {layout}")
    if report.quantized:
        q = report.quantized
        after = ", ".join(p for _, p in q["recovered_relus"][:6]) + (" ..." if len(q["recovered_relus"]) > 6 else "")
        print(f"quantized (QDQ): {q['quantize']} QuantizeLinear, {q['dequantize']} DequantizeLinear; the forward "
              f"stays quantized, relevance runs in float32 on the dequantized tensors; Relus recovered from the "
              f"grid's clamp at 0: {len(q['recovered_relus'])}" + (f" (after {after})" if after else ""))
    if not problems:
        print("unsupported: none")
        return 0
    _print_table(f"unsupported: {len(problems)} node(s); build would stop", problems, ["node", "op", "reason"])
    return 2


def _explain_preprocess(args, ex):
    """The explainer's recorded preprocessing, with what the flags change."""
    from dataclasses import replace

    if any(v is not None for v in (args.size, args.mean, args.std, args.layout)):
        base = Preprocess()
        pre = Preprocess(size=args.size or base.size, resize=args.resize or round((args.size or 224) * 256 / 224),
                         mean=args.mean or base.mean, std=args.std or base.std,
                         layout=args.layout or base.layout)
    else:
        pre = replace(ex.preprocess, resize=args.resize) if args.resize else ex.preprocess
    return replace(pre, fit="pad") if args.full_image else pre


def cmd_explain(args):
    from .explain import Explainer, explain_paths

    require_pictures("explain")
    ex = Explainer(args.model, provider=args.provider)
    ex.preprocess = _explain_preprocess(args, ex)
    ex.max_pixels = args.max_pixels
    if args.target is not None:  # a bad target fails here, before any folder is made
        ex.check_target(args.target, 1)
    style = ex.style(args.cmap, args.alpha, args.colorbar)
    if args.ray is not None and (args.top_k is not None or args.contrast):
        raise LrpGraphError("--top-k and --contrast run on one machine only: leave out --ray, or drop them "
                            "(a --targets K explainer on Ray writes all K maps)")
    if args.ray is not None:
        from .ray import explain_paths_ray

        print(f"lrpgraph explain: {args.model} on Ray ({args.ray or 'a local instance'})", file=sys.stderr)
        summary = explain_paths_ray(args.model, args.inputs, args.output, address=args.ray, target=args.target,
                                    hq=args.hq, batch_size=args.batch_size, overwrite=args.overwrite,
                                    provider=args.provider, workers=args.workers, style=style,
                                    preprocess=ex.preprocess)
    else:
        print(f"lrpgraph explain: {args.model} on {ex.provider}", file=sys.stderr)
        summary = explain_paths(ex, args.inputs, args.output, target=args.target, hq=args.hq,
                                batch_size=args.batch_size, overwrite=args.overwrite,
                                progress=False if args.quiet else None, style=style, sheet=args.sheet,
                                top_k=args.top_k, contrast=args.contrast)
    for path, reason in summary.failed:
        print(f"  failed: {reason}" if path in reason else f"  failed: {path}: {reason}", file=sys.stderr)
    print(f"explained {summary.explained}, skipped {summary.skipped} already done, "
          f"failed {len(summary.failed)} -> {args.output}")
    return 1 if summary.failed else 0


def cmd_check(args):
    from .check import check, print_report

    if args.images:
        require_pictures("check with images")
    report = check(args.model, args.images, random=args.random, tolerance=args.tol,
                   config=_config(args), provider=args.provider, seed=args.seed)
    print_report(report)
    return 0 if report.ok else 1


def cmd_serve(args):
    from .serve import make_server

    server = make_server(args.model, args.host, args.port, args.ort_web)
    host, port = server.server_address[:2]
    print(f"lrpgraph serve: http://{host}:{port}/ explains photos with {args.model} in the browser "
          "(nothing is uploaded); Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def cmd_eval(args):
    from .evaluate import check_methods, evaluate, read_dataset

    methods = ["lrp-i", "lrp-ii", "lrp-iii", "lrp-iv"] if args.ablation else args.methods.split(",")
    if not args.no_sanity:
        methods += [m for m in ("constant", "random", "blob") if m not in methods]
    check_methods(methods)
    stray = [m for m in (args.hq or "all").split(",") if m != "all" and m not in methods]
    if stray:
        raise ValueError(f"--hq {args.hq}: {stray} not among the methods scored ({', '.join(methods)})")
    items = read_dataset(args.data, args.labels, args.list, args.per_class, args.seed)
    items = items[args.skip:][::args.every or 1]
    items = items[:args.limit] if args.limit else items
    if not items:
        raise ValueError("the dataset is empty")
    size = args.size or _model_size(args.model)
    pre = Preprocess(size=size, resize=args.resize or round(size * 256 / 224))
    print(f"lrpgraph eval: {len(items)} images, methods {', '.join(methods)}", file=sys.stderr)

    with _progress_bar(len(items), args.quiet) as progress:
        table = evaluate(args.model, items, methods, args.output, protocols=args.protocols.split(","),
                         hq=(False, True) if args.hq else (False,), progress=progress, ig_steps=args.ig_steps,
                         hq_methods=None if args.hq in (None, "all") else args.hq.split(","),
                         smooth=[float(x) for x in args.smooth.split(",")] if args.smooth else (),
                         positive=args.positive,
                         ray_address=args.ray, workers=args.workers, provider=args.provider,
                         channels=args.channel_reduction, pre=pre, scored=args.scored_class)
    if args.ablation:
        print_ablation(table)
    return 0


def _model_size(path) -> int:
    """The square input size of a classifier (224 where the file leaves it open)."""
    import onnx

    dims = onnx.load(path, load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    sizes = [d.dim_value for d in dims[1:] if d.HasField("dim_value") and d.dim_value not in (1, 3)]
    return sizes[0] if sizes else 224


@contextlib.contextmanager
def _progress_bar(total, quiet):
    """``progress(done, total)`` for eval: a tqdm bar (images/s, ETA) on stderr."""
    if quiet:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="img", file=sys.stderr, smoothing=0.1) as bar:
        def progress(done, _total):
            if bar.n == 0 and done > 1:  # a resumed run: its rate counts this run's images only
                bar.initial = bar.n = bar.last_print_n = done - 1
            bar.update(done - bar.n)
        yield progress


def print_ablation(table):
    """The paper's Table 2: ID score per variant (rows) and protocol (columns)."""
    ids = {(r["method"], r["protocol"]): r["id"] for r in table}
    columns = sorted({p for _, p in ids})
    variants = [m for m in dict.fromkeys(m for m, _ in ids) if m.startswith("lrp-")]
    print("Table 2 (ID score):")
    print("| variant | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for v in variants:
        print(f"| {v} | " + " | ".join(f"{ids[(v, p)]:.3f}" for p in columns) + " |")


def _build_parser(sub):
    b = sub.add_parser("build", help="compile a model into an LRP explainer graph")
    b.add_argument("model", help="the classifier, .onnx")
    b.add_argument("-o", "--output", help="explainer path (default: MODEL.lrp.onnx)")
    b.add_argument("--output-name", help="the class-score output, for models with several outputs")
    _add_rule_flags(b)
    b.add_argument("--hq", action="store_true", help="add relevance_map_hq (Heat Quantization)")
    b.add_argument("--hq-levels", type=int, default=8, help="HQ levels L (default 8)")
    b.add_argument("--full-relevance", action="store_true", help="also output relevance N x C x H x W")
    b.add_argument("--tokens", action="store_true",
                   help="also output relevance_tokens N x h x w: the per-patch map of a transformer (the "
                        "relevance reaching its patch-embedding conv's output)")
    b.add_argument("--conservation", action="store_true",
                   help="add per-layer relevance sums (relsum/...) as outputs")
    b.add_argument("--method", choices=list(METHOD_NAMES), default="lrp", metavar="METHOD",
                   help="; ".join(f"{name}: {text}" for name, (_, _, text) in METHOD_NAMES.items())
                   + " (default: lrp)")
    b.add_argument("--ig-steps", type=int, help="Integrated Gradients path points (default 32; ig-paper: 50)")
    b.add_argument("--ig-method", choices=["riemann-right", "gausslegendre"],
                   help="Integrated Gradients' integral (default riemann-right; ig-paper: gausslegendre)")
    b.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                   help="float16: forward and relevance pass in half precision (GPUs)")
    b.add_argument("--targets", type=int, metavar="K",
                   help="explain K classes per image in one call: outputs relevance_maps N x K x H x W and "
                        "targets_used N x K, input targets int64[N, K] (default, or -1: the k-th most "
                        "probable); the forward and every denominator run once for all K. Every method: "
                        "Score-CAM's masked passes and IG's path are shared by the K as well")
    b.add_argument("--no-target-input", dest="target_input", action="store_false",
                   help="explain the predicted class only: no optional target input, so no "
                        "control flow in the graph (ORT's CUDA graph capture needs that)")
    b.add_argument("--size", type=int, nargs="+", metavar="H [W]",
                   help="image size: fixes a model input the file leaves symbolic, and is the crop "
                        "recorded for explain (default: the model's input size where it is static and "
                        "square, else 224)")
    b.add_argument("--resize", type=int, help="short side before the crop (default: size * 256 / 224)")
    b.add_argument("--mean", type=_floats,
                   help="per-channel mean of [0, 1] pixels, recorded for explain (default: ImageNet's)")
    b.add_argument("--std", type=_floats, help="per-channel std, recorded for explain (default: ImageNet's)")
    b.set_defaults(func=cmd_build)


def _explain_parser(sub):
    x = sub.add_parser("explain", help="heatmaps for images: files, several files or folders")
    x.add_argument("model", help="an explainer built by lrpgraph build")
    x.add_argument("inputs", nargs="+", help="image files or folders (recursive)")
    x.add_argument("-o", "--output", default="heatmaps", help="output folder (default: heatmaps)")
    x.add_argument("--target", type=_classes,
                   help="class to explain (default: the predicted one); for an explainer built with "
                        "--targets K, K classes as 281,282,... (-1: the k-th most probable)")
    x.add_argument("--top-k", type=int, metavar="K",
                   help="explainers built with --targets K: keep the first K of its maps (default: all); "
                        "one map per class, name.k1_285.png ...")
    x.add_argument("--contrast", action="store_true",
                   help="explainers built with --targets K (K >= 2): each map minus the mean of the image's "
                        "other K-1 maps, to tell apart classes that look alike")
    x.add_argument("--hq", action="store_true", help="save the Heat-Quantized map (SPEC.md)")
    x.add_argument("--provider", default="auto", choices=["auto", "cuda", "cpu"],
                   help="ORT provider (default auto: CUDA where onnxruntime-gpu works, else the CPU)")
    x.add_argument("--batch-size", type=int, default=8, help="images per explainer call (default 8)")
    x.add_argument("--overwrite", action="store_true", help="redo images already explained")
    x.add_argument("--cmap", help="matplotlib colour map for the PNGs (default: bwr, diverging and "
                   "centred at 0, for LRP and the gradients; jet for Grad-CAM and Score-CAM)")
    x.add_argument("--alpha", type=float, help="overlay strength where relevance is highest (default 0.7)")
    x.add_argument("--colorbar", action="store_true", help="draw name.png with a colour bar that reads relevance")
    x.add_argument("--sheet", action="store_true",
                   help="also write sheet.png: photo | map | overlay per image, with class and probability")
    x.add_argument("--full-image", action="store_true",
                   help="explain the whole photo (fitted into the square, padded with the mean colour) "
                        "instead of the centre crop")
    x.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="distribute with Ray Data (a local instance, or the cluster at ADDRESS, e.g. auto)")
    x.add_argument("--workers", type=int, help="Ray actors (default: one per GPU, else one per CPU)")
    x.add_argument("--quiet", action="store_true", help="no progress bar")
    x.add_argument("--max-pixels", type=int, default=200_000_000,
                   help="refuse images with more pixels (decompression bombs; default 2e8)")
    x.add_argument("--size", type=int, help="crop size (default: what the explainer recorded at build)")
    x.add_argument("--resize", type=int, help="short side before the crop (default: recorded at build)")
    x.add_argument("--mean", type=_floats, help="per-channel mean of [0, 1] pixels, e.g. 0.485,0.456,0.406 "
                   "(default: recorded at build)")
    x.add_argument("--std", type=_floats, help="per-channel std, e.g. 0.229,0.224,0.225 (default: recorded)")
    x.add_argument("--layout", choices=["NCHW", "NHWC"], help="the model's input layout (default: recorded)")
    x.set_defaults(func=cmd_explain)


def _check_parser(sub):
    c = sub.add_parser("check", help="per-layer conservation table; non-zero exit above --tol")
    c.add_argument("model", help="an explainer built with --conservation, or the original model")
    c.add_argument("images", nargs="*", help="images to run on (default: random inputs)")
    c.add_argument("--random", type=int, default=4, help="number of random inputs (default 4)")
    c.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    c.add_argument("--tol", type=float, default=1e-3,
                   help="relative conservation tolerance per rule (default 1e-3)")
    c.add_argument("--provider", default="cpu", choices=["auto", "cuda", "cpu"],
                   help="ORT provider (default cpu)")
    _add_rule_flags(c)
    c.set_defaults(func=cmd_check)


def _eval_parser(sub):
    v = sub.add_parser("eval", help="insertion / deletion / ID score of methods on labelled images")
    v.add_argument("model", help="the classifier, .onnx (explainers are built in memory)")
    v.add_argument("--data", help="ImageFolder tree (class folders named by class index, e.g. 281, or by "
                   "ImageNet synset, e.g. n02123045; other names take their index in sorted order), "
                   "or a flat folder with --labels")
    v.add_argument("--labels", help="labels for a flat folder: one per line in sorted file order, or 'name label'")
    v.add_argument("--list", help="a file of 'path,label' lines")
    v.add_argument("--methods", default="lrp-paper",
                   help=f"comma-separated, of {', '.join(METHOD_NAMES)}; sanity rows are always added")
    v.add_argument("--ablation", action="store_true", help="the paper's variants (i)-(iv) (Table 2)")
    v.add_argument("--protocols", default="paper,tie-robust", help="paper, tie-robust, rise")
    v.add_argument("--hq", nargs="?", const="all", metavar="METHODS",
                   help="also score Heat-Quantized maps: of every method, or of these (comma-separated)")
    v.add_argument("--smooth", metavar="SIGMAS",
                   help="also score each method's map Gaussian-smoothed, one row per sigma in pixels (e.g. 2,4)")
    v.add_argument("--no-sanity", action="store_true",
                   help="leave out the sanity rows (constant, random, blob), as in a second stage of a search "
                        "whose first stage scored them on the same photos")
    v.add_argument("--positive", action="store_true", help="also score each method's map clipped at 0")
    v.add_argument("--ig-steps", type=int, help="Integrated Gradients path points (default: the method's)")
    v.add_argument("--channel-reduction", choices=["sum", "first"], default="sum",
                   help="how a map with a channel axis (LRP, IG, Guided BP, gradients) becomes one value per "
                        "pixel: sum (default), or first: channel 0 alone, as the authors' metrics/patch_insdel.py "
                        "ranks captum's 3 x H x W maps (rows named 'METHOD (channel 0)')")
    v.add_argument("--per-class", type=int, help="draw K images per class")
    v.add_argument("--seed", type=int, default=42, help="seed of --per-class's draw (default 42, the paper's)")
    v.add_argument("--limit", type=int, help="at most N images")
    v.add_argument("--skip", type=int, default=0,
                   help="drop the first N images of the list before --every (a held-out half: --skip 400)")
    v.add_argument("--scored-class", choices=["label", "predicted"], default="label",
                   help="whose probability the curves follow: the ground-truth label (the paper's protocol, "
                        "default) or the predicted class, the one the maps explain")
    v.add_argument("--every", type=int, help="every K-th image of the list (e.g. 4: 200 of the 800 sample photos)")
    v.add_argument("--size", type=int, help="centre crop (default: the model's input size)")
    v.add_argument("--resize", type=int, help="short side before the crop (default: size * 256 / 224)")
    v.add_argument("-o", "--output", default="results",
                   help="folder for per_image.jsonl, table.{md,csv,json}, comparisons.json, timing.json and the "
                        "curves (default: results); an interrupted run with the same settings resumes there")
    v.add_argument("--quiet", action="store_true", help="no progress lines")
    v.add_argument("--provider", default="cpu", choices=["auto", "cuda", "cpu"],
                   help="ORT provider for the model and the explainers")
    v.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="spread the images over Ray actors (a local instance, or the cluster at ADDRESS)")
    v.add_argument("--workers", type=int, help="Ray actors (default: one per CPU)")
    v.set_defaults(func=cmd_eval)


def _inspect_parser(sub):
    i = sub.add_parser("inspect", help="show what matched: skip merges, the rule per node")
    i.add_argument("model")
    _add_rule_flags(i)
    i.add_argument("--method", choices=list(METHOD_NAMES), default="lrp", metavar="METHOD",
                   help="whose composite to match with (default: lrp)")
    i.add_argument("--size", type=int, nargs="+", metavar="H [W]",
                   help="image size, for a model whose file leaves it symbolic")
    i.set_defaults(func=cmd_inspect)


def _serve_parser(sub):
    s = sub.add_parser("serve", help="a local page that explains photos in the browser (onnxruntime-web)")
    s.add_argument("model", help="an explainer built by lrpgraph build (one target: no --targets)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free one)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--ort-web", metavar="DIST",
                   help="onnxruntime-web's dist folder (default: node_modules/onnxruntime-web/dist here "
                        "or in the lrpgraph repository, after `npm ci`)")
    s.set_defaults(func=cmd_serve)


def make_parser():
    parser = argparse.ArgumentParser(prog="lrpgraph", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_build_parser, _explain_parser, _check_parser, _eval_parser, _inspect_parser, _serve_parser):
        add(sub)
    return parser


def _parse(parser, argv):
    """Parse; an unknown flag is reported with the subcommand's own usage and the closest
    flag it has ("did you mean --eps?")."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]
        flags = [o for action in sub._actions for o in action.option_strings]
        close = difflib.get_close_matches(extra[0].split("=")[0], flags, n=1, cutoff=0.6)
        sub.error(f"unrecognized argument {extra[0]}" + (f"; did you mean {close[0]}?" if close else ""))
    return args


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings as one line of ours, not Python's with a source line."""
    text = str(message)
    print(f"lrpgraph: warning: {text.removeprefix('lrpgraph: ')}", file=sys.stderr)


def main(argv=None) -> int:
    args = _parse(make_parser(), argv)
    warnings.showwarning = _show_warning
    try:
        return args.func(args)
    except (LrpGraphError, ValueError) as exc:
        print(f"lrpgraph {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the output side: a full disk, a read-only folder, a file for a folder
        where = f"{exc.filename}: " if exc.filename else ""
        kept = " (what was written before is kept; rerun to resume)" if args.command == "explain" else ""
        print(f"lrpgraph {args.command}: error: {where}{exc.strerror or exc}{kept}", file=sys.stderr)
        return 2
