"""P9: sgd_residual_scheduled with a second ramp that lowers the synapse step eta~ (`eta_syn`)
after a delay: does the rule, left running 30,000-40,000 steps, stay within 0.01 of its best?

    python docs/results/tried/P9/make_probes.py     # writes the five genomes beside this file
    python train/fit_check.py --rule=docs/results/tried/P9/E_s1000_n4000_x0.json \
        --gin_file=gin/eval/fit_long.gin --out_dir=docs/results/tried/P9/E_s1000_n4000_x0

Each ramp: (start, steps, factor): eta~ held for `start` steps, then moved linearly to
factor x its learned value over `steps` steps. D chains three ramps (a piecewise-linear decay).
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = os.path.join(HERE, "..", "..", "..", "..", "blur_keras", "genomes",
                    "sgd_residual_scheduled.json")
VARIANTS = {
    "A_s1000_n4000_x0.1": [(1000, 4000, 0.1)],
    "B_s500_n2000_x0.1": [(500, 2000, 0.1)],
    "C_s2000_n8000_x0.25": [(2000, 8000, 0.25)],
    "D_piecewise_0.3_0.1_0.02": [(500, 2000, 0.3), (2500, 7500, 0.1), (10000, 20000, 0.02)],
    "E_s1000_n4000_x0": [(1000, 4000, 0.0)],
}

if __name__ == "__main__":
    base = json.load(open(BASE))
    eta = base["values"]["eta_syn"]
    for name, ramps in VARIANTS.items():
        genome = json.loads(json.dumps(base))
        genome["schedule"] += [{"entry": "eta_syn", "index": None, "to": eta * factor,
                                "steps": steps, "start": start} for start, steps, factor in ramps]
        with open(os.path.join(HERE, name + ".json"), "w") as f:
            json.dump(genome, f, indent=1)
