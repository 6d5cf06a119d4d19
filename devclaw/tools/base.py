"""What a tool is: an input model, a function, a result model. The registry lives in ``__init__``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_serializer
from pydantic.alias_generators import to_camel
from pydantic_core.core_schema import SerializerFunctionWrapHandler

from devclaw.workflow import Role
from devclaw.workspace import Workspace


class ToolInput(BaseModel):
    """A tool's parameters: camelCase names, unknown names refused. Its JSON schema is the tool's."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=False, extra="forbid")


class ToolResult(BaseModel):
    """A tool's result. Optional fields that were not set are left out; required ones may be null."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    @model_serializer(mode="wrap")
    def _drop_unset_optionals(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        optional = {
            (info.alias or name)
            for name, info in type(self).model_fields.items()
            if not info.is_required() and info.default is None
        }
        return {key: value for key, value in data.items() if value is not None or key not in optional}


class WorkerRef(ToolResult):
    """A worker slot of a project and what it holds, as results name it."""

    project: str
    group_id: str
    role: Role
    slot: int
    issue_id: int | None
    session_id: str | None


class MutationInput(ToolInput):
    """The parameters every mutating tool takes besides its own."""

    dry_run: bool = Field(default=False, description="Decide and answer what the call would do, changing nothing.")


class MutationResult(ToolResult):
    """What every mutating tool may add to its result."""

    #: True when nothing was changed because the call had been applied already (a retry).
    repeated: bool | None = None
    #: True for a dryRun answer: nothing was changed.
    dry_run: bool | None = None
    #: The change was made but its audit line could not be written (doctor and health report it).
    audit_error: str | None = None


In = TypeVar("In", bound=ToolInput)
Out = TypeVar("Out", bound=ToolResult)


@dataclass(frozen=True)
class Tool(Generic[In, Out]):
    name: str
    input_model: type[In]
    run: Callable[[Workspace, In], Out]
    mutating: bool

    @property
    def description(self) -> str:
        return " ".join((self.run.__doc__ or "").split())

    def schema(self) -> dict[str, Any]:
        return self.input_model.model_json_schema(by_alias=True)
