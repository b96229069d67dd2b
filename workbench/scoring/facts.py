"""Must-mention fact recall: did the answer say each fact, in any of the ways people write it?

Facts and answers are both mapped to a canonical token sequence (lower case, digits instead of
number words, "8:00 a.m." -> ``8 am``, "$135" / "135 dollars" -> ``135 dollar``, "noon" ->
``12 pm``, "Dec 24th" / "24th of December" -> ``december 24``, "Mon-Fri" -> ``monday to friday``,
plurals folded) and a fact counts as mentioned when its tokens appear in the answer in order,
contiguously or with at most two extra words that are neither numbers nor negations in between
("40 spaces" in "40 parking spaces"; never "is free" in "is not free", never "8 am to 6 pm" in
"8 am to 5 pm ... 6 pm"). It is lexical on purpose: cheap, deterministic and explainable; a
paraphrase with different words ("you don't need a referral") is the semantic scorers' job.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation

_ONES = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
}
_TEENS = {
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_ORDINALS = {
    "first": 1,
    "third": 3,
    "fourth": 4,
    "fifth": 5,
    "sixth": 6,
    "seventh": 7,
    "eighth": 8,
    "ninth": 9,
    "tenth": 10,
    "eleventh": 11,
    "twelfth": 12,
    "thirteenth": 13,
    "fourteenth": 14,
    "fifteenth": 15,
    "sixteenth": 16,
    "seventeenth": 17,
    "eighteenth": 18,
    "nineteenth": 19,
    "twentieth": 20,
    "thirtieth": 30,
}
_MONTHS = "january february march april may june july august september october november december".split()
_MONTH_ABBR = {
    "jan": "january",
    "feb": "february",
    "mar": "march",
    "apr": "april",
    "jun": "june",
    "jul": "july",
    "aug": "august",
    "sep": "september",
    "sept": "september",
    "oct": "october",
    "nov": "november",
    "dec": "december",
}
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAY_ABBR = {
    "mon": "monday",
    "tue": "tuesday",
    "tues": "tuesday",
    "wed": "wednesday",
    "thu": "thursday",
    "thur": "thursday",
    "thurs": "thursday",
    "fri": "friday",
}  # no "sat"/"sun": too often ordinary words
_SYNONYMS = {
    "doctor": "dr",
    "ext": "extension",
    "bucks": "dollar",
    "hr": "hour",
    "hrs": "hour",
    "mins": "minute",
    "min": "minute",
    "&": "and",
    "pct": "percent",
}
_RANGE_WORDS = {"to", "until", "till", "til", "through", "thru", "-"}
_PER_UNITS = {"hour", "day", "dose", "session", "visit", "month", "week", "year", "minute", "person", "page"}
_NEGATIONS = {"no", "not", "never", "dont", "doesnt", "isnt", "arent", "cant", "cannot", "wont", "without", "none"}
_NUM = re.compile(r"^\d+(\.\d+)?$|^\d{1,2}:\d{2}$")


def _is_num(tok: str) -> bool:
    return bool(_NUM.match(tok))


def _canon_number(tok: str) -> str:
    """'6.50' -> '6.5', '135.00' -> '135', '0100' -> '100', '8:00' -> '8', '7:30' stays."""
    if ":" in tok:
        h, m = tok.split(":")
        return str(int(h)) if m == "00" else f"{int(h)}:{m}"
    try:
        d = Decimal(tok)
    except InvalidOperation:
        return tok
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def _prepare(text: str) -> str:
    """Character-level rewrites that need the punctuation (which the tokeniser then drops)."""
    t = unicodedata.normalize("NFKC", text).lower()
    t = t.replace("\u2019", "'").replace("\u2018", "'").replace("\u2013", "-").replace("\u2014", "-")
    t = t.replace("\u2011", "-").replace("\u2212", "-")
    t = re.sub(r"(?<=\d),(?=\d{3}\b)", "", t)  # 1,000 -> 1000
    t = re.sub(r"\b([ap])\.\s?m\b\.?", r"\1m", t)  # a.m. / a. m. / p.m -> am / pm
    t = re.sub(r"(\d)\s*([ap])m\b", r"\1 \2m", t)  # 8am -> 8 am
    t = re.sub(r"\$\s?(\d+(?:\.\d+)?)", r"\1 dollars", t)  # $135 -> 135 dollars
    t = re.sub(r"(\d+(?:\.\d+)?)\s*%", r"\1 percent", t)
    t = re.sub(r"\b(\d+)(st|nd|rd|th)\b", r"\1", t)  # 24th -> 24
    t = re.sub(r"\b(\d)-(\d)-(\d)\b", r"\1\2\3", t)  # 9-1-1 -> 911
    t = re.sub(r"o'?clock", " ", t)
    t = re.sub(r"\b12\s+noon\b", "noon", t)
    t = re.sub(r"\b(noon|midday)\b", "12 pm", t)
    t = re.sub(r"\bmidnight\b", "12 am", t)
    t = re.sub(r"/\s*(?=[a-z])", " per ", t)  # $3/hour -> 3 dollars per hour
    t = re.sub(r"(?<=[\dm])\s*-\s*(?=\d)", " - ", t)  # 8-6, 8 am-6 pm: a range dash, kept as a token
    t = re.sub(r"(?<=day)\s*-\s*(?=[a-z])", " - ", t)  # monday-friday
    t = re.sub(r"'s\b", "", t)  # possessive
    t = t.replace("'", "")
    t = re.sub(r"(?<!\d)[.:]|[.:](?!\d)", " ", t)  # keep 6.50 and 7:30, drop other dots and colons
    t = re.sub(r"[^a-z0-9.:&\- ]+", " ", t)
    t = re.sub(r"(?<! )-(?! )", " ", t)  # other hyphens join words: twenty-four, drop-off
    return t


def _fold(tok: str) -> str:
    tok = _SYNONYMS.get(tok, tok)
    tok = _MONTH_ABBR.get(tok, tok)
    tok = _WEEKDAY_ABBR.get(tok, tok)
    if len(tok) > 3 and tok.endswith("s") and not tok.endswith(("ss", "us", "is")) and not _is_num(tok):
        tok = tok[:-1]  # plural fold: mondays -> monday, spaces -> space
    return tok


def _parse_number_words(toks: list[str]) -> list[str]:
    """Spelled-out numbers to digits ("one hundred and thirty five" -> 135), stopping where English does.

    "seven thirty" stays two numbers (7, 30) so it can become the time 7:30.
    """
    out: list[str] = []
    i = 0
    while i < len(toks):
        total, chunk, last, j = 0, 0, None, i
        while j < len(toks):
            w = toks[j]
            if w in _ONES and last in (None, "tens", "hundred") and not (w == "zero" and last is not None):
                chunk += _ONES[w]
                last = "ones"
            elif w in _TEENS and last in (None, "hundred"):
                chunk += _TEENS[w]
                last = "teens"
            elif w in _TENS and last in (None, "hundred"):
                chunk += _TENS[w]
                last = "tens"
            elif w == "hundred" and last in ("ones", "teens") and chunk < 100:
                chunk *= 100
                last = "hundred"
            elif w == "thousand" and last is not None and last != "thousand" and total == 0:
                total, chunk = (total + chunk) * 1000, 0
                last = "thousand"
            elif (
                w == "and"
                and last in ("hundred", "thousand")
                and j + 1 < len(toks)
                and toks[j + 1] in (_ONES | _TEENS | _TENS)
            ):
                pass
            elif w in _ORDINALS and last in ("tens",) and _ORDINALS[w] < 10:
                chunk += _ORDINALS[w]  # twenty fourth -> 24
                last = "ordinal"
                j += 1
                break
            else:
                break
            j += 1
        if j > i:
            out.append(str(total + chunk))
            i = j
        else:
            out.append(toks[i])
            i += 1
    return out


def canonical_tokens(text: str | None) -> list[str]:
    """The canonical token sequence both facts and answers are compared in."""
    if not text:
        return []
    toks = [_fold(t) for t in _prepare(text).split()]
    toks = _parse_number_words(toks)
    out: list[str] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        prev = out[-1] if out else ""
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        if t in _ORDINALS and (
            prev in _MONTHS or nxt == "floor" or (nxt == "of" and i + 2 < len(toks) and toks[i + 2] in _MONTHS)
        ):
            t = str(_ORDINALS[t])
        elif t == "second" and (prev in _MONTHS or nxt == "floor"):
            t = "2"
        if _is_num(t):
            t = _canon_number(t)
        out.append(t)
        i += 1
    return _rewrite(out)


def _rewrite(toks: list[str]) -> list[str]:
    """Token-level phrase rewrites: times, money, dates, ranges, rates."""
    out: list[str] = []
    i = 0
    n = len(toks)
    while i < n:
        t = toks[i]
        prev = out[-1] if out else ""
        # 7 30 am -> 7:30 am (spoken times)
        if (
            t.isdigit()
            and int(t) <= 12
            and i + 2 < n
            and toks[i + 1].isdigit()
            and 10 <= int(toks[i + 1]) <= 59
            and toks[i + 2] in ("am", "pm")
        ):
            out += [f"{int(t)}:{toks[i + 1]}", toks[i + 2]]
            i += 3
            continue
        # "in the morning" / "in the evening" after a time
        if (_is_num(prev) or prev in ("am", "pm")) and toks[i : i + 3] in (["in", "the", "morning"],):
            out.append("am")
            i += 3
            continue
        if _is_num(prev) and (
            toks[i : i + 3] in (["in", "the", "afternoon"], ["in", "the", "evening"])
            or toks[i : i + 2] == ["at", "night"]
        ):
            out.append("pm")
            i += 3 if t == "in" else 2
            continue
        # 6 dollar and 50 cent -> 6.5 dollar
        if t == "dollar" and _is_num(prev) and toks[i + 1 : i + 2] == ["and"] and i + 3 < n and toks[i + 3] == "cent":
            cents = toks[i + 2]
            if cents.isdigit() and int(cents) < 100:
                out[-1] = _canon_number(str(Decimal(prev) + Decimal(cents) / 100))
                out.append("dollar")
                i += 4
                continue
        # 24 of december -> december 24
        if t == "of" and _is_num(prev) and i + 1 < n and toks[i + 1] in _MONTHS:
            out[-1:] = [toks[i + 1], prev]
            i += 2
            continue
        # "the 24" before a month is rare; month + number stays as is
        # ranges: until / through / - between numbers, times or weekdays -> to
        if t in _RANGE_WORDS and i + 1 < n:
            nxt = toks[i + 1]
            left = _is_num(prev) or prev in ("am", "pm") or prev in _WEEKDAYS
            right = _is_num(nxt) or nxt in _WEEKDAYS
            if left and right:
                out.append("to")
                i += 1
                continue
            if t == "-":
                i += 1
                continue
        # $3 an hour / a dose / each visit -> 3 dollar per hour
        if (
            t in ("a", "an", "each", "every")
            and i + 1 < n
            and toks[i + 1] in _PER_UNITS
            and (_is_num(prev) or prev in ("dollar", "cent", "percent"))
        ):
            out.append("per")
            i += 1
            continue
        out.append(t)
        i += 1
    return [t for t in out if t != "-"]


def _contains(hay: Sequence[str], needle: Sequence[str], max_gap: int) -> bool:
    """``needle`` in ``hay`` in order, with at most ``max_gap`` harmless extra tokens in between."""
    if not needle:
        return True
    m = len(needle)
    for start in range(len(hay) - m + 1):
        if hay[start] != needle[0]:
            continue
        if list(hay[start : start + m]) == list(needle):
            return True
        pos, k, gap = start + 1, 1, 0
        while k < m and pos < len(hay) and gap <= max_gap:
            if hay[pos] == needle[k]:
                k += 1
            elif _is_num(hay[pos]) or hay[pos] in _NEGATIONS or hay[pos] in ("am", "pm"):
                break
            else:
                gap += 1
            pos += 1
        if k == m and gap <= max_gap:
            return True
    return False


def fact_mentioned(fact: str, answer: str | None, *, max_gap: int = 2) -> bool:
    """True when ``answer`` states ``fact`` (see the module docstring for what counts)."""
    needle = canonical_tokens(fact)
    if not needle:
        return True
    return _contains(canonical_tokens(answer), needle, max_gap)


def missed_facts(facts: Iterable[str] | None, answer: str | None, *, max_gap: int = 2) -> list[str]:
    """The facts the answer did not mention, in the dataset's order."""
    hay = canonical_tokens(answer)
    out = []
    for f in facts or []:
        needle = canonical_tokens(f)
        if needle and not _contains(hay, needle, max_gap):
            out.append(f)
    return out


def fact_recall(facts: Iterable[str] | None, answer: str | None, *, max_gap: int = 2) -> float:
    """Share of must-mention facts the answer states; NaN when the turn has no facts (nothing to check)."""
    fs = [f for f in (facts or []) if canonical_tokens(f)]
    if not fs:
        return float("nan")
    return 1.0 - len(missed_facts(fs, answer, max_gap=max_gap)) / len(fs)
