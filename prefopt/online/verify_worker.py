"""The verification worker: a persistent ``python -c`` process that runs one check at a time.

JSON lines over pipes (no pickle). The worker is the main thread of its process, so a SIGALRM
interval timer interrupts checks that hang in Python code at 0.8 × the timeout (``"timeout"``, the
worker survives); the parent's hard deadline (:meth:`Worker.call` returns ``None``) ends hangs in C
code, after which :class:`prefopt.online.verifier.IsolatedVerifier` kills the worker. See
:mod:`prefopt.online.verifier`.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import lru_cache
from importlib import import_module

from prefopt.online.answers import Fallback, extract_answer, extract_gold
from prefopt.verification import VerifyResult

_STARTUP_TIMEOUT_S = 120.0
SOFT_FRACTION = 0.8  # in-worker interrupt at 0.8 x timeout; the hard kill comes at timeout


# ------------------------------------------------------------------------------- checks (worker side)
@lru_cache(maxsize=4096)
def _parse_boxed(answer: str) -> tuple:
    from math_verify import parse

    return tuple(parse("\\boxed{" + answer + "}", parsing_timeout=None))


def math_check(completion: str, gold: str, fallback: Fallback = "last_number") -> VerifyResult:
    """Verify one completion against one gold with math-verify, *without* a time limit (worker side)."""
    from math_verify import verify

    answer = extract_answer(completion, fallback)
    if answer is None:
        return VerifyResult(False, "no_answer", None, "no \\boxed{}, '####' or number in the completion")
    gold_expr = _parse_boxed(extract_gold(gold))
    if not gold_expr:
        return VerifyResult(
            False, "parse_error", answer, f"math-verify could not parse the gold {gold[:80]!r}"
        )
    pred_expr = _parse_boxed(answer)
    if not pred_expr:
        return VerifyResult(False, "parse_error", answer, "math-verify could not parse the answer")
    correct = verify(list(gold_expr), list(pred_expr), timeout_seconds=None)
    return VerifyResult(bool(correct), "ok", answer)


def _build_check(config: dict) -> Callable[[str, str], VerifyResult]:
    if config["kind"] == "math":
        math_check("\\boxed{1}", "1")  # warm math-verify's lazy imports before reporting ready
        return lambda completion, gold: math_check(completion, gold, config["fallback"])
    module, _, qualname = config["target"].partition(":")
    fn = import_module(module)
    for part in qualname.split("."):
        fn = getattr(fn, part)
    return lambda completion, gold: VerifyResult(bool(fn(completion, gold)), "ok", None)


class _SoftTimeout(BaseException):
    """Raised by SIGALRM inside a worker; a BaseException so library ``except Exception`` cannot swallow it."""


def _raise_soft_timeout(signum: int, frame: object) -> None:
    raise _SoftTimeout


def _worker_main() -> None:
    """Entry point of a worker process: config in argv[1], requests/results as JSON lines.

    The worker is the main thread of its process, so a SIGALRM interval timer can interrupt checks
    that hang in Python code (most sympy blow-ups) without losing the process; hangs inside C code
    ignore it and are ended by the parent's hard deadline.
    """
    config = json.loads(sys.argv[1])
    check = _build_check(config)
    signal.signal(signal.SIGALRM, _raise_soft_timeout)
    out, sys.stdout = sys.stdout, sys.stderr  # stray prints must not corrupt the protocol
    out.write('{"ready": true}\n')
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        signal.setitimer(signal.ITIMER_REAL, config["soft_timeout"])
        try:
            result = check(request["completion"], request["gold"])
        except _SoftTimeout:
            result = VerifyResult(False, "timeout", None, f"interrupted after {config['soft_timeout']:g} s")
        except Exception as exc:  # noqa: BLE001 — a bad item is recorded as "error", never fatal
            result = VerifyResult(False, "error", None, f"{type(exc).__name__}: {exc}"[:300])
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        out.write(json.dumps(result.to_dict()) + "\n")
        out.flush()


class VerifierStartupError(RuntimeError):
    """A worker could not start (e.g. a registered check cannot be imported): a setup error, raised."""


class Worker:
    """One verification process; ``call`` returns ``None`` when the deadline passes."""

    def __init__(self, config: dict) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        # closed in close(); read back only to explain a worker that failed to start
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from prefopt.online.verify_worker import _worker_main; _worker_main()",
                json.dumps(config),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )
        self._buffer = b""
        self._ready = False

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip()[-1500:]

    def _read_line(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise RuntimeError(f"verifier worker exited with code {self.proc.wait()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def call(self, completion: str, gold: str, timeout: float) -> VerifyResult | None:
        if not self._ready:
            try:
                started = self._read_line(_STARTUP_TIMEOUT_S) is not None
            except RuntimeError as exc:
                raise VerifierStartupError(f"{exc}; its stderr:\n{self._stderr_tail()}") from exc
            if not started:
                raise VerifierStartupError(f"verifier worker did not start within {_STARTUP_TIMEOUT_S:.0f} s")
            self._ready = True
        self.proc.stdin.write((json.dumps({"completion": completion, "gold": gold}) + "\n").encode())
        self.proc.stdin.flush()
        line = self._read_line(timeout)
        return None if line is None else VerifyResult.from_dict(json.loads(line), "verifier worker reply")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self._stderr):
            stream.close()
