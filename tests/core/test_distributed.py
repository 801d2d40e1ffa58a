"""Several processes on this machine act as hosts (jax.distributed, gloo collectives) and run
one evolution together; the result equals one process with the same number of devices."""
import json
import os
import socket
import subprocess
import sys

from conftest import ROOT, TEST_XLA_FLAGS, run_python

RUN = """
import json, sys
import jax
import genetic_dl as gdl
if len(sys.argv) > 1:
    gdl.initialize_hosts(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
data = gdl.load_dataset("iris")
pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((16,)), data, 8, "adam")
res = gdl.evolve_weights(jax.random.key(1), pop, data, generations=3, epochs=2, batch_size=16,
                         config=gdl.WeightGAConfig(crossover="uniform"))
print(json.dumps({"devices": jax.device_count(), "processes": jax.process_count(),
                  "best": [h["best"] for h in res.history],
                  "mean": [h["mean"] for h in res.history],
                  "weights": float(sum(abs(x).sum() for x in
                                       jax.tree_util.tree_leaves(res.best_params)))}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_evolve_like_one(tmp_path):
    single = json.loads(run_python(RUN, devices=4).strip().splitlines()[-1])
    script = tmp_path / "run.py"
    script.write_text(RUN)
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=2 {TEST_XLA_FLAGS}",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    address = f"127.0.0.1:{_free_port()}"
    procs = [subprocess.Popen([sys.executable, str(script), address, "2", str(i)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    for r in results:
        assert r["devices"] == 4 and r["processes"] == 2
        for key in ("best", "mean"):
            assert all(abs(a - b) < 1e-4 for a, b in zip(r[key], single[key])), (r, single)
        assert abs(r["weights"] - single["weights"]) < 1e-3 * single["weights"]
