"""Admin HTTP API for signing keys.

    GET    /admin/keys                   key sets, their backend and key count
    GET    /admin/keys?evidence=true     per published key: where it lives, its CKA_* attributes,
                                         signing mechanism and certificate (keys.evidence)
    GET    /admin/keys/<set>             the set's public keys with their rotation status
    POST   /admin/keys/<set>             generate a key (on the HSM when the set lives there) {"alg"?}
    POST   /admin/keys/<set>/import      import a private JWK into the software store
    DELETE /admin/keys/<set>/<kid>       delete (destroys it on the HSM)
    POST   /admin/keys/<set>/csr         a PKCS#10 request signed by the key where it lives {"subject"?, "kid"?}
    PUT    /admin/keys/<set>/certificate attach the issued chain, published as x5c {"chain", "kid"?}
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from keys import (
    CertificateError,
    InvalidKey,
    KeyNotFound,
    KeyRecord,
    KeyServiceError,
    NoSigningKey,
    UnsupportedAlgorithm,
)
from oidc import urls
from oidc.state import current_state, key_service
from oidc.text import bounded_text
from oidc.web.admin.api import (
    GENERATE_KEY_FIELDS,
    KEY_CERTIFICATE_FIELDS,
    KEY_CERTIFICATE_REQUEST_FIELDS,
    operation,
    read_body,
)
from oidc.web.admin.auth import require_admin
from oidc.web.errors import error_response

bp = Blueprint("admin_keys", __name__, url_prefix=urls.ADMIN)

#: A key set name: what Hydra and pkcs11-tool labels allow, nothing that needs escaping.
MAX_SET_NAME_LENGTH = 200


def _created(key_set: str, record: KeyRecord) -> Response:
    response = jsonify(set=key_set, kid=record.kid, alg=record.alg, backend=record.backend,
                       active_at=record.active_at, public_jwk=record.public_jwk)
    response.status_code = 201
    return response


def _check_set_name(key_set: str) -> Response | None:
    if bounded_text(key_set, MAX_SET_NAME_LENGTH) is None or not key_set.isprintable():
        return error_response(400, "invalid_request",
                              f"a key set name has 1 to {MAX_SET_NAME_LENGTH} printable characters")
    return None


@bp.get("/keys")
@require_admin
@operation("List key sets, the backend serving each and its number of keys "
           "(?evidence=true: each published key's location, CKA_* attributes, mechanism and certificate)")
def list_key_sets() -> Response:
    service = key_service()
    if request.args.get("evidence") == "true":
        # HSMUnavailable while the token is lost: the error handlers answer 503 with Retry-After.
        return jsonify(keys=[item.as_dict() for item in service.evidence()])
    sets = []
    for name in service.key_set_names():
        statuses = service.keys(name)
        sets.append({"set": name, "backend": service.backend_of(name), "keys": len(statuses)})
    return jsonify(sets=sets)


@bp.get("/keys/<key_set>")
@require_admin
@operation("Show a key set's public keys and their rotation status")
def show_key_set(key_set: str) -> Response:
    try:
        statuses = key_service().keys(key_set)
    except KeyNotFound as exc:
        return error_response(404, "not_found", str(exc))
    return jsonify(set=key_set, keys=[status.as_dict() for status in statuses])


@bp.post("/keys/<key_set>")
@require_admin
@operation("Generate a key (on the HSM when the set lives there)", body="GenerateKey", body_optional=True,
           responses={201: "Generated"})
def generate_key(key_set: str) -> Response:
    if (problem := _check_set_name(key_set)) is not None:
        return problem
    body = read_body(GENERATE_KEY_FIELDS, optional=True)
    alg = body.get("alg")
    try:
        record = key_service().generate(key_set, alg)
    except (UnsupportedAlgorithm, InvalidKey) as exc:
        return error_response(400, "invalid_request", str(exc))
    return _created(key_set, record)


@bp.post("/keys/<key_set>/import")
@require_admin
@operation("Import a private JWK into the software store (never onto the HSM)", body="JWK",
           responses={201: "Imported"})
def import_key(key_set: str) -> Response:
    """Import a private JWK into the software store (never onto the HSM)."""
    if (problem := _check_set_name(key_set)) is not None:
        return problem
    body = read_body(None)
    try:
        record = key_service().import_jwk(key_set, body)
    except (UnsupportedAlgorithm, InvalidKey) as exc:
        return error_response(400, "invalid_request", str(exc))
    return _created(key_set, record)


@bp.delete("/keys/<key_set>/<kid>")
@require_admin
@operation("Delete a key (destroys it on the HSM)", responses={204: "Deleted"})
def delete_key(key_set: str, kid: str) -> Response:
    try:
        deleted = key_service().delete(key_set, kid)
    except KeyServiceError as exc:
        return error_response(400, "invalid_request", str(exc))
    if not deleted:
        return error_response(404, "not_found", f"no key {kid!r} in key set {key_set!r}")
    return Response(status=204)


@bp.post("/keys/<key_set>/csr")
@require_admin
@operation("Make a PKCS#10 certificate request for a key, signed by that key where it lives (on the HSM)",
           body="CertificateRequest", body_optional=True, responses={200: "The request, PEM", 404: "No such key"})
def certificate_request(key_set: str) -> Response:
    from cryptography.hazmat.primitives.serialization import Encoding

    body = read_body(KEY_CERTIFICATE_REQUEST_FIELDS, optional=True)
    subject = body.get("subject") or urls.default_certificate_subject(current_state().settings.issuer)
    service = key_service()
    try:
        kid = body.get("kid") or service.signer(key_set).kid
        request_pem = service.certificate_request(key_set, subject, kid=kid).public_bytes(Encoding.PEM)
    except (KeyNotFound, NoSigningKey) as exc:
        return error_response(404, "not_found", str(exc))
    except CertificateError as exc:
        return error_response(400, "invalid_request", str(exc))
    return jsonify(set=key_set, kid=kid, subject=subject, csr=request_pem.decode("ascii"))


@bp.put("/keys/<key_set>/certificate")
@require_admin
@operation("Attach an issued certificate chain to a key (checked against the key, in order, valid now); "
           "the JWKS then publishes it as x5c and x5t#S256", body="Certificate",
           responses={200: "Attached", 404: "No such key"})
def attach_certificate(key_set: str) -> Response:
    body = read_body(KEY_CERTIFICATE_FIELDS)
    try:
        stored = key_service().attach_certificate(key_set, str(body["chain"]).encode("utf-8"), kid=body.get("kid"))
    except (KeyNotFound, NoSigningKey) as exc:
        return error_response(404, "not_found", str(exc))
    except (CertificateError, InvalidKey, UnicodeEncodeError) as exc:
        return error_response(400, "invalid_request", str(exc))
    return jsonify(set=key_set, kid=stored.kid, not_after=stored.not_after)
