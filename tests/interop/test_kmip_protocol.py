"""Interop: Keyward's KMIP listener with PyKMIP 0.11 (PyPI) as the client, over mutual TLS.

A client whose certificate is registered on a KMIP adapter (through the public `keyprotect` SDK's
REST calls) runs every operation PyKMIP offers that Keyward serves, through both of PyKMIP's
clients (`ProxyKmipClient` and the lower-level `KMIPProxy`); a client with an unregistered
certificate is refused; the adapter's root key governs every KMIP object (disable, delete,
purge); `openssl s_client` connects with a registered certificate and is refused without one.

This module runs its own `keyward serve` (module scope) with a `[kmip]` listener.
"""

import re
import shutil
import subprocess
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, hmac, keywrap, padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as rsa_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID
from kmip import enums
from kmip.core import objects as core_objects
from kmip.core.factories import attributes as attribute_factories
from kmip.pie import client as pie_client
from kmip.pie import exceptions as pie_exceptions
from kmip.pie import objects
from kmip.services import kmip_client
from keyprotect import ibm_key_protect_api_v2 as models

from conftest import DEFAULT_CONFIG, body, create_key, make_sdk, serve_keyward

CONFIG = DEFAULT_CONFIG.replace("[lifecycle]\n", "[lifecycle]\npurge_wait_secs = 0\n")


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(subject, key, issuer, issuer_key, *, ca=False, san=None):
    now = datetime.now(timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write_pair(directory, stem, cert, key):
    c, k = directory / f"{stem}.pem", directory / f"{stem}.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return c, k


class Pki:
    """A CA, the server's certificate under it, and client certificates under it."""

    def __init__(self, directory):
        self.dir = directory
        self.ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ca = _issue("keyward-test-ca", self.ca_key, "keyward-test-ca", self.ca_key, ca=True)
        self.ca_path = directory / "ca.pem"
        self.ca_path.write_bytes(self.ca.public_bytes(serialization.Encoding.PEM))
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = _issue("localhost", key, "keyward-test-ca", self.ca_key, san="localhost")
        self.server_cert, self.server_key = _write_pair(directory, "server", cert, key)

    def client(self, cn):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = _issue(cn, key, "keyward-test-ca", self.ca_key)
        paths = _write_pair(self.dir, cn, cert, key)
        return cert, paths


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("kmip-pki"))


@pytest.fixture(scope="module")
def keyward(tmp_path_factory, pki):
    config = CONFIG + (f'\n[kmip]\nlisten = "127.0.0.1:0"\ntls_cert = "{pki.server_cert}"\n'
                       f'tls_key = "{pki.server_key}"\n')
    with serve_keyward(tmp_path_factory.mktemp("keyward-kmip-protocol"), config) as server:
        yield server


@pytest.fixture(scope="module")
def kmip_port(keyward):
    stdout = keyward.stderr_path.parent / "stdout.log"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        m = re.search(r"keyward: KMIP listening on 127\.0\.0\.1:(\d+)", stdout.read_text())
        if m:
            return int(m.group(1))
        time.sleep(0.1)
    pytest.fail("the KMIP listener's address was not printed")


@pytest.fixture(scope="module")
def sdk(keyward):
    return make_sdk(keyward)


def _meta(media):
    return models.CollectionMetadata(collection_type=media, collection_total=1)


def _adapter(sdk, keyward, crk):
    """A KMIP adapter on root key `crk`, through the SDK."""
    r = sdk.create_kmip_adapter(
        bluemix_instance=keyward.instance,
        metadata=_meta("application/vnd.ibm.kms.kmip_adapter+json"),
        resources=[models.CreateKMIPAdapterObject(
            profile="native_1.0", name=f"a-{uuid.uuid4().hex[:8]}",
            profile_data=models.KMIPProfileDataBodyKMIPProfileDataNative(crk_id=crk))],
    )
    return body(r)["resources"][0]["id"]


def _register_cert(sdk, keyward, adapter, cert):
    sdk.add_kmip_client_certificate(
        adapter_id=adapter, bluemix_instance=keyward.instance,
        metadata=_meta("application/vnd.ibm.kms.kmip_client_certificate+json"),
        resources=[models.CreateKMIPClientCertificateObject(
            certificate=cert.public_bytes(serialization.Encoding.PEM).decode())],
    )


@pytest.fixture(scope="module")
def bound(sdk, keyward, pki):
    """A root key, an adapter on it, and a registered client certificate."""
    crk = create_key(sdk, keyward, "kmip-interop-crk")["id"]
    adapter = _adapter(sdk, keyward, crk)
    cert, (cert_path, key_path) = pki.client("pykmip-client")
    _register_cert(sdk, keyward, adapter, cert)
    return crk, adapter, cert_path, key_path


def proxy(pki, port, cert_path, key_path, version=enums.KMIPVersion.KMIP_1_2):
    return pie_client.ProxyKmipClient(
        hostname="127.0.0.1", port=port, cert=str(cert_path), key=str(key_path),
        ca=str(pki.ca_path), config_file="/dev/null", kmip_version=version,
    )


def test_proxy_client_runs_the_symmetric_key_lifecycle(pki, kmip_port, bound):
    _, _, cert, key = bound
    with proxy(pki, kmip_port, cert, key) as c:
        name = f"disk-{uuid.uuid4().hex[:8]}"
        uid = c.create(enums.CryptographicAlgorithm.AES, 256, name=name,
                       cryptographic_usage_mask=[enums.CryptographicUsageMask.ENCRYPT,
                                                 enums.CryptographicUsageMask.DECRYPT])
        assert c.locate(attributes=[attribute_factories.AttributeFactory().create_attribute(
            enums.AttributeType.NAME, name)]) == [uid]
        attrs = {a.attribute_name.value: a.attribute_value
                 for a in c.get_attributes(uid)[1]}
        assert attrs["State"].value == enums.State.PRE_ACTIVE
        assert attrs["Cryptographic Length"].value == 256
        assert "Name" in c.get_attribute_list(uid)
        key = c.get(uid)
        assert isinstance(key, objects.SymmetricKey) and len(key.value) == 32

        # Encrypt before activation is refused; after, AES-CBC interoperates with `cryptography`.
        params = {"block_cipher_mode": enums.BlockCipherMode.CBC,
                  "padding_method": enums.PaddingMethod.PKCS5,
                  "cryptographic_algorithm": enums.CryptographicAlgorithm.AES}
        iv = bytes(range(16))
        with pytest.raises(pie_exceptions.KmipOperationFailure):
            c.encrypt(b"plaintext", uid=uid, cryptographic_parameters=params,
                      iv_counter_nonce=iv)
        c.activate(uid)
        ct, _ = c.encrypt(b"plaintext", uid=uid, cryptographic_parameters=params,
                          iv_counter_nonce=iv)
        padder = padding.PKCS7(128).padder()
        enc = Cipher(algorithms.AES(key.value), modes.CBC(iv)).encryptor()
        assert ct == enc.update(padder.update(b"plaintext") + padder.finalize()) + enc.finalize()
        assert c.decrypt(ct, uid=uid, cryptographic_parameters=params,
                         iv_counter_nonce=iv) == b"plaintext"

        # Get wrapped under another AES key (RFC 3394), which `cryptography` unwraps.
        kek_uid = c.create(enums.CryptographicAlgorithm.AES, 256,
                           cryptographic_usage_mask=[enums.CryptographicUsageMask.WRAP_KEY])
        c.activate(kek_uid)
        kek = c.get(kek_uid).value
        wrapped = c.get(uid, key_wrapping_specification={
            "wrapping_method": enums.WrappingMethod.ENCRYPT,
            "encryption_key_information": {
                "unique_identifier": kek_uid,
                "cryptographic_parameters": {
                    "block_cipher_mode": enums.BlockCipherMode.NIST_KEY_WRAP}},
            "encoding_option": enums.EncodingOption.NO_ENCODING,
        })
        assert wrapped.value != key.value
        assert keywrap.aes_key_unwrap(kek, wrapped.value) == key.value
        # A key whose usage mask does not allow wrapping cannot wrap.
        with pytest.raises(pie_exceptions.KmipOperationFailure):
            c.get(kek_uid, key_wrapping_specification={
                "wrapping_method": enums.WrappingMethod.ENCRYPT,
                "encryption_key_information": {"unique_identifier": uid}})

        # Active objects are not destroyed; revoked ones are, and are gone for Get.
        with pytest.raises(pie_exceptions.KmipOperationFailure) as e:
            c.destroy(uid)
        assert e.value.reason == enums.ResultReason.PERMISSION_DENIED
        c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
        c.destroy(uid)
        with pytest.raises(pie_exceptions.KmipOperationFailure):
            c.get(uid)


def test_proxy_client_registers_every_object_type(pki, kmip_port, bound):
    _, _, cert, key = bound
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pkcs8 = rsa_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    pkcs1_public = rsa_key.public_key().public_bytes(serialization.Encoding.DER,
                                                     serialization.PublicFormat.PKCS1)
    ca_der = pki.ca.public_bytes(serialization.Encoding.DER)
    with proxy(pki, kmip_port, cert, key) as c:
        cases = [
            objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 128, bytes(range(16))),
            objects.PrivateKey(enums.CryptographicAlgorithm.RSA, 2048, pkcs8,
                               enums.KeyFormatType.PKCS_8),
            objects.PublicKey(enums.CryptographicAlgorithm.RSA, 2048, pkcs1_public,
                              enums.KeyFormatType.PKCS_1),
            objects.X509Certificate(ca_der),
            objects.SecretData(b"database password", enums.SecretDataType.PASSWORD),
            objects.OpaqueObject(b"\x00opaque\xff", enums.OpaqueDataType.NONE),
        ]
        for obj in cases:
            uid = c.register(obj)
            back = c.get(uid)
            assert type(back) is type(obj)
            assert back.value == obj.value, type(obj).__name__

        # An AES key of a length AES does not have is refused.
        with pytest.raises(pie_exceptions.KmipOperationFailure) as e:
            c.register(objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 160,
                                            bytes(range(20))))
        assert e.value.reason == enums.ResultReason.INVALID_FIELD
        # Garbage as a private key is refused.
        with pytest.raises(pie_exceptions.KmipOperationFailure):
            c.register(objects.PrivateKey(enums.CryptographicAlgorithm.RSA, 2048, b"\x30\x00",
                                          enums.KeyFormatType.PKCS_8))


def test_proxy_client_signs_verifies_and_macs(pki, kmip_port, bound):
    _, _, cert, key = bound
    with proxy(pki, kmip_port, cert, key) as c:
        public_uid, private_uid = c.create_key_pair(
            enums.CryptographicAlgorithm.RSA, 2048,
            public_usage_mask=[enums.CryptographicUsageMask.VERIFY],
            private_usage_mask=[enums.CryptographicUsageMask.SIGN])
        c.activate(public_uid)
        c.activate(private_uid)
        # Keyward answers a public key made by Create Key Pair in PKCS #1, as PyKMIP's server does.
        public = _load_pkcs1_public(c.get(public_uid).value)
        for scheme, pad in [
            (enums.PaddingMethod.PSS,
             rsa_padding.PSS(mgf=rsa_padding.MGF1(hashes.SHA256()),
                             salt_length=rsa_padding.PSS.DIGEST_LENGTH)),
            (enums.PaddingMethod.PKCS1v15, rsa_padding.PKCS1v15()),
        ]:
            params = {"padding_method": scheme,
                      "cryptographic_algorithm": enums.CryptographicAlgorithm.RSA,
                      "hashing_algorithm": enums.HashingAlgorithm.SHA_256}
            sig = c.sign(b"a message", uid=private_uid, cryptographic_parameters=params)
            public.verify(sig, b"a message", pad, hashes.SHA256())
            assert c.signature_verify(b"a message", sig, uid=public_uid,
                                      cryptographic_parameters=params) \
                == enums.ValidityIndicator.VALID
            assert c.signature_verify(b"another", sig, uid=public_uid,
                                      cryptographic_parameters=params) \
                == enums.ValidityIndicator.INVALID
        # The private key's usage mask allows signing only: no verify with it... and the
        # public key cannot sign.
        with pytest.raises(pie_exceptions.KmipOperationFailure):
            c.sign(b"x", uid=public_uid, cryptographic_parameters={
                "padding_method": enums.PaddingMethod.PSS,
                "hashing_algorithm": enums.HashingAlgorithm.SHA_256})

        mac_uid = c.create(enums.CryptographicAlgorithm.HMAC_SHA256, 256,
                           cryptographic_usage_mask=[enums.CryptographicUsageMask.MAC_GENERATE])
        c.activate(mac_uid)
        mac_key = c.get(mac_uid).value
        _, mac = c.mac(b"mac me", uid=mac_uid, algorithm=enums.CryptographicAlgorithm.HMAC_SHA256)
        h = hmac.HMAC(mac_key, hashes.SHA256())
        h.update(b"mac me")
        assert mac == h.finalize()


def _load_pkcs1_public(der):
    """An RSAPublicKey (PKCS #1 DER), through `cryptography`'s PEM loader."""
    import base64
    pem = (b"-----BEGIN RSA PUBLIC KEY-----\n" + base64.encodebytes(der)
           + b"-----END RSA PUBLIC KEY-----\n")
    return serialization.load_pem_public_key(pem)


def test_kmip_proxy_and_kmip_2_0(pki, kmip_port, bound):
    """The lower-level KMIPProxy (request/response objects) and a KMIP 2.0 session."""
    _, _, cert, key = bound
    p = kmip_client.KMIPProxy(host="127.0.0.1", port=kmip_port, certfile=str(cert),
                              keyfile=str(key), ca_certs=str(pki.ca_path),
                              config_file="/dev/null")
    p.open()
    try:
        versions = p.discover_versions().protocol_versions
        assert [(v.major, v.minor) for v in versions][:3] == [(2, 1), (2, 0), (1, 4)]
        f = attribute_factories.AttributeFactory()
        template = core_objects.TemplateAttribute(attributes=[
            f.create_attribute(enums.AttributeType.CRYPTOGRAPHIC_ALGORITHM,
                               enums.CryptographicAlgorithm.AES),
            f.create_attribute(enums.AttributeType.CRYPTOGRAPHIC_LENGTH, 128),
        ])
        r = p.create(enums.ObjectType.SYMMETRIC_KEY, template)
        assert r.result_status.value == enums.ResultStatus.SUCCESS
        uid = r.uuid
        g = p.get(uid)
        assert g.result_status.value == enums.ResultStatus.SUCCESS
        assert len(g.secret.key_block.key_value.key_material.value) == 16
        q = p.query(query_functions=[enums.QueryFunction.QUERY_OPERATIONS,
                                     enums.QueryFunction.QUERY_OBJECTS])
        assert enums.Operation.CREATE in q.operations
        assert enums.ObjectType.SYMMETRIC_KEY in q.object_types
        missing = p.get("00000000-0000-4000-8000-000000000000")
        assert missing.result_reason.value == enums.ResultReason.ITEM_NOT_FOUND
    finally:
        p.close()

    with proxy(pki, kmip_port, cert, key, enums.KMIPVersion.KMIP_2_0) as c:
        uid = c.create(enums.CryptographicAlgorithm.AES, 192, name="v2-key")
        assert len(c.get(uid).value) == 24
        c.activate(uid)
        assert c.locate(attributes=[f.create_attribute(enums.AttributeType.NAME, "v2-key")]) \
            == [uid]


def test_an_unregistered_certificate_is_refused(pki, kmip_port, keyward):
    cert, (cert_path, key_path) = pki.client("stranger")
    with proxy(pki, kmip_port, cert_path, key_path) as c:
        with pytest.raises(pie_exceptions.KmipOperationFailure) as e:
            c.create(enums.CryptographicAlgorithm.AES, 256)
    assert e.value.reason == enums.ResultReason.AUTHENTICATION_NOT_SUCCESSFUL
    assert "not registered" in str(e.value)


def test_the_root_key_governs_its_kmip_objects(pki, kmip_port, sdk, keyward):
    crk = create_key(sdk, keyward, "kmip-governed-crk")["id"]
    adapter = _adapter(sdk, keyward, crk)
    cert, (cert_path, key_path) = pki.client("governed-client")
    _register_cert(sdk, keyward, adapter, cert)
    with proxy(pki, kmip_port, cert_path, key_path) as c:
        uid = c.create(enums.CryptographicAlgorithm.AES, 256)
        before = c.get(uid).value
        sdk.disable_key(id=crk, bluemix_instance=keyward.instance)
        with pytest.raises(pie_exceptions.KmipOperationFailure) as e:
            c.get(uid)
        assert "root key" in str(e.value)
        sdk.enable_key(id=crk, bluemix_instance=keyward.instance)
        assert c.get(uid).value == before
        sdk.delete_key(id=crk, bluemix_instance=keyward.instance)
        with pytest.raises(pie_exceptions.KmipOperationFailure):
            c.get(uid)
        sdk.purge_key(id=crk, bluemix_instance=keyward.instance)
        with pytest.raises(pie_exceptions.KmipOperationFailure):
            c.get(uid)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_s_client_with_and_without_a_registered_certificate(pki, kmip_port, bound):
    _, _, cert, key = bound
    base = ["openssl", "s_client", "-connect", f"127.0.0.1:{kmip_port}", "-CAfile",
            str(pki.ca_path), "-verify_return_error", "-brief"]
    ok = subprocess.run(base + ["-cert", str(cert), "-key", str(key)], input=b"",
                        capture_output=True, timeout=30)
    assert b"Verification: OK" in ok.stderr + ok.stdout, ok.stderr
    # Without a certificate the handshake fails. (Under TLS 1.2 the server's refusal comes within
    # the handshake; under 1.3 it comes after the client thinks it is done, which s_client, with
    # nothing to send, may not wait for.)
    refused = subprocess.run(base + ["-tls1_2"], input=b"", capture_output=True, timeout=30)
    out = (refused.stdout + refused.stderr).lower()
    assert refused.returncode != 0 and b"alert" in out, out
