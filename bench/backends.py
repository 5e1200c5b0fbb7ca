"""What the benchmarks share: a SoftHSM2 token of their own, and a signer per backend."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOFTHSM_LIBRARIES = ["/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"]
PIN = "bench-pin-1234"
TOKEN_LABEL = "bench"


def softhsm_environment(workdir: Path) -> dict[str, str]:
    """A new SoftHSM2 token under ``workdir``, and the provider settings that use it."""
    library = next((path for path in SOFTHSM_LIBRARIES if os.path.exists(path)), None)
    if library is None:
        raise RuntimeError("softhsm2 is not installed")
    (workdir / "tokens").mkdir(exist_ok=True)
    conf = workdir / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {workdir / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {"SOFTHSM2_CONF": str(conf), "HSM_ENABLED": "true", "HSM_LIBRARY": library,
           "HSM_TOKEN_LABEL": TOKEN_LABEL, "HSM_PIN": PIN}
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", TOKEN_LABEL, "--pin", PIN, "--so-pin", PIN],
                   check=True, capture_output=True, env={**os.environ, **env})
    return env


@dataclass
class SigningKey:
    """A signing function and the public JWK that verifies its signatures."""

    sign: Callable[[bytes], bytes]
    public_jwk: dict[str, Any]


def make_signer(backend: str, alg: str, label: str) -> Callable[[bytes], bytes]:
    """A new ``alg`` key (RSA: 2048 bits) through the provider's own backend code, as a signing function.

    ``softhsm`` uses the token of the HSM_* settings in the environment and
    generates the pair there under ``label``; ``software`` keeps it in memory.
    """
    return make_signing_key(backend, alg, label).sign


def make_signing_key(backend: str, alg: str, label: str) -> SigningKey:
    """:func:`make_signer`, with the public key: so that what a benchmark signs can be checked."""
    from keys.algorithms import get_algorithm

    if backend == "softhsm":
        from keys.hsm import HSMConfig, HSMManager

        manager = HSMManager(HSMConfig(library=os.environ["HSM_LIBRARY"], pin=os.environ["HSM_PIN"],
                                       token_label=os.environ["HSM_TOKEN_LABEL"]))
        manager.open()
        record = manager.generate(label, alg, rsa_bits=2048)
        return SigningKey(manager.signer(record).sign, dict(record.public_jwk))
    from joserfc.jwk import ECKey, OKPKey, RSAKey

    from keys.software import generate_private_key, signing_function

    algorithm = get_algorithm(alg)
    private_key = generate_private_key(algorithm, 2048)
    key_type = RSAKey if algorithm.is_rsa else ECKey if algorithm.is_ecdsa else OKPKey
    public_jwk = dict(key_type.import_key(private_key.public_key()).as_dict(private=False))  # type: ignore[arg-type]
    return SigningKey(signing_function(private_key, algorithm), public_jwk)
