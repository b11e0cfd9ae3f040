"""The run status machine, every transition, and the page's copy of the names."""

from __future__ import annotations

import itertools
import re
from importlib import resources

import pytest

from bnlab.server.status import TRANSITIONS, InvalidTransition, Outcome, RunStatus, check_transition

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


def _page_status_module() -> str:
    return (resources.files("bnlab.frontend") / "js" / "status.js").read_text(encoding="utf-8")


def _page_set(source: str, name: str) -> set[str]:
    body = re.search(rf"export const {name} = new Set\(\[(.*?)\]\)", source, re.S)
    assert body, f"status.js has no {name} set"
    return set(re.findall(r"Status\.(\w+)", body.group(1)))


def test_the_page_knows_the_same_statuses_as_the_server():
    source = _page_status_module()
    body = re.search(r"export const Status = Object\.freeze\(\{(.*?)\}\)", source, re.S)
    assert body, "status.js has no Status object"
    page = dict(re.findall(r"(\w+): \"(\w+)\"", body.group(1)))
    assert page == {s.name: s.value for s in RunStatus}
    assert _page_set(source, "TERMINAL") == {s.name for s in RunStatus if s.terminal}
    assert _page_set(source, "RESUMABLE") == {s.name for s in RunStatus if s.resumable}


def test_no_other_page_module_spells_a_status_out_in_code():
    js = resources.files("bnlab.frontend") / "js"
    quoted = re.compile("|".join(rf"[\"']{s.value}[\"']" for s in RunStatus))
    for module in js.iterdir():
        if module.name.endswith(".js") and module.name != "status.js":
            code = re.sub(r"//[^\n]*|/\*.*?\*/", "", module.read_text(encoding="utf-8"), flags=re.S)
            found = quoted.findall(code)
            assert not found, f"{module.name} spells out {found}; use Status from status.js"
