"""Training beside another job: one run alone, then two of the same at once.

    .venv/bin/python bench/train_contention.py [--work runs/bench_contention] [--epochs 6]
                                               [--wait-policy PASSIVE|ACTIVE]

Writes a synthetic feature store (``emomatch synth``), then times ``emomatch train`` of the same
config as a subprocess: once alone, then twice at the same moment. Each run uses its default
thread count (the CPUs this process may use; ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` are
removed from the children's environment) and OpenMP's passive waiting, as a user's would.
Prints ``key: value`` lines; ``contention_slowdown`` is the mean time of one of the two
concurrent runs over the time alone (2.0 = the cores are shared fairly, nothing lost to
spinning; torch's defaults gave 5-15x). The machine's load average is printed before each phase:
other work on the machine makes every figure larger.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from emomatch.threads import available_cpus

CONFIG = """\
seed: 0
data:
  store: store
model:
  latent_dim: 64
  acoustic_hidden: [256, 128]
  lexical_hidden: [256]
  feedforward_dim: 256
  classifier_hidden: [64]
train:
  batch_size: 64
  unlabeled_batch_size: 64
  max_epochs: {epochs}
  progress_bar: false
  accelerator: cpu
  devices: 1
"""


def emomatch() -> list[str]:
    return [sys.executable, "-c", "from emomatch.cli import app; app()"]


#: ``--wait-policy ACTIVE`` gives the children OpenMP's spinning waits instead (emomatch only
#: sets PASSIVE where the environment says nothing): the comparison the figure is about
WAIT_POLICY: dict[str, str] = {}


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONWARNINGS"] = "ignore"
    env.update(WAIT_POLICY)
    return env


def start(config: Path, out: Path) -> subprocess.Popen[bytes]:
    shutil.rmtree(out, ignore_errors=True)
    return subprocess.Popen(
        [*emomatch(), "train", str(config), "--out", str(out)],
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait(proc: subprocess.Popen[bytes], t0: float) -> float:
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"emomatch train failed:\n{err.decode(errors='replace')[-2000:]}")
    return time.perf_counter() - t0


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/bench_contention"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--wait-policy", choices=["PASSIVE", "ACTIVE"], default="PASSIVE")
    args = parser.parse_args()
    if args.wait_policy == "ACTIVE":
        WAIT_POLICY.update(OMP_WAIT_POLICY="ACTIVE", KMP_BLOCKTIME="200")
    print(f"openmp_wait_policy: {args.wait_policy}")
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "store" / "store.json").is_file():
        subprocess.run(
            [*emomatch(), "synth", str(work / "store"), "--n-unlabeled", "800"],
            check=True,
            env=child_env(),
            stdout=subprocess.DEVNULL,
        )
    config = work / "config.yaml"
    config.write_text(CONFIG.format(epochs=args.epochs))
    print(f"cpus_available: {available_cpus()}")
    print(f"load_before_alone: {load()}")
    t0 = time.perf_counter()
    alone = wait(start(config, work / "alone"), t0)
    print(f"alone_s: {alone:.1f}")
    print(f"load_before_concurrent: {load()}")
    t0 = time.perf_counter()
    procs = [start(config, work / f"concurrent_{i}") for i in range(2)]
    both = [wait(p, t0) for p in procs]
    print(f"concurrent_s: {both[0]:.1f} {both[1]:.1f}")
    print(f"load_after: {load()}")
    print(f"contention_slowdown: {sum(both) / len(both) / alone:.2f}")


if __name__ == "__main__":
    main()
