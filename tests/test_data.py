"Tests of opal_nb.data: the default data set, the paper's loaders and released splits, the split protocols."
import copy, functools, http.server, threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from opal_nb.core import OPALInputError
from opal_nb.data import (PAPER_DATASETS, TabularDataset, PaperSplit, ProtocolSplit, load_default, load_paper_dataset,
                          paper_split, imbalanced_split, spurious_split, binarize_attribute, download_file,
                          fetch_paper_dataset, read_paper_source, check_paper_frame)

PAPER_DIR = Path(__file__).parents[1].parent / 'shared/data/opal-paper'
needs_paper = pytest.mark.skipif(not PAPER_DIR.exists(), reason=f'paper data not found at {PAPER_DIR}')
SEEDS = (1, 2, 6, 8, 42)


def canon(df: pd.DataFrame) -> np.ndarray:
    "Rows as a sorted float array: compares two frames as multisets of rows."
    return df.sort_values(list(df.columns)).to_numpy(dtype=float)


# ---------------------------------------------------------------- default data set
def test_default_shape_dtypes_balance():
    ds = load_default()
    assert isinstance(ds, TabularDataset)
    assert ds.frame.shape == (442, 11)
    assert list(ds.frame.columns) == ['age', 'sex', 'bmi', 'bp', 's1', 's2', 's3', 's4', 's5', 's6', 'high_progression']
    assert (ds.target, ds.sensitive) == ('high_progression', ['sex'])
    assert ds.frame.high_progression.dtype == 'int64' and ds.frame.age.dtype == 'int64' and ds.frame.sex.dtype == 'int64'
    assert set(ds.frame.sex) == {1, 2} and set(ds.frame.high_progression) == {0, 1}
    assert ds.frame.isna().sum().sum() == 0
    assert 0.25 < ds.frame.high_progression.mean() < 0.30
    md = ds._repr_markdown_()
    assert '442 rows' in md and '| high_progression | sex | count |' in md


def test_default_target_matches_raw_score():
    from sklearn.datasets import load_diabetes
    raw = load_diabetes(as_frame=True, scaled=False).frame
    ds = load_default()
    assert ((raw.target > 200).astype(int).to_numpy() == ds.frame.high_progression.to_numpy()).all()
    assert np.allclose(raw.bmi, ds.frame.bmi)


def test_default_is_fresh_each_call():
    a = load_default(); a.frame.loc[0, 'age'] = -1
    assert load_default().frame.loc[0, 'age'] != -1


# ---------------------------------------------------------------- paper loaders
@needs_paper
@pytest.mark.parametrize('name', list(PAPER_DATASETS))
def test_load_paper_dataset_from_release(name):
    spec = PAPER_DATASETS[name]
    ds = load_paper_dataset(name, PAPER_DIR)
    assert ds.frame.shape == (spec.n_rows, len(spec.columns))
    assert tuple(ds.frame.columns) == spec.columns
    assert 'Unnamed: 0' not in ds.frame.columns
    assert ds.target == spec.target and ds.sensitive == ([spec.spurious] if spec.spurious else [])
    assert set(ds.frame[spec.target]) == {0, 1}


def test_load_paper_dataset_bad_inputs(tmp_path):
    with pytest.raises(OPALInputError, match="unknown paper data set 'adult'"): load_paper_dataset('adult', tmp_path)
    with pytest.raises(OPALInputError, match='craft: no craft/craft_see_small_raw100'): load_paper_dataset('craft', tmp_path)
    with pytest.raises(OPALInputError, match='download=False'): load_paper_dataset('heart_failure', cache_dir=tmp_path, download=False)
    with pytest.raises(OPALInputError, match='gender cannot be downloaded'): load_paper_dataset('gender', cache_dir=tmp_path)


def test_load_paper_dataset_rejects_a_wrong_file(tmp_path):
    folder = tmp_path / 'craft' / 'craft_see_small_raw100_imbalanced_focus'; folder.mkdir(parents=True)
    pd.DataFrame({'X1': [1.0], 'Target': [0]}).to_csv(folder / 'craft.csv')
    with pytest.raises(OPALInputError, match="craft: expected columns"): load_paper_dataset('craft', tmp_path)


# ---------------------------------------------------------------- download path, against local servers
def _heart_failure_csv(n=299) -> str:
    "A stand-in for UCI's heart-failure CSV: the right columns and rows, made-up values."
    rng = np.random.default_rng(0)
    cols = PAPER_DATASETS['heart_failure'].columns
    df = pd.DataFrame(rng.integers(0, 2, size=(n, len(cols))), columns=cols)
    df['age'] = rng.integers(40, 95, n); df['platelets'] = rng.integers(100000, 400000, n)
    return df.to_csv(index=False)


def _pima_arff(n=768) -> str:
    rng = np.random.default_rng(1)
    head = ['% Pima Indians diabetes (stand-in)', '@relation diabetes']
    head += [f"@attribute '{c}' real" for c in ['preg', 'plas', 'pres', 'skin', 'insu', 'mass', 'pedi', 'age']]
    head += ["@attribute 'class' {tested_negative,tested_positive}", '@data']
    rows = [','.join(map(str, rng.integers(0, 200, 8))) + ',' + rng.choice(['tested_negative', 'tested_positive']) for _ in range(n)]
    return '\n'.join(head + rows) + '\n'


@pytest.fixture
def http_root(tmp_path):
    "A real HTTP server on 127.0.0.1 serving files from a folder; yields (folder, base URL)."
    root = tmp_path / 'www'; root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True); thread.start()
    try: yield root, f'http://127.0.0.1:{server.server_address[1]}'
    finally: server.shutdown(); server.server_close(); thread.join(5)


def test_download_file_over_http_is_atomic(http_root, tmp_path):
    root, base = http_root
    (root / 'x.csv').write_text('a,b\n1,2\n')
    dest = download_file(f'{base}/x.csv', tmp_path / 'cache' / 'x.csv')
    assert dest.read_text() == 'a,b\n1,2\n'
    assert [p.name for p in dest.parent.iterdir()] == ['x.csv']  # no temporary file left
    with pytest.raises(OSError, match='could not download'): download_file(f'{base}/missing.csv', tmp_path / 'cache' / 'y.csv')
    assert not (tmp_path / 'cache' / 'y.csv').exists()


def test_fetch_heart_failure_over_http_then_cached(http_root, tmp_path):
    root, base = http_root
    (root / 'hf.csv').write_text(_heart_failure_csv())
    cache = tmp_path / 'cache'
    path = fetch_paper_dataset('heart_failure', cache, url=f'{base}/hf.csv')
    assert path == cache / 'heart_failure.csv' and sorted(p.name for p in cache.iterdir()) == ['heart_failure.csv']
    ds = load_paper_dataset('heart_failure', cache_dir=cache, download=False)
    assert ds.frame.shape == (299, 13) and ds.frame.age.dtype == 'float64'
    (root / 'hf.csv').unlink()  # the cache is used from now on: no second download
    assert fetch_paper_dataset('heart_failure', cache, url=f'{base}/hf.csv') == path


def test_fetch_pima_arff_from_file_url(tmp_path):
    src = tmp_path / 'diabetes.arff'; src.write_text(_pima_arff())
    path = fetch_paper_dataset('openmlDiabetes', tmp_path / 'cache', url=src.as_uri())
    df = pd.read_csv(path)
    assert tuple(df.columns) == PAPER_DATASETS['openmlDiabetes'].columns and len(df) == 768
    assert set(df['class']) == {0, 1}


def test_fetch_rejects_wrong_shape_and_leaves_no_file(http_root, tmp_path):
    root, base = http_root
    (root / 'short.csv').write_text(_heart_failure_csv(n=10))
    cache = tmp_path / 'cache'
    with pytest.raises(OPALInputError, match='heart_failure: expected 299 rows, found 10'):
        fetch_paper_dataset('heart_failure', cache, url=f'{base}/short.csv')
    assert list(cache.iterdir()) == []


@needs_paper
def test_read_paper_source_matches_release():
    "The UCI file kept in the release converts to exactly the release's heart_failure.csv."
    raw = (PAPER_DIR / 'heart_failure/heart_failure_see_small_raw50/heart_failure_clinical_records_dataset.csv').read_bytes()
    mine = read_paper_source('heart_failure', raw)
    released = load_paper_dataset('heart_failure', PAPER_DIR).frame
    pd.testing.assert_frame_equal(mine, released, check_dtype=False)


# ---------------------------------------------------------------- released splits
@needs_paper
@pytest.mark.parametrize('name', list(PAPER_DATASETS))
@pytest.mark.parametrize('seed', SEEDS)
def test_paper_split_sizes(name, seed):
    spec = PAPER_DATASETS[name]
    for setting in spec.settings:
        for method in ('focus', 'smote', 'duplicate'):
            ps = paper_split(PAPER_DIR, name, setting, seed, method)
            assert isinstance(ps, PaperSplit)
            assert len(ps.train) == spec.n_real and len(ps.test) == spec.n_test
            assert tuple(ps.train.columns) == spec.columns == tuple(ps.test.columns) == tuple(ps.synthetic.columns)
            assert len(ps.synthetic) >= spec.n_real  # at least R synthetic rows (k = 0..5 uses up to R)
            assert ps.synthetic[spec.target].dtype == ps.train[spec.target].dtype
            y = ps.train[spec.target]
            if setting == 'imbalanced':
                assert (y == 0).sum() == 10 and (y == 1).sum() == spec.n_real - 10
            else:
                a = ps.train[spec.spurious] > 0
                sizes = ps.train.groupby([y, a]).size()
                assert sizes[(0, True)] == sizes[(1, False)] == 5
                assert sizes[(0, False)] == sizes[(1, True)] == (spec.n_real - 10) // 2
            assert len(ps.with_synthetic(spec.n_real // 5)) == spec.n_real + spec.n_real // 5


@needs_paper
def test_paper_split_bad_inputs():
    with pytest.raises(OPALInputError, match='no folder craft_see_small_raw100_spurious_focus'): paper_split(PAPER_DIR, 'craft', 'spurious', 1)
    with pytest.raises(OPALInputError, match='is the seed one of'): paper_split(PAPER_DIR, 'openmlDiabetes', 'imbalanced', 3)
    ps = paper_split(PAPER_DIR, 'openmlDiabetes', 'imbalanced', 1, 'smote')
    with pytest.raises(OPALInputError, match='n must be in 0..100'): ps.with_synthetic(101)


# ---------------------------------------------------------------- protocols reproduce the released files
@needs_paper
@pytest.mark.parametrize('name', list(PAPER_DATASETS))
@pytest.mark.parametrize('seed', SEEDS)
def test_protocols_reproduce_release(name, seed):
    spec = PAPER_DATASETS[name]
    full = load_paper_dataset(name, PAPER_DIR).frame
    released = paper_split(PAPER_DIR, name, 'imbalanced', seed)
    mine = imbalanced_split(full, spec.target, spec.n_real, 10, minority_label=0, test_size=spec.n_test, random_state=seed)
    assert np.array_equal(mine.test.to_numpy(dtype=float), released.test.to_numpy(dtype=float))
    assert np.array_equal(canon(mine.train), canon(released.train))
    if spec.spurious:
        released = paper_split(PAPER_DIR, name, 'spurious', seed)
        mine = spurious_split(full, spec.target, spec.spurious, spec.n_real, 5, random_state=seed, test_size=spec.n_test)
        assert np.array_equal(canon(mine.train), canon(released.train))
        assert np.array_equal(mine.test.to_numpy(dtype=float), released.test.to_numpy(dtype=float))


# ---------------------------------------------------------------- protocols on any table
@pytest.fixture(scope='module')
def default_frame():
    return load_default().frame


def _no_overlap(split: ProtocolSplit, df: pd.DataFrame, test_is_rest: bool):
    assert len(split.train.index.intersection(split.test.index)) == 0
    if test_is_rest: assert len(split.train) + len(split.test) == len(df)
    # by value too: no training row has a copy among the test rows
    merged = split.train.merge(split.test, how='inner', on=list(df.columns))
    assert len(merged) == 0


@pytest.mark.parametrize('seed', [0, 1, 7, 42, 2024])
def test_imbalanced_split_sizes(default_frame, seed):
    s = imbalanced_split(default_frame, 'high_progression', n_real=80, n_minority=8, random_state=seed)
    assert (s.train.high_progression == 1).sum() == 8 and (s.train.high_progression == 0).sum() == 72
    assert s.groups.train.tolist() == [8, 72] and s.groups.test.sum() == len(s.test) == 442 - 80
    assert s.groups.loc['minority', 'pool'] == 121
    _no_overlap(s, default_frame, test_is_rest=True)
    t = imbalanced_split(default_frame, 'high_progression', n_real=80, n_minority=8, minority_label=0, test_size=100, random_state=seed)
    assert (t.train.high_progression == 0).sum() == 8 and len(t.test) == 100
    assert t.groups.test.sum() == 100
    _no_overlap(t, default_frame, test_is_rest=False)


@pytest.mark.parametrize('seed', [0, 1, 7, 42, 2024])
def test_spurious_split_sizes(default_frame, seed):
    s = spurious_split(default_frame, 'high_progression', 'sex', n_real=60, n_minority_group=4, random_state=seed, positive=2)
    a = s.train.sex == 2
    sizes = s.train.groupby([s.train.high_progression, a]).size().to_dict()
    assert sizes == {(0, False): 26, (1, True): 26, (0, True): 4, (1, False): 4}
    assert s.groups.train.to_dict() == sizes and s.groups.role.value_counts().to_dict() == {'majority': 2, 'minority': 2}
    # the test set keeps the table's natural mix: its group sizes are the table's minus the training rows
    full = default_frame.groupby([default_frame.high_progression, default_frame.sex == 2]).size()
    assert all(s.groups.test[g] == full[g] - sizes[g] for g in sizes)
    _no_overlap(s, default_frame, test_is_rest=True)
    h = spurious_split(default_frame, 'high_progression', 'sex', n_real=60, n_minority_group=4, random_state=seed, positive=2, test_size=100)
    assert h.groups.train.tolist() == [26, 26, 4, 4] and len(h.test) == h.groups.test.sum() == 100
    _no_overlap(h, default_frame, test_is_rest=False)


def test_spurious_split_odd_majority():
    df = pd.DataFrame({'y': [0, 1] * 50, 'a': [0, 1, 1, 0] * 25, 'x': range(100)})
    s = spurious_split(df, 'y', 'a', n_real=21, n_minority_group=3, random_state=0)
    assert s.groups.train.sum() == 21 and sorted(s.groups.train.tolist()) == [3, 3, 7, 8]


@pytest.mark.parametrize('fn,kw', [(imbalanced_split, dict(n_real=50, n_minority=5)),
                                   (spurious_split, dict(attribute='sex', n_real=50, n_minority_group=5, positive=2))])
def test_protocols_deterministic(default_frame, fn, kw):
    a, b = fn(default_frame, 'high_progression', random_state=3, **kw), fn(default_frame, 'high_progression', random_state=3, **kw)
    pd.testing.assert_frame_equal(a.train, b.train); pd.testing.assert_frame_equal(a.test, b.test)
    c = fn(default_frame, 'high_progression', random_state=4, **kw)
    assert not a.train.index.equals(c.train.index)


def test_protocols_do_not_modify_input(default_frame):
    before = copy.deepcopy(default_frame)
    imbalanced_split(default_frame, 'high_progression', 50, 5, random_state=0, test_size=0.2)
    spurious_split(default_frame, 'high_progression', 'sex', 50, 5, random_state=0, positive=2)
    pd.testing.assert_frame_equal(default_frame, before)


def test_exclude_duplicates():
    # 6 distinct rows of class 1 appear twice each: with exclude_duplicates they are never drawn for training
    df = pd.DataFrame({'x': list(range(40)) + list(range(100, 106)) * 2, 'y': [0] * 30 + [1] * 10 + [1] * 12})
    s = imbalanced_split(df, 'y', n_real=20, n_minority=5, minority_label=1, random_state=0)
    assert not s.train.x.between(100, 105).any() and s.groups.loc['minority', 'pool'] == 10
    with pytest.raises(OPALInputError, match='has 10 rows available for training, 12 were asked for'):
        imbalanced_split(df, 'y', n_real=20, n_minority=12, minority_label=1, random_state=0)
    s = imbalanced_split(df, 'y', n_real=20, n_minority=12, minority_label=1, random_state=0, exclude_duplicates=False)
    assert (s.train.y == 1).sum() == 12


def test_protocol_errors(default_frame):
    df = default_frame
    with pytest.raises(OPALInputError, match="column 'label' is not in the frame"): imbalanced_split(df, 'label')
    with pytest.raises(OPALInputError, match='n_minority=10 must be smaller than n_real=10'): imbalanced_split(df, 'high_progression', 10, 10)
    with pytest.raises(OPALInputError, match='n_real must be a whole number'): imbalanced_split(df, 'high_progression', -5, 1)
    with pytest.raises(OPALInputError, match='test_size=442 must be between 1 and 441'): imbalanced_split(df, 'high_progression', test_size=442)
    with pytest.raises(OPALInputError, match=r"group high_progression == 1 \(minority\) has \d+ rows available"):
        imbalanced_split(df, 'high_progression', 300, 120, test_size=100, random_state=0)
    with pytest.raises(OPALInputError, match="group high_progression != 1 \\(majority\\) has 321 rows available for training, 400"):
        imbalanced_split(df, 'high_progression', 410, 10)
    three = df.assign(high_progression=df.high_progression + (df.bmi > 30))
    with pytest.raises(OPALInputError, match="target 'high_progression' has 3 classes"): spurious_split(three, 'high_progression', 'sex')
    with pytest.raises(OPALInputError, match="'sex' positive: False"): spurious_split(df, 'high_progression', 'sex')
    with pytest.raises(OPALInputError, match='leaves 0 rows for the two majority groups'): spurious_split(df, 'high_progression', 'sex', 10, 5)
    with pytest.raises(OPALInputError, match="sensitive column 'sex' has 1 missing"):
        spurious_split(df.assign(sex=df.sex.where(df.index != 3)), 'high_progression', 'sex')


def test_binarize_attribute():
    assert binarize_attribute(pd.Series([True, False])).tolist() == [True, False]
    assert binarize_attribute(pd.Series(['short', 'long']), positive='long').tolist() == [False, True]
    assert binarize_attribute(pd.Series(['F', 'M', 'F'])).tolist() == [False, True, False]
    assert binarize_attribute(pd.Series([1.5, 3.0]), positive=lambda s: s > 2).tolist() == [False, True]


def test_check_paper_frame_accepts_the_right_shape():
    spec = PAPER_DATASETS['craft']
    df = pd.DataFrame(np.zeros((spec.n_rows, len(spec.columns))), columns=spec.columns)
    assert check_paper_frame(df, 'craft') is df
    with pytest.raises(OPALInputError, match='craft: expected 1000 rows, found 999'): check_paper_frame(df.iloc[1:], 'craft')
