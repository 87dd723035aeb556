import pytest

from sinagot.axes import Axes, AxesDefinitionError


class Clinical(Axes):
    member = 0b001
    group = 0b010
    visit = 0b100
    subject = 0b011
    groupedvisit = 0b110
    matchedvisit = 0b101
    session = 0b111
    constant = 0b000


class Weather(Axes):
    visit = 0b01
    station = 0b10
    recording = 0b11
    constant = 0b00


def test_clinical_axes_bases_default_and_leaf() -> None:
    assert Clinical.ndim() == 3
    assert Clinical.bases() == (Clinical.member, Clinical.group, Clinical.visit)
    assert Clinical.default() is Clinical.member
    assert Clinical.leaf() is Clinical.session
    assert Clinical.root() is Clinical.constant


def test_span_and_parents() -> None:
    assert Clinical.subject.span() == (Clinical.member, Clinical.group)
    assert Clinical.constant.span() == ()
    assert Clinical.subject.is_parent(Clinical.session)
    assert Clinical.constant.is_parent(Clinical.session)
    assert not Clinical.session.is_parent(Clinical.subject)
    assert not Clinical.visit.is_parent(Clinical.subject)
    assert not Clinical.visit.is_parent(Clinical.visit)
    assert Clinical.visit.is_parent(Clinical.visit, if_match=True)
    assert Clinical.group.is_basis() and not Clinical.subject.is_basis()
    assert not Clinical.constant.is_basis()


def test_bitwise_operations_return_members() -> None:
    assert Clinical.member | Clinical.group is Clinical.subject
    assert Clinical.session & Clinical.groupedvisit is Clinical.groupedvisit
    assert ~Clinical.visit is Clinical.subject
    assert not Clinical.constant
    assert str(Clinical.member) == "member"


def test_weather_example() -> None:
    assert Weather.bases() == (Weather.visit, Weather.station)
    assert Weather.default() is Weather.visit
    assert Weather.visit | Weather.station is Weather.recording
    assert Weather.recording.span() == (Weather.visit, Weather.station)


def test_missing_permutation_is_a_clear_error() -> None:
    with pytest.raises(AxesDefinitionError, match=r"add members for 0b10"):

        class Incomplete(Axes):
            a = 0b01
            leaf = 0b11
            constant = 0b00


def test_non_binary_value_is_rejected() -> None:
    with pytest.raises(AxesDefinitionError, match="binary ints"):

        class Wrong(Axes):
            a = "x"
            constant = 0
