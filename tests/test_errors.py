import pytest

import sinagot
from sinagot.errors import RecordNotFoundError, SinagotError


def test_every_public_error_derives_from_sinagot_error() -> None:
    errors = [getattr(sinagot, name) for name in sinagot.__all__ if name.endswith("Error")]
    assert len(errors) > 10
    for error in errors:
        assert issubclass(error, SinagotError), error


def test_record_not_found_is_a_key_error_with_a_plain_message() -> None:
    with pytest.raises(KeyError) as info:
        raise RecordNotFoundError("no record 'nope' in the dataset")
    assert str(info.value) == "no record 'nope' in the dataset"
