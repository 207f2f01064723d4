"""The README's commands and code are the ones that work."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_first_two_commands_set_up_and_run_the_demo_and_the_suite():
    first, second = re.findall(r"```bash\n(.*?)\n```", README, re.S)[:2]
    assert first == "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/cxrlt demo --out runs/demo"
    assert second == 'python3 -m venv .venv && .venv/bin/pip install -e ".[test]" && .venv/bin/python -m pytest'
    assert second in (REPO / ".ci" / "run").read_text().splitlines()  # CI runs it verbatim


def test_python_example_prints_what_the_readme_says(capsys):
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    expected = re.search(r"# (tensor\([^)]*\))", code).group(1)
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() == expected


def test_config_example_is_valid():
    import yaml

    from cxrlt.config import parse_config

    config = parse_config(yaml.safe_load(re.search(r"```yaml\n(.*?)```", README, re.S).group(1)))
    assert (config.model.backbone, config.loss.name, config.train.precision) == ("densenet121", "asl", "bf16-mixed")


def test_usage_guide_config_is_valid():
    import yaml

    from cxrlt.config import parse_config

    usage = (REPO / "docs" / "usage.md").read_text()
    full = yaml.safe_load(re.search(r"```yaml\n(.*?)```", usage, re.S).group(1))
    stages = yaml.safe_load(re.findall(r"```yaml\n(.*?)```", usage, re.S)[1])
    config = parse_config({**full, **stages})
    assert [s.name for s in config.stage_list()] == ["main", "crt"]
    assert config.augment.mixing[0].name == "mosaic"
