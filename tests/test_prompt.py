"Round trips, injection and failure reasons of opal_nb.prompt."
import os, re, string
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st, assume, HealthCheck

from opal_nb.core import OPALInputError, infer_schema, coerce_frame
from opal_nb.prompt import (row_to_text, rows_to_text, rows_to_csv, parse_rows, few_shot_messages,
                            PromptTemplate, ParsedRows, check_text_schema, format_value)


# ---------------------------------------------------------------- strategies
def _name_ok(n: str) -> bool:
    "An independent, conservative rule for column names the text format must handle."
    return n == n.strip() and n != '' and ', ' not in n and ' is ' not in n + ' ' and not n.startswith('"')

names = st.text(alphabet=string.ascii_letters + string.digits + '_ -.()', min_size=1, max_size=12).filter(_name_ok)
odd_strings = st.text(max_size=12) | st.sampled_from(
    ['', ' ', 'NaN', 'nan', 'a, b', 'x is y', 'ends.', '"quoted"', 'a,', '1.', '3', '3.0', 'New York, NY.',
     'line\nbreak', 'tab\there', '\u2028', 'é ü 中文', "'); DROP TABLE t;--", '__import__("os")', '{"a": 1}'])


@st.composite
def frames(draw, allow_newlines=True):
    "A random table: numeric columns of random precision, categorical columns of odd strings, a target."
    n_rows = draw(st.integers(2, 12))
    cols = draw(st.lists(names, min_size=2, max_size=6, unique=True))
    data, kinds = {}, {}
    for c in cols[:-1]:
        kind = draw(st.sampled_from(['int', 'float', 'cat', 'bool']))
        if kind == 'int':
            data[c] = np.array(draw(st.lists(st.integers(-10**9, 10**9), min_size=n_rows, max_size=n_rows)), dtype='int64')
        elif kind == 'float':
            p = draw(st.integers(0, 5))
            ks = draw(st.lists(st.integers(-10**8, 10**8), min_size=n_rows, max_size=n_rows))
            vals = [k / 10**p for k in ks]
            if draw(st.booleans()): vals[draw(st.integers(0, n_rows - 1))] = np.nan
            data[c] = np.array(vals, dtype='float64')
        elif kind == 'bool':
            data[c] = np.array(draw(st.lists(st.booleans(), min_size=n_rows, max_size=n_rows)))
        else:
            s = odd_strings if allow_newlines else odd_strings.filter(lambda x: '\n' not in x and '\r' not in x)
            levels = draw(st.lists(s, min_size=1, max_size=4, unique=True))
            data[c] = draw(st.lists(st.sampled_from(levels), min_size=n_rows, max_size=n_rows))
            kinds[c] = 'categorical'
    s = odd_strings if allow_newlines else odd_strings.filter(lambda x: '\n' not in x and '\r' not in x)
    a, b = draw(st.lists(s, min_size=2, max_size=2, unique=True))
    y = [a, b] + draw(st.lists(st.sampled_from([a, b]), min_size=n_rows - 2, max_size=n_rows - 2))
    data[cols[-1]] = y
    return pd.DataFrame(data), cols[-1], kinds


def _schema(df, target, kinds):
    try: return infer_schema(df, target, kinds=kinds)
    except OPALInputError: assume(False)


# ---------------------------------------------------------------- round trips
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames(), st.booleans(), st.integers(0, 2**32 - 1))
def test_text_round_trip(frame, shuffle, seed):
    df, target, kinds = frame
    schema = _schema(df, target, kinds)
    lines = rows_to_text(df, schema, shuffle=shuffle, random_state=seed)
    assert len(lines) == len(df) and all('\n' not in l and '\r' not in l for l in lines)
    parsed = parse_rows('\n'.join(lines), schema)
    assert parsed.rejected.empty, parsed.rejected.reason.tolist()
    _assert_same_at_precision(parsed.rows, df, schema)


def _assert_same_at_precision(got, df, schema):
    "Text holds numbers at the schema's precision: equal to the original rounded there (exactly equal when precision suffices)."
    pd.testing.assert_frame_equal(got, coerce_frame(df, schema).reset_index(drop=True))
    for c in schema.numeric_columns:
        diff = (got[c].astype(float) - df[c].astype(float).to_numpy()).abs().max()
        assert np.isnan(diff) or diff <= 0.5 * 10.0 ** -schema[c].precision + 1e-12


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames(allow_newlines=False))
def test_csv_round_trip(frame):
    df, target, kinds = frame
    schema = _schema(df, target, kinds)
    if any(c.lower() == 'nan' for c in df.columns):  # refused on purpose: NaN marks a missing value
        with pytest.raises(OPALInputError, match="a column named 'NaN'"): rows_to_csv(df, schema)
        return
    parsed = parse_rows(rows_to_csv(df, schema), schema, style='csv')
    assert parsed.rejected.empty, parsed.rejected.reason.tolist()
    _assert_same_at_precision(parsed.rows, df, schema)


def test_exact_round_trip_when_precision_is_right():
    "The plain case, without any rounding by the schema: the frame comes back identical."
    df = pd.DataFrame({'x': [0.25, -1.5, 3.0], 'n': [1, 20, 2**62 + 1], 'c': ['a, b', 'NaN', ' c.'], 'y': [True, False, True]})
    schema = infer_schema(df, 'y')
    for style, lines in [('text', rows_to_text(df, schema, shuffle=True, random_state=0)), ('csv', rows_to_csv(df, schema))]:
        pd.testing.assert_frame_equal(parse_rows(lines, schema, style=style).rows, df)


def test_csv_refuses_line_breaks():
    df = pd.DataFrame({'note': ['a\nb', 'c'], 'y': [0, 1]})
    schema = infer_schema(df, 'y', kinds={'note': 'categorical'})
    with pytest.raises(OPALInputError, match="'note' has a level with a line break"): rows_to_csv(df, schema)
    assert parse_rows(rows_to_text(df, schema), schema).rows.note.tolist() == ['a\nb', 'c']


@pytest.mark.parametrize('bad', ['a, b', 'age is', ' age', '', '"q'])
def test_bad_column_names_are_refused_by_name(bad):
    df = pd.DataFrame({bad: [1, 2], 'y': [0, 1]})
    schema = infer_schema(df, 'y')
    with pytest.raises(OPALInputError, match=re.escape(f"column {bad!r} cannot be written in text rows")):
        row_to_text(df.iloc[0], schema)
    with pytest.raises(OPALInputError, match=re.escape(f"column {bad!r}")): parse_rows('y is 1', schema)


def test_row_to_text_matches_the_paper_format():
    real = Path(__file__).parent.parent.parent / 'shared/data/opal-paper/openmlDiabetes/openmlDiabetes_see_small_raw100_imbalanced_focus'
    if not real.is_dir(): pytest.skip('paper data (../shared/data/opal-paper) not present')
    txt = next(real.glob('train_colsbase_size100_total*_rand1.txt'))
    df, lines = pd.read_csv(txt.with_suffix('.csv')), txt.read_text().splitlines()
    schema = infer_schema(df, 'class')
    # the paper writes every number as a float (`preg is 2.0`); we write at the column's precision
    # (`preg is 2`): both parse to the same rows
    ours = parse_rows(rows_to_text(df, schema), schema).rows
    theirs = parse_rows(lines, schema)
    assert theirs.parse_rate == 1.0
    pd.testing.assert_frame_equal(ours, theirs.rows)
    assert rows_to_text(df, schema)[0] == 'preg is 2, plas is 106, pres is 64, skin is 35, insu is 119, mass is 30.5, pedi is 1.400, age is 34, class is 0.'


# ---------------------------------------------------------------- failure reasons
@pytest.fixture
def people():
    df = pd.DataFrame({'age': [39, 50, 38, 53, 28, 37],
                       'sex': ['Male', 'Male', 'Female', 'Male', 'Female', 'Female'],
                       'hours': [40.0, 13.5, 40.0, 40.0, 40.0, 37.5],
                       'income': ['<=50K', '<=50K', '<=50K', '>50K', '<=50K', '>50K']})
    return df, infer_schema(df, 'income', ['sex'])


GOOD = 'age is 39, sex is Male, hours is 40.0, income is >50K.'
CASES = [
    ('age is 39, sex is Male, hours is 40.0, income is >50K, bonus is 3.', 'unknown column', {}),
    ('age is 39, sex is Male, income is >50K.', 'missing column', {}),
    ('age is 39, sex is Male, sex is Female, hours is 40.0, income is >50K.', 'duplicated column', {}),
    ('age is thirty, sex is Male, hours is 40.0, income is >50K.', 'bad number', {}),
    ('age is 1e999, sex is Male, hours is 40.0, income is >50K.', 'bad number', {}),
    ('age is inf, sex is Male, hours is 40.0, income is >50K.', 'bad number', {}),
    ('age is ' + '9' * 5000 + ', sex is Male, hours is 40.0, income is >50K.', 'bad number', {}),
    ('age is ٣٩, sex is Male, hours is 40.0, income is >50K.', 'bad number', {}),
    ('age is 39, sex is Robot, hours is 40.0, income is >50K.', 'unknown level', {}),
    ('age is 390, sex is Male, hours is 40.0, income is >50K.', 'out of range', {}),
    ('age is 39.5, sex is Male, hours is 40.0, income is >50K.', 'out of precision', dict(extra_decimals='reject')),
    ('age is 39, sex is Male, hours is 40.0, income is <=50K.', 'wrong group', dict(group={'income': '>50K'})),
    ('age is 39, sex is Male, hours is 40.0, income is >50K.', 'wrong group', dict(group={'sex': 'Female'})),
    ('age is NaN, sex is Male, hours is 40.0, income is >50K.', 'missing value', {}),
    ('age is 39, sex is "Male, hours is 40.0, income is >50K.', 'bad value', {}),
    ('age is 39, sex is Male; hours is 40.0; income is >50K.', 'missing column', {}),
]


@pytest.mark.parametrize('line,kind,kw', CASES)
def test_each_failure_has_its_reason(people, line, kind, kw):
    df, schema = people
    parsed = parse_rows(line, schema, **kw)
    assert parsed.rows.empty
    assert parsed.rejected.reason.iloc[0].split(':')[0] == kind, parsed.rejected.reason.iloc[0]
    assert parsed.rejected.text.iloc[0] == line and parsed.rejected.line.iloc[0] == 0


def test_good_line_variants_are_read(people):
    df, schema = people
    variants = [GOOD, GOOD[:-1], '1. ' + GOOD, '- ' + GOOD, '  12) ' + GOOD, 'Row 3: ' + GOOD, GOOD + '   ',
                'age is 39.0, sex is male, hours is 40, income is >50K.', 'age is +39, sex is Male, hours is 4e1, income is >50K',
                'sex is Male, income is >50K, hours is 40.0, age is 39.']
    parsed = parse_rows('\n'.join(variants), schema)
    assert parsed.rejected.empty, parsed.rejected.reason.tolist()
    assert len(parsed.rows) == len(variants)
    assert (parsed.rows == parsed.rows.iloc[0]).all().all()
    assert parsed.rows.iloc[0].to_dict() == {'age': 39, 'sex': 'Male', 'hours': 40.0, 'income': '>50K'}


def test_rounding_to_precision_is_the_default(people):
    df, schema = people
    parsed = parse_rows('age is 38.6, sex is Male, hours is 40.04, income is >50K', schema)
    assert parsed.rows.iloc[0][['age', 'hours']].tolist() == [39, 40.0]
    assert parsed.rows.age.dtype == 'int64'


def test_chatter_and_blank_lines_are_skipped_not_rejected(people):
    df, schema = people
    parsed = parse_rows(['Sure! Here are the rows:\n\n```', GOOD, '```', 'Note that the age is realistic.'], schema)
    assert len(parsed.rows) == 1 and parsed.rejected.empty
    assert parsed.skipped == ['Sure! Here are the rows:', '```', '```', 'Note that the age is realistic.']
    assert parsed.n_lines == 5 and parsed.parse_rate == 0.2
    assert '**1 rows read** from 5 non-blank lines' in parsed._repr_markdown_()


def test_empty_answer(people):
    df, schema = people
    parsed = parse_rows('', schema)
    assert parsed.rows.empty and list(parsed.rows.columns) == schema.names and np.isnan(parsed.parse_rate)
    assert parsed.rows.dtypes.to_dict() == df.dtypes.to_dict()


def test_bad_arguments(people):
    df, schema = people
    with pytest.raises(OPALInputError, match="style must be 'text' or 'csv'"): parse_rows(GOOD, schema, style='json')
    with pytest.raises(OPALInputError, match="extra_decimals"): parse_rows(GOOD, schema, extra_decimals='floor')
    with pytest.raises(OPALInputError, match=r"group names columns not in the schema: \['salary'\]"):
        parse_rows(GOOD, schema, group={'salary': 1})
    with pytest.raises(OPALInputError, match="order names columns not in the schema"): row_to_text(df.iloc[0], schema, order=['x'])


# ---------------------------------------------------------------- injection
def test_injection_never_adds_columns_or_runs_code(people, tmp_path):
    df, schema = people
    marker = tmp_path / 'pwned'
    answer = '\n'.join([
        f"age is __import__('os').system('touch {marker}'), sex is Male, hours is 40.0, income is >50K.",
        f"age is 39, sex is {{__import__('os').system('touch {marker}')}}, hours is 40.0, income is >50K.",
        "age is 39, sex is Male, hours is 40.0, income is >50K, password is hunter2.",
        "age is 39, sex is Male, hours is 40.0, income is >50K. Ignore all previous instructions, admin is True.",
        'age is 39, sex is "Male", hours is 40.0, income is ">50K", "extra" is 1.',
        "age is 39, sex is Male, hours is 40.0, income is >50K, sex is Female.",
        'age is 39, sex is Male, hours is 40.0, income is "\\u003e50K".',  # JSON escape decodes to a real level
        "age is 39, sex is Male, Female, hours is 40.0, income is >50K.",
        "age is 39, sex is Male is Female, hours is 40.0, income is >50K.",
        "${jndi:ldap://x}, age is 39, sex is Male, hours is 40.0, income is >50K.",
    ])
    parsed = parse_rows(answer, schema)
    assert not marker.exists()
    assert list(parsed.rows.columns) == schema.names
    # only the line whose JSON escape decodes to a real level is a row
    assert parsed.rows.to_dict('records') == [{'age': 39, 'sex': 'Male', 'hours': 40.0, 'income': '>50K'}]
    kinds = parsed.rejected.reason.str.split(':').str[0].tolist()
    assert kinds == ['bad number', 'unknown level', 'unknown column', 'unknown column', 'unknown column',
                     'duplicated column', 'unknown column', 'unknown level', 'unknown column']


def test_csv_injection_and_reasons(people):
    df, schema = people
    answer = '\n'.join(['Here you go:', '```csv', 'age,sex,hours,income,secret', '39,Male,40.0,>50K,1', '```',
                        'age,sex,hours,income', '39,Male,40.0,>50K', '39,"Male, Female",40.0,>50K', '39,Male,40.0',
                        '=cmd|calc,Male,40.0,>50K', 'sex,age,hours,income', 'Male,39,40.0,>50K'])
    parsed = parse_rows(answer, schema, style='csv')
    assert list(parsed.rows.columns) == schema.names and len(parsed.rows) == 2
    assert parsed.rejected.reason.str.split(':').str[0].tolist() == ['unknown column', 'unknown level', 'missing column', 'bad number']


# ---------------------------------------------------------------- prompts
def test_few_shot_messages(people):
    df, schema = people
    msgs = few_shot_messages(df, schema, {'income': '<=50K', 'sex': 'Female'}, n_new=4, random_state=3, topic='census records')
    assert [m['role'] for m in msgs] == ['system', 'user']
    user = msgs[1]['content']
    shown = [l for l in user.splitlines() if l.startswith('age is ')]
    assert sorted(shown) == sorted(rows_to_text(df[(df.income == '<=50K') & (df.sex == 'Female')], schema))
    assert 'Write 4 new records' in user and 'census records' in msgs[0]['content']
    # the rows shown are rows of the group, and parse back as such
    assert len(parse_rows(user, schema, group={'income': '<=50K', 'sex': 'Female'}).rows) == len(shown) == 2
    assert few_shot_messages(df, schema, {'income': '<=50K'}, 2, random_state=1) == few_shot_messages(df, schema, {'income': '<=50K'}, 2, random_state=1)
    assert len([l for l in few_shot_messages(df, schema, {'income': '<=50K'}, 2, k=2)[1]['content'].splitlines() if l.startswith('age is')]) == 2


def test_few_shot_csv_and_template(people):
    df, schema = people
    t = PromptTemplate(system='S {topic}', user='{columns}|{group}|{n_new}|{k}\n{rows}')
    msgs = few_shot_messages(df, schema, {'income': '>50K'}, 7, style='csv', template=t)
    assert msgs[0]['content'] == 'S tabular data'
    lines = msgs[1]['content'].splitlines()
    assert lines[0] == 'age, sex, hours, income|income is >50K|7|2' and lines[1] == 'age,sex,hours,income'
    assert len(parse_rows(lines[1:], schema, style='csv').rows) == 2
    with pytest.raises(OPALInputError, match='n_new must be at least 1'): few_shot_messages(df, schema, {'income': '>50K'}, 0)
    with pytest.raises(OPALInputError, match="style must be"): few_shot_messages(df, schema, {'income': '>50K'}, 1, style='xml')
