"""MELD reader on miniature release trees: CSV parsing, bad clips, text-only copies."""

from __future__ import annotations

import shutil
from collections import Counter

import pytest

from emomatch.corpora import read_manifest, validate_manifest
from emomatch.corpora.base import CORPORA
from emomatch.corpora.meld import MELD_CLASSES, read_meld, repair_text
from emomatch.errors import DataError
from tests.support.corpus_fixtures import MELD_COLUMNS, MeldTree, make_meld_tree

SPLIT = {"train": "train", "dev": "validation", "test": "test"}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> MeldTree:
    return make_meld_tree(tmp_path_factory.mktemp("meld") / "MELD.Raw")


def bad_clips(tree: MeldTree) -> set[str]:
    return {*tree.missing_clips, *tree.corrupt_clips, *tree.empty_clips}


def test_rows_labels_and_splits(tree: MeldTree, tmp_path) -> None:
    prepared = CORPORA.get("meld")(tree.root, tmp_path)
    df = read_manifest(prepared.manifest)
    good = [u for u in tree.utterances if u.id not in bad_clips(tree)]
    assert prepared.rows == len(df) == len(good)
    assert prepared.classes == list(MELD_CLASSES) and len(MELD_CLASSES) == 7
    assert Counter(zip(df["split"], df["label"], strict=True)) == Counter(
        (SPLIT[u.split], u.emotion) for u in good
    )
    assert prepared.counts["split"] == dict(Counter(SPLIT[u.split] for u in good))
    by_id = df.set_index("id")
    for u in good:
        row = by_id.loc[u.id]
        assert row["speaker"] == u.speaker and row["text"] == u.text
        # the soundtrack is the audio: one clip in both columns, a whole file
        assert row["audio"] == row["video"] and row["audio"].endswith(
            f"dia{u.dialogue}_utt{u.utterance}.mp4"
        )
    assert df["start"].isna().all() and df["end"].isna().all()
    assert validate_manifest(df, classes=prepared.classes) == []


def test_bad_clips_reported_and_skipped(tree: MeldTree, tmp_path) -> None:
    prepared = read_meld(tree.root, tmp_path)
    ids = set(read_manifest(prepared.manifest)["id"])
    assert tree.missing_clips and tree.corrupt_clips and tree.empty_clips
    for uid, word in (
        *((i, "missing") for i in tree.missing_clips),
        *((i, "cannot be opened") for i in tree.corrupt_clips),
        *((i, "zero-size") for i in tree.empty_clips),
    ):
        assert uid not in ids
        assert any(p.startswith(f"{uid}: clip ") and word in p for p in prepared.problems)
    assert sum(prepared.counts["skipped"].values()) == len(bad_clips(tree))


def test_multiline_quoted_and_misencoded_utterances(tree: MeldTree, tmp_path) -> None:
    prepared = read_meld(tree.root, tmp_path)
    df = read_manifest(prepared.manifest).set_index("id")
    (multi,) = tree.multiline
    assert df.loc[multi, "text"] == "Wait… you don’t “know” that?"
    for uid in tree.mojibake:
        expected = next(u.text for u in tree.utterances if u.id == uid)
        assert df.loc[uid, "text"] == expected and "’" in expected
    assert prepared.counts["repaired_text"] == len(tree.mojibake)
    # the multi-line cell did not shift the rows after it
    assert df.loc["train_dia0_utt2", "speaker"] == next(
        u.speaker for u in tree.utterances if u.id == "train_dia0_utt2"
    )


def test_repair_text_leaves_correct_text_alone() -> None:
    for text in ("café’s… “fine” — ok", "Wait…", "naïve", "plain"):
        assert repair_text(text) == text
    assert repair_text("it\u0092s") == "it’s"
    assert repair_text("donâ€™t") == "don’t"
    assert repair_text("Â’") == "’"


def test_csv_only_copy_gives_text_only_manifest(tmp_path) -> None:
    tree = make_meld_tree(tmp_path / "MELD.Raw", splits=("train", "dev"), clips=False)
    prepared = read_meld(tree.root, tmp_path / "out")
    df = read_manifest(prepared.manifest)
    assert len(df) == len(tree.utterances)
    assert (df["audio"] == "").all() and (df["video"] == "").all()
    assert set(df["split"]) == {"train", "validation"}
    assert any("text-only" in p for p in prepared.problems)
    assert any("test_sent_emo.csv not found" in p for p in prepared.problems)
    assert prepared.counts["text_only"] == len(df)


def test_one_clip_folder_absent_makes_that_split_text_only(tmp_path) -> None:
    tree = make_meld_tree(tmp_path / "MELD.Raw", defects=False)
    shutil.rmtree(tree.root / "test")
    prepared = read_meld(tree.root, tmp_path / "out")
    df = read_manifest(prepared.manifest)
    test = df["split"] == "test"
    assert test.any() and (df.loc[test, "audio"] == "").all()
    assert (df.loc[~test, "audio"] != "").all()
    assert any("output_repeated_splits_test" in p and "text-only" in p for p in prepared.problems)


def test_clip_folders_settable(tmp_path) -> None:
    tree = make_meld_tree(tmp_path / "MELD.Raw", splits=("dev",), defects=False)
    (tree.root / "dev" / "dev_splits_complete").rename(tree.root / "dev_splits")
    default = read_meld(tree.root, tmp_path / "a")
    assert (read_manifest(default.manifest)["audio"] == "").all()
    moved = CORPORA.get("meld")(tree.root, tmp_path / "b", dev_clips="dev_splits")
    assert (read_manifest(moved.manifest)["audio"] != "").all()
    via_layout = read_meld(tree.root, tmp_path / "c", layout={"dev_clips": "dev_splits"})
    assert via_layout.rows == moved.rows


def test_bad_rows_reported_with_file_and_line(tmp_path) -> None:
    root = tmp_path / "MELD.Raw"
    root.mkdir()
    header = ",".join(f'"{c}"' if " " in c else c for c in MELD_COLUMNS)
    lines = [
        header,
        '1,"Two\nlines",Ross,joy,positive,0,0,1,1,"00:00:01,000","00:00:02,000"',
        "2,Fine.,Ross,happiness,positive,0,1,1,1,a,b",  # not a MELD emotion
        "3,Fine.,Ross,joy,positive,zero,2,1,1,a,b",  # Dialogue_ID not a number
        "4,Short row,Ross",
        "5,Fine.,Rachel,Neutral,neutral,0,3,1,1,a,b",
    ]
    (root / "dev_sent_emo.csv").write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    prepared = read_meld(root, tmp_path / "out")
    path = root / "dev_sent_emo.csv"
    # the quoted cell spans lines 2-3, so the following records start one line later
    assert any(p.startswith(f"{path}:4: unknown Emotion 'happiness'") for p in prepared.problems)
    assert any(p.startswith(f"{path}:5: ") and "Dialogue_ID" in p for p in prepared.problems)
    assert any(p.startswith(f"{path}:6: 3 fields") for p in prepared.problems)
    df = read_manifest(prepared.manifest)
    assert list(df["id"]) == ["dev_dia0_utt0", "dev_dia0_utt3"]
    assert list(df["text"]) == ["Two lines", "Fine."]
    assert list(df["label"]) == ["joy", "neutral"]


def test_not_meld_root_and_missing_columns(tmp_path) -> None:
    (tmp_path / "Session1").mkdir()
    with pytest.raises(DataError, match="train_sent_emo.csv.*found: Session1"):
        read_meld(tmp_path, tmp_path / "out")
    (tmp_path / "train_sent_emo.csv").write_text("Sr No.,Utterance,Speaker\n1,Hi,Ross\n")
    with pytest.raises(DataError, match=r"train_sent_emo.csv: missing column\(s\) Emotion"):
        read_meld(tmp_path, tmp_path / "out")


def test_probe_off_still_refuses_missing_and_empty_clips(tree: MeldTree, tmp_path) -> None:
    prepared = read_meld(tree.root, tmp_path, probe=False)
    ids = set(read_manifest(prepared.manifest)["id"])
    assert not ids & {*tree.missing_clips, *tree.empty_clips}
    assert set(tree.corrupt_clips) <= ids  # only opening the file finds these
