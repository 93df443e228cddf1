"""Built-in skills: notes and the shopping list, kept in SQLite in the state directory."""

from __future__ import annotations

from typing import Annotated, Literal

from assistant import Range, SkillContext, skill

ListName = Literal["notes", "shopping"]
Text = Annotated[str, Range(maximum=500)]  # a note said in one breath may run past a few sentences


SCHEMA = "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, list TEXT NOT NULL, text TEXT NOT NULL);"


def _db(context: SkillContext):
    return context.database("notes", SCHEMA)


@skill(
    sentences={
        "en": [("take a note [that] {text}", {"list": "notes"}), ("note (that|down) {text}", {"list": "notes"}),
               # Said alone (a pause cut the sentence), not a note "that": "What should I note?"
               ("take a note [that]", {"list": "notes", "text": ""})],
        "zh": [("把{text}(加到|加入|添加到|放到)[我的]购物清单[里|上|中]", {"list": "shopping"}),
               ("[在]购物清单[里|上|中](加上|添加|加)[一个]{text}", {"list": "shopping"}),
               ("记一下{text}", {"list": "notes"}), ("记一下", {"list": "notes", "text": ""})],
    },
    intents={"HassShoppingListAddItem": {"text": "{item}", "list": "shopping"}},
)  # fmt: skip
def add_item(text: Text, context: SkillContext, list: ListName = "notes") -> str:
    """Add an item to the shopping list or a note to the notes.

    Args:
        text: the item or the note
        list: "shopping" for the shopping list, "notes" for notes
    """
    item = text.strip()
    if not item:
        if list == "shopping":
            return context.localized("What should I add?", zh="要加什么？")
        return context.localized("What should I note?", zh="要记什么？")
    with _db(context) as db:
        listed = {text.casefold() for (text,) in db.execute("SELECT text FROM items WHERE list = ?", (list,))}
        if item.casefold() in listed:  # asked for twice (by two people, or again to be sure): kept once
            if list == "shopping":
                said = item[0].upper() + item[1:]  # it starts the sentence: "milk" as heard is "Milk"
                return context.localized(f"{said} is already on the shopping list.", zh=f"购物清单上已经有{item}了。")
            return context.localized("That is already in your notes.", zh="笔记里已经有这条了。")
        db.execute("INSERT INTO items (list, text) VALUES (?, ?)", (list, item))
    if list == "shopping":
        return context.localized(f"Added {item} to the shopping list.", zh=f"已把{item}加到购物清单。")
    return context.localized("Noted.", zh="记下了。")


READ_AT_ONCE = 20  # items said in one reply: a hundred would be minutes of speech (and past a reply's length)
READ_CHARACTERS = 2000  # and no more characters than that (a minute or two): twenty long notes would be ten


@skill(
    sentences={
        "en": [("(what's|what is) on [my|the] shopping list", {"list": "shopping"}),
               ("read [me] [my|the] shopping list", {"list": "shopping"}),
               ("what do I need to buy", {"list": "shopping"}),
               ("read [me] my notes", {"list": "notes"}), ("what (are|is in) my notes", {"list": "notes"})],
        "zh": [("[我的]购物清单上有什么", {"list": "shopping"}), ("(读一下|看看)[我的]购物清单", {"list": "shopping"}),
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
        items = [text for (text,) in db.execute("SELECT text FROM items WHERE list = ? ORDER BY id", (list,))]
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
        ],
        "zh": [
            "从[我的]购物清单[里|上|中](删除|删掉|去掉|划掉){text}",
            "把{text}从[我的]购物清单[里|上|中](删除|删掉|去掉|划掉)",
        ],
    }
)
def remove_item(text: Text, context: SkillContext, list: ListName = "shopping") -> str:
    """Remove an item from the shopping list (or a note).

    Args:
        text: the item to remove
        list: "shopping" for the shopping list, "notes" for notes
    """
    wanted = text.strip().casefold()  # SQLite's lower() folds only ASCII: Äpfel is äpfel here
    with _db(context) as db:
        ids = [i for i, item in db.execute("SELECT id, text FROM items WHERE list = ?", (list,))
               if item.casefold() == wanted]  # fmt: skip
        db.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in ids])
    if ids:
        return context.localized(f"Removed {text.strip()}.", zh=f"已删除{text.strip()}。")
    return context.localized(f"{text.strip()} is not on the list.", zh=f"清单上没有{text.strip()}。")


@skill(
    confirm=True,
    sentences={"en": ["(clear|empty) [my|the] shopping list"], "zh": ["清空[我的]购物清单", "把购物清单清空"]},
)
def clear_shopping_list(context: SkillContext) -> str:
    """Empty the shopping list."""
    with _db(context) as db:
        db.execute("DELETE FROM items WHERE list = 'shopping'")
    return context.localized("The shopping list is empty.", zh="购物清单已清空。")
