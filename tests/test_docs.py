"The docs: README.md matches nbs/index.ipynb, the sidebar lists every notebook, Quarto config is sound."
import json, subprocess, sys
from pathlib import Path
import yaml

root = Path(__file__).resolve().parents[1]

def test_readme_matches_index():
    r = subprocess.run([sys.executable, str(root / 'tools/readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

def test_readme_opens_with_the_two_commands():
    text = (root / 'README.md').read_text()
    block = text.split('```sh', 1)[1].split('```', 1)[0].strip().splitlines()
    commands = [l for l in block if l.strip() and not l.strip().startswith('#')]
    assert [c.split('#')[0].strip() for c in commands] == ['./dev demo', './dev test'], commands
    assert text.index('```sh') < text.index('```python'), "the two commands are the README's first code block"

def test_sidebar_lists_every_notebook():
    side = yaml.safe_load((root / 'nbs/sidebar.yml').read_text())
    listed = set()
    def walk(items):
        for it in items:
            if isinstance(it, str): listed.add(it)
            else: walk(it.get('contents', []))
    walk(side['website']['sidebar']['contents'])
    nbs = {str(p.relative_to(root / 'nbs')) for p in (root / 'nbs').rglob('*.ipynb') if '.ipynb_checkpoints' not in str(p)}
    assert nbs == listed, f"missing from sidebar: {nbs - listed}; listed but absent: {listed - nbs}"

def test_quarto_config():
    q = yaml.safe_load((root / 'nbs/_quarto.yml').read_text())
    assert q['project']['type'] == 'website'
    assert 'sidebar.yml' in q['metadata-files'] and 'nbdev.yml' in q['metadata-files']
