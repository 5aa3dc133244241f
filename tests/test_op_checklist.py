"""Adding an op touches five source files (docs/architecture.md, "Adding an op"): its row in
nitisim/contract/ops.py, its numpy method in nitisim/contract/reference.py, gpu_backend/csrc/
op_<name>.c, gpu_backend/csrc/op_<name>.cu and its rule in hwmodels/lowering.py.

For every op that runs on the compiled libraries through the node call, this reads the sources and
checks the claim: its C and CUDA entry points exist in its own two files only, and no shared file
(headers, bindings, op classes, numerics, builder, executor) names it, so the next op again needs
no plumbing. A model layer kind and the graph builder may name an op: they use it, they do not add it.
"""
import re
from pathlib import Path

from nitisim.contract.ops import OPS

ROOT = Path(__file__).resolve().parents[1]
CHECKLIST = ("nitisim/contract/ops.py", "nitisim/contract/reference.py", "gpu_backend/csrc/op_{op}.c",
             "gpu_backend/csrc/op_{op}.cu", "hwmodels/lowering.py")
# Files that may name an op as a layer kind: they use it, they do not add it (the model spec and
# its builder, and the parity cases, which write a small ResNet out as a model description).
USERS = ("nitisim/contract/graph.py", "nitisim/contract/models.py", "gpu_backend/parity.py")


def _sources() -> list[Path]:
    found = []
    for folder in ("nitisim", "gpu_backend", "hwmodels"):
        for suffix in ("*.py", "*.c", "*.cu", "*.h", "*.cuh"):
            found += (ROOT / folder).rglob(suffix)
    return sorted(found)


def files_naming(op: str, sources: list[Path], root: Path = ROOT) -> set[str]:
    """Files that name `op` as code does: its entry points, the op name as a string, a kernel
    method or function (`def add(self, node, ...` / `def add(node, ...`)."""
    pattern = re.compile(rf"\bniti_(cuda_)?op_{op}\b|[\"']{op}[\"']|\bdef {op}\((self, )?node\b")
    return {str(p.relative_to(root)) for p in sources if pattern.search(p.read_text(errors="replace"))}


def test_node_call_ops_live_in_their_five_files():
    sources = _sources()
    ops = [name for name, row in OPS.items() if row.node_call is not None]
    assert "add" in ops
    for op in ops:
        allowed = {f.format(op=op) for f in CHECKLIST}
        assert all((ROOT / f).is_file() for f in allowed), op
        assert files_naming(op, sources) - set(USERS) == allowed, op


def test_the_scan_sees_an_op_named_in_a_shared_file(tmp_path):
    (tmp_path / "backends.py").write_text("    def add(self, node, ctx, a, b):\n")
    (tmp_path / "niti_api.h").write_text("int niti_op_add(niti_node_call *call);\n")
    (tmp_path / "lib.py").write_text('self.call("niti_cuda_op_add", call)\n')
    (tmp_path / "other.py").write_text("# add two numbers, then address the padding; adder, add_bias\n")
    found = files_naming("add", sorted(tmp_path.iterdir()), tmp_path)
    assert found == {"backends.py", "niti_api.h", "lib.py"}
