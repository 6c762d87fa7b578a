"""Command-line options derived from the typed configs: one option per field, never copied.

`@field_options(training=TrainConfig, ...)` adds an option for every field of each model to a
Typer command: its name from the field (`lr_schedule` -> `--lr-schedule`), its type, choices
and bounds from the annotation, its help from the field's description with the default read
from the model. An option left out is not passed on, so a preset's value stands; the command
receives, per group, the model's `Overrides` holding exactly the options given. A field that
may be None (`--max-minutes`) takes `none` on the command line to set it.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from typing import Annotated, Any, Literal, Optional

import typer
from annotated_types import Ge, Le
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from flows.datasets import resolve_datasets
from srcnn.config import overrides_of
from srcnn.data.degradation import SUITE

NONE_WORDS = ("none", "null", "off")
Scale = Annotated[int, typer.Option("--scale", "-s", help="Upscaling factor.", min=2, max=8)]
# The rows a model is scored under where it is recorded (train, export, gate); checked by
# `suite_names`.
SuiteRows = Annotated[list[str] | None, typer.Option(
    "--degradation", help="Score with the LR images made by these degradations of the suite "
                          "(repeat; default: all of them).")]


class _Unset:
    """What an option that may be None returns for `none` (Python None means: not given)."""


_NONE = _Unset()


def _parts(annotation) -> tuple[Any, bool]:
    """(the annotation without None, whether None is allowed)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), len(args) < len(  # noqa: UP007, UP045  (built at run time)
            typing.get_args(annotation))
    return annotation, False


def _default_text(default: Any) -> str:
    if isinstance(default, tuple | list):
        default = " ".join(map(str, default)) or "none"
    return "none" if default is None else str(default)


def _option(name: str, field: FieldInfo, default: Any, default_note: str) -> tuple[Any, Any]:
    """(annotation, typer.Option) for one field."""
    kind, nullable = _parts(field.annotation)
    help_text = f"{field.description or name} (default: {_default_text(default)}{default_note})"
    info: dict[str, Any] = {"help": help_text, "show_default": False}
    for bound in field.metadata:  # bounds Click can show and check itself; the rest: pydantic
        if isinstance(bound, Ge):
            info["min"] = bound.ge
        elif isinstance(bound, Le):
            info["max"] = bound.le
    origin = typing.get_origin(kind)
    if origin in (tuple, list):  # a repeated option: --augment-scales 1.0 --augment-scales 0.9
        (item, *_) = typing.get_args(kind)
        return Optional[list[item]], typer.Option(**info)  # noqa: UP007, UP045  (built at run time)
    if origin is Literal:
        choices = typing.get_args(kind) + (("none",) if nullable else ())
        return Optional[Literal[choices]], typer.Option(**info)  # noqa: UP007, UP045  (built at run time)
    if nullable and kind in (int, float, str):
        info.pop("min", None), info.pop("max", None)

        def parse(text: str, kind=kind):
            return _NONE if text.lower() in NONE_WORDS else kind(text)

        return Optional[kind], typer.Option(parser=parse, metavar=kind.__name__.upper(), **info)  # noqa: UP007, UP045  (built at run time)
    return Optional[kind], typer.Option(**info)  # noqa: UP007, UP045  (built at run time)


def field_options(default_note: str = "", defaults: dict[str, BaseModel] | None = None,
                  **groups: type[BaseModel]):
    """Decorator: one option per field of each model in `groups` (the name of the parameter
    that receives that model's Overrides). The defaults shown are the models' own, or those
    of the instances in `defaults` (per group); `default_note` follows each."""

    def decorate(command):
        signature = inspect.signature(command)
        hints = typing.get_type_hints(command, include_extras=True)  # strings -> objects
        own = [p.replace(annotation=hints.get(name, p.annotation))
               for name, p in signature.parameters.items() if name not in groups]
        taken = {p.name for p in own}
        added: list[inspect.Parameter] = []
        fields: dict[str, tuple[str, str]] = {}  # parameter -> (group, field)
        nullable: set[str] = set()  # parameters for which `none` means None
        for group, config in groups.items():
            for name, field in config.model_fields.items():
                if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                    continue  # a nested model: its fields are a group of their own
                param = name if name not in taken else f"{group}_{name}"
                taken.add(param)
                base = (defaults or {}).get(group)
                default = getattr(base, name) if base is not None else field.get_default(
                    call_default_factory=True)
                annotation, option = _option(name, field, default, default_note)
                added.append(inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY,
                                               default=None,
                                               annotation=Annotated[annotation, option]))
                fields[param] = (group, name)
                if _parts(field.annotation)[1]:
                    nullable.add(param)

        @functools.wraps(command)
        def wrapper(**kwargs):
            given: dict[str, dict] = {group: {} for group in groups}
            for param, (group, name) in fields.items():
                value = kwargs.pop(param)
                if value is not None:
                    unset = value is _NONE or (param in nullable and value == "none")
                    given[group][name] = None if unset else value
            built = {g: validated(overrides_of(groups[g]), **v) for g, v in given.items()}
            return command(**kwargs, **built)

        wrapper.__signature__ = signature.replace(parameters=own + added,
                                                  return_annotation=None)
        wrapper.__annotations__ = {p.name: p.annotation for p in own + added}
        del wrapper.__wrapped__  # Typer reads the signature above, not the command's
        return wrapper

    return decorate


def validated(build, *args, **kwargs):
    """`build(...)` (a model or a function that validates settings), its pydantic errors as
    one Click usage error naming each field: exit 2, before any work."""
    try:
        return build(*args, **kwargs)
    except ValidationError as exc:
        raise typer.BadParameter(validation_message(exc)) from exc


def validation_message(exc: ValidationError) -> str:
    """Pydantic's errors as one line naming each field: `lr: Input should be greater than 0`."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                     for e in exc.errors())


def suite_names(names: list[str] | None) -> None:
    """A usage error (exit 2) naming a degradation that is not in the suite."""
    for name in names or []:
        if name not in SUITE:
            raise typer.BadParameter(f"{name!r}: choose one of {', '.join(SUITE)}",
                                     param_hint="--degradation")


def benchmark_folders(names: list[str] | None, option: str) -> list[str] | None:
    """Benchmark folders as given or by bare name (Set5: under shared/datasets), or a usage error
    naming the one that is not there: exit 2, before any work."""
    try:
        return resolve_datasets(names)
    except FileNotFoundError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from exc
