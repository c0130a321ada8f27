"""Secret encryption at rest: round trips, the key ring, rotation and what cannot be decrypted."""

import pytest
from cryptography.fernet import Fernet

from sparkops.lib import crypto
from sparkops.lib.crypto import DecryptionError

KEY_A, KEY_B, KEY_C = crypto.generate_key(), crypto.generate_key(), crypto.generate_key()
SECRET = "sk-live-0123456789abcdef"


@pytest.fixture
def ring(settings):
    """Set the key ring, newest first."""

    def use(*keys: str) -> None:
        settings.SPARKOPS_ENCRYPTION_KEYS = list(keys)

    return use


def test_a_secret_round_trips_and_is_not_readable_at_rest(ring):
    ring(KEY_A)
    ciphertext = crypto.encrypt(SECRET)
    assert SECRET not in ciphertext
    assert crypto.decrypt(ciphertext) == SECRET


def test_the_same_secret_encrypts_differently_each_time(ring):
    ring(KEY_A)
    assert crypto.encrypt(SECRET) != crypto.encrypt(SECRET)


def test_unicode_and_empty_secrets_round_trip(ring):
    ring(KEY_A)
    for secret in ["", "pässwörd-密钥-🔑"]:
        assert crypto.decrypt(crypto.encrypt(secret)) == secret


def test_new_secrets_are_encrypted_with_the_first_key(ring):
    ring(KEY_B, KEY_A)
    ciphertext = crypto.encrypt(SECRET)
    assert Fernet(KEY_B.encode()).decrypt(ciphertext.encode()).decode() == SECRET


def test_an_older_key_still_in_the_ring_decrypts(ring):
    ring(KEY_A)
    ciphertext = crypto.encrypt(SECRET)

    ring(KEY_B, KEY_A)

    assert crypto.decrypt(ciphertext) == SECRET


def test_rotation_re_encrypts_under_the_newest_key_so_the_old_one_can_be_dropped(ring):
    ring(KEY_A)
    original = crypto.encrypt(SECRET)

    ring(KEY_B, KEY_A)
    rotated = crypto.rotate(original)
    assert rotated != original

    ring(KEY_B)
    assert crypto.decrypt(rotated) == SECRET
    with pytest.raises(DecryptionError):
        crypto.decrypt(original)


def test_a_ciphertext_under_a_key_not_in_the_ring_cannot_be_decrypted(ring):
    ring(KEY_C)
    ciphertext = crypto.encrypt(SECRET)

    ring(KEY_B, KEY_A)

    with pytest.raises(DecryptionError) as excinfo:
        crypto.decrypt(ciphertext)
    assert "SPARKOPS_ENCRYPTION_KEYS" in str(excinfo.value)


def test_rotating_a_ciphertext_under_an_unknown_key_raises_decryption_error(ring):
    ring(KEY_C)
    ciphertext = crypto.encrypt(SECRET)
    ring(KEY_A)
    with pytest.raises(DecryptionError):
        crypto.rotate(ciphertext)


@pytest.mark.parametrize("ciphertext", ["not-a-token", "", "gAAAAA"])
def test_garbage_cannot_be_decrypted(ring, ciphertext):
    ring(KEY_A)
    with pytest.raises(DecryptionError):
        crypto.decrypt(ciphertext)


def test_a_tampered_ciphertext_cannot_be_decrypted(ring):
    ring(KEY_A)
    ciphertext = crypto.encrypt(SECRET)
    tampered = ciphertext[:-5] + ("A" if ciphertext[-5] != "A" else "B") + ciphertext[-4:]
    with pytest.raises(DecryptionError):
        crypto.decrypt(tampered)


def test_a_key_that_is_not_a_fernet_key_is_derived_consistently(ring):
    ring("any passphrase, e.g. a local SECRET_KEY")
    ciphertext = crypto.encrypt(SECRET)

    ring("any passphrase, e.g. a local SECRET_KEY")
    assert crypto.decrypt(ciphertext) == SECRET

    ring("another passphrase")
    with pytest.raises(DecryptionError):
        crypto.decrypt(ciphertext)


def test_an_empty_ring_falls_back_to_the_secret_key(ring, settings):
    settings.SECRET_KEY = "local-only-secret-key-for-this-test"
    ring()
    ciphertext = crypto.encrypt(SECRET)

    ring("local-only-secret-key-for-this-test")

    assert crypto.decrypt(ciphertext) == SECRET


def test_generated_keys_are_fernet_keys():
    key = crypto.generate_key()
    assert key != crypto.generate_key()
    assert Fernet(key.encode()).decrypt(Fernet(key.encode()).encrypt(b"x")) == b"x"
