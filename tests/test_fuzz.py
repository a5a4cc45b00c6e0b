"""A table of malformed inputs for every public entry point.

Each must end in a ValueError/TypeError (or the library's own error class)
raised before any synapse changes, and leave the synapses as they were.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import blur_keras as bk

K = 3
ALLOWED = (ValueError, TypeError, bk.NonFiniteError)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((6,)), bk.BlurDense(8, k=K), bk.BlurDense(3, k=K)])
    m = bk.BlurModel(net, bk.Genome.random(K, seed=0, synapse_update=-1e-2),
                     bk.BlurConfig(oja=True, activation_norm=True))
    m.compile()
    return m


def _x(n=8, width=6):
    return np.random.default_rng(0).normal(size=(n, width)).astype("f4")


def _y(n=8):
    return np.arange(n) % 3


def _nan_x():
    x = _x()
    x[0, 0] = np.nan
    return x


def _ds(x, y):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(4)


MODEL_CASES = {
    # step(x, y)
    "step_wide_x": lambda m: m.step(_x(width=7), _y()),
    "step_rank3_x": lambda m: m.step(_x()[:, :, None], _y()),
    "step_short_y": lambda m: m.step(_x(), _y(5)),
    "step_label_3": lambda m: m.step(_x(), _y() + 1),
    "step_label_negative": lambda m: m.step(_x(), _y() - 1),
    "step_label_fraction": lambda m: m.step(_x(), _y() + 0.5),
    "step_label_nan": lambda m: m.step(_x(), np.full(8, np.nan)),
    "step_string_labels": lambda m: m.step(_x(), np.array(list("abcabcab"))),
    "step_string_x": lambda m: m.step(np.full((8, 6), "1.0"), _y()),
    "step_complex_x": lambda m: m.step(_x() + 1j, _y()),
    "step_nan_x": lambda m: m.step(_nan_x(), _y()),
    "step_inf_x": lambda m: m.step(_x() * np.inf, _y()),
    "step_empty": lambda m: m.step(_x(0), _y(0)),
    "step_one_example": lambda m: m.step(_x(1), _y(1)),
    "step_one_hot_wrong_width": lambda m: m.step(_x(), np.eye(4)[_y()]),
    "step_labels_rank3": lambda m: m.step(_x(), np.zeros((8, 3, 1))),
    # fit
    "fit_wide_x": lambda m: m.fit(_x(width=5), _y(), verbose=0),
    "fit_label_7": lambda m: m.fit(_x(), _y() * 3, verbose=0),
    "fit_dataset_label_7": lambda m: m.fit(_ds(_x(), _y() * 3), verbose=0),
    "fit_dataset_label_fraction": lambda m: m.fit(_ds(_x(), _y() + 0.25), verbose=0),
    "fit_dataset_nan_x": lambda m: m.fit(_ds(_nan_x(), _y()), verbose=0),
    "fit_sample_weight": lambda m: m.fit(_x(), _y(), sample_weight=np.ones(8), verbose=0),
    "fit_class_weight": lambda m: m.fit(_x(), _y(), class_weight={0: 1, 1: 1, 2: 1}, verbose=0),
    "fit_batch_size_1": lambda m: m.fit(_x(), _y(), batch_size=1, verbose=0),
    "fit_string_labels": lambda m: m.fit(_x(), np.array(list("abcabcab")), verbose=0),
    "fit_complex_x": lambda m: m.fit(_x() + 1j, _y(), verbose=0),
    "fit_bad_validation": lambda m: m.fit(_x(), _y(), validation_data=(_x(), _y() + 5),
                                          verbose=0),
    # predict / evaluate
    "predict_empty": lambda m: m.predict(_x(0), verbose=0),
    "predict_wide": lambda m: m.predict(_x(width=9), verbose=0),
    "predict_string": lambda m: m.predict(np.full((8, 6), "a"), verbose=0),
    "evaluate_label_9": lambda m: m.evaluate(_x(), _y() + 9, verbose=0),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_blur_model_rejects_malformed_input(model, case):
    before = [w.numpy() for w in model.network.weights]
    with pytest.raises(ALLOWED) as info:
        MODEL_CASES[case](model)
    assert str(info.value).strip(), case
    assert "Traceback" not in str(info.value)
    for a, b in zip(model.network.weights, before):
        np.testing.assert_array_equal(a.numpy(), b)


def _pure():
    params = bk.Genome.random(K, seed=0).params()
    return params, bk.init_synapses(0, (6, 8, 3), K)


PURE_CASES = {
    "x_wide": lambda p, s: bk.inner_step(p, s, tf.zeros([4, 7]), tf.zeros([4, 3])),
    "x_rank1": lambda p, s: bk.inner_step(p, s, tf.zeros([6]), tf.zeros([4, 3])),
    "targets_wide": lambda p, s: bk.inner_step(p, s, tf.zeros([4, 6]), tf.zeros([4, 5])),
    "batch_mismatch": lambda p, s: bk.inner_step(p, s, tf.zeros([4, 6]), tf.zeros([2, 3])),
    "x_float64": lambda p, s: bk.inner_step(p, s, tf.zeros([4, 6], tf.float64), tf.zeros([4, 3])),
    "x_int": lambda p, s: bk.inner_step(p, s, tf.zeros([4, 6], tf.int32), tf.zeros([4, 3])),
    "genome_k2": lambda p, s: bk.inner_step(bk.Genome.random(2).params(), s, tf.zeros([4, 6]),
                                            tf.zeros([4, 3])),
    "synapses_not_pairs": lambda p, s: bk.inner_step(p, [w for w, _ in s], tf.zeros([4, 6]),
                                                     tf.zeros([4, 3])),
    "synapses_empty": lambda p, s: bk.inner_step(p, (), tf.zeros([4, 6]), tf.zeros([4, 3])),
    "chain_broken": lambda p, s: bk.inner_step(p, (s[0], s[0]), tf.zeros([4, 6]),
                                               tf.zeros([4, 8])),
    "v_transposed": lambda p, s: bk.predict(p, ((s[0][0], tf.transpose(s[0][1], [1, 0, 2])),),
                                            tf.zeros([4, 6])),
    "k_one_synapses": lambda p, s: bk.predict(p, ((tf.zeros([7, 3, 1]), tf.zeros([3, 6, 1])),),
                                              tf.zeros([4, 6])),
    "init_k_zero": lambda p, s: bk.init_synapses(0, (6, 3), 0),
}


@pytest.mark.parametrize("case", sorted(PURE_CASES))
def test_pure_api_rejects_malformed_input(case):
    params, synapses = _pure()
    before = [t.numpy() for pair in synapses for t in pair]
    with pytest.raises((ValueError, TypeError)) as info:
        PURE_CASES[case](params, synapses)
    assert str(info.value).strip()
    for t, b in zip([t for pair in synapses for t in pair], before):
        np.testing.assert_array_equal(t.numpy(), b)


GENOME_JSON_CASES = {
    "not_json": "{nu: 1",
    "a_list": "[1, 2, 3]",
    "a_number": "3",
    "missing_values": '{"k": 2}',
    "missing_k": '{"values": {}}',
    "k_one": '{"k": 1, "values": {}}',
    "k_string": '{"k": "2", "values": {}}',
    "num_layers_true": None,  # filled below from a real file
    "missing_entry": None,
    "unknown_entry": None,
    "unknown_key": None,
    "string_value": None,
    "nan_value": None,
    "wrong_shape": None,
}


def _genome_json(case):
    import json

    text = GENOME_JSON_CASES[case]
    if text is not None:
        return text
    data = json.loads(bk.Genome.random(2, seed=0).to_json())
    if case == "num_layers_true":
        data["num_layers"] = True
    elif case == "missing_entry":
        del data["values"]["nu"]
    elif case == "unknown_entry":
        data["values"]["zeta"] = 1.0
    elif case == "unknown_key":
        data["colour"] = "blue"
    elif case == "string_value":
        data["values"]["eta"] = "fast"
    elif case == "nan_value":
        data["values"]["eta"] = float("nan")
    elif case == "wrong_shape":
        data["values"]["nu"] = [[1.0, 2.0, 3.0]]
    return json.dumps(data)


@pytest.mark.parametrize("case", sorted(GENOME_JSON_CASES))
def test_genome_json_rejects_malformed_files(case):
    with pytest.raises(ValueError) as info:
        bk.Genome.from_json(_genome_json(case))
    assert "Traceback" not in str(info.value) and str(info.value).strip()


@pytest.fixture(scope="module")
def saved_rule(tmp_path_factory):
    from blur_keras.rules.export import export_saved_model

    path = export_saved_model(str(tmp_path_factory.mktemp("fuzz") / "rule"),
                              bk.Genome.random(2, seed=1).numpy(), bk.BlurConfig(), (4, 5, 3),
                              dynamic=False)
    return tf.saved_model.load(path)


SAVED_MODEL_CASES = {
    "label_too_large": lambda r, s: r.train_step(*s, _x(width=4), np.full(8, 3, "i4")),
    "label_negative": lambda r, s: r.train_step(*s, _x(width=4), np.full(8, -1, "i4")),
    "label_huge": lambda r, s: r.train_step(*s, _x(width=4), np.full(8, 1000, "i4")),
    "x_too_wide": lambda r, s: r.train_step(*s, _x(width=6), np.zeros(8, "i4")),
    "y_short": lambda r, s: r.train_step(*s, _x(width=4), np.zeros(5, "i4")),
    "predict_too_wide": lambda r, s: r.predict(*s, _x(width=6)),
}


@pytest.mark.parametrize("case", sorted(SAVED_MODEL_CASES))
def test_saved_model_rejects_malformed_input(saved_rule, case):
    synapses = saved_rule.init(tf.constant(0, tf.int64))
    before = [t.numpy() for t in synapses]
    with pytest.raises((ValueError, TypeError, tf.errors.InvalidArgumentError)) as info:
        SAVED_MODEL_CASES[case](saved_rule, synapses)
    assert "numpy=" not in str(info.value) and "array(" not in str(info.value)
    for t, b in zip(synapses, before):
        np.testing.assert_array_equal(t.numpy(), b)
