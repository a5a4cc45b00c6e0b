"""The README's first Keras example runs as written and learns (with the shipped rule)."""

import os
import re


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def keras_example():
    text = open(os.path.join(REPO, "README.md")).read()
    section = text[text.index("## Use a BLUR network like any Keras model"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_keras_example_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # it saves blur.keras in the working directory
    namespace = {}
    exec(compile(keras_example(), "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["scores"]["accuracy"] > 0.6, namespace["scores"]
    assert os.path.exists(tmp_path / "blur.keras")
