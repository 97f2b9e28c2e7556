"""Property-based tests of the config loader and the ``--set`` parser.

Any file and any override list ends in a validated config or in one ConfigError that names
the file (or ``--set``), the line where one applies, and the key.
"""

from __future__ import annotations

import codecs
import math
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from emomatch.config import ExperimentConfig, load_config, parse_overrides
from emomatch.errors import ConfigError

VALID = """\
seed: 3
data:
  store: feats
  modalities: [acoustic, lexical]
model:
  latent_dim: 16
  dropout: 0.2
loss:
  alpha: 0.5
  bandwidth: fixed
train:
  batch_size: 8
  lr: 0.01
"""


@contextmanager
def config_file(data: bytes | str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "exp.yaml"
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        yield path


def load_or_clear_error(path: Path, overrides: list[str] | None = None) -> ExperimentConfig | None:
    try:
        return load_config(path, overrides)
    except ConfigError as exc:
        message = str(exc)
        assert str(path) in message or message.startswith(("override", "--set"))
        assert "Traceback" not in message
        message.encode("utf-8")
        return None


@given(text=st.text(max_size=200))
@example(text="[" * 3000)
@example(text="a: &a [*a]\n")
@example(text="data: {store: s}\n---\nseed: 1\n")
@example(text="\x00")
@example(text="data: !!python/object:os.system {}\n")
@example(text="? [a, b]\n: 1\n")
@example(text="data: {store: s}\nseed: 99999999999999999999999999\n")
def test_any_text_gives_a_config_or_one_clear_error(text: str) -> None:
    with config_file(text.encode("utf-8", "surrogatepass")) as path:
        load_or_clear_error(path)


@given(data=st.binary(max_size=200))
def test_any_bytes_give_a_config_or_one_clear_error(data: bytes) -> None:
    with config_file(data) as path:
        load_or_clear_error(path)


PIECES = st.one_of(
    st.sampled_from(
        [
            ":",
            ": ",
            "\t",
            "- ",
            "  ",
            "\n",
            "#",
            "&a ",
            "*a",
            "<<: *a",
            "!!python/object:x ",
            ".nan",
            ".inf",
            "-.inf",
            "1e999",
            "9" * 400,
            "{",
            "}",
            "[",
            "'",
            '"',
            "\ufeff",
            "~",
        ]
    ),
    st.text(max_size=5),
)


@given(
    edits=st.lists(st.tuples(st.integers(0, 10**6), PIECES), min_size=1, max_size=4),
    duplicate=st.one_of(st.none(), st.integers(0, 20)),
    crlf=st.booleans(),
    bom=st.booleans(),
)
def test_damaged_config_gives_a_config_or_one_clear_error(
    edits: list[tuple[int, str]], duplicate: int | None, crlf: bool, bom: bool
) -> None:
    text = VALID
    for at, piece in edits:
        at %= len(text) + 1
        text = text[:at] + piece + text[at:]
    lines = text.split("\n")
    if duplicate is not None:
        lines.insert(duplicate % len(lines), lines[duplicate % len(lines)])
    text = ("\r\n" if crlf else "\n").join(lines)
    data = (codecs.BOM_UTF8 if bom else b"") + text.encode("utf-8", "surrogatepass")
    with config_file(data) as path:
        load_or_clear_error(path)


finite = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "seed": draw(st.integers(0, 2**31 - 1)),
        "data": {
            "store": draw(st.sampled_from(["feats", "/abs/store", "a b/ü"])),
            "modalities": draw(
                st.lists(
                    st.sampled_from(["acoustic", "visual", "lexical"]), min_size=1, unique=True
                )
            ),
            "split_field": draw(st.text(max_size=8)),
            "expect_shapes": draw(
                st.dictionaries(
                    st.text(max_size=5), st.lists(st.integers(1, 2**31 - 1), max_size=3), max_size=2
                )
            ),
        },
        "model": {
            "latent_dim": draw(st.integers(1, 4096)),
            "dropout": draw(st.floats(0.0, 1.0, exclude_max=True)),
            "acoustic_hidden": draw(st.lists(st.integers(1, 4096), max_size=3)),
        },
        "loss": {
            "alpha": draw(st.floats(0.0, 1e300)),
            "sigma_scales": draw(st.lists(finite, max_size=4)),
            "pairs": draw(st.sampled_from(["paper", "all"])),
        },
        "train": {
            "lr": draw(st.floats(1e-300, 1e300)),
            "max_epochs": draw(st.integers(1, 2**31 - 1)),
            "devices": draw(st.one_of(st.integers(1, 8), st.sampled_from(["auto", "0,1"]))),
        },
    }


@given(raw=configs())
def test_valid_config_reads_back_unchanged(raw: dict[str, Any]) -> None:
    # (allow_unicode would write a NEL character bare, which PyYAML reads back as a space)
    with config_file(yaml.safe_dump(raw)) as path:
        cfg = load_config(path)
        again_text = cfg.to_yaml()
        want = (path.parent / raw["data"]["store"]).resolve()
    assert cfg.data.store.resolve() == want
    assert cfg.model_dump(exclude={"data": {"store"}}) == ExperimentConfig.model_validate(
        raw
    ).model_dump(exclude={"data": {"store"}})
    # what to_yaml writes (run folders keep it as config.yaml) reads back the same
    with config_file(again_text) as path:
        assert load_config(path).model_dump() == cfg.model_dump()


@given(items=st.lists(st.text(max_size=20), max_size=4))
@example(items=["loss.alpha=["])
@example(items=["loss.alpha={a: b: c}"])
@example(items=["..=1"])
@example(items=["=1"])
@example(items=["loss.alpha=" + "[" * 3000])
@example(items=["loss=1", "loss.alpha=2"])
def test_any_overrides_give_a_tree_or_one_clear_error(items: list[str]) -> None:
    try:
        tree = parse_overrides(items)
    except ConfigError as exc:
        assert str(exc).startswith("override")
        return
    assert isinstance(tree, dict)
    with config_file("data: {store: s}\n") as path:
        load_or_clear_error(path, items)


@given(
    key=st.sampled_from(["loss.alpha", "loss.beta", "model.dropout", "train.lr", "loss.sigma"]),
    value=st.one_of(
        finite.map(repr),
        st.sampled_from(
            [".nan", ".inf", "-.inf", "1e999", "abc", "[1]", "{x: 1}", "", "~", "0x10"]
        ),
    ),
)
def test_numeric_override_is_a_finite_number_or_named(key: str, value: str) -> None:
    with config_file("data: {store: s}\n") as path:
        try:
            cfg = load_config(path, [f"{key}={value}"])
        except ConfigError as exc:
            assert f"--set: {key}:" in str(exc) or str(exc).startswith("override")
            return
    section, name = key.split(".")
    got = getattr(getattr(cfg, section), name)
    assert math.isfinite(got) and got == float(yaml.safe_load(value))


# --- targeted cases: the file, the line and the key are named ----------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data: {store: s}\nloss:\n  alpah: 0.3\n", "exp.yaml, line 3: loss.alpah: Extra inputs"),
        (
            "data: {store: s}\nloss:\n  alpha: .nan\n",
            "line 3: loss.alpha: Input should be a finite",
        ),
        ("data: {store: s}\nloss:\n  beta: 1e999\n", "line 3: loss.beta"),
        ("data: {store: s}\nseed: 99999999999999\n", "line 2: seed: Value error, 99999999999999"),
        ("data: {store: s}\nseed: -1\n", "line 2: seed: Input should be greater than or equal"),
        (
            "data: {store: s}\nmodel: {}\nmodel: {latent_dim: 3}\n",
            "not valid YAML (line 3, column 1: key 'model' appears twice (first on line 2)",
        ),
        ("data:\n  store: s\n  store: t\n", "key 'store' appears twice"),
        ("data: [unclosed\n", "not valid YAML (line 2, column 1"),
        ("data: {store: s}\nx: \x07\n", "line 2: character U+0007 is not allowed"),
        ("data: {store: s}\ntrain:\n  max_epochs: many\n", "line 3: train.max_epochs"),
        ("- a\n- b\n", "the top level must be a mapping (data:, model:, ...), found a list"),
        ("model: {latent_dim: 4}\n", "exp.yaml: data: Field required"),
    ],
)
def test_config_errors_name_file_line_and_key(text: str, message: str) -> None:
    with config_file(text) as path, pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_merge_keys_may_override_what_they_merge() -> None:
    text = "data: {store: s}\nloss:\n  <<: {alpha: 0.4, beta: 0.2}\n  alpha: 0.7\n"
    with config_file(text) as path:
        cfg = load_config(path)
    assert (cfg.loss.alpha, cfg.loss.beta) == (0.7, 0.2)


def test_config_that_is_not_utf8_names_the_line() -> None:
    with (
        config_file(b"data: {store: s}\n# caf\xe9\n") as path,
        pytest.raises(
            ConfigError, match=r"exp\.yaml, line 2: not valid YAML \(byte 0xe9 is not UTF-8"
        ),
    ):
        load_config(path)


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["loss.alpha"], "is not KEY=VALUE"),
        (["loss.alpha=["], "override 'loss.alpha=[': the value is not valid YAML (line 1"),
        (["loss..alpha=1"], "'loss..alpha' is not a key"),
        (["=1"], "'' is not a key"),
        (["loss=1", "loss.alpha=2"], "loss is not a section"),
        (["loss.alpha=" + "[" * 3000], "nested too deeply"),
    ],
)
def test_bad_overrides_are_named(items: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_overrides(items)


def test_override_errors_say_set_and_later_sections_merge() -> None:
    with config_file("data: {store: s}\nloss: {alpha: 0.5}\n") as path:
        with pytest.raises(ConfigError, match=r"^--set: loss\.alpha: Input should be a finite"):
            load_config(path, ["loss.alpha=.inf"])
        cfg = load_config(path, [" loss . beta = 0.25", "loss={omega: 0.5}"])
    assert (cfg.loss.alpha, cfg.loss.beta, cfg.loss.omega) == (0.5, 0.25, 0.5)


@pytest.mark.parametrize(
    ("content", "overrides", "message"),
    [
        (b"data: {store: s}\n# caf\xe9\n", [], "line 2: not valid YAML (byte 0xe9 is not UTF-8"),
        (b"data: {store: s}\n", ["--set", "loss.alpha=["], "override 'loss.alpha=['"),
        (b"data: {store: s}\n", ["--set", "seed=.inf"], "--set: seed: Input should be"),
        (b"data: {store: s}\nloss: {alpha: .nan}\n", [], "line 2: loss.alpha: Input should be"),
    ],
)
def test_cli_train_with_a_bad_config_is_one_clear_error(
    tmp_path: Path, content: bytes, overrides: list[str], message: str
) -> None:
    from typer.testing import CliRunner

    from emomatch.cli import app

    config = tmp_path / "exp.yaml"
    config.write_bytes(content)
    result = CliRunner().invoke(
        app, ["train", str(config), "--out", str(tmp_path / "r"), *overrides]
    )
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert message in result.output
    assert not isinstance(result.exception, (UnicodeError, yaml.YAMLError))
