"""Loss hyperparameters checked from their annotations, when a loss is bound, without torch.

A registered loss declares each keyword-only hyperparameter's type and range in its signature::

    def dpo(batch: PairLogps, *, beta: Positive = 0.1, label_smoothing: FlipProbability = 0.0,
            f_divergence: Divergence = "reverse_kl", ...) -> LossOutput:

and :func:`check_hparams` (called by :func:`prefopt.losses.get_loss`) is the one place that checks
the values: the type (``float`` takes ints, never bools; ``bool``; ``int``; ``str``), the choices of a
``Literal``, and the bounds of ``typing.Annotated[float, annotated_types.Gt(0)]``-style metadata
(``Gt``, ``Ge``, ``Lt``, ``Le``, ``Interval``; ``annotated_types.doc("...")`` adds a reason to the
message). Annotations it does not understand (``dict``, ``list[...]``, unions) are left to the
loss's ``check`` callable (:func:`prefopt.losses.register_loss`). A problem raises
:class:`HyperparameterError` naming the loss and the key, e.g.
``loss 'dpo': beta must be > 0, got 0.0``, which recipe validation reports as ``loss.beta: ...``.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal, get_args, get_origin

import annotated_types as at

Positive = Annotated[float, at.Gt(0)]
NonNegative = Annotated[float, at.Ge(0)]
UnitInterval = Annotated[float, at.Interval(ge=0, le=1)]
FlipProbability = Annotated[
    float, at.Interval(ge=0, lt=0.5), at.doc("the assumed probability that a preference label is flipped")
]


class HyperparameterError(ValueError):
    """A loss hyperparameter with a bad value; ``key`` is its path under the loss (``beta``, ``terms[1].beta``)."""

    def __init__(self, loss: str, key: str, problem: str) -> None:
        self.loss, self.key, self.problem = loss, key, problem
        super().__init__(f"loss {loss!r}: {key} {problem}")

    def nested(self, owner: str, key: str) -> HyperparameterError:
        """The same problem seen from ``owner``'s hyperparameter ``key`` (a ``mix`` term, ``wpo``'s base)."""
        return HyperparameterError(owner, f"{key}.{self.key}", self.problem)

    @property
    def name(self) -> str:
        """The hyperparameter's own name, the last part of :attr:`key`."""
        return self.key.rpartition(".")[2]


@dataclass(frozen=True)
class _Constraint:
    """What one hyperparameter accepts: a type, the choices of a ``Literal``, bounds and a reason."""

    kind: type | None = None
    choices: tuple[Any, ...] | None = None
    lower: tuple[float, bool] | None = None  # (bound, inclusive)
    upper: tuple[float, bool] | None = None
    reason: str | None = None

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not accepted (``"must be > 0, got 0.0"``), or ``None`` when it is."""
        if self.choices is not None:
            return None if _in_choices(value, self.choices) else f"must be {_choices(self.choices)}, got {value!r}"
        if self.kind is float or self.kind is int:
            allowed = (int, float) if self.kind is float else (int,)
            if isinstance(value, bool) or not isinstance(value, allowed):
                return f"must be {'a number' if self.kind is float else 'an integer'}, got {value!r}"
            low_ok = self.lower is None or (value >= self.lower[0] if self.lower[1] else value > self.lower[0])
            high_ok = self.upper is None or (value <= self.upper[0] if self.upper[1] else value < self.upper[0])
            if not (low_ok and high_ok):  # NaN fails every bound
                reason = f" ({self.reason})" if self.reason else ""
                return f"must be {self._range()}{reason}, got {value}"
            return None
        wrong_bool = self.kind is not bool and isinstance(value, bool)  # bool is an int subclass
        if self.kind is not None and (not isinstance(value, self.kind) or wrong_bool):
            return f"must be {'true or false' if self.kind is bool else f'a {self.kind.__name__}'}, got {value!r}"
        return None

    def _range(self) -> str:
        if self.lower and self.upper:
            return (f"in {'[' if self.lower[1] else '('}{_number(self.lower[0])}, "
                    f"{_number(self.upper[0])}{']' if self.upper[1] else ')'}")
        bound, inclusive, sign = (*self.lower, ">") if self.lower else (*self.upper, "<")  # type: ignore[misc]
        return f"{sign}{'=' if inclusive else ''} {_number(bound)}"


def _in_choices(value: Any, choices: tuple[Any, ...]) -> bool:
    return any(value == choice and type(value) is type(choice) for choice in choices)


def _choices(choices: tuple[Any, ...]) -> str:
    if len(choices) == 2:
        return f"{choices[0]!r} or {choices[1]!r}"
    return f"one of {', '.join(str(c) for c in choices)}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _constraint(annotation: Any) -> _Constraint:
    """Read a parameter annotation (already evaluated) into a :class:`_Constraint`."""
    metadata: list[Any] = []
    if get_origin(annotation) is Annotated:
        annotation, *metadata = get_args(annotation)
    if get_origin(annotation) is Literal:
        return _Constraint(choices=get_args(annotation))
    lower = upper = None
    reason = None
    for item in metadata:
        for part in item if isinstance(item, at.GroupedMetadata) else (item,):
            if isinstance(part, (at.Gt, at.Ge)):
                lower = (part.gt, False) if isinstance(part, at.Gt) else (part.ge, True)
            elif isinstance(part, (at.Lt, at.Le)):
                upper = (part.lt, False) if isinstance(part, at.Lt) else (part.le, True)
            elif isinstance(part, at.DocInfo):
                reason = part.documentation
    kind = annotation if annotation in (float, int, bool, str) else None
    return _Constraint(kind, None, lower, upper, reason)


@functools.lru_cache(maxsize=None)
def constraints(fn: Callable[..., Any]) -> dict[str, _Constraint]:
    """The constraint of each keyword-only parameter of ``fn`` (string annotations evaluated in its module)."""
    result = {}
    for name, param in inspect.signature(fn).parameters.items():
        if param.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        annotation = param.annotation
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, fn.__globals__)  # what typing.get_type_hints does, per parameter
            except Exception:  # a name only imported under TYPE_CHECKING: leave the value unchecked
                annotation = inspect.Parameter.empty
        result[name] = _constraint(annotation)
    return result


def check_hparams(loss: str, fn: Callable[..., Any], hparams: dict[str, Any]) -> None:
    """Raise :class:`HyperparameterError` for the first value in ``hparams`` that ``fn``'s annotations reject."""
    rules = constraints(fn)
    for key, value in hparams.items():
        problem = rules[key].problem(value) if key in rules else None
        if problem:
            raise HyperparameterError(loss, key, problem)
