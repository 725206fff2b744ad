"""Labelled datasets in the layout of the public server-machine benchmarks (SMD and kin):
`train/<entity>.txt`, `test/<entity>.txt`, `test_label/<entity>.txt`; comma-separated floats,
one row per time step, no header; labels 0/1, one per line.

Reading checks the layout strictly and names the file and line of the first problem: a
silently misaligned label file would make every figure of `evaluate` wrong.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sentinel.core.errors import InputError

__all__ = ["DatasetError", "Entity", "read_dataset", "write_entity", "write_scores"]


class DatasetError(InputError):
    """The dataset does not have the layout; the message names the file and line."""


@dataclass(frozen=True)
class Entity:
    name: str
    train: np.ndarray
    test: np.ndarray
    labels: np.ndarray


def _matrix(path: Path) -> np.ndarray:
    rows: list[list[float]] = []
    width = None
    try:
        text = path.read_text()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read: {e.strerror}") from None
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = [float(x) for x in line.split(",")]
        except ValueError:
            raise DatasetError(f"{path}:{i}: not comma-separated numbers: {line[:60]!r}") \
                from None
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise DatasetError(f"{path}:{i}: {len(row)} columns, the first row has {width}")
        if not all(np.isfinite(row)):
            raise DatasetError(f"{path}:{i}: NaN or infinite value")
        rows.append(row)
    if not rows:
        raise DatasetError(f"{path}: empty")
    return np.asarray(rows, dtype=np.float64)


def _labels(path: Path, n: int) -> np.ndarray:
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines()]
    except OSError as e:
        raise DatasetError(f"{path}: cannot read: {e.strerror}") from None
    out = []
    for i, ln in enumerate(lines, 1):
        if not ln:
            continue
        try:
            v = float(ln)
        except ValueError:
            raise DatasetError(f"{path}:{i}: a label is 0 or 1, not {ln[:20]!r}") from None
        if v not in (0.0, 1.0):
            raise DatasetError(f"{path}:{i}: a label is 0 or 1, not {ln[:20]!r}")
        out.append(int(v))
    if len(out) != n:
        raise DatasetError(f"{path}: {len(out)} labels for {n} test rows")
    return np.asarray(out, dtype=np.int8)


def shared_datasets() -> Path | None:
    """Where the shared real datasets are (asd, nab-aws): `$SENTINEL_DATASETS`, else the first
    `shared/datasets` beside the project or one of its parent folders (the workspace keeps
    them in `../shared/datasets`); None when there are none on this machine."""
    env = os.environ.get("SENTINEL_DATASETS")
    if env:
        return Path(env) if Path(env).is_dir() else None
    for up in Path(__file__).resolve().parents[2:]:
        if (up / "shared" / "datasets").is_dir():
            return up / "shared" / "datasets"
    return None


def read_dataset(root: Path) -> Iterator[Entity]:
    """Entities in name order, read one at a time (a full benchmark does not fit twice)."""
    for sub in ("train", "test", "test_label"):
        if not (root / sub).is_dir():
            raise DatasetError(f"{root}: no {sub}/ folder (expected train/, test/, "
                               "test_label/ with one <entity>.txt each)")
    names = sorted(p.stem for p in (root / "test").glob("*.txt"))
    if not names:
        raise DatasetError(f"{root / 'test'}: no <entity>.txt files")
    for name in names:
        for sub in ("train", "test_label"):
            if not (root / sub / f"{name}.txt").is_file():
                raise DatasetError(f"{root / sub}: no {name}.txt to go with test/{name}.txt")
    for name in names:
        train = _matrix(root / "train" / f"{name}.txt")
        test = _matrix(root / "test" / f"{name}.txt")
        if train.shape[1] != test.shape[1]:
            raise DatasetError(f"{root / 'test' / name}.txt: {test.shape[1]} columns, "
                               f"train has {train.shape[1]}")
        yield Entity(name, train, test, _labels(root / "test_label" / f"{name}.txt",
                                                test.shape[0]))


def write_entity(root: Path, name: str, train: np.ndarray, test: np.ndarray,
                 labels: np.ndarray) -> None:
    for sub, arr, fmt in (("train", train, "%.6g"), ("test", test, "%.6g"),
                          ("test_label", labels.reshape(-1, 1), "%d")):
        (root / sub).mkdir(parents=True, exist_ok=True)
        np.savetxt(root / sub / f"{name}.txt", arr, fmt=fmt, delimiter=",")


def write_scores(root: Path, name: str, scores: np.ndarray, alarms: np.ndarray) -> None:
    """`score,alarm` per test step: enough for anyone to recompute every figure."""
    path = root / f"{name}.txt"
    try:
        root.mkdir(parents=True, exist_ok=True)
        with path.open("w") as f:
            for s, a in zip(scores, alarms, strict=True):
                f.write(f"{s:.17g},{int(a)}\n")
    except OSError as e:
        raise DatasetError(f"{path}: cannot write the scores: {e.strerror}") from None
