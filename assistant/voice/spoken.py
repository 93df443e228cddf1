"""What the voice says: a streaming reply cut into a first clause and sentences, and text made
speakable (numbers, units, times, marks) for a voice of a given language."""

from __future__ import annotations

import re
from datetime import date

from assistant.skills.builtin._spoken import clock

# A sentence ends at . ! ? followed by a space (so 3.5 and example.com stay whole), or right
# after Chinese / Japanese sentence punctuation, or at a line break.
_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+|(?<=[。！？；…])[”」』）]*|\n+")
# A clause ends at , ; : followed by a space (so 1,000 and 10:30 stay whole), or right after the
# Chinese / Japanese ones.
_CLAUSE = re.compile(r"(?<=[,;:])\s+|(?<=[，；：、])")
# A word, or one Chinese / Japanese character (a syllable: about as long to say as a short word).
_HAN_KANA = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
_WORD = re.compile(f"[{_HAN_KANA}]|(?:(?![{_HAN_KANA}])\\w)+")
# Titles and Latin abbreviations end in a period but never end a sentence ("Dr. Kim", "e.g. tea").
_ABBREVIATION = re.compile(r"(?:^|[\s(\"'])(?:mr|mrs|ms|dr|prof|st|jr|sr|vs|e\.g|i\.e)\.$", re.IGNORECASE)
# Nor does the number of an item in a list ("1. Milk" on its own line): said with its item.
_LIST_NUMBER = re.compile(r"(?:^|\n)[ \t]*\d+\.$")
# Nor a period before a word in lower case ("the end. and"), nor one of a word written with periods ("a.m.",
# "U.S.", "etc.", "No.") before anything but a capital ("at 9 a.m. - 5 p.m.", "No. 5"). Until the next word is
# streamed, only such a word waits for it: "on. " is an end at once.
_RUNS_ON = re.compile(r"[a-z]")
_DOTTED = re.compile(r"(?:\b[A-Za-z]\.){2,}$|\b(?:etc|No)\.$")
_CAPITAL = re.compile(r"[A-Z]")
# Nor the period of a title before a name ("Mt. Everest", "Gen. Lee"), of a month before its day ("Jan. 5"),
# or of initials before a name ("the U.S. Army", "J.K. Rowling"); but "in the U.S. It is big" is two
# sentences: initials end one before a word that sentences start with.
_TITLES = "Dr|Mr|Mrs|Ms|Prof|Mt|Gen|Sen|Gov|Capt|Lt|Col|Sgt|Rev"
_MONTHS = "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec"
_BEFORE_NAME = re.compile(rf"\b(?:{_TITLES})\.$")
_BEFORE_DAY = re.compile(rf"\b(?:{_MONTHS})\.$")
_INITIALS = re.compile(r"(?<![\w.])(?:[A-Z]\.){2,}$")
_OPENER = re.compile(
    r"(?:"
    r"I|It|Its|He|She|We|They|You|This|That|These|Those|There|Here|Then|The|A|An|But|And|So|Or|Yet|If|When|"
    r"While|What|Which|Who|Where|Why|How|In|On|At|For|From|To|By|With|As|After|Before|Since|Now|Today|"
    r"Tomorrow|Yesterday|Also|However|Still|My|Our|Your|His|Her|Their|Some|Most|Many|All|Each|Every|No|Not|"
    r"Do|Does|Did|Is|Are|Was|Were|Can|Could|Will|Would|Should|May|Might|Let|Please|Thanks|Yes|Both|Only|"
    r"Just|Even|Sure|Ok|Okay|Well|Oh|Thank|Great|Good|Hello|Hi|Bye|Don|Because|Although|Though|Unless|Until|"
    r"Once|Another|Other|More|Less|Much|Few|Several|One|Two|Three|Note|See|Try|Make|Go"
    r")$"
)
_FIRST_WORD = re.compile(r"[A-Za-z]+")


def _name_follows(after: str) -> bool:
    """Whether `after`, the text after initials, goes on with a name ("Army for years"), not a new sentence."""
    word = _FIRST_WORD.match(after)
    return word is not None and word[0][0].isupper() and not _OPENER.match(word[0])


# What espeak-ng cannot take (a NUL ends its C string), UTF-8 cannot carry (a lone surrogate), and other
# control characters, none of them speech: a reply or a note may hold them, and the rest is still said.
_UNSPEAKABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# Written marks that are not words, which espeak would read out ("asterisk", "hash", "party popper",
# "im end"): markdown's emphasis, code and heading marks, special tokens spelled out, emoji with their
# joiners and variation selectors. A ~ before a number is a range's (5~10, 3点~5点, 10%~20%).
_MARKS = re.compile(
    rf"<\|\w*\|>|[*_`]+|(?<!\d)(?<!\d[%{_HAN_KANA}])~+|~+(?!\d)|^[ \t]*#+(?=[ \t])"
    r"|[\u2600-\u27bf\u2b00-\u2bff\ufe0f\u200d\u20e3\U0001f000-\U0001faff]",
    re.M,
)
_HAN_KANA_CHARACTER = re.compile(f"[{_HAN_KANA}]")
# The letters a voice of a language reads as words, besides Latin ones (which espeak's voices all read).
# A letter of another script is read letter by letter ("hebrew shin hebrew lamed", "Chinese letter"),
# so a word in it is left out, as a person who cannot read it would skip it.
_LATIN = "A-Za-z\u00aa\u00b5\u00ba\u00c0-\u024f\u0300-\u036f\u1e00-\u1eff"
_SCRIPT_OF = {
    **dict.fromkeys(("ru", "uk", "be", "bg", "sr", "mk", "kk", "ky", "tt", "ba", "mn"), "\u0400-\u052f"),
    **dict.fromkeys(("ar", "fa", "ur", "ps"), "\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufeff"),
    **dict.fromkeys(("zh", "ja"), _HAN_KANA),
    "el": "\u0370-\u03ff\u1f00-\u1fff", "he": "\u0590-\u05ff", "hi": "\u0900-\u097f", "ne": "\u0900-\u097f",
    "th": "\u0e00-\u0e7f", "ko": "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af",
}  # fmt: skip
_LATIN_ONLY = ("ca", "cs", "cy", "da", "de", "en", "eo", "es", "et", "eu", "fi", "fr", "ga", "gl", "hr", "hu", "id",
               "is", "it", "lb", "lt", "lv", "ms", "nb", "nl", "no", "pl", "pt", "ro", "sk", "sl", "sq", "sv", "sw",
               "tr", "vi")  # fmt: skip


def _other_scripts(language: str) -> re.Pattern:
    """Letters neither Latin nor of `language`'s script, with the vowel signs and points of the scripts
    known here (not letters to Python's \\w: สวัสดี would leave its ั and ี)."""
    own = _SCRIPT_OF.get(language, "")
    others = "".join(sorted({script for script in _SCRIPT_OF.values() if script != own}))
    return re.compile(f"(?:[^\\W\\d_{_LATIN}{own}]|[{others}])+")


_OTHER_SCRIPTS = {language: _other_scripts(language) for language in [*_SCRIPT_OF, *_LATIN_ONLY]}
# A web address is read as its host ("example.com"), not as "h t t p s colon slash slash ...", and
# the punctuation after it still ends its sentence; written without its scheme too (www.example.com/a?b=c,
# or a host with a path: example.org/recipes).
_ADDRESS = re.compile(
    r"\b(?:https?://(?:www\.)?|www\.(?=[^\s/?#]+\.)|(?=(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}[/?#]))"
    r"([^\s/?#]+)\S*?(?=[.,;:!?)]*(?:\s|$))"
)
# Units and signs beside a number, which espeak spells out ("5 km/h": "five k m slash h", "3 kg": "three k
# g") and a Chinese voice says in English letters: said in words by the voices of the languages here, and
# only beside a number, so "the m key" keeps its m.
_UNIT_WORDS = [  # as written; in English ("{s}" is said after any number but 1); in Chinese
    ("°C", "degree{s} Celsius", "摄氏度"),
    ("℃", "degree{s} Celsius", "摄氏度"),
    ("°F", "degree{s} Fahrenheit", "华氏度"),
    ("℉", "degree{s} Fahrenheit", "华氏度"),
    ("°", None, "度"),  # espeak's English says "degrees"
    ("km/h", "kilometer{s} per hour", "公里每小时"),
    ("mph", "mile{s} per hour", "英里每小时"),
    ("m/s", "meter{s} per second", "米每秒"),
    ("km", "kilometer{s}", "公里"),
    ("m", "meter{s}", "米"),
    ("cm", "centimeter{s}", "厘米"),
    ("mm", "millimeter{s}", "毫米"),
    ("kg", "kilogram{s}", "公斤"),
    ("g", "gram{s}", "克"),
    ("mg", "milligram{s}", "毫克"),
    ("ml", "milliliter{s}", "毫升"),
    ("l", "liter{s}", "升"),
    ("L", "liter{s}", "升"),
    ("kWh", "kilowatt hour{s}", "千瓦时"),
    ("kW", "kilowatt{s}", "千瓦"),
    ("W", "watt{s}", "瓦"),
    ("h", "hour{s}", "小时"),
    ("hr", "hour{s}", "小时"),
    ("hrs", "hour{s}", "小时"),
    ("mins", "minute{s}", "分钟"),
    ("sec", "second{s}", "秒"),
    ("secs", "second{s}", "秒"),  # espeak: "sex"
    ("lb", "pound{s}", "磅"),
    ("lbs", "pound{s}", "磅"),
    ("oz", "ounce{s}", "盎司"),
    ("tsp", "teaspoon{s}", "茶匙"),
    ("tbsp", "tablespoon{s}", "汤匙"),
    ("min", "minute{s}", "分钟"),
    ("s", "second{s}", "秒"),
    ("$", "dollar{s}", "美元"),
    ("€", "euro{s}", "欧元"),
    ("£", "pound{s}", "英镑"),
    ("¥", None, "元"),  # yen or yuan
    ("￥", None, "元"),
]
_UNITS = {
    "en": {written: en for written, en, _ in _UNIT_WORDS if en},
    "zh": {written: zh for written, _, zh in _UNIT_WORDS},
}
_FRACTION_NAMES = ["", "", "half", "third", "quarter", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"]
# A number as written (5, 2.5, 1,000). Latin letters and digits (not \w: Chinese characters are word
# characters, and "温度是21°C" has its number right after one) mark a number or unit inside a longer word.
_NUMBER = r"\d+(?:[.,]\d+)*"
# An amount may have its size after it, in a word or a letter: $1.5 million, $300k, $2.5M, $3bn.
_CURRENCY = re.compile(
    rf"([$€£¥￥]) ?({_NUMBER})(?: ?(thousand|million|billion|trillion)\b|(k|K|M|bn|B)\b)?(?![A-Za-z0-9]|[.,]\d)"
)
_SIZES = {"k": "thousand", "K": "thousand", "M": "million", "bn": "billion", "B": "billion"}
_SIZES_ZH = {"thousand": "千", "million": "百万", "billion": "十亿", "trillion": "万亿"}
_UNIT_NAMES = sorted(_UNITS["zh"], key=len, reverse=True)  # km/h before km before m
_UNIT = re.compile(rf"(?<![A-Za-z0-9.,$€£¥￥])({_NUMBER})( ?)({'|'.join(map(re.escape, _UNIT_NAMES))})(?![A-Za-z0-9])")
# "5-10" and "5–10", not a date (2024-05-01) or a number with a leading zero (a telephone's 555-0123).
_RANGE = re.compile(rf"(?<![A-Za-z0-9.,:/–-])({_NUMBER})(?:-| - | ?– ?)(?!0\d)({_NUMBER})(?![0-9:/–-]|[.,]\d)")
_TILDE = re.compile(r"(?<=\d) ?[~～] ?(?=\d)")  # 5~10, as Chinese writes a range
# And one whose first end has its unit or sign: 10%-20%, $5-$10, 5kg-10kg, 100元-200元, 5月1日-5月3日; espeak
# drops the dash ("ten percent twenty percent"), and espeak's Mandarin took it for a minus (百分之10负百分之20).
_RANGE_WITH_UNIT = re.compile(
    rf"(?<![A-Za-z0-9.,:/–-])([$€£¥￥]{_NUMBER}|{_NUMBER}(?:[%％°℃℉]|[A-Za-z]{{1,3}}| [A-Za-z]{{1,3}}\b"
    rf"|[{_HAN_KANA}]{{1,2}}))(?:-| - | ?[–~～] ?)(?=[$€£¥￥]?\d)"
)
# With its whole number before it: 1 1/2 cups. Not a date (3/4/2025).
_FRACTION = re.compile(r"(?<![A-Za-z0-9.,/])(?:(\d+) )?(\d)/(\d+)(?![0-9.,/])")


def _time_pattern(n: int) -> str:
    """A time of day, its groups numbered `n`: "21:30", "9:05 a.m.", "9.30pm", or an hour with its a.m./p.m. ("9am")."""
    return (
        rf"(?<![0-9:.,])(?:(?P<h{n}>[01]?\d|2[0-3])(?::|\.(?=\d\d ?[AaPp]\.?[Mm]\b))(?P<m{n}>[0-5]\d)(?![0-9:])"
        rf"|(?P<o{n}>1[0-2]|0?[1-9])(?= ?[AaPp]\.?[Mm]\b))(?P<x{n}> ?[AaPp]\.?[Mm]\b\.?)?"
    )


_CLOCK = re.compile(_time_pattern(1))
# "9:00-17:00", "9am–5pm", "from 9:00 to 17:00": one range, whose ends tell each other's half of the day.
_CLOCK_RANGE = re.compile(
    _time_pattern(1) + r"(?P<to> ?[-–—] ?| (?:to|until|till|through|and) |到|至)" + _time_pattern(2)
)
_PERCENT = re.compile(rf"(?:(?<![A-Za-z0-9.,:/-])([-−]))?({_NUMBER}) ?[%％]")
_DATE = re.compile(r"(?<![\d.,/-])(\d{4})-(\d\d)-(\d\d)(?![\d-])")  # 2024-05-01
# A Chinese range whose second time has its part of the day: 上午9点-下午5点.
_DAY_PART = "上午|下午|早上|晚上|中午|凌晨|傍晚|半夜"
_TO_CHINESE_TIME = re.compile(rf"(?<=[点分])\s*[-–—~～]\s*(?=\d|{_DAY_PART})")
# A part of the day written before a time on the 24-hour clock, which is then said with its own: 晚上21:00.
_DAY_PART_TWICE = re.compile(rf"({_DAY_PART})(?:{_DAY_PART})")
# Said digit by digit: a telephone number ("555-123-4567", "(555) 123-4567"), a Chinese mobile number,
# and a run of digits too long to be a quantity (an order number; past 18 digits piper's Chinese number
# words have none).
_PHONE = re.compile(r"(?<![A-Za-z0-9_+.,-])(?:1[-. ])?(?:\(\d{3}\) ?|\d{3}[-. ])\d{3}[-. ]\d{4}(?![-.,]?\d)")
# A shorter one is told from a range ("9-17", "500-1000 m") by what a listener knows: an area code starts with 0
# (010-12345678); after a word of calling ("call", 电话) 555-1234 and 1234-5678 are numbers to dial; without
# one, a range's ends are round (500-1000) or a unit follows, a local number's (555-1234) are not.
_LOCAL_PHONE = re.compile(
    r"(?<![A-Za-z0-9.,:/$€£¥￥+–-])(?:0\d{2,3}-\d{7,8}|(\d{3,4})-(\d{4}))(?![0-9:/–-]|[.,]\d)(?=(?P<after> ?\S*))"
)
_CALLING = re.compile(
    r"\b(?:call|calling|phone|dial|fax|tel|telephone|mobile|cell|hotline)\b"  # not "number": "a number from 200-1000"
    r"|电话|号码|拨打|致电|手机|热线|联系|传真",
    re.IGNORECASE,
)
# The number right after such a word in Chinese (拨打110, 热线12345, 电话是65432100), said digit by digit as
# a number to dial is, not as 一万二千三百四十五.
_DIALLED = re.compile(r"(?<=电话|号码|拨打|致电|热线)([是为:：]? ?)(\d{3,12})(?![-.,]?\d)")
_MOBILE = re.compile(r"(?<![\d.,])1[3-9]\d{9}(?![.,]?\d)")
_DIGIT_RUN = re.compile(r"(?<![\d.,])\d{13,}(?![.,]?\d)")
_SCIENTIFIC = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)[eE]([+-]?)(\d+)(?!\w|[.,]\d)")
# 1.000.000 as some languages write a million (espeak: "one point zero zero zero point ..."); not a version
# (v1.2.3) nor an address (192.168.100.100).
_DOTTED_THOUSANDS = re.compile(r"(?<![A-Za-z\d.,])\d{1,3}\.\d{3}\.\d{3}(?![.,]?\d)")
_ROUND_THE_CLOCK = re.compile(r"(?<![\d/])24/7(?![\d/])")
# "x" as times, which espeak says as the letter: x2 (not x86), 1.5x, 5 x 3 (not 2x4).
_TIMES = re.compile(r"(?<![A-Za-z0-9])x(?=\d(?!\w))|(?<=\d)(x)(?![A-Za-z0-9])|(?<=\d) [x×] (?=\d)")
# Chinese: a year digit by digit (二零二四年, not 二千零二十四年); a minus sign, which espeak's Mandarin drops.
_YEAR = re.compile(r"(?<![\d.,])(\d{4})(?=(?:到\d{4})?年)")
_MINUS = re.compile(r"(?<![A-Za-z0-9.,:/-])[-−](?=\d)")
_BELOW_ZERO = re.compile(r"负(?=[\d.,]+(?:摄氏度|华氏度|度))")
_CHINESE_DIGITS = str.maketrans("0123456789", "零一二三四五六七八九")
# And a number past 9999 in groups of four digits (万, 亿): espeak's Mandarin groups by three, and says
# 一万 for 1000000. The commas of 1,000,000 go first.
_THOUSANDS = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?!,?\d)")
_LARGE = re.compile(r"(?<![\d.,])[1-9]\d{4,11}(?!\d)")
# English: a year after a word that makes it one ("in 1999", "since 1850"), said in two halves; 2000 on,
# espeak's "two thousand twenty-four" is how people say it too.
_YEAR_EN = re.compile(
    r"\b((?:in|since|from|until|till|by|before|after|of|year) )(1[1-9])(\d\d)"
    rf"(?![\d.,:]?\d|s\b| ?%| ?(?:{'|'.join(map(re.escape, _UNIT_NAMES))})(?![A-Za-z0-9]))"  # not "in 1500 m"
)
# English: the 1990s, the '80s (espeak says "nineteen hundred ninety z").
_DECADE = re.compile(r"(?<![\w.,'])(?:(\d{1,2})|')?(\d)0s\b")
_DECADE_NAMES = [
    "",
    "tens",
    "twenties",
    "thirties",
    "forties",
    "fifties",
    "sixties",
    "seventies",
    "eighties",
    "nineties",
]
# Titles and "No." before what they name: espeak ends a sentence at their period ("Doctor. Kim").
# And so do initials before a name ("U.S. Army": "U S. Army"), which are said without their last period.
_TITLE = re.compile(rf"\b({_TITLES})\.(?= [A-Z])|\b({_MONTHS})\.(?= \d)|\bNo\.(?= ?\d)")
_TITLE_WORDS = {
    **{"Dr": "Doctor", "Mr": "Mister", "Mrs": "Missus", "Ms": "Miz", "Prof": "Professor", "Mt": "Mount"},
    **{"Gen": "General", "Sen": "Senator", "Gov": "Governor", "Capt": "Captain", "Lt": "Lieutenant"},
    **{"Col": "Colonel", "Sgt": "Sergeant", "Rev": "Reverend", None: "number"},
    **{month[:3]: month for month in ("January", "February", "March", "April", "June", "July", "August")},
    **{month[:3]: month for month in ("September", "October", "November", "December")},
    "Sept": "September",
}
_INITIALS_BEFORE = re.compile(r"(?<![\w.])((?:[A-Z]\.)+[A-Z])\.(?= )")
_CENTS = {"$": ("cent", "cents"), "€": ("cent", "cents"), "£": ("penny", "pence")}
# Full-width letters and digits (１２３), which espeak says nothing for, and their point and colon.
_FULL_WIDTH = str.maketrans({chr(c): chr(c - 0xFEE0) for c in range(0xFF01, 0xFF5F) if chr(c - 0xFEE0).isalnum()})
_FULL_WIDTH_IN_NUMBER = re.compile(r"(?<=\d)[．：](?=\d)")
MIN_CLAUSE_WORDS = 4  # a shorter first clause ("Sure," "好的，") waits for more
# Text that runs on without a sentence end is cut after this many words, at a clause or a space if
# it has one: the voice's encoder takes a piece whole, in time and memory that grow with its
# square (2,000 characters: 4.5 s to the first sound and 1.2 GB), and a stop waits for a piece.
MAX_PIECE_WORDS = 40
# The first piece decides how soon anything is heard: without a clause it is cut sooner (a sentence
# of up to this many words is still said whole).
MAX_FIRST_PIECE_WORDS = 20


class SentenceSplitter:
    """Streamed reply text → pieces to speak: the first clause as soon as it is complete, then sentences.

    The first piece decides how soon the reply is heard, so it may end at a comma; later pieces
    are whole sentences, which a voice says with better prosody.
    """

    def __init__(self) -> None:
        self.buffer = ""
        self.started = False  # a piece has been handed out: from now on, sentences only

    def push(self, text: str) -> list[str]:
        """Add streamed text; return the pieces it completed."""
        self.buffer += text
        pieces = []
        while (cut := self._cut()) is not None:
            piece, self.buffer = self.buffer[:cut].strip(), self.buffer[cut:]
            if piece:
                pieces.append(piece)
                self.started = True
        return pieces

    def _cut(self) -> int | None:
        cuts = []
        for match in _END.finditer(self.buffer):
            before, after = self.buffer[: match.start()], self.buffer[match.end() : match.end() + 1]
            if _ABBREVIATION.search(before) or _LIST_NUMBER.search(before):
                continue
            if before.endswith(".") and "\n" not in match.group():  # a line break ends it still
                rest = self.buffer[match.end() :]
                if (_INITIALS.search(before) and _FIRST_WORD.fullmatch(rest)) or (
                    not rest and (_BEFORE_NAME.search(before) or _BEFORE_DAY.search(before))
                ):
                    break  # what comes next decides, and it has not come yet
                if (
                    (_BEFORE_NAME.search(before) and _CAPITAL.match(after))
                    or (_BEFORE_DAY.search(before) and after.isdigit())
                    or (_INITIALS.search(before) and _name_follows(rest))
                ):
                    continue
                dotted = _DOTTED.search(before)
                if not after and dotted:
                    break
                if after and (_RUNS_ON.match(after) or (dotted and not _CAPITAL.match(after))):
                    continue
            if match.end() < len(self.buffer) or match.group():  # "。" at the very end: a quote may follow
                cuts.append(match.end())
            break
        if not self.started:
            for match in _CLAUSE.finditer(self.buffer):
                if len(_WORD.findall(self.buffer[: match.start()])) >= MIN_CLAUSE_WORDS:
                    cuts.append(match.end())
                    break
        most = MAX_PIECE_WORDS if self.started else MAX_FIRST_PIECE_WORDS
        if not cuts and (words := list(_WORD.finditer(self.buffer))) and len(words) > most:
            limit = words[most - 1].end()
            clauses = [m.end() for m in _CLAUSE.finditer(self.buffer, 0, limit + 1)]
            space = self.buffer.rfind(" ", 0, limit + 1)
            cuts.append(clauses[-1] if clauses else space if space > 0 else limit)
        return min(cuts, default=None)

    def flush(self) -> list[str]:
        rest, self.buffer = self.buffer.strip(), ""
        return [rest] if rest else []


def speakable(text: str, language: str) -> str:
    """`text` as a voice of `language` should read it: without the marks above, units and signs beside a
    number in words, and without words in a script it does not read (espeak says "Chinese letter" for
    each character, "hebrew shin" for each letter)."""
    text = _numbers_in_words(_MARKS.sub(" ", _ADDRESS.sub(r"\1", _UNSPEAKABLE.sub("", text))), language)
    if other_scripts := _OTHER_SCRIPTS.get(language):
        return other_scripts.sub(" ", text)
    return _HAN_KANA_CHARACTER.sub(" ", text)  # a language whose script is not known here: all but these


# What a voice is given at once, as said: a piece is at most MAX_PIECE_WORDS words as written, but a long
# number is said digit by digit (1,000 digits are 1,000 words), and a skill's text comes whole, a sentence of
# any length: synthesised whole, a medium voice took 44 s to the first sound and 6.4 GB of memory for 1,000
# digits. Counted as said: a word, a Chinese or Japanese character (a syllable, with no space between them),
# or a run of letters without a space, every MAX_RUN of them.
MAX_SPOKEN_WORDS = MAX_PIECE_WORDS + 10  # and what `speakable` adds (units said in words)
MAX_RUN = 20
_SAID = re.compile(f"[{_HAN_KANA}]|(?:(?![{_HAN_KANA}])\\S){{1,{MAX_RUN}}}")


def said_in_parts(text: str) -> list[str]:
    """`text` (speakable) in parts of at most MAX_SPOKEN_WORDS words as said, which a voice takes whole."""
    starts = [m.start() for m in _SAID.finditer(text)][MAX_SPOKEN_WORDS::MAX_SPOKEN_WORDS]
    if not starts:
        return [text]  # as it is: its line breaks are pauses
    return [text[a:b].strip() for a, b in zip([0, *starts], [*starts, len(text)], strict=True)]


def _numbers_in_words(text: str, language: str) -> str:
    """Numbers, times, ranges, fractions, percentages, currencies, units and titles as a voice of
    `language` says them."""
    text = _FULL_WIDTH_IN_NUMBER.sub(lambda m: chr(ord(m[0]) - 0xFEE0), text.translate(_FULL_WIDTH))
    if language not in _UNITS:
        return text
    units, zh = _UNITS[language], language == "zh"

    def named(number: str, unit: str) -> str:
        words = units[unit].replace("{s}", "" if number == "1" else "s")
        return f"{number}{words}" if zh else f"{number} {words}"

    def fraction(m: re.Match) -> str:
        whole, n, d = m[1], int(m[2]), int(m[3])
        if not 0 < n < d <= 10:
            return m[0]  # 5/20: not a fraction said with a name
        if zh:
            return f"{whole}又{d}分之{n}" if whole else f"{d}分之{n}"  # 四分之三: 3/4; 一又二分之一: 1 1/2
        if whole:  # 1 1/2: one and a half
            return f"{whole} and {'a' if n == 1 else n} {_FRACTION_NAMES[d]}{'' if n == 1 else 's'}"
        return f"{n} {_FRACTION_NAMES[d]}{'' if n == 1 else 's'}"

    def clock(m: re.Match) -> str:
        return _said_time(*_time_of(m, 1), zh)

    def clock_range(m: re.Match) -> str:
        first, second = _time_of(m, 1), _time_of(m, 2)
        if first[3] or second[3]:  # one on the 24-hour clock makes both so: 9:00-17:00 starts in the morning
            first, second = [(hour, minute, half, not half) for hour, minute, half, _ in (first, second)]
        start, end = _said_time(*first, zh), _said_time(*second, zh)
        if zh:  # 上午9点到11点
            part = re.match(r"\D*", start).group()
            return f"{start}{'至' if m['to'] == '至' else '到'}{end.removeprefix(part) if part else end}"
        to = m["to"].strip() if m["to"].strip().isalpha() else "to"
        said, half = _english_time(*first)
        if half[:1].lower() == _english_time(*second)[1][:1].lower():
            start = said  # "9 to 11 AM"; "9 to 11 o'clock"
        return f"{start} {to} {end}"

    def currency(m: re.Match) -> str:
        if m[1] not in units:
            return m[0]
        if size := m[3] or _SIZES.get(m[4] or ""):  # $1.5 million: one point five million dollars
            return named(f"{m[2]}{_SIZES_ZH[size]}" if zh else f"{m[2]} {size}", m[1])
        if zh or not re.fullmatch(r"[\d,]+\.\d\d", m[2]):
            return named(m[2], m[1])
        whole, cents = m[2].rsplit(".", 1)
        one, many = _CENTS.get(m[1], ("", ""))
        if cents == "00":
            return named(whole, m[1])
        if one and (whole == "0" or cents[0] == "0"):  # $0.99: ninety-nine cents; $5.05: five dollars five cents
            said = f"{int(cents)} {one if cents == '01' else many}"
            return said if whole == "0" else f"{named(whole, m[1])} {said}"
        return f"{named(whole, m[1])} {cents}"  # $5.50: five dollars fifty

    def unit(m: re.Match) -> str:
        if m[3] not in units or (m[3] == "s" and not m[2]):
            return m[0]  # the 1990s, not seconds
        return named(m[1], m[3])

    def scientific(m: re.Match) -> str:
        minus = ("负" if zh else "minus ") if m[2] == "-" else ""
        return f"{m[1]}乘以10的{minus}{m[3]}次方" if zh else f"{m[1]} times 10 to the {minus}{m[3]}"

    def decade(m: re.Match) -> str:
        century, tens = m[1], int(m[2])
        if tens == 0 and century:  # the 1900s, the 2000s; 100s and 1000s of people
            number = int(century + "00")
            many, name = (number // 1000, "thousands") if number % 1000 == 0 else (number // 100, "hundreds")
            return name if many == 1 else f"{many} {name}"
        return f"{century} {_DECADE_NAMES[tens]}" if century else _DECADE_NAMES[tens] or m[0]

    def year(m: re.Match) -> str:
        tail = "hundred" if m[3] == "00" else f"oh {m[3][1]}" if m[3][0] == "0" else m[3]
        return f"{m[1]}{m[2]} {tail}"  # 1999: nineteen ninety-nine; 1905: nineteen oh five

    def times(m: re.Match) -> str:
        if zh:
            return "倍" if m[1] else "乘"  # 快2倍; 5乘3
        return " times" if m[1] else "times " if m[0] == "x" else " times "

    def day(m: re.Match) -> str:
        try:
            said = date(int(m[1]), int(m[2]), int(m[3]))
        except ValueError:
            return m[0]
        if zh:
            return f"{m[1]}年{said.month}月{said.day}日"  # the year then said digit by digit
        return f"{said.strftime('%B')} {said.day}, {said.year}"

    def dialled(digits: str) -> str:
        return ", ".join(" ".join(group) for group in re.findall(r"\d+", digits))

    def local_phone(m: re.Match) -> str:
        before = re.split(r"[.!?。！？\n]", text[max(0, m.start() - 60) : m.start()])[-1]
        if m[1] is None or _CALLING.search(before + m["after"]):
            return dialled(m[0])
        # Else a range: 1990-2000, 500-1000, 101-1050 (a local number's exchange starts with 2 to 9), 300-1234 m.
        round_ends = m[1].endswith("0") and m[2].endswith("0")
        unit = _UNIT.match(m[2] + m["after"]) or m["after"].strip()[:1] in ("%", "％")
        return m[0] if len(m[1]) == 4 or m[1][0] in "01" or round_ends or unit else dialled(m[0])

    if zh:
        text = _MOBILE.sub(lambda m: " ".join(m[0]), text)
    text = _LOCAL_PHONE.sub(local_phone, _PHONE.sub(lambda m: dialled(m[0]), text))
    if zh:
        text = _DIALLED.sub(lambda m: m[1] + " ".join(m[2]), text)
    text = _DIGIT_RUN.sub(lambda m: " ".join(m[0]), text)
    text = _DOTTED_THOUSANDS.sub(lambda m: m[0].replace(".", ","), text)
    text = _ROUND_THE_CLOCK.sub("全天候" if zh else "24 7", _SCIENTIFIC.sub(scientific, text))
    text = _TIMES.sub(times, text)
    text = _CLOCK_RANGE.sub(clock_range, _DATE.sub(day, text))
    text = _RANGE.sub(r"\1到\2" if zh else r"\1 to \2", _TILDE.sub("–", text))
    text = _RANGE_WITH_UNIT.sub(r"\1到" if zh else r"\1 to ", text)
    text = _CLOCK.sub(clock, _FRACTION.sub(fraction, text))
    if zh:  # English says 50% well; Chinese says 百分之五十
        text = _PERCENT.sub(lambda m: f"{'负' if m[1] else ''}百分之{m[2]}", text)
        text = _YEAR.sub(lambda m: m[1].translate(_CHINESE_DIGITS), _TO_CHINESE_TIME.sub("到", text))
        text = _DAY_PART_TWICE.sub(r"\1", text)
    else:
        text = _TITLE.sub(lambda m: _TITLE_WORDS[m[1] or m[2]], _DECADE.sub(decade, _YEAR_EN.sub(year, text)))
        text = _INITIALS_BEFORE.sub(lambda m: m[1] if _name_follows(m.string[m.end() + 1 :]) else m[0], text)
    text = _UNIT.sub(unit, _CURRENCY.sub(currency, text))
    if not zh:
        return text
    text = _LARGE.sub(lambda m: _in_wan(int(m[0])), _THOUSANDS.sub(lambda m: m[0].replace(",", ""), text))
    return _BELOW_ZERO.sub("零下", _MINUS.sub("负", text))


def _in_wan(number: int) -> str:
    """A number in Chinese groups of four digits: 100万, 1万2345, 1万零50, 1亿零1."""
    said, skipped = "", False
    for size, unit in ((10**8, "亿"), (10**4, "万"), (1, "")):
        part, number = divmod(number, size)
        if part:
            said += ("零" if said and (skipped or part < 1000) else "") + f"{part}{unit}"
        skipped = bool(said) and not part
    return said


def _time_of(m: re.Match, n: int) -> tuple[int, int, str, bool]:
    """The `n`th time of a match: hour, minute, its a.m. or p.m. as written, and whether it is on the 24-hour
    clock (0:30, 07:45, 21:00)."""
    hour, half = m[f"h{n}"] or m[f"o{n}"], (m[f"x{n}"] or "").strip()
    on_24 = not half and (int(hour) == 0 or int(hour) > 12 or len(hour) == 2 and hour[0] == "0")
    return int(hour), int(m[f"m{n}"] or 0), half, on_24


def _english_time(hour: int, minute: int, half: str, on_24: bool) -> tuple[str, str]:
    """A time as an English voice says it on the 12-hour clock, and its half of the day ("PM", "a.m.", or "")."""
    if not half and (hour, minute) in ((0, 0), (12, 0)):
        return "midnight" if hour == 0 else "noon", ""
    if on_24:
        half = "AM" if hour < 12 else "PM"
    if half:
        hour = hour % 12 or 12
    # espeak says "zero zero" for 5:00 and "zero five" for 5:05
    return f"{hour}" if minute == 0 else f"{hour} oh {minute}" if minute < 10 else f"{hour}:{minute:02d}", half


def _said_time(hour: int, minute: int, half: str, on_24: bool, zh: bool) -> str:
    """A time of day in English ("9:30 PM", "5 o'clock", "noon") or in Chinese (9点30分, 下午5点; one on the
    24-hour clock as the assistant's own clock says it: 晚上9点30分)."""
    if zh:
        if on_24:
            return clock(hour, minute, "zh")
        part = ("下午" if half[:1] in "Pp" else "上午") if half else ""
        return f"{part}{hour}点" + (f"{minute:02d}分" if minute else "")
    said, half = _english_time(hour, minute, half, on_24)
    if half:
        return f"{said} {half}"
    return f"{said} o'clock" if minute == 0 and said[0].isdigit() else said
