"The docs as a reader sees them, in headless Chromium: every page renders, and the quickstart runs in JupyterLab (slow)."
import os, subprocess, sys
from pathlib import Path
import pytest

root = Path(__file__).resolve().parents[1]
needs_chromium = pytest.mark.skipif(not Path(os.environ.get('CHROMIUM', '/usr/bin/chromium')).exists(), reason='needs the Debian chromium package (apt-get install chromium)')

def is_png(p: Path) -> bool: return p.is_file() and p.stat().st_size > 10_000 and p.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

@pytest.mark.slow
@needs_chromium
@pytest.mark.timeout(1800)
def test_pages_render(tmp_path):
    r = subprocess.run([sys.executable, str(root / 'tools/check_pages.py'), '--screenshots-dir', str(tmp_path)],
                       capture_output=True, text=True, cwd=root)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    assert 'index: ok' in r.stdout and 'tutorials/01_quickstart: ok' in r.stdout, r.stdout
    assert is_png(tmp_path / 'home.png') and is_png(tmp_path / 'quickstart.png')

@pytest.mark.slow
@needs_chromium
@pytest.mark.timeout(2400)
def test_quickstart_runs_in_jupyterlab(tmp_path):
    shot = tmp_path / 'quickstart_jupyterlab.png'
    r = subprocess.run([sys.executable, str(root / 'tools/check_jupyterlab.py'), '--screenshot', str(shot), '--timeout', '1800'],
                       capture_output=True, text=True, cwd=root)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    assert 'JupyterLab check: ok' in r.stdout and is_png(shot)
