"""Signatures and RSA-OAEP decryptions per second, through SoftHSM2, through p11-kit, and in software.

    python bench/sign_rates.py [--seconds 2] [--runs 3] [--rsa-bits 2048] [--no-p11-kit]

One process, one core: the HSM figure goes through the same HSMManager (and its
process-wide lock) that serves requests; the p11-kit figure through the same
manager on p11-kit's client module, the SoftHSM2 token served by ``p11-kit server``
on a Unix socket (a network HSM's shape: every call is a round trip); the software
figure through the same signing and decrypting functions the software manager uses.

Decryption: the RSAES-OAEP decryption of a JWE encrypted key (a 32-byte content key),
the one private-key step of decrypting a request object (``C_Decrypt`` with
``CKM_RSA_PKCS_OAEP`` on the token), with the hash the token does (SoftHSM 2.6: SHA-1
only, so RSA-OAEP); and a whole compact JWE (A256GCM, a 2 KB nested request object)
through :func:`keys.jwe.decrypt_compact`, to show what the JOSE around it costs; and
ECDH-ES's private-key step, the P-256 shared secret (``CKM_ECDH1_DERIVE`` on the token,
which p11-kit 0.24 does not pass through).

A figure, not a test: it prints the median and range of several timed runs and asserts nothing.
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


P11KIT_CLIENTS = ["/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so", "/usr/lib/aarch64-linux-gnu/pkcs11/p11-kit-client.so",
                  "/usr/lib/pkcs11/p11-kit-client.so"]


def rate(operation, seconds: float, argument: bytes = SIGNING_INPUT) -> float:
    count, deadline = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        for _ in range(10):
            operation(argument)
        count += 10
    return count / (time.perf_counter() - start)


def measure(operation, seconds: float, runs: int, argument: bytes = SIGNING_INPUT) -> tuple[float, float, float]:
    figures = [rate(operation, seconds, argument) for _ in range(runs)]
    return statistics.median(figures), min(figures), max(figures)


def text(figure: tuple[float, float, float] | None, missing: str = "-") -> str:
    return f"{figure[0]:9.0f} ({figure[1]:.0f}-{figure[2]:.0f})" if figure else missing


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


def p11kit_manager(workdir: Path, library: str):
    """The bench token served by ``p11-kit server``, and a manager on p11-kit's client module; or None."""
    client = next((path for path in P11KIT_CLIENTS if os.path.exists(path)), None)
    if client is None or shutil.which("p11-kit") is None:
        return None, None
    socket = workdir / "p11-kit.sock"
    server = subprocess.Popen(["p11-kit", "server", "-f", "-n", str(socket), "--provider", library,
                               "pkcs11:token=bench"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.monotonic() + 20
    while not socket.exists() and server.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if not socket.exists():
        server.kill()
        return None, None
    os.environ["P11_KIT_SERVER_ADDRESS"] = f"unix:path={socket}"
    from keys.hsm import HSMConfig, HSMManager

    manager = HSMManager(HSMConfig(library=client, pin="1234", token_label="bench", key_set_prefix="p11kit."))
    manager.open()
    return manager, server


def signature_rows(hsm, remote, args) -> None:
    from keys.algorithms import get_algorithm
    from keys.errors import HSMError
    from keys.software import generate_private_key, signing_function

    print(f"signatures/s, one process; median (min-max) of {args.runs} runs of {args.seconds:g} s; "
          f"RSA-{args.rsa_bits}")
    print(f"{'alg':13} {'SoftHSM2':>24} {'p11-kit -> SoftHSM2':>24} {'software':>24} {'hsm/sw':>7}")
    for alg in ALGORITHMS:
        algorithm = get_algorithm(alg)
        software = signing_function(generate_private_key(algorithm, args.rsa_bits), algorithm)
        sw = measure(software, args.seconds, args.runs)
        figures: list[tuple[float, float, float] | None] = []
        for manager in (hsm, remote):
            try:
                record = manager.generate(f"bench.{alg}", alg, rsa_bits=args.rsa_bits) if manager else None
                figures.append(measure(manager.signer(record).sign, args.seconds, args.runs) if record else None)
            except HSMError:  # p11-kit 0.24 does not pass CKM_EDDSA through
                figures.append(None)
        ratio = f"{figures[0][0] / sw[0]:6.2f}" if figures[0] else "-"
        print(f"{alg:13} {text(figures[0]):>24} {text(figures[1]):>24} {text(sw):>24} {ratio:>7}")


def _agreement_rows(hsm, remote, args) -> None:
    """ECDH-ES: the shared secret (on the token: CKM_ECDH1_DERIVE into a session object, read, destroyed)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from keys.algorithms import ENCRYPTION_ALGORITHMS
    from keys.errors import HSMError
    from keys.jwk import load_public_jwk
    from keys.software import decrypting_function, generate_private_key

    figures = []
    for manager in (hsm, remote, None):
        try:
            if manager is not None:
                record = manager.generate("bench.ecdh", "ECDH-ES", rsa_bits=args.rsa_bits)
                agree, public = manager.decrypter(record), load_public_jwk(record.public_jwk)
            else:
                private_key = generate_private_key(ENCRYPTION_ALGORITHMS["ECDH-ES"], args.rsa_bits)
                agree = decrypting_function(private_key, ENCRYPTION_ALGORITHMS["ECDH-ES"])
                public = private_key.public_key()
        except HSMError:
            figures.append(None)
            continue
        assert isinstance(public, ec.EllipticCurvePublicKey)
        point = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        try:
            figures.append(measure(agree, args.seconds, args.runs, point))
        except HSMError:  # no CKM_ECDH1_DERIVE (p11-kit 0.24 does not pass it through)
            figures.append(None)
    ratio = f"{figures[0][0] / figures[2][0]:6.2f}" if figures[0] and figures[2] else "-"
    print(f"{'ECDH-ES Z':13} {text(figures[0]):>24} {text(figures[1]):>24} {text(figures[2]):>24} {ratio:>7}")


def _decryption_key(manager, rsa_bits: int):
    """(record, decrypt function) of a fresh decryption key: on ``manager``'s token, or in software."""
    from keys.algorithms import ENCRYPTION_ALGORITHMS
    from keys.jwk import public_jwk
    from keys.signer import KeyRecord
    from keys.software import decrypting_function, generate_private_key

    if manager is None:
        alg = "RSA-OAEP-256"
        private_key = generate_private_key(ENCRYPTION_ALGORITHMS[alg], rsa_bits)
        jwk = public_jwk(private_key.public_key(), kid="software", alg=alg, use="enc")
        return KeyRecord("bench.decrypt", "software", alg, "enc", "software", jwk), decrypting_function(
            private_key, ENCRYPTION_ALGORITHMS[alg])
    record = manager.generate("bench.decrypt", "RSA-OAEP-256", rsa_bits=rsa_bits)
    # The hash the token's OAEP does (SoftHSM 2.6: SHA-1 only), as the key service chooses it.
    alg = "RSA-OAEP-256" if "sha256" in manager.oaep_hashes(record) else "RSA-OAEP"
    record = KeyRecord(record.key_set, record.kid, alg, "enc", record.backend, {**record.public_jwk, "alg": alg})
    return record, manager.decrypter(record)


def decryption_rows(hsm, remote, args) -> None:
    import json

    from cryptography.hazmat.primitives.asymmetric import padding
    from joserfc import jwe as joserfc_jwe
    from joserfc.jwk import import_key

    from keys.algorithms import ENCRYPTION_ALGORITHMS
    from keys.jwe import DecryptionKey, decrypt_compact

    print(f"\nRSA-OAEP decryptions/s: a JWE content key, and a whole 2 KB compact JWE (A256GCM); RSA-{args.rsa_bits}")
    plaintext = json.dumps({"request": "A" * 2000}).encode()
    columns: list[tuple[tuple[float, float, float] | None, tuple[float, float, float] | None]] = []
    used = []
    for name, manager, present in (("SoftHSM2", hsm, hsm is not None), ("p11-kit", remote, remote is not None),
                                   ("software", None, True)):
        if not present:
            columns.append((None, None))
            continue
        record, decrypt = _decryption_key(manager, args.rsa_bits)
        used.append(f"{name} {record.alg}")
        public = import_key(record.public_jwk)
        digest = ENCRYPTION_ALGORITHMS[record.alg].cryptography_hash()
        encrypted_key = public.public_key.encrypt(os.urandom(32), padding.OAEP(padding.MGF1(digest), digest, None))
        token = joserfc_jwe.encrypt_compact({"alg": record.alg, "enc": "A256GCM", "kid": record.kid}, plaintext,
                                            public, algorithms=[record.alg, "A256GCM"]).encode()
        keys = [DecryptionKey(record, decrypt)]
        columns.append((measure(decrypt, args.seconds, args.runs, encrypted_key),
                        measure(lambda value, keys=keys: decrypt_compact(value.decode(), keys, key_set="bench"),
                                args.seconds, args.runs, token)))
    print("(" + ", ".join(used) + ")")
    print(f"{'operation':13} {'SoftHSM2':>24} {'p11-kit -> SoftHSM2':>24} {'software':>24} {'hsm/sw':>7}")
    for row, name in enumerate(("content key", "compact JWE")):
        hw, via, sw = (column[row] for column in columns)
        ratio = f"{hw[0] / sw[0]:6.2f}" if hw and sw else "-"
        print(f"{name:13} {text(hw):>24} {text(via):>24} {text(sw):>24} {ratio:>7}")
    _agreement_rows(hsm, remote, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one timed run")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per figure")
    parser.add_argument("--rsa-bits", type=int, default=2048)
    parser.add_argument("--no-p11-kit", action="store_true", help="skip the figures through p11-kit server")
    parser.add_argument("--only", choices=["sign", "decrypt"], help="only signatures, or only decryptions")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-softhsm-"))
    server = None
    try:
        hsm = softhsm_manager(workdir)
        remote = None
        if hsm is None:
            print("softhsm2 not installed: software figures only")
        elif not args.no_p11_kit:
            remote, server = p11kit_manager(workdir, hsm.config.library)
        if args.only != "decrypt":
            signature_rows(hsm, remote, args)
        if args.only != "sign":
            decryption_rows(hsm, remote, args)
        for manager in (remote, hsm):
            if manager is not None:
                manager.close()
    finally:
        if server is not None:
            server.kill()
            server.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
