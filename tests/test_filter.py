"Tests of opal_nb.filter: planted problems on real data, rounds, bad input, and properties of any input frame."
import numpy as np
import pandas as pd
import pytest
from hypothesis import event, given, settings, HealthCheck, strategies as st
from sklearn.datasets import load_diabetes

from opal_nb.core import OPALInputError, infer_schema, coerce_frame
from opal_nb.filter import REASONS, FilterReport, RowFilter, filter_rows, row_keys, row_problems


# ---------------------------------------------------------------- real data with planted problems
@pytest.fixture(scope='module')
def diabetes():
    raw = load_diabetes(as_frame=True, scaled=False).frame
    df = raw.drop(columns='target').assign(outcome=np.where(raw.target > raw.target.median(), 'high', 'low'))
    train = df.sample(frac=0.7, random_state=1)
    holdout = df.drop(train.index).reset_index(drop=True)
    train = train.reset_index(drop=True)
    return train, holdout, infer_schema(train, 'outcome', sensitive=['sex'])


@pytest.fixture()
def fitted(diabetes):
    train, holdout, schema = diabetes
    return RowFilter(schema).fit(train)


def _adds_up(report: FilterReport):
    assert report.rows_in == report.rows_kept + sum(report.dropped.values())
    t = report.counts
    assert (t['rows_in'] == t['kept'] + t[list(REASONS)].sum(axis=1)).all()


def test_exact_copies_dropped_as_copy(diabetes, fitted):
    train, _, _ = diabetes
    copies = train.sample(20, random_state=3)
    kept, report = fitted.filter(copies)
    assert len(kept) == 0 and report.dropped['copy'] == 20
    assert report.memorization['share_identical'] == 1.0
    # the detail names the real row that was copied
    assert fitted.last_reasons_.detail.iloc[0] == f"identical to real row {copies.index[0]}"
    _adds_up(report)


def test_jittered_near_copies_dropped_as_near_copy(diabetes, fitted):
    train, _, schema = diabetes
    rng = np.random.default_rng(0)
    rows = train.sample(30, random_state=4).reset_index(drop=True)
    # nudge one numeric column per row by one unit of its last decimal, staying inside the range
    jittered = rows.copy()
    for i in range(len(rows)):
        c = rng.choice(schema.numeric_columns)
        step = 10.0 ** -schema[c].precision
        v = rows.at[i, c]
        jittered.at[i, c] = round(v + step if v + step <= schema[c].maximum else v - step, schema[c].precision)
    kept, report = fitted.filter(jittered)
    assert report.dropped['copy'] == 0
    assert report.dropped['near_copy'] == 30, fitted.last_reasons_.value_counts()
    assert len(kept) == 0


def test_invalid_values_named_per_column(diabetes, fitted):
    train, _, schema = diabetes
    base = train.iloc[[0] * 6].reset_index(drop=True).astype({'bmi': object, 'sex': object})
    base.loc[0, 'age'] = 150.0                # out of range
    base.loc[1, 'sex'] = 'F'                  # unknown level
    base.loc[2, 'bmi'] = 'heavy'              # non-number
    base.loc[3, 's1'] = np.nan                # missing where the real data had none
    base.loc[4, 'age'] = 40.25                # wrong precision
    base.loc[5, 'outcome'] = 'medium'         # unknown level of the target
    kept, report = fitted.filter(base)
    assert fitted.last_reasons_.reason.tolist() == ['invalid'] * 6
    assert report.invalid_columns == {'age': 2, 'sex': 1, 'bmi': 1, 's1': 1, 'outcome': 1}
    details = fitted.last_reasons_.detail.tolist()
    assert 'age: 150 outside' in details[0] and "sex: unknown level 'F'" in details[1]
    assert "bmi: non-number 'heavy'" in details[2] and 's1: missing' in details[3]
    assert 'more than 0 decimals' in details[4]


def test_wrong_group_dropped(diabetes, fitted):
    _, holdout, _ = diabetes
    kept, report = fitted.filter(holdout, group={'outcome': 'high', 'sex': 1.0})
    reasons = fitted.last_reasons_.reason
    in_group = (holdout.outcome == 'high') & (holdout.sex == 1.0)
    # every row outside the group that is otherwise valid is dropped as wrong_group
    assert (reasons[~in_group].isin(['wrong_group', 'invalid'])).all()
    assert report.dropped['wrong_group'] == (reasons[~in_group] == 'wrong_group').sum() > 0
    assert (kept.outcome == 'high').all() and (kept.sex == 1.0).all()
    assert report.counts.index.tolist() == ['outcome=high, sex=1.0']


def test_duplicates_within_and_across_calls(diabetes, fitted):
    _, holdout, _ = diabetes
    batch = pd.concat([holdout.iloc[:10], holdout.iloc[:3]], ignore_index=True)
    kept1, r1 = fitted.filter(batch)
    n_valid_first = (fitted.last_reasons_.reason.iloc[:10] == '').sum()
    assert (fitted.last_reasons_.reason.iloc[10:] != '').all()
    kept2, r2 = fitted.filter(holdout.iloc[:10])
    assert len(kept2) == 0 and r2.dropped['duplicate'] == n_valid_first
    assert (fitted.last_reasons_.detail[fitted.last_reasons_.reason == 'duplicate'] == 'kept in an earlier call').all()
    fitted.reset()
    kept3, _ = fitted.filter(holdout.iloc[:10])
    assert len(kept3) == n_valid_first
    total = r1 + r2
    assert total.rows_in == 23 and total.dropped['duplicate'] == r1.dropped['duplicate'] + r2.dropped['duplicate']
    _adds_up(total)


def test_new_rows_mostly_kept(diabetes, capsys):
    train, holdout, schema = diabetes
    kept, report = filter_rows(holdout, train, schema)
    rate = report.rows_kept / report.rows_in
    valid = report.rows_in - report.dropped['invalid']
    rate_valid = report.rows_kept / valid
    with capsys.disabled():
        print(f"\nheld-out rows kept: {rate:.1%} of all, {rate_valid:.1%} of those inside the training ranges; {report.summary()}")
    assert rate >= 0.85 and rate_valid >= 0.95
    assert report.dropped['copy'] == 0
    assert 0.2 < report.memorization['share_within_real_nn'] < 0.8


def test_kept_rows_keep_dtypes_order_and_inputs_unchanged(diabetes, fitted):
    train, holdout, _ = diabetes
    train_before, holdout_before = train.copy(), holdout.copy()
    rejected = pd.DataFrame({'text': ['garbage'], 'reason': ['no columns found']})
    rejected_before = rejected.copy()
    kept, report = fitted.filter(holdout, rejected=rejected)
    pd.testing.assert_frame_equal(holdout, holdout_before)
    pd.testing.assert_frame_equal(train, train_before)
    pd.testing.assert_frame_equal(rejected, rejected_before)
    assert kept.dtypes.tolist() == train.dtypes.tolist()
    assert kept.index.tolist() == list(range(len(kept)))
    assert list(fitted.last_kept_index_) == sorted(fitted.last_kept_index_)
    pd.testing.assert_frame_equal(kept, holdout.iloc[fitted.last_kept_index_].reset_index(drop=True), check_dtype=True)
    assert report.dropped['parse'] == 1 and report.parse_reasons == {'no columns found': 1}


def test_plausibility_drops_scrambled_rows_and_is_repeatable(diabetes):
    train, holdout, schema = diabetes
    rng = np.random.default_rng(5)
    scrambled = pd.DataFrame({c: (rng.uniform(schema[c].minimum, schema[c].maximum, 150).round(schema[c].precision) if schema[c].is_numeric
                                  else rng.choice(schema[c].levels, 150)) for c in schema.names})
    _, a = filter_rows(scrambled, train, schema, plausibility=True, random_state=0)
    _, b = filter_rows(scrambled, train, schema, plausibility=True, random_state=0)
    _, held = filter_rows(holdout, train, schema, plausibility=True, random_state=0)
    assert a.dropped == b.dropped
    scrambled_rate = a.dropped['implausible'] / a.rows_in
    held_rate = held.dropped['implausible'] / held.rows_in
    assert scrambled_rate > 0.3 and held_rate < 0.1, (scrambled_rate, held_rate)


def test_report_combine_per_group_and_markdown(diabetes, fitted):
    _, holdout, _ = diabetes
    reports = [fitted.filter(holdout, group={'outcome': o})[1] for o in ('high', 'low', 'high')]
    total = FilterReport.combine(reports)
    assert total.counts.index.tolist() == ['outcome=high', 'outcome=low']
    assert total.rows_in == 3 * len(holdout)
    assert total.to_frame().loc['total', 'rows_in'] == 3 * len(holdout)
    assert sum(reports).rows_kept == total.rows_kept
    _adds_up(total)
    md = total._repr_markdown_()
    assert md.startswith('**FilterReport**: kept') and '| outcome=low |' in md
    assert len(total.dcr) == sum(len(r.dcr) for r in reports)


# ---------------------------------------------------------------- mixed dtypes and missing values
@pytest.fixture(scope='module')
def mixed():
    rng = np.random.default_rng(0)
    n = 60
    df = pd.DataFrame({
        'age': rng.integers(18, 90, n),
        'hours': rng.uniform(1, 99, n).round(1),
        'sex': rng.choice(['Female', 'Male'], n),
        'grade': pd.Categorical(rng.choice(['a', 'b', 'c'], n), categories=['a', 'b', 'c']),
        'score': np.where(rng.random(n) < 0.2, np.nan, rng.uniform(0, 1, n).round(2)),
        'city': np.where(rng.random(n) < 0.2, None, rng.choice(['x', 'y'], n)).astype(object),
        'income': rng.choice(['<=50K', '>50K'], n),
    })
    return df, infer_schema(df, 'income', sensitive=['sex'])


def test_missing_values_where_the_real_data_has_them(mixed):
    df, schema = mixed
    assert schema['score'].missing and schema['city'].missing and not schema['hours'].missing
    new = df.head(4).copy()
    new['age'] = [30, 31, 32, 33]
    new.loc[0, 'score'] = np.nan
    new.loc[1, 'city'] = None
    new.loc[2, 'hours'] = np.nan
    rf = RowFilter(schema).fit(df)
    kept, report = rf.filter(new)
    assert rf.last_reasons_.reason.tolist()[2] == 'invalid' and 'invalid' not in rf.last_reasons_.reason.tolist()[:2]
    assert report.invalid_columns == {'hours': 1}
    assert report.rows_in == 4
    assert kept.dtypes.tolist() == df.dtypes.tolist()


def test_bad_input(diabetes, fitted):
    train, holdout, schema = diabetes
    with pytest.raises(OPALInputError, match='not fitted'): RowFilter(schema).filter(holdout)
    with pytest.raises(OPALInputError, match="column 's6' is not in the synthetic rows"): fitted.filter(holdout.drop(columns='s6'))
    with pytest.raises(OPALInputError, match='duplicate column names'): fitted.filter(pd.concat([holdout, holdout[['age']]], axis=1))
    with pytest.raises(OPALInputError, match='the real rows are empty'): RowFilter(schema).fit(train.iloc[:0])
    with pytest.raises(OPALInputError, match='group must be a dict'): fitted.filter(holdout, group=('high', 1.0))
    with pytest.raises(OPALInputError, match='rejected must be a DataFrame'): fitted.filter(holdout, rejected=['x'])
    with pytest.raises(OPALInputError, match="column 'age' has .* values the schema does not allow, e.g. 200 outside"): RowFilter(schema).fit(holdout.assign(age=200.0))
    kept, report = fitted.filter(holdout.iloc[:0])
    assert len(kept) == 0 and report.rows_in == 0 and kept.dtypes.tolist() == train.dtypes.tolist()
    assert 'no rows in' in report.summary()


def test_single_real_row_has_no_near_copy_threshold(mixed):
    df, schema = mixed
    rf = RowFilter(schema).fit(df.head(1))
    assert rf.dcr_threshold_ == 0.0
    _, report = rf.filter(df.head(1))
    assert report.dropped['copy'] == 1


# ---------------------------------------------------------------- any frame in: consistent report, kept is a subset
def _pools(df, schema):
    bad = ['x', None, np.nan, True, 1e9, -5, 3.14159, 'Male', 7, [1], pd.NA, '', ' 42 ', float('inf')]
    pools = {}
    for c in schema.names:
        real = df[c].dropna().unique().tolist()[:8]
        pools[c] = real + bad
    return pools


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_any_frame_gives_consistent_report_and_kept_subset(mixed, data):
    df, schema = mixed
    pools = _pools(df, schema)
    real_rows = df.to_dict('records')
    valid = {c: df[c].dropna().unique().tolist() for c in schema.names}
    row = st.one_of(st.sampled_from(real_rows),                                                     # copies
                    st.fixed_dictionaries({c: st.sampled_from(valid[c]) for c in schema.names}),   # new valid rows
                    st.fixed_dictionaries({c: st.sampled_from(pools[c]) for c in schema.names}))   # anything
    rows = data.draw(st.lists(row, max_size=12))
    rows = rows + data.draw(st.lists(st.sampled_from(rows), max_size=3)) if rows else rows   # some duplicates
    frame = pd.DataFrame(rows, columns=schema.names)
    before = frame.copy()
    group = data.draw(st.sampled_from([None, {'income': '>50K'}, {'income': '<=50K', 'sex': 'Female'}]))
    n_rejected = data.draw(st.integers(0, 3))
    rejected = pd.DataFrame({'text': ['?'] * n_rejected, 'reason': ['unreadable'] * n_rejected})
    rf = RowFilter(schema).fit(df)
    kept, report = rf.filter(frame, group=group, rejected=rejected)

    pd.testing.assert_frame_equal(frame, before)
    event(f"kept {'none' if len(kept) == 0 else 'some'}; dropped {sorted(r for r, n in report.dropped.items() if n)}")
    assert report.rows_in == len(frame) + n_rejected == report.rows_kept + sum(report.dropped.values())
    assert len(kept) == report.rows_kept == len(rf.last_kept_index_) == (rf.last_reasons_.reason == '').sum()
    assert set(rf.last_reasons_.reason) <= {'', *REASONS}
    assert kept.dtypes.tolist() == df.dtypes.tolist()
    # kept is a subset of the input: each kept row is its input row in canonical form
    for j, i in enumerate(rf.last_kept_index_):
        for c in schema.names:
            got, given_ = kept.at[j, c], frame.iat[i, frame.columns.get_loc(c)]
            if pd.isna(got): assert given_ is None or given_ is pd.NA or (isinstance(given_, float) and np.isnan(given_))
            elif schema[c].is_numeric: assert abs(float(given_) - float(got)) < 1e-6
            else: assert given_ == got
    # kept rows fit the schema and the group, copy no real row, and repeat nothing
    assert (row_problems(kept, schema) == '').all()
    for c, v in (group or {}).items(): assert (kept[c] == v).all()
    keys = row_keys(kept)
    assert len(set(keys)) == len(keys) and not set(keys) & set(rf.real_keys_)
    # a second round of the same rows keeps nothing
    again, report2 = rf.filter(frame, group=group)
    assert len(again) == 0 and report2.dropped['duplicate'] == len(kept) + report.dropped['duplicate']


# ---------------------------------------------------------------- integration with a generator
def test_replayed_rows_through_the_filter(diabetes):
    replay = pytest.importorskip('opal_nb.replay')
    train, holdout, schema = diabetes
    written = pd.concat([train[train.outcome == 'high'].iloc[:4], holdout[holdout.outcome == 'high'].iloc[:20],
                         holdout[holdout.outcome == 'low'].iloc[:3]], ignore_index=True)
    gen = replay.ReplayGenerator(written.to_csv(index=False), style='csv').fit(train, 'outcome', ['sex'], schema=schema)
    rf = RowFilter(schema).fit(train)
    reports = []
    for _ in range(2):   # two rounds; the second gets the remaining rows of the group
        rows = gen.sample(12, group={'outcome': 'high'})
        kept, report = rf.filter(rows, group={'outcome': 'high'})
        reports.append(report)
    total = sum(reports)
    _adds_up(total)
    assert total.rows_in == 24
    assert total.dropped['copy'] == 4 and total.dropped['wrong_group'] == 0
    assert total.rows_kept >= 16


# ---------------------------------------------------------------- column-wise checks agree with the value-by-value rules
def _check_rows_value_by_value(df, schema):
    "The reference: `_numeric_value` / `_level_value` on every value, as `_check_rows` did before it worked by column."
    from opal_nb.filter import _level_value, _numeric_value
    clean, problems = {}, [[] for _ in range(len(df))]
    for name, spec in schema.columns.items():
        lookup, vals = {lvl: lvl for lvl in spec.levels or []}, []
        for i, v in enumerate(df[name].tolist()):
            x, p = _numeric_value(v, spec) if spec.is_numeric else _level_value(v, lookup, spec)
            vals.append(x)
            if p: problems[i].append((name, p))
        clean[name] = vals
    return clean, problems


def _same_values(a, b) -> bool:
    return len(a) == len(b) and all(x == y or (pd.isna(x) and pd.isna(y)) for x, y in zip(a, b))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_check_rows_by_column_matches_value_by_value(mixed, data):
    from opal_nb.filter import _check_rows
    df, schema = mixed
    numbers = [0.0, 1.5, 3.14159, -5.0, 1e9, float('inf'), float('-inf'), np.nan, 33.3, 98.7, 0.123456789, 50.0]
    n = data.draw(st.integers(0, 12))
    cols = {}
    for c in schema.names:
        if schema[c].is_numeric and data.draw(st.booleans()):  # a float column: checked as one array
            cols[c] = pd.Series(data.draw(st.lists(st.sampled_from(numbers + df[c].dropna().tolist()[:5]), min_size=n, max_size=n)), dtype=float)
        else: cols[c] = pd.Series(data.draw(st.lists(st.sampled_from(_pools(df, schema)[c]), min_size=n, max_size=n)), dtype=object)
    frame = pd.DataFrame(cols)
    clean, problems = _check_rows(frame, schema)
    ref_clean, ref_problems = _check_rows_value_by_value(frame, schema)
    assert problems == ref_problems
    ok = [not p for p in problems]
    for c in schema.names:
        assert _same_values(pd.Series(clean[c], dtype=object)[ok].tolist(), pd.Series(ref_clean[c], dtype=object)[ok].tolist()), c


def test_row_keys_by_column_match_row_by_row(mixed):
    from opal_nb.filter import _is_missing
    from opal_nb.core import _py
    df, schema = mixed
    frame = df.assign(nullable=pd.array([None if i % 7 == 0 else i for i in range(len(df))], dtype='Int64'),
                      flag=np.arange(len(df)) % 2 == 0, code=np.arange(len(df)) % 3)
    ref = [tuple(None if _is_missing(v) else _py(v) for v in row) for row in frame.itertuples(index=False, name=None)]
    keys = row_keys(frame)
    assert keys == ref
    assert [tuple(map(type, k)) for k in keys] == [tuple(map(type, k)) for k in ref]  # plain Python values, same types
    assert keys[0][frame.columns.get_loc('nullable')] is None and keys[0][frame.columns.get_loc('score')] in (None, frame.score[0])


# ---------------------------------------------------------------- the near-copy threshold on a sample of real rows
def test_dcr_sample_caps_the_leave_one_out_search(diabetes):
    train, _, schema = diabetes
    full = RowFilter(schema, dcr_sample=None).fit(train)
    default = RowFilter(schema).fit(train)  # 309 rows, fewer than dcr_sample: every row, as before
    np.testing.assert_array_equal(default.real_nn_distances_, full.real_nn_distances_)
    assert len(full.real_nn_distances_) == len(train) and default.dcr_threshold_ == full.dcr_threshold_
    few = RowFilter(schema, dcr_sample=100).fit(train)
    again = RowFilter(schema, dcr_sample=100).fit(train.sample(frac=1, random_state=5))  # row order does not matter
    assert len(few.real_nn_distances_) == 100 and few.dcr_threshold_ == again.dcr_threshold_
    # a sampled row's distance is to its nearest other real row, not to itself: the distances are a subset of the full ones
    assert np.isin(few.real_nn_distances_, full.real_nn_distances_).all() and (few.real_nn_distances_ > 0).all()
    assert abs(np.median(few.real_nn_distances_) / np.median(full.real_nn_distances_) - 1) < 0.2
    for bad in (0, -1, 2.5, True, '100'):
        with pytest.raises(OPALInputError, match='dcr_sample must be an int >= 1 or None'): RowFilter(schema, dcr_sample=bad).fit(train)
