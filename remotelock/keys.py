"""From a call's arguments to a lock key, and which keywords to inject into the call.

Everything that does not depend on the call is worked out once, at decoration time:
the signature, whether the function is reached through ``self``/``cls``, which
template fields name which parameters, and which of ``has_lock``, ``fencing_token``
and ``lease`` the function accepts. A bad key fails there, not on the first call.
"""

from __future__ import annotations

import inspect
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

INJECTABLE: Final = ("has_lock", "fencing_token", "lease")
_FIELD_HEAD: Final = re.compile(r"[^.\[]*")
_KEYWORD_KINDS: Final = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)

KeySpec = str | Callable[..., str]


def unwrap_descriptor(fn: Any) -> tuple[Any, str]:
    """``(function, kind)``: the function under a classmethod/staticmethod, and which."""
    if isinstance(fn, classmethod):
        return fn.__func__, "classmethod"
    if isinstance(fn, staticmethod):
        return fn.__func__, "staticmethod"
    return fn, "function"


@dataclass(frozen=True)
class CallPlan:
    """What the decorator needs to know about a function, worked out once."""

    name: str
    signature: inspect.Signature
    kind: str
    """``"function"`` (plain or instance method), ``"classmethod"`` or ``"staticmethod"``."""
    injects: tuple[str, ...]
    """The injectable keywords this function accepts."""
    var_keyword: str | None
    """Name of the ``**kwargs`` parameter, if any."""

    @classmethod
    def of(cls, fn: Any) -> CallPlan:
        """Inspect ``fn`` (a function, method, classmethod or staticmethod)."""
        inner, kind = unwrap_descriptor(fn)
        name = getattr(inner, "__qualname__", None) or repr(inner)
        try:
            signature = inspect.signature(inner)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"cannot read the signature of {name}: {exc}") from exc
        params = signature.parameters
        var_keyword = next(
            (p.name for p in params.values() if p.kind is inspect.Parameter.VAR_KEYWORD), None
        )
        injects = []
        for keyword in INJECTABLE:
            param = params.get(keyword)
            if param is not None and param.kind not in _KEYWORD_KINDS:
                raise TypeError(
                    f"{name}: parameter {keyword!r} is positional-only, so remote_locked "
                    "cannot pass it; make it a keyword parameter"
                )
            if param is not None or var_keyword is not None:
                injects.append(keyword)
        return cls(name, signature, kind, tuple(injects), var_keyword)

    def full_args(self, instance: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """The positional arguments as the function itself sees them (``self``/``cls`` first)."""
        if instance is not None and self.kind != "staticmethod":
            return (instance, *args)
        return args

    def arguments(self, full_args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Every parameter's value by name (defaults applied, ``**kwargs`` flattened in)."""
        bound = self.signature.bind_partial(*full_args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        if self.var_keyword is not None:
            values.update(values.pop(self.var_keyword, {}))
        return values

    def inject(
        self, kwargs: dict[str, Any], values: tuple[bool, int | None, Any]
    ) -> dict[str, Any]:
        """``kwargs`` plus the injected keywords this function accepts."""
        if not self.injects:
            return kwargs
        extra = dict(zip(INJECTABLE, values, strict=True))
        return {**kwargs, **{name: extra[name] for name in self.injects}}


class KeyMaker:
    """Turns a ``key=`` argument (string, template or callable) into a concrete key."""

    def __init__(self, key: object, plan: CallPlan) -> None:
        self.key = key
        self.plan = plan
        self.constant: str | None = None
        self.fields: tuple[str, ...] = ()
        if isinstance(key, str):
            if not key:
                raise ValueError(f"key must not be empty (decorating {plan.name})")
            self.fields = _template_fields(key, plan)
            if not self.fields:
                self.constant = key.replace("{{", "{").replace("}}", "}")
        elif not callable(key):
            raise TypeError(
                f"key must be a string, a str.format template or a callable, got {key!r} "
                f"({type(key).__name__}) decorating {plan.name}"
            )

    def render(self, full_args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        """The key for one call."""
        if self.constant is not None:
            return self.constant
        if isinstance(self.key, str):
            return self._format(self.key, full_args, kwargs)
        assert callable(self.key)
        value = self.key(*full_args, **kwargs)
        if not isinstance(value, str):
            raise TypeError(
                f"key callable {getattr(self.key, '__qualname__', self.key)!r} returned "
                f"{value!r} ({type(value).__name__}) for a call of {self.plan.name}; "
                "it must return a non-empty str"
            )
        if not value:
            raise ValueError(
                f"key callable {getattr(self.key, '__qualname__', self.key)!r} returned an "
                f"empty key for a call of {self.plan.name}"
            )
        return value

    def _format(self, template: str, full_args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        try:
            values = self.plan.arguments(full_args, kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.plan.name}: {exc}") from None
        for field in self.fields:
            if field not in values:
                raise ValueError(
                    f"key template {template!r} names argument {field!r}, which this call "
                    f"of {self.plan.name} did not pass"
                )
        try:
            key = template.format_map(values)
        except (LookupError, AttributeError, TypeError, ValueError) as exc:
            field = _failing_field(template, values)
            raise ValueError(
                f"key template {template!r} failed on argument {field!r} "
                f"({type(exc).__name__}: {exc}) in a call of {self.plan.name}"
            ) from exc
        if not key:
            raise ValueError(
                f"key template {template!r} gave an empty key in a call of {self.plan.name}"
            )
        return key


def _template_fields(template: str, plan: CallPlan) -> tuple[str, ...]:
    """The argument names a template uses; each must be a parameter of the function."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"key template {template!r} is malformed: {exc}") from None
    names: list[str] = []
    params = plan.signature.parameters
    for _literal, field, _spec, _conversion in parsed:
        if field is None:
            continue
        head = _FIELD_HEAD.match(field)
        name = head.group(0) if head else ""
        if not name or name.isdigit():
            raise ValueError(
                f"key template {template!r} uses a positional field {{{field}}}; "
                f"name the argument instead, e.g. {{{next(iter(params), 'arg')}}}"
            )
        if name not in params and plan.var_keyword is None:
            raise ValueError(
                f"key template {template!r} names argument {name!r}, but {plan.name} has no "
                f"such parameter (it takes: {', '.join(params) or 'no arguments'})"
            )
        if name not in names:
            names.append(name)
    return tuple(names)


def _failing_field(template: str, values: Mapping[str, Any]) -> str:
    for _literal, field, _spec, _conversion in string.Formatter().parse(template):
        if field is None:
            continue
        try:
            ("{" + field + "}").format_map(values)
        except Exception:
            head = _FIELD_HEAD.match(field)
            return head.group(0) if head else field
    return "?"


__all__ = ["INJECTABLE", "CallPlan", "KeyMaker", "KeySpec", "unwrap_descriptor"]
