"""nlmp-ed: `nlmp` trained with the energy+density (E+D) loss by `harness train`
(preset quick, seed 0). The architecture lives in harness.architectures; the harness
loads weights.safetensors into it (sha256-pinned, strict)."""

import torch

from harness.architectures import architecture_sha256, build_architecture

ARCH = "nlmp"
PRESET = "quick"
#: sha256 of the architecture's source when these weights were trained
ARCH_SHA256 = "5f513aae730148676eeb00613194d9489e2c4386f0ad10dceda89e6c47a99f65"


def make_functional():
    now = architecture_sha256(ARCH)
    if now != ARCH_SHA256:
        raise RuntimeError(
            f"harness.architectures.{ARCH} changed since this submission was trained "
            f"(source sha256 {now[:12]}, trained with {ARCH_SHA256[:12]}); retrain it with harness train")
    return build_architecture(ARCH, preset=PRESET, seed=0).to(torch.float64)
