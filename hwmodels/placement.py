"""Where each tensor lives between nodes: on chip (handed to the next node) or in DRAM. Pure.

Rules (the accelerator runs one node at a time, in graph order):
- Inputs, labels, weights and optimiser state live in DRAM; an update writes weights back there.
- The MAC array reads its operands from DRAM through the ifmap and filter buffers (tiles).
- A tensor produced by node p stays on chip, in the ofmap buffer where the vector unit works, when
  the very next node is a vector node that reads it and the whole tensor fits in half that buffer
  (the other half streams the consumer's output). GEMM -> requantize and vector chains use this.
- Otherwise, or when any later node also reads it (the activation stash for the backward pass),
  the producer writes it to DRAM and later readers fetch it from there.
- A handoff that failed only because the tensor was too big is a *spill*: its DRAM write (when no
  later reader needed it anyway) and the next node's re-reads of it are counted as spill bytes.

Views (flatten), and requantize on a float32 accelerator, alias their input; they move nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from nitisim.contract.graph import Graph, Node

from .lowering import is_alias
from .spec import AcceleratorSpec

PERSISTENT_ROLES = ("input", "label", "weight", "state")


@dataclass(frozen=True)
class NodePlacement:
    onchip_inputs: frozenset  # root tensors this node reads from the ofmap buffer instead of DRAM
    keep_onchip: frozenset  # root tensors it leaves in the ofmap buffer for the next node
    to_dram: frozenset  # root tensors it writes to DRAM
    spilled_inputs: frozenset = frozenset()  # inputs read from DRAM only because they did not fit
    spill_write_bytes: int = 0  # DRAM writes only because an output did not fit on chip


@dataclass(frozen=True)
class Placement:
    nodes: tuple[NodePlacement, ...]  # parallel to the node list
    roots: dict = field(repr=False)  # tensor name -> the tensor it aliases (itself when not a view)
    tensor_bytes: dict = field(repr=False)  # root name -> bytes on this accelerator
    activation_stash_bytes: int = 0  # forward results that backward nodes read
    peak_storage_bytes: int = 0  # most bytes of live tensors at any node (weights, state included)
    weight_bytes: int = 0  # weights and optimiser state

    def root(self, name: str) -> str:
        return self.roots.get(name, name)


def tensor_roots(graph: Graph, float32: bool = False) -> dict[str, str]:
    """Aliased tensor name -> the tensor that holds its data."""
    roots: dict[str, str] = {}
    for node in graph.nodes:
        if is_alias(node, float32):
            src = node.inputs[0]
            roots[node.outputs[0]] = roots.get(src, src)
    return roots


def activation_stash(graph: Graph, roots: dict[str, str]) -> set[str]:
    """Root tensors produced in the forward pass (or the input batch) that backward nodes read."""
    forward = {roots.get(o, o) for n in graph.nodes if n.phase == "forward" for o in n.outputs}
    forward.add(graph.input_name)
    return {roots.get(t, t) for n in graph.nodes if n.phase == "backward" for t in n.inputs} & forward


def place(graph: Graph, nodes: list[Node], arch: AcceleratorSpec) -> Placement:
    float32 = arch.format == "fp32"
    roots = tensor_roots(graph, float32)
    nbytes = {name: spec.size * arch.element_bytes(spec.dtype) for name, spec in graph.tensors.items()
              if name not in roots}
    persistent = {name for name, spec in graph.tensors.items() if spec.role in PERSISTENT_ROLES}
    handoff_cap = arch.ofmap.size_bytes // 2

    real = [i for i, n in enumerate(nodes) if not is_alias(n, float32)]
    next_of = {a: b for a, b in zip(real, real[1:])}
    consumers: dict[str, list[int]] = {}
    for i in real:
        for t in dict.fromkeys(roots.get(x, x) for x in nodes[i].inputs):
            consumers.setdefault(t, []).append(i)

    onchip_in = {i: set() for i in range(len(nodes))}
    keep = {i: set() for i in range(len(nodes))}
    to_dram = {i: set() for i in range(len(nodes))}
    spill = {i: 0 for i in range(len(nodes))}
    spilled_in = {i: set() for i in range(len(nodes))}
    for p in real:
        for t in dict.fromkeys(roots.get(x, x) for x in nodes[p].outputs):
            if t in persistent:
                to_dram[p].add(t)
                continue
            later = [c for c in consumers.get(t, []) if c > p]
            q = next_of.get(p)
            wants = q is not None and q in later and nodes[q].kind == "vector"
            fits = nbytes[t] <= handoff_cap
            others = [c for c in later if c != q] if wants else later
            if wants and fits:
                keep[p].add(t)
                onchip_in[q].add(t)
            if others or not (wants and fits):
                to_dram[p].add(t)
            if wants and not fits:  # the handoff would have saved the re-read (and the write)
                spilled_in[q].add(t)
                if not others:
                    spill[p] += nbytes[t]

    stash = activation_stash(graph, roots)
    return Placement(
        nodes=tuple(NodePlacement(frozenset(onchip_in[i]), frozenset(keep[i]), frozenset(to_dram[i]),
                                  frozenset(spilled_in[i]), spill[i]) for i in range(len(nodes))),
        roots=roots, tensor_bytes=nbytes,
        activation_stash_bytes=sum(nbytes[t] for t in stash),
        peak_storage_bytes=_peak_live_bytes(nodes, real, roots, nbytes, persistent, consumers),
        weight_bytes=sum(nbytes[t] for t in persistent if graph.tensor(t).role in ("weight", "state")),
    )


def _peak_live_bytes(nodes, real, roots, nbytes, persistent, consumers) -> int:
    """Peak over the node list of the bytes of tensors alive (produced, not yet last read)."""
    if not nodes:
        return sum(nbytes[t] for t in persistent if t in nbytes)
    delta = [0] * (len(nodes) + 1)
    produced: dict[str, int] = {}
    for i in real:
        for t in nodes[i].outputs:
            produced.setdefault(roots.get(t, t), i)
    for t in set(produced) | set(consumers):
        if t in persistent:
            continue
        start = produced.get(t, 0)
        end = max([start, *consumers.get(t, [])])
        delta[start] += nbytes[t]
        delta[end + 1] -= nbytes[t]
    live, peak = 0, 0
    for d in delta[:-1]:
        live += d
        peak = max(peak, live)
    return peak + sum(nbytes[t] for t in persistent if t in nbytes)
