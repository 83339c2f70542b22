"ReplayGenerator on the paper's released GPT-4 answers, and its sampling protocol."
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from opal_nb.core import OPALInputError, BaseGenerator
from opal_nb.replay import ReplayGenerator, read_source

PAPER = Path(__file__).resolve().parent.parent.parent / 'shared' / 'data' / 'opal-paper'
TARGETS = {'openmlDiabetes': 'class', 'heart_failure': 'DEATH_EVENT', 'gender': 'gender', 'craft': 'Target'}
needs_paper = pytest.mark.skipif(not PAPER.is_dir(), reason='paper data (../shared/data/opal-paper) not present')


def _train_for(response: Path) -> tuple[pd.DataFrame, str]:
    "The real training rows of the seed a GPT-4 answer file was written from (the prompt's own rows)."
    dataset, raw, seed = re.fullmatch(r'(.+)_raw(\d+)_rand(\d+)\.txt', response.name).groups()
    # the released answers are those of the spurious setting (craft has only the imbalanced one):
    # their first line is the first line of that folder's 4-rand<S>.txt
    setting = 'imbalanced' if dataset == 'craft' else 'spurious'
    folder = PAPER / dataset / f'{dataset}_see_small_raw{raw}_{setting}_focus'
    train = next(folder.glob(f'train_colsbase_size{raw}_total*_rand{seed}.csv'))
    return pd.read_csv(train).drop(columns=['Unnamed: 0'], errors='ignore'), TARGETS[dataset]


@needs_paper
def test_parse_rate_on_the_released_gpt4_answers():
    files = sorted((PAPER / 'gpt4-responses').glob('*.txt'))
    assert len(files) == 20
    rows = []
    for f in files:
        real, target = _train_for(f)
        gen = ReplayGenerator(f).fit(real, target=target)
        strict = ReplayGenerator(f, check_range=True).fit(real, target=target)
        rows.append(dict(file=f.name, lines=gen.parsed_.n_lines, rows=len(gen.rows_), parse_rate=gen.parse_rate_,
                         in_range=strict.parse_rate_, reasons=dict(gen.parsed_.reasons())))
        assert gen.parse_rate_ > 0.9, (f.name, gen.rejected_.head())
        assert strict.parse_rate_ <= gen.parse_rate_
        assert list(gen.rows_.columns) == list(real.columns)
    table = pd.DataFrame(rows)
    print('\n' + table.to_string(index=False))
    print(f"overall: {table.rows.sum()} rows from {table.lines.sum()} lines = {table.rows.sum() / table.lines.sum():.4f}")


@needs_paper
@pytest.mark.parametrize('folder', sorted(p.name for p in PAPER.glob('*/*_focus')) if PAPER.is_dir() else [])
def test_replay_matches_the_authors_conversion(folder):
    "Parsing `4-rand<S>.txt` gives the same rows (as a multiset) as the authors' `train_generate` CSV."
    path = next(PAPER.glob(f'*/{folder}'))
    target = TARGETS[path.parent.name]
    for seed in (1, 2, 6, 8, 42):
        real = pd.read_csv(next(path.glob(f'train_colsbase_size*_rand{seed}.csv'))).drop(columns=['Unnamed: 0'], errors='ignore')
        gen = ReplayGenerator(path / f'4-rand{seed}.txt').fit(real, target=target)
        theirs = pd.read_csv(path / f'train_generate_colsbase_rand{seed}.csv')[list(real.columns)]
        ours = gen.rows_.astype(float).round(6)
        theirs = theirs.astype(float).round(6)
        key = list(real.columns)
        pd.testing.assert_frame_equal(ours.sort_values(key).reset_index(drop=True),
                                      theirs.sort_values(key).reset_index(drop=True), check_dtype=False)


@needs_paper
def test_csv_source_and_group_sampling_on_paper_data():
    folder = PAPER / 'openmlDiabetes' / 'openmlDiabetes_see_small_raw100_imbalanced_focus'
    real = pd.read_csv(next(folder.glob('train_colsbase_size100_total*_rand1.csv')))
    source = folder / 'train_generate_colsbase_rand1.csv'
    gen = ReplayGenerator(str(source)).fit(real, target='class')
    assert gen.parse_rate_ == 1.0
    expected = pd.read_csv(source)
    minority = gen.sample(15, group={'class': 0})
    assert (minority['class'] == 0).all() and len(minority) == min(15, int((expected['class'] == 0).sum()))
    first = expected[expected['class'] == 0].head(15).reset_index(drop=True)
    np.testing.assert_allclose(minority.to_numpy(float), first.to_numpy(float))


# ---------------------------------------------------------------- protocol, without paper data
@pytest.fixture
def people():
    return pd.DataFrame({'age': [39, 50, 38, 53, 28, 37],
                         'sex': ['Male', 'Male', 'Female', 'Male', 'Female', 'Female'],
                         'income': ['<=50K', '<=50K', '<=50K', '>50K', '<=50K', '>50K']})


ANSWER = ["Sure, here you go:", "age is 41, sex is Female, income is >50K.", "", "age is 30, sex is Male, income is <=50K.",
          "age is 44, sex is Female, income is >50K", "age is 44, sex is Robot, income is >50K",
          "age is 45, sex is Female, income is >50K."]


def test_sampling_in_source_order_until_exhausted(people):
    gen = ReplayGenerator('\n'.join(ANSWER)).fit(people, target='income', sensitive=['sex'])
    assert isinstance(gen, BaseGenerator)
    assert gen.parse_rate_ == 4 / 6  # 6 non-blank lines: 4 rows, 1 rejected, 1 chatter
    assert gen.rejected_.reason.str.startswith('unknown level').tolist() == [True]
    g = {'income': '>50K', 'sex': 'Female'}
    assert gen.remaining(g) == 3
    assert gen.sample(2, group=g).age.tolist() == [41, 44]
    assert gen.sample(0, group=g).empty
    assert gen.sample(9, group=g).age.tolist() == [45]
    assert gen.sample(9, group=g).empty and gen.remaining(g) == 0
    assert gen.sample(9).age.tolist() == [30]  # group=None: any row not yet returned
    assert gen.reset().sample(1, group={'sex': 'Female'}).age.tolist() == [41]
    # random_state does not change a replay
    assert gen.reset().sample(3, random_state=1).equals(gen.reset().sample(3, random_state=2))


def test_sources(people, tmp_path):
    txt = tmp_path / 'answer.txt'; txt.write_text('\n'.join(ANSWER))
    csv = tmp_path / 'rows.csv'; pd.DataFrame({'sex': ['Female'], 'age': [41], 'income': ['>50K']}).to_csv(csv, index=False)
    for source in (txt, str(txt), ANSWER, '\n'.join(ANSWER)):
        assert len(ReplayGenerator(source).fit(people, 'income').rows_) == 4
    from_csv = ReplayGenerator(csv).fit(people, 'income')
    assert from_csv.rows_.to_dict('records') == [{'age': 41, 'sex': 'Female', 'income': '>50K'}]
    frame = pd.DataFrame({'age': [41, 999], 'sex': ['Female', 'Female'], 'income': ['>50K', '>50K'], 'extra': [1, 2]})
    from_frame = ReplayGenerator(frame).fit(people, 'income')
    assert from_frame.rows_.empty and from_frame.rejected_.reason.str.startswith('unknown column').all()
    ranged = ReplayGenerator(frame.drop(columns='extra'), check_range=True).fit(people, 'income')
    assert len(ranged.rows_) == 1 and ranged.rejected_.reason.iloc[0].startswith('out of range')


def test_bad_input(people):
    with pytest.raises(OPALInputError, match="does not exist"): ReplayGenerator('nope/answers.txt').fit(people, 'income')
    with pytest.raises(OPALInputError, match='got dict'): ReplayGenerator({'a': 1}).fit(people, 'income')
    with pytest.raises(OPALInputError, match='not fitted'): ReplayGenerator(ANSWER).sample(1)
    with pytest.raises(OPALInputError, match='not fitted'): ReplayGenerator(ANSWER).reset()
    gen = ReplayGenerator(ANSWER).fit(people, 'income', ['sex'])
    with pytest.raises(OPALInputError, match='n must be an int >= 0'): gen.sample(-1)
    with pytest.raises(OPALInputError, match="group names column 'salary'"): gen.sample(1, group={'salary': 1})
    with pytest.raises(OPALInputError, match="column 'income' is not in the frame"): ReplayGenerator(ANSWER).fit(people.drop(columns='income'), 'income')
    assert people.shape == (6, 3)  # the caller's frame is not modified


def test_read_source_styles():
    assert read_source('a is 1.')[1] == 'text'
    assert read_source(['a is 1.'], style='csv') == (['a is 1.'], 'csv')
