"""Text front end: cleaners, number normalization, the symbol tables, text -> token ids.

`encode` is the one path from raw text to token ids. Preprocessing uses it to build the
feature store and synthesis uses it on free text, so training and inference always see
the same cleaning. Two front ends, named in `TextConfig.front_end`:

    characters: raw text --clean_text--> cleaned text --symbol table--> ids (+ EOS)
    phonemes:   raw text --clean_text--> cleaned text --CMUdict, word by word--> ARPAbet phones,
                punctuation and word-boundary spaces --symbol table--> ids (+ EOS)

Cleaners are named pipelines ("english", "basic"); the name is stored in `TextConfig`.
Symbol tables are versioned: a store or checkpoint records its `symbols_version`, and a
published table never changes, so a token id means the same symbol forever. A new
symbol set is a new version.

Characters that survive cleaning but have no symbol (emoji, CJK, "#") are dropped by
`encode` and counted in `Encoded.dropped`, so preprocessing can report them instead of
silently training on a different sentence than the transcript says. In the same way the
phonemes front end spells a word that the dictionary does not know letter by letter (its
table holds the letters too) and counts it in `Encoded.unknown_words`.

With phonemes, `{HH AH0 L OW1}` in the text forces a pronunciation (NVIDIA/tacotron2's
convention): the ARPAbet inside the braces bypasses the cleaners and the dictionary.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, NamedTuple

from taco.config import JsonConfig
from taco.features.phonemes import ARPABET_SYMBOLS, is_phone, pronounce

# ----------------------------------------------------------------------------- symbols

# Marks a phone symbol in a table, as NVIDIA/tacotron2's "@AH0": a phone is never read from typed text.
PHONE_PREFIX = "@"

# Index == token id. Never edit a published table: add a new version instead, because
# stores and checkpoints made with a version hold ids that refer to it.
SYMBOL_TABLES: dict[int, tuple[str, ...]] = {
    1: ("_", "~", *"!'(),-.:;?\" ", *"abcdefghijklmnopqrstuvwxyz"),
    # Phonemes: table 1 with the same ids (pad, EOS, punctuation, space, and the letters that spell
    # out words the dictionary does not know), then CMUdict's 84 ARPAbet symbols, stress included.
    2: (
        "_", "~", *"!'(),-.:;?\" ", *"abcdefghijklmnopqrstuvwxyz",
        *(PHONE_PREFIX + symbol for symbol in ARPABET_SYMBOLS),
    ),
}
PAD_ID = 0
EOS_ID = 1

# The tables each front end can use, oldest first; a TextConfig without symbols_version gets the last.
FRONT_END_TABLES: dict[str, tuple[int, ...]] = {"characters": (1,), "phonemes": (2,)}

# Symbol -> id for each version. Pad and EOS are structural tokens, so a "_" or "~" typed in
# the text is dropped rather than read as padding or as the end of the sentence.
_SYMBOL_IDS: dict[int, dict[str, int]] = {
    version: {symbol: i for i, symbol in enumerate(table) if i not in (PAD_ID, EOS_ID)}
    for version, table in SYMBOL_TABLES.items()
}


def _symbol_table(version: int) -> tuple[str, ...]:
    if version not in SYMBOL_TABLES:
        raise ValueError(
            f"unknown symbols_version {version!r}; known versions: {sorted(SYMBOL_TABLES)}"
        )
    return SYMBOL_TABLES[version]


def symbols(version: int = 1) -> list[str]:
    """The symbol table of `version`: the symbol at index i has token id i."""
    return list(_symbol_table(version))


# ------------------------------------------------------------------------ number words

_ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
    "eighteen", "nineteen",
)
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (10**3, "thousand"))

# Up to 999 trillion is read as a number; longer digit runs (serial numbers, IDs) are read
# digit by digit. The bound also keeps int() far from Python's 4300-digit parsing limit,
# so arbitrary input can never make the front end raise.
_MAX_CARDINAL_DIGITS = 15

_IRREGULAR_ORDINALS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth",
    "eight": "eighth", "nine": "ninth", "twelve": "twelfth",
}
_LAST_WORD_RE = re.compile(r"[a-z]+$")


def _below_thousand(n: int) -> str:
    """1 <= n <= 999 in words: 342 -> "three hundred forty-two"."""
    hundreds, rest = divmod(n, 100)
    words = []
    if hundreds:
        words.append(f"{_ONES[hundreds]} hundred")
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(f"{_TENS[tens]}-{_ONES[ones]}" if ones else _TENS[tens])
    elif rest:
        words.append(_ONES[rest])
    return " ".join(words)


def _cardinal(n: int) -> str:
    """0 <= n < 10**15 in words, American style without "and":
    1234 -> "one thousand two hundred thirty-four"."""
    if n == 0:
        return "zero"
    words = []
    for scale, name in _SCALES:
        count, n = divmod(n, scale)
        if count:
            words.append(f"{_below_thousand(count)} {name}")
    if n:
        words.append(_below_thousand(n))
    return " ".join(words)


def _ordinal(cardinal_words: str) -> str:
    """Only the last word changes: "twenty-two" -> "twenty-second", "ten" -> "tenth"."""

    def ordinal_word(match: re.Match) -> str:
        word = match[0]
        if word in _IRREGULAR_ORDINALS:
            return _IRREGULAR_ORDINALS[word]
        if word.endswith("y"):
            return word[:-1] + "ieth"
        return word + "th"

    return _LAST_WORD_RE.sub(ordinal_word, cardinal_words)


def _say_digits(digits: str) -> str:
    return " ".join(_ONES[int(digit)] for digit in digits)


def _say_integer(digits: str) -> str:
    """Digits, possibly with thousands separators, in words. A leading zero ("007") means
    the digits are a code rather than a quantity, so they are read one by one."""
    digits = digits.replace(",", "")
    if len(digits) > _MAX_CARDINAL_DIGITS or (len(digits) > 1 and digits.startswith("0")):
        return _say_digits(digits)
    return _cardinal(int(digits))


def _say_number(whole: str, fraction: str | None) -> str:
    """An integer or a decimal: ("3", "14") -> "three point one four"."""
    words = _say_integer(whole)
    return words if fraction is None else f"{words} point {_say_digits(fraction)}"


def _say_year(year: int) -> str:
    """1100 <= year <= 2099, read the way people say years."""
    if 2000 <= year <= 2009:
        return _cardinal(year)  # "two thousand five", not "twenty oh five"
    century, rest = divmod(year, 100)
    if rest == 0:
        return f"{_cardinal(century)} hundred"
    if rest < 10:
        return f"{_cardinal(century)} oh {_cardinal(rest)}"
    return f"{_cardinal(century)} {_cardinal(rest)}"


# ------------------------------------------------------------------ number expansion

# All number patterns use re.ASCII so that \d means 0-9 only: digits of other scripts
# have no English reading here, and are dropped by `encode` like any unknown character.

# An integer, optionally with thousands separators. A comma not followed by exactly three
# digits is punctuation, so "1,2,3" stays a list of three numbers.
_INTEGER = r"\d{1,3}(?:,\d{3})+(?!\d)|\d+"

_TIME_RE = re.compile(
    r"(?<!\d)([01]?\d|2[0-3]):([0-5]\d)(?!\d)"  # 0:00 to 23:59
    r"(?:\s*([ap])\.?m\b\.?)?",  # optional "am", "p.m.", "PM" (text is lowercased first)
    re.ASCII,
)
# A minus sign is a "-" right before a number that does not follow a word or a number;
# "1990-1995" and "covid-19" keep their hyphen.
_MINUS_RE = re.compile(r"(?<!\w)-(?=[$£€]?\d)", re.ASCII)
_CURRENCY_RE = re.compile(
    rf"([$£€])({_INTEGER})(?:\.(\d+))?(?:\s+(thousand|million|billion|trillion)\b)?", re.ASCII
)
_PERCENT_RE = re.compile(rf"({_INTEGER})(?:\.(\d+))?\s?%", re.ASCII)
_ORDINAL_RE = re.compile(rf"({_INTEGER})(st|nd|rd|th)\b", re.ASCII)
_DECIMAL_RE = re.compile(rf"({_INTEGER})\.(\d+)", re.ASCII)
_YEAR_RE = re.compile(r"(?<!\d)(1[1-9]\d\d|20\d\d)(?!\d)", re.ASCII)
_INTEGER_RE = re.compile(_INTEGER, re.ASCII)


class _Currency(NamedTuple):
    unit: str
    units: str
    subunit: str
    subunits: str


_CURRENCIES = {
    "$": _Currency("dollar", "dollars", "cent", "cents"),
    "£": _Currency("pound", "pounds", "penny", "pence"),
    "€": _Currency("euro", "euros", "cent", "cents"),
}


def _say_time(match: re.Match) -> str:
    hour, minute, meridiem = int(match[1]), int(match[2]), match[3]
    words = _cardinal(hour)
    if minute == 0:
        if not meridiem:  # people say "twelve p m", not "twelve o'clock p m"
            words += " o'clock"
    elif minute < 10:
        words += f" oh {_cardinal(minute)}"
    else:
        words += f" {_cardinal(minute)}"
    if meridiem:
        # Spelled as two letters, which is how "am" and "pm" are spoken.
        words += f" {meridiem} m"
    return words


def _say_money(match: re.Match) -> str:
    currency = _CURRENCIES[match[1]]
    whole, fraction, scale = match[2], match[3], match[4]
    if scale or (fraction is not None and len(fraction) > 2):
        # "$2.5 million" -> "two point five million dollars"; "$1.005" is not units and cents.
        amount = _say_number(whole, fraction)
        if scale:
            amount += f" {scale}"
        return f"{amount} {currency.units}"

    units = whole.replace(",", "").lstrip("0") or "0"
    # One fraction digit is tenths of a unit: "$3.5" is three dollars and fifty cents.
    subunits = int(fraction.ljust(2, "0")) if fraction else 0
    parts = []
    if units != "0" or subunits == 0:
        parts.append(f"{_say_integer(units)} {currency.unit if units == '1' else currency.units}")
    if subunits:
        name = currency.subunit if subunits == 1 else currency.subunits
        parts.append(f"{_cardinal(subunits)} {name}")
    return ", ".join(parts)


def _expand_numbers(text: str) -> str:
    # Order matters: each rule claims digits that a later, more general rule would misread
    # ("10:30" is not ten and thirty, "$1984" and "1984%" are not years, "3.14" is not 3 and 14).
    text = _TIME_RE.sub(_say_time, text)
    text = _MINUS_RE.sub("minus ", text)
    text = _CURRENCY_RE.sub(_say_money, text)
    text = _PERCENT_RE.sub(lambda m: f"{_say_number(m[1], m[2])} percent", text)
    text = _ORDINAL_RE.sub(lambda m: _ordinal(_say_integer(m[1])), text)
    text = _DECIMAL_RE.sub(lambda m: _say_number(m[1], m[2]), text)
    text = _YEAR_RE.sub(lambda m: _say_year(int(m[1])), text)
    return _INTEGER_RE.sub(lambda m: _say_integer(m[0]), text)


# ---------------------------------------------------------------------------- cleaners

# Typographic punctuation -> the ASCII symbol it stands for; NFKD alone would leave curly
# quotes and dashes as they are, and the symbol table has no place for them.
_ASCII_PUNCTUATION = str.maketrans({
    "‘": "'", "’": "'", "‚": "'", "‛": "'", "′": "'",
    "“": '"', "”": '"', "„": '"', "‟": '"', "«": '"', "»": '"', "″": '"',
    "‐": "-", "‑": "-", "‒": "-", "–": "-", "—": "-", "―": "-", "−": "-",
    "…": "...",
})

# Case-insensitive through lowercasing; the trailing period is part of the abbreviation.
# The list is NVIDIA/tacotron2's, so LJSpeech transcripts are read the same way.
_ABBREVIATIONS = {
    "mrs": "misess", "mr": "mister", "dr": "doctor", "st": "saint", "co": "company",
    "jr": "junior", "maj": "major", "gen": "general", "drs": "doctors", "rev": "reverend",
    "lt": "lieutenant", "hon": "honorable", "sgt": "sergeant", "capt": "captain",
    "esq": "esquire", "ltd": "limited", "col": "colonel", "ft": "fort",
}
_ABBREVIATION_RE = re.compile(r"\b(" + "|".join(_ABBREVIATIONS) + r")\.")
_WHITESPACE_RE = re.compile(r"\s+")


def _collapse_whitespace(text: str) -> str:
    return _WHITESPACE_RE.sub(" ", text).strip()


def _transliterate(text: str) -> str:
    """Accents off and typographic punctuation to ASCII: "café “ok”" -> 'cafe "ok"'.
    Characters with no ASCII form (CJK, emoji) are kept; `encode` drops and counts them."""
    text = unicodedata.normalize("NFKD", text.translate(_ASCII_PUNCTUATION))
    return "".join(char for char in text if not unicodedata.combining(char))


def _basic_cleaners(text: str) -> str:
    return _collapse_whitespace(text.lower())


def _english_cleaners(text: str) -> str:
    # Transliterate first so that full-width digits and the like become 0-9 for the
    # number rules, and lowercase before expanding so the patterns need no case variants.
    text = _transliterate(text).lower()
    text = _expand_numbers(text)
    text = text.replace("&", " and ")
    text = _ABBREVIATION_RE.sub(lambda m: _ABBREVIATIONS[m[1]], text)
    return _collapse_whitespace(text)


CLEANERS: dict[str, Callable[[str], str]] = {
    "english": _english_cleaners,
    "basic": _basic_cleaners,
}


def _cleaner(name: str) -> Callable[[str], str]:
    if name not in CLEANERS:
        raise ValueError(f"unknown cleaners {name!r}; choose one of {sorted(CLEANERS)}")
    return CLEANERS[name]


def clean_text(text: str, cleaners: str = "english") -> str:
    """Normalize `text` with the named cleaner pipeline.

    "basic": lowercase and collapse whitespace.
    "english": transliterate to ASCII, spell out numbers, money, percentages, times,
    ordinals and years, expand "&" and abbreviations, lowercase, collapse whitespace.
    """
    return _cleaner(cleaners)(text)


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class TextConfig(JsonConfig):
    """How text becomes token ids. Saved in the feature store and in checkpoints, so that
    synthesis encodes text exactly as the training data was encoded."""

    # Cleaner pipeline, a key of CLEANERS. "english" spells out numbers and abbreviations;
    # "basic" only lowercases and collapses whitespace, for text already normalized.
    cleaners: str = "english"
    # A key of FRONT_END_TABLES. "characters": the cleaned text letter by letter. "phonemes": each
    # word's first CMUdict pronunciation, letters for words it lacks, and "{HH AH0 L OW1}" forcing one.
    # Stores and checkpoints made before this field existed were all "characters".
    front_end: str = "characters"
    # Which published table of SYMBOL_TABLES maps symbols to ids; one of the front end's tables.
    # None (not stored: it becomes a number when the config is made) picks the front end's latest.
    symbols_version: int | None = None
    # Append EOS to every sequence: an explicit end of text helps the decoder learn to stop.
    add_eos: bool = True

    def __post_init__(self) -> None:
        _cleaner(self.cleaners)
        if self.front_end not in FRONT_END_TABLES:
            raise ValueError(f"unknown front_end {self.front_end!r}; choose one of {sorted(FRONT_END_TABLES)}")
        tables = FRONT_END_TABLES[self.front_end]
        if self.symbols_version is None:
            object.__setattr__(self, "symbols_version", tables[-1])
        _symbol_table(self.symbols_version)
        if self.symbols_version not in tables:
            raise ValueError(
                f"symbols_version {self.symbols_version} is not a table of the {self.front_end} front end; "
                f"its tables: {list(tables)}"
            )
        if not isinstance(self.add_eos, bool):
            raise TypeError(f"add_eos must be a bool, got {self.add_eos!r}")


# --------------------------------------------------------------------------- encoding


class PronunciationError(ValueError):
    """A pronunciation forced in braces that is not ARPAbet; str() names the culprit."""


@dataclass(frozen=True)
class Encoded:
    """The result of `encode`."""

    ids: list[int]  # token ids, ending with EOS_ID when config.add_eos
    cleaned: str  # the text after cleaning (phonemes: braces kept), before dropping unknown characters
    dropped: dict[str, int]  # characters of `cleaned` with no symbol -> how many were dropped
    # phonemes: words the dictionary does not know, spelled out letter by letter -> how many times
    unknown_words: dict[str, int] = field(default_factory=dict)


def encode(text: str, config: TextConfig = TextConfig()) -> Encoded:
    """Clean `text` and map it to token ids with the config's front end; used by preprocessing and synthesis.

    With the phonemes front end, each word becomes its first pronunciation in CMUdict (stress digits
    kept, one token per phone), punctuation and the spaces between words stay tokens, and a word the
    dictionary does not know falls back to its letters and is counted in `unknown_words`. ARPAbet in
    braces, "{HH AH0 L OW1}", is taken as it is; a symbol in braces that is not ARPAbet raises
    PronunciationError (a ValueError) naming it. The characters front end reads braces as any other
    character.
    """
    if config.front_end == "phonemes":
        return _encode_phonemes(text, config)
    cleaned = clean_text(text, config.cleaners)
    symbol_ids = _SYMBOL_IDS[config.symbols_version]
    ids = [symbol_ids[char] for char in cleaned if char in symbol_ids]
    dropped = Counter(char for char in cleaned if char not in symbol_ids)
    if config.add_eos:
        ids.append(EOS_ID)
    return Encoded(ids=ids, cleaned=cleaned, dropped=dict(dropped))


# Braces hold a forced pronunciation; a lone brace is an ordinary (unspeakable) character.
_BRACES_RE = re.compile(r"\{([^{}]*)\}")
# A word: letters, and apostrophes inside them ("don't", "people's"). Hyphens split words, so that
# "covid-nineteen" is read as two words joined by the hyphen token, as the characters front end keeps it.
_WORD_RE = re.compile(r"[a-z]+(?:'[a-z]+)*")


def _encode_phonemes(text: str, config: TextConfig) -> Encoded:
    symbol_ids = _SYMBOL_IDS[config.symbols_version]
    symbols_out: list[str] = []
    cleaned_parts: list[str] = []
    unknown_words: Counter = Counter()
    # re.split with one group alternates: text outside braces, a brace's content, text outside, ...
    for number, piece in enumerate(_BRACES_RE.split(text)):
        if number % 2:
            phones = _forced_phones(piece)
            symbols_out += [PHONE_PREFIX + phone for phone in phones]
            cleaned_parts.append("{" + " ".join(phones) + "}")
            continue
        # Cleaning strips the piece's edges, but a space beside a braced word is still a word boundary.
        edge_before, edge_after = piece[:1].isspace(), piece[-1:].isspace()
        cleaned = clean_text(piece, config.cleaners)
        cleaned_parts.append(" " * edge_before + cleaned + " " * edge_after)
        symbols_out += [" "] * edge_before
        position = 0
        for word in _WORD_RE.finditer(cleaned):
            symbols_out += cleaned[position : word.start()]  # spaces and punctuation, a symbol per character
            symbols_out += _word_symbols(word[0], unknown_words)
            position = word.end()
        symbols_out += cleaned[position:]
        symbols_out += [" "] * edge_after
    dropped = Counter(symbol for symbol in symbols_out if symbol not in symbol_ids)
    ids = [symbol_ids[symbol] for symbol in _collapse_spaces(s for s in symbols_out if s in symbol_ids)]
    if config.add_eos:
        ids.append(EOS_ID)
    cleaned = _collapse_whitespace("".join(cleaned_parts))
    return Encoded(ids=ids, cleaned=cleaned, dropped=dict(dropped), unknown_words=dict(unknown_words))


def _forced_phones(content: str) -> list[str]:
    phones = content.upper().split()
    if not phones:
        raise PronunciationError("empty braces {}: put ARPAbet phones inside, e.g. {HH AH0 L OW1}")
    for given, phone in zip(content.split(), phones):
        if not is_phone(phone):
            raise PronunciationError(
                f"{given!r} in {{{content}}} is not an ARPAbet phone; braces hold CMUdict phones such as "
                "HH AH0 L OW1 (vowels with stress 0, 1 or 2)"
            )
    return phones


def _word_symbols(word: str, unknown_words: Counter) -> list[str]:
    """The phone symbols of a cleaned word, or its letters (counted in unknown_words) if it has none."""
    phones = pronounce(word)
    if phones is None:
        unknown_words[word] += 1
        return list(word)
    return [PHONE_PREFIX + phone for phone in phones]


def _collapse_spaces(symbols_in: Iterable[str]) -> list[str]:
    """One space between words and none at the ends, also where cleaned pieces and braces meet."""
    out: list[str] = []
    for symbol in symbols_in:
        if symbol == " " and (not out or out[-1] == " "):
            continue
        out.append(symbol)
    if out and out[-1] == " ":
        out.pop()
    return out


def _symbols_of(ids: Iterable[int], version: int, keep_special: bool) -> list[str]:
    table = _symbol_table(version)
    out = []
    for token in ids:
        token = int(token)
        if not 0 <= token < len(table):
            raise ValueError(
                f"token id {token} is outside symbol table {version} (size {len(table)})"
            )
        if keep_special or token not in (PAD_ID, EOS_ID):
            out.append(table[token])
    return out


def decode(ids: Iterable[int], version: int = 1) -> str:
    """Token ids back to text, pad and EOS omitted; for reports and debugging. Phones come back in
    braces, one brace per word ("{HH AH0 L OW1} {W ER1 L D}."), which `encode` reads as the same
    phones. Accepts any iterable of integers, including a 1-D tensor or array."""
    text = []
    for phones, run in itertools.groupby(_symbols_of(ids, version, keep_special=False),
                                         key=lambda symbol: symbol.startswith(PHONE_PREFIX)):
        if phones:
            text.append("{" + " ".join(symbol.removeprefix(PHONE_PREFIX) for symbol in run) + "}")
        else:
            text.extend(run)
    return "".join(text)


def token_labels(ids: Iterable[int], version: int = 1) -> list[str]:
    """One label per token, pad and EOS included, as plot axes need: a character, or a phone without
    its prefix ("AH0")."""
    return [symbol.removeprefix(PHONE_PREFIX) for symbol in _symbols_of(ids, version, keep_special=True)]
