"""egxc-ed: `egxc` trained with the energy+density (E+D) loss by `harness train`
(preset quick, seed 0). The architecture lives in harness.architectures; the harness
loads weights.safetensors into it (sha256-pinned, strict)."""

import torch

from harness.architectures import architecture_sha256, build_architecture

ARCH = "egxc"
PRESET = "quick"
#: sha256 of the architecture's source when these weights were trained
ARCH_SHA256 = "30331ebd4c787c94bc87080b9b76152bc9b6296da21fdf7c480a29c2e7bbe8f8"


def make_functional():
    now = architecture_sha256(ARCH)
    if now != ARCH_SHA256:
        raise RuntimeError(
            f"harness.architectures.{ARCH} changed since this submission was trained "
            f"(source sha256 {now[:12]}, trained with {ARCH_SHA256[:12]}); retrain it with harness train")
    return build_architecture(ARCH, preset=PRESET, seed=0).to(torch.float64)
