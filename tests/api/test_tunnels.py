"""Tunnels and tunnel certificates through the official client (API.md §1.10, BEHAVIOUR §16):
every endpoint, every limit, tokens that are sealed at rest and audited, workspace isolation."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
import sqlalchemy as sa
from anthropic.types.beta import BetaTunnel, BetaTunnelToken
from anthropic.types.beta.tunnels import BetaTunnelCertificate

from hangar.testing import ServerProcess
from tests.api.test_cli import create_key, db_args, hangar
from tests.conftest import API_KEY
from tests.helpers import strict
from tests.tunnel.certs import issue
from tests.vault_helpers import message_of, sync_url

DOMAIN = re.compile(r"^[0-9a-f]{16}\.tunnel\.hangar\.internal$")


def tunnel_of(obj: Any) -> BetaTunnel:
    found: BetaTunnel = strict(BetaTunnel, obj)
    return found


def token_of(obj: Any) -> BetaTunnelToken:
    found: BetaTunnelToken = strict(BetaTunnelToken, obj)
    return found


def cert_of(obj: Any) -> BetaTunnelCertificate:
    found: BetaTunnelCertificate = strict(BetaTunnelCertificate, obj)
    return found


def archive_all(client: anthropic.Anthropic) -> None:
    for t in client.beta.tunnels.list(limit=1000):
        tunnel_of(client.beta.tunnels.archive(tunnel_of(t).id))


def rows(server: ServerProcess, table: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(sync_url(server), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text(f"SELECT * FROM {table}")).mappings().all()]
    finally:
        engine.dispose()


@pytest.fixture
def other(server: ServerProcess) -> Iterator[anthropic.Anthropic]:
    key = create_key(server, "--workspace", "tunnels-b", "--name", "tunnels b")
    with anthropic.Anthropic(base_url=server.base_url, api_key=key, max_retries=0) as c:
        yield c


# -- tunnels ------------------------------------------------------------------------------------


def test_tunnel_lifecycle_and_tokens(server: ServerProcess, client: anthropic.Anthropic) -> None:
    made = tunnel_of(client.beta.tunnels.create(display_name="office"))
    assert made.id.startswith("tnl_") and made.display_name == "office" and made.archived_at is None
    assert DOMAIN.match(made.domain), made.domain
    assert tunnel_of(client.beta.tunnels.retrieve(made.id)) == made
    unnamed = tunnel_of(client.beta.tunnels.create())
    assert unnamed.display_name is None and unnamed.domain != made.domain

    first = token_of(client.beta.tunnels.reveal_token(made.id))
    assert first.tunnel_token.startswith("hgtnl_") and len(first.tunnel_token) > 40
    assert token_of(client.beta.tunnels.reveal_token(made.id)) == first  # same until rotated
    rotated = token_of(client.beta.tunnels.rotate_token(made.id, reason="laptop lost"))
    assert rotated.id != first.id and rotated.tunnel_token != first.tunnel_token
    assert token_of(client.beta.tunnels.reveal_token(made.id)) == rotated
    other_token = token_of(client.beta.tunnels.reveal_token(unnamed.id))
    assert other_token.tunnel_token not in (first.tunnel_token, rotated.tunnel_token)

    # Sealed at rest: neither token value is stored anywhere in the row; the audit has no token.
    [row] = [r for r in rows(server, "tunnels") if r["id"] == made.id]
    assert rotated.tunnel_token not in str(row) and first.tunnel_token not in str(row)
    assert str(row["token"]).startswith("hgs1.")
    trail = [r for r in rows(server, "tunnel_audit") if r["tunnel_id"] == made.id]
    assert [r["action"] for r in trail] == ["reveal_token", "reveal_token", "rotate_token", "reveal_token"]
    assert trail[2]["reason"] == "laptop lost" and trail[2]["token_id"] == rotated.id
    assert all(rotated.tunnel_token not in str(r) and first.tunnel_token not in str(r) for r in trail)

    ca = issue("office CA")
    cert = cert_of(client.beta.tunnels.certificates.create(made.id, ca_certificate_pem=ca.pem))
    archived = tunnel_of(client.beta.tunnels.archive(made.id))
    assert archived.archived_at is not None and archived.domain == made.domain
    again = tunnel_of(client.beta.tunnels.archive(made.id))
    assert again.archived_at == archived.archived_at  # idempotent
    assert (
        cert_of(client.beta.tunnels.certificates.retrieve(cert.id, tunnel_id=made.id)).archived_at is not None
    )
    [row] = [r for r in rows(server, "tunnels") if r["id"] == made.id]
    assert row["token"] is None and row["token_hash"] is None

    for call in (
        lambda: client.beta.tunnels.reveal_token(made.id),
        lambda: client.beta.tunnels.rotate_token(made.id),
        lambda: client.beta.tunnels.certificates.create(made.id, ca_certificate_pem=ca.pem),
    ):
        with pytest.raises(anthropic.BadRequestError) as bad:
            call()
        assert message_of(bad) == f"Tunnel {made.id} is archived."

    listed = [tunnel_of(t).id for t in client.beta.tunnels.list(limit=1000)]
    assert made.id not in listed and unnamed.id in listed
    assert made.id in [tunnel_of(t).id for t in client.beta.tunnels.list(include_archived=True, limit=1000)]
    archive_all(client)


def test_unknown_tunnel_and_certificate_are_404(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as nf:
        client.beta.tunnels.retrieve("tnl_nope")
    assert message_of(nf) == "Tunnel tnl_nope not found."
    for call in (
        lambda: client.beta.tunnels.archive("tnl_nope"),
        lambda: client.beta.tunnels.reveal_token("tnl_nope"),
        lambda: client.beta.tunnels.rotate_token("tnl_nope"),
        lambda: client.beta.tunnels.certificates.list("tnl_nope"),
    ):
        with pytest.raises(anthropic.NotFoundError):
            call()
    made = tunnel_of(client.beta.tunnels.create())
    with pytest.raises(anthropic.NotFoundError) as nf:
        client.beta.tunnels.certificates.retrieve("tcrt_nope", tunnel_id=made.id)
    assert message_of(nf) == "Certificate tcrt_nope not found."
    with pytest.raises(anthropic.NotFoundError):
        client.beta.tunnels.certificates.archive("tcrt_nope", tunnel_id=made.id)
    client.beta.tunnels.archive(made.id)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"display_name": ""}, "display_name: String should have at least 1 character"),
        ({"display_name": "x" * 256}, "display_name: String should have at most 255 characters"),
        ({"display_name": 7}, "display_name: Input should be a valid string"),
        ({"domain": "mine.example"}, "domain: unknown field"),
    ],
)
def test_tunnel_create_validation(client: anthropic.Anthropic, body: dict[str, Any], message: str) -> None:
    before = len(list(client.beta.tunnels.list(include_archived=True, limit=1000)))
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.beta.tunnels.create(extra_body=body)
    assert message_of(bad) == message
    assert len(list(client.beta.tunnels.list(include_archived=True, limit=1000))) == before


def test_display_name_of_255_and_rotate_reason_limit(client: anthropic.Anthropic) -> None:
    made = tunnel_of(client.beta.tunnels.create(display_name="n" * 255))
    assert made.display_name == "n" * 255
    token_of(client.beta.tunnels.rotate_token(made.id, reason="r" * 1024))
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.beta.tunnels.rotate_token(made.id, reason="r" * 1025)
    assert message_of(bad) == "reason: String should have at most 1024 characters"
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.beta.tunnels.rotate_token(made.id, extra_body={"why": "x"})
    assert message_of(bad) == "why: unknown field"
    client.beta.tunnels.archive(made.id)


def test_at_most_ten_active_tunnels_per_workspace(client: anthropic.Anthropic) -> None:
    archive_all(client)
    made = [tunnel_of(client.beta.tunnels.create(display_name=f"t{i}")) for i in range(10)]
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.beta.tunnels.create(display_name="eleventh")
    assert message_of(bad) == (
        "This workspace already has 10 active tunnels, the most allowed; archive one first."
    )
    client.beta.tunnels.archive(made[0].id)
    eleventh = tunnel_of(client.beta.tunnels.create(display_name="eleventh"))
    # Domains are never reused, archived or not.
    domains = [t.domain for t in made] + [eleventh.domain]
    assert len(set(domains)) == 11
    archive_all(client)


def test_list_pages_newest_first_and_limits(client: anthropic.Anthropic) -> None:
    archive_all(client)
    made = [tunnel_of(client.beta.tunnels.create(display_name=f"p{i}")).id for i in range(3)]
    page = client.beta.tunnels.list(limit=2)
    assert [tunnel_of(t).id for t in page.data] == [made[2], made[1]]
    assert page.next_page
    rest = client.beta.tunnels.list(limit=2, page=page.next_page)
    assert [tunnel_of(t).id for t in rest.data] == [made[0]] and rest.next_page is None
    assert [tunnel_of(t).id for t in client.beta.tunnels.list()] == made[::-1]  # default limit 20
    assert len(client.beta.tunnels.list(limit=1000).data) == 3
    for bad_limit in (0, 1001):
        with pytest.raises(anthropic.BadRequestError) as bad:
            client.beta.tunnels.list(limit=bad_limit)
        assert message_of(bad) == f"limit: must be between 1 and 1000, got {bad_limit}"
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.beta.tunnels.list(page="garbage")
    assert message_of(bad) == "invalid page cursor"
    archive_all(client)


def test_other_workspace_sees_nothing(client: anthropic.Anthropic, other: anthropic.Anthropic) -> None:
    mine = tunnel_of(client.beta.tunnels.create(display_name="mine"))
    cert = cert_of(client.beta.tunnels.certificates.create(mine.id, ca_certificate_pem=issue("ca").pem))
    assert mine.id not in [tunnel_of(t).id for t in other.beta.tunnels.list(include_archived=True)]
    for call in (
        lambda: other.beta.tunnels.retrieve(mine.id),
        lambda: other.beta.tunnels.archive(mine.id),
        lambda: other.beta.tunnels.reveal_token(mine.id),
        lambda: other.beta.tunnels.rotate_token(mine.id),
        lambda: other.beta.tunnels.certificates.list(mine.id),
        lambda: other.beta.tunnels.certificates.retrieve(cert.id, tunnel_id=mine.id),
        lambda: other.beta.tunnels.certificates.archive(cert.id, tunnel_id=mine.id),
        lambda: other.beta.tunnels.certificates.create(mine.id, ca_certificate_pem=issue("x").pem),
    ):
        with pytest.raises(anthropic.NotFoundError):
            call()
    assert tunnel_of(client.beta.tunnels.retrieve(mine.id)).archived_at is None
    # The other workspace has its own limit of ten.
    theirs = tunnel_of(other.beta.tunnels.create())
    other.beta.tunnels.archive(theirs.id)
    client.beta.tunnels.archive(mine.id)


# -- certificates -------------------------------------------------------------------------------


def test_certificate_lifecycle_and_limit(client: anthropic.Anthropic) -> None:
    made = tunnel_of(client.beta.tunnels.create(display_name="certs"))
    expiry = dt.datetime(2031, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    ca1, ca2, ca3 = issue("ca one", not_after=expiry), issue("ca two"), issue("ca three")
    first = cert_of(client.beta.tunnels.certificates.create(made.id, ca_certificate_pem=ca1.pem))
    assert first.id.startswith("tcrt_") and first.tunnel_id == made.id and first.archived_at is None
    assert first.fingerprint == ca1.fingerprint and re.fullmatch(r"[0-9a-f]{64}", first.fingerprint)
    assert first.expires_at == expiry
    assert cert_of(client.beta.tunnels.certificates.retrieve(first.id, tunnel_id=made.id)) == first

    with pytest.raises(anthropic.ConflictError) as dup:
        client.beta.tunnels.certificates.create(made.id, ca_certificate_pem=ca1.pem)
    assert ca1.fingerprint in message_of(dup)
    second = cert_of(client.beta.tunnels.certificates.create(made.id, ca_certificate_pem=ca2.pem))
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.beta.tunnels.certificates.create(made.id, ca_certificate_pem=ca3.pem)
    assert message_of(bad) == (
        f"Tunnel {made.id} already has 2 active certificates, the most allowed; archive one first."
    )
    listed = client.beta.tunnels.certificates.list(made.id)
    assert [cert_of(c).id for c in listed.data] == [second.id, first.id] and listed.next_page is None

    archived = cert_of(client.beta.tunnels.certificates.archive(first.id, tunnel_id=made.id))
    assert archived.archived_at is not None
    again = cert_of(client.beta.tunnels.certificates.archive(first.id, tunnel_id=made.id))
    assert again.archived_at == archived.archived_at
    third = cert_of(client.beta.tunnels.certificates.create(made.id, ca_certificate_pem=ca3.pem))
    assert [cert_of(c).id for c in client.beta.tunnels.certificates.list(made.id)] == [third.id, second.id]
    everything = client.beta.tunnels.certificates.list(made.id, include_archived=True, limit=2)
    assert [cert_of(c).id for c in everything.data] == [third.id, second.id] and everything.next_page
    tail = client.beta.tunnels.certificates.list(made.id, include_archived=True, page=everything.next_page)
    assert [cert_of(c).id for c in tail.data] == [first.id]
    with pytest.raises(anthropic.BadRequestError):
        client.beta.tunnels.certificates.list(made.id, limit=1001)

    # A certificate is found only under its own tunnel.
    elsewhere = tunnel_of(client.beta.tunnels.create())
    with pytest.raises(anthropic.NotFoundError):
        client.beta.tunnels.certificates.retrieve(second.id, tunnel_id=elsewhere.id)
    # The last one may be archived too (traffic is then refused: tests/tunnel).
    client.beta.tunnels.certificates.archive(second.id, tunnel_id=made.id)
    client.beta.tunnels.certificates.archive(third.id, tunnel_id=made.id)
    assert client.beta.tunnels.certificates.list(made.id).data == []
    client.beta.tunnels.archive(made.id)
    client.beta.tunnels.archive(elsewhere.id)


def test_certificate_without_expiry(client: anthropic.Anthropic) -> None:
    made = tunnel_of(client.beta.tunnels.create())
    forever = issue("forever", not_after=dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC))
    cert = cert_of(client.beta.tunnels.certificates.create(made.id, ca_certificate_pem=forever.pem))
    assert cert.expires_at is None
    client.beta.tunnels.archive(made.id)


def _bad_pems() -> list[tuple[str, str, str]]:
    ca, other = issue("ca"), issue("other")
    leaf = issue("leaf", ca=False, issuer=ca)
    bare = issue("no constraints", constraints=False)
    body = ca.pem.splitlines()
    return [
        ("empty", "", "ca_certificate_pem: must contain one PEM CERTIFICATE block"),
        ("not pem", "hello", "ca_certificate_pem: must contain one PEM CERTIFICATE block"),
        (
            "two certificates",
            ca.pem + other.pem,
            "ca_certificate_pem: must contain exactly one PEM CERTIFICATE block, found 2 PEM blocks",
        ),
        ("with its key", ca.pem + ca.key_pem, "ca_certificate_pem: must not contain private key material"),
        ("key only", ca.key_pem, "ca_certificate_pem: must not contain private key material"),
        (
            "public key block",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            'ca_certificate_pem: must contain a PEM CERTIFICATE block, found "PUBLIC KEY"',
        ),
        ("unterminated", "\n".join(body[:-1]), "ca_certificate_pem: is not well-formed PEM"),
        (
            "garbage inside",
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
            "ca_certificate_pem: is not a valid X.509 certificate",
        ),
        (
            "leaf",
            leaf.pem,
            "ca_certificate_pem: is not a CA certificate (basicConstraints CA:TRUE is required)",
        ),
        (
            "no basic constraints",
            bare.pem,
            "ca_certificate_pem: is not a CA certificate (basicConstraints CA:TRUE is required)",
        ),
        (
            "over 8 KB",
            ca.pem + " " * (8193 - len(ca.pem)),
            "ca_certificate_pem: must be at most 8192 bytes (8 KB)",
        ),
    ]


BAD_PEMS = _bad_pems()


@pytest.mark.parametrize(
    ("pem", "message"), [(p, m) for _, p, m in BAD_PEMS], ids=[i for i, _, _ in BAD_PEMS]
)
def test_certificate_validation(client: anthropic.Anthropic, pem: str, message: str) -> None:
    made = tunnel_of(client.beta.tunnels.create())
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.beta.tunnels.certificates.create(made.id, ca_certificate_pem=pem)
    assert message_of(bad) == message
    assert client.beta.tunnels.certificates.list(made.id, include_archived=True).data == []
    client.beta.tunnels.archive(made.id)


def test_certificate_body_shape_errors(client: anthropic.Anthropic) -> None:
    made = tunnel_of(client.beta.tunnels.create())
    ca = issue("ca")
    padded = ca.pem + " " * (8192 - len(ca.pem))  # exactly 8 KB is accepted
    cert_of(client.beta.tunnels.certificates.create(made.id, ca_certificate_pem=padded))
    for body, message in (
        ({}, "ca_certificate_pem: field required"),
        ({"ca_certificate_pem": 5}, "ca_certificate_pem: Input should be a valid string"),
        ({"ca_certificate_pem": ca.pem, "name": "x"}, "name: unknown field"),
    ):
        with pytest.raises(anthropic.BadRequestError) as bad:
            client.post(
                f"/v1/tunnels/{made.id}/certificates", body=body, cast_to=object, options={"headers": {}}
            )
        assert message_of(bad) == message
    client.beta.tunnels.archive(made.id)


def test_rotate_key_reseals_tunnel_tokens(make_server: Any) -> None:
    srv: ServerProcess = make_server()
    with anthropic.Anthropic(base_url=srv.base_url, api_key=API_KEY, max_retries=0) as c:
        made = tunnel_of(c.beta.tunnels.create())
        token = token_of(c.beta.tunnels.reveal_token(made.id))
        [before] = rows(srv, "tunnels")
        done = hangar("secrets", "rotate-key", *db_args(srv))
        assert done.returncode == 0, done.stderr
        assert "re-encrypted 1 secret(s)" in done.stdout and "dropped old key(s)" in done.stdout
        [after] = rows(srv, "tunnels")
        assert after["token"] != before["token"]
        assert after["token"].split(".")[1] != before["token"].split(".")[1]  # a new key id
        # The running server opens it under the new key (the old one is gone from the key file).
        assert token_of(c.beta.tunnels.reveal_token(made.id)) == token
