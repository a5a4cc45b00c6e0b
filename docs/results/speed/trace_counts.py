"""Count what tracing one meta-step creates: Python slicings (``Tensor.__getitem__``) and graph
constants, each by the first calling frame in blur_keras (or in TensorFlow's gradient code).
Behind docs/speed.md, "A smaller traced graph".

    python docs/results/speed/trace_counts.py            # the issue-8 setting, T = 10, 1 species
    python docs/results/speed/trace_counts.py --top 20
"""

import argparse
import collections
import os
import sys
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import meta_step  # noqa: E402  (the benchmark's setting and builder)


def _caller():
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "blur_keras" in frame.filename or "_grad" in frame.filename:
            return f"{os.path.basename(frame.filename)}:{frame.lineno} {frame.name}"
    return "elsewhere"


def _counting(counter, fn):
    def wrapped(*args, **kwargs):
        counter[_caller()] += 1
        return fn(*args, **kwargs)
    return wrapped


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    meta_step.add_setting_arguments(parser, species=1)
    parser.add_argument("--T", type=int, default=10)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    _, trainer, batch = meta_step.build(args, args.T, 0)
    from tensorflow.python.framework import constant_op, tensor

    slices, constants = collections.Counter(), collections.Counter()
    tensor.Tensor.__getitem__ = _counting(slices, tensor.Tensor.__getitem__)
    constant_op._constant_impl = _counting(constants, constant_op._constant_impl)
    trainer._step_fn.get_concrete_function(trainer._distribute(batch))
    for name, counter in (("slicings", slices), ("constants", constants)):
        print(f"{sum(counter.values())} {name}; largest sources:")
        for where, n in counter.most_common(args.top):
            print(f"  {n:5d}  {where}")


if __name__ == "__main__":
    main()
