"""Device check: the SCF and TDDFT of PBE and Skala-1.0 on ``--device`` (default cuda) and on
the CPU, compared number by number, with wall times.

    python benchmarks/gpu_check.py                      # cuda against cpu (CPU smoke run without CUDA)
    python benchmarks/gpu_check.py --molecule CH3CH2OH --nstates 5 --json out.json
    python benchmarks/gpu_check.py --grid-level 1 --nstates 2 --functional pbe   # quick smoke

Pass criteria: total energies agree to 1e-8 Eh and excitation energies to 1e-6 eV between the
two devices (both SCFs converged to 1e-11 Eh). Without CUDA the script says so and runs the
CPU pass alone as a smoke test (exit 0 when it converges). The matmul peak (float64 GFLOP/s)
of each device is sampled in the same run, so figures can be recorded as ratios.
Exit status: 0 pass, 1 a comparison failed or a run did not converge, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONALS = {"pbe": ROOT / "submissions" / "pbe", "skala-1.0": ROOT / "submissions" / "skala-1.0"}
ENERGY_TOL_EH = 1e-8
EXCITATION_TOL_EV = 1e-6


sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: _common beside it
from _common import matmul_peak_gflops  # noqa: E402


def run_one(name: str, molecule: str, device: str, grid_level: int, nstates: int) -> dict:
    """SCF + full-Casida TDDFT of one functional on one device: energies, excitations, times."""
    from harness.integrals import build_setup
    from harness.molecules import resolve_molecule
    from harness.scf import needs_of, run_scf
    from harness.submission import load_functional
    from harness.tddft import tddft

    fn = load_functional(FUNCTIONALS[name])
    t0 = time.perf_counter()
    setup = build_setup(resolve_molecule(molecule), grid_level=grid_level, device=device, **needs_of(fn))
    t1 = time.perf_counter()
    res = run_scf(fn, setup, conv_tol_energy=1e-11, conv_tol_grad=1e-7)
    t2 = time.perf_counter()
    out = {"functional": name, "device": device, "molecule": molecule, "converged": bool(res.converged),
           "energy_Eh": res.energy_Eh, "scf_iterations": res.iterations, "setup_s": t1 - t0, "scf_s": t2 - t1,
           "ngrid": setup.ngrid, "nao": setup.nao}
    if res.converged and nstates > 0:
        td = tddft(fn, res, setup, nstates=nstates, conv_tol=1e-8)
        out.update(excitations_eV=[float(e) for e in td.excitation_energies_eV.cpu()],
                   tddft_converged=bool(td.converged.all()), tddft_s=td.wall_s,
                   hvp_products=td.timings.get("hvp_calls"))
    return out


def compare(a: dict, b: dict) -> list[str]:
    """Problems found between two runs of the same functional (empty: they agree)."""
    problems = []
    for r in (a, b):
        if not r["converged"] or not r.get("tddft_converged", True):
            problems.append(f"{r['functional']} on {r['device']}: did not converge")
    if problems:
        return problems
    dE = abs(a["energy_Eh"] - b["energy_Eh"])
    if dE > ENERGY_TOL_EH:
        problems.append(f"{a['functional']}: |ΔE| = {dE:.2e} Eh > {ENERGY_TOL_EH:g}")
    if "excitations_eV" in a and "excitations_eV" in b:
        dw = max(abs(x - y) for x, y in zip(a["excitations_eV"], b["excitations_eV"]))
        if dw > EXCITATION_TOL_EV:
            problems.append(f"{a['functional']}: max |Δω| = {dw:.2e} eV > {EXCITATION_TOL_EV:g}")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="device to check against the CPU (default: cuda)")
    p.add_argument("--molecule", default="H2O", help="G2 name or .xyz file (default: H2O)")
    p.add_argument("--functional", action="append", choices=sorted(FUNCTIONALS),
                   help="functional(s) to check (default: pbe and skala-1.0)")
    p.add_argument("--grid-level", type=int, default=3, help="PySCF grid level (default: 3)")
    p.add_argument("--nstates", type=int, default=5, help="singlet excitations (0: SCF only; default: 5)")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    import torch

    names = args.functional or ["pbe", "skala-1.0"]
    devices = ["cpu"]
    if args.device != "cpu":
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            print(f"gpu_check: no CUDA on this machine; running the CPU pass alone as a smoke test")
        else:
            devices.append(args.device)
    report = {"devices": devices, "peak_gflops": {d: matmul_peak_gflops(d) for d in devices}, "runs": [],
              "problems": []}
    if torch.cuda.is_available():
        report["cuda_device"] = torch.cuda.get_device_name(0)
    for name in names:
        runs = [run_one(name, args.molecule, d, args.grid_level, args.nstates) for d in devices]
        report["runs"] += runs
        for r in runs:
            line = (f"{name:10s} {r['device']:7s} E = {r['energy_Eh']:.10f} Eh  SCF {r['scf_s']:7.2f} s "
                    f"({r['scf_iterations']} it)")
            if "excitations_eV" in r:
                line += f"  TDDFT {r['tddft_s']:7.2f} s  ω = " + ", ".join(f"{w:.6f}" for w in r["excitations_eV"])
            print(line, flush=True)
        if len(runs) == 2:
            report["problems"] += compare(*runs)
            print(f"{name}: {runs[1]['device']} / cpu wall time: SCF {runs[1]['scf_s'] / runs[0]['scf_s']:.3f}×"
                  + (f", TDDFT {runs[1]['tddft_s'] / runs[0]['tddft_s']:.3f}×" if "tddft_s" in runs[0] else ""))
        elif not runs[0]["converged"] or not runs[0].get("tddft_converged", True):
            report["problems"].append(f"{name} on cpu: did not converge")
    print("peak float64 matmul: " + ", ".join(f"{d} {g:.1f} GFLOP/s" for d, g in report["peak_gflops"].items()))
    for problem in report["problems"]:
        print(f"gpu_check: FAIL: {problem}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if not report["problems"]:
        print("gpu_check: OK" + ("" if len(devices) == 2 else " (CPU smoke run only)"))
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
