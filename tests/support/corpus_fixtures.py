"""Miniature corpus trees in the release layouts (CORPORA.md), with tiny synthetic media.

Each builder returns a record of exactly what it wrote (utterances, labels, the defects it put
in), so tests compare a reader's output with the tree rather than with numbers typed by hand.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emomatch.extract.mediawrite import write_video, write_wav

IEMOCAP_TEST_CODES = ("neu", "hap", "exc", "ang", "sad", "fru", "xxx", "sur")
MELD_EMOTIONS = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
MELD_COLUMNS = (
    "Sr No.",
    "Utterance",
    "Speaker",
    "Emotion",
    "Sentiment",
    "Dialogue_ID",
    "Utterance_ID",
    "Season",
    "Episode",
    "StartTime",
    "EndTime",
)
_WORDS = ("oh", "no", "well", "really", "great", "wait", "what", "fine", "sorry", "okay", "yes")


@dataclass
class IemocapUtterance:
    id: str
    dialog: str
    session: int
    gender: str
    code: str
    start: float
    end: float
    text: str

    @property
    def speaker(self) -> str:
        return f"Ses{self.session:02d}{self.gender}"

    @property
    def lead(self) -> str:
        return self.dialog[5]


@dataclass
class IemocapTree:
    root: Path
    #: every well-formed annotated utterance (also those whose wav is missing)
    utterances: list[IemocapUtterance]
    missing_wav: list[str] = field(default_factory=list)
    empty_text: list[str] = field(default_factory=list)
    #: (file, 1-based line) of each damaged header line
    corrupt_lines: list[tuple[Path, int]] = field(default_factory=list)


def _sentence(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(_WORDS, size=int(rng.integers(2, 6))))


def _tone(seconds: float, rng: np.random.Generator, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return 0.3 * np.sin(2 * np.pi * rng.uniform(120, 300) * t) + 0.01 * rng.standard_normal(len(t))


def make_iemocap_tree(
    root: str | Path,
    sessions: tuple[int, ...] = (1, 2, 3, 4, 5),
    per_speaker: int = 4,
    seed: int = 0,
    media: bool = True,
    defects: bool = True,
) -> IemocapTree:
    """``root`` laid out like ``IEMOCAP_full_release``: per session an F-led improvisation and an
    M-led script, each with ``per_speaker`` turns per actor and a whole-dialog WAV. With
    ``defects``, session ``sessions[0]``'s first dialog has a missing wav, an empty
    transcription line and a damaged header line. Media: 0.4 s WAVs, dialog AVIs of 64x32 px
    at 5 fps (left half dark, right half bright, so a crop is visible)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    tree = IemocapTree(root=root, utterances=[])
    for session in sessions:
        s = f"Session{session}"
        evaluation = root / s / "dialog" / "EmoEvaluation"
        # The release has these next to the dialog files; the reader must not take them.
        (evaluation / "Categorical").mkdir(parents=True, exist_ok=True)
        (evaluation / "Categorical" / f"Ses{session:02d}F_impro01_e1_cat.txt").write_text(
            f"Ses{session:02d}F_impro01_F000 :Neutral state; ()\n"
        )
        (evaluation / f"._Ses{session:02d}F_impro01.txt").write_bytes(b"\x00\x05\x16\x07junk")
        # Each actor's turns over both dialogs take the codes in turn, shuffled, so every
        # speaker has every 4-class label once per_speaker >= 4.
        codes = {
            g: list(rng.permutation(np.resize(IEMOCAP_TEST_CODES, 2 * per_speaker))) for g in "FM"
        }
        for dialog in (f"Ses{session:02d}F_impro01", f"Ses{session:02d}M_script01_1"):
            first = defects and session == sessions[0] and dialog.endswith("impro01")
            header = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            transcript = []
            turns: list[IemocapUtterance] = []
            offset = 0 if dialog.endswith("impro01") else per_speaker
            for i in range(2 * per_speaker):
                gender = "FM"[i % 2]
                start = round(0.5 + 0.5 * i, 4)
                uid = f"{dialog}_{gender}{i // 2:03d}"
                turns.append(
                    IemocapUtterance(
                        id=uid,
                        dialog=dialog,
                        session=session,
                        gender=gender,
                        code=str(codes[gender][offset + i // 2]),
                        start=start,
                        end=round(start + 0.4, 4),
                        text=_sentence(rng),
                    )
                )
            if first:
                kept = [u for u in turns if u.code in ("neu", "hap", "exc", "ang", "sad")]
                kept[0].text = ""
                tree.empty_text.append(kept[0].id)
                tree.missing_wav.append(kept[1].id)
            for u in turns:
                vad = ", ".join(f"{v:.4f}" for v in rng.uniform(1, 5, size=3))
                header += [
                    f"[{u.start:.4f} - {u.end:.4f}]\t{u.id}\t{u.code}\t[{vad}]",
                    "C-E2:\tNeutral;\t()",
                    "C-F1:\tFrustration; Anger;\t(annoyed)",
                    "A-E3:\tval 3; act 2; dom  2;\t()",
                    "",
                ]
                transcript.append(f"{u.id} [{u.start:08.4f}-{u.end:08.4f}]: {u.text}".rstrip())
                # Turns nobody annotated (overlaps, laughter) appear in transcriptions only.
                transcript.append(f"{dialog}_{u.gender}XX{len(transcript)} [000.0000-000.1000]: ")
            if first:
                # A header line whose end time and label got lost.
                header += [f"[7.5000 - ]\t{dialog}_F099\t[2.0000, 2.0000, 2.0000]", ""]
                tree.corrupt_lines.append((evaluation / f"{dialog}.txt", len(header) - 1))
            (evaluation / f"{dialog}.txt").write_text("\n".join(header) + "\n")
            transcripts = root / s / "dialog" / "transcriptions"
            transcripts.mkdir(parents=True, exist_ok=True)
            (transcripts / f"{dialog}.txt").write_text("\n".join(transcript) + "\n")
            wav_dir = root / s / "sentences" / "wav" / dialog
            wav_dir.mkdir(parents=True, exist_ok=True)
            if media:
                for u in turns:
                    if u.id not in tree.missing_wav:
                        write_wav(wav_dir / f"{u.id}.wav", _tone(u.end - u.start, rng))
                seconds = turns[-1].end + 0.2
                write_wav(root / s / "dialog" / "wav" / f"{dialog}.wav", _tone(seconds, rng))
                frames = rng.integers(0, 60, size=(int(seconds * 5), 32, 64), dtype=np.uint8)
                frames[:, :, 32:] += 150
                write_video(root / s / "dialog" / "avi" / "DivX" / f"{dialog}.avi", frames, fps=5)
            else:
                for u in turns:
                    if u.id not in tree.missing_wav:
                        (wav_dir / f"{u.id}.wav").write_bytes(b"RIFF")
                for whole in (f"avi/DivX/{dialog}.avi", f"wav/{dialog}.wav"):
                    (root / s / "dialog" / whole).parent.mkdir(parents=True, exist_ok=True)
                    (root / s / "dialog" / whole).write_bytes(b"RIFF")
            tree.utterances += turns
    return tree


@dataclass
class MeldUtterance:
    split: str  # MELD's own name: train, dev, test
    dialogue: int
    utterance: int
    speaker: str
    emotion: str
    #: the text a reader should produce
    text: str
    #: the clip written (None if the tree has no clips)
    clip: Path | None = None

    @property
    def id(self) -> str:
        return f"{self.split}_dia{self.dialogue}_utt{self.utterance}"


@dataclass
class MeldTree:
    root: Path
    utterances: list[MeldUtterance]
    missing_clips: list[str] = field(default_factory=list)
    corrupt_clips: list[str] = field(default_factory=list)
    empty_clips: list[str] = field(default_factory=list)
    multiline: list[str] = field(default_factory=list)
    mojibake: list[str] = field(default_factory=list)


MELD_CLIP_FOLDERS = {
    "train": "train/train_splits",
    "dev": "dev/dev_splits_complete",
    "test": "test/output_repeated_splits_test",
}


def make_meld_tree(
    root: str | Path,
    splits: tuple[str, ...] = ("train", "dev", "test"),
    dialogues: int = 2,
    per_dialogue: int = 4,
    seed: int = 0,
    clips: bool = True,
    defects: bool = True,
) -> MeldTree:
    """``root`` laid out like ``MELD.Raw``: one ``<split>_sent_emo.csv`` per split (CRLF, UTF-8,
    curly quotes) and, with ``clips``, 0.4 s 32x32 MP4 clips with an AAC soundtrack. With
    ``defects``: a multi-line quoted utterance and two mis-encoded ones (C1 control character,
    double-encoded UTF-8) in the first split; the first split's ``dia1_utt2`` clip is missing,
    ``dia0_utt1`` is random bytes and the second split's ``dia0_utt0`` is empty."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    tree = MeldTree(root=root, utterances=[])
    number = 0
    for split_index, split in enumerate(splits):
        path = root / f"{split}_sent_emo.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\r\n")
            writer.writerow(MELD_COLUMNS)
            for d in range(dialogues):
                for u in range(per_dialogue):
                    number += 1
                    text = _sentence(rng).capitalize() + "."
                    written = text
                    if defects and split_index == 0 and (d, u) == (0, 0):
                        written = text = "Wait…\nyou don’t “know” that?"
                    if defects and split_index == 0 and (d, u) == (0, 2):
                        text = "It’s fine."
                        written = "It\u0092s fine."
                    if defects and split_index == 0 and (d, u) == (1, 0):
                        text = "I don’t care."
                        written = "I donâ€™t care."
                    item = MeldUtterance(
                        split=split,
                        dialogue=d,
                        utterance=u,
                        speaker=str(rng.choice(["Ross", "Rachel", "Joey", "Mrs. Geller"])),
                        emotion=MELD_EMOTIONS[(number + d) % len(MELD_EMOTIONS)],
                        text=" ".join(text.split()),
                    )
                    if written != text:
                        tree.mojibake.append(item.id)
                    if "\n" in written:
                        tree.multiline.append(item.id)
                    writer.writerow(
                        [
                            number,
                            written,
                            item.speaker,
                            item.emotion,
                            "neutral",
                            d,
                            u,
                            3,
                            7,
                            f"00:0{d}:{10 + u},059",
                            f"00:0{d}:{11 + u},731",
                        ]
                    )
                    tree.utterances.append(item)
        if not clips:
            continue
        folder = root / MELD_CLIP_FOLDERS[split]
        folder.mkdir(parents=True, exist_ok=True)
        for item in tree.utterances:
            if item.split != split:
                continue
            clip = folder / f"dia{item.dialogue}_utt{item.utterance}.mp4"
            item.clip = clip
            key = (item.dialogue, item.utterance)
            if defects and split_index == 0 and key == (1, 2):
                tree.missing_clips.append(item.id)
                continue
            if defects and split_index == 0 and key == (0, 1):
                clip.write_bytes(rng.integers(0, 256, size=4096, dtype=np.uint8).tobytes())
                tree.corrupt_clips.append(item.id)
                continue
            if defects and split_index == 1 and key == (0, 0):
                clip.write_bytes(b"")
                tree.empty_clips.append(item.id)
                continue
            frames = rng.integers(0, 255, size=(4, 32, 32), dtype=np.uint8)
            write_video(clip, frames, fps=10, audio=_tone(0.4, rng))
    return tree
