"""DI-Loss reference targets (PROTOCOL §4) from PySCF: energy, orbital-rotation gradient and
Hessian-vector products of the B3LYP total energy at the reference orbitals and at seeded
perturbed points.

Parametrisation (identical to `harness.grassmann`, the model side). Orbitals C (nao, nmo),
first ``nocc`` occupied; κ (nvir, nocc):

    C(κ) = C · expm(K),  K = [[0, −κᵀ], [κ, 0]]  (occupied block first),
    P(κ) = 2 C_occ(κ) C_occ(κ)ᵀ,   E(κ) = PySCF total energy at P(κ).

Sample s has the base orbitals C_s = C_ref · expm(K(κ_s)), with κ_0 = 0 (the converged
reference) and κ_s (s ≥ 1) a seeded Gaussian direction scaled to ‖κ_s‖_F = ``sigma``. At each
sample, with δP(v) = 2 (C_v v C_oᵀ + C_o vᵀ C_vᵀ), F = PySCF's Fock matrix at P_s (= ∂E/∂P)
and δF[X] = ``mf.gen_response(C_s, occ, hermi=1)(X)`` (J, scaled exact exchange and the
libxc kernel at P_s):

    E  = E(P_s)                                               Eh
    g  = ∂E/∂κ|₀ = 4 C_vᵀ F C_o                               Eh       (nvir, nocc)
    Hv = ∂²E/∂κ²|₀ v = 4 C_vᵀ δF[δP(v)] C_o + 4 (F_vv v − v F_oo)       (nvir, nocc)

for ``probes`` random unit (Frobenius) probes v per sample. The second term of Hv is the
generalised-Fock part of the exact second derivative (non-zero away from stationarity).
(PySCF's ``newton_ah.gen_g_hop`` works in another scaling of the rotation generator; the
closed form above is used instead, with PySCF's response function for δF. The tests check g
and Hv against central finite differences of E(κ), at κ = 0 and off stationarity.)

The random numbers depend only on ``DISettings.seed`` and the geometry key, so a build is
reproducible and independent of the order in which geometries are computed.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np
from scipy.linalg import expm

from harness.molecules import to_pyscf
from harness.reference.rks import make_rks
from harness.reference.settings import ReferenceSettings

#: Version of the DI-target definition and storage layout (stored with the data).
DI_FORMAT_VERSION = 1
#: One-line statement of the parametrisation, stored with the data.
DI_PARAMETRISATION = (
    "C(kappa)=C*expm([[0,-kappa^T],[kappa,0]]) (occupied first), P=2*C_occ*C_occ^T; "
    "sample s base orbitals C_s=C_ref*expm(K(kappa_s)); g=dE/dkappa, Hv=d2E/dkappa2 . v at kappa=0"
)


@dataclass(frozen=True)
class DISettings:
    """How the DI targets of one geometry are drawn.

    ``samples``: perturbed points besides the reference (so ``samples + 1`` points in all);
    ``sigma``: Frobenius norm of each perturbation κ_s (dimensionless rotation);
    ``probes``: random unit probes v per point; ``seed``: base seed (combined with the key).
    """

    samples: int = 2
    sigma: float = 0.05
    probes: int = 2
    seed: int = 0

    def __post_init__(self):
        if self.samples < 0 or self.probes < 0:
            raise ValueError(f"DI settings: samples and probes must be >= 0, got {self.samples}, {self.probes}")
        if not (self.sigma > 0 and np.isfinite(self.sigma)):
            raise ValueError(f"DI settings: sigma must be a positive number, got {self.sigma}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DISettings":
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown DI settings: {sorted(unknown)}")
        return cls(samples=int(data.get("samples", cls.samples)), sigma=float(data.get("sigma", cls.sigma)),
                   probes=int(data.get("probes", cls.probes)), seed=int(data.get("seed", cls.seed)))


@dataclass
class DITargets:
    """DI targets of one geometry; S = samples + 1 points (index 0: κ = 0), P probes each.

    Energies in Eh; gradient and hvp in Eh per unit rotation (κ is dimensionless)."""

    kappa: np.ndarray  # (S, nvir, nocc); kappa[0] = 0
    energy_Eh: np.ndarray  # (S,)
    gradient: np.ndarray  # (S, nvir, nocc)
    probes: np.ndarray  # (S, P, nvir, nocc), unit Frobenius norm
    hvp: np.ndarray  # (S, P, nvir, nocc)
    settings: DISettings = DISettings()
    xc: str = "b3lyp"

    @property
    def nsamples(self) -> int:
        return int(self.kappa.shape[0])

    @property
    def nprobes(self) -> int:
        return int(self.probes.shape[1])

    @property
    def nvir(self) -> int:
        return int(self.kappa.shape[1])

    @property
    def nocc(self) -> int:
        return int(self.kappa.shape[2])

    def orbitals(self, mo_coeff: np.ndarray, s: int) -> np.ndarray:
        """Base orbitals C_s = C_ref · expm(K(κ_s)) of sample ``s`` (numpy)."""
        return rotate_np(np.asarray(mo_coeff), self.nocc, self.kappa[s])

    def check_shapes(self) -> None:
        S, nv, no = self.kappa.shape
        want = {"energy_Eh": (S,), "gradient": (S, nv, no), "probes": (S, self.nprobes, nv, no),
                "hvp": (S, self.nprobes, nv, no)}
        for k, shape in want.items():
            if tuple(np.shape(getattr(self, k))) != shape:
                raise ValueError(f"DI targets: {k} has shape {np.shape(getattr(self, k))}, expected {shape}")


# -- parametrisation (numpy) ----------------------------------------------------------------
def generator_np(kappa: np.ndarray, nocc: int) -> np.ndarray:
    nvir = kappa.shape[0]
    K = np.zeros((nocc + nvir, nocc + nvir))
    K[nocc:, :nocc] = kappa
    K[:nocc, nocc:] = -kappa.T
    return K


def rotate_np(C: np.ndarray, nocc: int, kappa: np.ndarray) -> np.ndarray:
    """C · expm(K(κ))."""
    if not np.any(kappa):
        return np.array(C, dtype=float, copy=True)
    return C @ expm(generator_np(np.asarray(kappa, dtype=float), nocc))


def delta_density_np(C: np.ndarray, nocc: int, v: np.ndarray) -> np.ndarray:
    """δP(v) = 2 (C_v v C_oᵀ + C_o vᵀ C_vᵀ) for v (…, nvir, nocc)."""
    Co, Cv = C[:, :nocc], C[:, nocc:]
    X = Cv @ v @ Co.T
    return 2.0 * (X + np.swapaxes(X, -1, -2))


def key_rng(seed: int, key: str | None) -> np.random.Generator:
    """The generator of one geometry: seeded by (seed, sha256(key))."""
    h = int(hashlib.sha256((key or "").encode()).hexdigest()[:16], 16)
    return np.random.default_rng([int(seed), h])


def _unit(rng: np.random.Generator, shape, norm: float = 1.0) -> np.ndarray:
    x = rng.standard_normal(shape)
    axes = tuple(range(len(shape) - 2, len(shape)))
    return x * (norm / np.sqrt((x * x).sum(axis=axes, keepdims=True)))


# -- PySCF side -----------------------------------------------------------------------------
def point_quantities(mf, C: np.ndarray, mo_occ: np.ndarray, probes: np.ndarray):
    """(E, g, Hv) of PySCF's total energy at orbitals C (exact formulas, module doc).

    ``mf``: a PySCF RHF/RKS object (its xc, grids and J/K settings are used; not modified
    except that its grid is built on first use). ``probes`` (P, nvir, nocc)."""
    mol = mf.mol
    nocc = int(np.count_nonzero(mo_occ > 0))
    if not np.allclose(mo_occ[:nocc], 2.0) or np.any(mo_occ[nocc:] != 0):
        raise ValueError("DI targets need a closed-shell occupation (2 … 2 0 … 0)")
    Co, Cv = C[:, :nocc], C[:, nocc:]
    P = 2.0 * Co @ Co.T
    h1 = mf.get_hcore(mol)
    vhf = mf.get_veff(mol, P)
    E = float(mf.energy_tot(P, h1, vhf))
    F = h1 + np.asarray(vhf)
    g = 4.0 * Cv.T @ F @ Co
    probes = np.asarray(probes, dtype=float)
    hv = np.zeros_like(probes)
    if probes.shape[0]:
        vind = mf.gen_response(mo_coeff=C, mo_occ=mo_occ, hermi=1)
        dF = np.asarray(vind(delta_density_np(C, nocc, probes)))
        Fvv, Foo = Cv.T @ F @ Cv, Co.T @ F @ Co
        hv = 4.0 * (Cv.T @ dF @ Co) + 4.0 * (Fvv @ probes - probes @ Foo)
    return E, g, hv


def compute_di_targets(mf, settings: DISettings = DISettings(), key: str | None = None,
                       mo_coeff: np.ndarray | None = None, mo_occ: np.ndarray | None = None) -> DITargets:
    """DI targets of one geometry with the PySCF mean-field object ``mf`` (for the reference:
    `harness.reference.rks.make_rks`, B3LYP, exact J/K, level-3 grid).

    ``mo_coeff``/``mo_occ``: the reference orbitals (default ``mf.mo_coeff``/``mf.mo_occ``,
    i.e. a converged ``mf``). ``key`` (the geometry key) seeds the random draws together
    with ``settings.seed``."""
    C0 = np.asarray(mf.mo_coeff if mo_coeff is None else mo_coeff, dtype=float)
    occ = np.asarray(mf.mo_occ if mo_occ is None else mo_occ, dtype=float)
    nocc = int(np.count_nonzero(occ > 0))
    nvir = C0.shape[1] - nocc
    rng = key_rng(settings.seed, key)
    S, Pn = settings.samples + 1, settings.probes
    kappa = np.zeros((S, nvir, nocc))
    if settings.samples:
        kappa[1:] = _unit(rng, (settings.samples, nvir, nocc), settings.sigma)
    probes = _unit(rng, (S, Pn, nvir, nocc))
    energy = np.zeros(S)
    grad = np.zeros((S, nvir, nocc))
    hvp = np.zeros((S, Pn, nvir, nocc))
    for s in range(S):
        Cs = rotate_np(C0, nocc, kappa[s])
        energy[s], grad[s], hvp[s] = point_quantities(mf, Cs, occ, probes[s])
    xc = str(getattr(mf, "xc", "hf"))
    out = DITargets(kappa, energy, grad, probes, hvp, settings, xc)
    out.check_shapes()
    return out


def di_targets_for_record(record, settings: DISettings = DISettings(), reference_settings=None) -> DITargets:
    """DI targets of a stored `ReferenceRecord` at its stored orbitals (no new SCF), with the
    reference settings (default `ReferenceSettings()`)."""
    rs = reference_settings or ReferenceSettings()
    mf = make_rks(to_pyscf(record.molecule, rs.basis), rs)
    return compute_di_targets(mf, settings, key=record.key, mo_coeff=record.mo_coeff, mo_occ=record.mo_occ)
