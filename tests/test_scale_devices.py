"""The meta-step on several logical CPU devices gives the genomes of one device; choosing the
strategy by name.

Runs in a fresh process (logical devices must be configured before TensorFlow starts), equal to
the default single-device strategy to 1e-5:

* the gradient trainer with ``shard_axis="species"`` on 2 devices, fed through
  ``distribute_datasets_from_function`` as ``meta_train`` feeds several devices;
* the replicas split over 2 devices (``MirroredStrategy``, the default shard axis);
* CMA-ES with 5 candidates over 2 devices (3 + 3, the last candidate repeated);
* one replica per species through ``train_step``, and ``shard_axis="both"`` on 4 devices
  (2 species blocks x 2 replica blocks);
* ``choose_strategy``: mirrored over the devices, an absent TPU, ``auto``, an unknown name.

Every test reads one run of the script (each part prints its tag when it has passed).
"""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r'''
import time
import numpy as np
import tensorflow as tf
T0 = time.time()
import os

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 4)
devices = [d.name for d in tf.config.list_logical_devices("CPU")]

from blur_keras import BlurConfig, Genome
from blur_keras.meta.outer.cma_es import CMAESTrainer
from blur_keras.meta.outer.gradient import GradientTrainer
from blur_keras.meta.outer.strategy import NoTPUError, choose_strategy

JIT = bool(int(os.environ.get("BLUR_TEST_JIT", "0")))  # tracing dominates: XLA only adds to it
rng = np.random.default_rng(0)
lab = lambda x: (x[..., 0] * x[..., 1] > 0).astype(np.int32)

def batch(S, R, T=2, B=8, Bq=8):
    tx = rng.uniform(-1, 1, (T, S, R, B, 2)).astype(np.float32)
    qx = rng.uniform(-1, 1, (S, R, Bq, 2)).astype(np.float32)
    return {"train_x": tx, "train_y": lab(tx), "query_x": qx, "query_y": lab(qx)}

def gradient_run(strategy, S, batches, shard_axis="replicas", via_dataset=False):
    trainer = GradientTrainer(Genome.random(2, seed=0, species=S), BlurConfig(activation_norm=True),
                              (2, 6, 2), learning_rate=1e-2, seed=3, strategy=strategy,
                              shard_axis=shard_axis, epsilon=1e-4, jit_compile=JIT)
    if via_dataset:
        ds = trainer.distribute_dataset(lambda: tf.data.Dataset.from_tensor_slices(
            {k: np.stack([b[k] for b in batches]) for k in batches[0]}))
        it = iter(ds)
        outs = [trainer.train_step_distributed(next(it)) for _ in batches]
    else:
        outs = [trainer.train_step(b) for b in batches]
    return trainer, outs

def same(a, b, what):
    diff = max(float(np.max(np.abs(b.genome_values()[n] - v))) for n, v in a.genome_values().items())
    print(f"{what}: max |genome difference| {diff:.2e}", flush=True)
    for name, value in a.genome_values().items():
        np.testing.assert_allclose(b.genome_values()[name], value, rtol=1e-5, atol=1e-5,
                                   err_msg=f"{what}: {name}")

def same_metrics(a_out, b_out, what):
    for a, b in zip(a_out, b_out):
        for key in ("loss", "accuracy", "grad_norm", "inner_accuracy"):
            np.testing.assert_allclose(a[key], b[key], rtol=2e-5, atol=1e-6, err_msg=f"{what}: {key}")
        np.testing.assert_array_equal(a["applied"], b["applied"])

one = tf.distribute.get_strategy()
two = tf.distribute.MirroredStrategy(devices[:2])

# species on 2 devices, fed as meta_train feeds several devices (distribute_datasets_from_function)
b22 = [batch(2, 2) for _ in range(2)]
ref, ref_out = gradient_run(one, 2, b22)
start = Genome.random(2, seed=0, species=2).numpy()
assert not np.allclose(ref.genome_values()["nu"], start["nu"])  # it did move
sp, sp_out = gradient_run(two, 2, b22, "species", via_dataset=True)
assert sp.layout == (2, 1), sp.layout
same(ref, sp, "species on 2 devices"); same_metrics(ref_out, sp_out, "species on 2 devices")
print("SPECIES_OK", f"{time.time() - T0:.1f} s", flush=True)

# replicas split over 2 devices (the default shard axis); the variables are mirrored
b24 = [batch(2, 4) for _ in range(3)]
ref_r, ref_r_out = gradient_run(one, 2, b24)
rep, rep_out = gradient_run(two, 2, b24, "replicas")
assert rep.layout == (1, 2), rep.layout
same(ref_r, rep, "replicas on 2 devices"); same_metrics(ref_r_out, rep_out, "replicas")
assert int(rep.step.numpy()) == 3
values = rep.params["nu"].values
np.testing.assert_array_equal(values[0].numpy(), values[1].numpy())  # each device, one update
print("REPLICAS_OK", f"{time.time() - T0:.1f} s", flush=True)

try:
    GradientTrainer(Genome.random(2, seed=0, species=3), BlurConfig(), (2, 6, 2), strategy=two,
                    shard_axis="species")
except ValueError as err:
    assert "3 species do not split over 2" in str(err), err
else:
    raise AssertionError("3 species over 2 devices accepted")

def cma_run(strategy):
    trainer = CMAESTrainer(Genome.random(2, seed=0), BlurConfig(activation_norm=True), (2, 6, 2),
                           population_size=5, sigma0=0.1, seed=1, strategy=strategy,
                           jit_compile=JIT)
    outs = [trainer.train_step(batch(1, 2)) for _ in range(2)]
    return trainer, outs

rng = np.random.default_rng(1)
c1, c1_out = cma_run(one)
rng = np.random.default_rng(1)
c2, c2_out = cma_run(two)
for a, b in zip(c1_out, c2_out):
    np.testing.assert_allclose(a["accuracy"], b["accuracy"], atol=1e-5)
    np.testing.assert_allclose(a["inner_accuracy"], b["inner_accuracy"], atol=1e-5)
    np.testing.assert_array_equal(a["applied"], b["applied"])
for name, value in c1.mean_genome().items():
    np.testing.assert_allclose(c2.mean_genome()[name], value, rtol=1e-5, atol=1e-5, err_msg=name)
print("CMA_OK", f"{time.time() - T0:.1f} s", flush=True)

# one replica per species (train_step) and a 2 x 2 grid on 4 devices
# (a second collective group over the same devices would clash with the first one's keys)
four = tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
b41 = [batch(4, 1) for _ in range(2)]
ref4, ref4_out = gradient_run(one, 4, b41)
sp4, sp4_out = gradient_run(two, 4, b41, "species")
same(ref4, sp4, "4 species x 1 replica on 2 devices"); same_metrics(ref4_out, sp4_out, "4x1")
both, both_out = gradient_run(four, 2, b22, "both", via_dataset=True)
assert both.layout == (2, 2), both.layout
same(ref, both, "both on 4 devices"); same_metrics(ref_out, both_out, "both on 4 devices")
print("BOTH_OK", f"{time.time() - T0:.1f} s", flush=True)

# choosing the strategy: mirrored over the logical devices; a TPU asked for and absent
assert choose_strategy("mirrored").num_replicas_in_sync == 4
os.environ.pop("TPU_NAME", None)
os.environ.pop("COLAB_TPU_ADDR", None)
for tpu in (None, "local"):
    try:
        choose_strategy("tpu", tpu)
    except NoTPUError as err:
        assert "TPU was requested" in str(err) and "--strategy=auto" in str(err), err
    else:
        raise AssertionError("no error for an absent TPU")
assert choose_strategy("auto").num_replicas_in_sync == 1
try:
    choose_strategy("gpu")
except ValueError as err:
    assert "Unknown strategy" in str(err)
else:
    raise AssertionError("no error for an unknown strategy")
print("STRATEGY_OK", flush=True)
'''


@pytest.fixture(scope="module")
def script_run():
    """One run of the script for both tests: ``(returncode, stdout, stdout + stderr)``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=900, cwd=REPO)
    return proc.returncode, proc.stdout, proc.stdout + proc.stderr


@pytest.mark.process
def test_species_and_candidates_sharded_over_devices_equal_one_device(script_run):
    _, stdout, out = script_run
    for tag in ("SPECIES_OK", "CMA_OK"):
        assert tag in stdout, out[-4000:]


@pytest.mark.process
def test_replicas_split_over_devices_equal_one_device(script_run):
    _, stdout, out = script_run
    assert "REPLICAS_OK" in stdout, out[-4000:]


@pytest.mark.process
def test_one_replica_per_species_and_a_two_by_two_grid_equal_one_device(script_run):
    """4 species x 1 replica over 2 devices through train_step; shard_axis="both" on 4 devices."""
    _, stdout, out = script_run
    assert "BOTH_OK" in stdout, out[-4000:]


@pytest.mark.process
def test_the_strategy_is_chosen_by_name_and_an_absent_tpu_is_an_error(script_run):
    returncode, stdout, out = script_run
    assert returncode == 0 and "STRATEGY_OK" in stdout, out[-4000:]
