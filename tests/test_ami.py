"""The AMI window sampler against a miniature AMI copy whose truth the fixture knows."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emomatch.corpora import read_manifest, validate_manifest
from emomatch.corpora.ami import WINDOWS_FILE, place_window, prepare_ami
from emomatch.corpora.base import CORPORA
from emomatch.errors import ConfigError, DataError
from tests.support.ami_fixtures import AmiTree, make_ami_tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> AmiTree:
    return make_ami_tree(tmp_path_factory.mktemp("ami") / "AMI", seed=3)


def manifest(result_path: Path) -> pd.DataFrame:
    return read_manifest(result_path)


def test_windows_are_centred_on_the_middle_of_three_consecutive_words(
    tree: AmiTree, tmp_path: Path
) -> None:
    width = 3.5
    result = prepare_ami(tree.root, tmp_path, windows=40, width=width, seed=1)
    df = manifest(result.manifest)
    assert len(df) == result.rows == 40
    for row in df.itertuples():
        words = tree.agents[row.meeting][row.agent].words
        # the middle word of a triple has a word before and after it in the speaker's words
        middles = [(w.start + w.end) / 2 for w in words[1:-1]]
        centre = min(middles, key=lambda c: abs(c - float(row.centre)))
        assert abs(centre - float(row.centre)) < 1e-3
        assert row.end - row.start == pytest.approx(width, abs=1e-3)
        assert row.start == pytest.approx(max(0.0, centre - width / 2), abs=1e-3)
        if centre >= width / 2:
            assert (row.start + row.end) / 2 == pytest.approx(centre, abs=1e-3)
        assert row.id == f"{row.meeting}_{row.agent}_{round(row.start * 1000)}"


def test_text_is_the_speakers_words_inside_the_window(tree: AmiTree, tmp_path: Path) -> None:
    df = manifest(prepare_ami(tree.root, tmp_path, windows=40, width=3.5, seed=2).manifest)
    for row in df.itertuples():
        words = tree.agents[row.meeting][row.agent].words
        inside = [w.text for w in words if row.start <= (w.start + w.end) / 2 < row.end]
        assert row.text == " ".join(inside)
        tokens = row.text.split()
        assert len(tokens) >= 3
        # punctuation tokens, vocal sounds and the untimed "uh" never reach the text
        assert "." not in tokens and "uh" not in tokens and "laugh" not in tokens


def test_left_out_elements_are_counted(tree: AmiTree, tmp_path: Path) -> None:
    result = prepare_ami(tree.root, tmp_path, windows=5)
    left_out = result.counts["left_out_elements"]
    assert left_out["punctuation"] > 0 and left_out["vocalsound"] > 0
    assert left_out["disfmarker"] > 0 and left_out["untimed word"] > 0
    truth_words = sum(len(a.words) for m in tree.agents.values() for a in m.values())
    assert result.counts["words"] == truth_words


def test_sampling_is_seeded(tree: AmiTree, tmp_path: Path) -> None:
    a = prepare_ami(tree.root, tmp_path / "a", windows=25, seed=5)
    b = prepare_ami(tree.root, tmp_path / "b", windows=25, seed=5)
    c = prepare_ami(tree.root, tmp_path / "c", windows=25, seed=6)
    assert a.manifest.read_text() == b.manifest.read_text()
    ids_a, ids_c = set(manifest(a.manifest)["id"]), set(manifest(c.manifest)["id"])
    assert ids_a != ids_c


def test_no_duplicate_windows_when_asking_for_more_than_exist(
    tree: AmiTree, tmp_path: Path
) -> None:
    # wider than the meeting: every window of a speaker clamps to start 0, so one per speaker
    result = prepare_ami(tree.root, tmp_path, windows=500, width=30.0)
    df = manifest(result.manifest)
    assert df["id"].is_unique
    assert len(df) == 8 and set(df["start"]) == {0.0}
    assert result.counts["windows_sampled"] == 8
    assert any("only 8 distinct windows" in p for p in result.problems)


def test_many_windows_are_distinct(tree: AmiTree, tmp_path: Path) -> None:
    width = 2.0
    # triples whose windows clamp to the same start near 0 are one window
    distinct = {
        (meeting, agent, round(max(0.0, (w.start + w.end) / 2 - width / 2), 3))
        for meeting, agents in tree.agents.items()
        for agent, truth in agents.items()
        for w in truth.words[1:-1]
    }
    result = prepare_ami(tree.root, tmp_path, windows=10_000, width=width)
    df = manifest(result.manifest)
    assert df["id"].is_unique
    assert not df.duplicated(["meeting", "agent", "start"]).any()
    assert len(df) == len(distinct)
    assert set(zip(df["meeting"], df["agent"], df["start"].round(3), strict=True)) == distinct


def _wav_peak(path: Path) -> float:
    with wave.open(str(path)) as fh:
        pcm = np.frombuffer(fh.readframes(fh.getnframes()), dtype="<i2")
    return float(np.abs(pcm).max()) / 32767


def _first_frame_gray(path: Path) -> float:
    import av

    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return float(frame.to_ndarray(format="gray").mean())


def test_channel_and_camera_mapping(tree: AmiTree, tmp_path: Path) -> None:
    df = manifest(prepare_ami(tree.root, tmp_path, windows=60, width=3.5).manifest)
    assert set(df["agent"]) == {"A", "B", "C", "D"}
    for row in df.drop_duplicates(["meeting", "agent"]).itertuples():
        truth = tree.agents[row.meeting][row.agent]
        assert Path(row.audio) == tree.headset(row.meeting, row.agent)
        assert row.audio.endswith(f"{row.meeting}.Headset-{truth.channel}.wav")
        assert row.speaker == truth.participant
        # the file's content, not just its name, belongs to this agent
        assert _wav_peak(Path(row.audio)) == pytest.approx(truth.amplitude, abs=0.01)
        # default close-ups: A->1, B->2, C->3, D->4
        camera = "ABCD".index(row.agent) + 1
        assert row.video.endswith(f"{row.meeting}.Closeup{camera}.avi")
        assert _first_frame_gray(Path(row.video)) == pytest.approx(truth.gray, abs=6)


def test_camera_map_option_overrides_the_default(tree: AmiTree, tmp_path: Path) -> None:
    result = prepare_ami(tree.root, tmp_path, windows=60, camera_map="A=4, B=Closeup3")
    df = manifest(result.manifest)
    cameras = dict(zip(df["agent"], df["video"].str.extract(r"Closeup(\d)\.avi$")[0], strict=True))
    assert cameras == {"A": "4", "B": "3", "C": "3", "D": "4"}
    assert result.counts["camera_source"] == {"camera_map option": 4, "default A-D -> 1-4": 4}
    with pytest.raises(ConfigError, match="camera_map"):
        prepare_ami(tree.root, tmp_path, camera_map="A:4")
    with pytest.raises(ConfigError, match="camera 'left' of agent 'A'"):
        prepare_ami(tree.root, tmp_path, camera_map={"A": "left"})


def test_camera_named_in_meetings_xml_is_used(tmp_path: Path) -> None:
    tree = make_ami_tree(tmp_path / "AMI", meetings=("TS3003c",), camera_attribute=True)
    df = manifest(prepare_ami(tree.root, tmp_path / "out", windows=40).manifest)
    for row in df.drop_duplicates("agent").itertuples():
        truth = tree.agents["TS3003c"][row.agent]
        assert Path(row.video) == tree.closeup("TS3003c", truth.camera)
        assert _first_frame_gray(Path(row.video)) == pytest.approx(truth.gray, abs=6)


def test_malformed_words_xml_is_reported_and_the_rest_goes_on(tmp_path: Path) -> None:
    tree = make_ami_tree(tmp_path / "AMI", meetings=("ES2002a",))
    broken = tree.words_file("ES2002a", "C")
    broken.write_text(broken.read_text(encoding="iso-8859-1")[:300], encoding="iso-8859-1")
    result = prepare_ami(tree.root, tmp_path / "out", windows=30)
    df = manifest(result.manifest)
    assert "C" not in set(df["agent"]) and set(df["agent"]) == {"A", "B", "D"}
    assert any("ES2002a.C.words.xml" in p and "malformed XML" in p for p in result.problems)
    assert result.counts["speakers"] == 3


def test_missing_media_is_reported_and_its_windows_skipped(tmp_path: Path) -> None:
    tree = make_ami_tree(tmp_path / "AMI", meetings=("ES2002a",))
    tree.headset("ES2002a", "B").unlink()
    result = prepare_ami(tree.root, tmp_path / "out", windows=40)
    windows = read_manifest(tmp_path / "out" / WINDOWS_FILE)
    lost = int((windows["agent"] == "B").sum())
    assert lost > 0
    df = manifest(result.manifest)
    assert "B" not in set(df["agent"])
    assert len(df) == len(windows) - lost == result.rows
    assert result.counts["skipped_missing_audio"] == lost
    name = tree.headset("ES2002a", "B").name
    assert any(name in p and f"{lost} window(s) skipped" in p for p in result.problems)
    assert validate_manifest(df) == []


def test_optional_media_missing_keeps_the_window(tmp_path: Path) -> None:
    tree = make_ami_tree(tmp_path / "AMI", meetings=("ES2002a",))
    tree.closeup("ES2002a", 2).unlink()
    result = prepare_ami(tree.root, tmp_path / "out", windows=40, require="audio")
    df = manifest(result.manifest)
    assert set(df["agent"]) == {"A", "B", "C", "D"}
    assert (df.loc[df["agent"] == "B", "video"] == "").all()
    assert (df.loc[df["agent"] != "B", "video"] != "").all()
    assert result.counts["missing_video"] == int((df["agent"] == "B").sum())


def test_window_manifest_is_written_before_media_is_looked_at(
    tree: AmiTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import emomatch.corpora.ami as ami

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ami, "_drop_missing_media", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_ami(tree.root, tmp_path, windows=20)
    windows = read_manifest(tmp_path / WINDOWS_FILE)
    assert len(windows) == 20
    assert validate_manifest(windows, check_files=False) == []


def test_manifest_validates_and_is_unlabeled(tree: AmiTree, tmp_path: Path) -> None:
    result = prepare_ami(tree.root, tmp_path, windows=30, folds=5)
    df = manifest(result.manifest)
    assert validate_manifest(df, classes=[]) == []
    assert result.classes == []
    assert (df["label"] == "").all() and (df["split"] == "unlabeled").all()
    for k in range(1, 6):
        assert (df[f"fold_{k}"] == "unlabeled").all()
    assert "fold_6" not in df.columns
    assert (df["start"] >= 0).all() and (df["end"] > df["start"]).all()


def test_meeting_subset(tree: AmiTree, tmp_path: Path) -> None:
    result = prepare_ami(tree.root, tmp_path, windows=20, meetings="IS1000b")
    df = manifest(result.manifest)
    assert set(df["meeting"]) == {"IS1000b"} and len(df) == 20
    assert result.counts["meetings"] == 1
    with pytest.raises(DataError, match="no words files for ES9999z"):
        prepare_ami(tree.root, tmp_path, meetings=["IS1000b", "ES9999z"])


def test_bad_root_and_options_are_named(tree: AmiTree, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(DataError, match="not look like an AMI copy: words, corpusResources"):
        prepare_ami(tmp_path / "elsewhere", tmp_path / "out")
    with pytest.raises(ConfigError, match="unknown ami option.*windws"):
        prepare_ami(tree.root, tmp_path, windws=3)
    with pytest.raises(ConfigError, match="width"):
        prepare_ami(tree.root, tmp_path, width="-1")
    # a copy unpacked elsewhere: one layout option moves the words folder
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "corpusResources").symlink_to(tree.root / "corpusResources")
    (moved / "amicorpus").symlink_to(tree.root / "amicorpus")
    (moved / "annotations").mkdir()
    (moved / "annotations" / "words").symlink_to(tree.root / "words")
    result = prepare_ami(moved, tmp_path / "out2", windows=10, words_dir="annotations/words")
    assert result.rows == 10


def test_place_window_keeps_its_width_inside_the_meeting() -> None:
    assert place_window(10.0, 7.2) == (6.4, 13.6)
    assert place_window(1.0, 7.2) == (0.0, 7.2)
    assert place_window(99.0, 7.2, duration=100.0) == (92.8, 100.0)
    assert place_window(2.0, 7.2, duration=5.0) == (0.0, 7.2)


def test_registered_as_a_corpus() -> None:
    assert CORPORA.get("ami") is prepare_ami
