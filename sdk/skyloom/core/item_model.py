# mypy: disable-error-code="no-untyped-call"
"""A pynamodb model that builds, writes and reads its items in one pass over a plan made once.

pynamodb walks every attribute of the class for every item it builds, writes or reads, through
the attributes' descriptors (each access checks whether the instance is a map attribute): for the
task model's forty-odd attributes that was a tenth of the submit function's CPU and a twentieth of
an agent's. :class:`ItemModel` keeps, per class, the attributes' names, types, defaults and
(de)serializers once, and touches only the attributes an item has. What it produces is pynamodb's
own result, held to it by ``tests/unit/test_item_model.py``; a class this plan does not cover (map
attributes, a discriminator, an attribute stored under another name) keeps pynamodb's walk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pynamodb.attributes import (
    Attribute,
    AttributeContainer,
    DiscriminatorAttribute,
    ListAttribute,
    MapAttribute,
)
from pynamodb.constants import NULL
from pynamodb.exceptions import AttributeNullError
from pynamodb.models import Model

M = TypeVar("M", bound="ItemModel")


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    attr_type: str
    attribute: Attribute[Any]
    serialize: Callable[..., Any]
    deserialize: Callable[[Any], Any]
    null: bool
    #: List attributes take ``null_check`` and say which element failed it.
    nested: bool


@dataclass(frozen=True, slots=True)
class _Plan:
    fields: tuple[_Field, ...]
    by_name: dict[str, _Field]
    #: (name, default or factory, is a factory) of the attributes with a default, for a new item
    #: (``default_for_new`` first) and for a read one.
    new_defaults: tuple[tuple[str, Any, bool], ...]
    read_defaults: tuple[tuple[str, Any, bool], ...]


def _defaults(attributes: dict[str, Attribute[Any]], *, new: bool) -> tuple[tuple[str, Any, bool], ...]:
    found = []
    for name, attr in attributes.items():
        default = attr.default_for_new if new and attr.default_for_new is not None else attr.default
        if default is not None:
            found.append((name, default, callable(default)))
    return tuple(found)


def _plan(cls: type[AttributeContainer]) -> _Plan | None:
    """The class's plan; None when pynamodb's walk does something the plan would not."""
    attributes = cls.get_attributes()
    if cls._dynamo_to_python_attrs or any(  # type: ignore[attr-defined]
        isinstance(a, (MapAttribute, DiscriminatorAttribute)) for a in attributes.values()
    ):
        return None
    fields = tuple(
        _Field(name, a.attr_type, a, a.serialize, a.deserialize, bool(a.null), isinstance(a, ListAttribute))
        for name, a in attributes.items()
    )
    return _Plan(fields, {f.name: f for f in fields}, _defaults(attributes, new=True),
                 _defaults(attributes, new=False))


def _set_defaults(values: dict[str, Any], defaults: tuple[tuple[str, Any, bool], ...]) -> None:
    for name, default, factory in defaults:
        value = default() if factory else default
        if value is not None:
            values[name] = value


class ItemModel(Model):
    """A :class:`pynamodb.models.Model` whose item building, serializing and reading follow a plan."""

    _item_plan: _Plan | None = None
    _item_plan_of: type | None = None

    @classmethod
    def _planned(cls) -> _Plan | None:
        if cls._item_plan_of is not cls:  # each class its own plan (a subclass has more attributes)
            cls._item_plan = _plan(cls)
            cls._item_plan_of = cls
        return cls._item_plan

    def _set_defaults(self, _user_instantiated: bool = True) -> None:
        plan = self._planned()
        if plan is None:
            super()._set_defaults(_user_instantiated=_user_instantiated)
        else:
            _set_defaults(self.attribute_values, plan.new_defaults if _user_instantiated else plan.read_defaults)

    def _set_attributes(self, **attributes: Any) -> None:
        plan = self._planned()
        if plan is None:
            super()._set_attributes(**attributes)
            return
        for name in attributes:
            if name not in plan.by_name:
                raise ValueError(f"Attribute {name} specified does not exist")
        self.attribute_values.update(attributes)

    def _container_serialize(self, null_check: bool = True) -> dict[str, dict[str, Any]]:
        plan = self._planned()
        if plan is None:
            return super()._container_serialize(null_check=null_check)
        values = self.attribute_values
        out: dict[str, dict[str, Any]] = {}
        for f in plan.fields:
            value = values.get(f.name)
            if value is None:
                if null_check and not f.null:
                    raise AttributeNullError(f.name)
                continue
            if f.nested:
                try:
                    serialized = f.serialize(value, null_check=null_check)
                except AttributeNullError as e:
                    e.prepend_path(f.name)
                    raise
            else:
                serialized = f.serialize(value)
            if serialized is None:
                if null_check and not f.null:
                    raise AttributeNullError(f.name)
                continue
            out[f.name] = {f.attr_type: serialized}
        return out

    def _container_deserialize(self, attribute_values: dict[str, dict[str, Any]]) -> None:
        plan = self._planned()
        if plan is None:
            super()._container_deserialize(attribute_values)
            return
        values: dict[str, Any] = {}
        _set_defaults(values, plan.read_defaults)
        for key, typed in attribute_values.items():
            f = plan.by_name.get(key)
            if f is None or not typed or NULL in typed:
                continue
            raw = typed.get(f.attr_type)
            if raw is None and f.attr_type not in typed:
                raw = f.attribute.get_value(typed)  # raises pynamodb's error naming the attribute
            values[f.name] = f.deserialize(raw)
        self.attribute_values = values

    @classmethod
    def _instantiate(cls: type[M], attribute_values: dict[str, dict[str, Any]]) -> M:
        if cls._planned() is None:
            return super()._instantiate(attribute_values)
        instance = cls.__new__(cls)  # read items start empty: their defaults are set by the read
        instance._container_deserialize(attribute_values)
        return instance
