"""Regenerate weights.safetensors (seed 0) and print its sha256 for submission.yaml.

    python submissions/example-mlp/make_weights.py

For a trained model, save your own ``state_dict`` the same way (safetensors, never pickle)
and paste the printed sha256 into the ``sha256:`` field of submission.yaml.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent


def main() -> None:
    sys.path.insert(0, str(HERE))
    from functional import make_functional

    torch.manual_seed(0)  # fixed seed: the same bytes on every run
    module = make_functional()
    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    path = HERE / "weights.safetensors"
    save_file(state, str(path))
    n = sum(v.numel() for v in state.values())
    print(f"{path}: {n} parameters")
    print(f"sha256: {hashlib.sha256(path.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main()
