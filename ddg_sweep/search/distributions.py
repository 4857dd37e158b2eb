"""Ranges a search draws hyperparameters from: uniform, loguniform, choice, randint.

Ray Tune's names and meanings (`randint(lower, upper)` excludes `upper`, as
`tune.randint` does), as plain data, so that spaces, `plan` and the report never
import Ray. A `.py` space declares `SEARCH = {"lmd": uniform(0, 1), ...}` (Ray's own
`tune.uniform(...)` objects are accepted too); a `.json` space
`"search": {"lmd": {"uniform": [0, 1]}, "negative": {"choice": ["domain", "null"]}}`.
Whether a range suits its hyperparameter is the registry's to say
(`ddg_sweep.search.searches.check_ranges`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

from ddg_sweep.errors import UserError

KINDS = ("uniform", "loguniform", "choice", "randint")


def _number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Distribution:
    kind: str  # one of KINDS
    args: tuple  # (lower, upper), or the options of a choice

    def describe(self) -> str:
        if self.kind == "choice":
            return f"choice([{', '.join(map(repr, self.args))}])"
        return f"{self.kind}({self.args[0]!r}, {self.args[1]!r})"

    def to_json(self) -> dict:
        return {self.kind: list(self.args)}

    def corners(self) -> list:
        """The values that bound what the range can produce: both ends, or every option."""
        if self.kind == "choice":
            return list(self.args)
        if self.kind == "randint":
            return [self.args[0], self.args[1] - 1]
        return [float(self.args[0]), float(self.args[1])]

    def sample(self, rng):
        """One draw with a numpy RandomState (the `random` searcher)."""
        lower, upper = (self.args + (None,))[:2]
        if self.kind == "uniform":
            return float(rng.uniform(lower, upper))
        if self.kind == "loguniform":
            return float(math.exp(rng.uniform(math.log(lower), math.log(upper))))
        if self.kind == "randint":
            return int(rng.randint(lower, upper))
        return self.args[int(rng.randint(len(self.args)))]

    def normalise(self, value):
        """A searcher's value as plain JSON: numpy scalars unwrapped, a choice's own option."""
        value = value.item() if hasattr(value, "item") else value
        if self.kind == "choice":
            equal = [o for o in self.args if o == value]
            same_type = [o for o in equal if type(o) is type(value)]
            if not equal:
                raise ValueError(f"{value!r} is not an option of {self.describe()}")
            return (same_type or equal)[0]
        if self.kind == "randint":
            return int(round(value))
        return float(value)


def _bounds(kind: str, lower, upper) -> Distribution:
    what = f"{kind}({lower!r}, {upper!r})"
    if not (_number(lower) and _number(upper)):
        raise UserError(f"{what}: both bounds must be finite numbers")
    if kind == "randint" and not (float(lower).is_integer() and float(upper).is_integer()):
        raise UserError(f"{what}: randint's bounds must be integers (the upper one excluded, as tune.randint)")
    if not lower < upper:
        raise UserError(f"{what}: the lower bound must be below the upper bound"
                        + (" (randint excludes the upper one)" if kind == "randint" else ""))
    if kind == "loguniform" and lower <= 0:
        raise UserError(f"{what}: loguniform needs a lower bound > 0")
    if kind == "randint":
        return Distribution(kind, (int(lower), int(upper)))
    return Distribution(kind, (lower, upper))


def uniform(lower, upper) -> Distribution:
    return _bounds("uniform", lower, upper)


def loguniform(lower, upper) -> Distribution:
    return _bounds("loguniform", lower, upper)


def randint(lower, upper) -> Distribution:
    """Integers lower..upper-1 (upper excluded, as tune.randint)."""
    return _bounds("randint", lower, upper)


def choice(options) -> Distribution:
    if isinstance(options, (str, bytes)) or not hasattr(options, "__iter__"):
        raise UserError(f"choice({options!r}): give a list of options")
    options = tuple(o.item() if hasattr(o, "item") else o for o in options)
    if not options:
        raise UserError("choice([]): give at least one option")
    bad = [o for o in options if not isinstance(o, (str, bool, int, float)) or isinstance(o, float)
           and not math.isfinite(o)]
    if bad:
        raise UserError(f"choice({list(options)!r}): options must be numbers or strings, got {bad[0]!r}")
    if len(set(map(repr, options))) != len(options):
        raise UserError(f"choice({list(options)!r}): an option is listed twice")
    return Distribution("choice", options)


CONSTRUCTORS = {"uniform": uniform, "loguniform": loguniform, "randint": randint, "choice": choice}


def from_json(entry) -> Distribution:
    """`{"uniform": [0, 1]}`, `{"loguniform": [1e-5, 1e-3]}`, `{"randint": [1, 5]}`, `{"choice": [...]}`."""
    if not isinstance(entry, dict) or len(entry) != 1 or next(iter(entry)) not in KINDS:
        raise UserError(f"{entry!r} is not a range: write one of {{\"uniform\": [LOW, HIGH]}}, "
                        "{\"loguniform\": [LOW, HIGH]}, {\"randint\": [LOW, HIGH]}, {\"choice\": [A, B, ...]}")
    (kind, args), = entry.items()
    if kind == "choice":
        return choice(args)
    if not isinstance(args, list) or len(args) != 2:
        raise UserError(f"{entry!r}: {kind} takes [LOW, HIGH]")
    return CONSTRUCTORS[kind](*args)


def _from_ray(domain) -> Distribution:
    """Ray Tune's own domain objects (`tune.uniform(...)` in a user's .py space), read without Ray."""
    kind, sampler = type(domain).__name__, type(domain.get_sampler()).__name__.lstrip("_")
    if kind == "Categorical":
        return choice(domain.categories)
    mapping = {("Float", "Uniform"): uniform, ("Float", "LogUniform"): loguniform,
               ("Integer", "Uniform"): randint}
    if (kind, sampler) not in mapping:
        raise UserError(f"Ray's {kind} range with a {sampler} sampler is not supported here; use uniform, "
                        "loguniform, randint or choice")
    return mapping[kind, sampler](domain.lower, domain.upper)


def as_distribution(value) -> Distribution:
    """A Distribution, a JSON range, or a Ray Tune domain, as a Distribution."""
    if isinstance(value, Distribution):
        return value
    if isinstance(value, dict):
        return from_json(value)
    if type(value).__module__.startswith("ray.tune") and hasattr(value, "get_sampler"):
        return _from_ray(value)
    raise UserError(f"{value!r} is not a range: in a .json space write {{\"uniform\": [LOW, HIGH]}} (or loguniform, "
                    "randint, choice: [A, B, ...]); in a .py space ddg_sweep.search's uniform(LOW, HIGH), loguniform, "
                    "randint or choice")


def space_to_json(space: dict[str, Distribution]) -> dict:
    return {name: space[name].to_json() for name in sorted(space)}
