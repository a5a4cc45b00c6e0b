"""The distributed meta-step: MirroredStrategy on 2 logical CPU devices equals one device;
strategy selection (TPU asked for and absent).

Logical devices must be configured before TensorFlow initialises, so the checks run in a
fresh Python process.
"""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r'''
import os
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from blur_keras import BlurConfig, Genome
from blur_keras.meta.outer.strategy import NoTPUError, choose_strategy
from blur_keras.meta.outer.gradient import GradientTrainer

rng = np.random.default_rng(0)

def batch():
    T, S, R, B, Bq = 2, 2, 4, 8, 16
    tx = rng.uniform(-1, 1, (T, S, R, B, 2)).astype(np.float32)
    qx = rng.uniform(-1, 1, (S, R, Bq, 2)).astype(np.float32)
    lab = lambda x: (x[..., 0] * x[..., 1] > 0).astype(np.int32)
    return {"train_x": tx, "train_y": lab(tx), "query_x": qx, "query_y": lab(qx)}

batches = [batch() for _ in range(3)]

def run(strategy):
    genome = Genome.random(2, seed=0, species=2)
    trainer = GradientTrainer(genome, BlurConfig(activation_norm=True), (2, 6, 2),
                              learning_rate=1e-2, seed=3, strategy=strategy, jit_compile=True,
                              epsilon=1e-4)  # Adam step 1 is lr*sign(g): keep round-off-size g from flipping it
    outs = [trainer.train_step(b) for b in batches]
    return trainer, outs

single, single_out = run(tf.distribute.get_strategy())
mirrored = choose_strategy("mirrored")
assert isinstance(mirrored, tf.distribute.MirroredStrategy), mirrored
assert mirrored.num_replicas_in_sync == 2, mirrored.num_replicas_in_sync
multi, multi_out = run(mirrored)
start = Genome.random(2, seed=0, species=2).numpy()
for name, value in single.genome_values().items():
    np.testing.assert_allclose(multi.genome_values()[name], value, rtol=1e-5, atol=1e-5,
                               err_msg=name)
assert not np.allclose(single.genome_values()["nu"], start["nu"])  # it did move
for a, b in zip(single_out, multi_out):
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=2e-5)
    np.testing.assert_allclose(a["grad_norm"], b["grad_norm"], rtol=2e-5)
assert int(multi.step.numpy()) == 3
# the variables are mirrored: each device holds the same update
values = multi.params["nu"].values
np.testing.assert_array_equal(values[0].numpy(), values[1].numpy())
print("MIRRORED_OK")

os.environ.pop("TPU_NAME", None)
os.environ.pop("COLAB_TPU_ADDR", None)
for tpu in (None, "local"):
    try:
        choose_strategy("tpu", tpu)
    except NoTPUError as err:
        assert "TPU was requested" in str(err) and "--strategy=auto" in str(err), err
    else:
        raise AssertionError("no error for an absent TPU")
auto = choose_strategy("auto")
assert auto.num_replicas_in_sync == 1, auto
try:
    choose_strategy("gpu")
except ValueError as err:
    assert "Unknown strategy" in str(err)
else:
    raise AssertionError("no error for an unknown strategy")
print("STRATEGY_OK")
'''


@pytest.mark.process
def test_mirrored_two_cpu_devices_equal_one_device_and_tpu_selection():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=400, cwd=REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "MIRRORED_OK" in proc.stdout and "STRATEGY_OK" in proc.stdout, out[-4000:]
