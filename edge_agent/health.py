"""Component states, their reasons, and the node's verdict.

A leaf module like `config` and `contract`: components report their state through a
`ComponentHealth` handed to them by `app.py`; the status page, metrics and the watchdog
read the `HealthRegistry`. Each entry has exactly one writer (the component it was handed
to); readers never write.

A state comes with a `Reason`: a stable code plus parameters (for the page to say in the
reader's language) and an English text (for logs and the English page). The verdict weighs
who is unwell: the outbox failing fails the node, one camera or one sensor down degrades it,
every camera or every sensor down fails it, and so does a link down for longer than the
configured bound.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


class State(enum.StrEnum):
    STARTING = "starting"
    OK = "ok"
    DEGRADED = "degraded"
    FAILING = "failing"
    STOPPED = "stopped"


class Role(enum.StrEnum):
    """What a component's trouble means for the node as a whole."""

    CORE = "core"  # the outbox: failing means data is being lost; the node fails
    LINK = "link"  # the broker link: down past `link_unhealthy_after_s`, the node fails
    SOURCE = "source"  # a sensor or camera: one down degrades, all of a kind down fails
    SUPPORT = "support"  # everything else (inference, publisher, web): at most degraded


@dataclass(frozen=True)
class Reason:
    """Why a component is in its state: `code` and `params` for translation, `text` in English.

    Codes are stable (the status page's catalogues and `/api/status` readers key on them);
    params are JSON values."""

    code: str
    text: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "text": self.text, "params": dict(self.params)}


def reason(code: str, text: str, **params: Any) -> Reason:
    return Reason(code, text, params)


@dataclass
class ComponentHealth:
    """The live state of one component. Thread-safe, but with one writer: the component."""

    name: str
    kind: str = "component"
    role: Role = Role.SUPPORT
    label: str | None = None
    state: State = State.STARTING
    since: float = field(default_factory=time.time)
    reason: Reason | None = None
    last_error: str = ""
    last_progress: float | None = None
    last_beat: float | None = None
    beat_period_s: float | None = None
    progress_within_s: float | None = None
    progress_expected_since: float | None = None
    counters: dict[str, float] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def detail(self) -> str:
        """The English text of the current reason ("" when there is none)."""
        current = self.reason
        return "" if current is None else current.text

    def set_state(
        self, state: State, why: Reason | None = None, *, error: str | None = None
    ) -> bool:
        """Set the state and its reason; returns True when the state changed (so callers
        log transitions once). `error` is the last technical error, kept for the logs."""
        with self._lock:
            changed = state is not self.state
            if changed:
                self.state = state
                self.since = time.time()
            self.reason = why
            if error is not None:
                self.last_error = error
            return changed

    def progress(self, counter: str | None = None, amount: float = 1) -> None:
        """Record that data flowed: health means data flows, not that the task is alive."""
        with self._lock:
            self.last_progress = time.monotonic()
            if counter is not None:
                self.counters[counter] = self.counters.get(counter, 0) + amount

    def expect_progress(self, within_s: float | None) -> None:
        """Promise `progress()` at least every `within_s` seconds from now on (None: no
        promise). A component that promises data (the outbox writer, an online capture, the
        publisher with rows to send on a live link) sets it while it has work; a broken
        promise withholds the watchdog and fails the verdict until progress resumes."""
        with self._lock:
            if within_s is None:
                self.progress_within_s = None
                self.progress_expected_since = None
            elif self.progress_within_s is None:
                self.progress_within_s = within_s
                self.progress_expected_since = time.monotonic()
            else:
                self.progress_within_s = within_s

    def beat(self, period_s: float) -> None:
        """Record that the component's loop turned; it promises to turn again within `period_s`.

        The watchdog is fed only while every beating component keeps that promise, so a
        wedged loop (a hung thread, a blocked event loop) gets the agent restarted while a
        sensor that is merely unplugged does not.
        """
        with self._lock:
            self.last_beat = time.monotonic()
            self.beat_period_s = period_s

    def overdue(self, now: float, grace_s: float) -> bool:
        """The loop has not turned within its promise (3 periods plus `grace_s`)."""
        with self._lock:
            if self.beat_period_s is None or self.last_beat is None:
                return False
            return now - self.last_beat > 3 * self.beat_period_s + grace_s

    def stalled(self, now: float) -> bool:
        """Progress was promised and has not come within the promise."""
        with self._lock:
            if self.progress_within_s is None or self.progress_expected_since is None:
                return False
            last = max(self.progress_expected_since, self.last_progress or 0.0)
            return now - last > self.progress_within_s

    def count(self, counter: str, amount: float = 1) -> None:
        with self._lock:
            self.counters[counter] = self.counters.get(counter, 0) + amount

    def set_facts(self, **facts: Any) -> None:
        with self._lock:
            self.facts.update(facts)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            age = None if self.last_progress is None else now - self.last_progress
            current = self.reason
            return {
                "name": self.name,
                "kind": self.kind,
                "role": self.role.value,
                "label": self.label,
                "state": self.state.value,
                "since": self.since,
                "reason": None if current is None else current.to_dict(),
                "detail": "" if current is None else current.text,
                "last_error": self.last_error,
                "progress_age_s": age,
                "counters": dict(self.counters),
                "facts": dict(self.facts),
            }


@dataclass(frozen=True)
class Finding:
    """One reason in the verdict: which component, how serious, and why."""

    component: str
    kind: str
    severity: State  # DEGRADED or FAILING
    reason: Reason

    def to_dict(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "kind": self.kind,
            "severity": self.severity.value,
            **self.reason.to_dict(),
        }


@dataclass(frozen=True)
class Verdict:
    state: State  # OK, DEGRADED or FAILING
    findings: tuple[Finding, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state.value, "reasons": [f.to_dict() for f in self.findings]}


STALLED = "stalled"
WEDGED = "wedged"


class HealthRegistry:
    """All component states of one agent, in registration order."""

    def __init__(self, *, link_unhealthy_after_s: float = 600.0, grace_s: float = 10.0) -> None:
        self._components: dict[str, ComponentHealth] = {}
        self.started_at = time.time()
        self.link_unhealthy_after_s = link_unhealthy_after_s
        self.grace_s = grace_s

    def register(
        self,
        name: str,
        *,
        kind: str = "component",
        role: Role = Role.SUPPORT,
        label: str | None = None,
    ) -> ComponentHealth:
        if name in self._components:
            raise ValueError(f"component {name!r} registered twice")
        health = ComponentHealth(name=name, kind=kind, role=role, label=label)
        self._components[name] = health
        return health

    def __iter__(self) -> Iterator[ComponentHealth]:
        return iter(list(self._components.values()))

    def get(self, name: str) -> ComponentHealth | None:
        return self._components.get(name)

    def verdict(self, *, now_wall: float | None = None) -> Verdict:
        """The node's state with every reason behind it, most serious first."""
        now = time.monotonic()
        wall = time.time() if now_wall is None else now_wall
        findings: list[Finding] = []
        sources: dict[str, list[ComponentHealth]] = {}
        for c in self:
            if c.state is State.STOPPED:
                continue
            if c.role is Role.SOURCE:
                sources.setdefault(c.kind, []).append(c)
            if c.overdue(now, self.grace_s):
                findings.append(
                    Finding(
                        c.name,
                        c.kind,
                        State.FAILING,
                        reason(WEDGED, f"{c.name}: its loop stopped turning", component=c.name),
                    )
                )
                continue
            if c.stalled(now):
                findings.append(
                    Finding(
                        c.name,
                        c.kind,
                        State.FAILING,
                        reason(STALLED, f"{c.name}: no progress", component=c.name),
                    )
                )
                continue
            finding = self._finding(c, wall)
            if finding is not None:
                findings.append(finding)
        for kind, members in sources.items():
            if members and all(m.state is State.FAILING for m in members):
                findings.append(
                    Finding(
                        kind,
                        kind,
                        State.FAILING,
                        reason(
                            f"all_{kind}s_down",
                            f"every {kind} is down",
                            count=len(members),
                        ),
                    )
                )
        findings.sort(key=lambda f: 0 if f.severity is State.FAILING else 1)
        if any(f.severity is State.FAILING for f in findings):
            state = State.FAILING
        elif findings:
            state = State.DEGRADED
        else:
            state = State.OK
        return Verdict(state, tuple(findings))

    def _finding(self, c: ComponentHealth, wall: float) -> Finding | None:
        with c._lock:
            state, since, current = c.state, c.since, c.reason
        if state is State.OK:
            return None
        if current is None:
            current = reason(state.value, f"{c.name} is {state.value}", component=c.name)
        severity = State.DEGRADED
        if (state is State.FAILING and c.role is Role.CORE) or (
            c.role is Role.LINK
            and state in (State.DEGRADED, State.FAILING, State.STARTING)
            and wall - since > self.link_unhealthy_after_s
        ):
            severity = State.FAILING
        return Finding(c.name, c.kind, severity, current)

    def overall(self) -> State:
        return self.verdict().state

    def progressing(self) -> bool:
        """True while no loop is overdue and no promised progress is late; the systemd
        watchdog is fed only then."""
        return not self.stuck()

    def stuck(self) -> list[str]:
        """Names of the components whose loop is overdue or whose progress is late."""
        now = time.monotonic()
        return [
            c.name
            for c in self
            if c.state is not State.STOPPED and (c.overdue(now, self.grace_s) or c.stalled(now))
        ]

    def snapshot(self) -> list[dict[str, Any]]:
        return [c.snapshot() for c in self]
