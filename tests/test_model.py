"""Tacotron2: shapes, masks, padding independence, per-item stopping, configs, and that it learns."""

import dataclasses
import json

import pytest
import torch
from torch.nn import functional as F

from taco.pipeline import model as model_module
from taco.pipeline.model import PRESETS, DecoderState, LSTMPass, ModelConfig, Tacotron2, mask_from_lens

from conftest import stop_after_one_step_per_token

# Small enough that every test runs in well under a second on 2 CPU cores.
SMALL = ModelConfig(
    n_symbols=20,
    n_mels=12,
    embedding_dim=16,
    encoder_conv_layers=2,
    encoder_conv_channels=16,
    encoder_kernel_size=3,
    encoder_lstm_dim=8,
    attention_rnn_dim=24,
    attention_dim=8,
    location_filters=4,
    location_kernel_size=5,
    prenet_dims=(16, 16),
    decoder_rnn_dim=24,
    postnet_layers=3,
    postnet_channels=16,
    postnet_kernel_size=3,
    max_decoder_steps=20,
)
NO_DROPOUT = dict(prenet_dropout=0.0, conv_dropout=0.0, attention_dropout=0.0, decoder_dropout=0.0)


def small(**overrides) -> ModelConfig:
    return dataclasses.replace(SMALL, **overrides)


def make_model(config: ModelConfig, seed: int = 0) -> Tacotron2:
    torch.manual_seed(seed)
    return Tacotron2(config)


def make_batch(config: ModelConfig, token_lens: list[int], mel_lens: list[int], seed: int = 0, garbage_padding=False):
    """Random tokens and mels; padding is 0 (as collate pads), or random garbage to show it cannot matter.
    T_mel is the longest mel length rounded up to a multiple of r."""
    generator = torch.Generator().manual_seed(seed)
    r = config.reduction_factor
    B, T_text = len(token_lens), max(token_lens)
    T_mel = -(-max(mel_lens) // r) * r
    tokens = torch.randint(1, config.n_symbols, (B, T_text), generator=generator)
    mels = torch.randn(B, T_mel, config.n_mels, generator=generator)
    for b, (n_tokens, n_frames) in enumerate(zip(token_lens, mel_lens)):
        if not garbage_padding:
            tokens[b, n_tokens:] = 0
            mels[b, n_frames:] = 0
    return tokens, torch.tensor(token_lens), mels, torch.tensor(mel_lens)


def n_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize("r", [1, 2])
def test_forward_shapes_for_a_padded_batch(r):
    config = small(reduction_factor=r)
    model = make_model(config)
    tokens, token_lens, mels, mel_lens = make_batch(config, [7, 5, 3], [12, 9, 5])
    B, T_text = tokens.shape
    T_mel = mels.shape[1]
    out = model(tokens, token_lens, mels, mel_lens)
    assert out.mels.shape == out.mels_postnet.shape == (B, T_mel, config.n_mels)
    assert out.gate_logits.shape == (B, T_mel // r)
    assert out.alignments.shape == (B, T_mel // r, T_text)
    for b, n_frames in enumerate(mel_lens.tolist()):
        n_steps = -(-n_frames // r)
        assert out.mels[b, n_frames:].abs().sum() == 0
        assert out.mels_postnet[b, n_frames:].abs().sum() == 0
        assert out.alignments[b, n_steps:].abs().sum() == 0
        assert out.mels[b, :n_frames].abs().min() > 0


def test_a_text_recognizer_gives_each_frame_a_distribution_over_the_symbols_and_none_without_one():
    tokens, token_lens, mels, mel_lens = make_batch(SMALL, [7, 5], [12, 9])
    assert make_model(SMALL)(tokens, token_lens, mels, mel_lens).recognized is None

    config = small(recognizer_channels=8)
    recognized = make_model(config)(tokens, token_lens, mels, mel_lens).recognized
    assert recognized.shape == (2, mels.shape[1], config.n_symbols)
    assert torch.allclose(recognized.exp().sum(-1), torch.ones(2, mels.shape[1]))


def test_forward_rejects_mels_not_a_multiple_of_r_or_of_the_wrong_width():
    model = make_model(small(reduction_factor=2))
    tokens, token_lens, mels, mel_lens = make_batch(small(reduction_factor=2), [4, 3], [8, 6])
    with pytest.raises(ValueError, match="multiple of reduction_factor"):
        model(tokens, token_lens, mels[:, :7], mel_lens.clamp(max=7))
    with pytest.raises(ValueError, match="n_mels"):
        model(tokens, token_lens, mels[..., :5], mel_lens)


@pytest.mark.parametrize("attention", ["location", "forward"])
@pytest.mark.parametrize("r", [1, 2])
def test_attention_is_exactly_zero_on_padded_tokens_and_each_row_sums_to_one(r, attention):
    config = small(reduction_factor=r, attention=attention)
    model = make_model(config)
    tokens, token_lens, mels, mel_lens = make_batch(config, [8, 3, 5], [10, 10, 10])
    alignments = model(tokens, token_lens, mels, mel_lens).alignments
    set_gate_bias(model, -50.0)  # every item runs all 6 steps
    inferred = model.infer(tokens, token_lens, max_decoder_steps=6).alignments
    for weights in (alignments, inferred):
        for b, n_tokens in enumerate(token_lens.tolist()):
            assert torch.all(weights[b, :, n_tokens:] == 0)
            torch.testing.assert_close(weights[b].sum(-1), torch.ones(weights.shape[1]))


@pytest.mark.parametrize("attention", ["location", "forward"])
@pytest.mark.parametrize("r", [1, 2])
def test_an_items_forward_output_does_not_depend_on_padding_or_batch_mates(r, attention):
    config = small(reduction_factor=r, attention=attention, **NO_DROPOUT)
    model = make_model(config).eval()
    # item 0 is the shortest in both tokens and frames; its padding is filled with random garbage
    tokens, token_lens, mels, mel_lens = make_batch(config, [4, 9, 6], [7, 15, 10], garbage_padding=True)
    n_tokens, n_frames = 4, 7
    n_steps = -(-n_frames // r)
    batched = model(tokens, token_lens, mels, mel_lens)
    alone = model(tokens[:1, :n_tokens], token_lens[:1], mels[:1, : n_steps * r], mel_lens[:1])

    def close(a, b):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)

    close(batched.mels[0, :n_frames], alone.mels[0, :n_frames])
    close(batched.mels_postnet[0, :n_frames], alone.mels_postnet[0, :n_frames])
    close(batched.gate_logits[0, :n_steps], alone.gate_logits[0, :n_steps])
    close(batched.alignments[0, :n_steps, :n_tokens], alone.alignments[0, :n_steps])


def test_forward_attention_starts_on_the_first_token_and_moves_at_most_one_token_per_step():
    config = small(attention="forward")
    model = make_model(config).eval()
    tokens, token_lens, mels, mel_lens = make_batch(config, [9, 6], [20, 20])
    set_gate_bias(model, -50.0)  # every item runs all 20 steps
    for alignments in (model(tokens, token_lens, mels, mel_lens).alignments,
                       model.infer(tokens, token_lens, max_decoder_steps=20).alignments):
        for b, n_tokens in enumerate(token_lens.tolist()):
            # the mass a step may hold: the previous step's tokens and the ones right after them
            reachable = torch.zeros(n_tokens, dtype=torch.bool)
            reachable[0] = True
            for weights in alignments[b, :, :n_tokens]:
                reachable = reachable | F.pad(reachable[:-1], (1, 0))
                assert weights[~reachable].sum() < 1e-4
                reachable = weights > 1e-4


def test_decoder_state_is_explicit_so_a_step_can_be_replayed():
    config = small(**NO_DROPOUT)
    model = make_model(config).eval()
    tokens, token_lens, _, _ = make_batch(config, [5, 3], [4, 4])
    memory = model.encoder(tokens, token_lens)
    attention_memory = model.decoder.attention.prepare(memory, mask_from_lens(token_lens, tokens.shape[1]))
    state = model.decoder.initial_state(memory)
    assert isinstance(state, DecoderState)
    prenet_output = model.decoder.prenet(torch.randn(2, config.n_mels))
    first = model.decoder.step(prenet_output, state, attention_memory)
    again = model.decoder.step(prenet_output, state, attention_memory)
    frames, gate_logits = model.decoder.project(first[0])
    assert frames.shape == (2, config.reduction_factor, config.n_mels)
    assert gate_logits.shape == (2,)
    torch.testing.assert_close(first[0], again[0])
    assert not any(isinstance(value, torch.Tensor) for value in vars(model.decoder).values())


@pytest.mark.parametrize("attention", ["location", "forward"])
@pytest.mark.parametrize("r", [1, 3])
def test_teacher_forcing_equals_stepping_the_decoder_one_step_at_a_time(r, attention):
    """forward() runs the prenet and the projections once over all steps, outside the loop, and takes the
    LSTM weight gradients once over all steps (LSTMPass); that must be the same computation, values and
    gradients, as feeding each step the previous step's last target frame through the plain nn.LSTMCells."""
    config = small(reduction_factor=r, attention=attention, **NO_DROPOUT)
    model = make_model(config).eval()
    tokens, token_lens, mels, mel_lens = make_batch(config, [6, 4], [9, 9])
    memory_mask = mask_from_lens(token_lens, tokens.shape[1])
    decoder = model.decoder

    def loss(frames, gate_logits, alignments):  # every output reaches it, alignments through a nonlinearity
        return frames.square().mean() + gate_logits.sin().mean() + alignments.square().sum()

    def gradients():
        grads = {name: parameter.grad for name, parameter in decoder.named_parameters()}
        model.zero_grad(set_to_none=True)
        return grads

    memory = model.encoder(tokens, token_lens)
    frames, gate_logits, alignments = decoder(memory, memory_mask, mels)
    loss(frames, gate_logits, alignments).backward()
    forward_grads = gradients()

    memory = model.encoder(tokens, token_lens)
    state, attention_memory = decoder.initial_state(memory), decoder.attention.prepare(memory, memory_mask)
    frame = torch.zeros(2, config.n_mels)
    stepped = []
    for k in range(mels.shape[1] // r):
        output, state = decoder.step(decoder.prenet(frame), state, attention_memory)
        step_frames, gate_logit = decoder.project(output)
        torch.testing.assert_close(frames[:, k * r : (k + 1) * r], step_frames)
        torch.testing.assert_close(gate_logits[:, k], gate_logit)
        torch.testing.assert_close(alignments[:, k], state.attention_weights)
        stepped.append((step_frames, gate_logit, state.attention_weights))
        frame = mels[:, (k + 1) * r - 1]
    step_frames, gate_logit, weights = (torch.stack(outputs, dim=1) for outputs in zip(*stepped))
    loss(step_frames.flatten(1, 2), gate_logit, weights).backward()
    stepped_grads = gradients()
    assert forward_grads.keys() == stepped_grads.keys()
    for name, grad in stepped_grads.items():
        assert grad is not None, name
        torch.testing.assert_close(forward_grads[name], grad, msg=name)


def test_lstm_pass_has_the_values_and_gradients_of_lstm_cell():
    """LSTMPass takes the weight gradients once over all steps (issue #15); all else is nn.LSTMCell's."""
    torch.manual_seed(0)
    cell = torch.nn.LSTMCell(5, 7)
    inputs = torch.randn(4, 3, 5, requires_grad=True)  # 4 steps of (B=3, 5)

    def run(lstm):
        hidden = cell_state = torch.zeros(3, 7)
        outputs = []
        for x in inputs:
            hidden, cell_state = lstm(x, (hidden, cell_state))
            outputs.append(hidden * cell_state)
        # the last step does not reach the loss: its backward never runs, and it files nothing
        loss = torch.stack(outputs[:-1]).sin().sum()
        return [loss, *torch.autograd.grad(loss, [inputs, *cell.parameters()])]

    for expected, actual in zip(run(cell), run(LSTMPass(cell))):
        torch.testing.assert_close(actual, expected)


def test_only_a_pass_under_autograd_uses_lstm_pass(monkeypatch):
    """A training pass on the CPU files the two decoder LSTMs' weight gradients once per pass (LSTMPass);
    inference and no_grad passes keep nn.LSTMCell: nothing to file, nothing to pay for."""
    wrapped = []

    def counting(cell):
        wrapped.append(cell)
        return LSTMPass(cell)

    monkeypatch.setattr(model_module, "LSTMPass", counting)
    config = small()
    model = make_model(config)
    tokens, token_lens, mels, mel_lens = make_batch(config, [5, 3], [6, 4])
    model(tokens, token_lens, mels, mel_lens)
    assert wrapped == [model.decoder.attention_rnn, model.decoder.decoder_rnn]
    with torch.no_grad():
        model(tokens, token_lens, mels, mel_lens)
    model.eval().infer(tokens, token_lens, max_decoder_steps=3)
    assert len(wrapped) == 2


def test_location_features_equal_the_papers_convolution_then_dense_layer():
    config = small()
    attention = make_model(config).decoder.attention
    B, T_text = 2, 7
    previous, cumulative = torch.rand(B, T_text), torch.rand(B, T_text)
    memory = attention.prepare(torch.randn(B, T_text, config.encoder_dim), torch.ones(B, T_text, dtype=torch.bool))
    kernel = config.location_kernel_size
    # (B, 2, T_text) -> conv -> (B, filters, T_text) -> (B, T_text, filters) -> dense -> (B, T_text, attention_dim)
    convolved = F.conv1d(torch.stack([previous, cumulative], dim=1), attention.location_conv.weight, padding=kernel // 2)
    expected = attention.location_dense(convolved.transpose(1, 2))
    windows = F.pad(torch.stack([previous, cumulative], dim=1), (kernel // 2, kernel // 2)).unfold(2, kernel, 1)
    torch.testing.assert_close(windows.transpose(1, 2).flatten(2) @ memory.location_matrix, expected)


def test_a_decoder_step_under_autocast_keeps_its_recurrence_and_attention_in_float32():
    """On CUDA, autocast would run LSTMCell and the attention's linear layers in bf16 for hundreds of
    sequential steps; the step turns it off for itself. On the CPU the linear layers are on autocast's list."""
    config = small()
    model = make_model(config).eval()
    tokens, token_lens, mels, mel_lens = make_batch(config, [5, 3], [6, 6])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        memory = model.encoder(tokens, token_lens)
        decoder = model.decoder
        attention_memory = decoder.attention.prepare(memory, mask_from_lens(token_lens, tokens.shape[1]))
        prenet_output = decoder.prenet(mels[:, 0])
        assert prenet_output.dtype == torch.bfloat16  # the prenet keeps the low precision
        output, state = decoder.step(prenet_output, decoder.initial_state(memory), attention_memory)
        assert output.dtype == torch.float32
        assert all(tensor.dtype == torch.float32 for tensor in state)
        assert model(tokens, token_lens, mels, mel_lens).alignments.dtype == torch.float32


def test_a_compiled_decoder_step_gives_the_eager_outputs_gradients_and_inference():
    """`taco train --compile` (issue #15) changes the kernels, not the values: on batches of two shapes
    (the graph is compiled for any batch size and text length), teacher-forced with autograd, and free-running."""
    config = small(**NO_DROPOUT)
    eager, compiled = make_model(config), make_model(config)
    compiled.decoder.compile_step()
    for token_lens, mel_lens in (([5, 3], [6, 4]), ([7, 6, 2], [8, 8, 5])):
        tokens, token_lens, mels, mel_lens = make_batch(config, token_lens, mel_lens)
        results = []
        for model in (eager, compiled):
            output = model(tokens, token_lens, mels, mel_lens)
            loss = output.mels_postnet.square().mean() + output.gate_logits.sigmoid().mean()
            results.append([output.mels_postnet, output.alignments, *torch.autograd.grad(loss, list(model.parameters()))])
        for expected, actual in zip(*results):
            torch.testing.assert_close(actual, expected)
    inferred = [model.eval().infer(tokens, token_lens, max_decoder_steps=6) for model in (eager, compiled)]
    torch.testing.assert_close(inferred[1], inferred[0])


def test_the_encoder_lstm_runs_in_float32_with_autocast_off():
    """Under any autocast on CUDA, cuDNN's RNN would run in float16 (its autocast wrapper names float16),
    unscaled under bf16: the encoder turns autocast off for its LSTM and gives it float32."""
    config = small()
    model = make_model(config).eval()
    tokens, token_lens, _, _ = make_batch(config, [5, 3], [6, 6])
    seen = []
    real_forward = model.encoder.lstm.forward
    model.encoder.lstm.forward = lambda packed: (seen.append((torch.is_autocast_enabled("cpu"), packed.data.dtype))
                                                 or real_forward(packed))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.encoder(tokens, token_lens)
    assert seen == [(False, torch.float32)]


# ----------------------------------------------------------------------------- inference


def set_gate_bias(model: Tacotron2, bias: float) -> None:
    with torch.no_grad():
        model.decoder.gate_layer.weight.zero_()
        model.decoder.gate_layer.bias.fill_(bias)


@pytest.mark.parametrize("r", [1, 2])
def test_infer_stops_every_item_at_the_first_step_when_the_gate_always_fires(r):
    config = small(reduction_factor=r)
    model = make_model(config).eval()
    set_gate_bias(model, 50.0)
    tokens, token_lens, _, _ = make_batch(config, [6, 2, 4], [1, 1, 1])
    result = model.infer(tokens, token_lens)
    assert result.mel_lens.tolist() == [r, r, r]
    assert result.mel_lens.dtype == torch.long
    assert not result.hit_step_limit.any()
    assert result.mels.shape == (3, r, config.n_mels)
    assert result.alignments.shape == (3, 1, 6)


@pytest.mark.parametrize("r", [1, 2])
def test_infer_reports_items_cut_at_the_step_limit_when_the_gate_never_fires(r):
    config = small(reduction_factor=r)
    model = make_model(config).eval()
    set_gate_bias(model, -50.0)
    tokens, token_lens, _, _ = make_batch(config, [6, 2], [1, 1])
    result = model.infer(tokens, token_lens, max_decoder_steps=7)
    assert result.hit_step_limit.tolist() == [True, True]
    assert result.mel_lens.tolist() == [7 * r, 7 * r]
    assert result.mels.shape == (2, 7 * r, config.n_mels)
    # the config's limit applies when none is given
    assert model.infer(tokens, token_lens).mel_lens.tolist() == [config.max_decoder_steps * r] * 2


@pytest.mark.parametrize("r", [1, 2])
def test_infer_stops_each_item_on_its_own_gate_and_zeroes_what_follows(r):
    config = small(reduction_factor=r)
    model = make_model(config).eval()
    stop_after_one_step_per_token(model)
    token_lens = [3, 6, 12, 4]  # 12 tokens would need 12 steps: more than the limit of 8
    tokens, token_lens, _, _ = make_batch(config, token_lens, [1] * 4)
    result = model.infer(tokens, token_lens, max_decoder_steps=8)
    assert result.mel_lens.tolist() == [3 * r, 6 * r, 8 * r, 4 * r]
    assert result.hit_step_limit.tolist() == [False, False, True, False]
    assert result.mels.shape == (4, 8 * r, config.n_mels)
    for b, n_frames in enumerate(result.mel_lens.tolist()):
        assert result.mels[b, :n_frames].abs().min() > 0
        assert torch.all(result.mels[b, n_frames:] == 0)
        assert torch.all(result.alignments[b, n_frames // r :] == 0)
    # the loop ends as soon as every item has stopped
    short = model.infer(tokens[[0, 3]], token_lens[[0, 3]], max_decoder_steps=8)
    assert short.mels.shape[1] == 4 * r


def test_looking_for_the_end_every_few_steps_gives_each_item_the_same_output(monkeypatch):
    """On a GPU the loop looks whether every item has stopped only every few steps (a look makes the host wait
    for the device): the batch then decodes a few steps more, which each item's length cuts off."""
    config = small(reduction_factor=2)
    model = make_model(config).eval()
    stop_after_one_step_per_token(model)
    tokens, token_lens, _, _ = make_batch(config, [3, 6, 4], [1] * 3)
    torch.manual_seed(0)  # the prenet's dropout, on at inference
    every_step = model.infer(tokens, token_lens, max_decoder_steps=20)
    monkeypatch.setitem(model_module.STOP_CHECK_EVERY, "cpu", 4)
    torch.manual_seed(0)
    every_fourth = model.infer(tokens, token_lens, max_decoder_steps=20)

    assert every_step.mels.shape[1] == 12 and every_fourth.mels.shape[1] == 16  # 6 steps of 2 frames; 8
    assert torch.equal(every_step.mel_lens, every_fourth.mel_lens)
    assert torch.equal(every_step.hit_step_limit, every_fourth.hit_step_limit)
    assert torch.equal(every_step.mels, every_fourth.mels[:, :12])
    assert torch.equal(every_step.alignments, every_fourth.alignments[:, :6])
    assert torch.equal(every_step.gate_logits, every_fourth.gate_logits[:, :6])
    assert not every_fourth.mels[:, 12:].any() and not every_fourth.alignments[:, 6:].any()


@pytest.mark.parametrize("r", [1, 2])
def test_inference_of_an_item_does_not_depend_on_its_batch_mates(r):
    # prenet dropout stays on at inference, so it is switched off here to compare runs
    config = small(reduction_factor=r, **NO_DROPOUT)
    model = make_model(config).eval()
    stop_after_one_step_per_token(model)
    tokens, token_lens, _, _ = make_batch(config, [4, 9, 6], [1, 1, 1], garbage_padding=True)
    batched = model.infer(tokens, token_lens)
    for b, n_tokens in enumerate(token_lens.tolist()):
        alone = model.infer(tokens[b : b + 1, :n_tokens], token_lens[b : b + 1])
        n_frames = alone.mel_lens.item()
        assert batched.mel_lens[b].item() == n_frames == n_tokens * r
        torch.testing.assert_close(batched.mels[b, :n_frames], alone.mels[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(
            batched.alignments[b, : n_frames // r, :n_tokens], alone.alignments[0], atol=1e-5, rtol=0
        )


def test_infer_rejects_a_step_limit_below_one():
    model = make_model(SMALL)
    tokens, token_lens, _, _ = make_batch(SMALL, [3], [1])
    with pytest.raises(ValueError, match="max_decoder_steps"):
        model.infer(tokens, token_lens, max_decoder_steps=0)


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_round_trips_through_json(name):
    config = PRESETS[name]
    values = json.loads(json.dumps(config.to_dict()))
    assert values["prenet_dims"] == list(config.prenet_dims)
    restored = ModelConfig.from_dict(values)
    assert restored == config
    assert isinstance(restored.prenet_dims, tuple)


def test_from_dict_names_unknown_fields():
    with pytest.raises(ValueError, match="n_mel_channels"):
        ModelConfig.from_dict({**SMALL.to_dict(), "n_mel_channels": 80})


@pytest.mark.parametrize(
    "field, value",
    [
        ("n_mels", 0),
        ("n_symbols", -3),
        ("reduction_factor", 1.5),
        ("attention_rnn_dim", True),
        ("encoder_kernel_size", 4),
        ("location_kernel_size", 30),
        ("postnet_kernel_size", 2),
        ("prenet_dims", ()),
        ("prenet_dims", (256, 0)),
        ("prenet_dropout", 1.0),
        ("conv_dropout", -0.1),
        ("zoneout", 1.2),
        ("gate_threshold", 0.0),
        ("attention", "monotonic"),
        ("max_decoder_steps", 0),
        ("recognizer_channels", -1),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        small(**{field: value})


def test_zoneout_replaces_the_rnn_dropouts():
    with pytest.raises(ValueError, match="zoneout"):
        small(zoneout=0.1)
    config = small(zoneout=0.1, **NO_DROPOUT)
    model = make_model(config)
    tokens, token_lens, mels, mel_lens = make_batch(config, [5, 3], [6, 4])
    torch.manual_seed(1)
    first = model(tokens, token_lens, mels, mel_lens).mels
    torch.manual_seed(2)
    second = model(tokens, token_lens, mels, mel_lens).mels
    assert not torch.allclose(first, second)  # zoneout's masks are the only randomness left
    model.eval()
    expected = model(tokens, token_lens, mels, mel_lens).mels
    torch.testing.assert_close(model(tokens, token_lens, mels, mel_lens).mels, expected, rtol=0, atol=0)
    without = make_model(small(**NO_DROPOUT)).eval()  # the same weights
    assert not torch.allclose(without(tokens, token_lens, mels, mel_lens).mels, expected)


def test_zoneout_keeps_each_unit_with_probability_p_and_takes_the_expectation_at_evaluation():
    previous, new = torch.zeros(100_000), torch.ones(100_000)
    torch.manual_seed(0)
    kept = (model_module._zoneout(previous, new, 0.1, training=True) == 0).float().mean().item()
    assert kept == pytest.approx(0.1, abs=0.005)  # 5 standard deviations
    torch.testing.assert_close(model_module._zoneout(previous, new, 0.1, training=False), torch.full((100_000,), 0.9))


def test_base_preset_has_the_paper_sizes_and_nvidias_parameter_count():
    base = PRESETS["base"]
    assert base == ModelConfig()
    assert (base.embedding_dim, base.encoder_conv_layers, base.encoder_conv_channels, base.encoder_kernel_size) == (
        512, 3, 512, 5,
    )
    assert (base.encoder_dim, base.attention_rnn_dim, base.decoder_rnn_dim) == (512, 1024, 1024)
    assert base.attention_dim == 128
    assert (base.location_filters, base.location_kernel_size, base.prenet_dims) == (32, 31, (256, 256))
    assert (base.postnet_layers, base.postnet_channels, base.postnet_kernel_size) == (5, 512, 5)
    assert (base.reduction_factor, base.n_mels, base.gate_threshold, base.max_decoder_steps) == (1, 80, 0.5, 1000)
    # NVIDIA/tacotron2 with its 148 symbols has the same layers at r=1: 28.19M parameters
    count = n_parameters(Tacotron2(dataclasses.replace(base, n_symbols=148)))
    assert 28.0e6 < count < 28.4e6


def test_tiny_preset_is_small():
    tiny = PRESETS["tiny"]
    assert tiny.reduction_factor == 3
    assert n_parameters(Tacotron2(tiny)) < 3e6


def test_n_mels_comes_from_the_config_end_to_end():
    config = dataclasses.replace(PRESETS["tiny"], n_mels=20)
    model = make_model(config)
    tokens, token_lens, mels, mel_lens = make_batch(config, [6, 4], [8, 5])
    out = model(tokens, token_lens, mels, mel_lens)
    assert out.mels.shape == out.mels_postnet.shape == (2, mels.shape[1], 20)
    (out.mels.square().mean() + out.mels_postnet.square().mean()).backward()
    result = model.eval().infer(tokens, token_lens, max_decoder_steps=3)
    assert result.mels.shape[-1] == 20


# ----------------------------------------------------------------------------- learning


def test_adam_steps_on_a_fixed_batch_reduce_the_loss_and_reach_every_parameter():
    config = small(**NO_DROPOUT)
    model = make_model(config)
    tokens, token_lens, mels, mel_lens = make_batch(config, [7, 5], [14, 10])
    stop_targets = torch.zeros(2, 14)  # 1 from each item's last frame on (r = 1)
    stop_targets[0, 13:] = 1
    stop_targets[1, 9:] = 1
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        out = model(tokens, token_lens, mels, mel_lens)
        loss = (
            F.mse_loss(out.mels, mels)
            + F.mse_loss(out.mels_postnet, mels)
            + F.binary_cross_entropy_with_logits(out.gate_logits, stop_targets)
        )
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            for name, parameter in model.named_parameters():
                assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]
