"""A miniature AMI copy in the release layout, with the truth the tests check the reader against.

Each agent's headset WAV is a tone whose amplitude and each close-up's frame brightness encode
the agent, so a test can tell from the media alone whether a window got the right channel and
camera. Channels are shuffled per meeting (so channel != agent order), as in the real corpus.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from emomatch.extract.mediawrite import write_video, write_wav

NITE = 'xmlns:nite="http://nite.sourceforge.net/"'
AGENTS = ("A", "B", "C", "D")
VOCABULARY = ("okay", "so", "we", "need", "a", "remote", "control", "that", "is", "cheap", "yeah")
RATE = 8000
FPS = 4


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    text: str


@dataclass
class AgentTruth:
    channel: int
    camera: int
    participant: str
    #: the timed, non-punctuation words, in time order
    words: list[Word]
    #: the tone amplitude of the headset WAV and gray level of the close-up
    amplitude: float
    gray: int


@dataclass
class AmiTree:
    root: Path
    seconds: float
    agents: dict[str, dict[str, AgentTruth]] = field(default_factory=dict)

    def headset(self, meeting: str, agent: str) -> Path:
        channel = self.agents[meeting][agent].channel
        return self.root / "amicorpus" / meeting / "audio" / f"{meeting}.Headset-{channel}.wav"

    def closeup(self, meeting: str, camera: int) -> Path:
        return self.root / "amicorpus" / meeting / "video" / f"{meeting}.Closeup{camera}.avi"

    def words_file(self, meeting: str, agent: str) -> Path:
        return self.root / "words" / f"{meeting}.{agent}.words.xml"


def _words_xml(meeting: str, agent: str, rng: np.random.Generator, seconds: float) -> tuple:
    """Words of one agent, with punctuation, vocal sounds, disfluency markers and a word
    without times mixed in the way AMI has them."""
    words: list[Word] = []
    lines = [f'<?xml version="1.0" encoding="ISO-8859-1"?>\n<nite:root nite:id="x" {NITE}>']
    t = float(rng.uniform(0.2, 1.0))
    n = 0
    while t < seconds - 0.6:
        length = float(np.round(rng.uniform(0.15, 0.45), 2))
        start, end = round(t, 2), round(t + length, 2)
        text = str(rng.choice(VOCABULARY))
        nid = f"{meeting}.{agent}.words{n}"
        lines.append(f'<w nite:id="{nid}" starttime="{start}" endtime="{end}">{escape(text)}</w>')
        words.append(Word(start, end, text))
        n += 1
        kind = rng.random()
        if kind < 0.15:
            lines.append(f'<w nite:id="{nid}p" starttime="{end}" endtime="{end}" punc="true">.</w>')
        elif kind < 0.25:
            lines.append(
                f'<vocalsound nite:id="{nid}v" starttime="{end}" endtime="{end + 0.3:.2f}" '
                'type="laugh"/>'
            )
        elif kind < 0.32:
            lines.append(f'<disfmarker nite:id="{nid}d" starttime="{end}" endtime="{end}"/>')
        elif kind < 0.36:
            # AMI has a few words whose times are missing: not usable for a window.
            lines.append(f'<w nite:id="{nid}u">uh</w>')
        t = end + float(rng.uniform(0.05, 0.8))
    lines.append("</nite:root>\n")
    return "\n".join(lines), words


def make_ami_tree(
    root: Path,
    meetings: Sequence[str] = ("ES2002a", "IS1000b"),
    seed: int = 0,
    seconds: float = 12.0,
    agents: Sequence[str] = AGENTS,
    camera_attribute: bool = False,
    size: int = 16,
) -> AmiTree:
    """Write ``corpusResources/meetings.xml``, ``words/<m>.<agent>.words.xml`` and, per
    agent, ``amicorpus/<m>/audio/<m>.Headset-<channel>.wav`` and
    ``amicorpus/<m>/video/<m>.Closeup<camera>.avi`` (``seconds`` long, ``size`` px frames).
    Cameras follow A->1, B->2, ...; with ``camera_attribute`` meetings.xml names them (as
    ``Closeup<k>``) and they are reversed instead, so a reader using the default is caught."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    tree = AmiTree(root, seconds)
    people = iter(f"{'FM'[i % 2]}EE{100 + i:03d}" for i in range(len(meetings) * len(agents)))
    meeting_xml = [f'<?xml version="1.0" encoding="ISO-8859-1"?>\n<nite:root {NITE}>']
    for m_index, meeting in enumerate(meetings):
        channels = rng.permutation(len(agents))
        meeting_xml.append(
            f'<meeting nite:id="meet_{m_index}" observation="{meeting}" type="scenario">'
        )
        tree.agents[meeting] = {}
        for a_index, agent in enumerate(agents):
            camera = len(agents) - a_index if camera_attribute else a_index + 1
            participant = next(people)
            text, words = _words_xml(meeting, agent, rng, seconds)
            truth = AgentTruth(
                channel=int(channels[a_index]),
                camera=camera,
                participant=participant,
                words=words,
                amplitude=0.1 * (a_index + 1),
                gray=40 + 50 * a_index,
            )
            tree.agents[meeting][agent] = truth
            camera_xml = f' camera="Closeup{camera}"' if camera_attribute else ""
            meeting_xml.append(
                f'<speaker nite:id="{meeting}.sp{a_index}" nxt_agent="{agent}" '
                f'channel="{truth.channel}" global_name="{participant}"{camera_xml} role="PM"/>'
            )
            path = tree.words_file(meeting, agent)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="iso-8859-1")
            t = np.arange(int(seconds * RATE)) / RATE
            write_wav(
                tree.headset(meeting, agent), truth.amplitude * np.sin(2 * np.pi * 200 * t), RATE
            )
            frames = np.full((int(seconds * FPS), size, size), truth.gray, dtype=np.uint8)
            write_video(tree.closeup(meeting, camera), frames, fps=FPS)
        meeting_xml.append("</meeting>")
    meeting_xml.append("</nite:root>\n")
    meetings_path = root / "corpusResources" / "meetings.xml"
    meetings_path.parent.mkdir(parents=True, exist_ok=True)
    meetings_path.write_text("\n".join(meeting_xml), encoding="iso-8859-1")
    return tree
