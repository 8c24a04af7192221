"""harness.submission: submission.yaml validation, entry import, weights, provenance hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from harness.adapter import JaxFunctional, TorchFunctional
from harness.submission import (
    Submission,
    SubmissionError,
    load_functional,
    load_submission,
    submission_sha256,
)

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "submissions"
DTYPE = torch.float64


def _features(G=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    rho = torch.rand(2, G, generator=g, dtype=DTYPE) * 0.5 + 0.01
    return {
        "density": rho.requires_grad_(True),
        "grad": ((torch.rand(2, 3, G, generator=g, dtype=DTYPE) - 0.5) * rho.detach()[:, None]).requires_grad_(True),
        "kin": (torch.rand(2, G, generator=g, dtype=DTYPE) * 0.3 + 0.01).requires_grad_(True),
        "grid_coords": torch.randn(G, 3, generator=g, dtype=DTYPE),
        "grid_weights": torch.rand(G, generator=g, dtype=DTYPE) * 0.1,
        "atomic_coords": torch.zeros(1, 3, dtype=DTYPE),
        "atomic_numbers": torch.tensor([2]),
    }


# ------------------------------------------------------------------------------------------
# bundled submissions
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lda", "pbe", "tpss"])
def test_bundled_torch_submissions_load(name):
    pytest.importorskip("harness.functionals")
    sub = load_submission(BUNDLED / name)
    assert sub.name == name and sub.framework == "torch"
    assert sub.license == "MIT" and sub.authors == ("xc-harness developers",)
    assert sub.training_data.saw_test_molecules is False
    fn = load_functional(BUNDLED / name)
    assert isinstance(fn, TorchFunctional) and fn.name == name and fn.submission == sub
    E = fn.get_exc(_features())
    assert E.dim() == 0 and torch.isfinite(E) and E.item() < 0


def test_bundled_jax_submission_loads():
    pytest.importorskip("jax")
    pytest.importorskip("harness.functionals.jax_classic")
    sub = load_submission(BUNDLED / "pbe-jax")
    assert sub.framework == "jax" and sub.features is not None
    fn = load_functional(BUNDLED / "pbe-jax")
    assert isinstance(fn, JaxFunctional) and fn.name == "pbe-jax"
    feats = _features()
    E = fn.get_exc(feats)
    from harness.functionals import PBE

    Et = PBE().get_exc(feats)
    assert abs(E.item() - Et.item()) <= 1e-12 * abs(Et.item())


def test_submission_sha256_bundled():
    h = submission_sha256(BUNDLED / "pbe")
    yaml_sha = hashlib.sha256((BUNDLED / "pbe" / "submission.yaml").read_bytes()).hexdigest()
    assert h["yaml"] == yaml_sha
    assert set(h["code"]) == {"functional.py"}
    assert h["weights"] is None and len(h["combined"]) == 64
    assert submission_sha256(BUNDLED / "pbe") == h
    assert submission_sha256(BUNDLED / "lda")["combined"] != h["combined"]


# ------------------------------------------------------------------------------------------
# a scratch submission in tmp_path
# ------------------------------------------------------------------------------------------

ENTRY = '''
import torch
from torch import nn


class Scaled(nn.Module):
    """Slater exchange times a learnable scale (a 'trained' model with weights)."""

    features = ["density", "grid_weights"]

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones((), dtype=torch.float64))

    def get_exc(self, features):
        rho, w = features["density"], features["grid_weights"]
        return self.scale * -0.9305257363491 * (w * (rho ** (4 / 3)).sum(0)).sum()


def make():
    return Scaled()


def boom():
    raise RuntimeError("factory exploded")


def not_a_module():
    return 3


def make_jax(weights=None):
    import jax.numpy as jnp

    scale = 1.0 if weights is None else float(weights["scale"])

    def exc(params, f):
        return params * -0.9305257363491 * jnp.sum(f["grid_weights"] * jnp.sum(f["density"] ** (4 / 3), axis=0))

    return exc, scale
'''

BASE_YAML = {
    "name": "scaled",
    "version": '"0.1"',
    "framework": "torch",
    "entry_point": "model.py:make",
    "authors": "[Tester]",
    "license": "MIT",
    "paper": "unpublished",
    "training_data": "\n  text: toy\n  saw_test_molecules: false",
}


def write_submission(folder: Path, drop=(), **fields) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(ENTRY)
    data = {k: v for k, v in {**BASE_YAML, **fields}.items() if k not in drop}
    (folder / "submission.yaml").write_text("".join(f"{k}: {v}\n" for k, v in data.items()))
    return folder


def save_weights(folder: Path, scale: float, name="weights.safetensors", key="scale") -> str:
    from safetensors.torch import save_file

    save_file({key: torch.tensor(scale, dtype=torch.float64)}, str(folder / name))
    return hashlib.sha256((folder / name).read_bytes()).hexdigest()


def test_scratch_submission_loads(tmp_path):
    folder = write_submission(tmp_path / "s")
    sub = load_submission(folder)
    assert isinstance(sub, Submission)
    assert (sub.version, sub.authors, sub.training_data.text) == ("0.1", ("Tester",), "toy")
    fn = load_functional(folder)
    assert fn.name == "scaled" and fn.module.scale.item() == 1.0


def test_saw_test_molecules_may_be_declared_unknown(tmp_path):
    folder = write_submission(tmp_path / "s", training_data="\n  text: third-party\n  saw_test_molecules: unknown")
    assert load_submission(folder).training_data.saw_test_molecules is None
    assert load_submission(ROOT / "submissions" / "skala-1.0").training_data.saw_test_molecules is None


def test_weights_verified_and_loaded_strict(tmp_path):
    folder = write_submission(tmp_path / "s")
    sha = save_weights(folder, 2.5)
    with open(folder / "submission.yaml", "a") as fh:
        fh.write(f"weights: weights.safetensors\nsha256: {sha}\n")
    fn = load_functional(folder)
    assert fn.module.scale.item() == 2.5
    h = submission_sha256(folder)
    assert h["weights"] == sha

    # wrong key -> strict load_state_dict fails, naming the weights file
    sha_bad = save_weights(folder, 2.5, name="bad.safetensors", key="other")
    write_submission(folder, weights="bad.safetensors", sha256=sha_bad)
    with pytest.raises(SubmissionError, match=r"bad\.safetensors.*strict"):
        load_functional(folder)


def test_wrong_sha256(tmp_path):
    folder = write_submission(tmp_path / "s")
    save_weights(folder, 2.0)
    write_submission(folder, weights="weights.safetensors", sha256="ab" * 32)
    with pytest.raises(SubmissionError) as info:
        load_functional(folder)
    msg = str(info.value)
    assert "weights.safetensors" in msg and "sha256" in msg and "mismatch" in msg


def test_jax_weights_passed_to_factory(tmp_path):
    pytest.importorskip("jax")
    folder = write_submission(tmp_path / "j", framework="jax", entry_point="model.py:make_jax",
                              features="[density, grid_weights]")
    sha = save_weights(folder, 3.0)
    with open(folder / "submission.yaml", "a") as fh:
        fh.write(f"weights: weights.safetensors\nsha256: {sha}\n")
    fn = load_functional(folder)
    assert isinstance(fn, JaxFunctional) and fn.features == ["density", "grid_weights"]
    torch_fn = load_functional(write_submission(tmp_path / "t"))
    feats = _features()
    assert abs(fn.get_exc(feats).item() - 3.0 * torch_fn.get_exc(feats).item()) < 1e-12


@pytest.mark.parametrize(
    "kwargs, drop, pattern",
    [
        ({}, ("license",), r"missing required field\(s\) \['license'\]"),
        ({"framework": "tensorflow"}, (), r"field 'framework'.*one of \['torch', 'jax'\].*tensorflow"),
        ({"version": "1.0"}, (), r"field 'version'.*quote"),
        ({"entry_point": "model.py"}, (), r"field 'entry_point'.*FILE\.py:FACTORY"),
        ({"entry_point": "missing.py:make"}, (), r"field 'entry_point'.*missing\.py not found"),
        ({"entry_point": "../model.py:make"}, (), r"field 'entry_point'.*inside the submission folder"),
        ({"weight": "w.safetensors"}, (), r"unknown field\(s\) \['weight'\]"),
        ({"features": "[density]"}, (), r"field 'features'.*only for framework jax"),
        ({"framework": "jax", "features": "[density, laplacian]"}, (), r"field 'features'.*laplacian"),
        ({"sha256": "ab" * 32}, (), r"field 'sha256'.*without 'weights'"),
        ({"weights": "model.py"}, (), r"field 'weights'.*safetensors"),
        ({"training_data": "\n  text: toy"}, (), r"training_data\.saw_test_molecules"),
        ({"training_data": "\n  text: toy\n  saw_test_molecules: maybe"}, (), r"saw_test_molecules.*true, false or unknown"),
        ({"authors": "[]"}, (), r"field 'authors'"),
        ({"name": '"has space"'}, (), r"field 'name'"),
    ],
)
def test_bad_fields_name_file_and_field(tmp_path, kwargs, drop, pattern):
    folder = write_submission(tmp_path / "s", drop=drop, **kwargs)
    with pytest.raises(SubmissionError, match=pattern) as info:
        load_submission(folder)
    assert "submission.yaml" in str(info.value)


def test_malformed_yaml(tmp_path):
    folder = write_submission(tmp_path / "s")
    (folder / "submission.yaml").write_text("name: [unclosed\nframework: torch\n")
    with pytest.raises(SubmissionError, match=r"submission\.yaml: malformed YAML"):
        load_submission(folder)
    (folder / "submission.yaml").write_text("- just\n- a list\n")
    with pytest.raises(SubmissionError, match=r"submission\.yaml: expected a mapping"):
        load_submission(folder)
    (folder / "submission.yaml").unlink()
    with pytest.raises(SubmissionError, match=r"submission\.yaml: not found"):
        load_submission(folder)


@pytest.mark.parametrize(
    "entry, pattern",
    [
        ("model.py:nope", r"model\.py: entry point 'nope' not found"),
        ("model.py:boom", r"model\.py: factory boom\(\) raised RuntimeError: factory exploded"),
        ("model.py:not_a_module", r"model\.py: not_a_module\(\) result: framework torch expects"),
    ],
)
def test_entry_point_errors(tmp_path, entry, pattern):
    folder = write_submission(tmp_path / "s", entry_point=entry)
    with pytest.raises(SubmissionError, match=pattern):
        load_functional(folder)


def test_import_error_in_entry_file(tmp_path):
    folder = write_submission(tmp_path / "s")
    (folder / "model.py").write_text("import not_a_real_module_xyz\n")
    with pytest.raises(SubmissionError, match=r"model\.py: importing the entry file raised ModuleNotFoundError"):
        load_functional(folder)


def test_sha256_tracks_code_changes(tmp_path):
    folder = write_submission(tmp_path / "s")
    h1 = submission_sha256(folder)
    (folder / "helper.py").write_text("X = 1\n")
    h2 = submission_sha256(folder)
    assert set(h2["code"]) == {"model.py", "helper.py"} and h2["combined"] != h1["combined"]
    assert h2["yaml"] == h1["yaml"] and h2["code"]["model.py"] == h1["code"]["model.py"]


def test_two_submissions_with_same_file_names_do_not_collide(tmp_path):
    a = write_submission(tmp_path / "a")
    b = write_submission(tmp_path / "b", name="other")
    (b / "model.py").write_text(ENTRY.replace("torch.ones((), dtype=torch.float64)", "torch.full((), 2.0, dtype=torch.float64)"))
    assert load_functional(a).module.scale.item() == 1.0
    assert load_functional(b).module.scale.item() == 2.0


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_a_pickle_renamed_to_safetensors_is_called_a_pickle(tmp_path, how):
    import pickle

    folder = write_submission(tmp_path / "s")
    path = folder / "weights.safetensors"
    if how == "torch.save":
        torch.save({"scale": torch.tensor(2.0)}, path)
    else:
        path.write_bytes(pickle.dumps({"scale": 2.0}, protocol=4))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    write_submission(folder, weights="weights.safetensors", sha256=sha)
    with pytest.raises(SubmissionError, match=r"weights\.safetensors: this is a pickle"):
        load_functional(folder)
