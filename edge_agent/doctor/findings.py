"""Findings and the report: what each check found, as a stable code with parameters."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field

from edge_agent.doctor.messages import CATALOGUES, WORDS


class Status(enum.StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    """One line of the report: `check` names what was looked at, `code` what was found."""

    check: str
    status: Status
    code: str
    params: dict[str, str] = field(default_factory=dict)

    def text(self, lang: str) -> tuple[str, str]:
        """(message, fix) in `lang` ("vi" or "en")."""
        message, fix = CATALOGUES[lang][self.code]
        return message.format(**self.params), fix.format(**self.params)


def finding(check: str, status: Status, code: str, **params: object) -> Finding:
    return Finding(check, status, code, {key: str(value) for key, value in params.items()})


@dataclass(frozen=True)
class Report:
    findings: tuple[Finding, ...]

    @property
    def failed(self) -> bool:
        return any(f.status is Status.FAIL for f in self.findings)

    def counts(self) -> dict[str, int]:
        return {s.name.lower(): sum(f.status is s for f in self.findings) for s in Status}

    def as_json(self, lang: str) -> str:
        lines = []
        for f in self.findings:
            message, fix = f.text(lang)
            lines.append(
                {"check": f.check, "status": f.status.value, "code": f.code, "params": f.params}
                | {"message": message, "fix": fix}
            )
        body = {"findings": lines, "summary": self.counts(), "failed": self.failed}
        return json.dumps(body, ensure_ascii=False, indent=2)

    def as_text(self, lang: str) -> str:
        words = WORDS[lang]
        out = []
        for f in self.findings:
            message, fix = f.text(lang)
            out.append(f"{f.status.value:<4}  {f.check:<14} {message}")
            if fix and f.status is not Status.OK:
                out.append(f"{'':<20} {words['fix']}: {fix}")
        out.append(words["summary"].format(**self.counts()))
        return "\n".join(out)
