"""taco: a Tacotron2 text-to-speech toolkit, from corpus to audio.

The Python API behind each `taco` command:

    from taco import (preprocess, FeatureStore, load_config, train, synthesize, Synthesizer, inspect,
                      evaluate_intelligibility, Vocoder, vocode_files)

    preprocess("corpus/ljspeech_flite", "stores/demo")             # taco preprocess
    store = FeatureStore("stores/demo")
    tokens, mel = store[0]                   # (n_tokens,) int64, (n_frames, n_mels) float32
    model_config, train_config = load_config("tiny")
    train("stores/demo", "runs/demo", model_config, train_config)   # taco train
    [utterance] = synthesize("runs/demo/checkpoints/best.pt", ["Hello."])   # taco synth
    for i, utterance in Synthesizer("runs/demo/checkpoints/best.pt").synthesize_each(lines):  # as each batch ends
        ...                                                                   # (taco synth --text-file)
    vocoder = Vocoder.from_file("LJ_V1/generator_v1")   # a public HiFi-GAN generator, its config.json beside it
    [utterance] = synthesize("runs/demo/checkpoints/best.pt", ["Hello."], vocoder=vocoder)  # taco synth --vocoder
    vocode_files("LJ_V1/generator_v1", ["synth.npy"], "wavs")                               # taco vocode
    report = inspect("runs/demo/checkpoints/best.pt", "alignment", store_dir="stores/demo", split="val")
    # Ctrl-C there writes the report of what was done and raises taco.Interrupted, which says so
    wers = evaluate_intelligibility("runs/demo/checkpoints/best.pt", "stores/demo")  # pip install -e '.[bench]'
"""

import importlib

# Imported on first use (PEP 562): preprocessing workers import taco.features, and importing the whole
# API with them would load tensorboard and matplotlib into every worker for nothing.
_EXPORTS = {
    "FeatureConfig": "taco.features.mel",
    "FeatureStore": "taco.features.store",
    "StoreError": "taco.features.store",
    "TextConfig": "taco.features.text",
    "encode": "taco.features.text",
    "preprocess": "taco.features.preprocess",
    "summarize": "taco.features.summary",
    "ModelConfig": "taco.pipeline.model",
    "Tacotron2": "taco.pipeline.model",
    "TrainConfig": "taco.pipeline.train_config",
    "train": "taco.pipeline.train",
    "load_config": "taco.pipeline.presets",
    "SynthConfig": "taco.pipeline.synth",
    "Synthesizer": "taco.pipeline.synth",
    "synthesize": "taco.pipeline.synth",
    "HiFiGANConfig": "taco.pipeline.hifigan",
    "Vocoder": "taco.pipeline.vocoder",
    "VocoderError": "taco.pipeline.vocoder",
    "vocode_files": "taco.pipeline.vocoder",
    "inspect": "taco.pipeline.inspect",
    "evaluate_intelligibility": "taco.pipeline.intelligibility",
    "score_alignment": "taco.pipeline.alignment",
    "Interrupted": "taco.signals",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'taco' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
