"""zennit's modified-gradient rules for the weighted layers (Conv, Gemm), as one generic
routine (zennit's ``BasicHook``) and a table per rule: a rule is data, not code.

A rule is a list of *groups*; each group shares one denominator and has a coefficient, a
mask and *terms* ``(input part, weight part, with bias, sign)``:

    z_g    = sum_t sign_t * f(x_t, W_t, b_t)            the group's denominator
    s_g    = mask_g * R / (z_g + stabilizer * sign(z_g))
    R_in   = sum_g coef_g * sum_t sign_t * x_t * f^T(s_g, W_t)

with x_t one of ``a``, ``a+``, ``a-``, the pixel bounds ``low`` / ``high`` or ones, and W_t
one of ``W``, ``W+``, ``W-``, ``W + gamma W+``, ``W + gamma W-`` or ones (the bias gets the
same modification, where the term keeps it). The tables follow zennit 0.5's rules.py term
for term, biases included, so that its composites are ours to compare against:

- ``gamma`` (Montavon et al. 2019): where z > 0, ``(W + gW+) a+ + (W + gW-) a-``; where
  z < 0, ``(W + gW-) a+ + (W + gW+) a-``; z = the layer's own output;
- ``alphabeta`` (Bach et al. 2015): ``alpha`` times the positive contributions' share,
  minus ``beta`` times the negative ones'; ``alpha=1, beta=0`` is zennit's ``ZPlus``
  (which, unlike the paper's z+ of linear.py, keeps the positive bias in the denominator);
- ``box`` (z^B, Montavon et al. 2017), first layer: ``W x - W+ low - W- high``, the
  bounds being the normalised pixel range (``(0 - mean) / std``, ``(1 - mean) / std``);
- ``flat`` (Lapuschkin et al. 2019), first layer: ones for inputs and weights, the
  relevance spread evenly over each output's receptive field.

Where the input is known non-negative the ``a-`` terms are 0 and are not built.
"""

from __future__ import annotations

import numpy as np

from .linear import epsilon_ratio

# (mask, coefficient, terms); a coefficient given as a string names a rule parameter
_POS, _NEG = [("pos", "+", True, 1), ("neg", "-", False, 1)], [("pos", "-", True, 1), ("neg", "+", False, 1)]
TABLES = {
    "gamma": [("z>0", 1.0, [("pos", "g+", True, 1), ("neg", "g-", False, 1)]),
              ("z<0", 1.0, [("pos", "g-", True, 1), ("neg", "g+", False, 1)])],
    "alphabeta": [(None, "alpha", _POS), (None, "-beta", _NEG)],
    "box": [(None, 1.0, [("all", "all", True, 1), ("low", "+", True, -1), ("high", "-", True, -1)])],
    "flat": [(None, 1.0, [("ones", "ones", False, 1)])],
}


class Parts:
    """The modified inputs, weights and biases of one node, each built once."""

    def __init__(self, e, node, facts, gamma, bounds):
        self.e, self.node, self.facts, self.gamma, self.bounds = e, node, facts, gamma, bounds
        self._cache = {}

    def _once(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def signed(self, t, kind, key):
        """``t``'s part ``kind`` (+, -, g+, g-, all, ones), an op on the constant where ``t`` is one."""
        e = self.e

        def make():
            if kind == "all":
                return t
            if kind == "ones":
                return e.const(np.ones(t.shape, e.dtype), "ones_w")
            if kind == "+":
                return e.positive_part(t)
            if kind == "-":
                out = e.op("Min", [t, e.scalar(0.0)], hint=f"{key}_minus")
            else:  # W + gamma W+- : zennit's GammaMod
                part = self.signed(t, kind[1], key)
                out = e.op("Add", [t, e.op("Mul", [part, e.scalar(self.gamma)])], hint=f"{key}_gamma")
            out.shape = t.shape
            return out
        return self._once((key, kind), make)

    def input(self, kind):
        """The term's input (None for ones: the term then skips the multiply, as Flat does)."""
        a, e = self.node.inputs[0], self.e
        if kind == "all":
            return a
        if kind in ("pos", "neg"):
            return self.signed(a, "+" if kind == "pos" else "-", "a")
        if kind == "ones":
            return None
        low, high = self.bounds
        shape = (1,) + self.facts.static_shape(a, "the input", self.node)
        bound = np.asarray(low if kind == "low" else high, e.dtype).reshape(1, -1, *[1] * (len(shape) - 2))
        return self._once(kind, lambda: e.op("Expand", [e.const(bound, kind), np.array(shape, np.int64)],
                                             hint=f"{kind}_bound"))

    def forward_input(self, kind):
        """What the forward pass of a term reads: ones where its input is ones."""
        x = self.input(kind)
        if x is not None:
            return x
        e, a = self.e, self.node.inputs[0]
        shape = np.array((1,) + self.facts.static_shape(a, "the input", self.node), np.int64)
        return self._once("ones_in", lambda: e.op("ConstantOfShape", [shape],
                                                 {"value": e.const(np.ones(1, e.dtype), "one")}, hint="ones"))

    def bias(self, kind):
        node = self.node
        if len(node.inputs) < 3 or node.inputs[2].is_empty():
            return None
        return self.signed(node.inputs[2], kind, "b")


def propagate(e, relevance, parts, groups, forward, backward, stabilizer, params, non_negative):
    """R_in of a rule table (see the module's docstring). ``forward(x, w, b)`` is the layer
    with modified operands (``b`` None: no bias), ``backward(s, w)`` its transpose."""
    total = None
    for mask, coef, terms in groups:
        terms = [t for t in terms if not (non_negative and t[0] == "neg")]
        coef = _coefficient(coef, params)
        if coef == 0 or not terms:
            continue
        z = _sum(e, [_signed(e, forward(parts.forward_input(x), parts.signed(parts.node.inputs[1], w, "w"),
                                        parts.bias(w) if with_bias else None), sign)
                     for x, w, with_bias, sign in terms], "z")
        s = epsilon_ratio(e, relevance, z, stabilizer)
        if mask is not None:
            out = parts.node.outputs[0]
            keep = e.op("Greater" if mask == "z>0" else "Less", [out, e.scalar(0.0)], hint="mask")
            s = e.op("Where", [keep, s, e.scalar(0.0)], hint="s_masked")
        contributions = []
        for x, w, _, sign in terms:
            c = backward(s, parts.signed(parts.node.inputs[1], w, "w"))
            x_in = parts.input(x)
            contributions.append(_signed(e, c if x_in is None else e.op("Mul", [x_in, c], hint="r_term"), sign))
        group = _sum(e, contributions, "r_group")
        group = group if coef == 1 else e.op("Mul", [group, e.scalar(coef)], hint="r_coef")
        total = group if total is None else e.op("Add", [total, group], hint="r_in")
    return total


def _coefficient(coef, params):
    if isinstance(coef, str):
        return -params[coef[1:]] if coef.startswith("-") else params[coef]
    return coef


def _signed(e, t, sign):
    return t if sign > 0 else e.op("Neg", [t], hint="neg")


def _sum(e, tensors, hint):
    out = tensors[0]
    for t in tensors[1:]:
        out = e.op("Add", [out, t], hint=hint)
    return out


class Modified:
    """Mixed in before a weighted layer's z+ rule class (ConvZPlus, GemmZPlus), which
    supplies ``forward_with(e, node, facts)`` and ``backward(e, node, facts)``."""

    families = ()
    params = ("table", "stabilizer", "gamma", "alpha", "beta", "bounds")
    table = "gamma"
    stabilizer = 1e-6  # zennit's default
    gamma, alpha, beta = 0.25, 2.0, 1.0
    bounds = None  # (low, high) per input channel, for "box"

    def check_layer(self, node, facts):
        if self.table == "box" and node.inputs[0] is not facts.image:
            return ("the z^B (box) rule needs pixel bounds, so its layer must read the image itself; "
                    "this first layer reads a computed tensor: choose another first-layer rule")
        if self.table == "box" and self.bounds is None:
            return "the z^B (box) rule was given no pixel bounds"
        return super().check_layer(node, facts)

    def describe(self, node, facts):
        values = {"gamma": f"gamma={self.gamma}", "alphabeta": f"alpha={self.alpha}, beta={self.beta}"}
        return f"{self.table}" + (f" ({values[self.table]})" if self.table in values else "")

    def absorption(self, node, facts):
        has_bias = len(node.inputs) > 2 and not node.inputs[2].is_empty()
        if self.table == "alphabeta" and self.beta:
            return "alpha-beta: the positive and negative shares do not sum to the relevance"
        if has_bias and self.table in ("gamma", "alphabeta"):
            return "the bias keeps its share (zennit's rules keep it in the denominator)"
        return None

    def emit(self, node, relevance, e, facts):
        parts = Parts(e, node, facts, self.gamma, self.bounds)
        params = {"alpha": self.alpha, "beta": self.beta}
        non_negative = self.table in ("gamma", "alphabeta") and facts.non_negative(node.inputs[0])
        return {0: propagate(e, relevance, parts, TABLES[self.table], self.forward_with(e, node, facts),
                             self.backward(e, node, facts), self.stabilizer, params, non_negative)}
