"""Length-bucketed batches and padding: the sampler's pure batching function, the sampler, and collate.

Batching is a pure function of (lengths, budget, seed, epoch, rank, world size): `bucket_batches`.
`BucketBatchSampler` only remembers which epoch it is in and how far into it, so that a resumed run
continues with exactly the batches it would have seen. Positions are positions in `lengths`; the caller
maps them to store rows, e.g. with `torch.utils.data.Subset(store, store.split_indices("train"))`:

    train = store.split_indices("train")
    sampler = BucketBatchSampler(store.n_frames[train], max_frames=8000, seed=seed, rank=rank, world_size=world)
    loader = DataLoader(Subset(store, train), batch_sampler=sampler, collate_fn=collate, num_workers=4)
    for epoch in range(start_epoch, n_epochs):
        sampler.set_epoch(epoch)
        for batch in loader:
            ...
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from taco.features.text import PAD_ID
from taco.pipeline.reduction import steps_for, stop_step, whole_steps


# Sort keys are lengths scaled by up to +-1%: enough to vary which neighbours share a batch each epoch,
# at a small padding cost (bundled corpus, mean of 10 epochs: 4.3% with no jitter, 4.6% at 1%, 5.0% at 2%,
# 6.6% at 5%; measured).
DEFAULT_LENGTH_JITTER = 0.01


class FrameBudget:
    """How much one batch may hold: padded frames (`max_frames`) or a fixed count (`batch_size`).

    Exactly one of the two is set. The padded size of a batch is len(batch) * its longest length, the
    size it has once collated, so a frame budget bounds the memory a batch needs on the device.
    `add` counts one more utterance, `exceeded` says whether the batch is now over the budget,
    `reset` starts a new, empty batch.
    """

    def __init__(self, max_frames: int | None = None, batch_size: int | None = None):
        if (max_frames is None) == (batch_size is None):
            raise ValueError(
                f"give exactly one of max_frames and batch_size, got max_frames={max_frames}, batch_size={batch_size}"
            )
        for name, value in (("max_frames", max_frames), ("batch_size", batch_size)):
            if value is not None and (not _is_int(value) or value <= 0):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.max_frames = None if max_frames is None else int(max_frames)
        self.batch_size = None if batch_size is None else int(batch_size)
        self.count = 0
        self.longest = 0

    @property
    def padded_frames(self) -> int:
        return self.count * self.longest

    def add(self, length: int) -> None:
        self.count += 1
        self.longest = max(self.longest, int(length))

    def exceeded(self) -> bool:
        if self.batch_size is not None:
            return self.count > self.batch_size
        return self.padded_frames > self.max_frames

    def reset(self) -> None:
        self.count = 0
        self.longest = 0

    def __repr__(self) -> str:
        limit = f"max_frames={self.max_frames}" if self.max_frames is not None else f"batch_size={self.batch_size}"
        return f"FrameBudget({limit}, count={self.count}, longest={self.longest})"


def bucket_batches(
    lengths: np.ndarray,
    *,
    max_frames: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    length_jitter: float = DEFAULT_LENGTH_JITTER,
) -> list[list[int]]:
    """This rank's batches for one epoch: lists of positions in `lengths` (mel frames per utterance).

    Exactly one of `max_frames` (a budget of padded frames: len(batch) * max(lengths[batch]) <= max_frames)
    and `batch_size` (utterances per batch) is given.

    1. rng = np.random.default_rng((seed, epoch)); positions are sorted by length * (1 + U(-j, +j)) with
       j = `length_jitter`, so neighbours in length share batches, and which neighbours varies by epoch
       (at a padding cost of about j; 0 gives the same batches every epoch, only their order changes);
    2. the sorted positions are cut greedily into consecutive batches under the budget;
    3. while the number of batches is not a multiple of `world_size`, the batch with the most utterances
       (the first such in length order) is split into two halves, which stay under the budget;
    4. each run of `world_size` consecutive batches is one step: the batches the ranks train on at the same
       time. They are neighbours in length, so no rank waits long at the gradient all-reduce for another
       rank's longer batch. The order of the steps is shuffled, and so is which rank gets which batch of
       a step; with world_size 1 a step is a batch, and this is the batch order shuffled;
    5. this rank gets its batch of every step, so every rank has the same number of batches and, over
       all ranks, every utterance is in exactly one batch: none dropped, none repeated.

    Raises ValueError for bad arguments; for fewer utterances than `world_size`; when an utterance is
    longer than `max_frames` (the message says how many are: no batch ever exceeds the budget, so
    filter them out, e.g. `lengths <= max_frames`, or raise the budget); and when step 4 cannot reach a
    multiple of `world_size` because every batch already holds a single utterance (a budget under twice
    the longest lengths, or batch_size=1, with a number of utterances that world_size does not divide).
    """
    budget = FrameBudget(max_frames=max_frames, batch_size=batch_size)
    lengths = _validated_lengths(lengths)
    _check_distributed(len(lengths), rank, world_size)
    for name, value in (("seed", seed), ("epoch", epoch)):
        if not _is_int(value) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if not 0.0 <= length_jitter < 1.0:
        raise ValueError(f"length_jitter must be in [0, 1), got {length_jitter!r}")
    if max_frames is not None and (too_long := int(np.count_nonzero(lengths > max_frames))):
        raise ValueError(
            f"{too_long} of {len(lengths)} utterances are longer than max_frames={max_frames} (the longest has "
            f"{lengths.max()} frames); drop them (keep lengths <= max_frames) or raise max_frames"
        )

    rng = np.random.default_rng((seed, epoch))
    keys = lengths * (1.0 + rng.uniform(-length_jitter, length_jitter, size=len(lengths)))
    order = np.argsort(keys, kind="stable")
    batches = _split_to_multiple(cut_batches(order, lengths, budget), world_size)
    steps = np.arange(len(batches)).reshape(-1, world_size)  # (n_steps, world_size) indices into batches
    steps = steps[rng.permutation(len(steps))]
    # which rank gets the shorter batches of a step changes too: DDP keeps rank 0's BatchNorm statistics
    steps = rng.permuted(steps, axis=1)
    return [batches[i] for i in steps[:, rank]]


def cut_batches(order: np.ndarray, lengths: np.ndarray, budget: FrameBudget) -> list[list[int]]:
    """Consecutive runs of `order` (positions in `lengths`), each as long as `budget` allows: a greedy cut.

    `budget` is reset first and used as scratch. An utterance over the budget on its own gets a batch of its own.
    """
    batches: list[list[int]] = []
    batch: list[int] = []
    budget.reset()
    for position in order.tolist():
        budget.add(lengths[position])
        if budget.exceeded() and batch:
            batches.append(batch)
            batch = []
            budget.reset()
            budget.add(lengths[position])
        batch.append(position)
    if batch:
        batches.append(batch)
    return batches


def _split_to_multiple(batches: list[list[int]], world_size: int) -> list[list[int]]:
    """Split the fullest batches in two until their number is a multiple of world_size.

    Halves of a batch hold no more utterances and no longer ones than it did, so they keep its budget.
    The halves stay next to each other, so that they are dealt to the same step or to neighbouring ones.
    """
    batches = list(batches)
    while len(batches) % world_size:
        fullest = max(range(len(batches)), key=lambda i: len(batches[i]))  # first of the fullest
        batch = batches[fullest]
        if len(batch) < 2:
            raise ValueError(
                f"cannot deal {len(batches)} single-utterance batches evenly to {world_size} ranks without "
                f"dropping or repeating utterances; raise the budget (or batch_size) or drop "
                f"{len(batches) % world_size} utterances"
            )
        half = len(batch) // 2
        batches[fullest : fullest + 1] = [batch[:half], batch[half:]]
    return batches


def padding_waste(batches: list[list[int]], lengths: np.ndarray) -> float:
    """The share of padded frames that are padding: (padded - real) / padded, in [0, 1).

    padded = sum over batches of len(batch) * max(lengths[batch]), the frames the collated batches hold;
    real = sum of lengths[batch] over all batches. 0 means no padding at all; 0.2 means a fifth of the
    frames the model is fed are zeros. Ignores rounding up to the reduction factor. 0.0 for no batches.
    """
    lengths = np.asarray(lengths)
    padded = sum(len(batch) * int(lengths[batch].max()) for batch in batches if batch)
    real = sum(int(lengths[batch].sum()) for batch in batches if batch)
    return (padded - real) / padded if padded else 0.0


class BucketBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Yields `bucket_batches` for this rank, one epoch at a time, and can stop and resume mid-epoch.

    Pass it to a DataLoader as `batch_sampler`, and call `set_epoch(epoch)` before each epoch: a new epoch
    is what changes the batches. Iteration goes on from `position`: an iteration that was stopped early
    continues where it stopped; one that ran to the end of the epoch starts the same epoch over (so a
    validation loader can be iterated again and again). A position restored by `load_state_dict` is kept
    even at the end of the epoch: the first iteration after it then yields nothing, since that epoch is done.

    `state_dict()` holds plain values only (ints, floats, None), so it fits a checkpoint that loads with
    `torch.load(..., weights_only=True)`. It holds no rank: every rank can load the state rank 0 saved.
    Resuming: build the sampler with the same arguments, `load_state_dict(state)`, and iterate; the
    remaining batches of the interrupted epoch follow, then call `set_epoch(epoch + 1)` as usual.

    With a prefetching DataLoader (num_workers > 0) the sampler runs ahead of the training loop: its own
    `position` counts batches handed to workers, not batches trained on. The loop therefore counts the
    batches it consumed in this epoch and saves `sampler.state_dict(consumed=count)`.
    """

    # state_dict keys that decide what the batches are; load_state_dict refuses a state that differs in one
    _DEFINING_KEYS = ("seed", "world_size", "max_frames", "batch_size", "length_jitter", "n_utterances")

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        *,
        max_frames: int | None = None,
        batch_size: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        length_jitter: float = DEFAULT_LENGTH_JITTER,
    ):
        self.lengths = _validated_lengths(lengths).copy()
        self.max_frames = max_frames
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.length_jitter = float(length_jitter)
        self.epoch = 0
        self.position = 0
        self._restored = False  # position came from load_state_dict: keep it even at the end of the epoch
        self._cache: tuple[int, list[list[int]]] | None = None
        self._batches()  # validates every argument now rather than at the first epoch

    def _batches(self) -> list[list[int]]:
        if self._cache is None or self._cache[0] != self.epoch:
            batches = bucket_batches(
                self.lengths, max_frames=self.max_frames, batch_size=self.batch_size, seed=self.seed,
                epoch=self.epoch, rank=self.rank, world_size=self.world_size, length_jitter=self.length_jitter,
            )
            self._cache = (self.epoch, batches)
        return self._cache[1]

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its first batch."""
        if not _is_int(epoch) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = int(epoch)
        self.position = 0
        self._restored = False

    def __iter__(self):
        batches = self._batches()
        if self.position >= len(batches) and not self._restored:
            self.position = 0  # the epoch ran to its end before: go through it again
        self._restored = False
        while self.position < len(batches):
            batch = batches[self.position]
            self.position += 1  # counted before it is handed out: a state saved now has this batch consumed
            yield list(batch)

    def batch(self, number: int) -> list[int]:
        """The positions in batch `number` of the current epoch, e.g. to name the utterances of a batch
        that a prefetching DataLoader handed out."""
        return list(self._batches()[number])

    def __len__(self) -> int:
        """Batches in the current epoch for this rank, the same number on every rank."""
        return len(self._batches())

    def state_dict(self, consumed: int | None = None) -> dict:
        """The state to resume from; `consumed`: the batches of this epoch trained on, when a prefetching
        DataLoader has run the sampler ahead of them (default: the batches the sampler handed out)."""
        if consumed is not None and not (_is_int(consumed) and 0 <= consumed <= self.position):
            raise ValueError(f"consumed must be an integer in [0, {self.position}] (the batches handed out), got {consumed!r}")
        return {
            "seed": int(self.seed),
            "world_size": int(self.world_size),
            "max_frames": None if self.max_frames is None else int(self.max_frames),
            "batch_size": None if self.batch_size is None else int(self.batch_size),
            "length_jitter": self.length_jitter,
            "n_utterances": len(self.lengths),
            "epoch": self.epoch,
            "position": self.position if consumed is None else int(consumed),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue where `state` stopped: same epoch, next batch. Refuses a state made for other batches."""
        known = set(self._DEFINING_KEYS) | {"epoch", "position"}
        if unknown := sorted(set(state) - known):
            raise ValueError(f"unknown keys in sampler state: {unknown}; expected {sorted(known)}")
        if missing := sorted(known - set(state)):
            raise ValueError(f"sampler state lacks {missing}")
        mine = self.state_dict()
        for key in self._DEFINING_KEYS:
            if state[key] != mine[key]:
                raise ValueError(
                    f"sampler state was saved with {key}={state[key]!r} but this sampler has {key}={mine[key]!r}; "
                    f"its position would point into other batches. Build the sampler with {key}={state[key]!r}, "
                    f"or start a fresh epoch without loading the sampler state"
                )
        epoch, position = state["epoch"], state["position"]
        self.set_epoch(epoch)
        n_batches = len(self)
        if not _is_int(position) or not 0 <= position <= n_batches:
            raise ValueError(f"sampler state has position {position!r}, outside epoch {epoch}'s 0..{n_batches} batches")
        self.position = int(position)
        self._restored = True


def collate(items: list[tuple[np.ndarray, np.ndarray]], reduction_factor: int = 1) -> dict[str, torch.Tensor]:
    """Pad a list of (tokens (n_tokens,), mel (n_frames, n_mels)) into one batch.

    Returns, with B = len(items), T_text = the most tokens, T_mel = the most frames rounded UP to a
    multiple of r = `reduction_factor` (the decoder emits r frames per step):

        tokens        (B, T_text)         int64, padded with PAD_ID (0)
        token_lens    (B,)                int64
        mels          (B, T_mel, n_mels)  float32, zero padded
        mel_lens      (B,)                int64, true lengths (not rounded)
        gate_targets  (B, T_mel // r)     float32: decoder step k holds frames k*r .. k*r + r - 1; 0 before
                                          the step holding the last frame, (mel_len - 1) // r, and 1 from it on
    """
    if not items:
        raise ValueError("collate needs at least one item")
    if not _is_int(reduction_factor) or reduction_factor < 1:
        raise ValueError(f"reduction_factor must be a positive integer, got {reduction_factor!r}")
    r = int(reduction_factor)
    tokens_list = [torch.as_tensor(tokens, dtype=torch.int64) for tokens, _ in items]
    mel_list = [torch.as_tensor(mel, dtype=torch.float32) for _, mel in items]
    for i, (tokens, mel) in enumerate(zip(tokens_list, mel_list)):
        if tokens.ndim != 1 or len(tokens) == 0:
            raise ValueError(f"item {i}: tokens must be a non-empty 1-D array, got shape {tuple(tokens.shape)}")
        if mel.ndim != 2 or len(mel) == 0 or mel.shape[1] != mel_list[0].shape[1]:
            raise ValueError(
                f"item {i}: mel must be (n_frames >= 1, n_mels={mel_list[0].shape[-1]}), got shape {tuple(mel.shape)}"
            )

    B, n_mels = len(items), mel_list[0].shape[1]
    tokens, token_lens = pad_tokens(tokens_list)
    mel_lens = torch.tensor([len(m) for m in mel_list], dtype=torch.int64)  # (B,)
    T_mel = whole_steps(int(mel_lens.max()), r)

    mels = torch.zeros(B, T_mel, n_mels, dtype=torch.float32)
    gate_targets = torch.zeros(B, steps_for(T_mel, r), dtype=torch.float32)
    for i, m in enumerate(mel_list):
        mels[i, : len(m)] = m
        gate_targets[i, stop_step(len(m), r) :] = 1.0  # the step holding the last frame, and every step after
    return {"tokens": tokens, "token_lens": token_lens, "mels": mels, "mel_lens": mel_lens, "gate_targets": gate_targets}


def similar_length_chunks(lengths: Sequence[int], size: int) -> list[list[int]]:
    """The indices of `lengths`, shortest first, in chunks of `size`: a padded batch of items of similar
    lengths runs about as long as each of them (synthesis, vocoding)."""
    if size <= 0:
        raise ValueError(f"the chunk size must be positive, got {size}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[start : start + size] for start in range(0, len(order), size)]


def to_device(batch: dict[str, torch.Tensor], device: torch.device, non_blocking: bool = False) -> dict[str, torch.Tensor]:
    """Every tensor of a collated batch on `device`. non_blocking: a copy from pinned memory overlaps the
    device's work (a no-op on the CPU)."""
    return {key: value.to(device, non_blocking=non_blocking) for key, value in batch.items()}


def pad_tokens(token_ids: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D int64 token ID tensors -> (B, T_text) padded with PAD_ID, and their (B,) lengths."""
    token_lens = torch.tensor([len(ids) for ids in token_ids], dtype=torch.int64)
    tokens = torch.full((len(token_ids), int(token_lens.max())), PAD_ID, dtype=torch.int64)
    for i, ids in enumerate(token_ids):
        tokens[i, : len(ids)] = ids
    return tokens, token_lens


def _validated_lengths(lengths) -> np.ndarray:
    array = np.asarray(lengths)
    if array.ndim != 1:
        raise ValueError(f"lengths must be 1-D (frames per utterance), got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating) or not np.all(array == np.round(array)):
            raise ValueError(f"lengths must be whole numbers of frames, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if array.size and array.min() < 1:
        raise ValueError(f"lengths must be positive; {int(np.count_nonzero(array < 1))} are not")
    return array


def _check_distributed(n_utterances: int, rank: int, world_size: int) -> None:
    if not _is_int(world_size) or world_size < 1:
        raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
    if not _is_int(rank) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an integer in [0, world_size={world_size}), got {rank!r}")
    if n_utterances < world_size:
        raise ValueError(f"{n_utterances} utterances cannot give each of {world_size} ranks a batch")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
