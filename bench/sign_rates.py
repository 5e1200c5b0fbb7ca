"""Signatures per second for each algorithm, through SoftHSM2 and in software.

    python bench/sign_rates.py [--seconds 2] [--runs 3] [--rsa-bits 2048]

One process, one core: the HSM figure goes through the same HSMManager (and its
process-wide lock) that serves requests; the software figure through the same
signing functions the software manager uses.  A figure, not a test: it prints
the median and range of several timed runs and asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ALGORITHMS = ["RS256", "PS256", "ES256", "ES384", "ES512", "EdDSA"]
LIBRARIES = ["/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"]
SIGNING_INPUT = b"eyJhbGciOiJFUzI1NiIsImtpZCI6IjEiLCJ0eXAiOiJhdCtqd3QifQ." + b"A" * 300


def rate(sign, seconds: float) -> float:
    count, deadline = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        for _ in range(10):
            sign(SIGNING_INPUT)
        count += 10
    return count / (time.perf_counter() - start)


def measure(sign, seconds: float, runs: int) -> tuple[float, float, float]:
    figures = [rate(sign, seconds) for _ in range(runs)]
    return statistics.median(figures), min(figures), max(figures)


def softhsm_manager(workdir: Path):
    library = next((path for path in LIBRARIES if os.path.exists(path)), None)
    if library is None or shutil.which("softhsm2-util") is None:
        return None
    (workdir / "tokens").mkdir()
    conf = workdir / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {workdir / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench", "--pin", "1234",
                    "--so-pin", "5678"], check=True, capture_output=True)
    from keys.hsm import HSMConfig, HSMManager

    manager = HSMManager(HSMConfig(library=library, pin="1234", token_label="bench"))
    manager.open()
    return manager


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one timed run")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per figure")
    parser.add_argument("--rsa-bits", type=int, default=2048)
    args = parser.parse_args()

    from keys.algorithms import get_algorithm
    from keys.software import generate_private_key, signing_function

    workdir = Path(tempfile.mkdtemp(prefix="bench-softhsm-"))
    try:
        hsm = softhsm_manager(workdir)
        print(f"signatures/s, one process; median (min-max) of {args.runs} runs of {args.seconds:g} s; "
              f"RSA-{args.rsa_bits}")
        print(f"{'alg':7} {'SoftHSM2':>26} {'software':>26} {'hsm/sw':>7}")
        for alg in ALGORITHMS:
            algorithm = get_algorithm(alg)
            software = signing_function(generate_private_key(algorithm, args.rsa_bits), algorithm)
            sw = measure(software, args.seconds, args.runs)
            if hsm is not None:
                record = hsm.generate(f"bench.{alg}", alg, rsa_bits=args.rsa_bits)
                signer = hsm.signer(record)
                hw = measure(signer.sign, args.seconds, args.runs)
                hsm_text = f"{hw[0]:9.0f} ({hw[1]:.0f}-{hw[2]:.0f})"
                ratio = f"{hw[0] / sw[0]:6.2f}"
            else:
                hsm_text, ratio = "softhsm2 not installed", "-"
            print(f"{alg:7} {hsm_text:>26} {f'{sw[0]:9.0f} ({sw[1]:.0f}-{sw[2]:.0f})':>26} {ratio:>7}")
        if hsm is not None:
            hsm.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
