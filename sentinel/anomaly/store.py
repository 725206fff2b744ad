"""The anomaly model on disk: plain arrays in one `.npz` (no pickle, so loading a file runs no
code) and its metadata as JSON inside it.

Loading checks that the model fits what this sentinel would compute: the same features with
the same queries, a library that computes the same way, an age within `max_model_age`.
Anything else is refused with the reason, and the caller retrains.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import numpy as np

from sentinel.anomaly.arrays import Calibration
from sentinel.anomaly.score import AnomalyModel, AnomalyParams
from sentinel.core.errors import SentinelError

__all__ = ["FORMAT", "ModelRefused", "features_digest", "library_versions", "load_model",
           "save_model"]

FORMAT = 3
"""2: a reference of normal z-vectors joined the parts; 3: `enter` counts evidence, not points
in a row (older files are retrained)."""


class ModelRefused(SentinelError):
    """The saved model cannot be used; the message says why, for the log and the API."""


def features_digest(queries: Mapping[str, str]) -> str:
    text = json.dumps(sorted(queries.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def library_versions() -> dict[str, str]:
    """Major.minor of what computes the scores: a model from another one is refused."""
    def mm(v: str) -> str:
        return ".".join(v.split(".")[:2])

    # the installed distribution's version: importing scikit-learn for it costs 1.8 s
    return {"numpy": mm(np.__version__), "scikit-learn": mm(metadata.version("scikit-learn"))}


def save_model(path: Path, model: AnomalyModel) -> None:
    """Atomically: a crash mid-write leaves the previous model, never half of one."""
    arrays: dict[str, np.ndarray] = {
        "center": model.center, "scale": model.scale, "reference": model.reference,
        "pca_mean": model.pca_mean, "components": model.components,
        "peer_floor": model.peer_floor,
        "nodes": np.asarray(model.nodes, dtype=str),
    }
    for name in ("self", "near", "pca", "peer", "final"):
        cal = getattr(model, f"cal_{name}")
        if cal is not None:
            arrays[f"cal_{name}"] = cal.quantiles
            arrays[f"cal_{name}_spread"] = np.asarray([cal.spread])
    meta = {**model.meta, "format": FORMAT, "features": list(model.features),
            "params": asdict(model.params)}
    arrays["meta"] = np.asarray(json.dumps(meta))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        np.savez_compressed(f, **arrays)  # type: ignore[arg-type]
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_model(path: Path, queries: Mapping[str, str], now: float,
               max_age: float) -> AnomalyModel:
    if not path.exists():
        raise ModelRefused(f"no model at {path} yet")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        meta = json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise ModelRefused(f"{path} is not a model sentinel can read ({e})") from None
    if meta.get("format") != FORMAT:
        raise ModelRefused(f"{path} has format {meta.get('format')}, this sentinel reads "
                           f"{FORMAT}")
    if meta.get("features_digest") != features_digest(queries):
        raise ModelRefused(f"{path} was trained on features {meta.get('features')} with other "
                           f"queries; the configuration has {list(queries)}")
    if meta.get("versions") != library_versions():
        raise ModelRefused(f"{path} was trained with {meta.get('versions')}, this sentinel "
                           f"runs {library_versions()}")
    age = now - float(meta.get("trained_at", 0))
    if age > max_age:
        raise ModelRefused(f"{path} is stale: trained {age / 3600:.1f} h ago, "
                           f"max_model_age is {max_age / 3600:.1f} h")

    def cal(name: str) -> Calibration | None:
        if f"cal_{name}" not in data:
            return None
        return Calibration(data[f"cal_{name}"].astype(np.float64),
                           float(data[f"cal_{name}_spread"][0]))

    def need(name: str) -> Calibration:
        c = cal(name)
        if c is None:
            raise KeyError(f"cal_{name}")
        return c

    try:
        saved = dict(meta["params"])
        if "step" not in saved:  # saved before `step` was kept: its window says it
            window = meta.get("window") or []
            if len(window) == 3 and float(window[2]) > 0:
                saved["step"] = float(window[2])
        params = AnomalyParams(**saved)
        return AnomalyModel(tuple(meta["features"]), tuple(str(n) for n in data["nodes"]),
                            data["center"], data["scale"], data["reference"],
                            data["pca_mean"], data["components"], data["peer_floor"],
                            need("self"), need("near"), need("pca"), cal("peer"),
                            need("final"), params, meta)
    except (KeyError, TypeError) as e:
        raise ModelRefused(f"{path} is incomplete ({e})") from None
