"""Named experiments: which runs make up one of the paper's tables, as a validated YAML file.

An experiment file lists its rows; each row is the base config with a few overrides (dotted
keys, as ``--set`` takes them). The files shipped with emomatch (``configs/experiments/`` in the
repository, package data once installed) are found by name; a user's copy is given by path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from emomatch.config import (
    ExperimentConfig,
    key_source,
    load_config,
    read_yaml,
    split_override,
)
from emomatch.errors import ConfigError
from emomatch.metrics import METRIC_KEYS

SPEC_FOLDER = "specs"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def _known_metric(v: str) -> str:
    if v not in METRIC_KEYS:
        raise ValueError(f"unknown metric {v!r}; known: {', '.join(METRIC_KEYS)}")
    return v


#: a key of the metrics a run reports (``ua``, ``weighted_f1`` ...)
Metric = Annotated[str, AfterValidator(_known_metric)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Row(_Strict):
    #: the row's folder under the experiment's output
    name: str
    #: the table row it fills (several runs may share one, in different columns)
    label: str
    #: the table column group: e.g. ``fully`` / ``semi``; one group when not given
    column: str = "ours"
    #: dotted config keys -> values, applied after the base config and the user's --set
    set: dict[str, Any] = Field(default_factory=dict)
    #: the paper's figure for this setting, in percent, by metric key
    paper: dict[Metric, float] = Field(default_factory=dict)
    #: the row's position on the experiment's curve
    x: float | None = None

    @field_validator("name")
    @classmethod
    def _folder_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v!r} must be a plain folder name (letters, digits, _ . + -)")
        return v


class Curve(_Strict):
    #: the x axis' title; each row gives its own ``x``
    x: str
    metric: Metric = "ua"


class ExperimentSpec(_Strict):
    title: str
    about: str = ""
    #: the metrics of the table, in the paper's order (WAP / UA for IEMOCAP, weighted F1 MELD)
    metrics: list[Metric] = Field(default_factory=lambda: ["wap", "ua"], min_length=1)
    #: where the ``paper`` figures come from; shown in the column header
    paper_corpus: str = "the paper"
    #: the logistic regression and linear SVM as extra columns of each table row (the row's
    #: runs must share their data), as extra rows at the end, or not at all
    baselines: Literal["columns", "rows", "none"] = "rows"
    curve: Curve | None = None
    #: overrides of every row, applied before the user's --set
    set: dict[str, Any] = Field(default_factory=dict)
    rows: list[Row]
    #: filled in by :func:`load_spec`
    name: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentSpec:
        if not self.rows:
            raise ValueError("rows: at least one row is needed")
        names = [r.name for r in self.rows]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"rows: names repeat: {', '.join(repeated)}")
        cells = [(r.label, r.column) for r in self.rows]
        twice = sorted({f"{a} / {b}" for a, b in cells if cells.count((a, b)) > 1})
        if twice:
            raise ValueError(f"rows: two rows fill the same table cell: {', '.join(twice)}")
        if self.curve is not None:
            missing = [r.name for r in self.rows if r.x is None]
            if missing:
                raise ValueError(f"curve: rows without x: {', '.join(missing)}")
        return self


def shipped_experiments() -> list[str]:
    """Names of the experiments shipped with emomatch."""
    folder = resources.files("emomatch.experiments") / SPEC_FOLDER
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def spec_path(name_or_path: str | Path) -> Path:
    """A shipped experiment's file by name, or a user's file by path."""
    given = Path(name_or_path)
    if given.suffix in (".yaml", ".yml") or given.is_file():
        if not given.is_file():
            raise ConfigError(f"experiment file {given} does not exist")
        return given
    found = (resources.files("emomatch.experiments") / SPEC_FOLDER) / f"{name_or_path}.yaml"
    if not found.is_file():
        raise ConfigError(
            f"unknown experiment {str(name_or_path)!r}; shipped: "
            f"{', '.join(shipped_experiments())} (or give the path of an experiment .yaml)"
        )
    return Path(str(found))


def load_spec(name_or_path: str | Path) -> ExperimentSpec:
    """Read and validate an experiment file; errors name the file, the line and the key."""
    path = spec_path(name_or_path)
    raw, lines = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping (title:, rows:, ...)")
    try:
        spec = ExperimentSpec.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(str(p) for p in err["loc"])
            problems.append(
                f"{key_source(loc, str(path), lines, set())}: {'.'.join(loc)}: {err['msg']}"
            )
        raise ConfigError("\n".join(problems)) from None
    spec.name = path.stem
    return spec


def as_overrides(values: dict[str, Any]) -> list[str]:
    """``{"loss.alpha": 0.5}`` -> ``["loss.alpha=0.5"]`` (JSON is YAML: lists and strings
    survive the round trip through ``--set`` parsing)."""
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


def row_overrides(spec: ExperimentSpec, row: Row, user: Sequence[str]) -> list[str]:
    """The overrides of one run, in order: the experiment's, the user's, the row's own. A user
    override of a key the row sets would silently lose: it is an error instead."""
    row_keys = {split_override(k + "=")[0] for k in row.set}
    for item in user:
        key = split_override(item)[0]
        clash = [k for k in row_keys if k == key or k.startswith(key + ".")]
        if clash:
            raise ConfigError(
                f"--set {item}: experiment {spec.name!r}, row {row.name!r} sets {clash[0]} "
                "itself; copy the experiment file and edit its rows instead"
            )
    return [*as_overrides(spec.set), *user, *as_overrides(row.set)]


def row_configs(
    spec: ExperimentSpec, base: str | Path, user: Sequence[str] = ()
) -> list[tuple[Row, ExperimentConfig]]:
    """Every row's validated config; a bad override is one error naming the row."""
    out = []
    for row in spec.rows:
        try:
            cfg = load_config(base, row_overrides(spec, row, user))
        except ConfigError as exc:
            raise ConfigError(f"experiment {spec.name!r}, row {row.name!r}: {exc}") from None
        out.append((row, cfg))
    return out
