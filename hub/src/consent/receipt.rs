//! Consent receipts: the Kantara Consent Receipt fields that fit, as a compact JWS signed
//! with the hub's Ed25519 key (`alg: EdDSA`), so anyone holding the published public key
//! can check a receipt offline with a plain Ed25519 tool.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde_json::{Value as Json, json};

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the key's 32 bytes follow.
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// The hub's receipt-signing key. Not `Clone`, not `Serialize`; the secret half is zeroed
/// on drop by `ed25519_dalek`.
pub struct ReceiptSigner {
    key: SigningKey,
    kid: String,
}

impl std::fmt::Debug for ReceiptSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptSigner").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl ReceiptSigner {
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let kid = key_id(&key.verifying_key());
        Self { key, kid }
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Short name of the key: the start of the base64url public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs `claims` as a compact JWS: `header.payload.signature`, each base64url.
    pub fn sign(&self, claims: &Json) -> String {
        let header = json!({ "alg": "EdDSA", "typ": "JWT", "kid": self.kid });
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    /// The public key as published: raw base64url, a JWK, and PEM (for OpenSSL).
    pub fn published(&self) -> Json {
        let public = self.public_key();
        let x = URL_SAFE_NO_PAD.encode(public.as_bytes());
        json!({
            "alg": "EdDSA",
            "kid": self.kid,
            "public_key": x,
            "jwk": { "kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "use": "sig" },
            "pem": public_pem(&public),
        })
    }
}

fn key_id(public: &VerifyingKey) -> String {
    URL_SAFE_NO_PAD.encode(public.as_bytes())[..16].to_owned()
}

/// The key as a PEM SubjectPublicKeyInfo, as `openssl pkey -pubin` reads it.
pub fn public_pem(public: &VerifyingKey) -> String {
    let mut der = SPKI_PREFIX.to_vec();
    der.extend_from_slice(public.as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n")
}

/// Why a receipt did not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("not a compact JWS")]
    Shape,
    #[error("not signed with EdDSA")]
    Algorithm,
    #[error("the signature does not match")]
    Signature,
}

/// Checks a compact JWS receipt against `public` and returns its claims.
pub fn verify(jws: &str, public: &VerifyingKey) -> Result<Json, VerifyError> {
    let mut parts = jws.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Shape);
    };
    let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).map_err(|_| VerifyError::Shape);
    let header: Json = serde_json::from_slice(&decode(header)?).map_err(|_| VerifyError::Shape)?;
    if header.get("alg").and_then(Json::as_str) != Some("EdDSA") {
        return Err(VerifyError::Algorithm);
    }
    let signature = Signature::from_slice(&decode(signature)?).map_err(|_| VerifyError::Shape)?;
    let input = &jws[..jws.len() - jws.rsplit('.').next().map_or(0, str::len) - 1];
    public.verify(input.as_bytes(), &signature).map_err(|_| VerifyError::Signature)?;
    serde_json::from_slice(&decode(payload)?).map_err(|_| VerifyError::Shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> ReceiptSigner {
        ReceiptSigner::from_seed(&[7; 32])
    }

    #[test]
    fn a_signed_receipt_verifies_and_a_changed_one_does_not() {
        let s = signer();
        let jws = s.sign(&json!({ "consentReceiptID": "r1", "granularity": "hour" }));
        let claims = verify(&jws, &s.public_key()).unwrap();
        assert_eq!(claims["granularity"], "hour");

        // Swap the payload for one that says "raw": the signature no longer matches.
        let parts: Vec<&str> = jws.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(json!({ "consentReceiptID": "r1", "granularity": "raw" }).to_string());
        let tampered = format!("{}.{forged}.{}", parts[0], parts[2]);
        assert_eq!(verify(&tampered, &s.public_key()), Err(VerifyError::Signature));

        let other = ReceiptSigner::from_seed(&[8; 32]);
        assert_eq!(verify(&jws, &other.public_key()), Err(VerifyError::Signature));
        assert_eq!(verify("a.b", &s.public_key()), Err(VerifyError::Shape));
    }

    #[test]
    fn the_signature_is_rfc8032_ed25519_over_the_jws_signing_input() {
        // RFC 8032 section 7.1, test 1: this seed has this public key, and signs "" so.
        let seed: [u8; 32] = hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
        let s = ReceiptSigner::from_seed(&seed);
        assert_eq!(
            s.public_key().as_bytes().to_vec(),
            hex::<32>("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a").to_vec()
        );
        let sig = s.key.sign(b"");
        assert_eq!(
            sig.to_bytes().to_vec(),
            [
                hex::<32>("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"),
                hex::<32>("5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
            ]
            .concat()
        );
        // The PEM is what OpenSSL prints for that key.
        assert_eq!(
            public_pem(&s.public_key()),
            "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----\n"
        );
    }

    fn hex<const N: usize>(s: &str) -> [u8; N] {
        let mut out = [0; N];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }
}
