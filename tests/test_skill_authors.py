"""What a skill author's mistakes, and a skill file another user could change, do to the assistant."""

from __future__ import annotations

from pathlib import Path

from assistant.skills.registry import Registry
from tests.test_daemon import Daemon, Notifications, connect, reload, send, spoken, turn, until, write_config

COFFEE = '''
from assistant import skill


@skill(sentences={"en": ["make coffee"]})
def make_coffee() -> str:
    """Start the coffee machine."""
    return "Coffee is VERSION."
'''

TEA = '''
from assistant import skill


@skill(sentences={"en": ["make tea"]})
def make_tea() -> str:
    """Start the kettle."""
    return "Tea is on."
'''


def load(folder: Path) -> Registry:
    registry = Registry()
    registry.load_folder(folder)
    return registry


def test_an_edit_that_breaks_a_skill_keeps_its_last_good_version_in_this_process(tmp_path: Path) -> None:
    coffee = tmp_path / "coffee.py"
    coffee.write_text(COFFEE.replace("VERSION", "brewing"))
    assert load(tmp_path).call("make_coffee", {}).text == "Coffee is brewing."
    edits = {
        ":6: syntax error: expected ':'": COFFEE.replace("-> str:", "-> str"),
        "cannot be imported: NameError: name 'requests' is not defined": COFFEE + "requests.get('x')\n",
        "parameter 'strength' has no type hint": COFFEE.replace("make_coffee()", "make_coffee(strength)"),
    }
    for reason, text in edits.items():
        coffee.write_text(text)
        registry = load(tmp_path)
        assert registry.call("make_coffee", {}).text == "Coffee is brewing."
        assert len(registry.problems) == 1 and reason in registry.problems[0], registry.problems
        assert registry.problems[0].startswith(f"{coffee}:")
        assert registry.problems[0].endswith("; keeping the version loaded before")
    coffee.write_text(COFFEE.replace("VERSION", "ready"))
    assert load(tmp_path).call("make_coffee", {}).text == "Coffee is ready."
    coffee.unlink()
    assert "make_coffee" not in load(tmp_path).skills
    coffee.write_text(COFFEE.replace("-> str:", "-> str"))  # never good here: nothing to keep
    registry = load(tmp_path)
    assert "make_coffee" not in registry.skills and registry.problems[0].endswith("; skipped")


def skill_names(control: Path) -> list[str]:
    with connect(control) as client:
        send(client, {"type": "status"})
        return until(client, "status")[-1]["skills"]


def test_a_broken_edit_keeps_the_working_skill_until_it_is_fixed(tmp_path: Path, tiny_int8: Path) -> None:
    config = write_config(tmp_path, tiny_int8)
    folder = tmp_path / "extra_skills"
    coffee, tea = folder / "coffee.py", folder / "tea.py"
    coffee.write_text(COFFEE.replace("VERSION", "brewing"))
    tea.write_text(TEA)
    control, notify = tmp_path / "run" / "control.sock", Notifications(tmp_path / "notify.sock")
    daemon = Daemon(tmp_path, config, notify)
    try:
        assert spoken(turn(control, "make coffee")) == "Coffee is brewing."
        coffee.write_text(COFFEE.replace("VERSION", "brewing").replace("-> str:", "-> str"))  # a syntax error
        reload(daemon)
        assert f"{coffee}:6: syntax error" in daemon.log_text()
        assert spoken(turn(control, "make coffee")) == "Coffee is brewing."
        coffee.write_text(COFFEE.replace("VERSION", "ready"))
        tea.unlink()
        reload(daemon)
        assert spoken(turn(control, "make coffee")) == "Coffee is ready."
        assert "make_tea" not in skill_names(control) and "make_coffee" in skill_names(control)
    finally:
        assert daemon.stop() == 0
        notify.close()
