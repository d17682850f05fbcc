"""Where agent code runs: parsed, checked, rewritten and compiled once, then executed as
plain bytecode with guards only where it crosses into host objects.

    from agex.sandbox import Policy, Sandbox

    policy = Policy()
    policy.fn(fetch_prices)
    result = Sandbox(policy).run("print(fetch_prices('ACME'))", timeout=5)
    result.output, result.error
"""

from agex.sandbox.policy import Policy
from agex.sandbox.runner import CancelScope, Program, RunResult, Sandbox
from agex.sandbox.signals import Signal

__all__ = ["CancelScope", "Policy", "Program", "RunResult", "Sandbox", "Signal"]
