//! Tokens that let the console read a log from an agent's log service (port 8000 on a classic
//! network). The console signs each one with its ed25519 log key for one node, one path and a
//! short life; the agent learns the public key from heartbeat answers and checks all three.
//!
//! A token is `base64url(grant JSON) "." base64url(signature of those JSON bytes)`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// How long a token the console signs is good for.
pub const TOKEN_LIFE_MS: i64 = 60_000;

/// What a token allows: reading `path` from node `node` until `exp_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub node: String,
    pub path: String,
    pub exp_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed log token")]
    Malformed,
    #[error("log token signature does not verify with the console's log key")]
    BadSignature,
    #[error("log token is for node {0}, not this one")]
    OtherNode(String),
    #[error("log token is for {0}, not this path")]
    OtherPath(String),
    #[error("log token expired {0} ms ago")]
    Expired(i64),
}

pub fn sign(key: &SigningKey, grant: &Grant) -> String {
    let payload = serde_json::to_vec(grant).unwrap_or_default();
    let sig = key.sign(&payload);
    format!("{}.{}", B64.encode(&payload), B64.encode(sig.to_bytes()))
}

/// Checks a token for `node` and `path` at `now_ms`.
pub fn verify(
    key: &VerifyingKey,
    token: &str,
    node: &str,
    path: &str,
    now_ms: i64,
) -> Result<Grant, TokenError> {
    let (payload, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let payload = B64.decode(payload).map_err(|_| TokenError::Malformed)?;
    let sig: [u8; 64] = B64
        .decode(sig)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or(TokenError::Malformed)?;
    key.verify(&payload, &Signature::from_bytes(&sig))
        .map_err(|_| TokenError::BadSignature)?;
    let grant: Grant = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
    if grant.node != node {
        return Err(TokenError::OtherNode(grant.node));
    }
    if grant.path != path {
        return Err(TokenError::OtherPath(grant.path));
    }
    if grant.exp_ms <= now_ms {
        return Err(TokenError::Expired(now_ms - grant.exp_ms));
    }
    Ok(grant)
}

/// The public key as heartbeat answers carry it (base64url of its 32 bytes).
pub fn encode_key(key: &VerifyingKey) -> String {
    B64.encode(key.to_bytes())
}

pub fn decode_key(text: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = B64.decode(text).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn a_token_is_good_for_its_node_path_and_life_only() {
        let k = key(1);
        let grant = Grant {
            node: "n1".into(),
            path: "tasks/5.log".into(),
            exp_ms: 1_000,
        };
        let t = sign(&k, &grant);
        let pk = decode_key(&encode_key(&k.verifying_key())).unwrap();
        assert_eq!(verify(&pk, &t, "n1", "tasks/5.log", 999), Ok(grant));
        assert_eq!(
            verify(&pk, &t, "n2", "tasks/5.log", 999),
            Err(TokenError::OtherNode("n1".into()))
        );
        assert!(matches!(
            verify(&pk, &t, "n1", "heartbeat.log", 999),
            Err(TokenError::OtherPath(_))
        ));
        assert_eq!(
            verify(&pk, &t, "n1", "tasks/5.log", 1_500),
            Err(TokenError::Expired(500))
        );
        let other = key(2).verifying_key();
        assert_eq!(
            verify(&other, &t, "n1", "tasks/5.log", 999),
            Err(TokenError::BadSignature)
        );
        for junk in ["", "abc", "a.b", &format!("{t}x")] {
            assert!(
                verify(&pk, junk, "n1", "tasks/5.log", 999).is_err(),
                "{junk}"
            );
        }
        // A grant edited after signing fails.
        let (_, sig) = t.split_once('.').unwrap();
        let forged = Grant {
            node: "n1".into(),
            path: "tasks/5.log".into(),
            exp_ms: i64::MAX,
        };
        let forged = format!("{}.{sig}", B64.encode(serde_json::to_vec(&forged).unwrap()));
        assert_eq!(
            verify(&pk, &forged, "n1", "tasks/5.log", 999),
            Err(TokenError::BadSignature)
        );
    }
}
