"""Training: feature store -> bucketed batches -> Tacotron2 -> checkpoints, logs, plots and audio samples.

One process per device. Under `torchrun` each process trains on its own rank's batches (DDP; gloo on
CPU, NCCL on CUDA) and rank 0 alone writes. A run folder holds:

    config.json     the model, training, feature and text configs and the store's fingerprint
    checkpoints/    step_NNNNNNNN.pt (the last `keep_last`) and best.pt (lowest validation loss)
    logs/           TensorBoard: every loss term, learning rate, grad norm, alignments, Griffin-Lim audio
    plots/          the alignment plots of each checkpoint as PNG
    samples/        Griffin-Lim audio of a fixed validation utterance at each checkpoint
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import math
import os
import re
import signal
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from taco.features.store import FeatureStore
from taco.locking import exclusive_lock
from taco.pipeline.batching import BucketBatchSampler, collate, to_device
from taco.pipeline.checkpoint import (Progress, all_checkpoints, latest_checkpoint, load_newest, load_weights,
                                     restore_rng_states, rng_states)
from taco.pipeline.device import forked_rng, pick_device
from taco.pipeline.losses import LossTerms, tacotron2_loss
from taco.pipeline.model import ModelConfig, Tacotron2
from taco.pipeline.run_folder import CHECKPOINT_DIR, RunWriter
from taco.pipeline.reduction import spread_over_frames, steps_for
from taco.pipeline.train_config import TrainConfig, guided_attention_weight, learning_rate_factor, scheduled_sampling_rate
from taco.progress import progress_bar
from taco.signals import StopRequest, ignore_stop_signals


class TrainingError(Exception):
    """The run cannot start or cannot go on; str() is a one-line explanation."""


def train(
    store_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    *,
    resume: bool = False,
    max_steps: int | None = None,
    stop_at: int | None = None,
    device: str | None = None,
    compile_decoder: bool = False,
    progress: bool = True,
) -> dict:
    """Train Tacotron2 on a feature store into `run_dir`; returns a summary of the run.

    A new run needs both configs; `model_config.n_symbols` and `n_mels` are taken from the store. With
    `resume`, the configs come from the newest checkpoint in `run_dir` (configs given too must equal them)
    and training continues exactly where it stopped. `max_steps`, when given, replaces the configured
    number of steps (to train longer on resume; the learning-rate schedule stretches to it). `stop_at` ends this call at that step
    and leaves the schedule alone, for training in pieces that resume one another. `device`: "cpu", "cuda", "cuda:1", ...; default CUDA when available. Under torchrun,
    each rank uses its LOCAL_RANK's GPU. `compile_decoder`: run the decoder step through torch.compile
    (Decoder.compile_step; for CUDA, the same values up to float rounding).
    """
    store = FeatureStore(store_dir)
    store.check_shards()  # a damaged shard in one line, before a DataLoader worker would wrap it in its traceback
    run_dir = Path(run_dir)
    if (model_config is None) != (train_config is None) or (model_config is None and not resume):
        raise ValueError("give a model and a training config for a new run; to resume one, give both or neither")
    rank, world_size = _start_distributed(device)
    # the flags the host decides on are agreed in a gloo group of their own: in NCCL's, on the device, reading
    # the result back would make every host wait for its device at every step
    host_group = dist.new_group(backend="gloo") if world_size > 1 else None
    device = _pick_device(device)
    # one writer per run folder (rank 0 writes it): a second training would mix its checkpoints into this one's
    with exclusive_lock(run_dir, "run folder") if rank == 0 else contextlib.nullcontext():
        checkpoint_path, checkpoint = _checkpoint_to_resume(run_dir, store, resume)
        if model_config is not None:
            model_config = dataclasses.replace(model_config, n_symbols=len(store.symbols),
                                               n_mels=store.feature_config.n_mels)
        if checkpoint is not None:
            try:
                saved = (ModelConfig.from_dict(checkpoint["model_config"]),
                         TrainConfig.from_dict(checkpoint["training_config"]))
            except ValueError as error:
                raise TrainingError(f"{checkpoint_path}: {error} (made by another taco version?)") from None
            if model_config is not None:
                _refuse_other_configs(run_dir, (model_config, train_config), saved, max_steps)
            model_config, train_config = saved
        if max_steps is not None:
            train_config = dataclasses.replace(train_config, max_steps=max_steps)
        last_step = train_config.max_steps if stop_at is None else min(stop_at, train_config.max_steps)
        torch.manual_seed(train_config.seed + rank)  # the ranks' dropout masks differ (DDP gives them rank 0's weights)

        model = Tacotron2(model_config).to(device)
        if compile_decoder:
            model.decoder.compile_step()
        autocast_dtype = _autocast_dtype(train_config.amp, device)
        optimizer, scaler = optimizer_and_scaler(model, train_config, autocast_dtype, device)
        # a float16 run's loss scale is saved for its resume; any other run's scale is 1, which a float16 resume
        # (on a GPU, after a start on the CPU) must not take over from its own 2^16
        saved_scaler = scaler if autocast_dtype == torch.float16 else None
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                      lambda step: learning_rate_factor(step, train_config))
        sampler, train_loader, val_loader = make_loaders(store, model_config, train_config, rank, world_size,
                                                         pin_memory=device.type == "cuda")
        if val_loader is None and rank == 0:
            _warn(f"{store.path}: no validation split: no validation loss, no best.pt, and no alignment plots or "
                  "audio samples; preprocess with --val-count N to hold some utterances out")
        train_rows = store.split_indices("train")
        state = Progress()
        if checkpoint is not None:
            load_weights(model, checkpoint, checkpoint_path)
            _load_optimizer_state(optimizer, checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            if "scaler" in checkpoint and autocast_dtype == torch.float16:
                scaler.load_state_dict(checkpoint["scaler"])
            state = Progress(**checkpoint["progress"])
            saved_world_size = checkpoint["sampler"].get("world_size")
            if saved_world_size != world_size:  # its batches were dealt to that many ranks
                raise TrainingError(f"{checkpoint_path}: saved by a run of {saved_world_size} processes, resumed by "
                                    f"{world_size}; resume it with as many (torchrun --nproc_per_node {saved_world_size})")
            sampler.load_state_dict(checkpoint["sampler"])
            restore_rng_states(checkpoint["rng"], rank, device)
        if compile_decoder and world_size > 1:
            # DDP's graph splitting (at its 25 MB gradient buckets) would cut the compiled step in pieces for an
            # overlap it cannot give: the step runs hundreds of times before any gradient is ready
            torch._dynamo.config.optimize_ddp = False
        trained = DistributedDataParallel(model) if world_size > 1 else model

        writer = RunWriter(run_dir, store, model_config, train_config) if rank == 0 else None
        # SIGINT/SIGTERM: stop after the current step and write a checkpoint
        stop = StopRequest()
        stopping = False
        skips = _Skips(device, state.step)
        last_terms: LossTerms | None = None
        last_val_loss: LossTerms | None = None
        bar = progress_bar(total=last_step, initial=state.step, unit="step", desc="train",
                           disable=not progress or rank != 0, dynamic_ncols=True)
        started, started_step = time.perf_counter(), state.step
        with stop.installed():
            while state.step < last_step and not stopping:
                for batch in train_loader:
                    # checked on the host's copy, before the forward pass (BatchNorm would take a NaN into its
                    # running statistics), so the device is not asked for a value: (B, T_mel, n_mels) -> (B,)
                    items_finite = torch.isfinite(batch["mels"]).flatten(1).all(1)
                    # one all-reduce agrees on both: a rank that stopped alone would leave the others waiting in
                    # the next all-reduce forever, and a rank that skipped alone would let the weights drift apart.
                    # A stop asked for during a step is seen here, before the next step: this batch stays untrained
                    # and is the first one a resumed run draws.
                    mels_finite, go_on = _on_every_rank([bool(items_finite.all()), stop.signum is None], host_group)
                    if not go_on:
                        stopping = True
                        break
                    if mels_finite:
                        terms, grad_norm = _train_step(trained, optimizer, scaler, _to_device(batch, device),
                                                       model_config, train_config, state.step, autocast_dtype, device)
                        skipped = ~torch.isfinite(grad_norm)
                        # the last trained step's loss, chosen on the device
                        last_terms = terms if last_terms is None else LossTerms(
                            *(torch.where(skipped, last, new) for last, new in zip(last_terms, terms)))
                    else:
                        # the batch is number batches_done of this epoch
                        bad = _nonfinite_ids(items_finite, sampler.batch(state.batches_done), train_rows, store)
                        bar.write(f"step {state.step + 1}: {', '.join(bad) or 'a batch of another rank'} has NaN/inf "
                                  "in its mel, step skipped", file=sys.stderr)
                        skipped = torch.ones((), dtype=torch.bool, device=device)
                    _advance_schedule(scheduler, stepped=mels_finite)
                    skips.count(skipped, for_loss=mels_finite)
                    state.step += 1
                    state.batches_done += 1
                    # scalars are read every log_every steps only: reading one waits for the device to finish
                    if state.step % train_config.log_every == 0:
                        trained_now = skips.check(state.step, train_config.max_nonfinite_steps, run_dir, bar)
                        if trained_now:  # its loss is worth showing
                            # refresh=False: the bar shows them at its next redraw; a forced redraw would write
                            # into a log file or pipe at every log step (progress_bar's mininterval)
                            logged = _mean_over_ranks(terms)
                            bar.set_postfix(loss=f"{logged.total.item():.4f}", refresh=False,
                                            steps_per_s=f"{(state.step - started_step) / (time.perf_counter() - started):.2f}")
                            if writer is not None:
                                writer.scalars("train", logged, state.step, lr=scheduler.get_last_lr()[0],
                                               grad_norm=grad_norm.item())
                    bar.update(1)
                    if state.step % train_config.checkpoint_every == 0:
                        rng = rng_states(device)  # on every rank: it gathers
                        if writer is not None:
                            writer.checkpoint(model, optimizer, scheduler, saved_scaler, sampler, state, rng)
                    if state.step >= last_step:
                        break
                else:
                    # the epoch ran to its end: validate (each rank its share of the split), then start the next one
                    val_loss = _validate(model, val_loader, model_config, train_config, state.step, autocast_dtype, device)
                    state.epoch += 1
                    state.batches_done = 0
                    sampler.set_epoch(state.epoch)
                    if val_loss is not None:
                        last_val_loss = val_loss
                        rng = rng_states(device)  # on every rank: it gathers
                        if writer is not None:
                            # after the epoch advanced: best.pt resumes at the start of the next one, as this run does
                            writer.validation(val_loss, state, model, optimizer, scheduler, saved_scaler, sampler, rng)
        skips.check(state.step, train_config.max_nonfinite_steps, run_dir, bar)  # the steps since the last log step
        bar.close()
        final_rng = rng_states(device) if state.step % train_config.checkpoint_every != 0 else None  # every rank gathers
        if writer is not None:
            if final_rng is not None:
                writer.checkpoint(model, optimizer, scheduler, saved_scaler, sampler, state, final_rng)
            writer.close()
        if world_size > 1:
            # DDP holds the process groups, and its hooks put it in a reference cycle that only the garbage
            # collector frees; left to the collection at interpreter exit, the gloo groups' threads would end the
            # process with SIGABRT ("terminate called without an active exception") after a finished run
            del trained
            gc.collect()
            dist.destroy_process_group()
        return {
            "run_dir": str(run_dir),
            "steps": state.step,
            "epochs": state.epoch,
            "stopped_by": ("max_steps" if state.step >= train_config.max_steps
                           else "signal" if stopping else "stop_at"),
            "signal": None if stop.signum is None else signal.Signals(stop.signum).name,
            "last_loss": _as_floats(last_terms),
            "last_val_loss": _as_floats(last_val_loss),
            "best_val_loss": state.best_val_loss if math.isfinite(state.best_val_loss) else None,
            "checkpoint": str(latest_checkpoint(run_dir / CHECKPOINT_DIR)),
        }


def _as_floats(terms: LossTerms | None) -> dict[str, float | None] | None:
    """Loss terms as plain floats; NaN/inf as None, which JSON can hold."""
    if terms is None:
        return None
    return {name: value.item() if torch.isfinite(value) else None for name, value in terms._asdict().items()}


def _nonfinite_ids(items_finite: torch.Tensor, positions: list[int], train_rows, store: FeatureStore) -> list[str]:
    """Ids of a batch's utterances whose mels hold NaN/inf: `items_finite` (B,) says which are finite,
    `positions` are the batch's positions in `train_rows`."""
    return [store.ids[train_rows[position]] for position, ok in zip(positions, items_finite.tolist()) if not ok]


def make_loaders(store: FeatureStore, model_config: ModelConfig, train_config: TrainConfig, rank: int = 0,
                 world_size: int = 1, pin_memory: bool = False) -> tuple[BucketBatchSampler, DataLoader, DataLoader | None]:
    """This rank's bucketed training loader (and its sampler) and the validation loader (None without a val split).
    `pin_memory` (for CUDA): batches in page-locked memory, which the device copies from without waiting."""
    train_rows = store.split_indices("train")
    if len(train_rows) < world_size:
        raise TrainingError(f"{store.path}: {len(train_rows)} training utterances, fewer than {world_size} ranks")
    too_long = int((store.n_frames > (train_config.batch_frames or math.inf)).sum())
    if too_long:
        raise TrainingError(f"{store.path}: {too_long} utterances are longer than a batch of batch_frames="
                            f"{train_config.batch_frames} frames (the longest has {store.n_frames.max()}); raise "
                            "--batch-frames, or preprocess again with a lower --max-seconds")
    sampler = BucketBatchSampler(store.n_frames[train_rows], max_frames=train_config.batch_frames,
                                 batch_size=train_config.batch_size, seed=train_config.seed, rank=rank,
                                 world_size=world_size)
    # a partial of a module-level function, so that DataLoader worker processes can unpickle it
    collate_r = functools.partial(collate, reduction_factor=model_config.reduction_factor)
    # the loader gets its own generator so that creating an iterator never draws from the global RNG,
    # which would make a resumed run differ from an uninterrupted one
    generator = torch.Generator().manual_seed(train_config.seed)
    # persistent workers: a new epoch would otherwise start new processes (measured +40% batches/s)
    # the workers leave SIGINT and SIGTERM to the training loop, which saves a checkpoint before it stops;
    # torch's own handler would end a worker, and with it the run, at the first group signal
    train_loader = DataLoader(Subset(store, train_rows), batch_sampler=sampler, collate_fn=collate_r,
                              num_workers=train_config.num_workers, generator=generator, pin_memory=pin_memory,
                              persistent_workers=train_config.num_workers > 0, worker_init_fn=ignore_stop_signals)
    val_rows = store.split_indices("val")
    if not len(val_rows):
        return sampler, train_loader, None
    # each rank validates every world_size-th utterance in length order, so the ranks' shares take about
    # the same time; a rank whose share is empty (fewer utterances than ranks) still joins the reduce
    val_rows = val_rows[np.argsort(store.n_frames[val_rows], kind="stable")][rank::world_size]
    if not len(val_rows):
        return sampler, train_loader, []
    val_sampler = BucketBatchSampler(store.n_frames[val_rows], max_frames=train_config.batch_frames,
                                     batch_size=train_config.batch_size, seed=train_config.seed)
    val_loader = DataLoader(Subset(store, val_rows), batch_sampler=val_sampler, collate_fn=collate_r, num_workers=0)
    return sampler, train_loader, val_loader


def optimizer_and_scaler(model, train_config: TrainConfig, autocast_dtype: torch.dtype | None, device: torch.device):
    """Adam and the gradient scaler that lets _train_step skip a NaN/inf step without the host waiting.
    Fused Adam is one kernel for the whole update, and skips it on the device when the scaler found NaN/inf
    in the gradients (an unfused one would read the finding back). float16 needs a loss scale; in bf16 and
    float32 the scale stays 1 and the scaler serves for the skip alone."""
    optimizer = torch.optim.Adam(model.parameters(), lr=train_config.learning_rate,
                                 weight_decay=train_config.weight_decay, fused=True)
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0**16 if autocast_dtype == torch.float16 else 1.0)
    return optimizer, scaler


def _load_optimizer_state(optimizer, saved: dict) -> None:
    """A checkpoint's Adam state into the fused Adam of optimizer_and_scaler. Loading takes the saved groups'
    options too, and those of a checkpoint from before the fused Adam (fused: None) would make it an unfused
    Adam again, which refuses the scaler's device-side skip."""
    optimizer.load_state_dict(dict(saved, param_groups=[group | {"fused": True, "foreach": None}
                                                        for group in saved["param_groups"]]))


def _train_step(model, optimizer, scaler, batch, model_config, train_config, step, autocast_dtype, device):
    """One optimizer step: (loss terms, gradient norm), on the device. A step whose loss or gradient is NaN/inf
    (its gradient norm is then NaN/inf) changes nothing in the model, and the host does not wait to decide it:
    the scaler finds the NaN/inf in the gradients on the device and the fused Adam skips its update there
    (GradScaler's own mechanism, which float16 needs anyway). Under DDP every rank skips the same steps: the
    gradient all-reduce carries a NaN to all."""
    optimizer.zero_grad(set_to_none=True)
    model.train()
    # the forward pass updates BatchNorm's running statistics: kept to put back if the step is skipped
    buffers = [buffer.clone() for buffer in model.buffers()]
    with _autocast(autocast_dtype, device):
        fed_mels = _fed_mels(model, batch, scheduled_sampling_rate(step, train_config), model_config.reduction_factor)
        output = model(batch["tokens"], batch["token_lens"], batch["mels"], batch["mel_lens"], fed_mels,
                       host_token_lens=batch["host_token_lens"])
    terms = _loss(output, batch, model_config, train_config, step)
    # a NaN/inf loss can have finite gradients (L1's are): times NaN they are NaN, which the scaler finds
    nan_unless_finite = torch.where(torch.isfinite(terms.total.detach()), 1.0, math.nan)
    scaler.scale(terms.total * nan_unless_finite).backward()
    scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.grad_clip)
    scaler.step(optimizer)
    if autocast_dtype == torch.float16:
        scaler.update()  # lowers the scale after an overflow, raises it after a long run without one
    else:
        scaler.update(1.0)
    skipped = ~torch.isfinite(grad_norm)
    for buffer, kept in zip(model.buffers(), buffers):
        buffer.copy_(torch.where(skipped, kept, buffer))
    return LossTerms(*(term.detach() for term in terms)), grad_norm.detach()


def _to_device(batch: dict, device: torch.device) -> dict:
    """The batch on `device`, and its token lengths also on the host, where the encoder packs by them."""
    return to_device(batch, device, non_blocking=True) | {"host_token_lens": batch["token_lens"]}


class _Skips:
    """The steps skipped for NaN/inf, counted on the device so that the host never waits to count them, and
    read every log_every steps and at the end (`check`)."""

    def __init__(self, device: torch.device, step: int):
        zero = torch.zeros((), dtype=torch.long, device=device)
        self.in_a_row = zero  # skipped steps up to this one, for a NaN/inf mel, loss or gradient
        self.longest = zero  # the longest run of them since the last check
        self.for_loss = zero  # steps skipped for their loss or gradient since the last check
        self.checked_at = step

    def count(self, skipped: torch.Tensor, for_loss: bool) -> None:
        self.in_a_row = torch.where(skipped, self.in_a_row + 1, 0)
        self.longest = torch.maximum(self.longest, self.in_a_row)
        if for_loss:  # a NaN/inf mel is reported by name when it is met
            self.for_loss = self.for_loss + skipped

    def check(self, step: int, max_in_a_row: int, run_dir: Path, bar) -> bool:
        """Report the loss skips since the last check, and stop the run if `max_in_a_row` steps in a row were
        skipped; whether this step trained."""
        in_a_row, longest, for_loss = torch.stack([self.in_a_row, self.longest, self.for_loss]).tolist()
        if for_loss:
            where = f"step {step}" if step - self.checked_at == 1 else f"{for_loss} of steps {self.checked_at + 1}-{step}"
            bar.write(f"{where}: loss or gradient was NaN/inf, skipped", file=sys.stderr)
        if longest >= max_in_a_row:
            raise TrainingError(
                f"mels, loss or gradient were NaN/inf for {longest} steps in a row by step {step}; the last good checkpoint is "
                f"{latest_checkpoint(run_dir / CHECKPOINT_DIR)}. Lower the learning rate or check the store with "
                "taco store-info --verify"
            )
        self.longest, self.for_loss, self.checked_at = self.in_a_row, torch.zeros_like(self.for_loss), step
        return in_a_row == 0


def _fed_mels(model, batch, rate: float, r: int):
    """The frames the decoder reads in a training pass: the targets, with each decoder step's input replaced,
    with probability `rate`, by the model's own prediction of it from a first teacher-forced pass without
    autograd (parallel scheduled sampling, Duckworth et al. 2019). At inference the decoder reads nothing but
    its own output; a decoder trained only on true frames meets its own errors there first."""
    mels = batch["mels"]
    if rate == 0:
        return mels
    # the decoder's frames alone (the postnet's and the recognizer's outputs are not fed back), from the module
    # itself under DDP: a pass without autograd has no gradients to synchronize
    bare = model.module if isinstance(model, DistributedDataParallel) else model
    with torch.no_grad():
        predicted, _, _ = bare.decode(batch["tokens"], batch["token_lens"], mels, batch["host_token_lens"])
    B, T_mel, _ = mels.shape
    # one draw per decoder step, for its r frames: a step reads the last frame of the step before it
    own = torch.rand(B, steps_for(T_mel, r), 1, device=mels.device) < rate  # (B, T_dec, 1)
    return torch.where(spread_over_frames(own, r), predicted.to(mels.dtype), mels)  # (B, T_mel, n_mels)


def _advance_schedule(scheduler, stepped: bool) -> None:
    """One step of the learning-rate schedule, which follows the step counter: a skipped step advances it too.

    When the first optimizer step of a run was skipped, torch warns as if the schedule were misused; that
    warning is silenced for skipped steps only, because changing the warning filters makes warnings already
    shown once show again, and the filters would change on every step."""
    if stepped:
        scheduler.step()
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
        scheduler.step()


def _on_every_rank(flags: list[bool], host_group) -> list[bool]:
    """Which of `flags` are true on every rank of `host_group` (a gloo group; None: this process alone), in one
    all-reduce on the host."""
    agreed = torch.tensor(flags)
    if host_group is not None:
        dist.all_reduce(agreed, op=dist.ReduceOp.MIN, group=host_group)
    return agreed.tolist()


def _mean_over_ranks(terms: LossTerms) -> LossTerms:
    """The loss terms averaged over the ranks (each rank's batch is its own), as NVIDIA logs them."""
    if not dist.is_initialized():
        return terms
    values = torch.stack(list(terms))
    dist.all_reduce(values, op=dist.ReduceOp.SUM)  # gloo has no AVG
    return LossTerms(*(values / dist.get_world_size()))


def _loss(output, batch, model_config, train_config, step) -> LossTerms:
    # losses in float32 whatever the autocast dtype: bf16 MSE over thousands of frames loses digits
    output = type(output)(*(None if tensor is None else tensor.float() for tensor in output))
    return tacotron2_loss(output, batch, model_config.reduction_factor, train_config.gate_pos_weight,
                          guided_attention_weight(step, train_config), train_config.guided_attention_sigma,
                          train_config.ctc_weight, train_config.mel_loss)


@torch.no_grad()
def _validate(model, val_loader, model_config, train_config, step, autocast_dtype, device) -> LossTerms | None:
    """Teacher-forced loss over the validation split, the frame-weighted mean of each term; under torchrun
    each rank scores its share and the sums are reduced, so every rank returns the same."""
    if val_loader is None:
        return None
    model.eval()
    # the terms' frame-weighted sums, then the frames
    sums = torch.zeros(len(LossTerms._fields) + 1, device=device)
    # validation must not consume the training RNG (the prenet's dropout stays on in eval mode)
    with forked_rng(device):
        for batch in val_loader:
            batch = to_device(batch, device)
            with _autocast(autocast_dtype, device):
                output = model(batch["tokens"], batch["token_lens"], batch["mels"], batch["mel_lens"])
            terms = _loss(output, batch, model_config, train_config, step)
            frames = batch["mel_lens"].sum().float()
            sums += torch.cat([torch.stack(list(terms)) * frames, frames.reshape(1)])
    if dist.is_initialized():
        dist.all_reduce(sums, op=dist.ReduceOp.SUM)
    return LossTerms(*(sums[:-1] / sums[-1]))


def _start_distributed(device: str | None) -> tuple[int, int]:
    """(rank, world size); joins the process group when started by torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if pick_device(device).type == "cuda" else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), world_size


def _pick_device(requested: str | None) -> torch.device:
    device = pick_device(requested)
    if device.type == "cuda":
        if dist.is_initialized():
            device = _local_gpu()
        elif device.index is None:  # plain "cuda": set_device wants an index
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    return device


def _local_gpu() -> torch.device:
    """This torchrun rank's GPU: LOCAL_RANK's, or the only one there is where the launcher shows each rank
    its own GPU (SLURM's --gpus-per-task=1, a CUDA_VISIBLE_DEVICES per rank)."""
    local_rank, visible = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
    if visible == 1:
        return torch.device("cuda", 0)
    if local_rank >= visible:
        raise TrainingError(f"this rank's LOCAL_RANK is {local_rank} but it sees {visible} GPUs: start at most "
                            f"{visible} processes per machine (torchrun --nproc_per_node {visible})")
    return torch.device("cuda", local_rank)


def _autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or amp == "none":
        return None
    return torch.bfloat16 if amp == "bf16" else torch.float16


def _autocast(dtype: torch.dtype | None, device: torch.device):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _checkpoint_to_resume(run_dir: Path, store: FeatureStore, resume: bool) -> tuple[Path | None, dict | None]:
    """The checkpoint to resume from and its path; (None, None) for a new run."""
    checkpoint_dir = run_dir / CHECKPOINT_DIR
    if not resume:
        if existing := all_checkpoints(checkpoint_dir):
            raise TrainingError(f"{run_dir}: already holds checkpoints ({', '.join(path.name for path in existing)}); "
                                "pass --resume to continue that run, or choose another folder")
        return None, None
    newest = load_newest(checkpoint_dir, _warn)
    if newest is None:
        raise TrainingError(f"{run_dir}: no checkpoint to resume from")
    path, checkpoint = newest
    if checkpoint["store_fingerprint"] != store.fingerprint:
        raise TrainingError(
            f"{path} was trained on a store with fingerprint {checkpoint['store_fingerprint']}, but {store.path} "
            f"has {store.fingerprint}: resuming would mix features made differently"
        )
    # checkpoints written before stores had a content fingerprint lack it; their sampler state still
    # refuses a store with another number of training utterances
    if "store_content" in checkpoint and checkpoint["store_content"] != store.content_fingerprint:
        raise TrainingError(
            f"{path} was trained on the {checkpoint['sampler']['n_utterances']} training utterances of "
            f"{checkpoint['store']}, but {store.path} holds other utterances ({len(store.split_indices('train'))} "
            "for training): resuming would go on with other data; resume with the run's own store"
        )
    return path, checkpoint


def _refuse_other_configs(run_dir: Path, given: tuple[ModelConfig, TrainConfig],
                          saved: tuple[ModelConfig, TrainConfig], max_steps: int | None) -> None:
    """A resumed run keeps its configuration: configs given on resume must equal the run's own."""
    if max_steps is not None:
        # max_steps replaces the configured number of steps, the run's as well as the given one's
        given = (given[0], dataclasses.replace(given[1], max_steps=max_steps))
        saved = (saved[0], dataclasses.replace(saved[1], max_steps=max_steps))
    differences = [
        f"{kind}.{name} (the run's {value!r}, given {mine.to_dict()[name]!r})"
        for kind, mine, theirs in zip(("model", "training"), given, saved)
        for name, value in theirs.to_dict().items()
        if mine.to_dict()[name] != value
    ]
    if differences:
        raise TrainingError(f"{run_dir}: a resumed run keeps its configuration, and the one given differs in "
                            f"{', '.join(differences)}; resume without --config, or start a new run in another folder")


def _warn(message: str) -> None:
    tqdm.write(f"warning: {message}", file=sys.stderr)
