//! Keys in minisign's format: a pair generated here (the secret key encrypted with a password
//! through scrypt, or not encrypted when asked), the two files as the minisign tool writes them
//! (an `untrusted comment:` line, then the key in base64), and key IDs shown as minisign shows
//! them (16 upper-case hex digits), so that a message here and minisign's own name the same key.

use std::fmt;

use ct_codecs::{Base64, Decoder};

/// The 8-byte ID minisign stores in a key and in every signature it makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyId([u8; 8]);

impl KeyId {
    pub(crate) fn of(keynum: &[u8]) -> KeyId {
        let mut id = [0u8; 8];
        // minisign's key numbers are 8 bytes; a shorter slice (never from the crate) stays 0.
        let n = keynum.len().min(8);
        id[..n].copy_from_slice(&keynum[..n]);
        KeyId(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "not a minisign public key ({0}): a public key file is an `untrusted comment:` line and \
         the key in base64 (56 characters), or that line alone"
    )]
    NotPublicKey(String),
    #[error("not a minisign secret key ({0})")]
    NotSecretKey(String),
    #[error("the secret key is encrypted: it needs its password")]
    NeedsPassword,
    #[error("wrong password for the secret key")]
    WrongPassword,
    #[error("cannot generate a key pair: {0}")]
    Generate(String),
}

/// A public key: what verifies.
#[derive(Clone, Debug)]
pub struct PublicKey(pub(crate) minisign::PublicKey);

impl PublicKey {
    /// A public key file as minisign writes it, or its base64 line alone (`minisign -P`'s form).
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let encoded = match lines.as_slice() {
            [key] => key,
            [comment, key] if comment.starts_with("untrusted comment:") => key,
            _ => {
                return Err(KeyError::NotPublicKey(format!(
                    "{} non-empty lines",
                    lines.len()
                )));
            }
        };
        let pk = minisign::PublicKey::from_base64(encoded)
            .map_err(|e| KeyError::NotPublicKey(e.to_string()))?;
        Ok(PublicKey(pk))
    }

    pub fn id(&self) -> KeyId {
        KeyId::of(self.0.keynum())
    }

    /// The public key file (`untrusted comment: minisign public key: <ID>`, then the key).
    pub fn to_file_text(&self) -> Result<String, KeyError> {
        self.0
            .to_box()
            .map(|b| b.into_string())
            .map_err(|e| KeyError::Generate(e.to_string()))
    }

    /// The key alone in base64 (what `minisign -P` takes on its command line).
    pub fn to_base64(&self) -> String {
        self.0.to_base64()
    }
}

/// A secret key file, read but not yet unlocked.
#[derive(Clone)]
pub struct SecretKeyFile {
    text: String,
    encrypted: bool,
}

impl fmt::Debug for SecretKeyFile {
    /// Whether it is encrypted only: no secret in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKeyFile {{ encrypted: {} }}", self.encrypted)
    }
}

/// The bytes of a secret key: algorithm, KDF, checksum algorithm (2 each), salt (32), scrypt
/// limits (8 each), key ID (8), Ed25519 secret key (64), checksum (32).
const SECRET_KEY_BYTES: usize = 158;

impl SecretKeyFile {
    /// A secret key file as minisign (or `kpbuild key generate`) writes it.
    pub fn parse(text: &str) -> Result<SecretKeyFile, KeyError> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let (Some(comment), Some(encoded), None) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(KeyError::NotSecretKey(
                "expected an `untrusted comment:` line and the key".into(),
            ));
        };
        if !comment.starts_with("untrusted comment:") {
            return Err(KeyError::NotSecretKey(
                "its first line is not an `untrusted comment:`".into(),
            ));
        }
        let bytes = Base64::decode_to_vec(encoded, None)
            .map_err(|e| KeyError::NotSecretKey(format!("the key is not base64: {e}")))?;
        if bytes.len() != SECRET_KEY_BYTES {
            return Err(KeyError::NotSecretKey(format!(
                "{} bytes, not {SECRET_KEY_BYTES}{}",
                bytes.len(),
                if bytes.len() == 42 {
                    " (is it the public key?)"
                } else {
                    ""
                }
            )));
        }
        let sk = minisign::SecretKey::from_bytes(&bytes)
            .map_err(|e| KeyError::NotSecretKey(e.to_string()))?;
        Ok(SecretKeyFile {
            text: format!("{comment}\n{encoded}\n"),
            encrypted: sk.is_encrypted(),
        })
    }

    /// Whether unlocking it needs a password.
    pub fn is_encrypted(&self) -> bool {
        self.encrypted
    }

    /// The usable key: decrypted with `password` when it is encrypted (ignored when not).
    pub fn unlock(&self, password: Option<&str>) -> Result<SecretKey, KeyError> {
        let b = minisign::SecretKeyBox::from_string(&self.text)
            .map_err(|e| KeyError::NotSecretKey(e.to_string()))?;
        let sk = if self.encrypted {
            let pw = password.ok_or(KeyError::NeedsPassword)?;
            b.into_secret_key(Some(pw.to_string()))
                .map_err(|e| match e.kind() {
                    minisign::ErrorKind::Verify => KeyError::WrongPassword,
                    _ => KeyError::NotSecretKey(e.to_string()),
                })?
        } else {
            b.into_unencrypted_secret_key()
                .map_err(|e| KeyError::NotSecretKey(e.to_string()))?
        };
        let pk = minisign::PublicKey::from_secret_key(&sk)
            .map_err(|e| KeyError::NotSecretKey(e.to_string()))?;
        Ok(SecretKey { sk, pk })
    }
}

/// A secret key ready to sign, with its public key (each signature is checked against it).
#[derive(Clone)]
pub struct SecretKey {
    pub(crate) sk: minisign::SecretKey,
    pub(crate) pk: minisign::PublicKey,
}

impl fmt::Debug for SecretKey {
    /// The key ID only: no secret in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.id())
    }
}

impl SecretKey {
    pub fn id(&self) -> KeyId {
        KeyId::of(self.sk.keynum())
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.pk.clone())
    }
}

/// A new key pair as the texts of its two files (no `Debug`: the secret stays out of logs).
#[derive(Clone)]
pub struct KeyPairFiles {
    pub id: KeyId,
    /// The public key file (`<prefix>.pub`).
    pub public: String,
    /// The secret key file (`<prefix>.key`), encrypted with the password when there is one.
    pub secret: String,
    pub public_key: PublicKey,
}

impl KeyPairFiles {
    /// Generates a key pair: the secret key encrypted with `password` (scrypt, minisign's
    /// parameters), or not encrypted when there is none.
    pub fn generate(password: Option<&str>) -> Result<KeyPairFiles, KeyError> {
        let gen_err = |e: minisign::PError| KeyError::Generate(e.to_string());
        let (kp, comment) = match password {
            Some(p) => (
                minisign::KeyPair::generate_encrypted_keypair(Some(p.to_string()))
                    .map_err(gen_err)?,
                "kpbuild encrypted secret key",
            ),
            None => (
                minisign::KeyPair::generate_unencrypted_keypair().map_err(gen_err)?,
                "kpbuild secret key (not encrypted)",
            ),
        };
        let public_key = PublicKey(kp.pk);
        Ok(KeyPairFiles {
            id: public_key.id(),
            public: public_key.to_file_text()?,
            secret: kp.sk.to_box(Some(comment)).map_err(gen_err)?.into_string(),
            public_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unencrypted_pairs_read_back_without_a_password() {
        let kp = KeyPairFiles::generate(None).unwrap();
        assert!(kp.public.starts_with(&format!(
            "untrusted comment: minisign public key: {}\n",
            kp.id
        )));
        let pk = PublicKey::parse(&kp.public).unwrap();
        assert_eq!(pk.id(), kp.id);
        // The base64 line alone is a public key too.
        assert_eq!(PublicKey::parse(&pk.to_base64()).unwrap().id(), kp.id);
        let file = SecretKeyFile::parse(&kp.secret).unwrap();
        assert!(!file.is_encrypted());
        let sk = file.unlock(None).unwrap();
        assert_eq!(sk.id(), kp.id);
        assert_eq!(sk.public_key().to_base64(), pk.to_base64());
    }

    #[test]
    fn encrypted_pairs_need_their_password() {
        let kp = KeyPairFiles::generate(Some("correct horse")).unwrap();
        let file = SecretKeyFile::parse(&kp.secret).unwrap();
        assert!(file.is_encrypted());
        assert!(matches!(file.unlock(None), Err(KeyError::NeedsPassword)));
        assert!(matches!(
            file.unlock(Some("wrong horse")),
            Err(KeyError::WrongPassword)
        ));
        assert_eq!(file.unlock(Some("correct horse")).unwrap().id(), kp.id);
    }

    #[test]
    fn the_wrong_file_is_named() {
        let kp = KeyPairFiles::generate(None).unwrap();
        let e = SecretKeyFile::parse(&kp.public).unwrap_err().to_string();
        assert!(e.contains("is it the public key?"), "{e}");
        let e = PublicKey::parse(&kp.secret).unwrap_err().to_string();
        assert!(e.starts_with("not a minisign public key"), "{e}");
        assert!(PublicKey::parse("").is_err());
    }

    #[test]
    fn key_ids_read_as_minisign_prints_them() {
        // minisign shows the little-endian number of the 8 bytes.
        let id = KeyId::of(&[0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0xAB]);
        assert_eq!(id.to_string(), "AB07060504030201");
    }
}
