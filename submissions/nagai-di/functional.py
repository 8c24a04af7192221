"""nagai-di: `nagai` trained with the DI (E+D + gradient/Hessian) loss by `harness train`
(preset quick, seed 0). The architecture lives in harness.architectures; the harness
loads weights.safetensors into it (sha256-pinned, strict)."""

import torch

from harness.architectures import architecture_sha256, build_architecture

ARCH = "nagai"
PRESET = "quick"
#: sha256 of the architecture's source when these weights were trained
ARCH_SHA256 = "53b591eb8d6f9b42e7ff94c0e3a8ec0c0118e2f4abf1e796ed75860ccbde46c2"


def make_functional():
    now = architecture_sha256(ARCH)
    if now != ARCH_SHA256:
        raise RuntimeError(
            f"harness.architectures.{ARCH} changed since this submission was trained "
            f"(source sha256 {now[:12]}, trained with {ARCH_SHA256[:12]}); retrain it with harness train")
    return build_architecture(ARCH, preset=PRESET, seed=0).to(torch.float64)
