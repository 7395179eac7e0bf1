"""Supervision of an actor stage's entities, in the Erlang/OTP vocabulary.

A failure is an entity's ``step`` returning a negative code (the vectorised path) or
its ``handle``/``apply``/hook raising (the Python-class path), at one input row.

- ``strategy``: which entities restart with the failing one: ``one_for_one`` (it
  alone), ``one_for_all`` (every entity of its key group), ``rest_for_one`` (it and
  the entities activated after it, as OTP's children started after it).
- ``restart``: ``permanent`` (always restarted), ``transient`` (restarted after a
  failure, not after a normal stop), ``temporary`` (never: the entities are stopped,
  their later rows counted as ``stopped_rows`` and dropped).
- A restart restores the entity from its last state: the fold of every event it
  applied (its snapshot plus its journal), which is the state it holds, because
  ``apply`` is the only thing that changes state. The failing row is tried again,
  ``max_attempts`` times in all; then it goes to the stage's side output
  ``actor_failure`` (the dead letters) and the entity goes on with the next row.
- Intensity: more than ``max_restarts`` restarts within ``period`` (event time,
  ``period_unit: ms``, or input rows, ``period_unit: rows``; never wall time, so a
  replay restarts the same) escalates: ``ActorError`` naming the entity, the step
  and the error stops the run.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from telepipe.errors import TelepipeError

STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")
RESTARTS = ("permanent", "transient", "temporary")
PERIOD_UNITS = ("ms", "rows")


class ActorError(TelepipeError):
    """An actor stage's supervisor gave up (restart intensity exceeded): the run stops."""


@dataclass(frozen=True)
class Decision:
    """What a failure does: restart (or stop) ``entities``, and whether the failing row
    is given up (a dead letter) rather than tried again."""

    restart: bool
    give_up: bool


class Supervisor:
    """Restart accounting of one stage (OTP's supervisor intensity, in event time or rows)."""

    def __init__(
        self,
        restart: str,
        max_restarts: int,
        period: int,
        period_unit: str,
        max_attempts: int,
    ) -> None:
        self.restart = restart
        self.max_restarts = max_restarts
        self.period = period * 1_000_000 if period_unit == "ms" else period
        self.by_rows = period_unit == "rows"
        self.max_attempts = max_attempts
        self.stamps: deque[int] = deque()
        self.restarts = 0
        self.failures = 0
        self.dead_letters = 0
        self._attempts: dict[tuple[int, int, int], int] = {}  # (entity, ts, row) -> failures

    def failed(self, entity: int, ts: int, row: int, rows_seen: int, what: str) -> Decision:
        """A failure of ``entity`` at its input row (event time ``ts``, ``row``: the row's
        stable number in its release); raises ``ActorError`` once the intensity is past.
        ``what`` is one line naming the entity, the step and the error."""
        self.failures += 1
        key = (entity, ts, row)
        attempts = self._attempts.get(key, 0) + 1
        give_up = attempts >= self.max_attempts or self.restart == "temporary"
        if give_up:
            self._attempts.pop(key, None)
            self.dead_letters += 1
        else:
            self._attempts[key] = attempts
        if self.restart == "temporary":
            return Decision(restart=False, give_up=True)
        now = rows_seen if self.by_rows else ts
        self.stamps.append(now)
        while self.stamps and self.stamps[0] <= now - self.period:
            self.stamps.popleft()
        if len(self.stamps) > self.max_restarts:
            unit = "rows" if self.by_rows else "ms of event time"
            span = self.period if self.by_rows else self.period // 1_000_000
            raise ActorError(
                f"{what}; more than {self.max_restarts} restarts within {span} {unit}: "
                "the supervisor gives up"
            )
        self.restarts += 1
        return Decision(restart=True, give_up=give_up)

    def forget_attempts(self) -> None:
        """A release is done: attempts of rows not given up do not carry over."""
        self._attempts.clear()

    def snapshot(self) -> dict[str, str | int]:
        return {
            "restart_stamps": ",".join(map(str, self.stamps)),
            "restarts": self.restarts,
            "failures": self.failures,
            "dead_letter_rows": self.dead_letters,
        }

    def restore(self, state: dict[str, object]) -> None:
        stamps = str(state["restart_stamps"])
        self.stamps = deque(int(s) for s in stamps.split(",") if s)
        self.restarts = int(state["restarts"])  # type: ignore[call-overload]
        self.failures = int(state["failures"])  # type: ignore[call-overload]
        self.dead_letters = int(state["dead_letter_rows"])  # type: ignore[call-overload]
