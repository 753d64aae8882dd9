"""retrieval/params/fields.py: the strict section base and the field types several sections share."""
import pytest
from pydantic import Field, ValidationError

from retrieval.params.fields import MIN_IMAGE_SIZE, SEED_LIMIT, Amp, ImageSize, LoaderWorkers, Off, Section, Seed, Sub, is_off


class Knobs(Section):
    count: int = Field(3, ge=0, description="a count")
    factor: float = Field(1.0, description="a factor")
    flag: bool = Field(True, description="a switch")
    seed: int = Seed(0, "a seed")
    side: int = ImageSize(64, description="a side")
    amp: Amp = Field("auto", description="mixed precision")
    workers: LoaderWorkers = Field("auto", description="loader workers")
    scale: float = Off(1.0, gt=0.0, description="an identity scale")


def refused(**raw) -> str:
    with pytest.raises(ValidationError) as info:
        Knobs.model_validate(raw)
    return str(info.value)


def test_unknown_keys_and_loose_types_are_refused():
    assert "Extra inputs are not permitted" in refused(cuont=3)
    assert "valid integer" in refused(count=True)  # YAML's yes is not 1
    assert "valid integer" in refused(count=3.0) and "valid integer" in refused(count="3")
    assert "valid boolean" in refused(flag=1)
    assert "valid number" in refused(factor=True)
    assert Knobs.model_validate({"factor": 2}).factor == 2.0  # an int is a number
    with pytest.raises(ValidationError, match="frozen"):
        Knobs().count = 4


def test_seeds_are_numpys():
    assert Knobs(seed=SEED_LIMIT - 1).seed == 2**32 - 1
    assert "less than 4294967296" in refused(seed=SEED_LIMIT)
    assert "greater than or equal to 0" in refused(seed=-1)


def test_image_sizes_start_at_the_smallest_embeddable_input():
    assert MIN_IMAGE_SIZE == 32
    assert Knobs(side=MIN_IMAGE_SIZE).side == 32
    assert "greater than or equal to 32" in refused(side=MIN_IMAGE_SIZE - 1)


@pytest.mark.parametrize("raw,value", [(False, "off"), ("off", "off"), ("bf16", "bf16"), ("auto", "auto")])
def test_amp_reads_yamls_bare_off(raw, value):
    assert Knobs(amp=raw).amp == value


def test_amp_refuses_other_values():
    assert "'auto', 'bf16' or 'off'" in refused(amp=True)
    assert "'auto', 'bf16' or 'off'" in refused(amp="fp16")


@pytest.mark.parametrize("raw", [0, 4, "auto"])
def test_loader_workers_a_count_or_auto(raw):
    assert Knobs(workers=raw).workers == raw


@pytest.mark.parametrize("raw", [-1, 2.5, "many", True])
def test_loader_workers_refuse_the_rest(raw):
    assert f"{raw!r}: a count of worker processes (0 or more) or auto" in refused(workers=raw)


def test_off_marks_a_field_and_keeps_its_limits():
    fields = Knobs.model_fields
    assert is_off(fields["scale"]) and not any(is_off(fields[k]) for k in fields if k != "scale")
    assert fields["scale"].description == "an identity scale"
    assert "greater than 0" in refused(scale=0.0)


def test_sub_nests_a_section_at_its_own_defaults():
    class Outer(Section):
        knobs: Knobs = Sub(Knobs, "the knobs")
        spare: Knobs = Sub(Knobs, "a step not taken", off=True)
    assert Outer().knobs == Knobs() and Outer.model_fields["knobs"].description == "the knobs"
    assert is_off(Outer.model_fields["spare"]) and not is_off(Outer.model_fields["knobs"])
    assert Outer.model_validate({"knobs": {"count": 5}}).knobs.count == 5
    assert "knobs.cuont" in str(pytest.raises(ValidationError, Outer.model_validate, {"knobs": {"cuont": 5}}).value)
