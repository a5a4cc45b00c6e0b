"""The README's Python examples run as written, in order, and say what they do."""

import os
import re

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_blocks():
    text = open(os.path.join(REPO, "README.md")).read()
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_readme_python_examples_run_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the first saves blur.keras in the working directory
    blocks = python_blocks()
    assert len(blocks) >= 2
    namespace = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i}", "exec"), namespace)  # noqa: S102
    scores, model = namespace["scores"], namespace["model"]
    assert scores["accuracy"] > 0.8, scores
    assert os.path.exists(tmp_path / "blur.keras")
    # the accuracy README states, and that it does not depend on the batch
    stated = float(re.search(r"test accuracy (0\.\d+) after these",
                             open(os.path.join(REPO, "README.md")).read()).group(1))
    assert abs(scores["accuracy"] - stated) <= 0.01, (scores, stated)
    x, y = namespace["x_test"], namespace["y_test"]
    order = np.argsort(y, kind="stable")  # class-sorted, in batches of 10
    sorted_scores = model.evaluate(x[order], y[order], batch_size=10, return_dict=True,
                                   verbose=0)
    assert abs(sorted_scores["accuracy"] - scores["accuracy"]) <= 0.005
    assert namespace["cnn"].layers[-1].units == 10
    # the CNN example's stated accuracy and step count (one epoch of batches of 32)
    cnn = re.search(r"The CNN reaches test accuracy (0\.\d+) in (\d+) steps",
                    open(os.path.join(REPO, "README.md")).read())
    assert abs(namespace["cnn_scores"]["accuracy"] - float(cnn.group(1))) <= 0.01
    assert int(cnn.group(2)) == -(-len(namespace["x_train"]) // 32)
    _check_the_saved_model(namespace, x[order], y[order])


def _check_the_saved_model(namespace, x, y):
    """The SavedModel snippet's rule learned, and its accuracy on class-sorted test data is
    the same in batches of 1, 10, 100 and 1,000 (tracked statistics, as BlurModel's)."""
    rule, state, flat = namespace["rule"], namespace["state"], namespace["flat"]
    assert len(namespace["logits"]) == len(namespace["x_test"])
    accuracies = []
    for size in (1, 10, 100, 1000):
        logits = np.concatenate([rule.predict(*state, flat(x[i:i + size])).numpy()
                                 for i in range(0, len(x), size)])
        accuracies.append(float(np.mean(np.argmax(logits, -1) == y)))
    assert accuracies[-1] > 0.8, accuracies
    assert max(accuracies) - min(accuracies) <= 0.005, accuracies
