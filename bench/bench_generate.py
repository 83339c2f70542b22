"""Benchmark TabularLM on the paper's diabetes table: fit time, valid rows per second, and how close
sampling comes to a compute bound (FLOPs per token vs a matmul throughput measured in the same run).

Run: `python bench/bench_generate.py [--rows 1000] [--data path.csv]`. Figures are printed, never asserted.
"""
import argparse, time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from opal_nb.generate import TabularLM, SchemaConstraint

DATA = Path('/work/shared/data/opal-paper/openmlDiabetes/openmlDiabetes_see_small_raw100_imbalanced_focus/'
            'train_colsbase_size100_total468_rand1.csv')


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


def main(rows: int, data: Path):
    df = pd.read_csv(data)
    target = 'class'
    print(f"table: {data.name}, {len(df)} rows x {df.shape[1]} columns")
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
    t = time.perf_counter(); out = lm.sample(rows, group, random_state=1); sample_s = time.perf_counter() - t
    ok = valid_mask(out, lm.schema_, group)
    print(f"sample: {rows} rows of {group} in {sample_s:.2f} s: {ok.sum()} valid ({ok.mean():.1%}), "
          f"{ok.sum() / sample_s:.0f} valid rows/s; rejected {len(lm.rejected_)}")

    # the constraint's share of sampling time: time its __call__ during one more run
    spent = [0.0]
    orig = SchemaConstraint.__call__
    def timed(self, ids, scores):
        t0 = time.perf_counter(); r = orig(self, ids, scores); spent[0] += time.perf_counter() - t0; return r
    SchemaConstraint.__call__ = timed
    try:
        t = time.perf_counter(); lm.sample(rows, group, random_state=2); total = time.perf_counter() - t
    finally: SchemaConstraint.__call__ = orig
    print(f"constraint (LogitsProcessor) time: {spent[0]:.2f} s of {total:.2f} s sampling ({spent[0] / total:.0%})")

    new_tokens = lm.codec_.max_length - len(lm.codec_.prefix(group))
    per_token = flops_per_token(lm.model_, context=lm.codec_.max_length // 2)
    peak = matmul_flops(lm.n_threads or torch.get_num_threads())
    bound = peak / (per_token * new_tokens)
    measured = ok.sum() / sample_s
    print(f"compute bound: {per_token / 1e6:.2f} MFLOP/token x {new_tokens} tokens/row at a measured "
          f"{peak / 1e9:.1f} GFLOP/s (256x256 matmul, {lm.n_threads} thread) -> {bound:.0f} rows/s")
    print(f"measured / bound: {measured / bound:.3f} (the rest is per-step overhead of generate and small matmuls)")


if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--rows', type=int, default=1000)
    p.add_argument('--data', type=Path, default=DATA)
    a = p.parse_args()
    main(a.rows, a.data)
