"""Benchmark TabularLM on the paper's diabetes table: fit time, valid rows per second, how much faster TabularLM's
own decoding loop (`opal_nb.generate.decode_rows`, what `sample` uses) is than `model.generate` with the same
constraint as a LogitsProcessor (the path `sample` used before), the constraint's share of sampling time, and how
close sampling comes to a compute bound (FLOPs per token vs a matmul throughput measured in the same run).

Both decoding paths are timed in this process, alternately, on the same model, rows and seeds: the ratio is the
median over `--repeats` of (rows/s of the loop) / (rows/s of generate()). The machine may be shared, so absolute
rows/s move with its load; the ratio measured in one run is the figure to read.

With `--activation`, also TabularLM's fit with the fused tanh-approximated GELU it uses (`gelu_pytorch_tanh`) against
GPT-2's own `gelu_new` (the same function written as five torch operations, what TabularLM used before 2026-12-03),
alternately on the same rows and seed: seconds per fit, the ratio, and the last epoch's loss of each.

With `--compile`, also torch.compile of the engine's GPT-2 step against the plain step (rows/s ratio, same rows, the compile's
seconds and after how many rows it pays for itself).

Run: `python bench/bench_generate.py [--rows 1000] [--repeats 3] [--data path.csv] [--activation] [--compile]`. Figures are printed, never asserted.
"""
import argparse, time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from transformers import LogitsProcessorList

from opal_nb.generate import TabularLM, SchemaConstraint

from opal_nb.experiments import paper_data_dir
DATA = (paper_data_dir() or Path('no-paper-data')) / ('openmlDiabetes/openmlDiabetes_see_small_raw100_imbalanced_focus/'
                                                      'train_colsbase_size100_total468_rand1.csv')  # or --data


def valid_mask(out: pd.DataFrame, schema, group: dict) -> np.ndarray:
    "True for rows inside every column's range/levels at its precision and inside `group`."
    ok = np.ones(len(out), bool)
    for name, spec in schema.columns.items():
        col = out[name]
        if spec.is_numeric:
            ok &= (col.between(spec.minimum, spec.maximum) & np.isclose(col.round(spec.precision), col)).to_numpy()
        else: ok &= col.isin(spec.levels).to_numpy()
    for c, v in group.items(): ok &= (out[c] == v).to_numpy()
    return ok


def generate_hf(self: TabularLM, prompt: list, written: list, m: int, generator=None) -> torch.LongTensor:
    "The former `TabularLM._generate`: `model.generate` with `SchemaConstraint` as a LogitsProcessor (the reference path)."
    codec = self.codec_
    ids = torch.tensor([prompt] * m)
    if generator is not None: torch.manual_seed(int(torch.randint(2 ** 62, (1,), generator=generator)))  # generate() draws from the global RNG
    return self.model_.generate(
        ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=0,
        max_new_tokens=codec.max_length - len(prompt), logits_processor=LogitsProcessorList([SchemaConstraint(codec, len(prompt), written)]),
        use_cache=True, bos_token_id=codec.bos, eos_token_id=codec.eos, pad_token_id=codec.pad)


def timed_sample(lm, rows, group, seed, generate=None) -> tuple:
    "(seconds, rows) of one `lm.sample` call, through `generate` in place of `TabularLM._generate` when given."
    loop = TabularLM._generate
    if generate is not None: TabularLM._generate = generate
    try:
        t = time.perf_counter(); out = lm.sample(rows, group, random_state=seed); return time.perf_counter() - t, out
    finally: TabularLM._generate = loop


def matmul_flops(n_threads: int, size: int = 256, repeat: int = 50) -> float:
    "Measured float32 matmul throughput (FLOP/s) with `n_threads` torch threads."
    old = torch.get_num_threads(); torch.set_num_threads(n_threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(5): a @ b
    t = time.perf_counter()
    for _ in range(repeat): a @ b
    dt = time.perf_counter() - t
    torch.set_num_threads(old)
    return 2 * size ** 3 * repeat / dt


def flops_per_token(model, context: int) -> float:
    "Forward FLOPs for one new token with the KV cache: 2 x (non-embedding params + lm head) + attention."
    cfg = model.config
    body = sum(p.numel() for n, p in model.named_parameters() if '.h.' in n and p.dim() == 2)
    head = cfg.vocab_size * cfg.n_embd
    attention = 2 * cfg.n_layer * context * cfg.n_embd  # scores and weighted sum, mean context
    return 2 * (body + head) + 2 * attention


def fit_activations(df: pd.DataFrame, target: str, repeats: int):
    "TabularLM's fit with its fused GELU against GPT-2's `gelu_new`, alternately, same rows and seed: seconds, ratio, last losses."
    from transformers.activations import ACT2FN
    build = TabularLM._new_model
    def with_gelu_new(self, codec):
        model = build(self, codec)
        for block in model.transformer.h: block.mlp.act = ACT2FN['gelu_new']
        model.config.activation_function = 'gelu_new'
        return model
    secs, last = {'gelu_new': [], 'fused': []}, {}
    for r in range(repeats):
        for name in secs:
            TabularLM._new_model = with_gelu_new if name == 'gelu_new' else build
            try:
                lm = TabularLM(random_state=0, progress=False)
                t = time.perf_counter(); lm.fit(df, target=target); secs[name].append(time.perf_counter() - t)
            finally: TabularLM._new_model = build
            last[name] = lm.history_[-1]
    ratios = [a / b for a, b in zip(secs['gelu_new'], secs['fused'])]
    print(f"fit with gelu_new: {[round(x, 1) for x in secs['gelu_new']]} s, fused gelu_pytorch_tanh: {[round(x, 1) for x in secs['fused']]} s; "
          f"gelu_new / fused median {np.median(ratios):.2f}x (repeats {', '.join(f'{x:.2f}' for x in ratios)}); "
          f"last epoch's loss {last['gelu_new']:.4f} and {last['fused']:.4f}")


def main(rows: int, data: Path, repeats: int = 3, compile_step: bool = False, activation: bool = False):
    df = pd.read_csv(data)
    target = 'class'
    print(f"table: {data.name}, {len(df)} rows x {df.shape[1]} columns")
    if activation: fit_activations(df, target, repeats)
    lm = TabularLM(random_state=0, progress=False)
    t = time.perf_counter(); lm.fit(df, target=target); fit_s = time.perf_counter() - t
    steps = lm.n_steps_
    n_params = sum(p.numel() for p in lm.model_.parameters())
    print(f"model: {n_params:,} parameters, context {lm.model_.config.n_positions} tokens, vocabulary {len(lm.codec_.vocab)}")
    print(f"fit: {fit_s:.1f} s for {len(lm.history_)} epochs ({steps} steps, {fit_s / steps * 1000:.0f} ms/step), "
          f"loss {lm.history_[0]:.3f} -> {lm.history_[-1]:.3f}")

    minority = df[target].value_counts().idxmin()
    group = {target: int(minority)}
    lm.sample(min(64, rows), group, random_state=0)  # warm-up
    timed_sample(lm, min(64, rows), group, 0, generate_hf)
    runs = {'loop': [], 'generate()': []}
    for r in range(repeats):  # alternate the two paths, same seed per repeat
        for name, gen in (('loop', None), ('generate()', generate_hf)):
            s, out = timed_sample(lm, rows, group, 1 + r, gen)
            ok = valid_mask(out, lm.schema_, group)
            runs[name].append(dict(seconds=s, valid=int(ok.sum()), rate=ok.sum() / s, rejected=len(lm.rejected_)))
    for name, rs in runs.items():
        print(f"sample via {name:10s}: {rows} rows of {group}, {repeats} repeats: valid {[x['valid'] for x in rs]}, "
              f"rejected {[x['rejected'] for x in rs]}, valid rows/s {[round(x['rate']) for x in rs]} "
              f"(median {np.median([x['rate'] for x in rs]):.0f})")
    ratios = [a['rate'] / b['rate'] for a, b in zip(runs['loop'], runs['generate()'])]
    print(f"custom loop vs generate() ratio (valid rows/s, same run): median {np.median(ratios):.2f}x "
          f"(repeats {', '.join(f'{x:.2f}' for x in ratios)})")

    # the constraint's share of sampling time with the loop: time SchemaConstraint.step during one more run
    spent = [0.0]
    orig = SchemaConstraint.step
    def timed(self, *a, **kw):
        t0 = time.perf_counter(); r = orig(self, *a, **kw); spent[0] += time.perf_counter() - t0; return r
    SchemaConstraint.step = timed
    try: total, _ = timed_sample(lm, rows, group, 99)
    finally: SchemaConstraint.step = orig
    print(f"constraint (SchemaConstraint.step) time in the loop: {spent[0]:.2f} s of {total:.2f} s sampling ({spent[0] / total:.0%})")

    new_tokens = lm.codec_.max_length - len(lm.codec_.prefix(group))
    per_token = flops_per_token(lm.model_, context=lm.codec_.max_length // 2)
    peak = matmul_flops(lm.n_threads or torch.get_num_threads())
    bound = peak / (per_token * new_tokens)
    measured = np.median([x['rate'] for x in runs['loop']])
    print(f"compute bound: {per_token / 1e6:.2f} MFLOP/token x {new_tokens} tokens/row at a measured "
          f"{peak / 1e9:.1f} GFLOP/s (256x256 matmul, {lm.n_threads} thread) -> {bound:.0f} rows/s")
    print(f"measured / bound: loop {measured / bound:.3f}, generate() "
          f"{np.median([x['rate'] for x in runs['generate()']]) / bound:.3f} (the rest: attention over the cache, which is "
          f"memory-bound, small matmuls, the constraint, per-step python, decoding rows to values)")
    if compile_step: compiled_step(lm, rows, group, repeats)


def compiled_step(lm: TabularLM, rows: int, group: dict, repeats: int):
    "torch.compile of the engine's GPT-2 step (`_GPT2Steps._forward`): valid rows/s against the plain step, same seeds, and the compile time."
    from opal_nb import decode
    plain = decode._GPT2Steps._forward
    fast = torch.compile(plain, dynamic=True)
    def run(fn, seed, n):
        decode._GPT2Steps._forward = fn
        try: return timed_sample(lm, n, group, seed)
        finally: decode._GPT2Steps._forward = plain
    t = time.perf_counter(); run(fast, 0, min(64, rows)); compile_s = time.perf_counter() - t
    rates, same = {'plain': [], 'compiled': []}, True
    for r in range(repeats):  # alternate, same seed per repeat
        outs = {}
        for name, fn in (('plain', plain), ('compiled', fast)):
            s, outs[name] = run(fn, 1 + r, rows)
            rates[name].append(valid_mask(outs[name], lm.schema_, group).sum() / s)
        same &= outs['plain'].equals(outs['compiled'])
    ratios = [b / a for a, b in zip(rates['plain'], rates['compiled'])]
    saved = 1 / np.median(rates['plain']) - 1 / np.median(rates['compiled'])  # seconds saved per row
    print(f"torch.compile of the step: first call {compile_s:.1f} s (compiling); valid rows/s plain {np.median(rates['plain']):.0f}, "
          f"compiled {np.median(rates['compiled']):.0f}; ratio median {np.median(ratios):.2f}x (repeats {', '.join(f'{x:.2f}' for x in ratios)}); "
          f"same rows: {same}; " + (f"the compile pays for itself after about {compile_s / saved:,.0f} rows" if saved > 0 else "it never pays"))


if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--rows', type=int, default=1000)
    p.add_argument('--data', type=Path, default=DATA)
    p.add_argument('--repeats', type=int, default=3, help='timed runs of each decoding path (the median is reported)')
    p.add_argument('--compile', action='store_true', help="also time torch.compile of the engine's GPT-2 step against the plain step")
    p.add_argument('--activation', action='store_true', help="also time the fit with the fused GELU against GPT-2's gelu_new")
    a = p.parse_args()
    main(a.rows, a.data, a.repeats, a.compile, a.activation)
