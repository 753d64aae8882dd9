"""What every params section shares: the strict base model and the field types used in several."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field


class Section(BaseModel):
    # strict: YAML's true/false are not taken as 1/0 (``epochs: yes``), nor 3.0 or "3" as an integer
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


SEED_LIMIT = 2**32  # numpy's generators take seeds in [0, 2**32)
MIN_IMAGE_SIZE = 32  # px: the smallest input a stage embeds (train and extract image sizes, each TTA scale)


def Seed(default: int, description: str):  # noqa: N802 - a Field, named as a type
    """A seed field: an integer in [0, 2**32)."""
    return Field(default, ge=0, lt=SEED_LIMIT, description=description)


def ImageSize(default: int | None, description: str):  # noqa: N802 - a Field, named as a type
    """An image side in pixels, at least :data:`MIN_IMAGE_SIZE`."""
    return Field(default, ge=MIN_IMAGE_SIZE, description=description)


def Off(default: Any, description: str, **limits: Any):  # noqa: N802 - a Field, named as a type
    """A field that does nothing at its default (an off switch, an identity scale, a step not in
    ``rerank.steps``): docs/params.md lists these after what a user sets, and params.yaml keeps
    them last in their section (tests/test_config.py)."""
    return Field(default, description=description, json_schema_extra={"off": True}, **limits)


def Sub(section: type[Section], description: str, off: bool = False):  # noqa: N802 - a Field, named as a type
    """A nested section, defaulting to its own defaults; ``off``: as :func:`Off` (a step not taken)."""
    return (Off if off else Field)(section(), description=description)


def is_off(info: Any) -> bool:
    """Whether a model field was declared with :func:`Off`."""
    return bool((info.json_schema_extra or {}).get("off"))


def _amp_off(value: Any) -> Any:
    """``amp: off`` as written: YAML reads a bare off as false."""
    return "off" if value is False else value


# mixed precision: auto, bf16 or off (a bare YAML off, read as false, is off)
Amp = Annotated[Literal["auto", "bf16", "off"], BeforeValidator(_amp_off)]


def _loader_workers(value: Any) -> int | str:
    if value == "auto" or (type(value) is int and value >= 0):
        return value
    raise ValueError(f"{value!r}: a count of worker processes (0 or more) or auto")


# DataLoader worker processes: a count, or auto (retrieval.resources.loader_workers: 0 on the CPU, 4 with CUDA)
LoaderWorkers = Annotated[Any, AfterValidator(_loader_workers)]  # int or "auto", checked by _loader_workers
