"""A small manifest of synthetic WAV clips, with the bad items an extraction must survive."""

from __future__ import annotations

import numpy as np
import pandas as pd

from emomatch.corpora import write_manifest
from emomatch.extract.mediawrite import write_wav


def make_manifest(tmp_path, n: int = 12) -> pd.DataFrame:
    rows = []
    media = tmp_path / "media"
    for i in range(n):
        audio = f"media/u{i}.wav"
        write_wav(tmp_path / audio, 0.2 * np.sin(np.arange(1600 * (i + 1)) / 5.0))
        rows.append(
            {
                "id": f"u{i}",
                "audio": audio,
                "video": "",
                "text": f"word{i} and more words",
                "start": None,
                "end": None,
                "speaker": f"s{i % 3}",
                "label": ["ang", "neu"][i % 2],
                "split": "train" if i < 8 else "test",
                "fold_1": "train" if i % 3 else "test",
            }
        )
    df = pd.DataFrame(rows)
    # bad items: a missing file, a zero-length file, an empty transcript, a corrupt file
    df.loc[1, "audio"] = "media/nowhere.wav"
    (media / "empty.wav").write_bytes(b"")
    df.loc[2, "audio"] = "media/empty.wav"
    df.loc[3, "text"] = "   "
    (media / "garbage.wav").write_bytes(b"not a wav at all" * 10)
    df.loc[4, "audio"] = "media/garbage.wav"
    write_manifest(df, tmp_path / "manifest.csv")
    return df
