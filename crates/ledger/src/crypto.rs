//! Keys and signatures (ed25519), single and batch verification.
//!
//! The mempool verifies each arriving transaction with [`verify_strict`](ed25519_dalek::VerifyingKey::verify_strict);
//! the block path verifies all of a block's signatures at once with [`verify_batch`], split over the
//! machine's cores. When a batch fails, each signature is checked on its own to name the culprit.

use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use gridmesh_types::Address;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};

/// Domain separator prefixed to every signed transaction body.
pub const TX_SIGNING_DOMAIN: &[u8] = b"gridmesh/tx/v1\0";

/// A secret signing key and the address it controls.
#[derive(Clone)]
pub struct Keypair {
    signing: SigningKey,
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keypair({})", self.address())
    }
}

impl Keypair {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Keypair {
        Keypair {
            signing: SigningKey::generate(&mut OsRng),
        }
    }

    /// A key from a 32-byte secret seed (deterministic; tests and simulations).
    pub fn from_seed(seed: [u8; 32]) -> Keypair {
        Keypair {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    pub fn address(&self) -> Address {
        Address(self.signing.verifying_key().to_bytes())
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// Writes the key as a JSON key file readable only by its owner.
    pub fn save(&self, path: &Path) -> Result<(), KeyFileError> {
        let file = KeyFile {
            address: self.address(),
            secret_key: hex::encode(self.signing.to_bytes()),
        };
        let json = serde_json::to_string_pretty(&file).expect("key file serialises");
        write_private(path, json.as_bytes()).map_err(|source| KeyFileError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Reads a key file written by [`Keypair::save`] and checks its address matches its secret.
    pub fn load(path: &Path) -> Result<Keypair, KeyFileError> {
        let shown = || path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
            path: shown(),
            source,
        })?;
        let file: KeyFile = serde_json::from_str(&text).map_err(|e| KeyFileError::Malformed {
            path: shown(),
            reason: e.to_string(),
        })?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(file.secret_key.trim(), &mut seed).map_err(|_| {
            KeyFileError::Malformed {
                path: shown(),
                reason: "secret_key is not 64 hex characters".into(),
            }
        })?;
        let key = Keypair::from_seed(seed);
        if key.address() != file.address {
            return Err(KeyFileError::Malformed {
                path: shown(),
                reason: format!(
                    "address {} does not belong to the secret key (it is {})",
                    file.address,
                    key.address()
                ),
            });
        }
        Ok(key)
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The on-disk form of a key: `{"address": "<64 hex>", "secret_key": "<64 hex>"}`.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    address: Address,
    secret_key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("key file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path} is not a gridmesh key: {reason}")]
    Malformed { path: String, reason: String },
}

/// Why a signature was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("sender {0} is not a valid ed25519 public key")]
    BadPublicKey(Address),
    #[error("signature does not verify for sender {0}")]
    Invalid(Address),
}

fn verifying_key(address: &Address) -> Result<VerifyingKey, SignatureError> {
    let key =
        VerifyingKey::from_bytes(&address.0).map_err(|_| SignatureError::BadPublicKey(*address))?;
    if key.is_weak() {
        return Err(SignatureError::BadPublicKey(*address));
    }
    Ok(key)
}

/// Verifies one signature strictly (rejects weak keys and non-canonical encodings).
pub fn verify_one(
    signer: &Address,
    message: &[u8],
    signature: &[u8; 64],
) -> Result<(), SignatureError> {
    let key = verifying_key(signer)?;
    key.verify_strict(message, &Signature::from_bytes(signature))
        .map_err(|_| SignatureError::Invalid(*signer))
}

/// One item of a batch: who signed, what, and the signature.
pub struct SignedItem<'a> {
    pub signer: Address,
    pub message: &'a [u8],
    pub signature: [u8; 64],
}

/// Verifies many signatures with ed25519 batch verification, split into one chunk per core.
///
/// Returns the index of the first invalid item (found by strict single verification after a chunk's
/// batch failed), or `Ok(())` when all are valid.
pub fn verify_batch(items: &[SignedItem<'_>]) -> Result<(), (usize, SignatureError)> {
    if items.is_empty() {
        return Ok(());
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(items.len().div_ceil(64)) // not worth a thread for fewer than 64 signatures
        .max(1);
    let chunk = items.len().div_ceil(threads);
    if threads == 1 {
        return verify_chunk(items, 0);
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .enumerate()
            .map(|(i, c)| s.spawn(move || verify_chunk(c, i * chunk)))
            .collect();
        let mut first_err: Option<(usize, SignatureError)> = None;
        for h in handles {
            if let Err(e) = h.join().expect("verification thread panicked") {
                if first_err.as_ref().is_none_or(|f| e.0 < f.0) {
                    first_err = Some(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    })
}

fn verify_chunk(items: &[SignedItem<'_>], offset: usize) -> Result<(), (usize, SignatureError)> {
    let mut keys = Vec::with_capacity(items.len());
    for (i, it) in items.iter().enumerate() {
        keys.push(verifying_key(&it.signer).map_err(|e| (offset + i, e))?);
    }
    let messages: Vec<&[u8]> = items.iter().map(|it| it.message).collect();
    let sigs: Vec<Signature> = items
        .iter()
        .map(|it| Signature::from_bytes(&it.signature))
        .collect();
    if ed25519_dalek::verify_batch(&messages, &sigs, &keys).is_ok() {
        return Ok(());
    }
    for (i, it) in items.iter().enumerate() {
        verify_one(&it.signer, it.message, &it.signature).map_err(|e| (offset + i, e))?;
    }
    // The batch failed but every signature verifies alone: reject the whole chunk rather than
    // accept a set the batch equation refused.
    Err((offset, SignatureError::Invalid(items[0].signer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trip_and_tamper_detection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let k = Keypair::generate();
        k.save(&path).unwrap();
        assert_eq!(Keypair::load(&path).unwrap().address(), k.address());
        // refuses to overwrite an existing key
        assert!(k.save(&path).is_err());
        let other = dir.path().join("bad.key");
        std::fs::write(
            &other,
            format!(
                r#"{{"address":"{}","secret_key":"{}"}}"#,
                Keypair::generate().address(),
                "11".repeat(32)
            ),
        )
        .unwrap();
        assert!(matches!(
            Keypair::load(&other),
            Err(KeyFileError::Malformed { .. })
        ));
        std::fs::write(&other, "not json").unwrap();
        assert!(Keypair::load(&other).is_err());
    }

    #[test]
    fn batch_finds_the_bad_signature() {
        let keys: Vec<Keypair> = (0..200u8).map(|i| Keypair::from_seed([i; 32])).collect();
        let msgs: Vec<Vec<u8>> = (0..200u32).map(|i| i.to_le_bytes().to_vec()).collect();
        let mut items: Vec<SignedItem> = keys
            .iter()
            .zip(&msgs)
            .map(|(k, m)| SignedItem {
                signer: k.address(),
                message: m,
                signature: k.sign(m),
            })
            .collect();
        assert!(verify_batch(&items).is_ok());
        items[137].signature[5] ^= 1;
        let (idx, _) = verify_batch(&items).unwrap_err();
        assert_eq!(idx, 137);
    }
}
