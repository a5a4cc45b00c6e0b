"""The probe genomes of rows P6-P8 of docs/RESULTS.md ("What was tried"): the shipped
`sgd_residual_scheduled` with one more ramp (or one ramp changed), written to genomes/.

    python docs/results/tried/P6/make_probes.py
    python train/evaluate.py --rule=docs/results/tried/P6/genomes/<name>.json \
        --gin_file=docs/results/tried/P6/select.gin --out_dir=/tmp/P6/<name>
    python docs/results/tried/P6/table.py     # table.md from the committed suites/

genomes/default_eta0.25x2500.json is the default run's genome (`make run`'s output at the
commit of RESULTS' "The default run") with eta_syn ramped to 0.25 x over 2,500 steps, checked by
    python train/fit_check.py --rule=docs/results/tried/P6/genomes/default_eta0.25x2500.json
(default_eta0.25x2500_fit.md).
"""

import json
import os

import blur_keras as bk

HERE = os.path.dirname(os.path.abspath(__file__))


def probes(base):
    """name -> (values edits, extra ramps, steps of the shipped pre[1][0] ramp or None:
    no ramp, i.e. `sgd_residual`)."""
    v = base["values"]["eta_syn"]
    eta = {f"eta{m:g}x{s}": ({}, [{"entry": "eta_syn", "index": None, "to": m * v, "steps": s}], 1000)
           for m, s in [(0.25, 200), (0.5, 50), (0.5, 100), (0.7, 30),
                        (2, 50), (2, 100), (3, 300), (4, 200)]}
    fsyn = {f"fsyn{f:g}x{s}": ({"f_syn": f}, [{"entry": "f_syn", "index": None, "to": 1.0, "steps": s}], 1000)
            for f, s in [(0.9, 100), (0.95, 100), (0.98, 100), (0.98, 300)]}
    pre = {f"pre0x{s}": ({}, [], s) for s in (200, 500)}
    return {"base": ({}, [], 1000), "unscheduled": ({}, [], None), **eta, **fsyn, **pre}


def main():
    base = bk.Genome.pretrained("sgd_residual_scheduled").to_dict()
    os.makedirs(os.path.join(HERE, "genomes"), exist_ok=True)
    for name, (values, ramps, pre_steps) in probes(base).items():
        g = json.loads(json.dumps(base))
        g["values"].update(values)
        pre = [dict(g["schedule"][0], steps=pre_steps)] if pre_steps else []
        g["schedule"] = pre + ramps
        with open(os.path.join(HERE, "genomes", name + ".json"), "w") as f:
            json.dump(g, f, indent=1)


if __name__ == "__main__":
    main()
