"""P9: training (online, before each step) and validation accuracy per epoch of a rule left
running 320 epochs on 3,000 digits (784-64-10, seeds 0 and 1, as gin/eval/fit_long.gin).

    python docs/results/tried/P9/train_vs_val.py sgd_residual_scheduled \
        docs/results/tried/P9/train_vs_val.json
"""
import json
import sys

import keras
import numpy as np

from blur_keras.evaluation import stability as st
from blur_keras.data import Task

EPOCHS_SHOWN = [0, 9, 19, 79, 159, 319]
rule, out = sys.argv[1], sys.argv[2]
data = st.task_data(Task(dataset='mnist_5k', resolution=28), 1000, 1)
genome = st.load_genome(rule)
res = {}
for seed in (0, 1):
    model = st.build_model(genome, (784, 64, 10), 0, True, 10)
    model = st.reset_synapses(model, seed)
    train = st.train_subset(data, 4000, seed)
    keras.utils.set_random_seed(seed)
    h = model.fit(train[0], train[1], batch_size=32, epochs=320, shuffle=True,
                  validation_data=(data.val_x, data.val_y), validation_batch_size=32, verbose=0)
    # train accuracy of the final network on the whole training subset (not online)
    final_train = st.val_accuracy(model, train[0], train[1])
    res[seed] = {"train_online": h.history["accuracy"], "val": h.history["val_accuracy"],
                 "final_train": final_train}
    a, v = np.array(h.history["accuracy"]), np.array(h.history["val_accuracy"])
    print(seed, "online train", a[EPOCHS_SHOWN].round(3), "val", v[EPOCHS_SHOWN].round(3),
          "final train (eval)", round(final_train, 3), flush=True)
json.dump(res, open(out, 'w'))
