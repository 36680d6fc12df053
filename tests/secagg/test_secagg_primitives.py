"""Known-answer vectors and properties of the PRG, KDF, Shamir, quantisation and graphs."""

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg import ConfigError, FixedPoint, graph, kdf, prg, shamir


def _counter_mode_by_hand(key: bytes, blocks: int) -> bytes:
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return b"".join(ecb.update(i.to_bytes(16, "big")) for i in range(blocks))


def test_prg_known_answer_aes256_zero_key():
    # AESAVS / FIPS-197: AES-256 with the all-zero key encrypts the zero block to this.
    expected = np.frombuffer(bytes.fromhex("dc95c078a2408989ad48a21492842087"), dtype="<u4")
    assert np.array_equal(prg.expand(bytes(32), 4), expected)


def test_prg_is_aes_ctr_from_counter_zero():
    key = bytes(range(32))
    stream = _counter_mode_by_hand(key, 5)
    expected = np.frombuffer(stream, dtype="<u4")[:19]
    assert np.array_equal(prg.expand(key, 19), expected)


def test_prg_expander_add_sub_round_trip_and_wraps():
    expander = prg.MaskExpander(1000)
    acc = np.arange(1000, dtype=np.uint32)
    expander.add_into(acc, b"k" * 32)
    assert not np.array_equal(acc, np.arange(1000))
    expander.sub_into(acc, b"k" * 32)
    assert np.array_equal(acc, np.arange(1000, dtype=np.uint32))


def test_prg_rejects_wrong_key_length():
    with pytest.raises(ValueError):
        prg.expand(b"short", 4)


def test_hkdf_rfc5869_test_case_1():
    okm = kdf.hkdf_sha256(bytes([0x0B] * 22), bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"), 42, bytes(range(13)))
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_hkdf_rfc5869_test_case_3_no_salt_no_info():
    okm = kdf.hkdf_sha256(bytes([0x0B] * 22), b"", 42)
    assert okm.hex() == (
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )


def test_derive_key_info_encoding_and_separation():
    info = kdf.encode_info(b"L", 7, b"ab")
    assert info == b"\x00\x00\x00\x01L" + b"I" + (7).to_bytes(8, "big") + b"B\x00\x00\x00\x02ab"
    ikm = bytes(32)
    assert kdf.derive_key(ikm, b"L", 7, b"ab") == kdf.hkdf_sha256(ikm, info, 32)
    keys = {
        kdf.derive_key(ikm, kdf.LABEL_PAIRWISE_MASK, 1),
        kdf.derive_key(ikm, kdf.LABEL_SELF_MASK, 1),
        kdf.derive_key(ikm, kdf.LABEL_PAIRWISE_MASK, 2),
    }
    assert len(keys) == 3
    with pytest.raises(TypeError):
        kdf.encode_info(b"L", "text")


def _fixed_words(*words):
    data = b"".join(w.to_bytes(4, "little") for w in words)
    return lambda n: data[:n]


def test_shamir_known_answer_degree_one():
    # f(x) = 1234 + 166 x over GF(2^31 - 1)
    shares = shamir.split_chunks(np.array([1234], dtype=np.uint64), [1, 2, 3], 2, _fixed_words(166))
    assert shares[:, 0].tolist() == [1400, 1566, 1732]


def test_shamir_known_answer_degree_two_and_modular_wrap():
    shares = shamir.split_chunks(
        np.array([1234, shamir.PRIME - 1], dtype=np.uint64), [1, 2, 3], 3, _fixed_words(166, 1, 94, 0)
    )
    # chunk 0: 1234 + 166x + 94x^2; chunk 1: (p - 1) + x (+ 0 x^2)
    assert shares[:, 0].tolist() == [1494, 1942, 2578]
    assert shares[:, 1].tolist() == [0, 1, 2]


def test_lagrange_known_answer():
    p = shamir.PRIME
    assert shamir.lagrange_at_zero((1, 2, 3)).tolist() == [3, p - 3, 1]


def test_secret_chunking_known_answer_and_round_trip():
    secret = bytes(range(32))
    chunks = shamir.secrets_to_chunks([secret])
    assert chunks.shape == (1, 9)
    assert int(chunks[0, 0]) == 0x03020100
    assert shamir.chunks_to_secrets(chunks) == [secret]


def test_shamir_any_t_shares_reconstruct_and_fewer_do_not():
    rng = np.random.default_rng(1)
    secrets = [bytes(rng.integers(0, 256, 32, dtype=np.uint8)) for _ in range(4)]
    xs = list(range(1, 8))
    shares = shamir.split(secrets, xs, 4)
    for pick in ([0, 1, 2, 3], [6, 4, 2, 0], [1, 3, 5, 6]):
        assert shamir.reconstruct(shares[pick], [xs[i] for i in pick]) == secrets
    wrong = shamir.reconstruct_chunks(shares[:3].reshape(3, -1), xs[:3])  # only t - 1 shares
    assert not np.array_equal(wrong, shamir.secrets_to_chunks(secrets).reshape(-1))


def test_shamir_rejects_bad_inputs():
    with pytest.raises(ValueError):
        shamir.split([b"x" * 31], [1, 2], 2)
    with pytest.raises(ValueError):
        shamir.split([bytes(32)], [1, 1], 2)
    with pytest.raises(ValueError):
        shamir.split([bytes(32)], [1, 2], 3)
    with pytest.raises(ValueError):
        shamir.share_from_bytes(b"\x00" * 35)
    with pytest.raises(ValueError):
        shamir.share_from_bytes(b"\xff" * 36)


def test_fixed_point_refuses_parameters_that_could_wrap():
    with pytest.raises(ConfigError, match="could wrap"):
        FixedPoint(clip=1.0, n_clients=1000, scale=2**22)
    FixedPoint(clip=1.0, n_clients=1000, scale=2**20)  # 1000 * 2^20 < 2^31
    with pytest.raises(ConfigError, match="clip"):
        FixedPoint(clip=-1.0, n_clients=2)


def test_fixed_point_counts_clipped_elements_and_bounds_error():
    fp = FixedPoint(clip=1.0, n_clients=3)
    x = np.array([0.5, -2.0, 3.0, -0.25, np.inf])
    codes, clipped = fp.encode(x)
    assert clipped == 3
    decoded = fp.decode_sum(codes)
    assert np.all(np.abs(decoded - np.clip(x, -1, 1)) <= fp.element_error_bound)
    with pytest.raises(ValueError, match="NaN"):
        fp.encode(np.array([np.nan]))
    extreme = np.full(4, -1.0)
    total = sum(fp.encode(extreme)[0].astype(np.uint64) for _ in range(3)) % 2**32
    assert np.allclose(fp.decode_sum(total.astype(np.uint32)), -3.0, atol=fp.sum_error_bound(3))


@pytest.mark.parametrize("n", [5, 50, 1000, 3000])
def test_harary_graph_is_k_regular_and_symmetric(n):
    k = graph.default_degree(n)
    g = graph.harary_graph(list(range(n)), k - k % 2, b"seed")
    assert all(len(v) == k - k % 2 for v in g.values())
    assert all(u in g[v] for u in g for v in g[u])
    assert all(u not in g[u] for u in g)
    assert g == graph.harary_graph(list(range(n)), k - k % 2, b"seed")
    if n > 50:
        assert g != graph.harary_graph(list(range(n)), k - k % 2, b"other")
        assert k <= 2 * np.ceil(1.5 * np.log2(n))


def test_graph_rejects_bad_parameters():
    with pytest.raises(ConfigError):
        graph.harary_graph([0, 1, 2, 3], 3, b"s")
    with pytest.raises(ConfigError):
        graph.build_graph("ring", [0, 1], None, b"s")


@pytest.mark.parametrize("block_words", [1, 3, 4, 7, 64, 5000])
def test_prg_mask_streams_match_whole_vector_expansion(block_words):
    # Blocks that split AES blocks must continue each keystream exactly where it stopped.
    length = 1001
    plus, minus = [bytes([k]) * 32 for k in (1, 2, 3)], [bytes([k]) * 32 for k in (4, 5)]
    expected = np.arange(length, dtype=np.uint32)
    expander = prg.MaskExpander(length)
    for key in plus:
        expander.add_into(expected, key)
    for key in minus:
        expander.sub_into(expected, key)
    streams = prg.MaskStreams(block_words)
    acc = np.arange(length, dtype=np.uint32)
    streams.reset(minus, plus)  # stale keys: reset must replace them
    streams.reset(plus, minus)
    streams.apply_all(acc)
    assert np.array_equal(acc, expected)
    streams.reset(plus, minus)  # reused scratch, fresh streams: same masks again
    again = np.arange(length, dtype=np.uint32)
    streams.apply_all(again)
    assert np.array_equal(again, expected)


def test_prg_mask_streams_reject_bad_sizes():
    with pytest.raises(ValueError):
        prg.MaskStreams(0)
    streams = prg.MaskStreams(4)
    with pytest.raises(ValueError):
        streams.apply(np.zeros(5, dtype=np.uint32))
    with pytest.raises(ValueError):
        streams.reset([b"short"], [])
