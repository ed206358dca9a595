"""The `taco` command. Thin: parse options, build configs, call one library function, print its result."""

from __future__ import annotations

import dataclasses
import json
import sys

import click

from taco.features.corpus import CorpusError
from taco.features.mel import NORMALIZATIONS, FeatureConfig
from taco.features.preprocess import DEFAULT_MAX_SECONDS, DEFAULT_SHARD_SIZE, preprocess
from taco.features.store import StoreError
from taco.features.summary import format_summary, summarize
from taco.features.text import CLEANERS, TextConfig
from taco.pipeline.checkpoint import CheckpointError
from taco.pipeline.presets import TRAINING_PRESETS, load_config
from taco.pipeline.train import TrainingError, train

# Errors that mean "this input cannot be used": one line to the user, never a traceback.
USER_ERRORS = (StoreError, CorpusError, CheckpointError, TrainingError, ValueError)
_defaults = FeatureConfig()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
def main():
    """taco: Tacotron2 text-to-speech, from corpus to audio.

    \b
    taco preprocess   corpus (LJSpeech layout) -> feature store
    taco store-info   what a feature store holds; --verify checks every shard
    taco train        feature store -> Tacotron2 checkpoints, logs and alignment plots
    """


@main.command("preprocess")
@click.argument("corpus_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("store_dir", type=click.Path(file_okay=False))
@click.option("--metadata", default="metadata.csv", help="Metadata file inside CORPUS_DIR: id|raw text|normalized text, or id|text.")
@click.option("--audio-dir", default="wavs", help="Audio folder inside CORPUS_DIR, holding ID.wav or ID.flac.")
@click.option("--train-metadata", default=None, help="Take the split from files: training metadata inside CORPUS_DIR (use with --val-metadata).")
@click.option("--val-metadata", default=None, help="Validation metadata inside CORPUS_DIR (use with --train-metadata).")
@click.option("--val-fraction", default=0.05, type=click.FloatRange(0, 1, max_open=True), help="Share of utterances held out for validation, drawn with --seed.")
@click.option("--val-count", default=None, type=click.IntRange(min=0), help="Hold out exactly this many utterances instead of --val-fraction.")
@click.option("--seed", default=1234, help="Seed of the train/validation draw.")
@click.option("--sample-rate", default=_defaults.sample_rate, help="Target sample rate; audio at other rates is resampled with soxr.")
@click.option("--n-fft", default=_defaults.n_fft, help="FFT size of the STFT, in samples.")
@click.option("--win-length", default=_defaults.win_length, help="Hann window length, in samples (at most --n-fft).")
@click.option("--hop-length", default=_defaults.hop_length, help="Samples between frames: one mel frame each.")
@click.option("--n-mels", default=_defaults.n_mels, help="Mel bands (Slaney scale and norm).")
@click.option("--f-min", default=_defaults.f_min, help="Lowest mel band edge, Hz.")
@click.option("--f-max", default=_defaults.f_max, help="Highest mel band edge, Hz (at most half the sample rate).")
@click.option("--normalization", default=_defaults.normalization, type=click.Choice(NORMALIZATIONS),
              help="db: the seed's [-4, 4] dB scale; log: natural log as NVIDIA/tacotron2 and HiFi-GAN (to use their vocoders).")
@click.option("--trim-db", default=None, type=click.FloatRange(min=0, min_open=True),
              help="Trim leading/trailing audio more than this many dB below the loudest frame (default: keep all).")
@click.option("--cleaners", default=TextConfig().cleaners, type=click.Choice(sorted(CLEANERS)), help="Text normalization.")
@click.option("--max-seconds", default=DEFAULT_MAX_SECONDS, type=click.FloatRange(min=0, min_open=True), help="Skip clips longer than this (after trimming).")
@click.option("--shard-size", default=DEFAULT_SHARD_SIZE, type=click.IntRange(min=1), help="Utterances per shard file (one joblib task each).")
@click.option("--jobs", "-j", default=-1, help="Parallel workers; -1 uses every core.")
@click.option("--backend", default="loky", help="joblib backend: loky, multiprocessing, threading, or dask (with --dask-scheduler).")
@click.option("--dask-scheduler", default=None, metavar="ADDRESS", help="Run the tasks on this Dask cluster (tcp://host:8786); implies --backend dask.")
@click.option("--overwrite", is_flag=True, help="Replace a store in STORE_DIR that was made with another configuration.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the store summary as JSON.")
def preprocess_command(corpus_dir, store_dir, metadata, audio_dir, train_metadata, val_metadata, val_fraction,
                       val_count, seed, sample_rate, n_fft, win_length, hop_length, n_mels, f_min, f_max,
                       normalization, trim_db, cleaners, max_seconds, shard_size, jobs, backend, dask_scheduler,
                       overwrite, quiet, as_json):
    """Turn the corpus in CORPUS_DIR (LJSpeech layout) into a feature store in STORE_DIR.

    Computes token IDs and normalized mel spectrograms once, in parallel, into HDF5 shards. Audio that is
    missing, empty, corrupt, silent or too long, and text with nothing to say, are skipped and listed in
    STORE_DIR/failures.tsv. Re-running the same command finishes an interrupted run and skips the shards
    already complete. Exits non-zero only if no utterance could be processed.

    On a Dask cluster: pip install 'taco[dask]', start a scheduler and workers that see CORPUS_DIR and
    STORE_DIR at the same paths (a shared file system), and pass --dask-scheduler tcp://HOST:8786.
    """
    try:
        features = FeatureConfig(sample_rate=sample_rate, n_fft=n_fft, win_length=win_length, hop_length=hop_length,
                                 n_mels=n_mels, f_min=f_min, f_max=f_max, normalization=normalization, trim_db=trim_db)
        text = TextConfig(cleaners=cleaners)
        if dask_scheduler:
            backend = "dask"
            _connect_dask(dask_scheduler)
        summary = preprocess(
            corpus_dir, store_dir, features, text, metadata=metadata, audio_dir=audio_dir,
            train_metadata=train_metadata, val_metadata=val_metadata, val_fraction=val_fraction,
            val_count=val_count, seed=seed, max_seconds=max_seconds, shard_size=shard_size, jobs=jobs,
            backend=backend, overwrite=overwrite, progress=not quiet,
        )
    except USER_ERRORS as error:
        raise click.ClickException(str(error)) from None
    except KeyboardInterrupt:
        click.echo("interrupted: the finished shards are kept; run the same command again to finish", err=True)
        sys.exit(130)
    click.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))
    if sum(summary["utterances"].values()) == 0:
        raise click.ClickException(f"no utterance could be processed; the reasons are in {store_dir}/failures.tsv")


def _connect_dask(address: str) -> None:
    try:
        from dask.distributed import Client  # noqa: PLC0415 (optional extra)
    except ImportError:
        raise click.ClickException("--dask-scheduler needs dask.distributed: pip install 'taco[dask]'") from None
    # joblib's dask backend runs tasks on the client created last
    Client(address)


@main.command("store-info")
@click.argument("store_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--verify", is_flag=True, help="Read every shard and check it against the index.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def store_info_command(store_dir, verify, as_json):
    """Show what the feature store in STORE_DIR holds: utterances and hours per split, frames, tokens,
    shards, skipped utterances by reason, the configs and the fingerprint."""
    try:
        summary = summarize(store_dir, verify=verify)
    except USER_ERRORS as error:
        raise click.ClickException(str(error)) from None
    click.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))
    if summary.get("problems"):
        sys.exit(1)


@main.command("train")
@click.argument("store_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--config", "config_spec", default=None,
              help=f"A preset ({', '.join(TRAINING_PRESETS)}; default tiny) or a JSON file: "
                   '{"preset": "tiny", "model": {...}, "training": {...}} overriding any field.')
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Stop after this many steps (default: the config's).")
@click.option("--batch-frames", type=click.IntRange(min=1), default=None, help="Padded mel frames per batch (default: the config's).")
@click.option("--resume", is_flag=True, help="Continue the run in RUN_DIR from its latest checkpoint, exactly where it stopped.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available). Under torchrun each rank takes its own GPU.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def train_command(store_dir, run_dir, config_spec, max_steps, batch_frames, resume, device, quiet):
    """Train Tacotron2 on the feature store in STORE_DIR, writing checkpoints, TensorBoard logs, alignment
    plots and Griffin-Lim samples into RUN_DIR.

    \b
    Multi-GPU (or multi-process on CPU, with gloo):
      torchrun --nproc_per_node 4 -m taco train STORE_DIR RUN_DIR --config base
    Ctrl-C (or SIGTERM) stops after the current step and writes a checkpoint; --resume continues.
    """
    try:
        if resume:
            if config_spec is not None or batch_frames is not None:
                raise click.UsageError("a resumed run keeps its configuration: drop --config and --batch-frames")
            configs = (None, None)
        else:
            model_config, train_config = load_config(config_spec or "tiny")
            if batch_frames:
                train_config = dataclasses.replace(train_config, batch_frames=batch_frames, batch_size=None)
            configs = (model_config, train_config)
        summary = train(store_dir, run_dir, *configs, resume=resume, max_steps=max_steps, device=device,
                        progress=not quiet)
    except USER_ERRORS as error:
        raise click.ClickException(str(error)) from None
    click.echo(json.dumps(summary, indent=2))
