"""Reading back what the mesh writers (`render.write_ply`) write, for the tests that check their files."""

from __future__ import annotations


def ply_counts(path) -> tuple[int, int]:
    """(vertex count, face count) from a PLY header."""
    nv = nf = 0
    with open(path, "rb") as fh:
        for raw in fh:
            line = raw.decode("ascii", "replace").strip()
            if line.startswith("element vertex"):
                nv = int(line.split()[-1])
            elif line.startswith("element face"):
                nf = int(line.split()[-1])
            elif line == "end_header":
                break
    return nv, nf
