import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pins(path):
    """name==version lines of a requirements file, following -r includes."""
    out = {}
    for line in (ROOT / path).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            out.update(pins(line[3:].strip()))
        elif "==" in line:
            name, version = line.split("==")
            out[name.strip().lower()] = version.strip()
    return out


def test_environment_yml_has_the_same_pins_as_requirements():
    env = {}
    for m in re.finditer(r"^\s+- ([\w.-]+)==([\w.+-]+)\s*$", (ROOT / "environment.yml").read_text(), re.M):
        env[m.group(1).lower()] = m.group(2)
    assert env == pins("requirements-dev.txt")


def test_torch_pinned_exactly_and_pyproject_range_admits_it():
    assert pins("requirements.txt")["torch"] == "2.13.0"
    assert '"torch>=2.2,<2.14"' in (ROOT / "pyproject.toml").read_text()


def test_corpus_is_never_committed():
    assert "the-verdict.txt" in (ROOT / ".gitignore").read_text().splitlines()
    tracked = subprocess.run(["git", "ls-files", "the-verdict.txt"], cwd=ROOT, capture_output=True, text=True)
    assert tracked.stdout.strip() == ""


def test_unit_tests_collect_without_pyyaml():
    """PyYAML is no test dependency: only the browser check of the built book reads _toc.yml with it."""
    code = "import sys, pytest; sys.modules['yaml'] = None; sys.exit(pytest.main(['--collect-only', '-q', 'tests']))"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]
