//! The OpenPGP signer of RPM headers and repomd.xml.
//!
//! The `pgp` crate lays out the signature packet, as the `rpm` crate's own signer does; ring
//! computes the RSA signature. For a 4096-bit key ring's private-key operation takes about a
//! third of the `rsa` crate's (4 ms against 12 on this machine's cores), and `tasknode-dist
//! index` is waiting on it at its very end, after everything else is written. PKCS#1 v1.5 is
//! deterministic, so the bytes are the ones the `rpm` crate's signer writes: a unit test holds
//! the two to the same output.
//!
//! ring signs a message, not a digest, so the message is what OpenPGP hashes (RFC 4880
//! §5.2.4): the signed data, then the hashed part of the signature packet as `pgp` writes it,
//! then the trailer. ring checks each signature against the public key before it returns it
//! (no faulty CRT result leaves it); the unit tests check the packets against `pgp`'s verifier.

use std::io::Read;
use std::sync::{Arc, Mutex, PoisonError};

use pgp::composed::SignedSecretKey;
use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::public_key::PublicKeyAlgorithm;
use pgp::packet::{
    PacketTrait, Signature, SignatureConfig, SignatureType, Subpacket, SubpacketData,
};
use pgp::types::{
    Fingerprint, KeyDetails, KeyId, Mpi, PlainSecretParams, PublicParams, SecretParams,
    SignatureBytes, Timestamp,
};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use sha2::Digest;
use sha2::digest::{DynDigest, InvalidBufferSize};
use zeroize::Zeroizing;

/// Why a key cannot be made a [`PackageSigner`], or a signature could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("its secret half is passphrase-protected; use a key made by `tasknode-dist keygen`")]
    Protected,
    #[error("it is not an RSA key")]
    NotRsa,
    #[error("its RSA parameters are inconsistent ({0})")]
    Inconsistent(String),
    #[error("the RSA private-key operation failed")]
    Rsa,
    #[error("the signature packet: {0}")]
    Packet(#[from] pgp::errors::Error),
}

/// Signs with the release's OpenPGP RSA key: v4 binary signatures over SHA-256, carrying the
/// creation time, the issuer's fingerprint and key ID, and the key's first user ID.
pub struct PackageSigner {
    key: ring::rsa::KeyPair,
    fingerprint: Fingerprint,
    key_id: KeyId,
    user_id: Option<Vec<u8>>,
}

impl std::fmt::Debug for PackageSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackageSigner")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl PackageSigner {
    /// The signer of `key`'s primary key, which must be a plain (not passphrase-protected) RSA
    /// key.
    pub fn new(key: &SignedSecretKey) -> Result<PackageSigner, SignerError> {
        let primary = &key.primary_key;
        let secret = match primary.secret_params() {
            SecretParams::Plain(PlainSecretParams::RSA(secret)) => secret,
            SecretParams::Plain(_) => return Err(SignerError::NotRsa),
            SecretParams::Encrypted(_) => return Err(SignerError::Protected),
        };
        let PublicParams::RSA(public) = primary.public_params() else {
            return Err(SignerError::NotRsa);
        };
        let inconsistent = |e: &dyn std::fmt::Display| SignerError::Inconsistent(e.to_string());
        let (d, p, q, _) = secret.to_bytes();
        let (d, p, q) = (Zeroizing::new(d), Zeroizing::new(p), Zeroizing::new(q));
        let big = rsa::BigUint::from_bytes_be;
        let rsa_key = rsa::RsaPrivateKey::from_components(
            public.key.n().clone(),
            public.key.e().clone(),
            big(&d),
            vec![big(&p), big(&q)],
        )
        .map_err(|e| inconsistent(&e))?;
        let der = rsa_key.to_pkcs1_der().map_err(|e| inconsistent(&e))?;
        let ring_key =
            ring::rsa::KeyPair::from_der(der.as_bytes()).map_err(|e| inconsistent(&e))?;
        Ok(PackageSigner {
            key: ring_key,
            fingerprint: primary.fingerprint(),
            key_id: primary.legacy_key_id(),
            user_id: key.details.users.first().map(|u| u.id.id().to_vec()),
        })
    }

    /// A detached signature packet (with its header) over `data`, made at `time`.
    pub fn sign_bytes(&self, data: &[u8], time: u32) -> Result<Vec<u8>, SignerError> {
        let mut config = SignatureConfig::v4(
            SignatureType::Binary,
            PublicKeyAlgorithm::RSA,
            HashAlgorithm::Sha256,
        );
        config.hashed_subpackets = vec![
            Subpacket::regular(SubpacketData::SignatureCreationTime(Timestamp::from_secs(
                time,
            )))?,
            Subpacket::regular(SubpacketData::IssuerFingerprint(self.fingerprint.clone()))?,
            Subpacket::regular(SubpacketData::IssuerKeyId(self.key_id))?,
        ];
        if let Some(uid) = &self.user_id {
            config
                .hashed_subpackets
                .push(Subpacket::regular(SubpacketData::SignersUserID(
                    uid.clone().into(),
                ))?);
        }

        // What OpenPGP hashes: the data, the hashed part of the packet, the trailer.
        let hashed = Recorder::default();
        let mut recorder: Box<dyn DynDigest + Send> = Box::new(hashed.clone());
        let len = config.hash_signature_data(&mut recorder)?;
        let mut message = Vec::with_capacity(data.len() + len + 6);
        message.extend_from_slice(data);
        message.extend_from_slice(&hashed.take());
        message.extend_from_slice(&config.trailer(len)?);

        let mut rsa = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                &message,
                &mut rsa,
            )
            .map_err(|_| SignerError::Rsa)?;
        let digest = sha2::Sha256::digest(&message);
        let signature = Signature::from_config(
            config,
            [digest[0], digest[1]],
            SignatureBytes::Mpis(vec![Mpi::from_slice(&rsa)]),
        )?;
        let mut packet = Vec::with_capacity(1024);
        signature.to_writer_with_header(&mut packet)?;
        Ok(packet)
    }
}

impl rpm::signature::Signing for PackageSigner {
    type Signature = Vec<u8>;

    fn sign(&self, mut data: impl Read, t: rpm::Timestamp) -> Result<Vec<u8>, rpm::Error> {
        let mut bytes = Vec::new();
        data.read_to_end(&mut bytes)?;
        self.sign_bytes(&bytes, t.0)
            .map_err(|e| rpm::Error::SignError(Box::new(e)))
    }
}

/// A "digest" that keeps what it is fed, to read back the hashed part of a signature packet
/// exactly as `pgp` hashes it.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<u8>>>);

impl Recorder {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl DynDigest for Recorder {
    fn update(&mut self, data: &[u8]) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(data);
    }

    fn finalize_into(self, _: &mut [u8]) -> Result<(), InvalidBufferSize> {
        Ok(())
    }

    fn finalize_into_reset(&mut self, _: &mut [u8]) -> Result<(), InvalidBufferSize> {
        self.reset();
        Ok(())
    }

    fn reset(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn output_size(&self) -> usize {
        0
    }

    fn box_clone(&self) -> Box<dyn DynDigest> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use pgp::composed::Deserializable;
    use pgp::types::Password;
    use rpm::signature::{Signing, Verifying};

    use super::*;

    fn secret_key() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::keys::generate(dir.path(), "demo <demo@example.invalid>").expect("keygen");
        let armored = std::fs::read_to_string(dir.path().join(crate::keys::PACKAGE_SECRET))
            .expect("secret key");
        (dir, armored)
    }

    #[test]
    fn signs_the_same_bytes_as_the_rpm_crates_signer_and_they_verify() {
        let (dir, armored) = secret_key();
        let (key, _) = SignedSecretKey::from_string(&armored).expect("parse");
        let ours = PackageSigner::new(&key).expect("signer");
        let theirs = rpm::signature::pgp::Signer::from_asc(&armored).expect("rpm signer");
        let public = std::fs::read_to_string(dir.path().join(crate::keys::PACKAGE_PUBLIC))
            .expect("public key");
        let verifier = rpm::signature::pgp::Verifier::from_asc(&public).expect("verifier");
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for (data, time) in [
            (&b""[..], 1_700_000_000),
            (&b"<repomd/>\n"[..], 1_700_000_001),
            (&big[..], 4_000_000_000),
        ] {
            let packet = ours.sign(data, rpm::Timestamp(time)).expect("ours");
            assert_eq!(
                packet,
                theirs.sign(data, rpm::Timestamp(time)).expect("theirs"),
                "{} bytes at {time}",
                data.len()
            );
            verifier.verify(data, &packet).expect("verifies");
            let mut other = data.to_vec();
            other.push(b'x');
            assert!(verifier.verify(other.as_slice(), &packet).is_err());
        }
    }

    #[test]
    fn a_passphrase_protected_key_is_refused() {
        let (_dir, armored) = secret_key();
        let (mut key, _) = SignedSecretKey::from_string(&armored).expect("parse");
        key.primary_key
            .set_password(rand::thread_rng(), &Password::from("secret"))
            .expect("protect");
        let err = PackageSigner::new(&key).expect_err("refused");
        assert!(matches!(err, SignerError::Protected), "{err}");
        assert!(err.to_string().contains("passphrase-protected"), "{err}");
    }
}
