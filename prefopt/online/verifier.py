"""Answer verification with a hard time limit: math (math-verify), exact match, user callables by name.

``get_verifier("math", timeout=5.0, fallback="last_number")`` returns a verifier (the
:class:`~prefopt.verification.Verifier` protocol) whose ``verify_batch(completions, golds)`` gives
one :class:`~prefopt.verification.VerifyResult` each.

Answers and golds are read by :mod:`prefopt.online.answers` and compared by
``math_verify.verify`` (numbers, fractions, LaTeX, tuples, sets, intervals).
:func:`prefopt.verification.verify_rollouts` applies the truncation policy: a rollout cut at the
generation limit is ``status="truncated"`` (incorrect, not checked) unless ``truncated="verify"``.

Hardening: sympy can hang on adversarial strings (``9^9^9^9``, ``1000000!``, deep nesting) and
math-verify's own SIGALRM timeout only works in a main thread. So every check runs in a persistent
worker *process* (``python -c ...``, JSON lines over pipes, no pickle), one item at a time with a
wall-clock deadline; on a deadline the worker is killed, the item is recorded as
``status="timeout"`` (incorrect), and a pre-started spare worker takes over at once. A parse failure
or an exception in a check is ``"parse_error"`` / ``"error"``, also incorrect; only a worker that
cannot start at all (a setup error) raises :class:`VerifierStartupError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from typing_extensions import Self

from prefopt.online.answers import Fallback, extract_answer, extract_gold
from prefopt.online.verify_worker import SOFT_FRACTION, VerifierStartupError, Worker
from prefopt.verification import Verifier, VerifyResult

logger = logging.getLogger(__name__)

CheckFn = Callable[[str, str], bool]


# ---------------------------------------------------------------------------------- verifiers
class IsolatedVerifier:
    """Runs a check in a persistent worker process with a per-item hard ``timeout`` (seconds).

    A warm spare worker is kept so that a timeout costs only the killed item. Use as a context
    manager, or call :meth:`close` (idempotent) to stop the workers.
    """

    def __init__(self, config: dict, timeout: float = 5.0) -> None:
        if timeout <= 0:
            raise ValueError(f"verifier timeout must be > 0 seconds, got {timeout}")
        self.timeout = float(timeout)
        self.config = {**config, "soft_timeout": SOFT_FRACTION * self.timeout}
        self._worker: Worker | None = None
        self._spare: Worker | None = None

    def _active(self) -> Worker:
        if self._worker is None:
            self._worker, self._spare = self._spare or Worker(self.config), None
        if self._spare is None:
            self._spare = Worker(self.config)
        return self._worker

    def _discard_worker(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def verify(self, completion: str, gold: str) -> VerifyResult:
        """Verify one completion; a timeout, parse failure or crash yields an incorrect result with its status."""
        try:
            result = self._active().call(completion, gold, self.timeout)
        except VerifierStartupError:
            self.close()
            raise
        except (RuntimeError, OSError) as exc:
            self._discard_worker()
            logger.warning("verifier worker failed (%s); restarted", exc)
            return VerifyResult(False, "error", None, str(exc)[:300])
        if result is None:
            self._discard_worker()
            logger.info("verification timed out after %.1f s: %r", self.timeout, completion[-120:])
            return VerifyResult(
                False, "timeout", None, f"no verdict within {self.timeout:g} s; worker restarted"
            )
        return result

    def verify_batch(self, completions: Sequence[str], golds: Sequence[str]) -> list[VerifyResult]:
        """Verify ``completions[i]`` against ``golds[i]`` for every i, in one worker, each under the time limit."""
        if len(completions) != len(golds):
            raise ValueError(f"verify_batch: {len(completions)} completions but {len(golds)} golds")
        return [self.verify(c, g) for c, g in zip(completions, golds)]

    def close(self) -> None:
        """Stop the worker processes."""
        for worker in (self._worker, self._spare):
            if worker is not None:
                worker.close()
        self._worker = self._spare = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if hasattr(self, "_spare"):  # __init__ may have raised before the attributes existed
            self.close()


class ExactMatchVerifier:
    """In-process exact match of the extracted answer (or the whole completion) against the gold.

    Whitespace is collapsed; ``ignore_case`` lowers both. Pure string work, so no worker is needed.
    """

    def __init__(self, extract: bool = True, ignore_case: bool = False, fallback: Fallback = "none") -> None:
        self.extract, self.ignore_case, self.fallback = extract, ignore_case, fallback

    def _normalize(self, text: str) -> str:
        text = " ".join(text.split())
        return text.lower() if self.ignore_case else text

    def verify(self, completion: str, gold: str) -> VerifyResult:
        """Compare one completion with one gold."""
        answer = extract_answer(completion, self.fallback) if self.extract else completion
        if answer is None:
            return VerifyResult(False, "no_answer", None, "no \\boxed{} or '####' answer in the completion")
        target = extract_gold(gold) if self.extract else gold
        return VerifyResult(self._normalize(answer) == self._normalize(target), "ok", answer)

    def verify_batch(self, completions: Sequence[str], golds: Sequence[str]) -> list[VerifyResult]:
        """Compare ``completions[i]`` with ``golds[i]``."""
        if len(completions) != len(golds):
            raise ValueError(f"verify_batch: {len(completions)} completions but {len(golds)} golds")
        return [self.verify(c, g) for c, g in zip(completions, golds)]

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------------- registry
_USER_CHECKS: dict[str, CheckFn] = {}
_BUILTIN = ("math", "exact")


def register_verifier(name: str) -> Callable[[CheckFn], CheckFn]:
    """Register ``fn(completion, gold) -> bool`` as verifier ``name``.

    ``fn`` must be a module-level function (importable as ``module:qualname``): it runs in the
    worker process under the same hard time limit as the math verifier.
    """

    def decorator(fn: CheckFn) -> CheckFn:
        if name in _BUILTIN or (name in _USER_CHECKS and _USER_CHECKS[name] is not fn):
            raise ValueError(f"a verifier named {name!r} is already registered")
        if "<locals>" in fn.__qualname__ or fn.__name__ == "<lambda>":
            raise ValueError(
                f"verifier {name!r}: {fn.__qualname__} is not importable; define it at module level so the "
                "worker process can import it"
            )
        _USER_CHECKS[name] = fn
        return fn

    return decorator


def available_verifiers() -> list[str]:
    """Names accepted by :func:`get_verifier`."""
    return sorted([*_BUILTIN, *_USER_CHECKS])


def _factory(name: str, hparams: dict) -> Callable[[float], Verifier]:
    """Validate ``name`` and ``hparams`` (starting nothing); return ``timeout -> verifier``."""
    hparams = dict(hparams)
    if name == "math":
        fallback = hparams.pop("fallback", "last_number")
        if hparams or fallback not in ("last_number", "none"):
            raise TypeError(
                f"verifier 'math' takes fallback='last_number'|'none' and timeout; got {hparams or fallback}"
            )
        return lambda timeout: IsolatedVerifier({"kind": "math", "fallback": fallback}, timeout)
    if name == "exact":
        ExactMatchVerifier(**hparams)  # in-process and cheap: its own argument checks apply
        return lambda timeout: ExactMatchVerifier(**hparams)
    if name in _USER_CHECKS:
        if hparams:
            raise TypeError(f"verifier {name!r} takes only timeout; got {sorted(hparams)}")
        fn = _USER_CHECKS[name]
        target = f"{fn.__module__}:{fn.__qualname__}"
        return lambda timeout: IsolatedVerifier({"kind": "callable", "target": target}, timeout)
    raise KeyError(f"unknown verifier {name!r}; registered verifiers: {', '.join(available_verifiers())}")


def check_verifier(name: str, **hparams) -> None:
    """Raise as :func:`get_verifier` would for a bad name or options, without starting a worker."""
    _factory(name, hparams)


def get_verifier(name: str = "math", *, timeout: float = 5.0, **hparams) -> Verifier:
    """Build verifier ``name``.

    - ``"math"``: math-verify in a worker; ``fallback="last_number"`` (or ``"none"``) for answers
      without ``\\boxed{}`` / ``####``; ``timeout`` seconds per item (default 5).
    - ``"exact"``: :class:`ExactMatchVerifier` (``extract``, ``ignore_case``, ``fallback``), in-process.
    - a name given to :func:`register_verifier`: that callable in a worker, ``timeout`` per item.
    """
    return _factory(name, hparams)(timeout)
