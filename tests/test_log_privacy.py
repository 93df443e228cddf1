"""The system journal, which more people may read than may use the assistant, names the skills that ran,
how long they took and whether they failed, but not what the person said to them (a note, a door code):
those words are logged at debug level only."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from assistant.skills.registry import BUILTIN_SKILLS, Registry
from assistant.skills.sdk import SkillContext
from tests.test_chained import manager_for, said

SECRET = "4711"


def logged(caplog: pytest.LogCaptureFixture, level: int) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= level)


def test_what_was_said_to_a_skill_is_logged_at_debug_level_only(
    tiny_int8: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manager = manager_for(tiny_int8, tmp_path)
    caplog.set_level(logging.DEBUG, logger="assistant")
    assert said(manager, f"take a note the door code is {SECRET}") == "Noted."
    assert said(manager, f"add {SECRET} oat milk to my shopping list").startswith("Added")
    info = logged(caplog, logging.INFO)
    assert SECRET not in info and "oat milk" not in info
    assert "local intent add_item" in info and "skill add_item returned in " in info  # which ran, how long
    assert SECRET in logged(caplog, logging.DEBUG)  # for an operator who asks for it


def test_arguments_a_skill_refused_are_not_logged_above_debug(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry(context=SkillContext(state_dir=tmp_path))
    registry.load_folder(BUILTIN_SKILLS)
    caplog.set_level(logging.DEBUG, logger="assistant")
    result = registry.call("add_item", {"text": f"the door code is {SECRET} " * 40})
    assert result.error
    assert "call not run: invalid arguments for add_item: text breaks its maxLength rule" in logged(
        caplog, logging.WARNING
    )
    assert SECRET not in logged(caplog, logging.INFO)
    assert SECRET in logged(caplog, logging.DEBUG)
