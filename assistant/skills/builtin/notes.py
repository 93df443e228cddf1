"""Built-in skills: notes and the shopping list, kept in SQLite in the state directory."""

from __future__ import annotations

from typing import Literal

from assistant import SkillContext, skill

ListName = Literal["notes", "shopping"]


SCHEMA = "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, list TEXT NOT NULL, text TEXT NOT NULL);"


def _db(context: SkillContext):
    return context.database("notes", SCHEMA)


@skill(
    sentences={
        "en": [("take a note [that] {text}", {"list": "notes"}), ("note (that|down) {text}", {"list": "notes"})],
        "zh": [("把{text}(加到|加入|添加到|放到)[我的]购物清单[里|上|中]", {"list": "shopping"}),
               ("[在]购物清单[里|上|中](加上|添加|加)[一个]{text}", {"list": "shopping"}),
               ("记一下{text}", {"list": "notes"})],
    },
    intents={"HassShoppingListAddItem": {"text": "{item}", "list": "shopping"}},
)  # fmt: skip
def add_item(text: str, context: SkillContext, list: ListName = "notes") -> str:
    """Add an item to the shopping list or a note to the notes.

    Args:
        text: the item or the note
        list: "shopping" for the shopping list, "notes" for notes
    """
    if not text.strip():
        return "What should I add?" if list == "shopping" else "What should I note?"
    with _db(context) as db:
        db.execute("INSERT INTO items (list, text) VALUES (?, ?)", (list, text.strip()))
    return f"Added {text.strip()} to the shopping list." if list == "shopping" else "Noted."


READ_AT_ONCE = 20  # items said in one reply: a hundred would be minutes of speech (and past a reply's length)


@skill(
    sentences={
        "en": [("what's on the shopping list", {"list": "shopping"}), ("read my notes", {"list": "notes"})],
        "zh": [("购物清单上有什么", {"list": "shopping"}), ("读一下我的笔记", {"list": "notes"})],
    }
)
def read_items(context: SkillContext, list: ListName = "notes") -> str:
    """Read the shopping list or the notes aloud.

    Args:
        list: "shopping" for the shopping list, "notes" for notes
    """
    with _db(context) as db:
        items = [text for (text,) in db.execute("SELECT text FROM items WHERE list = ? ORDER BY id", (list,))]
    what = "shopping list" if list == "shopping" else "notes"
    if not items:
        return f"Your {what} is empty." if list == "shopping" else "You have no notes."
    more = f", and {len(items) - READ_AT_ONCE} more" if len(items) > READ_AT_ONCE else ""
    return f"On your {what}: " + ", ".join(items[:READ_AT_ONCE]) + more + "."


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
def remove_item(text: str, context: SkillContext, list: ListName = "shopping") -> str:
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
    return f"Removed {text.strip()}." if ids else f"{text.strip()} is not on the list."


@skill(confirm=True, sentences={"en": ["clear the shopping list"], "zh": ["清空购物清单"]})
def clear_shopping_list(context: SkillContext) -> str:
    """Empty the shopping list."""
    with _db(context) as db:
        db.execute("DELETE FROM items WHERE list = 'shopping'")
    return "The shopping list is empty."
