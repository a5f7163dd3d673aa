//! Signing a stream and verifying a signature of one, in minisign's format: prehashed (BLAKE2b
//! of the data, then Ed25519, as minisign 0.10+ signs by default, so a signature of a 500 MiB
//! archive is made and checked in one read), with the kpbuild [`TrustedComment`] signed beside
//! it. Verifying refuses, each with its own [`VerifyError`]: a text that is no signature, a
//! legacy (not prehashed) one, another key's, data that changed, and a signature whose trusted
//! comment is not kpbuild's.

use std::io::{Read, Seek};

use crate::comment::TrustedComment;
use crate::key::{KeyId, PublicKey, SecretKey};

/// The suffix of a signature file: `kubeplay.lock.json.minisig`, `….tar.zst.minisig`.
pub const SUFFIX: &str = ".minisig";

/// A signature that could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign: {0}")]
pub struct SignError(String);

/// Signs `data` with `key`: the text of the `.minisig` file.
pub fn sign<R: Read>(
    key: &SecretKey,
    data: R,
    comment: &TrustedComment,
) -> Result<String, SignError> {
    let untrusted = format!("signature from kpbuild secret key {}", key.id());
    let sb = minisign::sign(
        Some(&key.pk),
        &key.sk,
        data,
        Some(&comment.to_string()),
        Some(&untrusted),
    )
    .map_err(|e| SignError(e.to_string()))?;
    Ok(sb.into_string())
}

/// A signature that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub key: KeyId,
    pub comment: TrustedComment,
}

/// Why a signature is refused.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("not a minisign signature ({0})")]
    Malformed(String),
    #[error(
        "a legacy minisign signature (not prehashed); sign with kpbuild, or minisign 0.10 or \
         later without -l"
    )]
    Legacy,
    #[error("signed by the key with ID {signed_by}, not by the key given (ID {given})")]
    WrongKey { signed_by: KeyId, given: KeyId },
    /// The Ed25519 check failed: the data (or the trusted comment) is not what was signed.
    /// `claims` is the trusted comment as the file reads, not authenticated: what it says the
    /// signature is of, for a message that tells a changed file from another bundle's signature.
    #[error("does not verify: the data or its trusted comment is not what was signed")]
    Mismatch {
        claims: Result<Box<TrustedComment>, String>,
    },
    #[error("verifies, but {0}")]
    NotKpbuild(String),
    #[error("reading the signed data: {0}")]
    Io(String),
}

/// Verifies `signature` (a `.minisig` file's text) of `data` with `key`.
pub fn verify<R: Read + Seek>(
    key: &PublicKey,
    signature: &str,
    data: R,
) -> Result<Verified, VerifyError> {
    let sb = minisign::SignatureBox::from_string(signature)
        .map_err(|e| VerifyError::Malformed(e.to_string()))?;
    if !sb.is_prehashed() {
        return Err(VerifyError::Legacy);
    }
    let signed_by = KeyId::of(sb.keynum());
    if signed_by != key.id() {
        return Err(VerifyError::WrongKey {
            signed_by,
            given: key.id(),
        });
    }
    let line = sb
        .trusted_comment()
        .map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let claims = TrustedComment::parse(&line)
        .map(Box::new)
        .map_err(|e| e.to_string());
    match minisign::verify(&key.0, &sb, data, true, false, false) {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), minisign::ErrorKind::Io) => {
            return Err(VerifyError::Io(e.to_string()));
        }
        Err(_) => return Err(VerifyError::Mismatch { claims }),
    }
    let comment = claims.map_err(VerifyError::NotKpbuild)?;
    Ok(Verified {
        key: signed_by,
        comment: *comment,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::comment::tests::subject;
    use crate::key::{KeyPairFiles, SecretKeyFile};

    fn pair() -> (SecretKey, PublicKey) {
        let kp = KeyPairFiles::generate(None).unwrap();
        let sk = SecretKeyFile::parse(&kp.secret)
            .unwrap()
            .unlock(None)
            .unwrap();
        (sk, kp.public_key)
    }

    fn comment() -> TrustedComment {
        TrustedComment::new(1733630000, "kubeplay.lock.json", subject()).unwrap()
    }

    #[test]
    fn round_trip_and_each_refusal() {
        let (sk, pk) = pair();
        let data = b"{\"format\": \"kpbuild.lock/v1\"}\n".to_vec();
        let sig = sign(&sk, &data[..], &comment()).unwrap();
        assert!(sig.contains(&format!("trusted comment: {}\n", comment())));
        let v = verify(&pk, &sig, Cursor::new(&data)).unwrap();
        assert_eq!(v.comment, comment());
        assert_eq!(v.key, pk.id());

        // One byte changed: refused, with what the signature claims to be of.
        let mut changed = data.clone();
        changed[3] ^= 1;
        match verify(&pk, &sig, Cursor::new(&changed)) {
            Err(VerifyError::Mismatch { claims }) => assert_eq!(*claims.unwrap(), comment()),
            other => panic!("{other:?}"),
        }
        // Truncated data.
        assert!(matches!(
            verify(&pk, &sig, Cursor::new(&data[..data.len() - 1])),
            Err(VerifyError::Mismatch { .. })
        ));
        // Another key: named by both IDs.
        let (_, other) = pair();
        match verify(&other, &sig, Cursor::new(&data)) {
            Err(e @ VerifyError::WrongKey { .. }) => {
                let text = e.to_string();
                assert!(text.contains(&pk.id().to_string()), "{text}");
                assert!(text.contains(&other.id().to_string()), "{text}");
            }
            other => panic!("{other:?}"),
        }
        // The trusted comment edited (another version): the comment's own signature fails.
        let forged = sig.replace("version:v0.1.0", "version:v0.2.0");
        assert!(matches!(
            verify(&pk, &forged, Cursor::new(&data)),
            Err(VerifyError::Mismatch { .. })
        ));
        // Not a signature at all.
        assert!(matches!(
            verify(&pk, "untrusted comment: x\n", Cursor::new(&data)),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn a_valid_signature_with_a_foreign_comment_is_not_kpbuilds() {
        let (sk, pk) = pair();
        let sb = minisign::sign(
            Some(&sk.pk),
            &sk.sk,
            &b"data"[..],
            Some("timestamp:1\tfile:x\thashed"),
            None,
        )
        .unwrap();
        let e = verify(&pk, &sb.into_string(), Cursor::new(b"data")).unwrap_err();
        assert!(matches!(e, VerifyError::NotKpbuild(_)), "{e}");
        assert!(
            e.to_string().contains("not kpbuild's trusted comment"),
            "{e}"
        );
    }
}
