"""What months of use leave behind: stored lists that stay bounded."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.test_builtin_skills import registry_in


def test_a_list_stops_growing_at_1000_items_and_says_so(tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    assert (
        registry.call("add_item", {"text": "item 0", "list": "shopping"}).text == "Added item 0 to the shopping list."
    )
    assert registry.call("add_item", {"text": "note 0"}).text == "Noted."
    with sqlite3.connect(tmp_path / "notes.sqlite3") as db:  # months of a script adding one a minute
        db.executemany("INSERT INTO items (list, text) VALUES ('shopping', ?)", [(f"item {n}",) for n in range(1, 998)])
        db.executemany("INSERT INTO items (list, text) VALUES ('notes', ?)", [(f"note {n}",) for n in range(1, 1000)])
    assert registry.call("add_item", {"text": "a, b and c", "list": "shopping"}).text == (
        "Your shopping list has room for only 2 more: it holds 1000 items. Remove some first."
    )
    assert registry.call("add_item", {"text": "a, b", "list": "shopping"}).text == "Added a and b to the shopping list."
    full = "Your shopping list is full: it holds 1000 items. Remove some first."
    assert registry.call("add_item", {"text": "c", "list": "shopping"}).text == full
    assert registry.call("add_item", {"text": "item 5", "list": "shopping"}).text == (
        "Item 5 is already on the shopping list."  # nothing to add: not refused
    )
    assert registry.call("add_item", {"text": "one more note"}).text == (
        "Your notes are full: they hold 1000 notes. Remove some first."
    )
    assert registry.call("remove_item", {"text": "item 5"}).text == "Removed item 5."
    assert registry.call("add_item", {"text": "c", "list": "shopping"}).text == "Added c to the shopping list."
    with sqlite3.connect(tmp_path / "notes.sqlite3") as db:
        assert db.execute("SELECT list, count(*) FROM items GROUP BY list ORDER BY list").fetchall() == [
            ("notes", 1000),
            ("shopping", 1000),
        ]
