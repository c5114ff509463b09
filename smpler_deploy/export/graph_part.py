"""The part of an ONNX graph that some nodes need, cut out for ONNX Runtime's quantizer and put back after.

ORT's static quantizer is quadratic in the node count (each quantized tensor is rewired by a walk over every node,
and its calibrator rebuilds a name table per tensor): on SMPLer's 8.7k-node graph, where the backbone that int8
covers is 0.8k nodes, quantizing the whole graph costs about twice the part. The cut keeps what ORT writes: each
tensor the rest of the graph reads from the part leaves it through an Identity, so ORT rewires that reader as it
rewires every consumer in the whole graph, and `merge` hands the rewired name on to the rest's readers. The nodes,
initializers and outputs are those of quantizing the whole graph (tests/test_export_onnx checks both on a graph with
fan-out across the cut); only their order differs.
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_SUFFIX = "/part_exit"  # the Identity through which a tensor leaves the part


@dataclass(frozen=True)
class Part:
    model: object  # onnx.ModelProto: the part, its exits as outputs
    inside: frozenset[int]  # indices of the whole graph's nodes it holds
    exits: tuple[str, ...]  # tensors the rest of the graph reads from it
    shapes: object  # onnx.GraphProto: the whole float graph with its inferred shapes (what ORT's output records)


def ancestors(graph, names: set[str]) -> list[int]:
    """Indices, in graph order, of the nodes named in `names` and of every node they depend on."""
    nodes = graph.node
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    todo = [i for i, n in enumerate(nodes) if n.name in names]
    keep = set(todo)
    while todo:
        for x in nodes[todo.pop()].input:
            i = producer.get(x)
            if i is not None and i not in keep:
                keep.add(i)
                todo.append(i)
    return sorted(keep)


def cut(model, targets: set[str]) -> Part | None:
    """The part of `model` the `targets` nodes need, or None where quantizing the part could write another graph
    than quantizing the whole: a graph output made in the part, or a graph input or initializer that a target and
    the rest both read (ORT would rewire the rest's reader, which the part does not hold)."""
    import onnx
    from onnx import helper

    g = model.graph
    idx = ancestors(g, targets)
    inside = frozenset(idx)
    made = {o for i in idx for o in g.node[i].output if o}
    rest_reads = {x for i, n in enumerate(g.node) if i not in inside for x in n.input}
    leaves = {x.name for x in g.input} | {t.name for t in g.initializer}
    read_by_targets = {x for n in g.node if n.name in targets for x in n.input if x in leaves}
    if not idx or made & {o.name for o in g.output} or read_by_targets & rest_reads:
        return None
    exits = tuple(dict.fromkeys(x for i, n in enumerate(g.node) if i not in inside for x in n.input if x in made))
    shapes = onnx.shape_inference.infer_shapes(model).graph  # once: the exits' types here, the value_info in merge
    shapes.ClearField("node")
    shapes.ClearField("initializer")  # the weights stay in `model` only
    typed = {v.name: v for v in shapes.value_info}
    if any(x not in typed for x in exits):
        return None  # an exit whose type ONNX cannot infer: ORT could not quantize the part either
    used = {x for i in idx for x in g.node[i].input}
    nodes = [g.node[i] for i in idx]
    nodes += [helper.make_node("Identity", [x], [x + EXIT_SUFFIX], name=x + EXIT_SUFFIX) for x in exits]
    outputs = [onnx.ValueInfoProto(name=x + EXIT_SUFFIX, type=typed[x].type) for x in exits]
    part = helper.make_graph(nodes, g.name, [x for x in g.input if x.name in used], outputs,
                             initializer=[t for t in g.initializer if t.name in used])
    m = helper.make_model(part, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    return Part(m, inside, exits, shapes)


def merge(model, part: Part, quantized) -> object:
    """`model` with the part's nodes replaced by `quantized` (the part after ORT), each exit's readers reading what
    the exit's Identity reads now."""
    from onnx import helper

    g = model.graph
    exit_of = {x + EXIT_SUFFIX: x for x in part.exits}
    renamed, qnodes = {}, []
    for n in quantized.graph.node:
        if n.op_type == "Identity" and n.output[0] in exit_of:
            renamed[exit_of[n.output[0]]] = n.input[0]
        else:
            qnodes.append(n)
    if len(renamed) != len(part.exits):
        raise RuntimeError(f"quantized part lost {len(part.exits) - len(renamed)} of its exits")
    rest = [n for i, n in enumerate(g.node) if i not in part.inside]
    q_inits = {t.name for t in quantized.graph.initializer}
    rest_reads = {x for n in rest for x in n.input}
    inits = list(quantized.graph.initializer) + [t for t in g.initializer
                                                 if t.name in rest_reads and t.name not in q_inits]
    shapes = part.shapes
    whole = helper.make_graph(qnodes + rest, g.name, list(shapes.input), list(shapes.output), initializer=inits,
                              value_info=list(shapes.value_info))
    for n in whole.node[len(qnodes):]:  # make_graph copied the nodes: rename the exits' readers in the copies
        for j, x in enumerate(n.input):
            n.input[j] = renamed.get(x, x)
    opsets = {o.domain: o.version for o in model.opset_import}
    for o in quantized.opset_import:
        opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
    out = helper.make_model(whole, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                            ir_version=model.ir_version)
    for field in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(out, field, getattr(quantized, field))
    ours = {p.key for p in quantized.metadata_props}
    out.metadata_props.extend([*quantized.metadata_props, *(p for p in model.metadata_props if p.key not in ours)])
    return out
