"""The probe that came before genome schedules: ``train/fit_check.py`` with ν̃[1][0]
(``pre[1][0]``) moved linearly from ``SCHED_V0`` to 0 over ``SCHED_STEPS`` steps by a Keras
callback that assigns the genome variable before each batch (the ``ramp*_callback_*`` results
here). The library now does this in the compiled step (``blur_keras.rules.schedule``, docs/spec.md
§7). This callback counts steps from 1, the library from 0 (its ramp is one step behind this
one), so their numbers differ a little: 20-epoch finals 0.830 / 0.839 / 0.760 / 0.766 here,
0.831 / 0.839 / 0.760 / 0.767 from the shipped genome.

    SCHED_V0=-0.19 SCHED_STEPS=1000 python docs/results/sgd_residual_scheduled/probes/ramp_callback.py \
        --rule=sgd_residual --gin_file=gin/eval/fit_long.gin --gin_param='fit_check.tasks=[@fashion28/Task()]'
"""
import os
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 4))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "train"))

from blur_keras.evaluation import stability  # noqa: E402
V0 = float(os.environ["SCHED_V0"])
TAU = int(os.environ["SCHED_STEPS"])


class Ramp(stability._Recorder):
    """The fit check's recorder, also setting pre[1][0] for the coming step."""

    def on_train_batch_begin(self, batch, logs=None):
        super().on_train_batch_begin(batch, logs)  # self.step: 1-based step of this batch
        genome = self.model.genome
        pre = genome.numpy()["pre"]
        pre[1, 0] = V0 * (1 - min(1.0, max(0.0, self.step / TAU)))
        genome.variable("pre").assign(pre)


stability._Recorder = Ramp

if __name__ == "__main__":
    import fit_check
    from absl import app, logging

    logging.set_verbosity(logging.INFO)
    app.run(fit_check.main)
