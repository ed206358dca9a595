"""Tacotron2: token IDs -> mel frames, with location-sensitive attention.

    tokens ─> Encoder ─> memory (B, T_text, encoder_dim)
    Decoder, one step at a time: prenet(previous frame) ─> attention LSTM ─> LocationSensitiveAttention
             over the memory ─> decoder LSTM ─> r frames + one stop (gate) logit
    mels ─> Postnet ─> residual added: mels_postnet

The model is pure: it takes a ModelConfig, imports only torch, never moves a tensor to a device,
never prints and never parses a batch. Decoder state is an explicit DecoderState passed from step
to step, never attributes on `self`. Padding is kept out everywhere it could leak into valid
positions (masked convolutions, packed LSTM, masked attention), so an utterance's output does not
depend on what else shares its batch.

The decoder step is the recurrence alone (both LSTMs and the attention), in float32 even under
autocast; whatever does not feed the recurrence (the prenet over teacher-forced frames, the frame and
gate projections) runs once over all steps outside the loop, as in NVIDIA/tacotron2.

Sizes come from the Tacotron2 paper (Shen et al. 2018, "Natural TTS Synthesis by Conditioning
WaveNet on Mel Spectrogram Predictions") and NVIDIA/tacotron2's hparams.py.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from taco.config import JsonConfig
from taco.pipeline.reduction import frames_for, last_frame_of_each_step, steps_for, whole_steps

# ----------------------------------------------------------------------------- config

_POSITIVE_INTS = (
    "n_symbols", "n_mels", "reduction_factor", "embedding_dim", "encoder_conv_layers",
    "encoder_conv_channels", "encoder_kernel_size", "encoder_lstm_dim", "attention_rnn_dim",
    "attention_dim", "location_filters", "location_kernel_size", "decoder_rnn_dim",
    "postnet_layers", "postnet_channels", "postnet_kernel_size", "max_decoder_steps",
)
# "same" padding (kernel // 2 on each side) keeps the length only for odd kernels
_ODD_KERNELS = ("encoder_kernel_size", "location_kernel_size", "postnet_kernel_size")
_PROBABILITIES = ("prenet_dropout", "conv_dropout", "attention_dropout", "decoder_dropout", "zoneout")
# "location": the paper's location-sensitive attention; "forward": forward attention on top of it
# (Zhang et al. 2018), which may only stay on a token or move to the next, so it cannot skip or go back
ATTENTIONS = ("location", "forward")
# Floor on forward attention's unnormalized weights (ESPnet's AttForward clamps at 1e-6): the product of
# two distributions can underflow to zero everywhere, and an all-zero alignment would never recover
FORWARD_ATTENTION_FLOOR = 1e-6
# Decoder steps between the inference loop's looks at whether every item has stopped. A look makes the host
# wait for the device, so on a GPU the loop looks every GPU_STOP_CHECK_EVERY steps and a batch that has
# stopped decodes at most that many steps more, which its step_lens cut off; on the CPU a look is free.
STOP_CHECK_EVERY = {"cpu": 1}
GPU_STOP_CHECK_EVERY = 16


def _is_positive_int(value) -> bool:
    # a plain int only: bool is an int subclass, and a numpy integer would not survive to_dict() as JSON
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class ModelConfig(JsonConfig):
    """Every size of the network. Defaults: Tacotron2 paper and NVIDIA/tacotron2 hparams ("base")."""

    n_symbols: int = 40  # taco's symbol table v1 has 40; training sets it from the store (NVIDIA's has 148)
    n_mels: int = 80  # training sets it from the store's feature config; NVIDIA n_mel_channels
    reduction_factor: int = 1  # frames per decoder step (r); paper and NVIDIA: 1; r>1 (Tacotron 1, Coqui) aligns faster
    embedding_dim: int = 512  # paper section 2.3; NVIDIA symbols_embedding_dim
    encoder_conv_layers: int = 3  # paper: 3 conv layers; NVIDIA encoder_n_convolutions
    encoder_conv_channels: int = 512  # paper: 512 filters; NVIDIA encoder_embedding_dim
    encoder_kernel_size: int = 5  # paper: 5x1 kernels
    encoder_lstm_dim: int = 256  # per direction, paper: 256 each way; encoder output = 2 * this
    attention_rnn_dim: int = 1024  # NVIDIA attention_rnn_dim (paper: 2 decoder LSTM layers of 1024)
    attention_dim: int = 128  # paper: 128-dimensional hidden attention representation
    location_filters: int = 32  # paper: 32 location filters
    location_kernel_size: int = 31  # paper: length 31
    attention: str = "location"  # one of ATTENTIONS; the paper's is "location"
    prenet_dims: tuple[int, ...] = (256, 256)  # paper: 2 fully connected layers of 256 ReLU units
    prenet_dropout: float = 0.5  # paper: 0.5, kept on at inference too for output variation
    decoder_rnn_dim: int = 1024  # paper: 1024 units; NVIDIA decoder_rnn_dim
    postnet_layers: int = 5  # paper: 5 conv layers
    postnet_channels: int = 512  # paper: 512 filters; NVIDIA postnet_embedding_dim
    postnet_kernel_size: int = 5  # paper: 5x1 kernels
    conv_dropout: float = 0.5  # encoder convs and postnet; paper and NVIDIA: 0.5
    attention_dropout: float = 0.1  # on the attention RNN's hidden state; NVIDIA p_attention_dropout
    decoder_dropout: float = 0.1  # on the decoder RNN's hidden state; NVIDIA p_decoder_dropout
    zoneout: float = 0.0  # >0: zoneout on both decoder LSTM cells instead of the two dropouts above (paper: 0.1)
    gate_threshold: float = 0.5  # stop when sigmoid(gate) exceeds it; paper and NVIDIA: 0.5
    max_decoder_steps: int = 1000  # NVIDIA: 1000 (x r frames; 11.6 s at hop 256 / 22.05 kHz with r=1)
    # >0: a small CTC recognizer of this width reads the text back from the decoder's mels during training
    # (TextRecognizer); 0: none, as in the paper
    recognizer_channels: int = 0

    def __post_init__(self):
        # accept any sequence (a JSON list, say) and store a tuple, so the config stays hashable
        object.__setattr__(self, "prenet_dims", tuple(self.prenet_dims))
        for name in _POSITIVE_INTS:
            if not _is_positive_int(getattr(self, name)):
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in _ODD_KERNELS:
            if getattr(self, name) % 2 == 0:
                raise ValueError(f"ModelConfig.{name} must be odd to keep lengths, got {getattr(self, name)}")
        if not self.prenet_dims or not all(_is_positive_int(dim) for dim in self.prenet_dims):
            raise ValueError(f"ModelConfig.prenet_dims must be one or more positive integers, got {self.prenet_dims!r}")
        for name in _PROBABILITIES:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
                raise ValueError(f"ModelConfig.{name} must be a probability in [0, 1), got {value!r}")
        if self.zoneout > 0 and (self.attention_dropout > 0 or self.decoder_dropout > 0):
            raise ValueError(
                "ModelConfig.zoneout replaces attention_dropout and decoder_dropout: set both to 0 when "
                f"zoneout > 0 (got zoneout={self.zoneout}, attention_dropout={self.attention_dropout}, "
                f"decoder_dropout={self.decoder_dropout})"
            )
        if self.attention not in ATTENTIONS:
            raise ValueError(f"ModelConfig.attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if not isinstance(self.recognizer_channels, int) or self.recognizer_channels < 0:
            raise ValueError(f"ModelConfig.recognizer_channels must be 0 (none) or a positive integer, "
                             f"got {self.recognizer_channels!r}")
        if not 0 < self.gate_threshold < 1:
            raise ValueError(f"ModelConfig.gate_threshold must be in (0, 1), got {self.gate_threshold!r}")

    @property
    def encoder_dim(self) -> int:
        """Width of the encoder output (the attention memory): both LSTM directions."""
        return 2 * self.encoder_lstm_dim


PRESETS: dict[str, ModelConfig] = {
    # the paper / NVIDIA network: ~28M parameters
    "base": ModelConfig(),
    # Small enough to learn an alignment on a 2-core CPU in minutes on the bundled 21 minutes of flite speech
    # (~1.9M parameters with 40 symbols and 80 mels). Every width is a quarter to half of base;
    # the prenet's and the RNNs' dropouts stay as in NVIDIA's (prenet dropout is what makes attention usable
    # at inference; without the RNNs' the free-running WER got worse: 0.62 against 0.57 on the bundled
    # corpus at 1000 steps, convolutions' dropout at 0.5; the paper's zoneout 0.1 in their place was level
    # on the bundled corpus and mixed on the held-out one, 0.476 against 0.454 over two training seeds,
    # session 25). The convolutions'
    # drop 0.5 -> 0.1: a model this narrow trained for minutes learns its sounds faster without that noise,
    # free-running WER 0.31 against 0.57 on the bundled corpus and 0.52 against 0.88 on the held-out one
    # at 1000 steps, about 20 minutes (3 seeds; 0.2 gave 0.44 / 0.57; docs/benchmarks.md, session 17).
    # r=3 cuts the decoder steps to a third (the cost on a CPU is the sequential loop) and
    # makes each step move further along the text, which Tacotron 1 reports speeds up alignment; on the
    # bundled corpus it reached a focus rate of 0.44 in 12 minutes where r=2 stayed at 0.41 after 21
    # (benchmarks/alignment.py, with guided attention sigma 0.2). Forward attention: on the flite corpus with
    # phonemes, at 250 steps 12 of 15 free-running lines hit the step limit where location-sensitive
    # attention left all 15 running (word error rates alike, above 100%), and it can neither skip nor repeat.
    "tiny": ModelConfig(
        reduction_factor=3,
        attention="forward",
        embedding_dim=128,
        encoder_conv_channels=128,
        encoder_lstm_dim=64,
        attention_rnn_dim=256,
        attention_dim=64,
        location_filters=16,
        location_kernel_size=15,
        prenet_dims=(128, 128),
        decoder_rnn_dim=256,
        postnet_layers=3,
        postnet_channels=128,
        conv_dropout=0.1,
        # 400 steps x 3 frames = 1200 frames = 13.9 s, twice the longest bundled utterance (6 s)
        max_decoder_steps=400,
    ),
}


# ----------------------------------------------------------------------------- outputs and state


class Tacotron2Output(NamedTuple):
    """Teacher-forced outputs. Frames beyond an item's mel_lens are zero; gate logits beyond them are
    not meaningful (the loss masks them); alignment rows beyond its last decoder step are zero."""

    mels: Tensor  # (B, T_mel, n_mels) decoder output before the postnet
    mels_postnet: Tensor  # (B, T_mel, n_mels) after the residual postnet
    gate_logits: Tensor  # (B, T_dec) one stop logit per decoder step, T_dec = T_mel // r
    alignments: Tensor  # (B, T_dec, T_text) attention weights per decoder step
    # (B, T_mel, n_symbols) the TextRecognizer's log-probabilities per decoder frame; None without one
    recognized: Tensor | None = None


class Inference(NamedTuple):
    mels: Tensor  # (B, T_max, n_mels) postnet mels, zero beyond each item's length
    mel_lens: Tensor  # (B,) long, frames (a multiple of r)
    alignments: Tensor  # (B, T_dec_max, T_text), zero beyond each item's last step
    hit_step_limit: Tensor  # (B,) bool: the item never fired its gate and was cut at max_decoder_steps
    gate_logits: Tensor  # (B, T_dec_max) the stop logit of every step, for plots of why an item stopped


class DecoderState(NamedTuple):
    """Everything one decoder step hands to the next."""

    attention_hidden: Tensor  # (B, attention_rnn_dim)
    attention_cell: Tensor  # (B, attention_rnn_dim)
    decoder_hidden: Tensor  # (B, decoder_rnn_dim)
    decoder_cell: Tensor  # (B, decoder_rnn_dim)
    attention_weights: Tensor  # (B, T_text) this step's alignment
    attention_weights_cum: Tensor  # (B, T_text) sum of all alignments so far
    attention_context: Tensor  # (B, encoder_dim) attention-weighted sum of the memory


class AttentionMemory(NamedTuple):
    """The encoder's output as every decoder step reads it (LocationSensitiveAttention.prepare)."""

    values: Tensor  # (B, T_text, encoder_dim) the memory itself, float32
    processed: Tensor  # (B, T_text, attention_dim) its projection for the energies
    mask: Tensor  # (B, T_text) bool, True at tokens
    energy_bias: Tensor  # (B, T_text) 0 at tokens, -inf at padding
    location_matrix: Tensor  # (2 * location_kernel_size, attention_dim) the location layers as one matrix


# ----------------------------------------------------------------------------- helpers


def mask_from_lens(lens: Tensor, max_len: int) -> Tensor:
    """(B,) lengths -> (B, max_len) bool mask, True at valid positions."""
    # (1, max_len) < (B, 1) -> (B, max_len)
    return torch.arange(max_len, device=lens.device)[None, :] < lens[:, None]


def _xavier(layer: nn.Linear | nn.Conv1d, nonlinearity: str = "linear") -> nn.Linear | nn.Conv1d:
    """Xavier-uniform weights scaled for the nonlinearity that follows, as NVIDIA/tacotron2 initializes
    every Linear and Conv1d; biases keep PyTorch's default."""
    nn.init.xavier_uniform_(layer.weight, gain=nn.init.calculate_gain(nonlinearity))
    return layer


def _zoneout(previous: Tensor, new: Tensor, p: float, training: bool) -> Tensor:
    """Zoneout (Krueger et al. 2016): each unit keeps its previous value with probability p while
    training; at evaluation it takes the expectation, p * previous + (1 - p) * new."""
    if training:
        keep_previous = torch.rand_like(new) < p
        return torch.where(keep_previous, previous, new)
    return p * previous + (1 - p) * new


# ----------------------------------------------------------------------------- encoder


class Encoder(nn.Module):
    """Token IDs -> memory: embedding, convolutions (each ReLU, batch norm, dropout), one BiLSTM."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.conv_dropout = config.conv_dropout
        # NVIDIA draws the embedding uniformly with std sqrt(2 / (n_symbols + dim)): Xavier-uniform
        self.embedding = nn.Embedding(config.n_symbols, config.embedding_dim)
        nn.init.xavier_uniform_(self.embedding.weight)
        channels = [config.embedding_dim] + [config.encoder_conv_channels] * config.encoder_conv_layers
        self.convolutions = nn.ModuleList(
            nn.Sequential(
                _xavier(
                    nn.Conv1d(c_in, c_out, config.encoder_kernel_size, padding=config.encoder_kernel_size // 2),
                    "relu",
                ),
                nn.BatchNorm1d(c_out),
            )
            for c_in, c_out in zip(channels[:-1], channels[1:])
        )
        self.lstm = nn.LSTM(
            config.encoder_conv_channels, config.encoder_lstm_dim, batch_first=True, bidirectional=True
        )

    def forward(self, tokens: Tensor, token_lens: Tensor, host_token_lens: Tensor | None = None) -> Tensor:
        """tokens (B, T_text) long, token_lens (B,) -> memory (B, T_text, encoder_dim), zero at padding.

        `host_token_lens`: the same lengths on the CPU, where the caller has them (the collate made them
        there); without them they are copied back from the device, and the host waits for it."""
        B, T_text = tokens.shape
        x = self.embedding(tokens)  # (B, T_text) -> (B, T_text, embedding_dim)
        # zeroing padding after every layer makes each valid position see exactly what it would see
        # without padding: the next convolution reads zeros there, as at a sequence's real edge
        keep = mask_from_lens(token_lens, T_text).unsqueeze(1).to(x.dtype)  # (B, T_text) -> (B, 1, T_text)
        x = x.transpose(1, 2) * keep  # (B, T_text, embedding_dim) -> (B, embedding_dim, T_text)
        for conv in self.convolutions:
            x = F.dropout(F.relu(conv(x)), self.conv_dropout, self.training) * keep  # (B, C, T_text)
        x = x.transpose(1, 2)  # (B, C, T_text) -> (B, T_text, C)
        # pack_padded_sequence takes its lengths on the CPU whatever the device of the data, longest first. The
        # items are sorted here, on the device, rather than by enforce_sorted=False, whose pad_packed_sequence
        # copies the unsorting order back from the device. The host's lengths sorted are the same values.
        host_token_lens = token_lens.cpu() if host_token_lens is None else host_token_lens
        order = torch.argsort(token_lens, descending=True, stable=True)  # (B,) on the device
        # The LSTM runs in float32 with autocast off: under any autocast on CUDA, cuDNN's RNN is cast to
        # float16 (its autocast wrapper names float16, not autocast's dtype), and a bf16 run has no loss scale
        # to keep its gradients, ~1e-7 at the memory, from underflowing there. It is one call per batch.
        with torch.autocast(x.device.type, enabled=False):
            packed = nn.utils.rnn.pack_padded_sequence(x[order].float(), host_token_lens.sort(descending=True).values,
                                                       batch_first=True)
            outputs, _ = self.lstm(packed)
        # total_length keeps T_text even when the longest item is shorter than the padded width
        memory, _ = nn.utils.rnn.pad_packed_sequence(outputs, batch_first=True, total_length=T_text)
        return memory[torch.argsort(order)]  # back in the batch's order: (B, T_text, 2 * encoder_lstm_dim)


# ----------------------------------------------------------------------------- attention


class LocationSensitiveAttention(nn.Module):
    """Content plus location attention (Chorowski et al. 2015, as used in Tacotron2):

        f_i    = conv([alpha_{i-1}; sum_{k<i} alpha_k])           location features, 2 input channels
        e_ij   = v . tanh(W s_i + V h_j + U f_ij)                  s_i: query, h_j: memory position j
        alpha_i = softmax_j(e_ij), with e_ij = -inf at padding    so padded positions get weight exactly 0
        context_i = sum_j alpha_ij h_j

    With config.attention == "forward", forward attention (Zhang et al. 2018, "Forward attention in
    sequence-to-sequence acoustic modeling for speech synthesis", without the transition agent) reweights
    the softmax y_i by where the previous step was, so each step stays on a token or moves to the next:

        alpha_ij = (alpha_{i-1,j} + alpha_{i-1,j-1}) y_ij / sum_k (alpha_{i-1,k} + alpha_{i-1,k-1}) y_ik
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.forward_attention = config.attention == "forward"
        kernel = config.location_kernel_size
        self.query_layer = _xavier(nn.Linear(config.attention_rnn_dim, config.attention_dim, bias=False), "tanh")
        self.memory_layer = _xavier(nn.Linear(config.encoder_dim, config.attention_dim, bias=False), "tanh")
        self.location_conv = _xavier(nn.Conv1d(2, config.location_filters, kernel, padding=kernel // 2, bias=False))
        self.location_dense = _xavier(nn.Linear(config.location_filters, config.attention_dim, bias=False), "tanh")
        self.v = _xavier(nn.Linear(config.attention_dim, 1, bias=False))

    def prepare(self, memory: Tensor, memory_mask: Tensor) -> AttentionMemory:
        """What every decoder step reads and none changes, computed once per batch, in float32 (see
        Decoder.step): memory (B, T_text, encoder_dim), memory_mask (B, T_text) True at tokens."""
        with torch.autocast(memory.device.type, enabled=False):
            memory = memory.float()
            # location_dense(location_conv(x)) is linear in x and neither has a bias, so the pair is one
            # matrix on each position's window of the two alignment rows: a product per step, not a
            # convolution and a product. (F, 2, k) -> (F, 2k); (A, F) @ (F, 2k) -> (A, 2k) -> (2k, A)
            location_matrix = (self.location_dense.weight @ self.location_conv.weight.flatten(1)).t()
            return AttentionMemory(
                values=memory,
                processed=self.memory_layer(memory),  # V h_j: (B, T_text, attention_dim)
                mask=memory_mask,
                # added to the energies: 0 at tokens, -inf at padding, so padding gets weight exactly 0
                energy_bias=memory.new_zeros(memory_mask.shape).masked_fill(~memory_mask, float("-inf")),
                location_matrix=location_matrix,
            )

    def forward(
        self, query: Tensor, memory: AttentionMemory, previous_weights: Tensor, cumulative_weights: Tensor
    ) -> tuple[Tensor, Tensor]:
        """query (B, attention_rnn_dim); both weights (B, T_text) -> context (B, encoder_dim), weights (B, T_text)."""
        kernel = self.location_conv.kernel_size[0]
        # 2 x (B, T_text) -> (B, 2, T_text), zero-padded as the convolution would be
        location = F.pad(torch.stack([previous_weights, cumulative_weights], dim=1), (kernel // 2, kernel // 2))
        # each position's window: (B, 2, T_text, kernel) -> (B, T_text, 2, kernel) -> (B, T_text, 2 * kernel)
        windows = location.unfold(2, kernel, 1).transpose(1, 2).flatten(2)
        location = windows @ memory.location_matrix  # -> (B, T_text, attention_dim)
        processed_query = self.query_layer(query).unsqueeze(1)  # (B, attention_rnn_dim) -> (B, 1, attention_dim)
        # (B, 1, A) + (B, T_text, A) + (B, T_text, A) -> (B, T_text, A) -> (B, T_text, 1) -> (B, T_text)
        energies = self.v(torch.tanh(processed_query + location + memory.processed)).squeeze(-1)
        weights = torch.softmax(energies + memory.energy_bias, dim=1)  # (B, T_text); exp(-inf) = 0 at padding
        if self.forward_attention:
            weights = _forward_attention(weights, previous_weights, memory.mask)
        # (B, 1, T_text) @ (B, T_text, encoder_dim) -> (B, 1, encoder_dim) -> (B, encoder_dim)
        context = torch.bmm(weights.unsqueeze(1), memory.values).squeeze(1)
        return context, weights


def _forward_attention(weights: Tensor, previous_weights: Tensor, memory_mask: Tensor) -> Tensor:
    """(B, T_text) softmax weights, the previous step's alignment and the token mask -> forward attention."""
    # alpha_{i-1,j-1}: the previous alignment moved one token on, (B, T_text) with zero at j = 0
    moved_on = F.pad(previous_weights[:, :-1], (1, 0))
    weights = ((previous_weights + moved_on) * weights).clamp(min=FORWARD_ATTENTION_FLOOR)
    weights = weights.masked_fill(~memory_mask, 0.0)
    return weights / weights.sum(dim=1, keepdim=True)


# ----------------------------------------------------------------------------- LSTM weight gradients once per pass


class LSTMPass:
    """An nn.LSTMCell as every step of one teacher-forced pass reads it, with its weight gradients
    taken once for the whole pass. Same parameters, same values, same gradients; called as the cell is.

    Why: nn.LSTMCell's backward computes at every step dW = g_t^T [x_t, h_t] from a batch of a few rows,
    a product that writes a whole weight-sized matrix (4096 x 2560 floats, 42 MB, for base's decoder LSTM)
    and adds it to the running sum. Hundreds of steps of that are bound by memory, not arithmetic: 82% of
    a base training step on a CPU (issue #15). Here each step's backward only files (input_t, g_t), and
    the weight gradient is one product over all steps, dW = G^T X, as cuDNN's whole-sequence LSTM does.
    The price: each step's gate gradient (B, 4H) is kept until the end of the backward. Only for passes
    under autograd: without it there is nothing to file, and inference keeps nn.LSTMCell.
    """

    def __init__(self, cell: nn.LSTMCell):
        # (input_t, g_t) of every step whose backward has run; _PassWeight empties it. The autograd nodes
        # hold this list, never this object, so there is no reference cycle through them.
        self.filed: list[tuple[Tensor, Tensor]] = []
        # [W_ih, W_hh]: (4H, in) and (4H, H) -> (4H, in + H), so a step is one product on [x, h]
        self.weight = _PassWeight.apply(cell.weight_ih, cell.weight_hh, self.filed)
        self.bias = cell.bias_ih + cell.bias_hh  # (4H,)

    def __call__(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """x (B, in), (h, c) both (B, H) -> (h', c'): nn.LSTMCell's equations, gates in its order i, f, g, o."""
        hidden, cell_state = state
        inputs = torch.cat([x, hidden], dim=-1)  # (B, in) + (B, H) -> (B, in + H)
        gates = _StepProduct.apply(inputs, self.weight, self.filed) + self.bias  # -> (B, 4H)
        i, f, g, o = gates.chunk(4, dim=-1)  # 4 x (B, H)
        cell_state = torch.sigmoid(f) * cell_state + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(cell_state), cell_state


class _PassWeight(torch.autograd.Function):
    """[W_ih, W_hh] for one pass. Every step's product reads this node's output, so autograd runs its
    backward only after all the steps' backwards; by then they have filed every (input_t, g_t)."""

    @staticmethod
    def forward(ctx, weight_ih: Tensor, weight_hh: Tensor, filed: list) -> Tensor:
        ctx.filed, ctx.in_dim = filed, weight_ih.shape[1]
        ctx.set_materialize_grads(False)  # the steps hand this node no gradient; it ignores its input
        return torch.cat([weight_ih, weight_hh], dim=1)  # (4H, in) + (4H, H) -> (4H, in + H)

    @staticmethod
    def backward(ctx, _):
        if not ctx.filed:  # no step reached the loss
            return None, None, None
        inputs = torch.cat([pair[0] for pair in ctx.filed])  # T x (B, in + H) -> (T * B, in + H)
        grads = torch.cat([pair[1] for pair in ctx.filed])  # T x (B, 4H) -> (T * B, 4H)
        ctx.filed.clear()
        weight_grad = grads.t() @ inputs  # (4H, T * B) @ (T * B, in + H) -> (4H, in + H)
        return weight_grad[:, : ctx.in_dim], weight_grad[:, ctx.in_dim :], None


class _StepProduct(torch.autograd.Function):
    """inputs @ W^T for one step. Its backward returns the gradient of the inputs only and files
    (inputs, gate gradient) for _PassWeight, which makes W's gradient."""

    @staticmethod
    def forward(ctx, inputs: Tensor, weight: Tensor, filed: list) -> Tensor:
        ctx.save_for_backward(inputs, weight)
        ctx.filed = filed
        return inputs @ weight.t()  # (B, in + H) @ (in + H, 4H) -> (B, 4H)

    @staticmethod
    def backward(ctx, grad: Tensor):
        inputs, weight = ctx.saved_tensors
        if ctx.needs_input_grad[1]:
            ctx.filed.append((inputs, grad))
        inputs_grad = grad @ weight if ctx.needs_input_grad[0] else None  # (B, 4H) @ (4H, in + H)
        return inputs_grad, None, None


# ----------------------------------------------------------------------------- decoder


class Prenet(nn.Module):
    """Bottleneck on the previous frame: Linear (no bias) + ReLU + dropout per layer. The dropout is
    on at inference too (paper section 2.3), so it ignores train/eval mode."""

    def __init__(self, in_dim: int, dims: tuple[int, ...], dropout: float):
        super().__init__()
        self.dropout = dropout
        sizes = [in_dim, *dims]
        self.layers = nn.ModuleList(
            _xavier(nn.Linear(d_in, d_out, bias=False)) for d_in, d_out in zip(sizes[:-1], sizes[1:])
        )

    def forward(self, x: Tensor) -> Tensor:
        """(..., in_dim) -> (..., dims[-1])"""
        for layer in self.layers:
            x = F.dropout(F.relu(layer(x)), self.dropout, training=True)
        return x


class Decoder(nn.Module):
    """Autoregressive decoder. One step: prenet(previous frame) -> attention LSTM -> attention ->
    decoder LSTM -> r frames and one stop (gate) logit."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_mels = config.n_mels
        self.r = config.reduction_factor
        self.attention_rnn_dim = config.attention_rnn_dim
        self.decoder_rnn_dim = config.decoder_rnn_dim
        self.attention_dropout = config.attention_dropout
        self.decoder_dropout = config.decoder_dropout
        self.zoneout = config.zoneout
        self.forward_attention = config.attention == "forward"
        memory_dim = config.encoder_dim
        # the input is one frame, the last of the previous step's r (Tacotron 1 / Coqui; NVIDIA feeds all r)
        self.prenet = Prenet(config.n_mels, config.prenet_dims, config.prenet_dropout)
        self.attention_rnn = nn.LSTMCell(config.prenet_dims[-1] + memory_dim, config.attention_rnn_dim)
        self.attention = LocationSensitiveAttention(config)
        self.decoder_rnn = nn.LSTMCell(config.attention_rnn_dim + memory_dim, config.decoder_rnn_dim)
        self.frame_projection = _xavier(nn.Linear(config.decoder_rnn_dim + memory_dim, config.n_mels * self.r))
        self.gate_layer = _xavier(nn.Linear(config.decoder_rnn_dim + memory_dim, 1), "sigmoid")

    def initial_state(self, memory: Tensor) -> DecoderState:
        """All zeros but forward attention's first alignment, in float32 (see step) on the device of
        memory (B, T_text, encoder_dim)."""
        B, T_text, memory_dim = memory.shape
        zeros = functools.partial(torch.zeros, dtype=torch.float32, device=memory.device)
        attention_weights = zeros(B, T_text)
        if self.forward_attention:
            attention_weights[:, 0] = 1.0  # forward attention starts on the first token and moves on from there
        return DecoderState(
            attention_hidden=zeros(B, self.attention_rnn_dim),
            attention_cell=zeros(B, self.attention_rnn_dim),
            decoder_hidden=zeros(B, self.decoder_rnn_dim),
            decoder_cell=zeros(B, self.decoder_rnn_dim),
            attention_weights=attention_weights,
            attention_weights_cum=zeros(B, T_text),
            attention_context=zeros(B, memory_dim),
        )

    def _recur(self, cell: nn.LSTMCell | LSTMPass, x: Tensor, hidden: Tensor, cell_state: Tensor, dropout: float):
        """One LSTM cell update regularized by zoneout (on both hidden and cell) or by dropout on the hidden."""
        new_hidden, new_cell_state = cell(x, (hidden, cell_state))
        if self.zoneout > 0:
            return (
                _zoneout(hidden, new_hidden, self.zoneout, self.training),
                _zoneout(cell_state, new_cell_state, self.zoneout, self.training),
            )
        return F.dropout(new_hidden, dropout, self.training), new_cell_state

    def step(
        self, prenet_output: Tensor, state: DecoderState, memory: AttentionMemory,
        rnns: tuple[LSTMPass, LSTMPass] | None = None,
    ) -> tuple[Tensor, DecoderState]:
        """prenet_output (B, prenet_dims[-1]): the prenet of the previous frame -> the decoder output
        (B, decoder_rnn_dim + encoder_dim) that project() turns into frames, and the next state.
        rnns: the attention and decoder LSTMs as forward() runs them (LSTMPass); by default the cells.

        The step runs in float32 even under autocast: its state goes through hundreds of sequential
        steps, and bf16 (8-bit mantissa) h, c and attention energies drift and blur the alignment.
        The prenet, the projections and the postnet, outside the loop, keep the low precision."""
        attention_rnn, decoder_rnn = rnns or (self.attention_rnn, self.decoder_rnn)
        with torch.autocast(prenet_output.device.type, enabled=False):
            x = torch.cat([prenet_output.float(), state.attention_context], dim=-1)  # (B, prenet + encoder_dim)
            attention_hidden, attention_cell = self._recur(
                attention_rnn, x, state.attention_hidden, state.attention_cell, self.attention_dropout
            )
            context, weights = self.attention(
                attention_hidden, memory, state.attention_weights, state.attention_weights_cum
            )
            x = torch.cat([attention_hidden, context], dim=-1)  # -> (B, attention_rnn_dim + encoder_dim)
            decoder_hidden, decoder_cell = self._recur(
                decoder_rnn, x, state.decoder_hidden, state.decoder_cell, self.decoder_dropout
            )
            output = torch.cat([decoder_hidden, context], dim=-1)  # -> (B, decoder_rnn_dim + encoder_dim)
        state = DecoderState(
            attention_hidden=attention_hidden,
            attention_cell=attention_cell,
            decoder_hidden=decoder_hidden,
            decoder_cell=decoder_cell,
            attention_weights=weights,
            attention_weights_cum=state.attention_weights_cum + weights,
            attention_context=context,
        )
        return output, state

    def compile_step(self) -> None:
        """Run step() through torch.compile from now on (`taco train --compile`): its few dozen small
        operations per decoder step become a few fused kernels, which is for CUDA, where each operation is a
        kernel launch. On the CPU it was no faster: tiny's training step took 0.36 s against 0.32 s eager
        (LSTMPass's filing breaks the graph) and inference 0.27 ms a step both ways, on 2 cores.
        dynamic=True: the batch size and the text length change from batch to batch, and a graph per shape
        would recompile at each new one. The first steps wait for the compilation (tens of seconds)."""
        self.step = torch.compile(self.step, dynamic=True)

    def project(self, outputs: Tensor) -> tuple[Tensor, Tensor]:
        """Decoder outputs (..., decoder_rnn_dim + encoder_dim) -> frames (..., r, n_mels), gate logits (...)."""
        frames = self.frame_projection(outputs).unflatten(-1, (self.r, self.n_mels))
        return frames, self.gate_layer(outputs).squeeze(-1)

    def forward(self, memory: Tensor, memory_mask: Tensor, mels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Teacher forcing: step k reads the last frame of step k-1's r target frames (zeros at k = 0).
        Everything that does not feed the recurrence runs once over all steps, outside the loop: the
        prenet over the known input frames, and the frame and gate projections over the stacked outputs.

        memory (B, T_text, encoder_dim), memory_mask (B, T_text), mels (B, T_mel, n_mels) with T_mel = T_dec * r
        -> frames (B, T_mel, n_mels), gate_logits (B, T_dec), alignments (B, T_dec, T_text).
        """
        B, T_mel, n_mels = mels.shape
        T_dec = steps_for(T_mel, self.r)
        last_frames = last_frame_of_each_step(mels, self.r)  # (B, T_mel, n_mels) -> (B, T_dec, n_mels)
        go_frame = mels.new_zeros(B, 1, n_mels)
        # shift by one step: (B, 1, n_mels) + (B, T_dec - 1, n_mels) -> (B, T_dec, n_mels) -> (B, T_dec, prenet)
        prenet_outputs = self.prenet(torch.cat([go_frame, last_frames[:, :-1]], dim=1))

        state = self.initial_state(memory)
        attention_memory = self.attention.prepare(memory, memory_mask)
        # On the CPU under autograd, both LSTMs take their weight gradients once for the whole pass, not per
        # step (LSTMPass). On CUDA nn.LSTMCell stays: its gates are one fused kernel, the GPU's bandwidth makes
        # the per-step weight gradient cheap, and LSTMPass's extra kernel launches per step are not measured there.
        once_per_pass = torch.is_grad_enabled() and memory.device.type == "cpu"
        rnns = (LSTMPass(self.attention_rnn), LSTMPass(self.decoder_rnn)) if once_per_pass else None
        outputs, alignments = [], []
        for k in range(T_dec):
            output, state = self.step(prenet_outputs[:, k], state, attention_memory, rnns)
            outputs.append(output)
            alignments.append(state.attention_weights)
        # T_dec x (B, D) -> (B, T_dec, D) -> (B, T_dec, r, n_mels) -> (B, T_mel, n_mels)
        frames, gate_logits = self.project(torch.stack(outputs, dim=1))
        alignments = torch.stack(alignments, dim=1)  # T_dec x (B, T_text) -> (B, T_dec, T_text)
        return frames.reshape(B, T_mel, n_mels), gate_logits, alignments

    def infer(
        self, memory: Tensor, memory_mask: Tensor, max_steps: int, gate_threshold: float
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Free running: each step reads the last frame it produced. Every item stops on its own gate
        (a `finished` mask); the loop ends when all have stopped or after max_steps.

        -> frames (B, T_dec * r, n_mels) (not masked), step_lens (B,) long, alignments (B, T_dec, T_text),
        hit_step_limit (B,) bool, gate_logits (B, T_dec).
        """
        B = memory.shape[0]
        state = self.initial_state(memory)
        attention_memory = self.attention.prepare(memory, memory_mask)
        frame = memory.new_zeros(B, self.n_mels)  # the go frame
        finished = torch.zeros(B, dtype=torch.bool, device=memory.device)
        step_lens = torch.zeros(B, dtype=torch.long, device=memory.device)
        frames, alignments, gate_logits = [], [], []
        for k in range(max_steps):
            output, state = self.step(self.prenet(frame), state, attention_memory)
            step_frames, gate_logit = self.project(output)  # (B, r, n_mels), (B,)
            frames.append(step_frames)
            alignments.append(state.attention_weights)
            gate_logits.append(gate_logit)
            # an item's frames include the step whose gate fires (as NVIDIA's inference loop)
            stops_now = ~finished & (torch.sigmoid(gate_logit) > gate_threshold)
            step_lens = step_lens.masked_fill(stops_now, k + 1)
            finished = finished | stops_now
            if (k + 1) % STOP_CHECK_EVERY.get(memory.device.type, GPU_STOP_CHECK_EVERY) == 0 and bool(finished.all()):
                break
            frame = step_frames[:, -1]  # (B, r, n_mels) -> (B, n_mels)
        hit_step_limit = ~finished
        step_lens = step_lens.masked_fill(hit_step_limit, len(frames))
        # T_dec x (B, r, n_mels) -> (B, T_dec, r, n_mels) -> (B, T_dec * r, n_mels)
        frames = torch.stack(frames, dim=1).reshape(B, frames_for(len(frames), self.r), self.n_mels)
        alignments = torch.stack(alignments, dim=1)  # T_dec x (B, T_text) -> (B, T_dec, T_text)
        gate_logits = torch.stack(gate_logits, dim=1)  # T_dec x (B,) -> (B, T_dec)
        return frames, step_lens, alignments, hit_step_limit, gate_logits


# ----------------------------------------------------------------------------- postnet


class Postnet(nn.Module):
    """Residual refinement of the decoder's mels: convolutions with batch norm, tanh on all but the
    last, dropout on all (paper section 2.3)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.conv_dropout = config.conv_dropout
        kernel = config.postnet_kernel_size
        channels = [config.n_mels] + [config.postnet_channels] * (config.postnet_layers - 1) + [config.n_mels]
        last = len(channels) - 2
        self.convolutions = nn.ModuleList(
            nn.Sequential(
                _xavier(nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2), "linear" if i == last else "tanh"),
                nn.BatchNorm1d(c_out),
            )
            for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:]))
        )

    def forward(self, mels: Tensor, mel_mask: Tensor) -> Tensor:
        """mels (B, T_mel, n_mels), mel_mask (B, T_mel) -> residual (B, T_mel, n_mels), zero at padding."""
        # padding is zeroed after every layer so valid frames never see it (see Encoder.forward)
        keep = mel_mask.unsqueeze(1).to(mels.dtype)  # (B, T_mel) -> (B, 1, T_mel)
        x = mels.transpose(1, 2) * keep  # (B, T_mel, n_mels) -> (B, n_mels, T_mel)
        for i, conv in enumerate(self.convolutions):
            x = conv(x)  # (B, C_in, T_mel) -> (B, C_out, T_mel)
            if i < len(self.convolutions) - 1:
                x = torch.tanh(x)
            x = F.dropout(x, self.conv_dropout, self.training) * keep
        return x.transpose(1, 2)  # (B, n_mels, T_mel) -> (B, T_mel, n_mels)


# ----------------------------------------------------------------------------- text recognizer


class TextRecognizer(nn.Module):
    """Reads the text back from the decoder's mels, for a CTC loss during training only (maximizing the
    mutual information between text and predicted frames, Liu et al. 2019, "Maximizing mutual information
    for Tacotron"). Teacher forcing lets the decoder predict a frame from the frame before it and little
    else; a decoder that must also make its frames recognizable has to put the text into them, which is
    what it has to do at inference, where the frame before is its own.

    Two convolutions over time and a per-frame classifier over the symbols; PAD_ID (0), which never
    occurs inside a text, is CTC's blank.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        channels = config.recognizer_channels
        self.convolutions = nn.Sequential(
            nn.Conv1d(config.n_mels, channels, 3, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, padding=1), nn.ReLU(),
        )
        self.classifier = nn.Linear(channels, config.n_symbols)

    def forward(self, mels: Tensor) -> Tensor:
        """mels (B, T_mel, n_mels), zero at padding -> log-probabilities (B, T_mel, n_symbols)."""
        hidden = self.convolutions(mels.transpose(1, 2)).transpose(1, 2)  # (B, T_mel, channels)
        return F.log_softmax(self.classifier(hidden).float(), dim=-1)


# ----------------------------------------------------------------------------- the model


class Tacotron2(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.postnet = Postnet(config)
        self.recognizer = TextRecognizer(config) if config.recognizer_channels else None

    def forward(
        self, tokens: Tensor, token_lens: Tensor, mels: Tensor, mel_lens: Tensor, fed_mels: Tensor | None = None,
        host_token_lens: Tensor | None = None,
    ) -> Tacotron2Output:
        """Teacher-forced pass for training.

        tokens (B, T_text) long, padded with 0; token_lens (B,) long, each >= 1;
        mels (B, T_mel, n_mels) with T_mel a multiple of r (the collate function pads to it);
        mel_lens (B,) true lengths in frames (need not be multiples of r);
        fed_mels: the frames the decoder reads as its previous ones, shaped as mels (default: mels, teacher
        forcing; scheduled sampling mixes in the model's own predictions);
        host_token_lens: token_lens on the CPU, where the caller has them (see Encoder.forward).
        """
        _, T_mel, n_mels = mels.shape
        r = self.config.reduction_factor
        if n_mels != self.config.n_mels:
            raise ValueError(f"mels have {n_mels} channels, the model was built for n_mels={self.config.n_mels}")
        if whole_steps(T_mel, r) != T_mel:
            raise ValueError(f"T_mel ({T_mel}) must be a multiple of reduction_factor ({r}); pad the batch to it")

        decoded, gate_logits, alignments = self.decode(tokens, token_lens, mels if fed_mels is None else fed_mels,
                                                       host_token_lens)

        step_lens = steps_for(mel_lens, r)
        decoded, mels_postnet, alignments = self._postnet_and_masks(decoded, mel_lens, alignments, step_lens)
        recognized = self.recognizer(decoded) if self.recognizer is not None else None
        return Tacotron2Output(decoded, mels_postnet, gate_logits, alignments, recognized)

    def decode(self, tokens: Tensor, token_lens: Tensor, fed_mels: Tensor, host_token_lens: Tensor | None = None
               ) -> tuple[Tensor, Tensor, Tensor]:
        """The encoder and the decoder reading `fed_mels` (B, T_mel, n_mels) as their previous frames, without
        the postnet and the masks: (frames (B, T_mel, n_mels), gate logits (B, T_dec), alignments
        (B, T_dec, T_text)). Frames past an item's end are not zeroed."""
        memory_mask = mask_from_lens(token_lens, tokens.shape[1])  # (B, T_text)
        memory = self.encoder(tokens, token_lens, host_token_lens)  # (B, T_text) -> (B, T_text, encoder_dim)
        return self.decoder(memory, memory_mask, fed_mels)

    @torch.no_grad()
    def infer(self, tokens: Tensor, token_lens: Tensor, max_decoder_steps: int | None = None) -> Inference:
        """Synthesize a whole batch; each item stops on its own gate. Call model.eval() first (the
        prenet's dropout stays on regardless, as in the paper). Runs without autograd."""
        B, T_text = tokens.shape
        r = self.config.reduction_factor
        max_steps = self.config.max_decoder_steps if max_decoder_steps is None else max_decoder_steps
        if max_steps < 1:
            raise ValueError(f"max_decoder_steps must be positive, got {max_steps}")

        memory_mask = mask_from_lens(token_lens, T_text)  # (B, T_text)
        memory = self.encoder(tokens, token_lens)  # (B, T_text) -> (B, T_text, encoder_dim)
        decoded, step_lens, alignments, hit_step_limit, gate_logits = self.decoder.infer(
            memory, memory_mask, max_steps, self.config.gate_threshold
        )
        mel_lens = frames_for(step_lens, r)
        _, mels, alignments = self._postnet_and_masks(decoded, mel_lens, alignments, step_lens)
        return Inference(mels, mel_lens, alignments, hit_step_limit, gate_logits)

    def _postnet_and_masks(
        self, decoded: Tensor, mel_lens: Tensor, alignments: Tensor, step_lens: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Zero each item's frames past mel_lens and its alignment rows past step_lens, and add the postnet.

        decoded (B, T_mel, n_mels) -> (decoded, postnet mels), both (B, T_mel, n_mels);
        alignments (B, T_dec, T_text) -> the same, masked.
        """
        mel_mask = mask_from_lens(mel_lens, decoded.shape[1])  # (B, T_mel)
        keep = mel_mask.unsqueeze(-1).to(decoded.dtype)  # (B, T_mel) -> (B, T_mel, 1)
        decoded = decoded * keep
        # the postnet reads nothing after an item's end (it masks its input), and nothing after it is kept
        mels_postnet = (decoded + self.postnet(decoded, mel_mask)) * keep
        step_mask = mask_from_lens(step_lens, alignments.shape[1]).unsqueeze(-1).to(alignments.dtype)
        return decoded, mels_postnet, alignments * step_mask
