import pytest

from workbench.core.wer import normalize_text, number_to_words, wer


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (8, "eight"),
        (15, "fifteen"),
        (40, "forty"),
        (85, "eighty five"),
        (120, "one hundred twenty"),
        (2026, "two thousand twenty six"),
    ],
)
def test_number_to_words(n: int, words: str) -> None:
    assert number_to_words(n) == words


def test_digits_case_and_punctuation_normalised() -> None:
    assert normalize_text("Opens at 8, Monday-Friday! $85.") == "opens at eight monday friday eighty five dollars"
    assert wer("We open at eight in the morning.", "we open at 8 in the morning") == 0.0


def test_wer_counts_real_errors() -> None:
    assert wer("the clinic opens at nine", "the clinic closes at nine") == pytest.approx(0.2)
    assert wer("", "") == 0.0 and wer("", "noise") == 1.0
