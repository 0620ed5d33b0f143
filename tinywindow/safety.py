"""The safety facade for operators in `python manage.py shell` (and the runbook):

    from tinywindow.safety import CircuitBreaker, circuit_breaker
    circuit_breaker.reset(reason="Market conditions stabilized")          # every breaker
    circuit_breaker.reset(reason="...", name="api_error_rate:binance")    # one breaker
    circuit_breaker.status()                                              # {name: state}
    CircuitBreaker("drawdown").reset(reason="...")                        # one, by handle

An empty or missing reason raises ValidationError; every reset is an event and an audit entry.
"""

from __future__ import annotations

import getpass

from tinywindow.exceptions import ValidationError

__all__ = ["CircuitBreaker", "circuit_breaker"]


class CircuitBreaker:
    def __init__(self, name: str | None = None) -> None:
        self.name = name

    def reset(self, reason: str | None = None, *, name: str | None = None, actor: str | None = None) -> list[str]:
        """Close the breaker(s); returns the names that were open. A reason is required."""
        from safety.services.breakers import breaker_reset

        if reason is None or not str(reason).strip():
            raise ValidationError("circuit_breaker.reset() needs a reason, e.g. reason=\"Market conditions "
                                  "stabilized\"", field="reason")
        return breaker_reset(reason=str(reason), actor=actor or f"shell:{_user()}", source="shell",
                             name=name or self.name)

    def status(self) -> dict[str, str]:
        from safety.services.breakers import breaker_states

        states = {s.name: s.state for s in breaker_states()}
        return {k: v for k, v in states.items() if not self.name or k.split(":")[0] == self.name.split(":")[0]}

    def check(self) -> list:
        """Evaluate every breaker now (what the safety queue does every few seconds)."""
        from safety.services.breakers import breakers_check

        return breakers_check()

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r})" if self.name else "CircuitBreaker(all)"


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


circuit_breaker = CircuitBreaker()
