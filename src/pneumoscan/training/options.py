"""Options declared once: a dataclass field is the option, its metadata the rest (help, choices, bounds, flag name).

The same field declaration gives

- the checks and conversions of a value (:func:`check`), used for every way a value arrives: YAML files, checkpoint
  configs, Python construction (the dataclass's ``__post_init__`` calls :func:`validate`) and command-line flags;
- the command-line flags (:func:`add_options`), whose values are checked by :func:`check` while argparse parses them,
  so that ``--lr abc`` and ``lr: abc`` in a YAML file stop with the same one-line message;
- building from a mapping (:func:`build`) with unknown keys refused, naming the closest known one.

Conversion rules (the annotation decides):

- ``int``: an integer, or a string that reads as one (``"10"``); ``2.5``, ``"2.5"`` and ``true`` are refused.
- ``float``: a finite number, or a string that reads as one. Accepting strings is deliberate: the command line gives
  strings, and PyYAML reads ``1e-3`` (no dot) as the string ``"1e-3"``. ``true``/``false`` are refused.
- ``bool``: ``true`` or ``false`` only; a string (``"false"``, ``"yes"``) is refused, since it is truthy in Python.
- ``str``: a string; choices (``opt(choices=...)`` or a ``Literal`` annotation) are checked.
- ``X | None``: None, or an ``X``.
- ``tuple[str, ...]``: one string or a list of strings; ``dict[str, str]``: a mapping, values turned into strings.
- a nested dataclass: an instance or a mapping of its options (``augment: {rotation: 5}``).

Messages are one line, ``NAME: what was wrong, got VALUE``, e.g. ``lr: expected a number, got 'abc'`` or
``precision: 'fp8' is not one of auto, fp32, bf16, fp16``.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import math
import numbers
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pneumoscan.errors import ConfigError

_KEY = "pneumoscan"  # the key of a field's metadata that :func:`opt` writes


@dataclass(frozen=True)
class Opt:
    """What a field declares besides its name, type and default (see :func:`opt`)."""

    help: str | None = None
    choices: tuple[str, ...] | None = None
    flag: str | None = None
    metavar: str | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    prefix: str | None = None
    aka: tuple[str, ...] = ()


def opt(help: str | None = None, *, choices: Iterable[str] | None = None, flag: str | None = None,  # noqa: A002
        metavar: str | None = None, ge: float | None = None, gt: float | None = None, le: float | None = None,
        lt: float | None = None, prefix: str | None = None, aka: Iterable[str] = ()) -> dict[str, Opt]:
    """Field metadata: ``field(default=..., metadata=opt(help=..., choices=...))``.

    Args:
        help: the ``--help`` text; the default is appended to it. Without it, the field's entry in the class
            docstring's ``Attributes:`` section is used.
        choices: the allowed values of a string option (a ``Literal`` annotation gives them too).
        flag: the command-line flag when it is not ``--`` + the name with ``-`` for ``_``.
        metavar: the value's name in ``--help``.
        ge, gt, le, lt: bounds of a number (>=, >, <=, <).
        prefix: for a nested dataclass, the flag prefix of its options (``aug`` -> ``--aug-rotation``).
        aka: other names people give the option (``learning_rate``), suggested for an unknown key; not accepted.

    A ``bool`` field is a switch: ``--NAME`` sets it when its default is false, ``--no-NAME`` clears it when its default
    is true. A ``tuple[str, ...]`` field is a repeatable flag; a ``dict[str, str]`` one a repeatable ``KEY=VALUE``.
    """
    return {_KEY: Opt(help=help, choices=tuple(choices) if choices is not None else None, flag=flag,
                      metavar=metavar, ge=ge, gt=gt, le=le, lt=lt, prefix=prefix, aka=tuple(aka))}


@dataclass(frozen=True)
class Option:
    """One field of a config dataclass, resolved: name, type, default and metadata."""

    name: str
    label: str  # the name in messages: "lr", "augment.rotation"
    kind: Any  # the resolved annotation without ``| None``
    optional: bool
    default: Any
    meta: Opt
    doc: str | None

    @property
    def choices(self) -> tuple[str, ...] | None:
        if typing.get_origin(self.kind) is Literal:
            return tuple(str(v) for v in typing.get_args(self.kind))
        return self.meta.choices

    @property
    def nested(self) -> type | None:
        return self.kind if isinstance(self.kind, type) and dataclasses.is_dataclass(self.kind) else None

    def check(self, value: Any) -> Any:
        """``value`` converted to this option's type, or :class:`ConfigError` naming the option, value and rule."""
        return check(self, value)


def options(cls: type, prefix: str = "") -> tuple[Option, ...]:
    """The options of a config dataclass in field order (``prefix``: ``"augment."`` for the nested ones)."""
    return _options(cls, prefix)


@functools.cache
def _options(cls: type, prefix: str) -> tuple[Option, ...]:
    hints = typing.get_type_hints(cls)
    docs = _attribute_docs(cls.__doc__ or "")
    out = []
    for f in dataclasses.fields(cls):
        kind, optional = _strip_none(hints[f.name])
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        out.append(Option(name=f.name, label=prefix + f.name, kind=kind, optional=optional, default=default,
                          meta=f.metadata.get(_KEY, Opt()), doc=docs.get(f.name)))
    return tuple(out)


def _strip_none(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def _attribute_docs(doc: str) -> dict[str, str]:
    """``name: text`` entries of a Google-style ``Attributes:`` section (continuation lines joined)."""
    out: dict[str, str] = {}
    lines = doc.expandtabs().splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "Attributes:":
            indent = len(line) - len(line.lstrip())
            name = None
            for item in lines[i + 1:]:
                if not item.strip() or len(item) - len(item.lstrip()) <= indent:
                    break
                m = re.match(r"\s*(\w+):\s*(.*)", item)
                if m and (name is None or len(item) - len(item.lstrip()) <= indent + 4):
                    name = m.group(1)
                    out[name] = m.group(2).strip()
                elif name is not None:
                    out[name] += " " + item.strip()
            break
    return out


# -- checking values ---------------------------------------------------------------------------------------------


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(option: Option, value: Any, expected: str) -> float | int:
    """A number from a number or a string (which is read as an int if it can be, else as a float)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{option.label}: expected {expected}, got {_shown(value)}") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{option.label}: expected {expected}, got {_shown(value)}")
    return int(value) if isinstance(value, numbers.Integral) else float(value)  # numpy scalars -> Python numbers


def _bounded(option: Option, value: float) -> None:
    m = option.meta
    if ((m.ge is not None and value < m.ge) or (m.gt is not None and value <= m.gt)
            or (m.le is not None and value > m.le) or (m.lt is not None and value >= m.lt)):
        raise ConfigError(f"{option.label}: must be {_range_text(m)}, got {_shown(value)}")


def _range_text(m: Opt) -> str:
    low = f">= {m.ge:g}" if m.ge is not None else f"> {m.gt:g}" if m.gt is not None else None
    high = f"<= {m.le:g}" if m.le is not None else f"< {m.lt:g}" if m.lt is not None else None
    return " and ".join(t for t in (low, high) if t)


def check(option: Option, value: Any) -> Any:
    """``value`` converted to ``option``'s type (rules: this module's docstring), or :class:`ConfigError`."""
    if value is None and option.optional:
        return None
    kind, origin = option.kind, typing.get_origin(option.kind)
    if kind is int:
        number = _number(option, value, "an integer")
        if not isinstance(number, int):
            raise ConfigError(f"{option.label}: expected an integer, got {_shown(number)}")
        _bounded(option, number)
        return number
    if kind is float:
        number = _number(option, value, "a number")
        if not math.isfinite(number):
            raise ConfigError(f"{option.label}: expected a finite number, got {_shown(number)}")
        _bounded(option, number)
        return float(number)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{option.label}: expected true or false, got {_shown(value)}")
        return value
    if kind is str or origin is Literal:
        if not isinstance(value, str):
            raise ConfigError(f"{option.label}: expected a string, got {_shown(value)}")
        choices = option.choices
        if choices is not None and value not in choices:
            raise ConfigError(f"{option.label}: {_shown(value)} is not one of {', '.join(choices)}")
        return value
    if origin is tuple:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
            raise ConfigError(f"{option.label}: expected a string or a list of strings, got {_shown(value)}")
        return tuple(items)
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{option.label}: expected a mapping of name: value, got {_shown(value)}")
        return {k: str(v) for k, v in value.items()}
    nested = option.nested
    if nested is not None:
        if isinstance(value, nested):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{option.label}: expected a mapping of option: value, got {_shown(value)}")
        return build(nested, value, prefix=option.label + ".")
    raise TypeError(f"{option.label}: no rule for the annotation {kind!r}")  # a field type added without a rule


def validate(instance: Any, prefix: str = "") -> None:
    """Check (and convert, e.g. a list to a tuple) every field of a frozen config dataclass; for ``__post_init__``.

    ``prefix`` names a nested config in messages (``"augment."``).
    """
    for option in options(type(instance), prefix):
        value = getattr(instance, option.name)
        checked = option.check(value)
        if checked is not value:
            object.__setattr__(instance, option.name, checked)


def build(cls: type, data: Mapping[str, Any], *, prefix: str = "", what: str = "option") -> Any:
    """``cls(**data)`` after refusing unknown keys (naming the closest known one) and checking every value."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or what}: expected a mapping of option: value, "
                          f"got {type(data).__name__}")
    known = {o.name: o for o in options(cls, prefix)}
    unknown = [str(k) for k in data if k not in known]
    if unknown:
        raise ConfigError(_unknown_message(unknown, known, prefix, what))
    return cls(**{k: known[k].check(v) for k, v in data.items()})


def _unknown_message(unknown: list[str], known: dict[str, Option], prefix: str, what: str) -> str:
    aka = {alias: name for name, o in known.items() for alias in o.meta.aka}
    parts = []
    for key in unknown:
        close = [aka[key]] if key in aka else difflib.get_close_matches(key, list(known), n=1)
        parts.append(f"'{prefix}{key}'" + (f" (did you mean '{prefix}{close[0]}'?)" if close else ""))
    words = f"unknown {what}{'s' if len(unknown) > 1 else ''}"
    if all("did you mean" in p for p in parts):
        return f"{words} {', '.join(parts)}"
    return f"{words} {', '.join(parts)}; known: {', '.join(prefix + k for k in known)}"


# -- command-line flags ------------------------------------------------------------------------------------------


def flag_of(option: Option) -> str:
    """The command-line flag of a (non-nested) option."""
    if option.meta.flag:
        return option.meta.flag
    dashed = option.name.replace("_", "-")
    return f"--no-{dashed}" if option.kind is bool and option.default is True else f"--{dashed}"


def dest_of(option: Option, prefix: str = "") -> str:
    """The attribute of the parsed namespace: the field name (``aug_rotation`` for a nested option)."""
    return f"{prefix}_{option.name}" if prefix else option.name


class _Checked(argparse.Action):
    """Stores the value after :func:`check` (a :class:`ConfigError` leaves argparse as it is, one line)."""

    def __init__(self, option_strings: Sequence[str], dest: str, option: Option, append: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.option, self.append = option, append

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if self.append:
            items = list(getattr(namespace, self.dest, None) or [])
            check_item = typing.get_origin(self.option.kind) is not dict  # KEY=VALUE: parsed with the config
            items.append(self.option.check(values)[0] if check_item else values)
            setattr(namespace, self.dest, items)
        else:
            setattr(namespace, self.dest, self.option.check(values))


def _help(option: Option, default: Any) -> str | None:
    text = option.meta.help or (option.doc or "").rstrip(".")
    if option.kind is not bool and default is not None and default not in ((), {}):
        text = f"{text} (default {default})" if text else f"default {default}"
    return text.replace("%", "%%") if text else None


def add_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, *,
                include: Iterable[str] | None = None, defaults: Mapping[str, Any] | None = None,
                required: Iterable[str] = ()) -> list[str]:
    """Add one flag per option of ``cls`` (nested dataclasses: ``--PREFIX-NAME``), all with default None.

    Args:
        include: the options to add (``"augment.rotation"`` for a nested one; ``"augment"``: all of it); default all.
        defaults: the defaults to show in ``--help`` where the caller applies other ones than the dataclass.
        required: options that must be given.

    A value given is checked as it is parsed (:func:`check`). Returns the flags added. :func:`given` collects what
    was given.
    """
    wanted = set(include) if include is not None else None
    shown = dict(defaults or {})
    added: list[str] = []
    for option in options(cls):
        nested = option.nested
        if nested is not None:
            prefix = option.meta.prefix or option.name
            for sub in options(nested, option.name + "."):
                if wanted is None or option.name in wanted or sub.label in wanted:
                    flag = f"--{prefix}-{sub.name.replace('_', '-')}"
                    parser.add_argument(flag, dest=dest_of(sub, prefix), action=_Checked, option=sub,
                                        metavar=sub.meta.metavar,
                                        help=_help(sub, shown.get(sub.label, sub.default)))
                    added.append(flag)
            continue
        if wanted is not None and option.name not in wanted:
            continue
        flag = flag_of(option)
        kwargs: dict[str, Any] = {"dest": option.name, "default": None,
                                  "help": _help(option, shown.get(option.name, option.default))}
        if option.name in required:
            kwargs["required"] = True
        if option.kind is bool:
            kwargs.update(action="store_const", const=not option.default)
        else:
            choices = option.choices
            metavar = option.meta.metavar or ("{" + ",".join(choices) + "}" if choices else None)
            kwargs.update(action=_Checked, option=option, metavar=metavar,
                          append=typing.get_origin(option.kind) in (tuple, dict))
        parser.add_argument(flag, **kwargs)
        added.append(flag)
    return added


def given(args: argparse.Namespace, cls: type,
          parse_pairs: Callable[[list[str]], dict[str, str]] | None = None) -> dict[str, Any]:
    """The options of ``cls`` given on the command line (checked values; nested ones as a mapping under their name).

    ``parse_pairs`` turns the ``KEY=VALUE`` items of a ``dict[str, str]`` option into a mapping.
    """
    out: dict[str, Any] = {}
    for option in options(cls):
        nested = option.nested
        if nested is not None:
            prefix = option.meta.prefix or option.name
            sub = {s.name: getattr(args, dest_of(s, prefix)) for s in options(nested, option.name + ".")
                   if getattr(args, dest_of(s, prefix), None) is not None}
            if sub:
                out[option.name] = sub
            continue
        value = getattr(args, option.name, None)
        if value is None:
            continue
        if typing.get_origin(option.kind) is dict:
            if parse_pairs is None:
                raise TypeError(f"{option.label}: KEY=VALUE items need parse_pairs")
            value = parse_pairs(value)
        out[option.name] = value
    return out
