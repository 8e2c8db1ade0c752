"""The ``attnviz`` command line (typer + rich). Heavy imports happen inside commands."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from attnviz.pipeline.store.meta import RunMeta

from attnviz.pipeline.precompute.options import PrecomputeOptions, parse_capture

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="attnviz: precompute, store, compare and explore Transformer attention.")
err = Console(stderr=True)
out = Console()

def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's to fix: printed as one line, exit code 2, no traceback."""
    from attnviz.pipeline.models.info import ModelInfoError
    from attnviz.pipeline.precompute.inputs import InputError
    from attnviz.pipeline.store import StoreError

    errors: list[type[BaseException]] = [InputError, ModelInfoError, StoreError]
    if "attnviz.pipeline.models.loading" in sys.modules:
        from attnviz.pipeline.models.loading import ModelLoadError

        errors.append(ModelLoadError)
    return tuple(errors)


def fail(message: str, code: int = 2) -> None:
    """Print one red error line and exit."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


class _ProgressBar:
    """A rich progress bar (examples/s, ETA) that appears only once the work starts (after validation)."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.bar: Any = None  # a rich Progress once started
        self.task: Any = None
        self.t0 = 0.0
        self.base = 0

    def start(self, done: int, total: int) -> None:
        import time

        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                            TimeRemainingColumn(), console=err)
        self.bar.start()
        self.task = self.bar.add_task(self.description, total=total, completed=done, rate="")
        self.t0, self.base = time.perf_counter(), done

    def progress(self, done: int, total: int) -> None:
        import time

        if self.bar is None:
            self.start(0, total)
        dt = time.perf_counter() - self.t0
        rate = (done - self.base) / dt if dt > 0 else 0.0
        self.bar.update(self.task, completed=done, total=total, rate=f"{rate:.1f} ex/s")

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


#: Defaults of the precompute flags: those of the options object (one set for the command line and the API).
_D = PrecomputeOptions.default


@app.command()
def precompute(
    model: str = typer.Option(_D("model"), help="model_info name (see 'attnviz models')"),
    input: str = typer.Option(..., "--input", "-i",
                              help="sentence file (.txt, .tsv pairs, .jsonl) or random:length=N,count=N,seed=N "
                                   "(,repeat=2: each sequence repeated twice)"),
    store: Path = typer.Option(..., help="store file, e.g. data/stores/demo.h5 (created if missing)"),
    run: str | None = typer.Option(_D("run"), help="run name (default: <model>--<input name>)"),
    limit: int | None = typer.Option(_D("limit"), help="only the first N examples"),
    batch_size: int = typer.Option(_D("batch_size"), help="examples per forward pass"),
    max_length: int | None = typer.Option(_D("max_length"), help="truncate inputs to this many tokens (flagged)"),
    long_inputs: str = typer.Option(
        _D("long_inputs").spec(), help="inputs longer than the model accepts: 'truncate' (flagged) or "
                                       "'window[:STRIDE]': overlapping windows of the model's length, every STRIDE "
                                       "tokens (default: half a window), stored as linked examples"),
    capture: str = typer.Option(",".join(_D("capture")), help="comma list of attention,qkv,hidden,embeddings,norms "
                                "(norms: value-weighted ‖α·f(x)‖)"),
    dtype: str = typer.Option(_D("dtype"), help="stored tensor dtype: float16 or float32"),
    mantissa_bits: int | None = typer.Option(
        _D("mantissa_bits"),
        help="round stored attention weights to N mantissa bits (float16 has 10): smaller files, relative "
             "error <= 2^-(N+1), e.g. 5 -> 1.6%; metrics are computed before rounding. Default: every bit"),
    threads: int | None = typer.Option(_D("threads"), help="torch threads (default: torch's choice)"),
    set_: list[str] = typer.Option([], "--set", help="config override key=value, e.g. --set n_layer=4"),
    shard_size: int = typer.Option(_D("shard_size"), help="examples per shard file (unit of commit and resume)"),
    workers: int | None = typer.Option(_D("workers"), help="run on a dask LocalCluster with N worker processes"),
    scheduler: str | None = typer.Option(_D("scheduler"), help="address of an existing dask scheduler"),
    attention: str = typer.Option(
        _D("attention"), help="which examples keep raw attention, Q/K/V, hidden states and embeddings: all, none, "
                              "first:N, every:K or sample:N[,seed=S]; metrics and tokens are stored for every one"),
    device: str = typer.Option(_D("device"), help="where the model runs: auto (a GPU if there is one), cpu, cuda, "
                                                  "cuda:N or mps"),
    model_dtype: str = typer.Option(_D("model_dtype"), help="dtype the model runs in: float32, float16 or bfloat16 "
                                                            "(metrics are computed from its attention in float32)"),
    analyze: bool = typer.Option(_D("analyze"), help="after the last shard, cache head similarity and relative "
                                                     "positions (what 'attnviz analyze' does) unless up to date"),
) -> None:
    """Run a model over sentences and write attention, captures and per-head metrics to an HDF5 store."""
    from attnviz.pipeline.models.info import parse_overrides
    from attnviz.pipeline.precompute.windows import parse_long_inputs

    bar = _ProgressBar(f"precompute {model}")
    try:
        options = PrecomputeOptions(
            model=model, input=input, store=store, run=run, limit=limit, batch_size=batch_size,
            max_length=max_length, capture=parse_capture(capture), dtype=dtype, mantissa_bits=mantissa_bits,
            threads=threads, overrides=parse_overrides(set_), shard_size=shard_size, workers=workers,
            scheduler=scheduler, long_inputs=parse_long_inputs(long_inputs), analyze=analyze, attention=attention,
            device=device, model_dtype=model_dtype)
        if options.distributed:
            from attnviz.pipeline.precompute.distributed import precompute_distributed

            summary = precompute_distributed(options, progress=bar.progress, on_start=bar.start, say=err.print)
        else:
            from attnviz.pipeline.precompute.local import precompute as run_precompute

            summary = run_precompute(options, progress=bar.progress, on_start=bar.start)
    except _user_errors() as exc:
        bar.stop()
        fail(str(exc))
    finally:
        bar.stop()
    out.print(summary.line(), highlight=False, soft_wrap=True)
    out.print(f"inspect it: attnviz inspect --store {store}", highlight=False, soft_wrap=True)


def _dtype_label(meta: RunMeta) -> str:
    bits = meta.mantissa_bits
    model = f", model {meta.model_dtype}" if meta.model_dtype else ""
    return meta.dtype + (f" ({bits}-bit mantissa)" if bits else "") + model


def _kept_label(meta: RunMeta, kept: int, examples: int) -> str:
    """What a run kept of the raw tensors: its ``--attention`` policy and how many examples have them."""
    return f"{meta.attention or 'all'}: {kept} of {examples}"


@app.command()
def models() -> None:
    """List the models described in model_info/."""
    from rich.table import Table

    from attnviz.pipeline.models.info import known_models, load_model_info_file

    table = Table("name", "family", "weights", "tasks", "description")
    for name, path in known_models().items():
        try:
            info = load_model_info_file(path)
        except _user_errors() as exc:
            table.add_row(name, "-", "-", "-", f"[red]{exc}[/]")
            continue
        table.add_row(name, info.family, "random" if info.random_weights else info.source.kind,
                      ",".join(info.tasks), info.description)
    out.print(table)


@app.command()
def inspect(store: Path = typer.Option(..., help="store file")) -> None:
    """Summarise a store: runs, models, examples, shapes, captures."""
    from rich.table import Table

    from attnviz.pipeline.store import StoreReader, store_size
    from attnviz.pipeline.store.meta import run_meta

    try:
        reader = StoreReader(store)
    except _user_errors() as exc:
        fail(str(exc))
    table = Table("run", "model", "weights", "examples", "kinds (layers x heads)", "capture", "raw attention",
                  "dtype", "created")
    for name in reader.runs():
        info = reader.run_info(name)
        try:
            m = run_meta(info.meta)
        except _user_errors() as exc:
            fail(str(exc))
        shapes = ", ".join(f"{k} {layers}x{heads}" for k, (layers, heads) in m.shape.items())
        planned = m.planned_examples
        count = f"{info.num_examples}" + (f"/{planned}" if planned and planned != info.num_examples else "")
        try:
            kept = _kept_label(m, int(reader.kept_examples(name).size), info.num_examples)
        except _user_errors() as exc:
            fail(str(exc))
        table.add_row(name, m.model or "?", "random" if m.random_weights else "trained", count,
                      shapes, ",".join(m.capture), kept, _dtype_label(m), m.created or "?")
    out.print(table)
    out.print(f"{store}: {store_size(store) / 1e6:.1f} MB on disk")


@app.command()
def verify(store: Path = typer.Option(..., help="store file"),
           repair: bool = typer.Option(False, help="drop damaged and overlapping shards (a rerun recomputes them) "
                                                   "and runs without any shard")) -> None:
    """Read every shard of a store; report damaged shards, examples listed twice and runs without a shard."""
    from attnviz.pipeline.store import verify_store

    try:
        check = verify_store(store, repair=repair)
    except _user_errors() as exc:
        fail(str(exc))
    for line in check.problems:
        err.print(f"[red]damaged:[/] {line}", highlight=False, soft_wrap=True)
    for line in check.incomplete:
        err.print(f"[yellow]incomplete:[/] {line}", highlight=False, soft_wrap=True)
    if check.problems and not repair:
        fail(f"{len(check.problems)} problem(s): run 'attnviz verify --store {store} --repair', then rerun the "
             "precompute to recompute what was dropped", code=1)
    verdict = ("repaired, rerun the precompute to recompute what was dropped" if check.problems
               else "all shards readable, every example listed once")
    out.print(f"{store}: {verdict}", highlight=False, soft_wrap=True)


@app.command()
def serve(
    store: Path = typer.Option(..., help="store file to serve"),
    host: str = typer.Option("127.0.0.1", help="address to bind; another than loopback needs users "
                                               "(ATTNVIZ_AUTH_FILE or ATTNVIZ_USERS) or --no-auth"),
    port: int = typer.Option(8050, help="port"),
    data_dir: Path | None = typer.Option(None, "--data-dir",
                                         help="folder of the stores a page may open with ?store=NAME "
                                              "(default: the store's folder); nothing outside it is served"),
    debug: bool = typer.Option(False, help="Dash debug mode (loopback only: its debugger runs code)"),
    no_auth: bool = typer.Option(False, "--no-auth", help="serve a non-loopback address without a password "
                                                          "(prints a warning)"),
) -> None:
    """Serve the dashboard for a store (http://HOST:PORT/). Users come from the environment, never from here."""
    from attnviz.dashboard.security import SecurityError
    from attnviz.dashboard.serve import serve as run_server

    refused: tuple[type[BaseException], ...] = (*_user_errors(), SecurityError)
    try:
        run_server(store, host=host, port=port, debug=debug, no_auth=no_auth, say=err.print, data_dir=data_dir)
    except refused as exc:
        fail(str(exc))


@app.command()
def analyze(
    store: Path = typer.Option(..., help="store file"),
    run: str = typer.Option(..., help="run to analyze"),
    max_offset: int = typer.Option(16, help="relative-position profile covers offsets -K..K"),
    similarity_examples: int = typer.Option(1000, help="average head similarity over the first N examples "
                                                       "(0: all)"),
    workers: int | None = typer.Option(None, help="dask LocalCluster worker processes (0: in this process)"),
    scheduler: str | None = typer.Option(None, help="address of an existing dask scheduler"),
    neighbours_layer: int | None = typer.Option(None, help="token neighbours: index the hidden states of this "
                                                           "layer (0: embeddings; default: the last layer)"),
    neighbours_backend: str = typer.Option("auto", help="token neighbours: auto (faiss above 200k tokens when "
                                                        "installed), exact or faiss"),
    qk_projection: str = typer.Option("pca", help="query–key space: pca, or umap (needs umap-learn)"),
) -> None:
    """Scan a run's raw attention once; cache head similarity and relative-position profiles in the store.

    precompute does this after its last shard; this command is for stores made before, or other parameters."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from attnviz.pipeline.precompute.analyze import analyze as run_analyze

    try:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("shards"), TimeElapsedColumn(), console=err) as bar:
            task = bar.add_task(f"analyze {run}", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            summary = run_analyze(store, run, max_offset=max_offset, similarity_examples=similarity_examples,
                                  workers=workers, scheduler=scheduler, progress=progress,
                                  neighbours_layer=neighbours_layer, neighbours_backend=neighbours_backend,
                                  qk_method=qk_projection)
    except _user_errors() as exc:
        fail(str(exc))
    out.print(summary.line(), highlight=False, soft_wrap=True)


@app.command("train-demo")
def train_demo(
    store: Path = typer.Option(..., help="store file the training series are recorded into (created if missing)"),
    out_dir: Path = typer.Option(Path("data/models/train-demo"), "--out",
                                 help="folder of the trained model and its checkpoints "
                                                                 "(the model_info entry 'train-demo' reads "
                                                                 "data/models/train-demo/model)"),
    steps: int = typer.Option(1200, help="optimizer steps"),
    every: int = typer.Option(100, help="record the series every N steps"),
    threads: int | None = typer.Option(None, help="torch threads (default: torch's choice)"),
    force: bool = typer.Option(False, help="train again even if a finished model is there (restarts the series)"),
) -> None:
    """Train a small GPT-2 on the bundled corpora (CPU, a few minutes), recording its attention every N steps."""
    from attnviz.pipeline.training.demo import DemoSettings
    from attnviz.pipeline.training.demo import train_demo as run_train_demo

    try:
        settings = DemoSettings(steps=steps, every=every)
        summary = run_train_demo(store, out=out_dir, settings=settings, force=force, threads=threads,
                                 say=lambda text: err.print(text, highlight=False, soft_wrap=True))
    except _user_errors() as exc:
        fail(str(exc))
    out.print(summary.line(), highlight=False, soft_wrap=True)


@app.command()
def series(
    store: Path = typer.Option(..., help="store file"),
    name: str | None = typer.Option(None, "--series", help="series to report (default: list the series)"),
) -> None:
    """Report a training series: checkpoints, loss, when each head's pattern label changed, entropy collapse."""
    from attnviz.pipeline.series import series_report
    from attnviz.pipeline.store import StoreReader

    try:
        reader = StoreReader(store)
        text = series_report(reader, name)
    except _user_errors() as exc:
        fail(str(exc))
    out.print(text, highlight=False, soft_wrap=True)


def main() -> None:
    """Entry point for ``python -m attnviz.pipeline.cli``."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":
    main()
