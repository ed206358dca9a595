"""taco: a Tacotron2 text-to-speech toolkit, from corpus to audio.

The Python API behind each `taco` command:

    from taco import FeatureConfig, TextConfig, preprocess, summarize, FeatureStore
    summary = preprocess("corpus/ljspeech_espeak", "stores/demo", FeatureConfig(normalization="log"))
    store = FeatureStore("stores/demo")
    tokens, mel = store[0]   # (n_tokens,) int64, (n_frames, n_mels) float32
"""

from taco.features.mel import FeatureConfig
from taco.features.preprocess import preprocess
from taco.features.store import FeatureStore, StoreError
from taco.features.summary import summarize
from taco.features.text import TextConfig, encode

__all__ = ["FeatureConfig", "FeatureStore", "StoreError", "TextConfig", "encode", "preprocess", "summarize"]
