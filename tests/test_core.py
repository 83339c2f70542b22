"Property-based and bad-input tests of opal_nb.core (schema inference, serialization, coercion, groups)."
import copy
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from opal_nb.core import (OPALInputError, _outward, _py, infer_schema, infer_precision, schema_to_json, schema_from_json, coerce_frame,
                          validate_frame, group_counts, rows_needed)

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- strategies
@st.composite
def decimals(draw, max_decimals=6, max_abs=10**6):
    "A float that is the nearest double to a number with at most `max_decimals` decimals."
    d = draw(st.integers(0, max_decimals))
    k = draw(st.integers(-max_abs * 10**d, max_abs * 10**d))
    return float(Decimal(k).scaleb(-d))


@st.composite
def numeric_column(draw, n, max_decimals=6):
    kind = draw(st.sampled_from(['int64', 'int32', 'float64', 'float32', 'float_nan']))
    if kind.startswith('int'):
        return pd.Series(draw(st.lists(st.integers(-10**6, 10**6), min_size=n, max_size=n)), dtype=kind)
    vals = draw(st.lists(decimals(max_decimals), min_size=n, max_size=n))
    if kind == 'float32': return pd.Series(vals, dtype='float32')
    s = pd.Series(vals, dtype='float64')
    if kind == 'float_nan':  # some missing values, never all
        mask = draw(st.lists(st.booleans(), min_size=n, max_size=n))
        s[np.array(mask) & (np.arange(n) > 0)] = np.nan
    return s


@st.composite
def categorical_column(draw, n):
    kind = draw(st.sampled_from(['str', 'bool', 'category_str', 'category_int']))
    if kind == 'bool': return pd.Series(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    if kind == 'category_int': return pd.Series(draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))).astype('category')
    words = st.text(alphabet='abcXYZ _-', min_size=1, max_size=6)
    vals = draw(st.lists(words, min_size=n, max_size=n))
    return pd.Series(vals).astype('category') if kind == 'category_str' else pd.Series(vals)


@st.composite
def frames(draw, max_decimals=6):
    "A frame with a binary target 'y' (both classes present), a sensitive column 'g' and 1-4 other columns."
    n = draw(st.integers(2, 25))
    y = [0, 1] + draw(st.lists(st.integers(0, 1), min_size=n - 2, max_size=n - 2))
    cols = {'y': pd.Series(y, dtype='int64'), 'g': pd.Series(draw(st.lists(st.sampled_from(['F', 'M']), min_size=n, max_size=n)))}
    for i in range(draw(st.integers(1, 4))):
        cols[f'c{i}'] = draw(st.one_of(numeric_column(n, max_decimals), categorical_column(n)))
    return pd.DataFrame(cols)


def _loses_information(v: float, precision: int, dtype) -> bool:
    "True if writing `v` with `precision` decimals does not give back `v` (in the column's dtype)."
    if np.isnan(v): return False
    return np.dtype(dtype).type(round(float(v), precision)) != np.dtype(dtype).type(v)


# ---------------------------------------------------------------- properties
@SETTINGS
@given(frames())
def test_schema_json_round_trip(df):
    schema = infer_schema(df, 'y', ['g'])
    back = schema_from_json(schema_to_json(schema))
    assert back == schema
    assert schema_to_json(back) == schema_to_json(schema)


@SETTINGS
@given(frames(max_decimals=2))
def test_coerce_frame_restores_dtypes_and_values(df):
    "coerce_frame is the identity on the frame the schema came from (values of up to 2 decimals: see the precision bug)."
    schema = infer_schema(df, 'y', ['g'])
    df = df[schema.names]  # a text column distinct in every row of 20+ is an ID, left out of the schema
    out = coerce_frame(df, schema)
    assert list(out.columns) == list(df.columns)
    assert out.dtypes.tolist() == df.dtypes.tolist()
    pd.testing.assert_frame_equal(out, df)
    # and from shuffled column order (as a generator may return them)
    pd.testing.assert_frame_equal(coerce_frame(df[df.columns[::-1]], schema), df)


@SETTINGS
@given(frames())
def test_range_contains_all_values_and_is_tight(df):
    schema = infer_schema(df, 'y', ['g'])
    for name in schema.numeric_columns:
        spec, vals = schema[name], df[name].dropna()
        assert spec.minimum <= vals.min() and vals.max() <= spec.maximum
        # tight: the observed extremes rounded outward to the column's precision (so rounded values stay inside too)
        assert spec.minimum == _outward(_py(vals.min()), spec.precision, up=False) and spec.maximum == _outward(_py(vals.max()), spec.precision, up=True)
        assert spec.minimum <= round(float(vals.min()), spec.precision) and round(float(vals.max()), spec.precision) <= spec.maximum
        assert spec.missing == bool(df[name].isna().any())
    for name in schema.categorical_columns:
        assert set(schema[name].levels) == set(df[name].dropna().tolist())


@SETTINGS
@given(frames(max_decimals=2))
def test_precision_keeps_short_decimals(df):
    "Values with at most 2 decimals (|v| <= 1e6) are written back exactly with the inferred precision."
    schema = infer_schema(df, 'y', ['g'])
    for name in schema.numeric_columns:
        p = schema[name].precision
        assert p <= 2 or str(df[name].dtype) == 'float32'
        assert not any(_loses_information(v, p, df[name].dtype) for v in df[name])


@SETTINGS
@example([0.001])
@given(st.lists(decimals(6), min_size=1, max_size=20))
def test_precision_never_loses_information(values):
    p = infer_precision(pd.Series(values))
    assert 0 <= p <= 6
    assert not any(_loses_information(v, p, 'float64') for v in values)


@SETTINGS
@given(st.lists(decimals(6), min_size=1, max_size=20), st.integers(0, 6))
def test_precision_is_at_most_the_decimals_written(values, d):
    "The inferred precision never exceeds the number of decimals the values were written with."
    values = [round(v, d) for v in values]
    assert infer_precision(pd.Series(values)) <= d


@SETTINGS
@given(frames())
def test_schema_functions_do_not_modify_the_frame(df):
    before = copy.deepcopy(df)
    validate_frame(df, 'y', ['g'])
    schema = infer_schema(df, 'y', ['g'])
    coerce_frame(df, schema)
    counts = group_counts(df, 'y', 'g')
    rows_needed(counts[counts > 0] if (counts == 0).any() else counts)
    pd.testing.assert_frame_equal(df, before)


# ---------------------------------------------------------------- bad input: each error names the column or group
@pytest.fixture
def people():
    return pd.DataFrame({'age': [39, 50, 38, 53], 'sex': ['Male', 'Female', 'Female', 'Male'],
                         'hours': [40.0, 13.5, 40.0, 37.5], 'income': ['<=50K', '<=50K', '>50K', '>50K']})


def test_empty_frame(people):
    with pytest.raises(OPALInputError, match='the frame is empty'): infer_schema(people.iloc[:0], 'income')


def test_missing_target_column(people):
    with pytest.raises(OPALInputError, match="column 'salary' is not in the frame"): infer_schema(people, 'salary')
    with pytest.raises(OPALInputError, match="column 'race' is not in the frame"): infer_schema(people, 'income', ['race'])


def test_constant_target(people):
    with pytest.raises(OPALInputError, match="target column 'income' is constant"): infer_schema(people.assign(income='x'), 'income')


def test_target_with_nan(people):
    with pytest.raises(OPALInputError, match="target column 'income' has 1 missing values"):
        infer_schema(people.assign(income=['<=50K', None, '>50K', '>50K']), 'income')


def test_sensitive_with_nan(people):
    with pytest.raises(OPALInputError, match="sensitive column 'sex' has 1 missing"):
        infer_schema(people.assign(sex=['Male', None, 'Female', 'Male']), 'income', ['sex'])


def test_group_with_no_rows(people):
    counts = group_counts(people.iloc[[0, 1, 2]], 'income', 'sex')  # no (>50K, Male) row
    assert counts[('>50K', 'Male')] == 0
    with pytest.raises(OPALInputError, match=r"group \{'income': '>50K', 'sex': 'Male'\} has no rows"): rows_needed(counts)


def test_mixed_type_column(people):
    bad = people.assign(age=pd.Series([39, 'n/a', 38, 53], dtype=object))
    with pytest.raises(OPALInputError, match="column 'age' mixes types: 3 numeric values and 1 others, e.g. 'n/a'"): infer_schema(bad, 'income')


def test_infinite_values(people):
    with pytest.raises(OPALInputError, match="column 'hours' has 1 infinite values"):
        infer_schema(people.assign(hours=[40.0, np.inf, 1.0, 2.0]), 'income')
    with pytest.raises(OPALInputError, match="column 'hours' has 2 infinite values"):
        infer_schema(people.assign(hours=[40.0, np.inf, -np.inf, 2.0]), 'income')


def test_infinite_values_in_object_column(people):
    with pytest.raises(OPALInputError, match="column 'hours'"):
        infer_schema(people.assign(hours=pd.Series([40.0, np.inf, 1.0, 2.0], dtype=object)), 'income')


def test_duplicate_column_names(people):
    dup = pd.concat([people, people[['age']]], axis=1)
    with pytest.raises(OPALInputError, match=r"duplicate column names \['age'\]"): infer_schema(dup, 'income')


def test_non_string_column_name(people):
    with pytest.raises(OPALInputError, match='column name 3 is not a string'): infer_schema(people.assign(**{}).rename(columns={'hours': 3}), 'income')


def test_target_also_sensitive(people):
    with pytest.raises(OPALInputError, match="column 'income' is both the target and a sensitive column"): infer_schema(people, 'income', ['income'])


def test_unknown_kind_override(people):
    with pytest.raises(OPALInputError, match=r"kinds names columns not in the frame: \['weight'\]"): infer_schema(people, 'income', kinds={'weight': 'numeric'})
    with pytest.raises(OPALInputError, match="column 'sex' is declared numeric but has 4 non-numeric values"): infer_schema(people, 'income', kinds={'sex': 'numeric'})


def test_not_a_frame():
    with pytest.raises(OPALInputError, match='the frame must be a pandas DataFrame, got dict'): infer_schema({'y': [0, 1]}, 'y')


def test_errors_do_not_modify_the_frame(people):
    bad = people.assign(hours=[40.0, np.inf, 1.0, 2.0])
    before = copy.deepcopy(bad)
    with pytest.raises(OPALInputError): infer_schema(bad, 'income')
    pd.testing.assert_frame_equal(bad, before)


# ---------------------------------------------------------------- coerce_frame on generated text
def test_coerce_frame_from_text_numbers_and_strings(people):
    schema = infer_schema(people, 'income', ['sex'])
    pd.testing.assert_frame_equal(coerce_frame(people.astype(str), schema), people)


def test_coerce_frame_from_text_bool():
    df = pd.DataFrame({'smoker': [True, False, False], 'y': [0, 1, 1]})
    schema = infer_schema(df, 'y')
    pd.testing.assert_frame_equal(coerce_frame(df.astype(str), schema), df)


def test_coerce_frame_from_text_numeric_categories():
    df = pd.DataFrame({'grade': pd.Categorical([1, 2, 1]), 'y': [0, 1, 1]})
    schema = infer_schema(df, 'y')
    pd.testing.assert_frame_equal(coerce_frame(df.astype(str), schema), df)


def test_coerce_frame_keeps_nullable_int():
    df = pd.DataFrame({'visits': pd.array([1, None, 3], dtype='Int64'), 'y': [0, 1, 1]})
    schema = infer_schema(df, 'y')
    pd.testing.assert_frame_equal(coerce_frame(df, schema), df)


def test_datetime_column_named_or_round_trips():
    df = pd.DataFrame({'seen': pd.to_datetime(['2020-01-01', '2021-06-30']), 'y': [0, 1]})
    try: schema = infer_schema(df, 'y')
    except OPALInputError as e:
        assert "'seen'" in str(e); return
    assert schema_from_json(schema_to_json(schema)) == schema
