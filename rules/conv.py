"""Conv: the z+ rule, and the w+ rule ("ones") for the first layer (SPEC.md section 1).

    z     = conv(a, W+)                 bias dropped, W+ = max(W, 0)
    s     = R_out / (z + eps)
    R_in  = a * conv_transpose(s, W+)   same strides, pads, dilations, groups

Conservation: sum(a * conv_transpose(s, W+)) = sum(s * conv(a, W+)) = sum(R_out * z/(z+eps)).

First layer, :class:`ConvOnes` (the authors' code; the ``paper`` composite's first layer):
``a`` is replaced by ones, so pixel values do not enter:
``R_in = conv_transpose(R_out / (conv(1, W+) + eps), W+)``. ``first_layer="zplus"``
treats it like any other conv.

conv_transpose needs ``output_padding`` where the forward conv dropped trailing input rows
(ResNet's stride-2 convs): it is derived from the static shapes, as are explicit pads for
``auto_pad`` (TensorFlow exports).
"""

from __future__ import annotations

import numpy as np

from .basic import Modified
from .linear import EpsilonKind, GradientKind, LinearZPlus, zplus


def explicit_pads(attrs, in_sp, out_sp, k_eff, strides):
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    n = len(in_sp)
    if auto_pad in ("NOTSET", ""):
        return list(attrs.get("pads", [0] * (2 * n)))
    if auto_pad == "VALID":
        return [0] * (2 * n)
    begins, ends = [], []
    for i in range(n):
        total = max((out_sp[i] - 1) * strides[i] + k_eff[i] - in_sp[i], 0)
        small, big = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else big)
        ends.append(big if auto_pad == "SAME_UPPER" else small)
    return begins + ends


def transpose_attrs(node, facts, weight_shape):
    """Attributes of the ConvTranspose that is the adjoint of ``node``'s conv."""
    in_sp = facts.static_shape(node.inputs[0], "the input", node)[1:]
    out_sp = facts.static_shape(node.outputs[0], "the output", node)[1:]
    n = len(in_sp)
    kernel = list(node.attrs.get("kernel_shape", weight_shape[2:]))
    strides = list(node.attrs.get("strides", [1] * n))
    dil = list(node.attrs.get("dilations", [1] * n))
    k_eff = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    pads = explicit_pads(node.attrs, in_sp, out_sp, k_eff, strides)
    out_pad = [in_sp[i] - ((out_sp[i] - 1) * strides[i] + k_eff[i] - pads[i] - pads[i + n])
               for i in range(n)]
    return {"kernel_shape": kernel, "strides": strides, "dilations": dil, "pads": pads,
            "group": int(node.attrs.get("group", 1)), "output_padding": out_pad}


def adjoint(e, s, w, tattrs):
    """``conv_transpose(s, w)``, in the form ORT's CPU runs fastest: its ConvTranspose is
    GEMM + col2im, and for a depthwise kernel one small GEMM per channel.

    - stride 1: a plain Conv with the kernel flipped and its in/out channels swapped (pads
      ``d*(k-1) - p``);
    - strided 1x1 without pads (a projection skip): that Conv at the low resolution, then
      zeros inserted between the rows and columns;
    - strided depthwise (EfficientNet): zeros inserted into ``s``, then the flipped stride-1
      depthwise Conv at the full resolution (4x its multiply-adds, which a depthwise conv
      has few of).

    Zeros go in with a 1x1 depthwise ConvTranspose of ones, which ORT runs at memory speed
    (a 6-D Pad takes 8x as long). A dense strided kxk kernel keeps ConvTranspose: inserting
    zeros first would give its conv 4x the multiply-adds. Kernel transforms are on
    initializers only, so ORT folds them once at load."""
    kernel, dil, pads = tattrs["kernel_shape"], tattrs["dilations"], tattrs["pads"]
    strides = tattrs["strides"]
    n = len(kernel)
    if all(st == 1 for st in strides):
        new_pads = [d * (k - 1) - p for k, d, p in zip(kernel * 2, dil * 2, pads)]
        if all(p >= 0 for p in new_pads):
            return _flipped_conv(e, s, w, kernel, dil, new_pads, tattrs["group"])
        return _conv_transpose(e, s, w, tattrs)
    group, m, c_per_group = tattrs["group"], w.shape[0], w.shape[1]
    if all(k == 1 for k in kernel) and not any(pads):
        low = _flipped_conv(e, s, w, kernel, dil, [0] * (2 * n), group)
        return _insert_zeros(e, low, c_per_group * group, strides, tattrs["output_padding"])
    if c_per_group == 1 and m == group:
        k_eff = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
        # the zeros after the last row of s: as many as the flipped conv's end pad can take
        tail = [min(st - 1, k - 1 - pe + op) for st, k, pe, op
                in zip(strides, k_eff, pads[n:], tattrs["output_padding"])]
        begin = [k - 1 - pb for k, pb in zip(k_eff, pads[:n])]
        end = [k - 1 - pe + op - t for k, pe, op, t
               in zip(k_eff, pads[n:], tattrs["output_padding"], tail)]
        if all(p >= 0 for p in begin + end + tail):
            spread = _insert_zeros(e, s, group, strides, tail)
            return _flipped_conv(e, spread, w, kernel, dil, begin + end, group)
    return _conv_transpose(e, s, w, tattrs)


def _conv_transpose(e, s, w, tattrs):
    """ConvTranspose on its own copy of the weights: OpenVINO's CPU plugin (2026.4) gives
    wrong numbers for a ConvTranspose whose square C x C x k x k weight tensor a Conv also
    reads, as the forward conv (or z+'s) does here (docs/RUNTIMES.md: the reproduction).
    The copy costs this layer's weights once more in the file; it is made whatever the
    weight's shape, since which shared constants OpenVINO confuses is its internal matter."""
    return e.op("ConvTranspose", [s, e.copy_of_constant(w)], tattrs, hint="c")


def _insert_zeros(e, x, channels, strides, tail):
    """``x`` spread over a grid ``strides`` times finer, zeros between, ``tail`` zeros after
    the last row/column of each axis."""
    ones = e.const(np.ones([channels, 1] + [1] * len(strides), dtype=e.dtype), "ones_1x1")
    return e.op("ConvTranspose", [x, ones], {"strides": list(strides), "group": channels,
                                             "output_padding": list(tail)}, hint="spread")


def _flipped_conv(e, s, w, kernel, dil, pads, group):
    """The stride-1 ``conv_transpose(s, w)`` as a Conv (see :func:`adjoint`)."""
    n = len(kernel)
    m, c_per_group = w.shape[0], w.shape[1]
    if any(k > 1 for k in kernel):
        big = np.iinfo(np.int64).max
        w = e.op("Slice", [w, np.full(n, -1, np.int64), np.full(n, -big, np.int64),
                           np.arange(2, 2 + n, dtype=np.int64), np.full(n, -1, np.int64)], hint="w_flip")
    if group == 1:
        w = e.op("Transpose", [w], {"perm": [1, 0] + list(range(2, 2 + n))}, hint="w_t")
    elif c_per_group != 1 or m != group:  # depthwise (one in, one out per group) needs nothing
        m_per_group = m // group
        w = e.op("Reshape", [w, np.array([group, m_per_group, c_per_group] + kernel, np.int64)])
        w = e.op("Transpose", [w], {"perm": [0, 2, 1] + list(range(3, 3 + n))})
        w = e.op("Reshape", [w, np.array([group * c_per_group, m_per_group] + kernel, np.int64)],
                 hint="w_t")
    attrs = {"kernel_shape": kernel, "dilations": dil, "pads": pads, "group": group}
    return e.op("Conv", [s, w], attrs, hint="c")


def is_depthwise(node) -> bool:
    """A Conv with one input channel per group, several groups (MobileNets, EfficientNets)."""
    if node.op != "Conv" or node.inputs[1].shape is None:
        return False
    return int(node.attrs.get("group", 1)) > 1 and node.inputs[1].shape[1] == 1


class ConvZPlus(LinearZPlus):
    op_types = ("Conv",)
    role = "conv"

    def check_layer(self, node, facts):
        w = node.inputs[1]
        if w.shape is None:
            return "the weight's shape is unknown"
        try:
            attrs = transpose_attrs(node, facts, list(w.shape))
        except Exception as exc:  # static_shape raises with the fix in its message
            return str(exc)
        stride_or_dil = [max(s, d) for s, d in zip(attrs["strides"], attrs["dilations"])]
        if any(not 0 <= p < m for p, m in zip(attrs["output_padding"], stride_or_dil)):
            return (f"the transposed conv would need output_padding {attrs['output_padding']}, "
                    "outside what ONNX allows; input rows beyond the last window are unusual")
        return None

    def describe(self, node, facts):
        return self.note(facts.non_negative(node.inputs[0]))

    def backward(self, e, node, facts):
        tattrs = transpose_attrs(node, facts, list(node.inputs[1].shape))
        return lambda s, wt: adjoint(e, s, wt, tattrs)

    def forward_with(self, e, node, facts):
        """``(x, w, b) -> conv(x, w) + b``, the node's attributes; ``b`` a float or a tensor."""
        w = node.inputs[1]
        attrs = _forward_attrs(node, transpose_attrs(node, facts, list(w.shape)))

        def forward(x, wt, b):
            if isinstance(b, float):
                b = e.const(np.full(w.shape[0], b, e.dtype))
            return e.op("Conv", [x, wt] + ([b] if b is not None else []), attrs, hint="z_eps")
        return forward

    def emit(self, node, relevance, e, facts):
        a, w = node.inputs[0], node.inputs[1]
        forward = self.forward_with(e, node, facts)
        backward = self.backward(e, node, facts)
        return {0: zplus(e, relevance, a, w, forward, backward, facts.non_negative(a), self.eps,
                         self.rescue(e, node, facts, relevance, forward, backward))}


def _forward_attrs(node, tattrs):
    """The forward conv's attributes with explicit pads (``tattrs``' own) in place of auto_pad."""
    fwd = {k: v for k, v in node.attrs.items() if k != "auto_pad"}
    fwd["pads"] = tattrs["pads"]
    return fwd


class ConvOnes(ConvZPlus):
    """The first layer's w+ rule (the authors' code): ``a`` replaced by ones, so pixel
    values do not enter, ``R_in = conv_transpose(R_out / (conv(1, W+) + eps), W+)``."""

    def describe(self, node, facts):
        return "w+ (ones input, first layer)"

    def emit(self, node, relevance, e, facts):
        a, w = node.inputs[0], node.inputs[1]
        tattrs = transpose_attrs(node, facts, list(w.shape))
        w_plus = e.positive_part(w)
        # conv(1, W+) does not depend on the image: one sample, broadcast over the batch,
        # folded to a constant by ORT at load. The ones are made in the graph (ConstantOfShape),
        # so the file does not hold an image-sized constant (805 MB for an 8192x8192 input).
        shape = np.array((1,) + facts.static_shape(a, "the input", node), np.int64)
        ones = e.op("ConstantOfShape", [shape], {"value": e.const(np.ones(1, e.dtype), "one")}, hint="ones")
        z = e.op("Conv", [ones, w_plus], _forward_attrs(node, tattrs), hint="z")
        s = e.stabilised_ratio(relevance, z, self.eps)
        if a is facts.image and e.map_only and tattrs["group"] == 1:
            # Only the channel sum of R_in reaches the heatmap, and with a = ones it is the
            # transposed conv with W+ summed over its input channels: one output channel
            # instead of three.
            w_sum = e.op("ReduceSum", [w_plus, np.array([1], np.int64)], {"keepdims": 1}, hint="w_plus_sum")
            w_sum.shape = [w.shape[0], 1] + list(w.shape[2:])
            summed = adjoint(e, s, w_sum, tattrs)
            e.annotate(summed, [a.shape[0], 1] + list(a.shape[2:]))
            return {0: summed}
        return {0: adjoint(e, s, w_plus, tattrs)}


class ConvEpsilon(EpsilonKind, ConvZPlus):
    """LRP-epsilon: ``R_in = a * conv_transpose(R / (z + eps*sign(z)), W)``, z with bias."""


class ConvGradient(GradientKind, ConvZPlus):
    """The backward pass: ``G_in = conv_transpose(G, W)``."""


class ConvModified(Modified, ConvZPlus):
    """zennit's gamma, alpha-beta, z^B and flat rules (basic.py), by the ``table`` parameter."""


# ConvOnes and ConvModified serve no family by default: composites name them.
RULES = [ConvZPlus(), ConvEpsilon(), ConvGradient()]
