import pytest

from emomatch.config import load_config, parse_overrides
from emomatch.errors import ConfigError


def write(tmp_path, text: str):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_loads_with_defaults_and_resolves_store_next_to_config(tmp_path) -> None:
    cfg = load_config(write(tmp_path, "data:\n  store: feats\n"))
    assert cfg.data.store == tmp_path / "feats"
    assert (cfg.loss.alpha, cfg.loss.beta, cfg.loss.omega) == (0.2, 0.1, 0.3)
    assert cfg.loss.measure == "pairwise"
    assert cfg.train.batch_size == 128 and cfg.train.lr == 1e-3


def test_unknown_key_is_named(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"loss\.alpah"):
        load_config(write(tmp_path, "data: {store: s}\nloss: {alpah: 0.3}\n"))


def test_ill_typed_key_is_named(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"train\.max_epochs"):
        load_config(write(tmp_path, "data: {store: s}\ntrain: {max_epochs: many}\n"))
    with pytest.raises(ConfigError, match=r"data\.modalities"):
        load_config(write(tmp_path, "data: {store: s, modalities: [audio]}\n"))


def test_unknown_measure_is_named(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"loss\.measure.*pairwise"):
        load_config(write(tmp_path, "data: {store: s}\nloss: {measure: cosine}\n"))


def test_overrides(tmp_path) -> None:
    cfg = load_config(
        write(tmp_path, "data: {store: s}\n"),
        ["loss.alpha=0.5", "data.modalities=[acoustic, lexical]", "train.max_epochs=2"],
    )
    assert cfg.loss.alpha == 0.5
    assert cfg.data.modalities == ["acoustic", "lexical"]
    assert cfg.train.max_epochs == 2
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["loss.alpha"])
    with pytest.raises(ConfigError, match=r"loss\.gamma"):
        load_config(write(tmp_path, "data: {store: s}\n"), ["loss.gamma=1"])


def test_missing_file_and_bad_yaml(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "data: [unclosed\n"))


def test_example_config_lists_every_default() -> None:
    from pathlib import Path

    from emomatch.config import ExperimentConfig

    example = Path(__file__).resolve().parents[1] / "configs" / "example.yaml"
    cfg = load_config(example)
    defaults = ExperimentConfig.model_validate({"data": {"store": str(cfg.data.store)}})
    assert cfg.model_dump() == defaults.model_dump()


@pytest.mark.parametrize("name", ["iemocap", "iemocap_ami", "meld"])
def test_recipe_configs_validate(name: str) -> None:
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml")
    assert cfg.data.store.name == "store"
    assert cfg.loss.unlabeled == (name == "iemocap_ami")
    assert ("visual" in cfg.data.modalities) == name.startswith("iemocap")


def test_ravdess_recipe_and_paper_profile() -> None:
    from pathlib import Path

    configs = Path(__file__).resolve().parents[1] / "configs"
    cfg = load_config(configs / "ravdess.yaml")
    assert cfg.data.unlabeled_pool == "train_rest" and cfg.loss.self_training
    # the paper's profile runs the paper's L_u only
    assert not load_config(configs / "paper.yaml").loss.self_training
