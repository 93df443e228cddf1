"""Local intents: matched before the LLM is asked, so common commands answer in milliseconds.

Two kinds of templates, both matched by hassil:

* **Home Assistant's sentence library** (the `home-assistant-intents` package: CC-BY-4.0 sentences
  by the Home Assistant community). A skill names the intents it answers and the arguments it gets:

      @skill(intents={"HassTurnOn": {"device": "{name}", "on": True}})

  A value "{slot}" is that slot's value; a slot named like a parameter needs no entry. Several
  skills may answer one intent: the first whose schema accepts the arguments (a device name in its
  enum, its required arguments present) gets the call.
* **The skill's own templates**, for what the library lacks (notes, alarms, repeat), per language,
  with {slots} named after its parameters:

      @skill(sentences={"en": ["set an alarm for {hour} o'clock"], "zh": ["{hour}点叫醒我"]})

  Their slot lists come from the skill's schema: enum → its values, a bounded number → a range,
  boolean → on/off words, any other string → a wildcard, a list → one value of its items' kind.
  A (template, slots) pair fixes slot values.

Device names, their aliases and areas come from `mqtt.devices` (the `name` and `area` lists of
Home Assistant's templates). Numbers arrive as numbers; one outside the skill's range is answered
with a sentence that gives the range, and the skill is not called.

A sentence of several requests ("set an alarm for 7 and a timer for 5 minutes") matches as its parts,
in order, if each part matches on its own; if one does not, it matches nothing (the model hears it).
"""

from __future__ import annotations

import difflib
import functools
import itertools
import logging
import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
from hassil import Intents, RecognizeResult, TextSlotList, Trie, recognize_best
from hassil.parse_expression import parse_sentence
from hassil.sample import sample_sentence
from unicode_rbnf import RbnfEngine

from assistant.skills.sdk import Skill, SkillError, as_declared

log = logging.getLogger(__name__)
T = TypeVar("T")

# The built-in skills' folder: their sentences are written not to take each other's.
BUILTIN_FOLDER = str(Path(__file__).resolve().parent / "builtin")

# Our language codes → the sentence library's.
HOME_ASSISTANT_LANGUAGES = {"en": "en", "zh": "zh-cn"}

# Slots that ask for something no skill does (a command run after a timer, floors): such a
# sentence goes to the model rather than to a skill that would do half of it.
UNSUPPORTED_SLOTS = frozenset({"conversation_command", "floor"})

# Slots that only qualify a name, which a skill may ignore: "the lamp in the kitchen" is the lamp.
QUALIFIERS = frozenset({"area", "domain"})

# Without a room of its own, "turn off the lights" and "set the volume to 50" (which Home
# Assistant resolves in the speaker's area) mean the whole home.
HERE = "everywhere"

# Words for true and false, per language.
BOOLEAN_WORDS = {
    "en": [("on", True), ("off", False), ("yes", True), ("no", False)],
    "zh": [("打开", True), ("开", True), ("关闭", False), ("关", False)],
}

ANYTHING = "anything_else"
SLOT = re.compile(r"\{(\w+)\}")
LIST_REFERENCE = re.compile(r"\{(\w+)(?::(\w+))?\}")
RULE_REFERENCE = re.compile(r"<(\w+)>")
TEMPLATE_SYNTAX = re.compile(r"[()\[\]|{}<>]")
# Chinese, Japanese and Korean script: a sentence that does not start in it is not tried against those
# languages' templates, and one that does only against those.
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
CJK_LANGUAGES = ("zh", "ja", "ko")


# Courtesy around a request, which no template has: "could you please ... thanks", 请帮我……，谢谢. A sentence
# without a match is tried again without it (not before: "note that I should say thank you" keeps its words).
COURTESY = re.compile(
    r"^\W*(?:(?:hey|ok|okay)\W+)?(?:(?:could|can|would|will) you\W+)?(?:please\W+)?"
    r"|\W+(?:please|thanks|thank you)(?:\W+(?:please|thanks|thank you))*\W*$"
    r"|^(?:请问|请|麻烦你|麻烦)?(?:帮我|替我)?|[，,。！!\s]*(?:谢谢你?|谢了|多谢)[。！!]*$",
    re.IGNORECASE,
)

# "One hundred and twenty", as people (and vosk) say it; hassil's number words are "one hundred twenty".
HUNDRED_AND = re.compile(r"\bhundred and (?=[a-z])", re.IGNORECASE)
# "7:30pm" as typed, which hassil takes as one word: the templates have "7:30 pm".
AM_PM = re.compile(r"(?<=\d)(?=(?:am|pm|a\.m\.|p\.m\.)(?!\w))", re.IGNORECASE)
# Units as typed after a number ("5 min", "90 secs", "1 hr"): the templates have them in words.
TYPED_UNITS = {"min": "minutes", "mins": "minutes", "sec": "seconds", "secs": "seconds", "hr": "hours", "hrs": "hours"}
TYPED_UNIT = re.compile(rf"(?<=\d) ?({'|'.join(TYPED_UNITS)})\b\.?", re.IGNORECASE)
# A Chinese recogniser writes its words apart ("七点 半 叫醒 我", "设置 一个 10 分钟 的 计时器"), which the templates
# have together: spaces between Chinese or Japanese characters, or between them and a digit, are dropped.
HAN_KANA = "\u3040-\u30ff\u3400-\u9fff"
SPACED = re.compile(f"(?<=[{HAN_KANA}0-9]) +(?=[{HAN_KANA}])|(?<=[{HAN_KANA}]) +(?=[0-9])")

KANA_HANGUL = re.compile(r"[\u3040-\u30ff\uac00-\ud7af]")
LATIN_LETTER = re.compile(r"[A-Za-z]")
FIRST_LETTER = re.compile(r"[A-Za-z\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


def starts_in_cjk(text: str) -> bool:
    """Whether the first word is Chinese, Japanese or Korean: a name in the other script does not
    change the language of "turn on the 卧室灯" or "关掉 kitchen light"."""
    first = FIRST_LETTER.search(text)
    return first is not None and CJK.match(first.group()) is not None


def reply_language(text: str) -> str:
    """The language a request is answered in: Chinese, or English (also for Japanese and Korean,
    which have no replies of their own)."""
    return "zh" if starts_in_cjk(text) and not KANA_HANGUL.search(text) else "en"


@dataclass
class IntentMatch:
    skill: str
    """The skill to call."""
    arguments: dict[str, Any]
    """Its arguments, typed as its schema says."""
    language: str
    """The language of the templates that matched ("en", "zh", ...)."""
    reply: str | None = None
    """Said instead of calling the skill: why the request cannot be done (a number out of range)."""
    intent: str | None = None
    """The Home Assistant intent that matched, if the match came from the sentence library."""
    said: str = ""
    """The words it was matched from, when the sentence held several requests."""
    then: list[IntentMatch] = field(default_factory=list)
    """The requests said after it in the same sentence ("... and a timer for 5 minutes"), to run in order."""


# Words that join two requests in one sentence: "set an alarm for 7 and a timer for 5 minutes", "..., then
# turn off the light", 打开卧室灯然后设一个计时器, 打开卧室灯，设一个计时器; also the end of a typed sentence
# ("set a timer for 5 minutes. Turn on the light", 打开卧室灯。设一个计时器). Only where each part is a request of
# its own: "1 hour and 30 minutes", "bread and butter", 面包和黄油 stay one.
JOINER = re.compile(
    r"(?:\s*[,;.!?])?\s+(?:and\s+then|and|then|also)\s+|\s*[,，;；。！？]\s*(?:然后再|然后|并且|再|和)?\s*"
    r"|[.!?]\s+|\s*(?:然后再|然后|并且|再|和)\s*",
    re.IGNORECASE,
)
# Joining words that also mean "again" and "with": right after free text (a note), they are its words.
WEAK_JOINERS = ("再", "和")
# What ends a typed sentence, not part of its last request.
SENTENCE_END = " .!?。！？"
# A sentence joined in more places than this is not tried as separate requests: each way of cutting
# it costs a match.
MOST_JOINS = 5
# The most words an answer said before requests is tried with when nothing joins them ("no thank you set a timer").
ANSWER_WORDS = 4

# The longest text tried against the sentences: a note of 500 characters and its command. Matching
# 2,400 characters took 3.5 s here, holding every other asker's turn (and more on a board).
LONGEST_COMMAND = 600


class IntentMatcher:
    def __init__(self, skills: dict[str, Skill], devices: list[dict] | None = None):
        self.skills = skills
        self.own = _own_intents(skills)
        # Per skill, the answers to its questions: matched only right after it asked one.
        self.answer_templates = {
            name: _own_intents({name: found}, "answers") for name, found in skills.items() if found.answers
        }
        # Home Assistant intent → the skills that answer it, in load order.
        self.answers: dict[str, list[Skill]] = {}
        for found in skills.values():
            for intent in found.intents:
                self.answers.setdefault(intent, []).append(found)
        devices = devices or []
        self.library = _library_intents(self._consumed(), {d.get("type", "") for d in devices})
        self.slot_lists = device_slot_lists(devices)
        # Only the names that occur in a sentence are offered to hassil, as Home Assistant does:
        # with every device's name and aliases in the list, each template would try them all.
        self.names = Trie()
        for value in self.slot_lists["name"].values:
            self.names.insert(_plain(value.text_in.text), value)
        # hassil builds its number words and caches on first use (up to ~0.5 s): pay that now, not in a turn.
        for language in self._languages():
            self._match_own(f"{language} 12 twelve 十二", language)
            self._match_library(f"{language} 12 twelve 十二", language)
        self._warn_of_taken_sentences()

    def _warn_of_taken_sentences(self) -> None:
        """Log each sentence of a skill from outside the package that another skill's sentence answers.

        hassil gives a tie to the skill loaded first: a copy of "what time is it" in a skill file
        would go to the built-in one, and the skill would never hear it, without a word.
        """
        for name, found in self.skills.items():
            if found.source.startswith(BUILTIN_FOLDER):
                continue  # a match per sentence, at every start: only for the skills that may be new
            for language, sentences in found.sentences.items():
                for sentence in sentences:
                    template = sentence[0] if isinstance(sentence, tuple) else sentence
                    example = _example(found, template, language)
                    taken = self._match_own(example, language) if example else None
                    if taken is None or taken.skill == name:
                        continue
                    other = self.skills[taken.skill]
                    log.warning(
                        "%s: skill %s: its sentence %r (%s) is heard as %s (%s) instead: reword it, or turn %s off "
                        "with skills.disabled",
                        found.source, name, template, language, other.name, other.source, other.name,
                    )  # fmt: skip

    def _consumed(self) -> dict[str, set[str]]:
        """For each library intent, the slots some skill that answers it takes."""
        consumed: dict[str, set[str]] = {}
        for intent, answering in self.answers.items():
            consumed[intent] = set().union(*(slots_taken(found, intent) for found in answering))
        return consumed

    def _languages(self) -> list[str]:
        return list(dict.fromkeys([*self.own, *self.library]))

    def match(self, text: str) -> IntentMatch | None:
        """The request in `text`; with the requests joined to it in `then` ("set an alarm for 7 and a timer
        for 5 minutes"), if each part is one on its own. None when any part is not: the model hears it all."""
        if len(text) > LONGEST_COMMAND:
            return None  # not a household command; matching time grows faster than the text
        # Chinese words together before the joins are found, so that a note's words are looked for as matched
        # ("记 一下 买 牛奶 然后 设置 一个 十 分钟 的 计时器" is a note and a timer, as written without spaces).
        text = SPACED.sub("", text)
        whole = self._match_one(text)
        end = len(text.rstrip(SENTENCE_END))
        joins = [j for j in JOINER.finditer(text) if j.start() > 0 and j.end() < end]
        if not joins or len(joins) > MOST_JOINS:
            return whole
        spans = [(0, 0), *(j.span() for j in joins), (len(text), len(text))]
        if whole is not None and not any(self._inside_free_text(whole, text, span) for span in spans[1:-1]):
            return whole  # "1 hour and 30 minutes", "the kitchen and living room lights"
        if chain := self._chain(text, spans):
            chain[0].then = chain[1:]
            return chain[0]
        # "set a blah and a pasta timer for 10 minutes": not a timer named "blah and a pasta".
        inside = [(start, end) for start, end in spans[1:-1] if self._inside_free_text(whole, text, (start, end))]
        after = [end for start, end in inside if text[start:end].strip() not in WEAK_JOINERS]
        return None if any(self._match_one(text[end:]) for end in after) else whole

    def _chain(self, text: str, spans: list[tuple[int, int]]) -> list[IntentMatch] | None:
        """`text` cut at some of the joins (`spans`, with the start and end of the text) into requests
        that each match: the first cut that works, from the left; None if there is none."""
        matches: dict[tuple[int, int], IntentMatch | None] = {}
        chains: dict[int, list[IntentMatch] | None] = {}

        def part(i: int, j: int) -> IntentMatch | None:
            if (i, j) not in matches:
                said = text[spans[i][1] : spans[j][0]]
                found = self._match_one(said)
                last = (len(said.rstrip()) - 1, len(said.rstrip()))
                if text[slice(*spans[j])].strip() in WEAK_JOINERS and self._inside_free_text(found, said, last):
                    found = None  # 记一下明天再打开卧室灯 is one note
                for k in range(i + 1, j):
                    # Free text takes in no request of its own after it: "the code is 1234. Buy milk. Set a timer for
                    # 5 minutes" is no timer named "code is 1234. Buy milk. Set a".
                    inner = (spans[k][0] - spans[i][1], spans[k][1] - spans[i][1])
                    strong = text[slice(*spans[k])].strip() not in WEAK_JOINERS
                    if found and strong and self._inside_free_text(found, said, inner) and part(k, j) is not None:
                        found = None
                        break
                if found is not None:
                    found.said = said
                matches[i, j] = found
            return matches[i, j]

        def chain_from(i: int) -> list[IntentMatch] | None:
            if i not in chains:
                chains[i] = None
                for j in range(i + 1, len(spans)):
                    if (i, j) == (0, len(spans) - 1):
                        continue  # the sentence whole
                    rest = [] if j == len(spans) - 1 else chain_from(j)
                    if rest is not None and (found := part(i, j)) is not None:
                        chains[i] = [found, *rest]
                        break
            return chains[i]

        return chain_from(0)

    def _inside_free_text(self, found: IntentMatch | None, text: str, span: tuple[int, int]) -> bool:
        """Whether the words of `text` at `span` are (partly) in a free-text argument of `found` (a timer's label)."""
        if found is None:
            return False
        skill = self.skills[found.skill]
        for name, value in found.arguments.items():
            if not _free_text(skill, name):
                continue
            for words in map(str, value if isinstance(value, list) else [value]):
                at = text.casefold().find(words.casefold()) if words else -1
                if at >= 0 and at < span[1] and span[0] < at + len(words):
                    return True
        return False

    def _match_one(self, text: str) -> IntentMatch | None:
        """One request in `text` (a part of what `match` was given, which bounded its length)."""
        for language in self._tried(text, self._languages()):
            found = self._match_own(text, language) or self._match_library(text, language)
            if found and not self._courtesy_only(found):
                return found
        # Then in plainer form: without courtesy, with full-width digits and letters (１０分钟, as a Chinese
        # input method may type them) as the templates' own, Chinese words together, "hundred and" as
        # hassil's "hundred", "7:30pm" as "7:30 pm", and "5 min" as "5 minutes".
        plain = COURTESY.sub("", SPACED.sub("", unicodedata.normalize("NFKC", text)))
        plain = AM_PM.sub(" ", HUNDRED_AND.sub("hundred ", plain))
        plain = TYPED_UNIT.sub(lambda m: " " + TYPED_UNITS[m[1].lower()], plain).strip()
        return self._match_one(plain) if plain and plain != text.strip() else None

    def _courtesy_only(self, found: IntentMatch) -> bool:
        """Whether free text of `found` is only courtesy ("take a note please", 记一下，谢谢): no note, no name."""
        skill = self.skills[found.skill]
        return any(
            # After a word, as it follows one in a sentence: what COURTESY takes off its end is all of it.
            _free_text(skill, name) and isinstance(value, str) and COURTESY.sub("", f"x {value}").strip() == "x"
            for name, value in found.arguments.items()
            if str(value).strip()
        )

    def match_answer(self, text: str, question: str, call: dict) -> IntentMatch | None:
        """The text as an answer to `question`, which the skill asked when `call` ran it: the call
        with its arguments updated by the answer's, or None if the text answers nothing. An answer
        with requests joined after it ("the pasta one and set an alarm for 7") has them in `then`."""
        if found := self._answer(text, question, call):
            return found
        if split := self.match_after(text, lambda words: self._answer(words, question, call)):
            found, found.then = split
            return found
        return None

    def match_after(self, text: str, first: Callable[[str], T | None]) -> tuple[T, list[IntentMatch]] | None:
        """`text` as words that `first` understands with requests joined after them ("yes, and set an alarm
        for 7", "the pasta one and set an alarm for 7"): what `first` made of its words and the requests, in
        order; None if no cut at a join gives both."""
        # At a join, or between the first words, as a recogniser writes "yes, set a timer": "yes set a timer".
        cuts = [j.span() for j in JOINER.finditer(text) if j.start() > 0 and j.end() < len(text)][:MOST_JOINS]
        cuts += [g.span() for g in re.finditer(r"\s+", text) if g.start() > 0 and g.end() < len(text)][:ANSWER_WORDS]
        for start, end in sorted(set(cuts)):
            if (found := first(text[:start])) is not None and (rest := self.match(text[end:])):
                rest.said = rest.said or text[end:]
                then, rest.then = [rest, *rest.then], []
                return found, then
        return None

    def _answer(self, text: str, question: str, call: dict) -> IntentMatch | None:
        templates = self.answer_templates.get(call["name"], {})
        text = SPACED.sub("", text)
        for language in self._tried(text, list(templates)):
            result = recognize_best(text, templates[language], language=language)
            if result is None:
                continue
            found = self.skills[call["name"]]
            answer = _values(result, text)
            names = [str(value) for slot, value in answer.items() if _free_text(found, slot)]
            if not all(_offered(name, question, found) for name in names):
                continue  # a name the question did not offer: more likely a new request
            # "7" says nothing of its language: the reply stays in the question's.
            said_in = language if FIRST_LETTER.search(text) else reply_language(question)
            return _checked(found, {**call["arguments"], **answer}, said_in)
        return None

    @staticmethod
    def _tried(text: str, languages: list[str]) -> list[str]:
        """The languages of the script the sentence starts in; then, for a sentence in both scripts
        ("kitchen light开着吗"), the others."""
        cjk = starts_in_cjk(text)
        mixed = CJK.search(text) is not None and LATIN_LETTER.search(text) is not None
        own_script = [lang for lang in languages if (lang.split("-")[0] in CJK_LANGUAGES) == cjk]
        return own_script + ([lang for lang in languages if lang not in own_script] if mixed else [])

    def _match_own(self, text: str, language: str) -> IntentMatch | None:
        if language not in self.own:
            return None
        result = recognize_best(text, self.own[language], language=language)
        if result is None or result.intent.name not in self.skills:
            return None
        found = self.skills[result.intent.name]
        arguments = _values(result, text)
        return _checked(found, arguments, language)

    def _match_library(self, text: str, language: str) -> IntentMatch | None:
        if language not in self.library:
            return None
        names = [value for _, _, value in self.names.find(_plain(text))]
        result = recognize_best(
            text,
            self.library[language],
            slot_lists={**self.slot_lists, "name": TextSlotList(name="name", values=names)},
            intent_context={"area": HERE},
            best_slot_name="name",
            language=HOME_ASSISTANT_LANGUAGES[language],
        )
        if result is None:
            return None
        slots = _values(result, text)
        if UNSUPPORTED_SLOTS & slots.keys():
            return None
        intent = result.intent.name
        said = {slot for slot, entity in result.entities.items() if entity.text}  # not a template's fixed value
        for found in self.answers.get(intent, []):
            if said - QUALIFIERS - slots_taken(found, intent):
                # "turn on the thermostat" names a device switch_all has no use for: dropping the
                # name would leave "turn on", and every light in the home would come on.
                continue
            match = _checked(found, skill_arguments(found, intent, slots), language)
            if match is not None:
                match.intent = intent
                return match
        log.debug("%s %s: no skill takes these arguments", intent, slots)
        return None


def _values(result: RecognizeResult, text: str) -> dict[str, Any]:
    """The matched slots' values; free text with the punctuation it was typed with, which hassil drops
    before matching: "add milk, eggs and bread" is three items, not "milk eggs and bread", and the note
    of "take a note buy milk. Set a timer for 5 minutes" ends where its sentence does."""
    values = {}
    for slot, entity in result.entities.items():
        words = entity.value.split() if entity.is_wildcard and isinstance(entity.value, str) else []
        typed = re.search(r"\W*\s+".join(map(re.escape, words)), text) if len(words) > 1 else None
        values[slot] = typed.group() if typed else entity.value
    return values


def slots_taken(found: Skill, intent: str) -> set[str]:
    """The library slots a skill uses for an intent: its parameters and the slots its mapping names."""
    mapped = {m.group(1) for v in found.intents[intent].values() if isinstance(v, str) and (m := SLOT.fullmatch(v))}
    return set(found.parameters["properties"]) | mapped


def skill_arguments(found: Skill, intent: str, slots: dict[str, Any]) -> dict[str, Any]:
    """The arguments a skill declared for a library intent, filled from the matched slots."""
    arguments = {}
    for name, value in found.intents[intent].items():
        slot = SLOT.fullmatch(value) if isinstance(value, str) else None
        if slot is None:
            arguments[name] = value
        elif slot.group(1) in slots:
            arguments[name] = slots[slot.group(1)]
    for slot, value in slots.items():
        if slot in found.parameters["properties"] and slot not in found.intents[intent]:
            arguments.setdefault(slot, value)
    return arguments


def _checked(found: Skill, arguments: dict[str, Any], language: str) -> IntentMatch | None:
    """A match if the skill's schema takes the arguments; with a spoken reply if only a number is out of range."""
    properties = found.parameters["properties"]
    arguments = {name: _typed(value, properties[name]) for name, value in arguments.items() if name in properties}
    errors = list(jsonschema.Draft202012Validator(found.parameters).iter_errors(arguments))
    if not errors:
        return IntentMatch(found.name, arguments, language)
    if all(e.validator in ("minimum", "maximum") and e.path for e in errors):
        return IntentMatch(
            found.name, arguments, language, reply=out_of_range(properties[errors[0].path[0]], language.split("-")[0])
        )
    if all(e.validator == "maxLength" and e.path for e in errors):
        # A note said at length: told, not left to the model, whose call the schema would cut at the bound.
        most = properties[errors[0].path[0]]["maxLength"]
        if language.split("-")[0] == "zh":
            return IntentMatch(found.name, arguments, language, reply=f"抱歉，太长了，最多{most}个字。")
        reply = f"Sorry, that is too long: I can keep at most {most} characters."
        return IntentMatch(found.name, arguments, language, reply=reply)
    return None


def out_of_range(schema: dict, language: str = "en") -> str:
    """A spoken sentence that gives the allowed range of a number."""
    what = schema.get("description", "the number")  # the skill's own words, in English
    bounds = schema.get("items", schema)  # a list's numbers have their bounds on its items
    low, high = bounds.get("minimum"), bounds.get("maximum")
    if language == "zh":
        bound = f"最多是{high:g}" if low is None else f"至少是{low:g}" if high is None else f"要在{low:g}到{high:g}之间"
        return f"抱歉，这个数{bound}。"
    if low is None or high is None:
        return f"Sorry, {what} can be at {'most' if low is None else 'least'} {high if low is None else low:g}."
    return f"Sorry, {what} can be from {low:g} to {high:g}."


def device_slot_lists(devices: list[dict]) -> dict[str, TextSlotList]:
    """The library's {name} and {area} lists from the configured devices.

    A device answers to its name and its aliases, each carrying its type as the library's domain
    (so "open" goes to covers, "turn on" to lights); hassil compares them without case or punctuation.
    """
    names = [
        (heard, device["name"], {"domain": device.get("type", "")})
        for device in devices
        for spoken in [device["name"], *device.get("aliases", [])]
        for heard in dict.fromkeys(numbers_said(_words(spoken)))
        if heard
    ]
    areas = sorted({device["area"] for device in devices if device.get("area")})
    return {
        "name": TextSlotList.from_tuples(names, allow_template=False),
        "area": TextSlotList.from_tuples([(_words(a), a) for a in areas if _words(a)], allow_template=False),
        "floor": TextSlotList.from_strings([]),
    }


# Numbers as a recogniser writes them said on their own ("kitchen light two", 客厅灯二): English words to
# twenty, Chinese numerals to 99. The smart-home skill reads them back as digits with the same words.
ENGLISH_NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven"]
ENGLISH_NUMBERS += ["twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
ENGLISH_NUMBERS += ["twenty"]
CHINESE_DIGITS = "零一二三四五六七八九"
MOST_NUMBERS_SPELT = 3  # in one name ("floor 2 room 3 lamp 1"); a name with more is heard as written


def numbers_said(name: str) -> list[str]:
    """`name` and each way of writing it with its numbers in words: "kitchen light 2" is also "kitchen
    light two"; 客厅灯2 is also 客厅灯二 and 客厅灯两, 客厅灯12 客厅灯十二 (Chinese numerals for a name
    in Chinese characters, English words for any other)."""
    chinese = CJK.search(name) is not None
    parts = re.split(r"(\d+)", name)  # text, number, text, ...: the numbers at the odd places
    if len(parts) > 2 * MOST_NUMBERS_SPELT + 1:
        return [name]  # each number's spellings multiply the names: 3 ** 20 for 灯-2-2-…
    forms = [[part] if i % 2 == 0 else [part, *_number_words(int(part), chinese)] for i, part in enumerate(parts)]
    return ["".join(choice) for choice in itertools.product(*forms)]


def _number_words(number: int, chinese: bool) -> list[str]:
    """A number's words as a recogniser writes them: ["two"], or ["二", "两"]; [] past the words we give."""
    if not chinese:
        return [ENGLISH_NUMBERS[number]] if number < len(ENGLISH_NUMBERS) else []
    if number < 10:
        return [CHINESE_DIGITS[number], *(["两"] if number == 2 else [])]
    if number < 100:
        tens, ones = divmod(number, 10)
        return [f"{CHINESE_DIGITS[tens] if tens > 1 else ''}十{CHINESE_DIGITS[ones] if ones else ''}"]
    return []


def _words(text: str) -> str:
    """A name as it is said: "{x} plug" is "x plug" (no recogniser writes the brackets of hassil's templates)."""
    return " ".join(TEMPLATE_SYNTAX.sub(" ", text).split())


def _plain(text: str) -> str:
    """Lower case, punctuation as spaces: how names are looked for in a sentence."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def library_intent_slots() -> dict[str, set[str]]:
    """Every intent of the sentence library (in our languages) with the slots its templates can fill."""
    from home_assistant_intents import get_intents

    found: dict[str, set[str]] = {}
    for code in HOME_ASSISTANT_LANGUAGES.values():
        data = get_intents(code) or {"intents": {}}
        for name, intent in data["intents"].items():
            slots = found.setdefault(name, set())
            for block in intent["data"]:
                rules = {**data.get("expansion_rules", {}), **block.get("expansion_rules", {})}
                for sentence in block["sentences"]:
                    slots |= _slots_in(sentence, rules, set())
                slots |= set(block.get("slots", {}))
                context = block.get("requires_context", {})
                slots |= {key for key, value in context.items() if isinstance(value, dict) and value.get("slot")}
    return found


def _slots_in(template: str, rules: dict[str, str], seen: set[str]) -> set[str]:
    """The slots of a template: {list} or {list:slot}, also inside the <rules> it uses."""
    slots = {slot or name for name, slot in LIST_REFERENCE.findall(template)}
    for rule in RULE_REFERENCE.findall(template):
        if rule in rules and rule not in seen:
            seen.add(rule)
            slots |= _slots_in(rules[rule], rules, seen)
    return slots


@functools.cache
def _library_intent_names() -> frozenset[str]:
    return frozenset(library_intent_slots())  # read from the package's data: 20 ms a call


def _library_intents(consumed: dict[str, set[str]], domains: set[str]) -> dict[str, Intents]:
    """The library's templates for the intents some skill answers (with the slots they take), per language.

    Templates that could never lead to a skill are left out, since every template costs time in
    every match: those only for a kind of device that is not configured (locks, media players...),
    and those that fill a slot no skill takes (a colour, a floor) beyond the QUALIFIERS.
    """
    if not consumed:
        return {}
    from home_assistant_intents import get_intents

    def useful(block: dict) -> bool:
        for needed in (block.get("requires_context", {}).get("domain"), block.get("slots", {}).get("domain")):
            if needed is not None and not ({needed} if isinstance(needed, str) else set(needed)) & domains:
                return False
        return True

    def takes(name: str, block: dict, sentence: str, rules: dict) -> bool:
        filled = _slots_in(sentence, rules, set()) | set(block.get("slots", {}))
        # Unsupported slots are often optional parts ("[on <floor>]"); a match that fills one is refused later.
        return filled <= consumed[name] | QUALIFIERS | UNSUPPORTED_SLOTS

    loaded = {}
    for language, code in HOME_ASSISTANT_LANGUAGES.items():
        data = get_intents(code)
        if data is None:
            continue
        intents = {}
        for name, intent in data["intents"].items():
            if name not in consumed:
                continue
            blocks = []
            for block in filter(useful, intent["data"]):
                rules = {**data.get("expansion_rules", {}), **block.get("expansion_rules", {})}
                sentences = [s for s in block["sentences"] if takes(name, block, s, rules)]
                if sentences:
                    blocks.append({**block, "sentences": sentences})
            intents[name] = {**intent, "data": blocks}
        # hassil first keeps the templates whose regular expression fits the sentence, and if none
        # does, tries every template the slow way. This one always fits (and maps to no skill), so
        # a sentence for the model costs one regular expression per template, not a full search.
        intents[ANYTHING] = {"data": [{"sentences": ["{" + ANYTHING + "}"]}]}
        data["lists"][ANYTHING] = {"wildcard": True}
        data["intents"] = intents
        loaded[language] = Intents.from_dict(data)
    return loaded


def _own_intents(skills: dict[str, Skill], kind: str = "sentences") -> dict[str, Intents]:
    """The skills' own templates (`kind`: their "sentences" or "answers") per language."""
    by_language: dict[str, dict] = {}
    for name, found in skills.items():
        for language, sentences in getattr(found, kind).items():
            data = by_language.setdefault(language, {"language": language, "intents": {}, "lists": {}})
            entries = []
            for sentence in sentences:
                text, fixed = sentence if isinstance(sentence, tuple) else (sentence, {})
                # Slot names are per skill: {slot} refers to the list {skill__slot} while keeping the slot name.
                entries.append({"sentences": [_scope(text, name, found)], "slots": dict(fixed)})
            data["intents"][name] = {"data": entries}
            for slot, schema in found.parameters["properties"].items():
                data["lists"][f"{name}__{slot}"] = _slot_list(schema, language)
            for list_name, values in found.lists.items():
                data["lists"][f"{name}__{list_name}"] = {"values": [{"in": k, "out": v} for k, v in values.items()]}
    intents = {}
    for language, data in by_language.items():
        try:
            intents[language] = Intents.from_dict(data)
        except Exception as e:  # a template that hassil cannot parse
            log.error("local intents for %s not loaded: %s", language, e)
    return intents


def check_sentences(found: Skill) -> None:
    """Raise SkillError for a template of the skill's own that hassil cannot use.

    hassil parses templates only when it first matches, so one bad template would otherwise fail
    every skill's sentences in its language at start-up, not just its own skill at load time.
    """
    for intent, arguments in found.intents.items():
        if intent not in _library_intent_names():  # a misspelt intent would never be matched
            close = difflib.get_close_matches(str(intent), _library_intent_names(), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SkillError(f"skill {found.name}: intent {intent!r} is not in Home Assistant's sentence library{hint}")
        if not isinstance(arguments, dict):  # else every match would fail on it, and the matcher's start
            what = "a dict of the skill's arguments ({} for none)"
            raise SkillError(f"skill {found.name}: intent {intent!r} takes {what}, not {arguments!r}")
    parameters = found.parameters["properties"]
    for list_name, values in found.lists.items():
        where = f"skill {found.name}: list {list_name!r}"
        if not isinstance(list_name, str) or not re.fullmatch(r"\w+", list_name) or list_name in parameters:
            raise SkillError(f"{where}: a list needs a name of letters, digits and _ that no parameter has")
        if not isinstance(values, dict) or not values:
            raise SkillError(f"{where}: a list is a dict of the words said → the value they stand for")
        if bad := [w for w in values if not isinstance(w, str) or not w.strip() or TEMPLATE_SYNTAX.search(w)]:
            raise SkillError(f"{where}: {bad[0]!r} is not plain words (no ()[]|{{}}<>)")
    for kind in ("sentences", "answers"):
        for language, sentences in getattr(found, kind).items():
            if not _is_language_code(language):  # "cn" was never tried on Chinese, "english" heard no number words
                raise SkillError(
                    f'skill {found.name}: {kind} under {language!r}: not a language code (use one such as "en" or "zh")'
                )
            if not isinstance(sentences, list | tuple):  # a str would be taken a character at a time
                raise SkillError(f"skill {found.name}: {kind} ({language}) is a list of templates, not {sentences!r}")
            for sentence in sentences:
                _check_template(found, sentence, language, answer=kind == "answers")


def _is_language_code(language: Any) -> bool:
    """Whether sentences under `language` are heard: a code hassil has number words for ("en", "zh",
    "zh-cn"), written as the matcher reads it, its language before any "-"."""
    if not isinstance(language, str) or not re.fullmatch(r"[a-z]{2,3}(-[A-Za-z0-9]+)*", language):
        return False
    return language.split("-")[0] in _number_languages()


@functools.cache
def _number_languages() -> frozenset[str]:
    return frozenset(RbnfEngine.get_supported_languages())  # read from its data folder: 1 ms a call


def _check_template(found: Skill, sentence: Any, language: str, answer: bool = False) -> None:
    """Raise SkillError for a template, or a (template, {slot: value}) pair, that cannot be used
    (`answer`: one that completes the arguments of the call that asked)."""
    parameters = found.parameters["properties"]
    pair = isinstance(sentence, tuple) and len(sentence) == 2 and isinstance(sentence[1], dict)
    text, fixed = sentence if pair else (sentence, {})
    if not isinstance(text, str):
        pair_form = "(template, {slot: value}) pair"
        raise SkillError(f"skill {found.name}: {sentence!r} ({language}) is neither a template nor a {pair_form}")
    where = f"skill {found.name}: sentence {text!r} ({language})"
    try:
        parse_sentence(text)
    except Exception as e:
        raise SkillError(f"{where} cannot be parsed: {e}") from None
    for reference in LIST_REFERENCE.finditer(text):
        list_name, slot = reference.group(1), reference.group(2) or reference.group(1)
        if slot not in parameters:
            raise SkillError(f"{where}: {{{slot}}} is not a parameter of the skill")
        if reference.group(2) is not None and list_name not in found.lists:  # {list:slot}
            raise SkillError(f"{where}: {{{list_name}:...}} is not one of the skill's lists")
    if unknown := [name for name in fixed if name not in parameters]:
        raise SkillError(f"{where}: {{{unknown[0]}}} is not a parameter of the skill")
    given = {reference.group(2) or reference.group(1) for reference in LIST_REFERENCE.finditer(text)} | set(fixed)
    if not answer and (missing := [name for name in found.parameters["required"] if name not in given]):
        # Heard, then refused by the schema: the sentence would go to the model every time.
        needs = f"it has no {{{missing[0]}}}, which the skill needs"
        raise SkillError(
            f"{where} never runs the skill: {needs} (give {missing[0]} a default to take the sentence without it)"
        )
    for name, value in fixed.items():  # else the sentence is heard and silently answers nothing
        if error := next(jsonschema.Draft202012Validator(parameters[name]).iter_errors(value), None):
            raise SkillError(f"{where}: {name}={value!r} does not fit the parameter: {error.message}")
    if rule := RULE_REFERENCE.search(text):
        raise SkillError(f"{where}: <{rule.group(1)}> rules are not available in a skill's own sentences")


def _example(found: Skill, template: str, language: str) -> str | None:
    """One sentence the template hears, with a value the skill takes in each slot (None if it has none)."""
    lists = {}
    for reference in LIST_REFERENCE.finditer(template):
        list_name, slot = reference.group(1), reference.group(2)
        if slot is None:
            value = _example_value(found.parameters["properties"][list_name], language)
        else:  # {list:slot}: a list of the skill's own
            value = next(iter(found.lists[list_name]))
        if value is None:
            return None
        lists[list_name] = TextSlotList.from_strings([value], allow_template=False)
    try:
        return next(iter(sample_sentence(parse_sentence(template), lists, language=language, skip_optionals=True)))
    except Exception:  # a template hassil samples otherwise than it matches: nothing to check
        return None


def _example_value(schema: dict, language: str) -> str | None:
    """A value of a parameter as said: its first choice, its lowest number, "on", or a word for free text."""
    if schema.get("type") == "array":
        return _example_value(schema.get("items", {}), language)
    if "enum" in schema:
        return str(schema["enum"][0])
    if schema.get("type") in ("integer", "number"):
        lowest = math.ceil(schema.get("minimum", 1))
        return str(lowest) if lowest <= schema.get("maximum", lowest) else None
    if schema.get("type") == "boolean":
        words = BOOLEAN_WORDS.get(language)
        return words[0][0] if words else None
    return "zebra"


def _scope(sentence: str, skill_name: str, found: Skill) -> str:
    for slot in found.parameters["properties"]:
        sentence = sentence.replace("{" + slot + "}", "{" + f"{skill_name}__{slot}:{slot}" + "}")
    for list_name in found.lists:
        sentence = sentence.replace("{" + list_name + ":", "{" + f"{skill_name}__{list_name}:")
    return sentence


# The choices a question lists: after its first colon, up to the end of that sentence ("Which
# playlist: jazz or rock?", "You have 2 timers: the tea timer, the pasta timer. Which one?").
CHOICES = re.compile(r"[:：]([^.?!。？！]*)")


def _offered(words: str, question: str, found: Skill) -> bool:
    """Whether `words` are a name the question offered: in its choices (or, with none, in it) as whole
    words (as characters in Chinese), case and punctuation aside, and not only the answers' own words
    ("the timer" names no timer) or numbers (the "10" of "the 10 minute timer" is its length)."""
    choices = CHOICES.search(question)
    words, question = _plain(words), _plain(choices.group(1) if choices else question)
    if not re.search(r"[^\W\d_]", words):
        return False
    own = {
        word
        for sentences in found.answers.values()
        for sentence in sentences
        for word in _plain(TEMPLATE_SYNTAX.sub(" ", LIST_REFERENCE.sub(" ", str(sentence)))).split()
    }
    said = words in question if CJK.search(words) else f" {words} " in f" {question} "
    return said and not set(words.split()) <= own


def _free_text(found: Skill, slot: str) -> bool:
    """Whether a slot of the skill's templates hears any words (a wildcard), not a list of values."""
    return _slot_list(found.parameters["properties"].get(slot, {}), "en") == {"wildcard": True}


def _slot_list(schema: dict, language: str) -> dict:
    if schema.get("type") == "array":  # a sentence hears one value of a list
        return _slot_list(schema.get("items", {}), language)
    if "enum" in schema:  # a choice such as a device's name is words, even where it spells template syntax
        return {"values": [{"in": words, "out": v} for v in schema["enum"] if (words := _words(str(v)))]}
    if schema.get("type") in ("integer", "number"):
        # Beyond the bounds, so that an out-of-range number is heard and explained; at most up to
        # 1000, because hassil spells out every number of a range in words when it first meets it.
        low, high = int(schema.get("minimum", 0)), int(schema.get("maximum", 1000))
        numbers = {"from": max(0, low - 10), "to": max(low, min(high + max(10, high // 2), 1000))}
        return {"range": numbers if schema["type"] == "integer" else {**numbers, "fractions": "halves"}}
    if schema.get("type") == "boolean":
        return {"values": [{"in": word, "out": value} for word, value in BOOLEAN_WORDS.get(language, [])]}
    return {"wildcard": True}


def _typed(value: Any, schema: dict) -> Any:
    if schema.get("type") == "array" and not isinstance(value, list):
        return [_typed(value, schema.get("items", {}))]
    if schema.get("type") == "string" and isinstance(value, str):
        return value.strip()
    return as_declared(value, schema)
