"""Tables of a reference set for `harness reference show` (plain rows: a person reads, a machine parses)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path


def reference_table(root: str | Path, split: str | None = None, conformers: bool = False) -> list[dict]:
    """One row per geometry of a built reference folder."""
    from harness.reference.store import ReferenceSet

    refset = ReferenceSet(root)
    return [
        {"key": e.key, "name": e.name, "formula": e.formula, "natm": e.natm, "nao": e.nao,
         "split": e.split, "subsets": list(e.subsets), "conformer": e.conformer}
        for e in refset.select(split, conformers)
    ]


def g2_table(basis: str = "def2-svp") -> list[dict]:
    """One row per molecule of the whole G2 closed-shell set, built or not."""
    from harness.molecules import TINY_MOLECULES, g2_closed_shell, split_of, to_pyscf

    rows = []
    for m in g2_closed_shell():
        rows.append({
            "key": m.key, "name": m.name, "formula": m.formula, "natm": len(m.symbols),
            "nao": int(to_pyscf(m, basis).nao_nr()), "split": split_of(m.name),
            "subsets": ["tiny"] if m.name in TINY_MOLECULES else [], "conformer": 0,
        })
    return rows


def render_table(rows: list[dict]) -> str:
    """Fixed-width text table with a closing count per split."""
    cols = [("key", "molecule"), ("formula", "formula"), ("natm", "atoms"), ("nao", "AOs"), ("split", "split")]
    cells = [[h for _, h in cols]]
    for r in rows:
        split = r["split"] + (" +" + ",".join(r["subsets"]) if r["subsets"] else "")
        cells.append([str(r["key"]), str(r["formula"]), str(r["natm"]), str(r["nao"]), split])
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = ["  ".join(c[i].ljust(widths[i]) if i in (0, 1, 4) else c[i].rjust(widths[i]) for i in range(len(cols)))
             for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    counts = Counter(r["split"] for r in rows)
    for r in rows:
        counts.update(r["subsets"])
    summary = ", ".join(f"{k} {counts[k]}" for k in ("train", "val", "test", "tiny") if counts.get(k))
    lines.append(f"{len(rows)} geometries ({summary})")
    return "\n".join(lines)
