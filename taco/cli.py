"""The `taco` command. Thin: parse options, build configs, call one library function, print its result."""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
from pathlib import Path

import click

from taco.errors import describe_file, read_utf8
from taco.features.corpus import CorpusError
from taco.features.mel import FFT_DTYPES, NORMALIZATIONS, FeatureConfig
from taco.features.preprocess import (DEFAULT_AUDIO_DIR, DEFAULT_BACKEND, DEFAULT_MAX_SECONDS, DEFAULT_METADATA,
                                     DEFAULT_SHARD_SIZE, DEFAULT_SPLIT_SEED, DEFAULT_VAL_FRACTION, preprocess)
from taco.features.store import StoreError
from taco.features.summary import format_summary, summarize
from taco.features.text import CLEANERS, FRONT_END_TABLES, TextConfig
from taco.locking import LockError
from taco.pipeline.alignment import VERDICTS
from taco.pipeline.checkpoint import CheckpointError
from taco.pipeline.asr import RecognizerError, word_error_rate
from taco.pipeline.inspect import DEFAULT_WORST_PLOTTED, InspectError, inspect, report_columns, report_line
from taco.pipeline.presets import TRAINING_PRESETS, default_preset, load_config
from taco.pipeline.stored import SelectionError
from taco.pipeline.synth import (DEFAULT_POWER, SHORT_MEL_FRAMES, SynthConfig, SynthesisError, Synthesizer, check_output,
                                 write_log_mel, write_wav)
from taco.pipeline.train import TrainingError, train
from taco.pipeline.vocoder import GPU_BATCH_SIZE as VOCODE_GPU_BATCH_SIZE, Vocoder, VocoderError, vocode_files
from taco.progress import print_above_bars
from taco.signals import Interrupted, exit_status, interrupted_by_signals

# Errors that mean "this input cannot be used": one line to the user, never a traceback.
# OSError: the file system refused (read-only, full, a path below a file); str() names the file.
USER_ERRORS = (StoreError, CorpusError, CheckpointError, TrainingError, InspectError, SelectionError, RecognizerError,
               VocoderError, SynthesisError, LockError, ValueError, OSError)
_defaults = FeatureConfig()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
def main():
    """taco: Tacotron2 text-to-speech, from corpus to audio.

    \b
    taco preprocess   corpus (LJSpeech layout) -> feature store
    taco store-info   what a feature store holds; --verify checks every shard
    taco train        feature store -> Tacotron2 checkpoints, logs and alignment plots
    taco synth        checkpoint + text -> wav (Griffin-Lim, or a HiFi-GAN generator with --vocoder)
    taco vocode       saved log mels (.npy) + a HiFi-GAN generator -> wavs
    taco inspect-alignment  checkpoint + stored utterances or text -> alignment scores and plots
    """


@main.command("preprocess")
@click.argument("corpus_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("store_dir", type=click.Path(file_okay=False))
@click.option("--metadata", default=DEFAULT_METADATA, help="Metadata file inside CORPUS_DIR: id|raw text|normalized text, or id|text.")
@click.option("--audio-dir", default=DEFAULT_AUDIO_DIR, help="Audio folder inside CORPUS_DIR, holding ID.wav or ID.flac.")
@click.option("--train-metadata", default=None, help="Take the split from files: training metadata inside CORPUS_DIR (use with --val-metadata).")
@click.option("--val-metadata", default=None, help="Validation metadata inside CORPUS_DIR (use with --train-metadata).")
@click.option("--val-fraction", default=DEFAULT_VAL_FRACTION, type=click.FloatRange(0, 1, max_open=True), help="Share of utterances held out for validation, drawn with --seed.")
@click.option("--val-count", default=None, type=click.IntRange(min=0), help="Hold out exactly this many utterances instead of --val-fraction.")
@click.option("--seed", default=DEFAULT_SPLIT_SEED, help="Seed of the train/validation draw.")
@click.option("--sample-rate", default=_defaults.sample_rate, help="Target sample rate; audio at other rates is resampled with soxr.")
@click.option("--n-fft", default=_defaults.n_fft, help="FFT size of the STFT, in samples.")
@click.option("--win-length", default=_defaults.win_length, help="Hann window length, in samples (at most --n-fft).")
@click.option("--hop-length", default=_defaults.hop_length, help="Samples between frames: one mel frame each.")
@click.option("--n-mels", default=_defaults.n_mels, help="Mel bands (Slaney scale and norm).")
@click.option("--f-min", default=_defaults.f_min, help="Lowest mel band edge, Hz.")
@click.option("--f-max", default=_defaults.f_max, help="Highest mel band edge, Hz (at most half the sample rate).")
@click.option("--normalization", default=_defaults.normalization, type=click.Choice(NORMALIZATIONS),
              help="db: the seed's [-4, 4] dB scale; log: natural log as NVIDIA/tacotron2 and HiFi-GAN (to use their vocoders).")
@click.option("--fft-precision", default=_defaults.fft_precision, type=click.Choice(list(FFT_DTYPES)),
              help="Precision of the STFT. float32: as NVIDIA/tacotron2, HiFi-GAN and torchaudio, mels within 5e-4 of librosa's; float64: within 1e-4, and preprocessing takes about 1.5x as long.")
@click.option("--trim-db", default=None, type=click.FloatRange(min=0, min_open=True),
              help="Trim leading/trailing audio more than this many dB below the loudest frame (default: keep all).")
@click.option("--cleaners", default=TextConfig().cleaners, type=click.Choice(sorted(CLEANERS)), help="Text normalization.")
@click.option("--text", "front_end", default=TextConfig().front_end, type=click.Choice(list(FRONT_END_TABLES)),
              help="Text front end. characters: the cleaned text letter by letter. phonemes: each word's ARPAbet "
                   "pronunciation from CMUdict (first one, with stress); words it does not know are spelled out "
                   "letter by letter and listed in the summary; {HH AH0 L OW1} in a transcript forces a pronunciation.")
@click.option("--max-seconds", default=DEFAULT_MAX_SECONDS, type=click.FloatRange(min=0, min_open=True),
              help="Skip clips longer than this, known from the file's header without decoding it. With --trim-db: longer after trimming, and from the header only clips over twice this.")
@click.option("--shard-size", default=DEFAULT_SHARD_SIZE, type=click.IntRange(min=1), help="Utterances per shard file (one joblib task each).")
@click.option("--jobs", "-j", default=-1, help="Parallel workers; -1 uses every core.")
@click.option("--backend", default=DEFAULT_BACKEND, show_default=True,
              help="joblib backend: threading (the work runs in torch, numpy and libsndfile, which release the GIL), loky or multiprocessing (worker processes), or dask (with --dask-scheduler).")
@click.option("--dask-scheduler", default=None, metavar="ADDRESS", help="Run the tasks on this Dask cluster (tcp://host:8786); implies --backend dask.")
@click.option("--overwrite", is_flag=True, help="Replace a store in STORE_DIR that was made with another configuration.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the store summary as JSON.")
def preprocess_command(corpus_dir, store_dir, metadata, audio_dir, train_metadata, val_metadata, val_fraction,
                       val_count, seed, sample_rate, n_fft, win_length, hop_length, n_mels, f_min, f_max,
                       normalization, fft_precision, trim_db, cleaners, front_end, max_seconds, shard_size, jobs, backend,
                       dask_scheduler, overwrite, quiet, as_json):
    """Turn the corpus in CORPUS_DIR (LJSpeech layout) into a feature store in STORE_DIR.

    Computes token IDs and normalized mel spectrograms once, in parallel, into HDF5 shards. Audio that is
    missing, empty, corrupt, silent, too short or too long, text with nothing to say, and any other error
    in one utterance, are skipped and listed with the reason in STORE_DIR/failures.tsv. Re-running the
    same command finishes an interrupted run and skips the shards already complete. Exits non-zero only if
    no utterance could be processed, or with 130 (143) when Ctrl-C (SIGTERM) stopped it.

    On a Dask cluster: pip install 'taco[dask]', start a scheduler and workers that see CORPUS_DIR and
    STORE_DIR at the same paths (a shared file system), and pass --dask-scheduler tcp://HOST:8786.
    """
    try:
        features = FeatureConfig(sample_rate=sample_rate, n_fft=n_fft, win_length=win_length, hop_length=hop_length,
                                 n_mels=n_mels, f_min=f_min, f_max=f_max, normalization=normalization, trim_db=trim_db,
                                 fft_precision=fft_precision)
        text = TextConfig(cleaners=cleaners, front_end=front_end)
        if (train_metadata is None) != (val_metadata is None):
            raise click.UsageError("--train-metadata and --val-metadata go together")
        if dask_scheduler:
            backend = "dask"
        if backend == "dask":
            _connect_dask(dask_scheduler)
        with interrupted_by_signals():
            summary = preprocess(
                corpus_dir, store_dir, features, text, metadata=metadata, audio_dir=audio_dir,
                train_metadata=train_metadata, val_metadata=val_metadata, val_fraction=val_fraction,
                val_count=val_count, seed=seed, max_seconds=max_seconds, shard_size=shard_size, jobs=jobs,
                backend=backend, overwrite=overwrite, progress=not quiet,
            )
    except USER_ERRORS as error:
        raise click.ClickException(str(error)) from None
    except Interrupted as stop:
        click.echo(f"{stop}: the finished shards are kept; run the same command again to finish", err=True)
        sys.exit(exit_status(stop.signum))
    click.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))
    if sum(summary["utterances"].values()) == 0:
        raise click.ClickException(f"no utterance could be processed; the reasons are in {store_dir}/failures.tsv")


def _connect_dask(address: str | None) -> None:
    try:
        from dask.distributed import Client  # noqa: PLC0415 (optional extra)
    except ImportError:
        raise click.ClickException("the dask backend needs dask.distributed: pip install 'taco[dask]'") from None
    # joblib's dask backend runs tasks on the client created last
    if address:
        Client(address)


@main.command("store-info")
@click.argument("store_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--verify", is_flag=True, help="Read every shard and check it against the checksum recorded when it was written and against the index.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def store_info_command(store_dir, verify, as_json):
    """Show what the feature store in STORE_DIR holds: utterances and hours per split, frames, tokens,
    shards, skipped utterances by reason, the share of mel bins clipped at each end of the normalization,
    the configs and the fingerprint."""
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
              help=f"A preset ({', '.join(TRAINING_PRESETS)}) or a JSON file: "
                   '{"preset": "tiny", "model": {...}, "training": {...}} overriding any field. Default: base '
                   "(the paper's 28M parameters) on CUDA, tiny (1.9M, trains in minutes) on the CPU.")
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Stop after this many steps (default: the config's); the learning-rate schedule decays over them.")
@click.option("--stop-at", type=click.IntRange(min=1), default=None,
              help="End this call at this step and keep the config's learning-rate schedule (--max-steps would "
                   "decay it over the shorter run); --resume goes on from there.")
@click.option("--batch-frames", type=click.IntRange(min=1), default=None, help="Padded mel frames per batch (default: the config's).")
@click.option("--resume", is_flag=True, help="Continue the run in RUN_DIR from its newest checkpoint, exactly where it stopped; --config and --batch-frames, if given, must be the run's own.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available). Under torchrun each rank takes its own GPU.")
@click.option("--compile", "compile_decoder", is_flag=True,
              help="Run the decoder step through torch.compile, fusing its small operations: for CUDA, where "
                   "each is a kernel launch (not yet measured there; benchmarks/gpu_check.py does). On the CPU it "
                   "was no faster. The first steps wait tens of seconds for the compilation.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def train_command(store_dir, run_dir, config_spec, max_steps, stop_at, batch_frames, resume, device, compile_decoder,
                  quiet):
    """Train Tacotron2 on the feature store in STORE_DIR, writing checkpoints, TensorBoard logs, alignment
    plots and Griffin-Lim samples into RUN_DIR.

    \b
    Multi-GPU (or multi-process on CPU, with gloo):
      torchrun --nproc_per_node 4 -m taco train STORE_DIR RUN_DIR --config base
    Ctrl-C (or SIGTERM, to the whole process group as schedulers send it) stops after the current step,
    writes a checkpoint and exits with 130 (143); --resume continues.
    """
    try:
        if resume and config_spec is None and batch_frames is None:
            configs = (None, None)  # the run's own
        else:
            # on resume, train() checks that these equal the run's own
            if config_spec is None:
                config_spec = default_preset(device)
                if not quiet:
                    click.echo(f"no --config: training the {config_spec} preset", err=True)
            model_config, train_config = load_config(config_spec)
            if batch_frames:
                train_config = dataclasses.replace(train_config, batch_frames=batch_frames, batch_size=None)
            configs = (model_config, train_config)
        summary = train(store_dir, run_dir, *configs, resume=resume, max_steps=max_steps, stop_at=stop_at,
                        device=device, compile_decoder=compile_decoder, progress=not quiet)
    except USER_ERRORS as error:
        raise click.ClickException(str(error)) from None
    click.echo(json.dumps(summary, indent=2))
    if summary["stopped_by"] == "signal":
        click.echo(f"stopped by {summary['signal']}: --resume continues from {summary['checkpoint']}", err=True)
        sys.exit(exit_status(signal.Signals[summary["signal"]]))


@main.command("synth")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.argument("text", required=False)
@click.option("--output", "-o", default="synth.wav", type=click.Path(dir_okay=False), help="The wav for TEXT.")
@click.option("--text-file", type=click.Path(exists=True, dir_okay=False, allow_dash=True),
              help="Synthesize every non-empty line of this file; - reads standard input.")
@click.option("--out-dir", default="synth", type=click.Path(file_okay=False), help="Where --text-file's wavs go: 0001.wav, 0002.wav, ...")
@click.option("--batch-size", default=SynthConfig().batch_size, type=click.IntRange(min=1), help="Lines decoded together.")
@click.option("--gl-iters", default=SynthConfig().griffin_lim_iterations, type=click.IntRange(min=0), help="Griffin-Lim iterations.")
@click.option("--power", default=DEFAULT_POWER, type=click.FloatRange(min=0, min_open=True), help="Magnitude exponent before Griffin-Lim (>1 sharpens).")
@click.option("--max-decoder-steps", default=None, type=click.IntRange(min=1), help="Step limit (default: the checkpoint's).")
@click.option("--skip-existing", is_flag=True,
              help="Leave out the lines whose wav is already there: finishes a stopped run of the same text file "
                   "(the lines made now draw other dropout masks than one uninterrupted run would).")
@click.option("--save-mel", is_flag=True, help="Also write each mel as .npy: natural log, clamp 1e-5, (n_mels, frames), for NVIDIA/HiFi-GAN vocoders.")
@click.option("--vocoder", "vocoder_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A HiFi-GAN generator file (the public LJ_V1/generator_v1, UNIVERSAL_V1/g_02500000, ...) instead of Griffin-Lim.")
@click.option("--vocoder-config", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The generator's HiFi-GAN config (default: config.json beside --vocoder).")
@click.option("--half", is_flag=True, help="Half precision: float16 on CUDA, bfloat16 on a CPU "
              "with native bfloat16 (AVX-512 BF16 or AMX; about twice as fast there, the waveform within 0.3%).")
@click.option("--int8", is_flag=True,
              help="The decoder's two LSTMs with 8-bit weights, on the CPU (the default device with it): `base` "
                   "decodes 3-7x faster, `tiny` about as fast; the word error rate did not change (README).")
@click.option("--seed", default=0, help="Seed of the prenet's inference dropout.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def synth_command(checkpoint, text, output, text_file, out_dir, batch_size, gl_iters, power, max_decoder_steps,
                  skip_existing, save_mel, vocoder_path, vocoder_config, half, int8, seed, device, quiet):
    """Speak TEXT (or every line of --text-file) with the model in CHECKPOINT; write 16-bit wavs.

    The text goes through the checkpoint's own front end (characters or phonemes); characters it cannot
    speak, and with phonemes the words it spells out letter by letter, are reported. With phonemes,
    {HH AH0 L OW1} in the text forces a pronunciation. Griffin-Lim turns the mels into audio (--gl-iters,
    --power), or with --vocoder a HiFi-GAN generator (see `taco vocode --help` for what it must match).
    Each wav is written as soon as its batch is done (batches hold lines of similar length, so they finish
    in no fixed order): an error on a line, or Ctrl-C (SIGTERM; exit status 130/143), keeps those already
    written, and the last line says how many.
    """
    if (text is None) == (text_file is None):
        raise click.UsageError("give TEXT or --text-file, not both")
    if (vocoder_config or half) and not vocoder_path:
        raise click.UsageError("--vocoder-config and --half go with --vocoder")
    todo, written = [], []
    try:
        vocoder = Vocoder.from_file(vocoder_path, vocoder_config, device, half) if vocoder_path else None
        texts = [text] if text is not None else [line.strip() for line in read_utf8(text_file).splitlines() if line.strip()]
        if not texts:
            raise SynthesisError(f"{describe_file(text_file)}: no lines to speak")
        if text is not None:
            paths = [Path(output)]
        else:
            paths = [Path(out_dir) / f"{number:04d}.wav" for number in range(1, len(texts) + 1)]
        check_output(paths[0])  # the wavs share a folder and an extension
        todo = [i for i, path in enumerate(paths) if not (skip_existing and path.exists())]
        if not todo:
            click.echo(f"all {len(paths)} wavs are there already ({paths[0].parent}); nothing to synthesize")
            return
        config = SynthConfig(batch_size=batch_size, max_decoder_steps=max_decoder_steps,
                             griffin_lim_iterations=gl_iters, power=power, seed=seed)
        synthesizer = Synthesizer(checkpoint, device, vocoder, int8)
        features = synthesizer.feature_config
        with interrupted_by_signals():
            # each line is written as soon as its batch is done: a stop or a late error keeps the finished ones
            for i, utterance in synthesizer.synthesize_each(texts, config, progress=not quiet and len(todo) > 1,
                                                            positions=todo):
                write_wav(paths[i], utterance.wave, features.sample_rate)
                written.append(paths[i])
                if save_mel:
                    write_log_mel(paths[i].with_suffix(".npy"), utterance.mel, features.normalization)
                _report_written(paths[i], utterance, features.sample_rate)
    except USER_ERRORS as error:
        raise click.ClickException(str(error) + _kept(written, len(todo))) from None
    except Interrupted as stop:
        finish = "; --skip-existing finishes the rest" if text_file is not None else ""
        click.echo(f"{stop}{_kept(written, len(todo))}{finish}", err=True)
        sys.exit(exit_status(stop.signum))


def _kept(written: list[Path], total: int) -> str:
    """What a stopped run leaves behind, for its last line: how many of its `total` wavs (which share a
    folder) were written before the stop, if any."""
    return f"; {len(written)} of the {total} wavs were written to {written[0].parent} before it" if written else ""


def _report_written(path: Path, utterance, sample_rate: int) -> None:
    """Say that a synthesized line was written, and what is odd about it."""
    if utterance.dropped:
        dropped = ", ".join(f"{char!r} x{count}" for char, count in utterance.dropped.items())
        print_above_bars(f"warning: {path.name}: cannot speak {dropped}; left out", err=True)
    if utterance.unknown_words:
        words = ", ".join(repr(word) for word in utterance.unknown_words)
        print_above_bars(f"warning: {path.name}: not in the pronouncing dictionary, spelled out letter by letter: "
                         f"{words}; force a pronunciation in braces, e.g. {{HH AH0 L OW1}}", err=True)
    if utterance.hit_step_limit:
        print_above_bars(f"warning: {path.name}: reached the decoder step limit without stopping; written as cut",
                         err=True)
    if len(utterance.mel) <= SHORT_MEL_FRAMES:
        print_above_bars(f"warning: {path.name}: the gate stopped after {len(utterance.mel)} frames; written as it is",
                         err=True)
    print_above_bars(f"{path}  {len(utterance.wave) / sample_rate:.2f} s")


@main.command("vocode")
@click.argument("generator", type=click.Path(exists=True, dir_okay=False))
@click.argument("mels", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out-dir", "-o", default="vocoded", type=click.Path(file_okay=False), help="Where the wavs go: one per mel, named after it.")
@click.option("--vocoder-config", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The generator's HiFi-GAN config (default: config.json beside GENERATOR).")
@click.option("--batch-size", default=None, type=click.IntRange(min=1),
              help=f"Mels vocoded together (default: {VOCODE_GPU_BATCH_SIZE} on a GPU, 1 on the CPU, where one at a "
                   "time is 3-5x faster than a padded batch of 16).")
@click.option("--half", is_flag=True, help="Half precision: float16 on CUDA, bfloat16 on a CPU "
              "with native bfloat16 (AVX-512 BF16 or AMX; about twice as fast there, the waveform within 0.3%).")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def vocode_command(generator, mels, out_dir, vocoder_config, batch_size, half, device, quiet):
    """Turn saved mels (MELS: .npy files) into 16-bit wavs with the HiFi-GAN generator in GENERATOR.

    \b
    GENERATOR is a file of github.com/jik876/hifi-gan ({"generator": state_dict}, either torch format),
    e.g. LJ_V1/generator_v1 with its config.json beside it. Each mel is what `taco synth --save-mel`
    writes, or any tool in the NVIDIA/tacotron2 and HiFi-GAN convention: natural log of the Slaney mel
    magnitude clamped at 1e-5, shape (n_mels, frames). Each wav has frames x hop samples.

    \b
    The mel must be the generator's: `taco synth --vocoder` refuses a checkpoint whose sample rate, n_fft,
    hop, window length, n_mels, f_min or f_max differ from the config's. What still differs from the
    reference's mel does not matter to a listener: it pads (n_fft - hop) / 2 with center=False where taco
    centres its frames (n_fft / 2), which moves the audio half a hop (5.8 ms) later; it adds 1e-9 under
    each bin's square root, below the 1e-5 clamp; it trained on clips at peak 0.95, so quieter mels give
    quieter audio. After each mel the generator hears silence, so a mel gives the same samples alone and
    in a batch; the reference's zero padding (a loud log-mel) can differ in the last 14 frames' samples.
    Each wav is written as soon as it is done: Ctrl-C (SIGTERM, exit status 130/143) keeps those written.
    """
    written = []

    def say_written(path: Path, seconds: float) -> None:
        written.append(path)
        print_above_bars(f"{path}  {seconds:.2f} s")

    try:
        with interrupted_by_signals():
            vocode_files(generator, list(mels), out_dir, vocoder_config, batch_size, device, half,
                         progress=not quiet and len(mels) > 1, on_written=say_written)
    except USER_ERRORS as error:
        raise click.ClickException(str(error) + _kept(written, len(mels))) from None
    except Interrupted as stop:
        click.echo(f"{stop}{_kept(written, len(mels))}", err=True)
        sys.exit(exit_status(stop.signum))


@main.command("inspect-alignment")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--store", "store_dir", type=click.Path(exists=True, file_okay=False), help="The feature store of --id and --split.")
@click.option("--id", "ids", multiple=True, help="A stored utterance (repeatable).")
@click.option("--split", type=click.Choice(["val", "train"]), help="Score every utterance of this split, worst first.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="With --split: at most this many utterances.")
@click.option("--text", "texts", multiple=True, help="Free text (repeatable).")
@click.option("--out-dir", "-o", default="alignment", type=click.Path(file_okay=False), help="Where plots, scores.json and report.tsv go.")
@click.option("--worst", default=DEFAULT_WORST_PLOTTED, type=click.IntRange(min=0), help="With --split: how many of the worst to plot (--asr plots all).")
@click.option("--batch-size", default=SynthConfig().batch_size, type=click.IntRange(min=1), help="Lines decoded together.")
@click.option("--max-decoder-steps", default=None, type=click.IntRange(min=1), help="Step limit (default: the checkpoint's).")
@click.option("--seed", default=0, help="Seed of the prenet's inference dropout.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available).")
@click.option("--asr", is_flag=True,
              help="Also vocode each free-running line, transcribe it with pocketsphinx (pip install -e '.[bench]') "
                   "and write its WER, the wavs and report.html (worst WER first) to --out-dir.")
@click.option("--corpus", "corpus_dir", type=click.Path(exists=True, file_okay=False),
              help="With --asr: the corpus of --store, for the reference text and recordings (default: the one store.json records).")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON instead of a table.")
def inspect_command(checkpoint, store_dir, ids, split, limit, texts, out_dir, worst, batch_size, max_decoder_steps,
                    seed, device, asr, corpus_dir, as_json):
    """Show why the model in CHECKPOINT does or does not align: attention plots and scores for stored
    utterances (teacher-forced beside free-running) or free text (free-running).

    \b
    Scores (of the free-running alignment, a (decoder steps x tokens) matrix of attention weights):
      focus rate    mean over decoder steps of the largest attention weight (1 = sharp)
      coverage      share of tokens that are the attention peak of at least one step
      monotonicity  share of steps whose peak does not move back
      skipped       runs of 3+ tokens never attended
      repeated      jumps back of 3+ tokens, or one token held far longer than usual (a stall)
    Verdict, the first that applies: no-stop (the gate never fired before the step limit),
    diffuse (focus rate below 0.25), skips, repeats, ok.

    Ctrl-C (SIGTERM) writes the report of the utterances scored so far at once, without the transcriptions
    and plots not yet made, says how many, and exits with 130 (143).
    """
    try:
        with interrupted_by_signals():
            report = inspect(
                checkpoint, out_dir, store_dir=store_dir, ids=list(ids) or None, split=split, limit=limit,
                texts=list(texts) or None, worst_plotted=worst, batch_size=batch_size,
                max_decoder_steps=max_decoder_steps, seed=seed, device=device, asr=asr, corpus_dir=corpus_dir,
                progress=split is not None,
            )
    except USER_ERRORS as error:
        raise click.ClickException(str(error)) from None
    except Interrupted as stop:
        click.echo(str(stop), err=True)
        sys.exit(exit_status(stop.signum))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    columns = report_columns(report)
    click.echo("\t".join(columns))
    for row in report:
        click.echo("\t".join(map(str, report_line(row, columns))))
    verdicts = {verdict: sum(row["verdict"] == verdict for row in report) for verdict in VERDICTS}
    click.echo("verdicts: " + ", ".join(f"{verdict} {count}" for verdict, count in verdicts.items() if count))
    if asr:
        heard = word_error_rate([row["reference"].split() for row in report], [row["recognized"].split() for row in report])
        click.echo(f"word error rate of the synthesized lines (pocketsphinx): {heard['wer']:.1%} of {heard['words']} words")
    click.echo(f"plots and scores.json in {out_dir}" + (", listen in report.html" if asr else ""))
