"""Histogram buckets and the field names kept in Redis."""

from stepanim.metrics import _field, _parse_field, bucket_for

BUCKETS = (0.1, 0.5, 1.0)


def test_a_value_lands_in_the_smallest_bucket_that_holds_it() -> None:
    assert bucket_for(BUCKETS, 0.05) == "0.1"
    assert bucket_for(BUCKETS, 0.1) == "0.1"  # le is inclusive
    assert bucket_for(BUCKETS, 0.2) == "0.5"
    assert bucket_for(BUCKETS, 1.0) == "1.0"
    assert bucket_for(BUCKETS, 7) == "+Inf"


def test_field_names_round_trip_and_refuse_separators_in_values() -> None:
    field = _field("stepanim_job_errors", {"code": "a,b=c|d"})
    assert _parse_field(field) == ("stepanim_job_errors", {"code": "a_b_c_d"})
    assert _parse_field(_field("x_sum", {})) == ("x_sum", {})
