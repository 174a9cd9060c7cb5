"""Writes a test CA and a server certificate for 127.0.0.1 and localhost (and
evil.example.com, below) into DIR, for the HTTPS
interop runs: DIR/ca.pem (what clients trust: NODE_EXTRA_CA_CERTS, SSL_CERT_FILE), DIR/server.pem
(the chain) and DIR/server.key (for Tether's --tls-cert/--tls-key).

Usage: python make_pki.py DIR
"""

import sys
from pathlib import Path

import trustme


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    # evil.example.com: the conformance suite's DNS-rebinding scenario sends that Host, and
    # Node takes the TLS server name from it; the name lets the request reach the server, whose
    # Host check is what the scenario tests (a real rebinding attacker could not get it).
    leaf = ca.issue_cert("127.0.0.1", "localhost", "evil.example.com")
    ca.cert_pem.write_to_path(str(out / "ca.pem"))
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    (out / "server.pem").write_bytes(chain)
    leaf.private_key_pem.write_to_path(str(out / "server.key"))


if __name__ == "__main__":
    main()
