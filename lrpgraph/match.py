"""Read facts off the forward graph: what is constant, what is the first layer, where the
skip merges are and which operand of each is the skip, and which rule each node gets.

Structure only, never names: exporters name things differently (SPEC.md section 2). What an
op is (weighted, sign-keeping, ...) is asked of its rule (rules/base.py), never listed here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from .errors import LrpGraphError, UnsupportedOpsError
from .batch_shapes import SHAPE_READERS
from .load import RANDOM_OPS
from .rules import op_facts


def _outer_reads(node) -> list:
    """The tensors of the enclosing graph that ``node``'s subgraphs read implicitly."""
    subgraphs = list(node.subgraphs(recursive=True))
    if not subgraphs:
        return []
    inner = {t.name for g in subgraphs for t in g.inputs}
    inner |= {t.name for g in subgraphs for n in g.nodes for t in n.outputs}
    return [t for g in subgraphs for n in g.nodes for t in n.inputs
            if t.name and t.name not in inner and not isinstance(t, gs.Constant)]


def _weighted(node) -> int:
    """1 for a node that carries weights (its rule says so): the "depth" that tells a skip
    from a residual branch, and the first layer from the rest, counts these."""
    return 1 if op_facts(node.op).weighted else 0


@dataclass(frozen=True)
class SkipMerge:
    """An Add whose two operands both depend on the image."""

    skip_index: int  # which Add input is the skip path
    kind: str  # "identity" | "projection" | "branch" (equal depth: no skip to tell apart)
    depths: tuple[int, int]  # weighted layers from the fork point to each operand


@dataclass
class Match:
    node: gs.Node
    rule: object
    note: str = ""


@dataclass
class GraphFacts:
    graph: gs.Graph
    image: gs.Variable
    head: gs.Variable  # the model's output tensor
    logits: gs.Variable  # the head's input if the model ends in Softmax, else the head
    order: list  # forward nodes in topological order
    _const: set = field(default_factory=set)
    _wdepth: dict = field(default_factory=dict)
    _non_negative: set = field(default_factory=set)
    merges: dict = field(default_factory=dict)  # node name -> SkipMerge

    @classmethod
    def read(cls, graph: gs.Graph, output_name: str | None = None) -> "GraphFacts":
        if len(graph.inputs) != 1:
            names = [t.name for t in graph.inputs]
            raise LrpGraphError(
                f"the model has {len(names)} non-constant inputs {names}; lrpgraph explains "
                "single-input image classifiers. Bake the extra inputs in as initializers."
            )
        if output_name is not None:
            chosen = [t for t in graph.outputs if t.name == output_name]
            if not chosen:
                raise LrpGraphError(f"--output-name {output_name}: the model's outputs are "
                                    f"{[t.name for t in graph.outputs]}")
            graph.outputs = chosen
        if len(graph.outputs) != 1:
            names = [t.name for t in graph.outputs]
            raise LrpGraphError(
                f"the model has {len(names)} outputs {names}; lrpgraph needs exactly one "
                "(the class scores). Pass --output-name NAME to choose one."
            )
        toposort(graph)
        head = graph.outputs[0]
        # A model that ends in Softmax (Caffe2, TensorFlow) already gives the probability
        # that relevance starts from; the pass starts below it, never with a second softmax.
        logits = head.inputs[0].inputs[0] if probability_head(head) else head
        facts = cls(graph=graph, image=graph.inputs[0], head=head, logits=logits,
                    order=list(graph.nodes))
        facts._compute_constants()
        facts._compute_depths()
        facts._compute_signs()
        return facts

    # -- constness ---------------------------------------------------------------------
    def is_const(self, tensor: gs.Tensor) -> bool:
        return isinstance(tensor, gs.Constant) or tensor.is_empty() or tensor.name in self._const

    def const_value(self, tensor: gs.Tensor) -> np.ndarray | None:
        """The value of an initializer (through Identity/Constant); None if not available."""
        while not isinstance(tensor, gs.Constant):
            if not tensor.inputs:
                return None
            node = tensor.inputs[0]
            if node.op == "Constant" and "value" in node.attrs:
                return np.asarray(node.attrs["value"].values)
            if node.op != "Identity":
                return None
            tensor = node.inputs[0]
        return np.asarray(tensor.values)

    def activations(self, node: gs.Node) -> list[int]:
        """Indices of ``node``'s inputs that depend on the image."""
        return [i for i, t in enumerate(node.inputs) if not self.is_const(t)]

    def _compute_constants(self) -> None:
        """Tensors computed from initializers alone (Constant, ConstantOfShape, Identity of
        a weight, ...): ORT folds these at load, and relevance never flows into them. What a
        node's subgraphs (If, Loop, Scan) read from this graph counts as its input. A
        Shape reads no value of its input, so what is computed from shapes (a class token
        expanded to the batch) is constant to relevance too."""
        for node in self.order:
            if node.op in RANDOM_OPS:
                continue
            if node.op in SHAPE_READERS or all(self.is_const(t) for t in list(node.inputs) + _outer_reads(node)):
                self._const.update(out.name for out in node.outputs)

    # -- depth in weighted layers ------------------------------------------------------
    def _compute_depths(self) -> None:
        depth = {self.image.name: 0}
        for node in self.order:
            ins = [depth[t.name] for t in node.inputs if t.name in depth]
            if not ins:
                continue
            d = max(ins) + _weighted(node)
            for out in node.outputs:
                depth[out.name] = d
        self._wdepth = depth

    def _compute_signs(self) -> None:
        """Tensors that cannot be negative, as each op's rule tells: z+ is the paper's rule
        exactly there."""
        for node in self.order:
            if node.outputs and op_facts(node.op).output_non_negative(node, self):
                self._non_negative.add(node.outputs[0].name)

    def const_non_negative(self, tensor) -> bool:
        """Whether a constant tensor's value is known and has no negative entry."""
        value = self.const_value(tensor)
        return value is not None and bool((np.asarray(value) >= 0).all())

    def non_negative(self, tensor: gs.Tensor) -> bool:
        return tensor.name in self._non_negative

    def is_first_layer(self, node: gs.Node) -> bool:
        """A weighted node with no weighted node between it and the image."""
        data = node.inputs[0]
        return self._wdepth.get(data.name, -1) == 0

    def shape(self, tensor: gs.Tensor) -> tuple | None:
        shape = tensor.shape
        return tuple(shape) if shape is not None else None

    def static_shape(self, tensor: gs.Tensor, what: str, node: gs.Node) -> tuple[int, ...]:
        """Shape without the batch axis; every entry must be known."""
        shape = self.shape(tensor)
        if shape is None or any(not isinstance(d, (int, np.integer)) for d in shape[1:]):
            raise LrpGraphError(
                f"the shape of {what} {tensor.name!r} is {shape}; its non-batch dimensions "
                "must be known. Give the image size (build --size H W) or re-export with a "
                "fixed one."
            )
        return tuple(int(d) for d in shape[1:])

    # -- skip merges ---------------------------------------------------------------------
    def _weighted_ancestors(self, tensor: gs.Tensor) -> dict[str, int]:
        """Every non-constant ancestor of ``tensor`` with the fewest weighted layers on a
        path to it (0-1 breadth-first search)."""
        dist = {tensor.name: 0}
        queue = deque([tensor])
        while queue:
            cur = queue.popleft()
            for node in cur.inputs:
                w = _weighted(node)
                for t in node.inputs:
                    if self.is_const(t):
                        continue
                    nd = dist[cur.name] + w
                    if nd < dist.get(t.name, 1 << 30):
                        dist[t.name] = nd
                        if w:
                            queue.append(t)
                        else:
                            queue.appendleft(t)
        return dist

    def skip_merge(self, node: gs.Node) -> SkipMerge | None:
        acts = self.activations(node)
        if len(acts) != 2 or len(node.inputs) != 2:
            return None
        if node.name not in self.merges:
            da = self._weighted_ancestors(node.inputs[0])
            db = self._weighted_ancestors(node.inputs[1])
            common = set(da) & set(db)
            if not common:
                return None
            fork = min(common, key=lambda n: (da[n] + db[n], n))
            depths = (da[fork], db[fork])
            if depths[0] == depths[1]:
                merge = SkipMerge(skip_index=0, kind="branch", depths=depths)
            else:
                skip = 0 if depths[0] < depths[1] else 1
                kind = "identity" if depths[skip] == 0 else "projection"
                merge = SkipMerge(skip_index=skip, kind=kind, depths=depths)
            self.merges[node.name] = merge
        return self.merges[node.name]


def toposort(graph: gs.Graph) -> None:
    """Order the graph's nodes; a cycle is one clear error."""
    try:
        graph.toposort()
    except Exception as exc:
        raise LrpGraphError(f"the graph cannot be ordered ({exc}); an ONNX graph must be acyclic "
                            "with unique tensor names: re-export the model") from None


def probability_head(head: gs.Tensor) -> bool:
    """Whether the model's output is a Softmax over its class axis (the last): class
    probabilities. A softmax over another axis (the batch) is not one."""
    if not head.inputs or head.inputs[0].op != "Softmax":
        return False
    rank = len(head.shape) if head.shape is not None else 2
    # canonicalise brought the model to opset >= 17, where Softmax's default axis is -1
    return int(head.inputs[0].attrs.get("axis", -1)) % rank == rank - 1


def ends_in_probabilities(model) -> bool:
    """Whether an ONNX model's one output is a softmax over its classes."""
    graph = gs.import_onnx(model)
    return len(graph.outputs) == 1 and probability_head(graph.outputs[0])


def layout(facts: GraphFacts) -> tuple[int, str]:
    """(channel axis, name): NCHW unless the image first goes through an NHWC->NCHW
    Transpose (TensorFlow)."""
    rank = len(facts.image.shape or [0, 0, 0, 0])
    consumers = list(facts.image.outputs)
    if len(consumers) == 1 and consumers[0].op == "Cast":  # the float16 explainer's input cast
        consumers = list(consumers[0].outputs[0].outputs)
    for consumer in consumers:
        if consumer.op == "Transpose" and list(consumer.attrs.get("perm", [])) == [0, 3, 1, 2]:
            return 3, "NHWC"
    return (1, "NCHW") if rank == 4 else (1, f"rank{rank}")


def assign_rules(facts: GraphFacts, composite, stop=None, problems=None) -> list[Match]:
    """Walk back from the output along the inputs that relevance reaches; give every node on
    that path its rule from ``composite`` (rules/composites.py). Collect every node without one before failing, so the user sees them
    all at once; with a ``problems`` list, fill it instead of failing (inspect). The walk
    ends at ``stop`` (default: the image)."""
    collect = problems is not None
    target = stop if stop is not None else facts.image
    on_path = {facts.logits.name}
    matches: list[Match] = []
    problems = problems if collect else []
    for node in reversed(facts.order):
        outs = node.outputs if op_facts(node.op).multi_output else node.outputs[:1]
        if not any(out.name in on_path for out in outs) or node.outputs[0] is target:
            continue
        rule = composite.rule_for(node, facts)
        reason = "no rule for this op type" if rule is None else rule.check(node, facts)
        if rule is None and _outer_reads(node):
            reason = "its subgraph reads image-dependent tensors; no rule sends relevance into it"
        if reason is not None:
            problems.append((node.name, node.op, reason))
            targets = facts.activations(node)  # keep walking to list everything unsupported
        else:
            targets = rule.relevance_inputs(node, facts)
            matches.append(Match(node=node, rule=rule, note=rule.describe(node, facts)))
        for i in targets:
            on_path.add(node.inputs[i].name)
    if problems and not collect:
        raise UnsupportedOpsError(problems)
    if problems:
        return matches
    if target.name not in on_path:
        raise LrpGraphError(
            f"relevance from output {facts.logits.name!r} never reaches {target.name!r}; "
            "the output does not depend on the image through supported ops."
        )
    return matches
