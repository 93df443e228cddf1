"""One turn: the user's words in, events out (text to speak, tool calls, skill results, errors).

Local intents answer first, without the LLM (each request in turn, when a sentence joins several).
Otherwise the model replies; text outside tool calls is spoken as it streams; each call (constrained,
so it always parses and validates) runs its skill. A skill's text is spoken as it is; data goes back to
the model for a second pass. Any failure ends the turn with a spoken apology and a log line; the next
turn works as usual.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import unicodedata
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from assistant.llm.conversation import Conversation, TooLong, tool_response_message
from assistant.llm.sampling import Sampler
from assistant.skills.constraint import (
    OPEN,
    ToolCallConstraint,
    code_being_written,
    parse_tool_calls,
    reply_parts,
    visible_text,
)
from assistant.skills.intents import SENTENCE_END, IntentMatch, IntentMatcher, reply_language, starts_in_cjk
from assistant.skills.prompt import call_message
from assistant.skills.registry import Registry

log = logging.getLogger(__name__)

# What the turn itself says, in each language a reply can be in (SkillContext.language).
SORRY = {"en": "Sorry, something went wrong.", "zh": "抱歉，出了点问题。"}
TOO_LONG = {
    "en": "Sorry, that is too long for me to take in at once. Could you say it in fewer words?",
    "zh": "抱歉，这太长了，我一次听不完。能说短一点吗？",
}
RESULTS_TOO_LONG = {
    "en": "Sorry, the answer I got is too long for me to read.",
    "zh": "抱歉，得到的答案太长，我读不了。",
}
WONT = {"en": "Okay, I won't.", "zh": "好的，不执行了。"}
NO_ANSWER = {"en": "Sorry, I have no answer to that.", "zh": "抱歉，这个我回答不了。"}  # not silence after a question
# Said before the question of a request that asks one, when more requests followed it in the sentence: they
# are not done, and the answer to the question is taken as its answer, not theirs.
NOT_DONE = {"en": "Not done yet: {}.", "zh": "还没做：{}。"}
CANT = {"en": "Sorry, I can't do that.", "zh": "抱歉，这个我做不了。"}  # a call with no tool in the prompt
# Answers to "Do you really want me to ...?". Anything else drops the question and is a new request.
YES_WORDS = {"yes", "yeah", "yep", "yup", "sure", "ok", "okay", "alright", "confirm", "confirmed", "do", "go"}
YES_WORDS |= {"absolutely", "certainly", "definitely", "course"}
# "yes please", "go ahead", "do it", "of course", "go for it", "yes I'm sure", "sure thing", "yes right now"
YES_FILLERS = {"please", "it", "ahead", "that", "thanks", "thank", "you", "of", "for", "i", "i'm", "am", "thing"}
YES_FILLERS |= {"right", "now"}
NO_WORDS = {"no", "nope", "don't", "dont", "cancel", "stop", "never", "not", "nah"}
YES_ZH = {"是", "是的", "好", "好的", "确认", "确定", "可以", "对", "对的", "行", "没问题"}  # 确定: the question's word
NO_ZH = {"不", "不要", "不用", "取消", "别", "算了", "不是", "不行", "不可以"}
# Around a Chinese yes or no, and changing nothing: 请, 谢谢, and the particles that end it (不用了, 算了吧, 好啊).
ZH_COURTESY = re.compile(r"谢谢你?|谢了|多谢|^请")
ZH_PARTICLES = "了吧啊呀呢哦"
# One word or several of one meaning: 好的好的, 是的，确认, 不，取消 ("no, cancel", as "no, don't" is a no).
ZH_ANSWER_WORDS = {
    meaning: re.compile("(?:" + "|".join(sorted(words, key=len, reverse=True)) + ")+")
    for words, meaning in ((YES_ZH, True), (NO_ZH, False))
}
CONFIRM_SECONDS = 60.0  # an unanswered question (a confirmation, a skill's "Which one?") lapses after this long
MAX_PASSES = 3  # model → skills → model ... at most this many generations a turn
# The skills of one turn run within this many seconds in all (each call gets what is left, when that is
# less than its timeout): the daemon counts a turn past 300 s (TURN_LIMIT_SECONDS) as hung and has the
# assistant restarted. The rest is for the model's reply to their results.
TURN_SECONDS = 240.0
SPOKEN = ("text", "error", "confirm")  # the events a person hears
# A reply that goes on writing a code block or JSON (not said) longer than this ends there: the person
# would wait in silence while it is written, for words about code they cannot see. A call that a reply
# writes in a ```json block, with or without its tags, is shorter.
CODE_CHARS = 200


@dataclass
class TurnEvent:
    kind: str  # "text" (to speak), "tool_call", "skill_result", "confirm", "error"
    text: str = ""
    data: Any = None
    continues: bool = False  # a piece of the model's reply after its first: joined to the text before as it is


class TurnManager:
    def __init__(self, conversation: Conversation, registry: Registry, sampler: Sampler, intents: bool = True):
        self.conversation = conversation
        self.registry = registry
        self.sampler = sampler
        devices = registry.settings.mqtt.devices if registry.settings is not None else []
        self.intents = IntentMatcher(registry.skills, devices) if intents else None
        engine = conversation.engine
        # The model can call what its prompt lists; skills left out of it still answer their sentences.
        self.constraint = (
            ToolCallConstraint(engine.tokenizer, engine.manifest.vocab_size, sorted(engine.eos_ids), conversation.tools)
            if conversation.tools
            else None
        )
        # Per asker (a control connection, or None for the microphone): a call waiting for its
        # confirmation, with the time it lapses, and the last reply ("repeat that" hears its own).
        self.pending: dict[Hashable, tuple[dict, float]] = {}
        # Per asker: the call whose skill asked a question ("Which one?"), the question, when it lapses,
        # and whether that call was confirmed (its answer then needs no second confirmation).
        self.asked: dict[Hashable, tuple[dict, str, float, bool]] = {}
        self.last_replies: dict[Hashable, str] = {}
        # Per asker, its own exchanges: one client's words are never in the context of another's reply.
        self.histories: dict[Hashable, list[dict]] = {}
        self.asker: Hashable = None
        self.deadline = 0.0  # when the running turn's time for skills ends (time.monotonic())
        registry.context.last_reply = lambda: self.last_replies.get(self.asker)

    def forget(self, asker: Hashable) -> None:
        """The asker has gone: its question lapses."""
        self.pending.pop(asker, None)
        self.asked.pop(asker, None)
        self.last_replies.pop(asker, None)
        self.histories.pop(asker, None)

    def turn(self, text: str, cancel: threading.Event | None = None, asker: Hashable = None) -> Iterator[TurnEvent]:
        """One turn of `asker`'s (who answers a confirmation question, whose reply "repeat" says)."""
        self.asker = asker
        self.deadline = time.monotonic() + TURN_SECONDS
        # The engine keeps what prompts share (the system prompt), so another asker's turn only
        # prefills that asker's own exchanges.
        self.conversation.messages = self.histories.setdefault(asker, [])
        # Half a surrogate pair (JSON may escape one) is no character: the tokenizer refuses it.
        text = text.encode("utf-8", "replace").decode("utf-8")
        self.registry.context.language = reply_language(text)
        before = [m["content"] for m in self.conversation.messages if m["role"] == "user"][-1:]
        self.registry.context.heard = (*before, text)  # "turn it off" names what the turn before did
        spoken = []
        try:
            for event in self._turn(text.strip(), cancel):
                if event.kind == "text" and cancel is not None and cancel.is_set():
                    continue  # stopped while a skill ran: what it did stands, its words go unsaid
                if event.kind in SPOKEN:
                    if not event.text.strip():
                        continue  # a skill that has nothing to say (stop)
                    if spoken and not event.continues:
                        event = replace(event, text=apart(spoken[-1], event.text))
                    spoken.append(event.text)
                yield event
        except TooLong as e:
            log.warning("turn refused: %s", e)
            spoken.append(self._say(TOO_LONG))
            yield TurnEvent("error", self._say(TOO_LONG))
        except Exception:
            log.exception("turn failed")
            spoken.append(self._say(SORRY))
            yield TurnEvent("error", self._say(SORRY))
        if spoken:
            self.last_replies[asker] = "".join(spoken).strip()

    def _turn(self, text: str, cancel: threading.Event | None) -> Iterator[TurnEvent]:
        # Refused before anything else: no reply could follow it, and matching the sentence templates
        # takes time that grows with the square of its length (a minute for a long `say` request).
        self.conversation.check_fits(text)
        call, lapses = self.pending.pop(self.asker, (None, 0.0))
        if call is not None and time.monotonic() < lapses:
            answer, later = confirmation(text), []
            begins_with_no = answer is False or (starts_in_cjk(text) and text.lstrip().startswith(tuple(NO_ZH)))
            heard = self.intents.match(text) if self.intents and begins_with_no else None
            if heard is not None and (heard.then or heard.skill != "stop"):
                # "cancel the timer", 取消计时器, "stop the timer and set an alarm for 9": not confirmed, as a "no"
                # (which "cancel" and "stop" alone are), and the requests done, as after "no, set a timer".
                heard.said = heard.said or text
                answer, later, heard.then = False, [heard, *heard.then], []
            elif answer is not True and self.intents and (split := self.intents.match_after(text, confirmation)):
                answer, later = split  # "yes, and set an alarm for 7", "no, set a timer": the answer, then them
            language = self.registry.context.language
            if answer is True:
                said_in = IntentMatch(call["name"], call["arguments"], language)
                yield from self._local_call(text, [said_in, *later], cancel, confirmed=True)
                return
            if answer is False and later:
                # Not run: what is said instead of it is that it won't be.
                wont = IntentMatch(call["name"], call["arguments"], language, reply=self._say(WONT))
                yield from self._local_call(text, [wont, *later], cancel, confirmed=False)
                return
            if answer is False:
                if heard is not None and heard.skill == "stop":
                    # "stop" to an alarm that rang meanwhile: it stops too, as it does without a question.
                    self.registry.context.stopped_at = time.time()
                yield TurnEvent("text", self._say(WONT))
                return
            log.info("not an answer to the confirmation: %s dropped", call["name"])
        asking, question, lapses, confirmed = self.asked.pop(self.asker, (None, "", 0.0, False))
        match = None
        if self.intents and asking is not None and time.monotonic() < lapses:
            match = self.intents.match_answer(text, question, asking)
            log.info("%s answer to %s's question", "an" if match else "not an", asking["name"])
        confirmed = confirmed and match is not None  # "unlock the door", "yes", "Which one?", "the front one"
        if self.intents and (match := match or self.intents.match(text)):
            yield from self._local_call(text, [match, *match.then], cancel, confirmed)
            return
        yield from self._passes({"role": "user", "content": text}, cancel)

    def _local_call(
        self, text: str, matches: list[IntentMatch], cancel: threading.Event | None, confirmed: bool
    ) -> Iterator[TurnEvent]:
        """Answer `text` with calls the turn made itself (the requests a sentence matched, in order, or a
        confirmed call): a match's reply is said instead of its call (a number out of range).

        Text is said as it is; data goes to the model to be put in words, as if it had made the calls.
        A call that asks something (a confirmation, "Which one?") ends the list: what it left undone is named.
        """
        self.conversation.messages.append({"role": "user", "content": text})
        spoken, results, calls, held = [], [], [], []
        for number, match in enumerate(matches):
            if number and cancel is not None and cancel.is_set():
                break  # stopped while a request ran: the ones after it stay undone
            if number and time.monotonic() >= self.deadline:
                undone = [later.said.rstrip(SENTENCE_END) for later in matches[number:]]
                log.warning("the turn's time is up: %d requests not done", len(undone))
                said = {"en": NOT_DONE["en"].format(", ".join(undone)), "zh": NOT_DONE["zh"].format("，".join(undone))}
                spoken.append(self._say(said))
                yield TurnEvent("text", self._say(said))
                break
            self.registry.context.language = match.language.split("-")[0]  # "kitchen light开着吗" is in Chinese
            call = {"name": match.skill, "arguments": match.arguments}
            # The arguments are what the person said (a note, a door code): in the journal at debug level only.
            log.info("local intent %s%s", call["name"], ", answered without a call" if match.reply else "")
            log.debug(
                "local intent %s %s%s", call["name"], call["arguments"], f": {match.reply}" if match.reply else ""
            )
            questions = self._questions()
            # A confirmation (of the call a question's answer completes) is the first call's only.
            events = [TurnEvent("text", match.reply)] if match.reply else self._run_call(call, confirmed and not number)
            rest = [later.said.rstrip(SENTENCE_END) for later in matches[number + 1 :]]
            for event in events:
                asked = event.kind in SPOKEN and self._questions() != questions
                if rest and asked:
                    # Before the question, which comes last so that the answer follows it.
                    undone = self._say(
                        {"en": NOT_DONE["en"].format(", ".join(rest)), "zh": NOT_DONE["zh"].format("，".join(rest))}
                    )
                    rest = []
                    held.append(TurnEvent("text", undone))
                if asked:
                    held.append(event)
                    continue
                spoken += [event.text] if event.kind in SPOKEN and event.text.strip() else []
                if found := data_of(call, event):
                    results += found
                    calls.append(call)
                yield event
            if self._questions() != questions:
                break  # it asked: the answer is to its question
        asking = " ".join(event.text for event in held if event.text.strip())
        if not results:
            yield from held
            self.conversation.messages.append({"role": "assistant", "content": " ".join([*spoken, asking]).strip()})
            return
        if spoken:
            self.conversation.messages.append({"role": "assistant", "content": " ".join(spoken)})
        self.conversation.messages.append(call_message(*calls))
        results_message = tool_response_message(results, self.conversation.template.wraps_tool_responses)
        yield from self._passes(results_message, cancel, request=False)
        if held and cancel is not None and cancel.is_set():
            # Stopped before the question was said: nothing waits for an answer to it.
            self.pending.pop(self.asker, None)
            self.asked.pop(self.asker, None)
        elif held:
            # Asked after the model has put the data of the requests before it in words.
            yield from held
            self._said_instead_of_calls(asking)

    def _questions(self) -> tuple:
        """The asker's open questions: a call waiting for its confirmation, a skill's question."""
        return self.pending.get(self.asker), self.asked.get(self.asker)

    def _passes(self, message: dict, cancel: threading.Event | None, request: bool = True) -> Iterator[TurnEvent]:
        """The model's replies to `message` (the person's `request`, or skill results), with the calls they make."""
        for generation in range(MAX_PASSES):
            if cancel is not None and cancel.is_set() and (generation or not request):
                # Stopped while the skills ran: no reply is started to read their results out.
                self._said_instead_of_calls("")
                return
            if time.monotonic() >= self.deadline and (generation or not request):
                log.warning("the turn's time is up: the skills' results are not read")
                self._said_instead_of_calls("")
                return
            try:
                reply = yield from self._generate(message, cancel)
            except TooLong as e:
                if generation == 0 and request:
                    raise  # the person's own words
                log.warning("skill results refused: %s", e)
                self._said_instead_of_calls(self._say(RESULTS_TOO_LONG))
                yield TurnEvent("error", self._say(RESULTS_TOO_LONG))
                return
            if cancel is not None and cancel.is_set():
                if OPEN in reply and not self._tags_are_text():
                    self._said_instead_of_calls("")  # a call cut short is never run nor answered
                return
            _, calls = ([], []) if self._tags_are_text() else parse_tool_calls(reply)
            said = reply if self._tags_are_text() else visible_text(reply, finished=True)
            if calls and "error" in calls[-1] and reply_parts(reply)[-1][1] == "call":
                limit = self.conversation.max_new_tokens
                log.warning("the reply ended inside a tool call, at llm.max_new_tokens (%d) or a full context", limit)
            if calls and not self.conversation.tools:
                # Its prompt offers nothing to call, so no call is run (nor constrained, nor read out);
                # the person hears that it cannot be done rather than an apology for a fault.
                log.warning("the model wrote %d tool calls, but its prompt lists no tool: not run", len(calls))
                self._said_instead_of_calls(self._say(CANT))
                yield TurnEvent("text", self._say(CANT))
                return
            if not calls and not said.strip():  # nothing at all, or nothing about the results it was given
                log.info("the model gave no answer")
                self._said_instead_of_calls(self._say(NO_ANSWER))
                yield TurnEvent("text", self._say(NO_ANSWER))
                return
            responses, spoken, data = [], [], False
            for call in calls:
                results, words = [], []
                for event in self._run_call(call):
                    yield event
                    results += data_of(call, event)
                    words += [event.text] if event.kind in SPOKEN and event.text.strip() else []
                # Each call gets its response: its data, or the words it said (done and told, not to repeat).
                responses += results or [{"name": call.get("name"), "said": " ".join(words)}]
                spoken += words
                data = data or bool(results)
            if not data:
                if calls:
                    self._said_instead_of_calls(" ".join(spoken))
                return
            message = tool_response_message(responses, self.conversation.template.wraps_tool_responses)
        log.warning("the model was still calling skills after %d passes; their last results are not read", MAX_PASSES)
        self._said_instead_of_calls(" ".join(spoken))

    def _generate(self, message: dict, cancel: threading.Event | None) -> Iterator[TurnEvent]:
        """Stream one reply, speaking the text outside tool calls as it comes. Returns the whole reply."""
        if self.constraint is not None:
            self.constraint.reset()
        reply, spoken = "", 0
        stream = self.conversation.respond(message, self.sampler, cancel, self.constraint)
        for piece in stream:
            reply += piece
            visible = self._visible(reply)
            if visible[spoken:].strip():
                yield TurnEvent("text", visible[spoken:], continues=spoken > 0)
                spoken = len(visible)
            if code_being_written(reply) > CODE_CHARS:
                log.info("the reply is writing code, which is not said: ended after %d characters", len(reply))
                stream.close()  # the reply is kept as far as it got
                break
        visible = self._visible(reply, finished=True)
        if visible[spoken:].strip():
            yield TurnEvent("text", visible[spoken:], continues=spoken > 0)
        return reply

    def _said_instead_of_calls(self, spoken: str) -> None:
        """Keep what was said in the history instead of the calls in the last reply, whose results never
        went back to the model: as for a local intent, so no call is left without its response."""
        messages = self.conversation.messages
        said = visible_text(messages[-1]["content"], finished=True).strip()
        messages[-1] = {"role": "assistant", "content": f"{said} {spoken}".strip()}

    def _say(self, replies: dict[str, str]) -> str:
        return self.registry.context.localized(**replies)

    def _visible(self, reply: str, finished: bool = False) -> str:
        """What of the reply so far is to be said: the text outside its tool calls."""
        if not self._tags_are_text():
            return visible_text(reply, finished)
        # Whether the tag is the model's call or its words is known only once the constraint has seen
        # the tag's token, after it streamed: until the reply ends, nothing from the tag on is said.
        return reply if finished else visible_text(reply.split(OPEN)[0])

    def _tags_are_text(self) -> bool:
        return bool(getattr(self.constraint, "tags_are_text", False))  # any `allowed` hook may stand in

    def _run_call(self, call: dict, confirmed: bool = False) -> Iterator[TurnEvent]:
        if "error" in call:
            log.error("model output: %s", call["error"])
            yield TurnEvent("error", self._say(SORRY))
            return
        yield TurnEvent("tool_call", call["name"], call["arguments"])
        found = self.registry.skills.get(call["name"])
        if found is not None and found.confirm and not confirmed:
            self.pending[self.asker] = (call, time.monotonic() + CONFIRM_SECONDS)
            name = call["name"].replace("_", " ")
            yield TurnEvent(
                "confirm", self._say({"en": f"Do you really want me to run {name}?", "zh": "确定要这样做吗？"})
            )
            return
        result = self.registry.call(call["name"], call["arguments"], within=self.deadline - time.monotonic())
        if result.error:
            # The cause is in English words (a skill's exception, a full disk): in Chinese only that it failed.
            yield TurnEvent(
                "error", self._say({"en": f"Sorry, {result.error}.", "zh": "抱歉，没办成，原因记在日志里。"})
            )
            return
        yield TurnEvent("skill_result", call["name"], result.data if result.text is None else result.text)
        if result.text is not None:
            if found is not None and found.answers and asks(result.text):
                self.asked[self.asker] = (call, result.text, time.monotonic() + CONFIRM_SECONDS, confirmed)
            yield TurnEvent("text", result.text)


def data_of(call: dict, event: TurnEvent) -> list[dict]:
    """The result for the model in `event`: text is spoken as it is, only data goes back to the model."""
    if event.kind == "skill_result" and event.data is not None and not isinstance(event.data, str):
        return [{"name": call["name"], "content": event.data}]
    return []


def apart(before: str, text: str) -> str:
    """`text` to follow `before` as words of their own: after a space, unless there is one already or
    `before` ends in Chinese (or another script written without spaces)."""
    if before[-1:].isspace() or text[:1].isspace() or unicodedata.east_asian_width(before[-1]) in "WF":
        return text
    return " " + text


def asks(text: str) -> bool:
    """Whether a reply ends with a question, emoji and other symbols after it aside ("Anything else? 🎉")."""
    end = len(text)
    while end and (text[end - 1].isspace() or unicodedata.category(text[end - 1])[0] in "SMC"):
        end -= 1  # symbols (emoji), marks (variation selectors), controls and joiners
    return text[:end].endswith(("?", "？"))


def confirmation(text: str) -> bool | None:
    """True for yes ("yes please", "go ahead", "好的"), False for no ("no thanks", "不要"), None for anything else."""
    if starts_in_cjk(text):
        return _chinese_answer(text)
    plain = re.sub(r"[^\w\s']", " ", text.lower().replace("\u2019", "'")).split()  # ’ as typed on phones
    if plain and (plain[0] in NO_WORDS or plain[:2] == ["do", "not"]):
        return False
    if plain and set(plain) <= YES_WORDS | YES_FILLERS and set(plain) & YES_WORDS:
        return True
    return None


def _chinese_answer(text: str) -> bool | None:
    """confirmation() for Chinese: 好的，谢谢, 不用了, 算了吧, 好的好的, and 好 的 as a recogniser writes it apart."""
    said = ZH_COURTESY.sub("", re.sub(r"[\W_]", "", text))
    ended = False  # by 了: 不用了 is a no, but 好了 and 可以了 ("that will do", "enough") are no yes
    while said:
        for meaning, words in ZH_ANSWER_WORDS.items():
            if words.fullmatch(said) and not (meaning and ended):
                return meaning
        if said[-1] not in ZH_PARTICLES:
            return None
        ended, said = ended or said[-1] == "了", said[:-1]
    return None
