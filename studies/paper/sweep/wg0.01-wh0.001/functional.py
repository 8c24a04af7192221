"""wg0.01-wh0.001: `xcdiff` trained with the DI (E+D + gradient/Hessian) loss by `harness train`
(architecture size quick, seed 0). The architecture lives in harness.architectures; the harness
loads weights.safetensors into it (sha256-pinned, strict)."""

import torch

from harness.architectures import architecture_sha256, build_architecture

ARCH = "xcdiff"
PRESET = "quick"
#: sha256 of the architecture's source when these weights were trained
ARCH_SHA256 = "84cf75056d99d0bf9ed6df90cdb48e01f4c1b21dac0549079f8d01654e78bc64"


def make_functional():
    now = architecture_sha256(ARCH)
    if now != ARCH_SHA256:
        raise RuntimeError(
            f"harness.architectures.{ARCH} changed since this submission was trained "
            f"(source sha256 {now[:12]}, trained with {ARCH_SHA256[:12]}); retrain it with harness train")
    return build_architecture(ARCH, preset=PRESET, seed=0).to(torch.float64)
