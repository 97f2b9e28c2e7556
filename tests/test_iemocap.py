"""IEMOCAP reader on miniature release trees: labels, folds, crop side, text, damaged input."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from emomatch.corpora import read_manifest, validate_manifest
from emomatch.corpora.base import CORPORA
from emomatch.corpora.iemocap import read_iemocap
from emomatch.errors import DataError
from tests.support.corpus_fixtures import IemocapTree, make_iemocap_tree

FOUR = {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> IemocapTree:
    return make_iemocap_tree(tmp_path_factory.mktemp("iemocap") / "IEMOCAP_full_release")


def expected_rows(tree: IemocapTree, mapping: dict[str, str]) -> list:
    return [u for u in tree.utterances if u.code in mapping and u.id not in tree.missing_wav]


def test_four_class_rows_labels_and_media(tree: IemocapTree, tmp_path) -> None:
    prepared = CORPORA.get("iemocap")(tree.root, tmp_path / "out")
    df = read_manifest(prepared.manifest)
    expected = expected_rows(tree, FOUR)
    assert prepared.rows == len(df) == len(expected)
    assert Counter(df["label"]) == Counter(FOUR[u.code] for u in expected)
    assert prepared.classes == ["angry", "happy", "neutral", "sad"]
    assert set(df["id"]) == {u.id for u in expected}
    # every media path resolves from the manifest's folder, and the validator finds nothing
    assert validate_manifest(df, classes=prepared.classes) == []
    by_id = df.set_index("id")
    for u in expected:
        row = by_id.loc[u.id]
        assert row["audio"].endswith(f"sentences/wav/{u.dialog}/{u.id}.wav")
        assert row["video"].endswith(f"dialog/avi/DivX/{u.dialog}.avi")
        assert (row["start"], row["end"]) == pytest.approx((u.start, u.end))
        assert row["speaker"] == u.speaker and int(row["session"]) == u.session
        # the utterance WAV is a whole file: its segment is empty, unlike the video's
        assert (row["audio_start"], row["audio_end"]) == ("", "")


def test_crop_side_follows_the_dialog_lead(tree: IemocapTree, tmp_path) -> None:
    df = read_manifest(read_iemocap(tree.root, tmp_path).manifest).set_index("id")
    sides = {uid: df.loc[uid, "crop"] for uid in df.index}
    for u in expected_rows(tree, FOUR):
        assert sides[u.id] == ("left" if u.gender == u.lead else "right")
    # both sides occur in both kinds of dialog (F-led and M-led)
    assert {(uid[5], side) for uid, side in sides.items()} == {
        ("F", "left"),
        ("F", "right"),
        ("M", "left"),
        ("M", "right"),
    }


def test_text_joined_by_utterance_id(tree: IemocapTree, tmp_path) -> None:
    prepared = read_iemocap(tree.root, tmp_path)
    df = read_manifest(prepared.manifest).set_index("id")
    for u in expected_rows(tree, FOUR):
        assert df.loc[u.id, "text"] == u.text
    (empty,) = tree.empty_text
    assert df.loc[empty, "text"] == ""
    assert any(empty in p and "empty transcription" in p for p in prepared.problems)


def test_missing_wav_reported_and_skipped(tree: IemocapTree, tmp_path) -> None:
    prepared = read_iemocap(tree.root, tmp_path)
    (gone,) = tree.missing_wav
    assert gone not in set(read_manifest(prepared.manifest)["id"])
    assert any(gone in p and "missing" in p for p in prepared.problems)
    assert prepared.counts["skipped_missing_audio"] == 1


def test_corrupt_header_line_reported_with_file_and_line(tree: IemocapTree, tmp_path) -> None:
    prepared = read_iemocap(tree.root, tmp_path)
    ((path, line),) = tree.corrupt_lines
    assert any(p.startswith(f"{path}:{line}:") for p in prepared.problems)
    # the lines after the damaged one were still read: that file's later turns are there
    ids = set(read_manifest(prepared.manifest)["id"])
    same_dialog = [u for u in expected_rows(tree, FOUR) if u.dialog == path.stem]
    assert same_dialog and all(u.id in ids for u in same_dialog)


def test_folds_are_speaker_independent(tree: IemocapTree, tmp_path) -> None:
    prepared = read_iemocap(tree.root, tmp_path)
    df = read_manifest(prepared.manifest)
    assert [p.name for p in prepared.folds] == [f"fold_{k}.csv" for k in range(1, 6)]
    held_out = []
    for k in range(1, 6):
        splits = df[f"fold_{k}"]
        assert set(splits) == {"train", "validation", "test"}
        speakers = {s: set(df.loc[splits == s, "speaker"]) for s in ("train", "validation", "test")}
        assert len(speakers["validation"]) == len(speakers["test"]) == 1
        assert not speakers["train"] & (speakers["validation"] | speakers["test"])
        assert not speakers["validation"] & speakers["test"]
        sessions = set(df.loc[splits != "train", "session"])
        assert len(sessions) == 1
        held_out.append(sessions.pop())
        # the fold file says the same as the manifest column
        fold_file = pd.read_csv(tmp_path / "folds" / f"fold_{k}.csv", dtype=str)
        assert list(fold_file.columns) == ["id", "split"]
        assert fold_file["id"].tolist() == df["id"].tolist()
        assert fold_file["split"].tolist() == splits.tolist()
    assert sorted(held_out) == ["1", "2", "3", "4", "5"]
    assert (df["split"] == df["fold_1"]).all()


def test_both_orders_gives_ten_folds_with_roles_swapped(tree: IemocapTree, tmp_path) -> None:
    prepared = read_iemocap(tree.root, tmp_path, both_orders=True)
    df = read_manifest(prepared.manifest)
    assert len(prepared.folds) == 10
    for k in range(1, 6):
        first, swapped = df[f"fold_{k}"], df[f"fold_{k + 5}"]
        assert ((first == "validation") == (swapped == "test")).all()
        assert ((first == "test") == (swapped == "validation")).all()
        assert ((first == "train") == (swapped == "train")).all()
    # a later run with fewer folds leaves no stale fold files behind
    again = read_iemocap(tree.root, tmp_path)
    assert sorted(p.name for p in (tmp_path / "folds").iterdir()) == sorted(
        p.name for p in again.folds
    )


def test_six_class_and_user_mapping(tree: IemocapTree, tmp_path) -> None:
    six = read_iemocap(tree.root, tmp_path / "six", labels="6class")
    df = read_manifest(six.manifest)
    assert six.classes == ["angry", "excited", "frustrated", "happy", "neutral", "sad"]
    codes = Counter(u.code for u in tree.utterances if u.id not in tree.missing_wav)
    assert (df["label"] == "frustrated").sum() == codes["fru"]
    assert (df["label"] == "excited").sum() == codes["exc"]
    mine = read_iemocap(tree.root, tmp_path / "mine", labels={"ang": "anger", "fru": "anger"})
    assert mine.classes == ["anger"]
    assert mine.rows == codes["ang"] + codes["fru"]
    with pytest.raises(DataError, match="unknown code.*joy"):
        read_iemocap(tree.root, tmp_path / "bad", labels={"joy": "happy"})
    with pytest.raises(DataError, match="4class"):
        read_iemocap(tree.root, tmp_path / "bad", labels="5class")


def test_full_copy_count_difference_is_reported_not_raised(tree: IemocapTree, tmp_path) -> None:
    prepared = read_iemocap(tree.root, tmp_path)
    assert prepared.counts["full_release_check"] == "differs"
    assert any("5531" in p for p in prepared.problems)
    assert any(p.startswith("count check: neutral: expected 1708") for p in prepared.problems)


def test_partial_copy_folds_over_present_sessions(tmp_path) -> None:
    tree = make_iemocap_tree(tmp_path / "root", sessions=(2, 3), media=False, defects=False)
    prepared = read_iemocap(tree.root, tmp_path / "out")
    assert prepared.counts["folds"] == {
        "fold_1": {"held_out_session": 2, "validation": "Ses02F", "test": "Ses02M"},
        "fold_2": {"held_out_session": 3, "validation": "Ses03F", "test": "Ses03M"},
    }
    assert "full_release_check" not in prepared.counts
    assert not any("count check" in p for p in prepared.problems)


def test_missing_video_keeps_rows_with_video_empty(tmp_path) -> None:
    tree = make_iemocap_tree(tmp_path / "root", sessions=(1, 2), media=False, defects=False)
    (tree.root / "Session2/dialog/avi/DivX/Ses02M_script01_1.avi").unlink()
    prepared = read_iemocap(tree.root, tmp_path / "out")
    df = read_manifest(prepared.manifest)
    in_dialog = df["dialog"] == "Ses02M_script01_1"
    assert in_dialog.any() and (df.loc[in_dialog, "video"] == "").all()
    assert (df.loc[~in_dialog, "video"] != "").all()
    assert any("Ses02M_script01_1" in p and "video" in p for p in prepared.problems)


def test_not_iemocap_root_names_expected_folder(tmp_path) -> None:
    (tmp_path / "MELD.Raw").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError) as err:
        read_iemocap(tmp_path, tmp_path / "out")
    message = str(err.value)
    assert "Session1/dialog/EmoEvaluation" in message and "MELD.Raw" in message
    tree = make_iemocap_tree(tmp_path / "copy" / "IEMOCAP_full_release", sessions=(1,), media=False)
    with pytest.raises(DataError, match="did you mean .*IEMOCAP_full_release"):
        read_iemocap(tree.root.parent, tmp_path / "out")


def test_unknown_option_lists_known_ones(tree: IemocapTree, tmp_path) -> None:
    with pytest.raises(DataError, match="both_order.*known: labels, both_orders"):
        CORPORA.get("iemocap")(tree.root, tmp_path, both_order=True)


def test_dialog_audio_option_cuts_audio_like_the_video(tree: IemocapTree, tmp_path) -> None:
    df = read_manifest(read_iemocap(tree.root, tmp_path, audio="dialog").manifest)
    expected = [u for u in tree.utterances if u.code in FOUR]  # no sentence wav needed now
    assert set(df["id"]) == {u.id for u in expected}
    for _, row in df.iterrows():
        assert row["audio"].endswith(f"dialog/wav/{row['dialog']}.wav")
        assert float(row["audio_start"]) == row["start"] and float(row["audio_end"]) == row["end"]
    assert validate_manifest(df) == []
    with pytest.raises(DataError, match="audio.*'sentences' or 'dialog'"):
        read_iemocap(tree.root, tmp_path, audio="both")
