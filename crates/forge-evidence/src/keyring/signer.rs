//! [`Signer`]: an active private key, with its id, that signs verdicts and audit records.
//!
//! Ed25519 signing is deterministic (RFC 8032): a key and a message give one signature whatever
//! the implementation. The keyring keeps `ed25519-dalek` for keys, files and verification, and
//! signs through aws-lc-rs (already the process's crypto provider), whose assembly signs in
//! about half the time; the audit log signs every record, so that time is on every audited
//! request. A test holds both implementations to the same bytes.

use std::sync::Arc;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

use super::key_id_for;
use crate::util::b64_encode;

/// A private key ready to sign, with its id. `Debug` never prints the secret.
#[derive(Clone)]
pub struct Signer {
    key_id: String,
    key: SigningKey,
    /// The same key in aws-lc, which does the signing.
    fast: Arc<Ed25519KeyPair>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A fresh random key from the OS RNG (not persisted; keyrings use this internally).
    pub fn generate() -> Self {
        Self::from_signing_key(SigningKey::generate(&mut rand_core::OsRng))
    }

    pub fn from_signing_key(key: SigningKey) -> Self {
        let fast = Ed25519KeyPair::from_seed_and_public_key(
            key.as_bytes(),
            key.verifying_key().as_bytes(),
        )
        .expect("an ed25519-dalek key pair is a valid ed25519 key pair");
        debug_assert_eq!(
            fast.public_key().as_ref(),
            key.verifying_key().as_bytes().as_slice()
        );
        Self {
            key_id: key_id_for(&key.verifying_key()),
            key,
            fast: Arc::new(fast),
        }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub fn sign_raw(&self, message: &[u8]) -> Signature {
        let signature = self.fast.sign(message);
        let bytes: &[u8; 64] = signature
            .as_ref()
            .try_into()
            .expect("an ed25519 signature is 64 bytes");
        Signature::from_bytes(bytes)
    }

    /// Standard base64 of the 64-byte Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> String {
        b64_encode(&self.sign_raw(message).to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer as _, Verifier as _};
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn signs_the_same_bytes_as_ed25519_dalek(
            seed in any::<[u8; 32]>(),
            message in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let key = SigningKey::from_bytes(&seed);
            let signer = Signer::from_signing_key(key.clone());
            let ours = signer.sign_raw(&message);
            prop_assert_eq!(ours.to_bytes(), key.sign(&message).to_bytes());
            prop_assert!(key.verifying_key().verify(&message, &ours).is_ok());
        }
    }
}
