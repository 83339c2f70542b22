"""Reliability and security across modules (issue 6).

- resume: `TabularLM.sample_to_disk` killed (SIGKILL/SIGTERM) in a subprocess resumes to the exact rows of an
  uninterrupted run;
- determinism: two `python -c` processes with the same seed give the same bytes;
- privacy: copies of real rows planted in a generator's output are dropped and counted;
- secrets: a fake key never reaches cache, logs, saved dirs, repr/pickle or committed notebooks;
- load: 100k rows streamed to disk within a measured memory bound (slow);
- hostile input: random and hostile frames through every public entry point (see the second half).
Run the slow ones with `./dev slow` (or `python -m pytest -q -m slow tests/test_reliability.py`).
"""
from __future__ import annotations
import hashlib, json, os, pickle, re, secrets, signal, subprocess, sys, textwrap, time, warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from opal_nb.core import OPALInputError, infer_schema
from opal_nb.generate import TabularLM, read_samples, chunk_seed

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(240)


def small_table(n=300, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({'age': rng.integers(18, 90, n), 'hours': rng.normal(40, 10, n).round(1),
                         'sex': rng.choice(['F', 'M'], n, p=[0.3, 0.7]), 'job': rng.choice(['a', 'b', 'c', 'd'], n),
                         'y': rng.choice([0, 1], n, p=[0.8, 0.2])})


def run_python(code: str, timeout=300, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, 'PYTHONHASHSEED': '0', 'TQDM_DISABLE': '1'}
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env, **kw)


def chunk_bytes(folder: Path) -> bytes:
    return b''.join(p.read_bytes() for p in sorted(Path(folder).glob('chunk-*.csv')))


@pytest.fixture(scope='module')
def saved_lm(tmp_path_factory):
    "A small TabularLM fitted once and saved, so subprocesses load the very same weights."
    d = tmp_path_factory.mktemp('lm')
    lm = TabularLM(max_steps=30, random_state=0, progress=False).fit(small_table(), 'y', ['sex'])
    lm.save(d)
    return d


# ---------------------------------------------------------------- 1. interruption and resume
WRITER = """
import sys
from opal_nb.generate import TabularLM
lm = TabularLM.load(sys.argv[1]); lm.progress = False
lm.sample_to_disk(int(sys.argv[3]), sys.argv[2], {'y': 1}, random_state=7, chunk_size=int(sys.argv[4]))
"""


@pytest.mark.parametrize('sig', [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_resumes_to_the_same_rows(saved_lm, tmp_path, sig):
    n, chunk = 3000, 100
    run = tmp_path / 'run'
    p = subprocess.Popen([sys.executable, '-c', WRITER, str(saved_lm), str(run), str(n), str(chunk)], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done, deadline = 0, time.time() + 180
    while time.time() < deadline and p.poll() is None:
        try: done = json.loads((run / 'progress.json').read_text())['chunks_done']
        except (FileNotFoundError, json.JSONDecodeError, KeyError): done = 0
        if done >= 3: break
        time.sleep(0.05)
    assert p.poll() is None, f"the writer ended before it could be killed: {p.stderr.read().decode()[-2000:]}"
    p.send_signal(sig); p.wait(30)
    assert p.returncode != 0
    progress = json.loads((run / 'progress.json').read_text())
    killed_at = progress['chunks_done']
    assert 3 <= killed_at < n // chunk, killed_at
    assert len(list(run.glob('chunk-*.csv'))) in (killed_at, killed_at + 1)  # a chunk may be renamed before progress
    with pytest.raises(OPALInputError, match='unfinished'): read_samples(run)
    assert len(read_samples(run, partial=True)) == killed_at * chunk
    # resume in this process, and run uninterrupted in another folder
    lm = TabularLM.load(saved_lm); lm.progress = False
    lm.sample_to_disk(n, run, {'y': 1}, random_state=7, chunk_size=chunk)
    whole = tmp_path / 'whole'
    lm.sample_to_disk(n, whole, {'y': 1}, random_state=7, chunk_size=chunk)
    assert chunk_bytes(run) == chunk_bytes(whole)
    assert not list(run.glob('.*.part'))  # a killed write's temporary file is removed on resume
    rows = read_samples(run)
    assert len(rows) == n and set(rows.y) == {1}
    print(f"\nkilled with {sig.name} after {killed_at} of {n // chunk} chunks; resumed to {len(rows)} identical rows")


def test_resume_refuses_another_run(saved_lm, tmp_path):
    lm = TabularLM.load(saved_lm); lm.progress = False
    lm.sample_to_disk(200, tmp_path, {'y': 1}, random_state=3, chunk_size=50, max_chunks=1)
    for kw, what in [(dict(n=300), 'n'), (dict(chunk_size=40), 'chunk_size'), (dict(random_state=4), 'random_state'),
                     (dict(group={'y': 0}), 'group')]:
        args = dict(n=200, path=tmp_path, group={'y': 1}, random_state=3, chunk_size=50) | kw
        with pytest.raises(OPALInputError, match=f'its {what} differ'): lm.sample_to_disk(**args)
    other = TabularLM(max_steps=31, random_state=0, progress=False).fit(small_table(), 'y', ['sex'])
    with pytest.raises(OPALInputError, match='its model differ'): other.sample_to_disk(200, tmp_path, {'y': 1}, random_state=3, chunk_size=50)
    # resuming without a seed uses the saved one
    lm.sample_to_disk(200, tmp_path, {'y': 1}, chunk_size=50)
    ref = pd.concat([lm.sample(50, {'y': 1}, random_state=chunk_seed(3, k)) for k in range(4)], ignore_index=True)
    pd.testing.assert_frame_equal(read_samples(tmp_path), ref)


def test_sample_to_disk_bad_arguments(saved_lm, tmp_path):
    lm = TabularLM.load(saved_lm)
    for kw, msg in [(dict(n=-1), 'n must be an int >= 0'), (dict(n=10, chunk_size=0), 'chunk_size must be an int >= 1'),
                    (dict(n=10, group={'y': 5}), "group value 5 of column 'y'"), (dict(n=10, group={'age': 1000}), 'outside its range')]:
        with pytest.raises(OPALInputError, match=re.escape(msg)): lm.sample_to_disk(path=tmp_path / 'x', **kw)
    (tmp_path / 'y').mkdir(); (tmp_path / 'y' / 'chunk-000000.csv').write_text('a\n1\n')
    with pytest.raises(OPALInputError, match='no progress.json'): lm.sample_to_disk(10, tmp_path / 'y')
    with pytest.raises(OPALInputError, match='no sample_to_disk run'): read_samples(tmp_path / 'y')
    assert len(read_samples(lm.sample_to_disk(0, tmp_path / 'z'))) == 0


def test_a_run_started_by_a_fitted_model_resumes_with_its_saved_copy(tmp_path):
    "The realistic crash: fit, save, sample_to_disk, crash; later load the saved model and resume."
    lm = TabularLM(max_steps=3, random_state=0, progress=False).fit(small_table(), 'y')
    lm.save(tmp_path / 'model')
    lm.sample_to_disk(300, tmp_path / 'run', random_state=2, chunk_size=100, max_chunks=1)
    back = TabularLM.load(tmp_path / 'model'); back.progress = False
    back.sample_to_disk(300, tmp_path / 'run', random_state=2, chunk_size=100)
    lm.sample_to_disk(300, tmp_path / 'whole', random_state=2, chunk_size=100)
    assert chunk_bytes(tmp_path / 'run') == chunk_bytes(tmp_path / 'whole') and len(read_samples(tmp_path / 'run')) == 300


# ---------------------------------------------------------------- 4. determinism across processes
DETERMINISM = """
import hashlib, warnings
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd
from sklearn.linear_model import LogisticRegression
from opal_nb.generate import TabularLM
from opal_nb.oversample import OPALOverSampler, GroupOverSampler
from opal_nb.experiments import compare_methods
rng = np.random.default_rng(0); n = 300
df = pd.DataFrame({'age': rng.integers(18, 90, n), 'hours': rng.normal(40, 10, n).round(1),
                   'sex': rng.choice(['F', 'M'], n, p=[0.3, 0.7]), 'job': rng.choice(['a', 'b', 'c', 'd'], n),
                   'y': rng.choice([0, 1], n, p=[0.8, 0.2])})
h = lambda d: hashlib.sha256(d.to_csv(index=False).encode()).hexdigest()
lm = TabularLM(max_steps=20, random_state=5, progress=False).fit(df, 'y', ['sex'])
print('tabular', h(lm.sample(300, {'y': 1}, random_state=3)))
X, y = df.drop(columns='y'), df['y']
Xr, yr = OPALOverSampler(TabularLM(max_steps=5, progress=False), random_state=9, progress=False).fit_resample(X, y)
print('opal', h(Xr.assign(y=yr)))
tidy = compare_methods(df.iloc[:200], df.iloc[200:], 'y', 'sex', methods={'none': None, 'smote': GroupOverSampler('smote'),
                       'opal': OPALOverSampler(TabularLM(max_steps=5, progress=False), progress=False)},
                       classifiers={'logistic': LogisticRegression(max_iter=500)}, seeds=(1, 2), progress=False)
print('compare', h(tidy))
"""


def test_same_seed_same_bytes_in_two_processes():
    outs = []
    for _ in range(2):
        r = run_python(DETERMINISM)
        assert r.returncode == 0, r.stderr[-3000:]
        outs.append(dict(line.split() for line in r.stdout.strip().splitlines()))
    assert set(outs[0]) == {'tabular', 'opal', 'compare'}
    assert outs[0] == outs[1], outs


# ---------------------------------------------------------------- 5. privacy: planted copies are dropped and counted
def test_planted_copies_are_dropped_and_counted():
    from opal_nb.prompt import rows_to_text
    from opal_nb.replay import ReplayGenerator
    from opal_nb.oversample import OPALOverSampler
    real = small_table(200, seed=1)
    X, y = real.drop(columns='y'), real['y']
    schema = infer_schema(real, 'y')
    minority = real[real.y == 1]
    planted = minority.iloc[:8]
    rng = np.random.default_rng(5)
    fresh = minority.sample(60, replace=True, random_state=2).reset_index(drop=True)
    fresh = fresh.assign(age=rng.integers(18, 90, len(fresh)), hours=rng.normal(40, 10, len(fresh)).round(1) + 0.05)
    lines = rows_to_text(pd.concat([planted, fresh], ignore_index=True), schema, shuffle=True, random_state=0)
    before = real.copy()
    sampler = OPALOverSampler(ReplayGenerator('\n'.join(lines)), random_state=0, progress=False, on_shortfall='warn', generated_share=1.0)
    with pytest.warns(Warning): Xr, yr = sampler.fit_resample(X, y)  # too few fresh rows for every group: a shortfall
    pd.testing.assert_frame_equal(real, before)
    report = sampler.filter_report_
    m = report.memorization
    assert {'rows_checked', 'share_identical', 'share_near_copy'} <= set(m)
    assert report.dropped['copy'] >= 1 and report.identical >= report.dropped['copy']
    synthetic = Xr[sampler.synthetic_mask_].assign(y=yr[sampler.synthetic_mask_])
    real_keys = set(map(tuple, real.astype(str).to_numpy()))
    assert not any(tuple(r) in real_keys for r in synthetic.astype(str).to_numpy()), "a copy of a real row was kept"
    assert m['share_identical'] > 0
    print(f"\nplanted {len(planted)} copies; report: {report.summary()}")


def test_every_filter_report_has_memorization():
    from opal_nb.oversample import OPALOverSampler
    real = small_table(200)
    sampler = OPALOverSampler(TabularLM(max_steps=5, progress=False), random_state=0, progress=False)
    sampler.fit_resample(real.drop(columns='y'), real['y'])
    report = sampler.filter_report_
    m = report.memorization
    assert m['rows_checked'] > 0 and 0 <= m['share_identical'] <= 1 and m['dcr_threshold'] == m['dcr_threshold']
    assert 'identical to a real row' in report.summary()


# ---------------------------------------------------------------- 6. secrets
KEY_PATTERN = re.compile(r'sk-[A-Za-z0-9_\-]{16,}')


def test_fake_key_appears_nowhere(tmp_path, monkeypatch, caplog, capsys):
    import logging
    from test_chat import ChatServer, PEOPLE, GROUP, KEY_ENV
    from opal_nb.chat import ChatLM, ChatLMError
    from opal_nb.oversample import OPALOverSampler
    key = 'sk-opalfake-' + secrets.token_hex(16)
    monkeypatch.setenv(KEY_ENV, key)
    caplog.set_level(logging.DEBUG)
    s = ChatServer().start()
    bad = ChatServer(lambda i, body: ('status', 401, f'invalid key {key}')).start()
    try:
        kw = dict(model='row-writer', api_key_env=KEY_ENV, n_examples=3, rows_per_request=2, backoff=0.01, max_backoff=0.05,
                  timeout=5, cache_dir=tmp_path / 'cache', random_state=1)
        lm = ChatLM(base_url=s.url, **kw).fit(PEOPLE, 'income', ['sex'])
        rows = lm.sample(4, group=GROUP)
        X, y = PEOPLE.drop(columns='income'), PEOPLE['income']
        sampler = OPALOverSampler(ChatLM(base_url=s.url, **kw), random_state=0, progress=False, sensitive=['sex'])
        Xr, yr = sampler.fit_resample(X, y)
        with pytest.raises(ChatLMError) as e: ChatLM(base_url=bad.url, **(kw | dict(cache_dir=tmp_path / 'c2'))).fit(PEOPLE, 'income', ['sex']).sample(2, group=GROUP)
    finally:
        s.stop(); bad.stop()
    assert all(h['Authorization'] == f'Bearer {key}' for h in s.headers)  # the key was really used
    assert len(rows) == 4 and sampler.synthetic_mask_.sum() > 0
    tab = TabularLM(max_steps=3, random_state=0, progress=False).fit(small_table(), 'y')
    tab.save(tmp_path / 'tab'); tab.sample_to_disk(20, tmp_path / 'run', chunk_size=10)
    out = capsys.readouterr()
    places = {'cache': b''.join(p.read_bytes() for p in (tmp_path).rglob('*') if p.is_file()).decode('utf-8', 'replace'),
              'logs': caplog.text, 'stdout': out.out, 'stderr': out.err, 'error': str(e.value) + repr(e.value),
              'repr': repr(lm) + repr(sampler) + repr(sampler.filter_report_), 'pickle': (pickle.dumps(lm) + pickle.dumps(sampler)).decode('latin-1'),
              'frames': Xr.to_csv() + rows.to_csv()}
    leaked = [k for k, v in places.items() if key in v or key[3:] in v]
    assert not leaked, leaked
    assert 'invalid key' in str(e.value) or KEY_ENV in str(e.value)


def test_committed_notebooks_hold_no_key():
    files = sorted((ROOT / 'nbs').rglob('*.ipynb')) + sorted(ROOT.glob('*.md')) + sorted((ROOT / 'opal_nb').glob('*.py'))
    assert len(files) > 10
    hits = {str(f.relative_to(ROOT)): KEY_PATTERN.findall(f.read_text(errors='replace')) for f in files}
    assert not {f: h for f, h in hits.items() if h}


# ================================================================ 2. hostile input
# Every public entry point gets each hostile frame; it must return a result or raise OPALInputError whose
# message names the column, the group, or the frame-level problem; never another exception, never a hang,
# never a modified input frame. CASES counts what was tried (printed at the end of the module with -s).
from hypothesis import HealthCheck, given, settings, strategies as st
from opal_nb.chat import ChatLM
from opal_nb.replay import ReplayGenerator
from opal_nb.filter import RowFilter
from opal_nb.oversample import OPALOverSampler, oversample
from opal_nb.data import imbalanced_split, spurious_split

CASES = {'explicit': 0, 'hypothesis': 0, 'ok': 0, 'refused': 0}
FRAME_LEVEL = ('empty', 'DataFrame', 'duplicate column names', 'column name', 'frame', 'no columns')


@pytest.fixture(scope='module', autouse=True)
def count_cases():
    yield
    print(f"\nhostile-input cases tried: {CASES}")



def hostile_base(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({'age': rng.integers(18, 90, n), 'hours': rng.normal(40, 10, n).round(1),
                         'sex': rng.choice(['F', 'M'], n), 'y': rng.choice([0, 1], n, p=[0.7, 0.3])})

def hostile_cases():
    "(name, df, target, sensitive)"
    b = hostile_base()
    cases = []
    add = lambda name, df, target='y', sens=('sex',): cases.append((name, df, target, list(sens)))
    add('empty', b.iloc[:0])
    add('one_row', b.iloc[:1])
    add('one_class', b.assign(y=0))
    add('one_row_per_class', b.iloc[:2].assign(y=[0, 1]))
    add('nan_numeric', b.assign(hours=b.hours.where(b.index % 3 > 0)))
    add('all_nan_numeric', b.assign(hours=np.nan))
    add('inf_numeric', b.assign(hours=b.hours.where(b.index != 2, np.inf)))
    add('neg_inf_numeric', b.assign(hours=b.hours.where(b.index != 2, -np.inf)))
    add('nan_target', b.assign(y=b.y.astype(float).where(b.index != 1)))
    add('nan_sensitive', b.assign(sex=b.sex.where(b.index != 1)))
    add('nan_category', b.assign(job=np.where(b.index % 4 == 0, None, 'x')))
    add('mixed_types', b.assign(age=b.age.astype(object).where(b.index != 3, 'n/a')))
    add('mixed_types_category', b.assign(sex=b.sex.astype(object).where(b.index != 3, 7)))
    add('unicode_levels', b.assign(sex=np.where(b.index % 2, 'Ωμέγα 😀', '女性\u200b')))
    add('very_long_strings', b.assign(job=np.where(b.index % 2, 'x' * 5000, 'y' * 3000 + ', is .')))
    add('thousand_categories', hostile_base(1200).assign(code=[f'c{i}' for i in range(1200)]))
    add('col_spaces', b.rename(columns={'age': 'my age'}))
    add('col_comma', b.rename(columns={'age': 'age, years'}))
    add('col_is', b.rename(columns={'age': 'age is'}))
    add('col_is_mid', b.rename(columns={'age': 'the age is old'}))
    add('col_newline', b.rename(columns={'age': 'age\nyears'}))
    add('col_dot', b.rename(columns={'hours': 'hours.per.week'}))
    add('col_empty_name', b.rename(columns={'age': ''}))
    add('duplicate_names', b.set_axis(['age', 'age', 'sex', 'y'], axis=1))
    add('int_column_name', b.rename(columns={'age': 0}))
    add('huge_numbers', b.assign(big=np.where(b.index % 2, 1e300, -1e300)))
    add('huge_numbers_mixed', b.assign(big=b.age * 1e250))
    add('tiny_numbers', b.assign(tiny=b.age * 1e-300))
    add('negative_zero', b.assign(z=np.where(b.index % 2, -0.0, 0.0)))
    add('values_with_is', b.assign(sex=np.where(b.index % 2, 'F is M', 'a, b. c')))
    add('values_newline', b.assign(sex=np.where(b.index % 2, 'F\nM', 'M')))
    add('bool_target', b.assign(y=b.y.astype(bool)))
    add('string_target', b.assign(y=np.where(b.y == 1, 'yes', 'no')))
    add('float_target', b.assign(y=b.y.astype(float) + 0.5))
    add('many_class_target', b.assign(y=np.arange(len(b)) % 7))
    add('target_missing', b, 'label')
    add('sensitive_missing', b, 'y', ['gender'])
    add('target_is_sensitive', b, 'y', ['y'])
    add('datetime_col', b.assign(when=pd.Timestamp('2020-01-01') + pd.to_timedelta(b.age, 'D')))
    add('constant_column', b.assign(k=1))
    add('only_target', b[['y']], 'y', [])
    add('category_dtype', b.assign(sex=b.sex.astype('category')))
    add('nullable_int', b.assign(age=b.age.astype('Int64').where(b.index != 4)))
    add('string_dtype', b.assign(sex=b.sex.astype('string')))
    add('bool_feature', b.assign(flag=b.index % 2 == 0))
    add('object_numbers', b.assign(hours=b.hours.astype(object)))
    add('numeric_strings', b.assign(hours=b.hours.astype(str)))
    add('non_default_index', b.set_index(b.index * 7 + 3))
    add('duplicate_index', b.set_axis([0] * len(b), axis=0))
    add('multiindex_columns', b.set_axis(pd.MultiIndex.from_tuples([('a', c) for c in b.columns]), axis=1), ('a', 'y'), [])
    add('not_a_frame', b.to_numpy(), 'y', [])
    add('sensitive_one_level', b.assign(sex='F'))
    add('group_single_row', b.assign(y=(b.index == 0).astype(int)))
    return cases


def e_opal(df, t, s, tmp):
    if isinstance(df, np.ndarray): X, y = df[:, :-1], df[:, -1]  # numpy input, as imbalanced-learn allows
    else: X, y = (df.drop(columns=t), df[t]) if t in df.columns else (df, None)
    return OPALOverSampler(TabularLM(max_steps=5, progress=False), random_state=0, sensitive=s or None, progress=False).fit_resample(X, y)
def e_oversample(df, t, s, tmp): return oversample(df, t, s, generator=TabularLM(max_steps=5, progress=False), random_state=0, progress=False)
def e_tabular(df, t, s, tmp): return TabularLM(max_steps=5, progress=False, random_state=0).fit(df, t, s).sample(5)
def e_chat(df, t, s, tmp): return ChatLM('m', base_url='http://127.0.0.1:9', cache_dir=tmp, api_key_env=None).fit(df, t, s)
def e_replay(df, t, s, tmp): return ReplayGenerator('a is 1').fit(df, t, s).sample(3)
def e_filter(df, t, s, tmp): return RowFilter(infer_schema(df, t, s)).fit(df)
def e_imbalanced(df, t, s, tmp): return imbalanced_split(df, t, n_real=min(20, len(df)), n_minority=2, random_state=0)
def e_spurious(df, t, s, tmp): return spurious_split(df, t, s[0] if s else 'sex', n_real=min(20, len(df)), n_minority_group=2, random_state=0)
ENTRIES = dict(opal=e_opal, oversample=e_oversample, tabular=e_tabular, chat=e_chat, replay=e_replay, filter=e_filter,
               imbalanced_split=e_imbalanced, spurious_split=e_spurious)


def names_the_problem(msg: str, df, target, sensitive) -> bool:
    "The message names a column (of the frame, the target or a sensitive one), a group, or a frame-level problem."
    cols = [str(c) for c in getattr(df, 'columns', [])] + [str(target)] + [str(c) for c in sensitive]
    if msg.startswith(('y ', 'y:', 'X ')) or 'n_real' in msg: return True  # fit_resample's arguments; a split's sizes
    return any(repr(c) in msg or (len(c) > 1 and c in msg) for c in cols) or 'group' in msg or any(w in msg for w in FRAME_LEVEL)


def check_entry(entry, df, target, sensitive, tmp, kind='explicit'):
    "Run one entry point on one frame; returns 'ok' or the OPALInputError message."
    before = df.copy()
    CASES[kind] += 1
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        try:
            ENTRIES[entry](df, target, list(sensitive), tmp)
            outcome = 'ok'
        except OPALInputError as e:
            outcome = str(e)
            assert names_the_problem(outcome, df, target, sensitive), f"{entry}: message names no column, group or frame problem: {outcome}"
    if isinstance(df, pd.DataFrame): pd.testing.assert_frame_equal(df, before)
    else: np.testing.assert_array_equal(df, before)
    CASES['ok' if outcome == 'ok' else 'refused'] += 1
    return outcome


HOSTILE = hostile_cases()


@pytest.mark.timeout(120)
@pytest.mark.parametrize('entry', list(ENTRIES))
@pytest.mark.parametrize('case', range(len(HOSTILE)), ids=[c[0] for c in HOSTILE])
def test_hostile_frame(case, entry, tmp_path):
    name, df, target, sensitive = HOSTILE[case]
    outcome = check_entry(entry, df, target, sensitive, tmp_path)
    splits_need_not = {'all_nan_numeric', 'target_is_sensitive'}  # a split neither infers a schema nor takes sensitive columns
    if name in SAMPLERS_TAKE and entry in ('opal', 'oversample'): assert outcome == 'ok', f"{name} through {entry} was refused: {outcome}"
    elif name in MUST_REFUSE and not (entry == 'imbalanced_split' and name in splits_need_not):
        assert outcome != 'ok', f"{name} through {entry} was accepted"


MUST_REFUSE = {'empty', 'one_row', 'one_class', 'inf_numeric', 'neg_inf_numeric', 'nan_target', 'mixed_types',
               'mixed_types_category', 'duplicate_names', 'int_column_name', 'target_missing', 'target_is_sensitive',
               'datetime_col', 'not_a_frame', 'all_nan_numeric'} 
SAMPLERS_TAKE = {'datetime_col'}  # the samplers model dates as days (times_as_days); the generators, the filter and the splits refuse them


def test_hostile_results_are_sane(tmp_path):
    "Frames that are accepted give results of the right shape (numbers kept as given: 1e300, -0.0, long strings)."
    b = hostile_base(60)
    for df in [b.assign(z=np.where(b.index % 2, -0.0, 0.0)), b.assign(job=np.where(b.index % 2, 'x' * 5000, 'é, is .')),
               b.rename(columns={'age': 'my age'})]:
        res = oversample(df, 'y', ['sex'], generator='duplicate', random_state=0)
        assert list(res.frame.columns[:len(df.columns)]) == list(df.columns) and len(res.frame) >= len(df)
        X, y = df.drop(columns='y'), df['y']
        Xr, yr = OPALOverSampler(TabularLM(max_steps=5, progress=False), random_state=0, progress=False).fit_resample(X, y)
        assert list(Xr.columns) == list(X.columns) and len(Xr) == len(yr) > len(X)
        assert Xr.dtypes.tolist() == X.dtypes.tolist()
    big = b.assign(big=np.where(b.index % 2, 1e300, -1e300))
    with pytest.raises(OPALInputError, match="column 'big' needs"): TabularLM(max_steps=1, progress=False).fit(big, 'y')
    assert oversample(big, 'y', generator='duplicate', random_state=0).frame['big'].abs().max() == 1e300


# ---------------------------------------------------------------- random frames (hypothesis)
NAMES = st.one_of(st.sampled_from(['a', 'b c', 'x, y', 'p is q', 'dot.name', 'new\nline', '', ' pad ', 'ü名', 'y', 'a']),
                  st.text(min_size=0, max_size=12))
VALUES = {
    'int': st.integers(-10 ** 6, 10 ** 6),
    'float': st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), st.sampled_from([-0.0, 1e300, -1e300, np.nan])),
    'text': st.one_of(st.text(max_size=30), st.sampled_from(['a, b', 'c is d', 'e.', '"q"', 'x' * 2000, 'NaN', 'None', ''])),
    'mixed': st.one_of(st.integers(-5, 5), st.text(max_size=5), st.none(), st.floats(allow_nan=True)),
}


@st.composite
def random_frames(draw):
    n = draw(st.integers(0, 25))
    kinds = draw(st.lists(st.sampled_from(list(VALUES)), min_size=0, max_size=4))
    names = [draw(NAMES) for _ in kinds]
    cols = {}
    data = [[draw(VALUES[k]) for _ in range(n)] for k in kinds]
    labels = draw(st.sampled_from([[0, 1], ['no', 'yes'], [0], [0, 1, 2], [0.0, np.nan]]))
    y = [draw(st.sampled_from(labels)) for _ in range(n)]
    sens = draw(st.booleans()) and n > 0
    s = [draw(st.sampled_from(['F', 'M'])) for _ in range(n)]
    frame = pd.DataFrame(dict(enumerate(data)), index=range(n)) if kinds else pd.DataFrame(index=range(n))
    frame.columns = names
    frame['target'] = pd.Series(y, dtype=object if any(isinstance(v, str) for v in y) else float if np.nan in y or any(v != v for v in y) else int) if n else pd.Series(dtype=int)
    if sens: frame['group'] = s
    return frame, 'target', ['group'] if sens else []


CHEAP = ['chat', 'replay', 'filter', 'imbalanced_split']


def _random_frames_test(max_examples):
    @pytest.mark.timeout(600)
    @settings(max_examples=max_examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(case=random_frames())
    def test(entry, case, tmp_path_factory):
        df, target, sensitive = case
        check_entry(entry, df, target, sensitive, tmp_path_factory.mktemp('h'), kind='hypothesis')
    return test


test_random_frames_cheap = pytest.mark.parametrize('entry', CHEAP)(_random_frames_test(60))
test_random_frames_training = pytest.mark.parametrize('entry', ['tabular', 'opal'])(_random_frames_test(15))
test_random_frames_training_slow = pytest.mark.slow(pytest.mark.parametrize('entry', ['tabular', 'opal', 'oversample'])(_random_frames_test(150)))


# ================================================================ 3. text-format injection
from opal_nb.prompt import rows_to_text, parse_rows

HOSTILE_TEXT = st.one_of(st.sampled_from([', ', ' is ', '.', 'a, b is c.', '"quoted"', "it's", 'x is y, z is w', '\n', 'é 名 😀',
                                          ' lead', 'trail ', 'None', 'nan', '', '-', '1.5', '\\', '{}', 'age is 1']),
                         st.text(min_size=0, max_size=15))


@pytest.mark.timeout(300)
@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(values=st.lists(HOSTILE_TEXT, min_size=2, max_size=8), name=st.one_of(NAMES, st.sampled_from(['note', 'a.b', 'x,y', 'is'])),
       ages=st.lists(st.integers(-1000, 1000), min_size=8, max_size=8))
def test_text_round_trips_through_replay_or_is_refused(values, name, ages):
    "Rows written as text and read back by ReplayGenerator are exactly the rows, or fit refuses the column by name."
    n = len(values)
    df = pd.DataFrame({'age': ages[:n], name: values, 'y': (['no', 'yes'] * n)[:n]}) if name not in ('age', 'y') else None
    if df is None: return
    CASES['hypothesis'] += 1
    try:
        schema = infer_schema(df, 'y')
        text = '\n'.join(rows_to_text(df, schema))
        gen = ReplayGenerator(text).fit(df, 'y')
    except OPALInputError as e:
        assert repr(name) in str(e) or any(repr(v) in str(e) for v in values) or 'mixes types' in str(e), str(e)
        CASES['refused'] += 1
        return
    CASES['ok'] += 1
    assert gen.parse_rate_ == 1.0, gen.rejected_
    pd.testing.assert_frame_equal(gen.rows_.reset_index(drop=True), df.reset_index(drop=True), check_dtype=False)
    assert list(gen.rows_.columns) == list(df.columns)


INJECTIONS = [
    "age is 40, sex is Female, hours is 40.0, income is >50K, evil is 1.",           # an extra column
    "age is __import__('os').system('touch {marker}'), sex is Female, hours is 40.0, income is >50K.",
    "age is 40, sex is Female, hours is eval('open(\"{marker}\", \"w\")'), income is >50K.",
    "age is 40, sex is Female, hours is 40.0, income is >50K. age is 41, sex is Male, hours is 1.0, income is <=50K.",
    "age is 40, sex is Female, sex is Male, hours is 40.0, income is >50K.",          # a column twice
    "{{'age': 40, 'sex': 'Female', 'hours': 40.0, 'income': '>50K', 'extra': 1}}",
    "age is 40; import os; os.system('touch {marker}'), sex is Female, hours is 40.0, income is >50K.",
    'age is 40, sex is "Female, evil is 1", hours is 40.0, income is >50K.',
]


def test_chat_answers_cannot_add_columns_or_run_code(tmp_path, monkeypatch):
    from test_chat import ChatServer, PEOPLE, GROUP, KEY_ENV
    marker = tmp_path / 'pwned'
    valid = "age is 44, sex is Female, hours is 38.5, income is >50K."
    answer = '\n'.join([valid] + [i.format(marker=marker) for i in INJECTIONS])
    s = ChatServer(lambda i, body: ('text', answer)).start()
    try:
        lm = ChatLM('row-writer', base_url=s.url, api_key_env=None, n_examples=3, rows_per_request=2, backoff=0.01,
                    timeout=5, cache_dir=tmp_path / 'c', random_state=1, max_requests=3).fit(PEOPLE, 'income', ['sex'])
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            rows = lm.sample(3, group=GROUP)
    finally:
        s.stop()
    assert not marker.exists()
    assert list(rows.columns) == list(PEOPLE.columns) and rows.dtypes.tolist() == PEOPLE.dtypes.tolist()
    assert len(rows) >= 1 and set(rows.age) == {44} and set(rows.sex) == {'Female'}
    assert len(lm.rejected_) >= len(INJECTIONS)
    CASES['explicit'] += len(INJECTIONS)


# ================================================================ 7. load: 100k rows in bounded memory
def _bench_memory():
    import importlib.util
    spec = importlib.util.spec_from_file_location('bench_memory', ROOT / 'bench' / 'bench_memory.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_100k_rows_stream_in_bounded_memory(saved_lm):
    """Bound: streaming 100k rows in chunks of 5000 peaks at most 8 MB (+25%) above 10k rows on the Python heap
    (tracemalloc), and its peak RSS grows less than 64 MB over 10k rows, while holding 100k rows in memory does not."""
    bench = _bench_memory()
    small, big = (bench.measure(saved_lm, n, 5000, 'disk', trace=True) for n in (10_000, 100_000))
    assert small['rows'] == 10_000 and big['rows'] == 100_000
    print(f"\n10k: heap peak {small['python_heap_peak_mb']:.1f} MB, RSS {small['peak_mb']:.0f} MB; "
          f"100k: heap peak {big['python_heap_peak_mb']:.1f} MB, RSS {big['peak_mb']:.0f} MB, {big['rows_per_s']:.0f} rows/s (traced)")
    assert big['python_heap_peak_mb'] <= 1.25 * small['python_heap_peak_mb'] + 8
    assert big['peak_mb'] - small['peak_mb'] < 64
    whole = bench.measure(saved_lm, 100_000, 5000, 'memory', trace=True)
    print(f"sample(100k) in memory: heap peak {whole['python_heap_peak_mb']:.1f} MB")
    assert whole['python_heap_peak_mb'] > 2 * big['python_heap_peak_mb']  # the bound is the chunking's doing


# ================================================================ huge finite numbers
def test_huge_finite_numbers_with_decimals_are_not_called_infinite():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({'x': np.where(np.arange(40) % 5 == 0, 1e307, rng.normal(0, 1, 40).round(2)), 'y': [0] * 30 + [1] * 10})
    assert np.isfinite(df.x).all()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        res = oversample(df, 'y', generator='duplicate', random_state=0)
    assert np.isfinite(res.frame.x).all() and res.frame.x.max() == 1e307
