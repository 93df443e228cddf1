"""Built-in skills: notes and the shopping list, kept in SQLite in the state directory."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Literal

from assistant import Range, SkillContext, skill

ListName = Literal["notes", "shopping"]
Text = Annotated[str, Range(maximum=500)]  # a note said in one breath may run past a few sentences


# Items a list holds. A household's list is tens long; without a bound, a script or a misheard
# command repeated for months would fill the state folder, which the timers need too.
MAX_ITEMS = 1000
SCHEMA = "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, list TEXT NOT NULL, text TEXT NOT NULL);"

# Items typed as a list: "milk, eggs and bread", 牛奶、鸡蛋和面包. The "and" (和) splits only the last
# piece of such a list: "mac and cheese" alone is one item, and 和牛 (no word before 和) one too.
COMMA = re.compile(r"\s*[,，、]\s*")
LAST_AND = re.compile(r"(?:^|\s+)and\s+|(?<=\S)\s*和\s*(?=\S)", re.IGNORECASE)


def _items(text: str) -> list[str]:
    """The items of `text`, each once (in any case), in the order said."""
    *items, last = COMMA.split(text.strip())
    items += LAST_AND.split(last, maxsplit=1) if items else [last]
    kept: dict[str, str] = {}
    for item in filter(None, (item.strip() for item in items)):
        kept.setdefault(item.casefold(), item)
    return list(kept.values())


def _listed(items: list[str], language: str) -> str:
    """Items as a sentence names them: "milk, eggs and bread", 牛奶、鸡蛋和面包."""
    if len(items) < 2:
        return "".join(items)
    if language == "zh":
        return "、".join(items[:-1]) + "和" + items[-1]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _db(context: SkillContext):
    return context.database("notes", SCHEMA)


@contextmanager
def _adding(context: SkillContext) -> Iterator[sqlite3.Connection]:
    """The notes database, locked for writing from its first read on: two clients (or a script beside
    the assistant) adding "milk" at once must not both find it missing and add it twice."""
    with _db(context) as db:
        db.execute("BEGIN IMMEDIATE")
        yield db


def _full(context: SkillContext, list: ListName, room: int = 0) -> str:
    """What is said when a list has room for only `room` more items, fewer than were asked for."""
    if list == "notes":  # a note is added one at a time
        return context.localized(
            f"Your notes are full: they hold {MAX_ITEMS} notes. Remove some first.",
            zh=f"笔记满了，最多{MAX_ITEMS}条。请先删掉一些。",
        )
    more, more_zh = (f"has room for only {room} more", f"只能再加{room}项") if room else ("is full", "满了")
    return context.localized(
        f"Your shopping list {more}: it holds {MAX_ITEMS} items. Remove some first.",
        zh=f"购物清单{more_zh}，最多{MAX_ITEMS}项。请先删掉一些。",
    )


def _kept(db, list: ListName) -> list[set[str]]:
    """What a list already holds, as `_forms` of each: what is asked for twice is kept once."""
    return [_forms(text) for (text,) in db.execute("SELECT text FROM items WHERE list = ?", (list,))]


def _listed_already(item: str, kept: list[set[str]]) -> bool:
    forms = _forms(item)
    return any(forms & listed for listed in kept)


ARTICLE = re.compile(r"^(?:the|a|an|some|my|our)\s+", re.IGNORECASE)  # said before an item, not part of it


def _forms(item: str) -> set[str]:
    """The ways an item is said again: in any case, without a sentence's period or an article before
    it ("the milk" is "milk"), and an English plural as its singular too ("eggs" is "egg", "tomatoes"
    "tomato", "berries" "berry", "glasses" "glass"), since "add eggs" one day and "remove the egg" the
    next mean one item. Two items are one if their forms meet."""
    text = _unended(item).casefold()
    forms = {text, ARTICLE.sub("", text)}
    for said in list(forms):
        head, last = re.match(r"(.*?)(\w*)$", said).groups()
        if re.fullmatch(r"[a-z]+s", last) and not last.endswith("ss"):
            forms.add(head + last[:-1])
            if last.endswith("es"):
                forms.add(head + last[:-2])
            if last.endswith("ies"):
                forms.add(head + last[:-3] + "y")
    return forms


@skill(
    sentences={
        "en": [("(take|add) a note [that] {text}", {"list": "notes"}),
               ("note (that|down) {text}", {"list": "notes"}),
               # Said alone (a pause cut the sentence), not a note "that": "What should I note?"
               ("(take|add) a note [that]", {"list": "notes", "text": ""})],
        "zh": [("把{text}(加到|加入|添加到|放到)[我的]购物清单[里|上|中]", {"list": "shopping"}),
               ("[在]购物清单[里|上|中](加上|添加|加)[一个]{text}", {"list": "shopping"}),
               ("记一下{text}", {"list": "notes"}), ("记一下", {"list": "notes", "text": ""})],
    },
    intents={"HassShoppingListAddItem": {"text": "{item}", "list": "shopping"}},
)  # fmt: skip
def add_item(text: Text, context: SkillContext, list: ListName = "notes") -> str:
    """Add an item to the shopping list or a note to the notes.

    Args:
        text: the item (several separated by commas) or the note
        list: "shopping" for the shopping list, "notes" for notes
    """
    if list == "notes":
        note = text.strip()
        if not note:
            return context.localized("What should I note?", zh="要记什么？")
        with _adding(context) as db:
            kept = _kept(db, "notes")
            if _listed_already(note, kept):  # asked for twice (to be sure): kept once
                return context.localized("That is already in your notes.", zh="笔记里已经有这条了。")
            if len(kept) >= MAX_ITEMS:
                return _full(context, "notes")
            db.execute("INSERT INTO items (list, text) VALUES ('notes', ?)", (note,))
        return context.localized("Noted.", zh="记下了。")
    items = _items(text)
    if not items:
        return context.localized("What should I add?", zh="要加什么？")
    with _adding(context) as db:
        listed = _kept(db, "shopping")
        added = [item for item in items if not _listed_already(item, listed)]
        if len(listed) + len(added) > MAX_ITEMS:
            return _full(context, "shopping", max(0, MAX_ITEMS - len(listed)))
        db.executemany("INSERT INTO items (list, text) VALUES ('shopping', ?)", [(item,) for item in added])
    already = [item for item in items if item not in added]  # asked for twice (by two people): kept once
    on_it, on_it_zh = _listed(already, "en"), _listed(already, "zh")
    on_it = _started(on_it)
    are = "are" if len(already) > 1 else "is"
    if not added:
        return context.localized(f"{on_it} {are} already on the shopping list.", zh=f"购物清单上已经有{on_it_zh}了。")
    also, also_zh = (f" {on_it} {are} already on it.", f"{on_it_zh}已经在上面了。") if already else ("", "")
    return context.localized(
        f"Added {_listed(added, 'en')} to the shopping list.{also}",
        zh=f"已把{_listed(added, 'zh')}加到购物清单。{also_zh}",
    )


READ_AT_ONCE = 20  # items said in one reply: a hundred would be minutes of speech (and past a reply's length)
READ_CHARACTERS = 2000  # and no more characters than that (a minute or two): twenty long notes would be ten


@skill(
    sentences={
        "en": [("(what's|what is) on [my|the] shopping list", {"list": "shopping"}),
               ("read [me] [my|the] shopping list", {"list": "shopping"}),
               ("what do I need to buy", {"list": "shopping"}),
               # A recogniser writes "what's" as said; a household says "my list" for the shopping list.
               ("(what's|what is|whats) on [my|the] [shopping] list", {"list": "shopping"}),
               ("read [me] my notes", {"list": "notes"}),
               ("(what|what's|whats) (are|is in|in) my notes", {"list": "notes"})],
        "zh": [("[我的]购物清单[上|里]有什么", {"list": "shopping"}),
               ("(读一下|看看)[我的]购物清单", {"list": "shopping"}),
               ("我要买什么", {"list": "shopping"}), ("读一下我的笔记", {"list": "notes"}),
               ("我记了什么", {"list": "notes"})],
    }
)  # fmt: skip
def read_items(context: SkillContext, list: ListName = "notes") -> str:
    """Read the shopping list or the notes aloud.

    Args:
        list: "shopping" for the shopping list, "notes" for notes
    """
    with _db(context) as db:
        rows = db.execute("SELECT text FROM items WHERE list = ? ORDER BY id", (list,))
        items = [_unended(text) for (text,) in rows]
    shopping = list == "shopping"
    if not items:
        if shopping:
            return context.localized("Your shopping list is empty.", zh="购物清单是空的。")
        return context.localized("You have no notes.", zh="你没有笔记。")
    read = items[:READ_AT_ONCE]
    while len(read) > 1 and len(", ".join(read)) > READ_CHARACTERS:
        read.pop()
    rest = len(items) - len(read)
    said = ", ".join(read) + (f", and {rest} more" if rest > 0 else "")
    said_zh = "、".join(read) + (f"，还有{rest}项" if rest > 0 else "")
    return context.localized(
        f"On your {'shopping list' if shopping else 'notes'}: {said}.",
        zh=f"{'购物清单' if shopping else '笔记'}上有：{said_zh}。",
    )


@skill(
    sentences={
        "en": [
            "(remove|delete|complete) {text} (from|on|in) [the|my] [shopping] list",
            "(check|cross|tick) [off] {text} [off] (from|on|in) [the|my] [shopping] list",
            "(check|cross|tick) {text} off [the|my] [shopping] list",
            "take {text} off [the|my] [shopping] list",
            ("(remove|delete) {text} from [the|my] notes", {"list": "notes"}),
        ],
        "zh": [
            "从[我的]购物清单[里|上|中](删除|删掉|去掉|划掉){text}",
            "把{text}从[我的]购物清单[里|上|中](删除|删掉|去掉|划掉)",
            ("从[我的]笔记[里|中](删除|删掉|去掉){text}", {"list": "notes"}),
            ("把{text}从[我的]笔记[里|中](删除|删掉|去掉)", {"list": "notes"}),
        ],
    }
)
def remove_item(text: Text, context: SkillContext, list: ListName = "shopping") -> str:
    """Remove an item from the shopping list (or a note).

    Args:
        text: the item to remove
        list: "shopping" for the shopping list, "notes" for notes
    """
    text = _unended(text)
    if not text.strip(".。,，;；"):  # nothing heard but a period
        return context.localized("What should I remove?", zh="要删除什么？")
    with _db(context) as db:
        # Compared here, not in SQL: SQLite's lower() folds only ASCII, and Äpfel is äpfel.
        rows = db.execute("SELECT id, text FROM items WHERE list = ?", (list,)).fetchall()
        said = _forms(text)
        ids = [i for i, item in rows if _forms(item) & said]
        db.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in ids])
    if ids:
        return context.localized(f"Removed {text}.", zh=f"已删除{text}。")
    if list == "notes":
        return context.localized(f"{_started(text)} is not in your notes.", zh=f"笔记里没有{text}。")
    return context.localized(f"{_started(text)} is not on the shopping list.", zh=f"购物清单上没有{text}。")


def _started(text: str) -> str:
    """Text that starts a sentence: "milk" as heard is "Milk"."""
    return text[:1].upper() + text[1:]


def _unended(text: str) -> str:
    """An item without the period a sentence ends in: read in a list, "Buy stamps." would be
    "plumber, Buy stamps.."; and "remove buy stamps", as speech recognition hears it, finds it."""
    return text.strip().rstrip(".。,，;；") or text.strip()


@skill(
    confirm=True,
    sentences={
        "en": [
            "(clear|empty) [my|the] [shopping] list",
            "(remove|delete) (everything|all [the] items) (from|on) [my|the] [shopping] list",
        ],
        "zh": ["清空[我的]购物清单", "把购物清单清空"],
    },
)
def clear_shopping_list(context: SkillContext) -> str:
    """Empty the shopping list."""
    with _db(context) as db:
        db.execute("DELETE FROM items WHERE list = 'shopping'")
    return context.localized("The shopping list is empty.", zh="购物清单已清空。")
