"""The pure fold behind `track()` / `mdmpush follow`: targets, states, completion, reasons."""

from __future__ import annotations

from typing import Any

from services.cli.follow_cmd import status_line, summary
from services.sdk.track import COALESCED, PENDING, RequestView, expected_targets

RID = "r-1"


def outcome(target: str, state: str, reason: str | None = None, *, request: str = RID,
            repush: int = 0) -> dict[str, Any]:
    return {"job_id": f"{request}/{target}", "request_id": request, "enrollment_id": target,
            "state": state, "reason": reason, "repush": repush}


def test_progress_until_every_target_is_terminal() -> None:
    view = RequestView(RID, ["E1", "E2", "E3"])
    assert view.progress().by_state == {PENDING: 3}
    view.add(outcome("E1", "SENT"))
    view.add(outcome("E2", "SKIPPED", "unknown_enrollment"))
    view.add(outcome("E3", "RETRYING", "InternalServerError"))
    progress = view.progress()
    assert progress.by_state == {"SENT": 1, "SKIPPED": 1, "RETRYING": 1}
    assert (progress.terminal, progress.complete) == (1, False)
    view.add(outcome("E1", "ANSWERED"))
    view.add(outcome("E3", "UNANSWERED", "device_unreachable"))
    view.add(outcome("E3", "SENT", repush=1))  # a correlator re-push's outcome is evidence only
    done = view.progress()
    assert done.complete and done.terminal == 3
    assert done.by_state == {"ANSWERED": 1, "SKIPPED": 1, "UNANSWERED": 1}
    assert done.reasons == {"ANSWERED": {"-": 1}, "SKIPPED": {"unknown_enrollment": 1},
                            "UNANSWERED": {"device_unreachable": 1}}
    text = summary(done)
    assert "complete" in text and "device_unreachable 1" in text
    assert status_line(done).startswith(f"{RID}: 3/3 done")


def test_other_requests_and_repushes_do_not_count_and_new_targets_are_learnt() -> None:
    view = RequestView(RID, ["E1"])
    view.add(outcome("E1", "FAILED", "Unregistered", request="other"))
    view.add(outcome("E1", "UNANSWERED", "device_unreachable", repush=1))
    assert not view.progress().complete
    view.add(outcome("E9", "SKIPPED", "no_token"))  # a target the caller did not know of
    view.add(outcome("E1", "DEAD_LETTERED", "InternalServerError"))
    progress = view.progress()
    assert progress.complete and progress.targets == 2


def test_expected_targets() -> None:
    explicit = {"target_all": False, "enrollment_ids": ["E1", "E2", "E1"], "tenant": "acme",
                "requested_at": 1000}
    assert expected_targets(explicit, {}) == {"E1", "E2"}
    registry: dict[str, dict[str, Any]] = {
        "A1": {"tenant": "acme", "enrolled_at": 500},
        "A2": {"tenant": "acme", "enrolled_at": None},
        "B1": {"tenant": "globex", "enrolled_at": 500},
        "A3": {"tenant": "acme", "enrolled_at": 1000 + 3_600_000},  # enrolled after it
    }
    every = dict(explicit, target_all=True)
    assert expected_targets(every, registry) == {"A1", "A2"}


def test_a_coalesced_target_is_not_done_until_its_carriers_verdict_closes_it() -> None:
    view = RequestView(RID, ["E1", "E2"])
    view.add(outcome("E1", "SKIPPED", "coalesced"))  # riding on another request's push
    view.add(outcome("E2", "SKIPPED", "inactive"))
    riding = view.progress()
    assert riding.by_state == {COALESCED: 1, "SKIPPED": 1}
    assert (riding.terminal, riding.complete) == (1, False)
    assert status_line(riding).startswith(f"{RID}: 1/2 done")
    view.add(outcome("E1", "ANSWERED", "coalesced onto other/E1"))
    done = view.progress()
    assert done.complete and done.terminal == 2
    assert done.by_state == {"ANSWERED": 1, "SKIPPED": 1}
