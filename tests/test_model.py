"""BlurDense / BlurModel as Keras users use them."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import blur_keras as bk
import helpers

K = 3


def toy_data(seed=0, n=128, width=12, classes=3):
    return helpers.toy_data(seed, n, width, classes)


def make_model(seed=0, config=None, width=12, jit=False, metrics=("accuracy",)):
    keras.utils.set_random_seed(seed)
    net = keras.Sequential([keras.Input((width,)), bk.BlurDense(10, k=K), bk.BlurDense(3, k=K)])
    model = bk.BlurModel(net, bk.Genome.random(K, seed=seed, synapse_update=-1e-2),
                         config or bk.BlurConfig(oja=True))
    model.compile(metrics=list(metrics), jit_compile=jit)
    return model


def synapse_arrays(model):
    return [t.numpy() for pair in model.synapses() for t in pair]


def test_fit_trains_by_the_rule_only():
    model = make_model()
    genome_before = model.genome.numpy()
    before = synapse_arrays(model)
    x, y = toy_data()
    seen = []
    cb = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(dict(logs)))
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[cb])
    assert set(history.history) == {"accuracy", "feedback_loss"}
    assert len(seen) == 8 and all(np.isfinite(v) for logs in seen for v in logs.values())
    after = synapse_arrays(model)
    # weights are [W⁰, V⁰, W¹, V¹, …]; V⁰ is never read, so the rule leaves it unchanged
    assert all(np.abs(a - b).max() > 0 for i, (a, b) in enumerate(zip(after, before)) if i != 1)
    np.testing.assert_array_equal(after[1], before[1])
    for name, value in model.genome.numpy().items():  # fit never changes the genome
        np.testing.assert_array_equal(value, genome_before[name])
    assert [id(v) for v in model.trainable_weights] == [id(v) for v in model.genome.trainable_weights]


def test_fit_matches_manual_inner_steps():
    """fit = one inner_step per batch, in order, on the same states."""
    model = make_model(seed=1)
    x, y = toy_data(seed=1, n=64)
    params = model.genome.params()
    synapses = helpers.manual_fit(model, x, y, 16, lambda t: params)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for (w, v), layer in zip(synapses, model.blur_layers):
        np.testing.assert_allclose(layer.forward_synapses.numpy(), w.numpy(), atol=1e-6)
        np.testing.assert_allclose(layer.backward_synapses.numpy(), v.numpy(), atol=1e-6)


def test_integer_and_one_hot_labels_train_identically():
    x, y = toy_data(seed=2, n=64)
    a, b = make_model(seed=2), make_model(seed=2)
    a.fit(x, y, batch_size=16, shuffle=False, verbose=0)
    b.fit(x, keras.utils.to_categorical(y, 3), batch_size=16, shuffle=False, verbose=0)
    for wa, wb in zip(synapse_arrays(a), synapse_arrays(b)):
        np.testing.assert_array_equal(wa, wb)


def test_jit_compiled_fit_matches_eager_graph():
    x, y = toy_data(seed=3, n=64)
    a, b = make_model(seed=3, jit=True), make_model(seed=3, jit=False)
    ha = a.fit(x, y, batch_size=16, shuffle=False, verbose=0)
    hb = b.fit(x, y, batch_size=16, shuffle=False, verbose=0)
    for wa, wb in zip(synapse_arrays(a), synapse_arrays(b)):
        np.testing.assert_allclose(wa, wb, atol=1e-5)
    np.testing.assert_allclose(ha.history["feedback_loss"], hb.history["feedback_loss"], atol=1e-5)
    np.testing.assert_allclose(a.predict(x, verbose=0), b.predict(x, verbose=0), atol=1e-5)


def test_inner_step_compiles_with_xla_and_matches():
    model = make_model(seed=4, config=bk.BlurConfig(
        activation_norm=True, synapse_norm=True, oja=True, backward_rule="multiplicative"))
    x, y = toy_data(seed=4, n=16)
    targets = 2.0 * tf.one_hot(y, 3) - 1.0
    fwd, bwd = model.activations

    def step(params, synapses):
        return bk.inner_step(params, synapses, x, targets, model.config, False, fwd, bwd)[0]

    params, synapses = model.genome.params(), model.synapses()
    eager = step(params, synapses)
    compiled = tf.function(step, jit_compile=True)(params, synapses)
    for e, c in zip(tf.nest.flatten(eager), tf.nest.flatten(compiled)):
        np.testing.assert_allclose(e.numpy(), c.numpy(), atol=1e-5)


def test_functional_model_with_preprocessing_layers():
    rng = np.random.default_rng(5)
    inp = keras.Input((4, 4, 1))
    h = keras.layers.Rescaling(1 / 255.0)(inp)
    h = keras.layers.Flatten()(h)
    h = bk.BlurDense(8, k=2)(h)
    out = bk.BlurDense(2, k=2)(h)
    model = bk.BlurModel(keras.Model(inp, out), bk.Genome.random(2, seed=5))
    model.compile()
    x = rng.integers(0, 256, size=(64, 4, 4, 1)).astype("f4")
    y = rng.integers(0, 2, size=64)
    model.fit(x, y, batch_size=16, verbose=0)
    assert model.predict(x[:3], verbose=0).shape == (3, 2)
    # the features are what the prefix computes, rescaled and flattened
    manual = bk.predict(model.genome.params(), model.synapses(), (x[:3] / 255.0).reshape(3, -1),
                        model.config)
    np.testing.assert_allclose(model(x[:3]).numpy(), manual.numpy(), atol=1e-6)


def test_frozen_feature_extractor_in_sequential():
    keras.utils.set_random_seed(6)
    extractor = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="relu")])
    extractor.trainable = False
    frozen = [w.numpy() for w in extractor.weights]
    net = keras.Sequential([keras.Input((6,)), extractor, bk.BlurDense(7, k=2), bk.BlurDense(2, k=2)])
    model = bk.BlurModel(net, bk.Genome.random(2, seed=6))
    model.compile()
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(32, 6)).astype("f4"), rng.integers(0, 2, 32)
    model.fit(x, y, batch_size=8, verbose=0)
    for a, b in zip(frozen, extractor.weights):
        np.testing.assert_array_equal(a, b.numpy())
    assert model.blur_layers[0].input_width == 5


def test_save_load_round_trip_and_continue(tmp_path):
    model = make_model(seed=7, config=bk.BlurConfig(oja=True, activation_norm=True))
    x, y = toy_data(seed=7, n=96)
    model.fit(x[:64], y[:64], batch_size=16, verbose=0)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, bk.BlurModel) and loaded.config == model.config
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    for name, value in model.genome.numpy().items():
        np.testing.assert_array_equal(loaded.genome.numpy()[name], value)
    model.fit(x[64:], y[64:], batch_size=16, shuffle=False, verbose=0)
    loaded.fit(x[64:], y[64:], batch_size=16, shuffle=False, verbose=0)
    for a, b in zip(synapse_arrays(model), synapse_arrays(loaded)):
        np.testing.assert_array_equal(a, b)


def test_genome_json_round_trip_through_model_config():
    model = make_model(seed=8)
    clone = bk.BlurModel.from_config(model.get_config())
    for name, value in model.genome.numpy().items():
        np.testing.assert_array_equal(clone.genome.numpy()[name], value)
    g = bk.Genome.from_json(model.genome.to_json())
    assert g.k == K and g.to_dict() == model.genome.to_dict()


def test_nonfinite_synapses_stop_fit_naming_the_layer():
    net = keras.Sequential([keras.Input((12,)), bk.BlurDense(10, k=2), bk.BlurDense(3, k=2)])
    genome = bk.Genome.random(2, seed=9, transform_std=3.0, synapse_update=1e6, neuron_update=50.0)
    model = bk.BlurModel(net, genome, bk.BlurConfig(hidden_activation="linear",
                                                    last_activation="linear",
                                                    backward_activation="linear"))
    model.compile()
    x, y = toy_data(seed=9, n=512)
    x = x * 1e3
    with pytest.raises(bk.NonFiniteError, match=r"BLUR layer 'blur_dense(_\d+)?' \(layer \d of 2\)"):
        model.fit(x, y, batch_size=16, epochs=5, verbose=0)
    for w in model.network.weights:  # the last finite synapses were kept
        assert np.all(np.isfinite(w.numpy()))


# --- bad input -------------------------------------------------------------

def test_bad_k():
    with pytest.raises(ValueError, match=r"BlurDense k=1; expected an int >= 2 \(number of states\)"):
        bk.BlurDense(4, k=1)
    with pytest.raises(ValueError, match=r"Genome needs k .* >= 2, got 1"):
        bk.Genome(1)


def test_genome_k_mismatch():
    net = keras.Sequential([keras.Input((5,)), bk.BlurDense(4, k=3), bk.BlurDense(2, k=3)])
    with pytest.raises(ValueError, match="Genome has k=2 states but BlurDense .* has k=3"):
        bk.BlurModel(net, bk.Genome.random(2))


def test_nonfinite_genome():
    with pytest.raises(ValueError, match="entry 'nu' .* non-finite"):
        bk.Genome(2, values={"nu": [[np.nan, 0.0], [0.0, 1.0]]})
    model = make_model(seed=10)
    model.genome.variable("eta_syn").assign(np.inf)
    x, y = toy_data()
    with pytest.raises(ValueError, match="entry 'eta_syn' .* is not finite"):
        model.fit(x, y, verbose=0)


def test_wrong_input_width_and_rank():
    model = make_model(seed=11)
    x, y = toy_data(width=12)
    with pytest.raises(ValueError, match=r"Input has shape \(128, 7\); the network expects \(None, 12\)"):
        model.fit(x[:, :7], y, verbose=0)
    with pytest.raises(ValueError, match=r"Input has shape \(128, 12, 1\)"):
        model.predict(x[..., None], verbose=0)
    with pytest.raises(ValueError, match=r"expects input of shape \[batch, features\].*Flatten"):
        keras.Sequential([keras.Input((3, 4, 5)), bk.BlurDense(2, k=2)])


def test_labels_out_of_range():
    model = make_model(seed=12)
    x, y = toy_data()
    with pytest.raises(ValueError, match=r"Labels must be in \[0, 3\) .* got values in \[0, 5\]"):
        model.fit(x, np.where(y == 2, 5, y), verbose=0)
    with pytest.raises(ValueError, match="got values in \\[-1, 2\\]"):
        model.evaluate(x, np.where(y == 0, -1, y), verbose=0)
    with pytest.raises(ValueError, match="One-hot labels must have 3 columns"):
        model.fit(x, np.zeros((128, 4)), verbose=0)


def test_layer_without_genome_and_bad_options():
    layer = bk.BlurDense(3, k=2)
    with pytest.raises(ValueError, match="has no genome"):
        layer(np.zeros((2, 4), "f4"))
    out = layer(np.zeros((2, 4), "f4"), genome=bk.Genome.random(2))
    assert out.shape == (2, 3, 2)
    with pytest.raises(ValueError, match="not a known activation"):
        bk.BlurDense(3, activation="softsign_typo")
    with pytest.raises(ValueError, match="backward_rule='sideways'"):
        bk.BlurConfig(backward_rule="sideways")
    with pytest.raises(ValueError, match="optimizer= is not used"):
        make_model().compile(optimizer="sgd")
    with pytest.raises(ValueError, match="no BlurDense layer"):
        bk.BlurModel(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), bk.Genome(2))


def test_model_call_through_layers_equals_pure_predict_per_layer_genome():
    """One forward function: model(x) runs the BlurDense layers, inner.predict the pure path."""
    keras.utils.set_random_seed(5)
    net = keras.Sequential([keras.Input((12,)), bk.BlurDense(7, k=K), bk.BlurDense(5, k=K),
                            bk.BlurDense(3, k=K)])
    genome = bk.Genome.random(K, seed=5, num_layers=3, synapse_update=-1e-2)
    model = bk.BlurModel(net, genome, bk.BlurConfig(activation_norm=True, synapse_norm=True))
    x, y = toy_data(seed=5, n=16)
    model.step(x, y)
    fwd, _ = model.activations
    moments = [(l.moving_mean, l.moving_variance) for l in model.blur_layers]  # inference
    pure = bk.predict(genome.params(), model.synapses(), x, model.config, True, fwd,
                      moments=moments)
    # float32 round-off: the pure path computes layer 1 by the input-layer shortcut
    # (states.input_matmul), the layer by the general contraction of [x, 0, …, 0]
    np.testing.assert_allclose(model(x).numpy(), pure.numpy(), atol=5e-6)
    np.testing.assert_allclose(model.predict(x, verbose=0), pure.numpy(), atol=5e-6)
