"""Submission folders: read and validate ``submission.yaml``, import the entry file, build the
functional behind :mod:`harness.adapter`.

A submission is a folder::

    my-functional/
        submission.yaml
        functional.py              # the entry file (any name; more *.py files allowed)
        weights.safetensors        # optional

``submission.yaml`` (all fields checked; unknown keys are rejected to catch typos)::

    name: my-functional            # required: letters, digits, . _ + -  (starts alnum)
    version: "1.0"                 # required: a string (quote numbers)
    framework: torch               # required: torch | jax
    entry_point: functional.py:make_functional   # required: FILE.py:FACTORY, inside the folder
    weights: weights.safetensors   # optional: a .safetensors file inside the folder
    sha256: 3f5c...                # required with weights: sha256 of the weights file (64 hex)
    authors: [A. Author, B. Author]  # required: non-empty list of names (a single string is accepted)
    license: MIT                   # required: a string (SPDX identifier preferred)
    paper: "Perdew, Burke & Ernzerhof, PRL 77, 3865 (1996)"  # required: citation, DOI or "unpublished"
    training_data:                 # required
      text: "what the model was trained on"
      saw_test_molecules: false    # required: true | false | unknown — did training see benchmark molecules?
    features: [density, grad]      # optional, jax only (a torch module declares its own)
    pad_inputs: true               # optional, jax only: pad to bucket sizes (default true)

The factory is called with no arguments and must return

* ``framework: torch`` — a torch module with ``features`` and ``get_exc(features)``. If
  ``weights`` is given, the harness verifies the sha256, loads the file with
  :func:`safetensors.torch.load_file` (never pickle) and calls
  ``module.load_state_dict(state_dict, strict=True)`` on what the factory returned — so the
  factory builds the architecture and the harness puts in exactly the hashed weights.
* ``framework: jax`` — an ``(exc, params)`` pair, ``exc(params, features) -> scalar``. If
  ``weights`` is given (sha256-verified), it is loaded with
  :func:`safetensors.numpy.load_file` and passed as ``factory(weights=dict_of_numpy_arrays)``.

Every problem raises :class:`SubmissionError` naming the file (and field).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from .adapter import JaxFunctional, TorchFunctional
from .contract import FunctionalError, check_feature_names
from .errors import HarnessError
from .io import sha256_file

__all__ = [
    "SUBMISSION_FILE",
    "Submission",
    "SubmissionError",
    "TrainingData",
    "load_functional",
    "load_submission",
    "submission_sha256",
]

SUBMISSION_FILE = "submission.yaml"
FRAMEWORKS = ("torch", "jax")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_ENTRY_RE = re.compile(r"^(?P<file>[^:]+\.py):(?P<factory>[A-Za-z_][A-Za-z0-9_]*)$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")

_REQUIRED = ("name", "version", "framework", "entry_point", "authors", "license", "paper", "training_data")
_OPTIONAL = ("weights", "sha256", "features", "pad_inputs")


class SubmissionError(HarnessError, ValueError):
    """A submission folder is malformed or its functional could not be built."""


#: the YAML value declaring that nobody knows whether training saw benchmark molecules
UNKNOWN = "unknown"


def saw_test_molecules_label(value: bool | None) -> bool | str:
    """``saw_test_molecules`` as written to summaries and tables: true, false or "unknown"."""
    return UNKNOWN if value is None else value


@dataclasses.dataclass(frozen=True)
class TrainingData:
    text: str
    #: True / False, or None when the submitter declares ``unknown`` (e.g. a third party's
    #: model whose training set was not checked against the benchmark)
    saw_test_molecules: bool | None

    @property
    def saw_test_molecules_label(self) -> bool | str:
        return saw_test_molecules_label(self.saw_test_molecules)


@dataclasses.dataclass(frozen=True)
class Submission:
    name: str
    version: str
    framework: str  # "torch" | "jax"
    entry_point: str  # "file.py:factory"
    authors: tuple[str, ...]
    license: str
    paper: str
    training_data: TrainingData
    folder: Path
    weights: str | None = None
    sha256: str | None = None
    features: tuple[str, ...] | None = None
    pad_inputs: bool = True

    @property
    def yaml_path(self) -> Path:
        return self.folder / SUBMISSION_FILE

    @property
    def entry_file(self) -> Path:
        return self.folder / self.entry_point.rsplit(":", 1)[0]

    @property
    def factory_name(self) -> str:
        return self.entry_point.rsplit(":", 1)[1]

    @property
    def weights_path(self) -> Path | None:
        return None if self.weights is None else self.folder / self.weights


# ------------------------------------------------------------------------------------------
# reading submission.yaml
# ------------------------------------------------------------------------------------------


def _field_error(path: Path, field: str, problem: str) -> SubmissionError:
    return SubmissionError(f"{path}: field {field!r}: {problem}")


def _nonempty_str(data: dict, field: str, path: Path) -> str:
    value = data[field]
    if not isinstance(value, str):
        hint = " (quote it in the YAML)" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
        raise _field_error(path, field, f"must be a string, got {type(value).__name__} {value!r}{hint}")
    if not value.strip():
        raise _field_error(path, field, "must not be empty")
    return value.strip()


def _inside_folder(folder: Path, rel: str, path: Path, field: str) -> Path:
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts:
        raise _field_error(path, field, f"{rel!r} must be a relative path inside the submission folder")
    full = folder / p
    if not full.is_file():
        raise _field_error(path, field, f"file {full} not found")
    return full


def load_submission(folder: str | Path) -> Submission:
    """Read and validate ``folder/submission.yaml`` (does not import any code)."""
    folder = Path(folder).resolve()
    path = folder / SUBMISSION_FILE
    if not folder.is_dir():
        raise SubmissionError(f"{folder}: submission folder not found")
    if not path.is_file():
        raise SubmissionError(f"{path}: not found (a submission folder needs {SUBMISSION_FILE})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SubmissionError(f"{path}: malformed YAML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SubmissionError(f"{path}: cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise SubmissionError(f"{path}: expected a mapping of fields at top level, got {type(data).__name__}")

    unknown = sorted(str(k) for k in data if k not in _REQUIRED + _OPTIONAL)
    if unknown:
        raise SubmissionError(
            f"{path}: unknown field(s) {unknown}; allowed: {list(_REQUIRED + _OPTIONAL)}"
        )
    missing = [k for k in _REQUIRED if k not in data or data[k] is None]
    if missing:
        raise SubmissionError(f"{path}: missing required field(s) {missing}")

    name = _nonempty_str(data, "name", path)
    if not _NAME_RE.match(name):
        raise _field_error(path, "name", f"{name!r}: use letters, digits and . _ + - (starting with a letter or digit)")
    version = _nonempty_str(data, "version", path)

    framework = _nonempty_str(data, "framework", path)
    if framework not in FRAMEWORKS:
        raise _field_error(path, "framework", f"must be one of {list(FRAMEWORKS)}, got {framework!r}")

    entry_point = _nonempty_str(data, "entry_point", path)
    m = _ENTRY_RE.match(entry_point)
    if not m:
        raise _field_error(path, "entry_point", f"{entry_point!r}: expected 'FILE.py:FACTORY'")
    _inside_folder(folder, m.group("file"), path, "entry_point")

    authors = data["authors"]
    if isinstance(authors, str):
        authors = [authors]
    if not isinstance(authors, list) or not authors or not all(isinstance(a, str) and a.strip() for a in authors):
        raise _field_error(path, "authors", "must be a non-empty list of names (strings)")
    license_ = _nonempty_str(data, "license", path)
    paper = _nonempty_str(data, "paper", path)

    td = data["training_data"]
    if not isinstance(td, dict):
        raise _field_error(path, "training_data", "must be a mapping with 'text' and 'saw_test_molecules'")
    td_unknown = sorted(str(k) for k in td if k not in ("text", "saw_test_molecules"))
    if td_unknown:
        raise _field_error(path, "training_data", f"unknown key(s) {td_unknown}; allowed: text, saw_test_molecules")
    if not isinstance(td.get("text"), str) or not td["text"].strip():
        raise _field_error(path, "training_data.text", "must be a non-empty string")
    saw = td.get("saw_test_molecules")
    if isinstance(saw, str) and saw.strip().lower() == UNKNOWN:
        saw = None
    elif not isinstance(saw, bool):
        raise _field_error(path, "training_data.saw_test_molecules", f"must be true, false or {UNKNOWN}")
    training = TrainingData(text=td["text"].strip(), saw_test_molecules=saw)

    weights = sha = None
    if data.get("weights") is not None:
        weights = _nonempty_str(data, "weights", path)
        if not weights.endswith(".safetensors"):
            raise _field_error(path, "weights", f"{weights!r}: only .safetensors files are accepted (no pickles)")
        _inside_folder(folder, weights, path, "weights")
        if data.get("sha256") is None:
            raise _field_error(path, "sha256", "required when 'weights' is given (sha256 of the weights file)")
        sha = _nonempty_str(data, "sha256", path).lower()
        if not _SHA_RE.match(sha):
            raise _field_error(path, "sha256", f"{sha!r} is not a 64-digit hex sha256")
    elif data.get("sha256") is not None:
        raise _field_error(path, "sha256", "given without 'weights'")

    features = None
    if data.get("features") is not None:
        if framework != "jax":
            raise _field_error(path, "features", "only for framework jax (a torch module declares its own 'features')")
        feats = data["features"]
        if not isinstance(feats, list) or not feats or not all(isinstance(f, str) for f in feats):
            raise _field_error(path, "features", "must be a non-empty list of feature names")
        try:
            features = tuple(check_feature_names(feats, f"{path}: field 'features'"))
        except FunctionalError as exc:
            raise SubmissionError(str(exc)) from exc

    pad_inputs = data.get("pad_inputs", True)
    if "pad_inputs" in data:
        if framework != "jax":
            raise _field_error(path, "pad_inputs", "only for framework jax")
        if not isinstance(pad_inputs, bool):
            raise _field_error(path, "pad_inputs", "must be true or false")

    return Submission(
        name=name,
        version=version,
        framework=framework,
        entry_point=entry_point,
        authors=tuple(a.strip() for a in authors),
        license=license_,
        paper=paper,
        training_data=training,
        folder=folder,
        weights=weights,
        sha256=sha,
        features=features,
        pad_inputs=pad_inputs,
    )


# ------------------------------------------------------------------------------------------
# hashing
# ------------------------------------------------------------------------------------------


def _code_files(folder: Path) -> list[Path]:
    files = []
    for p in sorted(folder.rglob("*.py")):
        rel = p.relative_to(folder)
        if any(part == "__pycache__" or part.startswith(".") for part in rel.parts):
            continue
        files.append(p)
    return files


def submission_sha256(folder: str | Path) -> dict:
    """Provenance hashes of a submission folder.

    Returns ``{"yaml": sha, "code": {relpath: sha, ...}, "weights": sha | None,
    "combined": sha}``. ``code`` covers every ``*.py`` under the folder (``__pycache__``
    and hidden folders skipped); ``weights`` is the file named in the YAML; ``combined``
    hashes the sorted ``relpath\\0sha`` lines of all of them.
    """
    sub = load_submission(folder)
    out: dict[str, Any] = {"yaml": sha256_file(sub.yaml_path), "code": {}, "weights": None}
    lines = [f"{SUBMISSION_FILE}\0{out['yaml']}"]
    for p in _code_files(sub.folder):
        rel = p.relative_to(sub.folder).as_posix()
        out["code"][rel] = sha256_file(p)
        lines.append(f"{rel}\0{out['code'][rel]}")
    if sub.weights_path is not None:
        out["weights"] = sha256_file(sub.weights_path)
        lines.append(f"{Path(sub.weights).as_posix()}\0{out['weights']}")
    out["combined"] = hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()
    return out


# ------------------------------------------------------------------------------------------
# building the functional
# ------------------------------------------------------------------------------------------


def _import_entry(sub: Submission):
    entry = sub.entry_file
    # unique per folder *and* content: two submissions never share a module, and an edited
    # entry file is re-imported rather than served from sys.modules
    try:
        digest = hashlib.sha256(str(entry).encode() + b"\0" + entry.read_bytes()).hexdigest()[:16]
    except OSError as exc:
        raise SubmissionError(f"{entry}: cannot read the entry file: {exc}") from exc
    mod_name = f"_xc_submission_{re.sub(r'[^A-Za-z0-9_]', '_', sub.name)}_{digest}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, entry)
    if spec is None or spec.loader is None:
        raise SubmissionError(f"{entry}: cannot import (entry_point in {sub.yaml_path})")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    # Sibling modules of the entry file are importable while it executes.
    sys.path.insert(0, str(sub.folder))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(mod_name, None)
        raise SubmissionError(f"{entry}: importing the entry file raised {type(exc).__name__}: {exc}") from exc
    finally:
        try:
            sys.path.remove(str(sub.folder))
        except ValueError:  # pragma: no cover
            pass
    return module


def _load_weights(sub: Submission, kind: str) -> dict:
    path = sub.weights_path
    assert path is not None
    actual = sha256_file(path)
    if actual != sub.sha256:
        raise SubmissionError(
            f"{path}: sha256 mismatch: {SUBMISSION_FILE} field 'sha256' says {sub.sha256}, the file has {actual}"
        )
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:1] == b"\x80" or head == b"PK\x03\x04":  # pickle protocol ≥ 2, or torch.save's zip
        raise SubmissionError(
            f"{path}: this is a pickle ({'torch.save zip archive' if head == b'PK' + bytes([3, 4]) else 'pickle stream'}),"
            " not a safetensors file; the harness never unpickles weights (save them with "
            "safetensors.torch.save_file)"
        )
    try:
        if kind == "torch":
            from safetensors.torch import load_file
        else:
            from safetensors.numpy import load_file
        return load_file(str(path))
    except Exception as exc:
        raise SubmissionError(f"{path}: cannot read the safetensors file: {type(exc).__name__}: {exc}") from exc


def load_functional(folder: "str | Path | Submission") -> TorchFunctional | JaxFunctional:
    """Load a submission folder (or an already parsed :class:`Submission`) into an adapted
    functional named after the submission.

    The returned object carries the parsed :class:`Submission` as ``.submission``.
    """
    sub = folder if isinstance(folder, Submission) else load_submission(folder)
    entry = sub.entry_file
    module = _import_entry(sub)
    factory = getattr(module, sub.factory_name, None)
    if factory is None:
        raise SubmissionError(f"{entry}: entry point {sub.factory_name!r} not found (field 'entry_point' in {sub.yaml_path})")
    if not callable(factory):
        raise SubmissionError(f"{entry}: entry point {sub.factory_name!r} is not callable")

    weights = _load_weights(sub, sub.framework) if sub.weights is not None else None
    try:
        if sub.framework == "jax" and weights is not None:
            obj = factory(weights=weights)
        else:
            obj = factory()
    except Exception as exc:
        raise SubmissionError(f"{entry}: factory {sub.factory_name}() raised {type(exc).__name__}: {exc}") from exc

    try:
        if sub.framework == "torch":
            if not callable(getattr(obj, "get_exc", None)):
                raise TypeError(
                    f"framework torch expects a module with 'features' and 'get_exc(features)', got {type(obj).__name__}"
                )
            fn = TorchFunctional(obj, name=sub.name)
            if weights is not None:
                if not hasattr(obj, "load_state_dict"):
                    raise TypeError("weights given but the returned object has no load_state_dict")
                try:
                    obj.load_state_dict(weights, strict=True)
                except Exception as exc:
                    raise SubmissionError(
                        f"{sub.weights_path}: load_state_dict(strict=True) failed: {type(exc).__name__}: {exc}"
                    ) from exc
        else:
            if not (isinstance(obj, (tuple, list)) and len(obj) == 2 and callable(obj[0])):
                raise TypeError(f"framework jax expects an (exc, params) pair, got {type(obj).__name__}")
            fn = JaxFunctional(obj[0], obj[1], features=sub.features, name=sub.name, pad=sub.pad_inputs)
    except SubmissionError:
        raise
    except (TypeError, FunctionalError, ImportError) as exc:
        raise SubmissionError(f"{entry}: {sub.factory_name}() result: {exc}") from exc
    fn.submission = sub
    return fn
