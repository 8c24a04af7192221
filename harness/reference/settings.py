"""Settings of the reference set ``g2-b3lyp-svp`` v1 (PROTOCOL §1). Every field goes into the manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass

REFERENCE_SET_NAME = "g2-b3lyp-svp"
REFERENCE_SET_VERSION = 1


@dataclass(frozen=True)
class ReferenceSettings:
    """How every reference geometry is computed.

    ``xc='b3lyp'`` is PySCF ≥ 2.3's B3LYP (VWN-RPA correlation, as in Gaussian).
    The SCF is run from ``minao`` to ``eval_conv_tol`` first (its cycle count is the
    baseline of the SCF-iteration metric), then continued to ``conv_tol``.
    """

    xc: str = "b3lyp"
    basis: str = "def2-svp"
    grid_level: int = 3
    density_fitting: bool = False
    conv_tol: float = 1e-10
    conv_tol_grad: float = 1e-8  # tight, so stored dipoles and densities are converged to ~1e-8
    init_guess: str = "minao"
    eval_conv_tol: float = 1e-8
    eval_diis: bool = True
    nstates: int = 5
    tddft: str = "full"  # full linear response (Casida), not TDA
    tddft_conv_tol: float = 1e-6  # residual norm; eigenvalue error ~ residual²
    conformers: int = 3
    conformer_seed: int = 0
    conformer_sigma_angstrom: float = 0.04
    conformer_min_distance_ratio: float = 0.75

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ReferenceSettings":
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown reference settings: {sorted(unknown)}")
        return cls(**data)

    def compute_key(self) -> dict:
        """The settings that change stored numbers (a resumed build must match these)."""
        d = self.to_dict()
        for k in ("conformers",):
            d.pop(k)
        return d
