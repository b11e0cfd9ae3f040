"""The run status machine, every transition, and the page's copy of the names."""

from __future__ import annotations

import itertools
import re
from importlib import resources
from pathlib import Path

import pytest

from bnlab.model.config import ArmName
from bnlab.server.experiments.design import ExperimentStatus
from bnlab.server.live.messages import CloseCode
from bnlab.server.status import (
    TRANSITIONS,
    InvalidTransition,
    Outcome,
    RunStatus,
    check_transition,
)

Q, R, C, F, X, D, I = (  # noqa: E741 -- one letter per status keeps the table readable
    RunStatus.QUEUED,
    RunStatus.RUNNING,
    RunStatus.COMPLETED,
    RunStatus.FAILED,
    RunStatus.CANCELLED,
    RunStatus.DIVERGED,
    RunStatus.INTERRUPTED,
)
# Written out here, not read from TRANSITIONS, so a change to the table shows up.
ALLOWED = {
    (Q, R),  # a worker took it
    (Q, X),  # cancelled while waiting
    (Q, F),  # no worker could be started
    (Q, I),  # the server stopped
    (R, C),
    (R, F),
    (R, X),
    (R, D),
    (R, I),
    (F, Q),  # resumed
    (I, Q),  # resumed
}


@pytest.mark.parametrize(("old", "new"), sorted(ALLOWED))
def test_an_allowed_transition_passes(old, new):
    check_transition(old, new)


@pytest.mark.parametrize(
    ("old", "new"), sorted(set(itertools.product(RunStatus, RunStatus)) - ALLOWED)
)
def test_a_forbidden_transition_is_refused_naming_both_statuses(old, new):
    with pytest.raises(InvalidTransition, match=f"a {old} run cannot become {new}"):
        check_transition(old, new)


def test_every_status_has_a_row_in_the_table():
    assert set(TRANSITIONS) == set(RunStatus)


def test_active_terminal_and_resumable_statuses():
    assert {s for s in RunStatus if s.active} == {Q, R}
    assert {s for s in RunStatus if s.terminal} == {C, F, X, D, I}
    assert {s for s in RunStatus if s.resumable} == {F, I}


def test_every_outcome_is_a_status_a_running_run_may_end_in():
    assert {o.status for o in Outcome} == {C, X, D, F}
    for outcome in Outcome:
        assert outcome.status.terminal
        check_transition(R, outcome.status)
        assert outcome == outcome.status  # the same name on the wire


def _page_js():
    return resources.files("bnlab.frontend") / "js"


def _page_module(name: str) -> str:
    return (_page_js() / name).read_text(encoding="utf-8")


def _page_modules() -> list:
    """Every page module, in every folder under js/."""
    modules = sorted(p for p in _page_module_paths() if p.name.endswith(".js"))
    assert len(modules) > 10, "the page's modules were not found"
    return modules


def _page_module_paths():
    # resources' Traversable has no rglob: the installed (or editable) folder is a real one.
    return Path(str(_page_js())).rglob("*.js")


def _code(module) -> str:
    """A module's code without its comments."""
    return re.sub(r"//[^\n]*|/\*.*?\*/", "", module.read_text(encoding="utf-8"), flags=re.S)


def _page_set(source: str, name: str) -> set[str]:
    body = re.search(rf"export const {name} = new Set\(\[(.*?)\]\)", source, re.S)
    assert body, f"status.js has no {name} set"
    return set(re.findall(r"Status\.(\w+)", body.group(1)))


def _frozen(source: str, name: str) -> str:
    body = re.search(rf"export const {name} = Object\.freeze\(\{{(.*?)\}}\)", source, re.S)
    assert body, f"no {name} object"
    return body.group(1)


def test_the_page_knows_the_same_statuses_as_the_server():
    source = _page_module("status.js")
    page = dict(re.findall(r"(\w+): \"(\w+)\"", _frozen(source, "Status")))
    assert page == {s.name: s.value for s in RunStatus}
    assert _page_set(source, "TERMINAL") == {s.name for s in RunStatus if s.terminal}
    assert _page_set(source, "RESUMABLE") == {s.name for s in RunStatus if s.resumable}
    assert _page_set(source, "ACTIVE") == {s.name for s in RunStatus if s.active}
    # An experiment's statuses are run statuses' names (Status.X in the page's copy).
    experiment = dict(re.findall(r"(\w+): Status\.(\w+)", _frozen(source, "ExperimentStatus")))
    assert {k: RunStatus[v].value for k, v in experiment.items()} == {
        s.name: s.value for s in ExperimentStatus
    }


def test_status_js_is_the_pages_one_copy_of_the_statuses():
    for module in _page_modules():
        if module.name != "status.js":
            code = _code(module)
            assert not re.search(r"\b(Status|TERMINAL|RESUMABLE|ACTIVE) = ", code), (
                f"{module} defines its own statuses; import them from status.js"
            )


def test_no_other_page_module_spells_a_status_out_in_code():
    quoted = re.compile("|".join(rf"[\"']{s.value}[\"']" for s in RunStatus))
    for module in _page_modules():
        if module.name != "status.js":
            found = quoted.findall(_code(module))
            assert not found, f"{module} spells out {found}; use Status from status.js"


def test_the_page_knows_the_same_arms_as_the_server():
    source = _page_module("arms.js")
    arms = dict(re.findall(r"(\w+): \"(\w+)\"", _frozen(source, "Arm")))
    assert arms == {arm.name: arm.value for arm in ArmName}
    order = re.search(r"export const ARM_ORDER = Object\.freeze\(\[(.*?)\]\)", source, re.S)
    assert order, "arms.js has no ARM_ORDER"
    assert [arms[n] for n in re.findall(r"Arm\.(\w+)", order.group(1))] == list(ArmName)


def test_the_page_knows_the_same_close_codes_as_the_server():
    page = {
        name: int(code)
        for name, code in re.findall(
            r"(\w+): (\d+)", _frozen(_page_module("closecodes.js"), "CloseCode")
        )
    }
    assert page == {c.name: c.value for c in CloseCode}


def test_no_other_page_module_spells_a_close_code_out():
    for module in _page_modules():
        if module.name != "closecodes.js":
            found = re.findall(r"\b44\d\d\b|\b4008\b", _code(module))
            assert not found, f"{module} spells out close codes {found}; use CloseCode"
