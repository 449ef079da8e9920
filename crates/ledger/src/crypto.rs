//! Keys and signatures (ed25519), single and batch verification.
//!
//! The mempool verifies each arriving transaction with [`verify_strict`](ed25519_dalek::VerifyingKey::verify_strict);
//! the block path verifies all of a block's signatures at once with [`verify_batch`], split over the
//! machine's cores. When a batch fails, each signature is checked on its own to name the culprit.
//!
//! Signing is AWS-LC's (aws-lc-rs): ed25519 signatures are deterministic (RFC 8032), so it signs
//! the very bytes ed25519-dalek would, in about half the time (its assembly for the fixed-base
//! multiplication; 17 µs against 36 µs on the development machine). A simulated community's
//! devices sign two messages a slot each, and that was a third of its time. Verification stays
//! with ed25519-dalek: its strict rules and batches are part of the ledger's rules.

use std::path::Path;

use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use gridmesh_types::Address;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};

/// Domain separator prefixed to every signed transaction body.
pub const TX_SIGNING_DOMAIN: &[u8] = b"gridmesh/tx/v1\0";

/// A secret signing key and the address it controls.
#[derive(Clone)]
pub struct Keypair {
    signing: SigningKey,
    /// The same key in AWS-LC, which signs.
    signer: std::sync::Arc<aws_lc_rs::signature::Ed25519KeyPair>,
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keypair({})", self.address())
    }
}

impl Keypair {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Keypair {
        Keypair::of(SigningKey::generate(&mut OsRng))
    }

    /// A key from a 32-byte secret seed (deterministic; tests and simulations).
    pub fn from_seed(seed: [u8; 32]) -> Keypair {
        Keypair::of(SigningKey::from_bytes(&seed))
    }

    fn of(signing: SigningKey) -> Keypair {
        let signer = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&signing.to_bytes())
            .expect("every 32-byte seed is an ed25519 secret key");
        Keypair {
            signing,
            signer: std::sync::Arc::new(signer),
        }
    }

    pub fn address(&self) -> Address {
        Address(self.signing.verifying_key().to_bytes())
    }

    /// The 32-byte secret seed (to hand the same key to the consensus engine's signer).
    pub fn secret_seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.signer.sign(message).as_ref());
        out
    }

    /// Writes the key as a JSON key file readable only by its owner.
    pub fn save(&self, path: &Path) -> Result<(), KeyFileError> {
        let file = KeyFile {
            address: self.address(),
            secret_key: Some(hex::encode(self.signing.to_bytes())),
            encrypted: None,
        };
        write_key_file(path, &file)
    }

    /// Writes the key as a key file whose secret is encrypted with `passphrase`: Argon2id
    /// ([`KDF_MEMORY_KIB`], [`KDF_ITERATIONS`]) derives a key that seals the secret with
    /// ChaCha20-Poly1305 (AWS-LC), the address in clear and bound to it.
    pub fn save_encrypted(&self, path: &Path, passphrase: &str) -> Result<(), KeyFileError> {
        let shown = path.display().to_string();
        let mut salt = [0u8; 16];
        let mut nonce = [0u8; 12];
        rand::RngCore::fill_bytes(&mut OsRng, &mut salt);
        rand::RngCore::fill_bytes(&mut OsRng, &mut nonce);
        let sealing = Sealing {
            kdf: "argon2id".into(),
            memory_kib: KDF_MEMORY_KIB,
            iterations: KDF_ITERATIONS,
            lanes: 1,
            salt: hex::encode(salt),
            cipher: "chacha20-poly1305".into(),
            nonce: hex::encode(nonce),
            secret_key: String::new(),
        };
        let key = sealing.key(passphrase, &shown)?;
        let mut secret = self.signing.to_bytes().to_vec();
        key.seal_in_place_append_tag(
            aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce),
            aws_lc_rs::aead::Aad::from(self.address().0),
            &mut secret,
        )
        .map_err(|_| KeyFileError::Malformed {
            path: shown.clone(),
            reason: "the secret could not be sealed".into(),
        })?;
        let file = KeyFile {
            address: self.address(),
            secret_key: None,
            encrypted: Some(Sealing {
                secret_key: hex::encode(&secret),
                ..sealing
            }),
        };
        write_key_file(path, &file)
    }

    /// Whether the key file at `path` holds its secret encrypted (it needs a passphrase).
    pub fn is_encrypted_file(path: &Path) -> Result<bool, KeyFileError> {
        Ok(read_key_file(path)?.encrypted.is_some())
    }

    /// Reads a key file written by [`Keypair::save`] or [`Keypair::save_encrypted`] and checks
    /// its address matches its secret. An encrypted one takes its passphrase from the file
    /// `GRIDMESH_KEY_PASSPHRASE_FILE` names (its first line), else from
    /// `GRIDMESH_KEY_PASSPHRASE`; without either it is [`KeyFileError::Locked`].
    pub fn load(path: &Path) -> Result<Keypair, KeyFileError> {
        Keypair::load_with(path, passphrase_from_env()?.as_deref())
    }

    /// [`Keypair::load`] with the passphrase of an encrypted key file given.
    pub fn load_with(path: &Path, passphrase: Option<&str>) -> Result<Keypair, KeyFileError> {
        let shown = || path.display().to_string();
        let file = read_key_file(path)?;
        let seed: [u8; 32] = match (&file.secret_key, &file.encrypted) {
            (Some(hex_key), None) => {
                let mut seed = [0u8; 32];
                hex::decode_to_slice(hex_key.trim(), &mut seed).map_err(|_| {
                    KeyFileError::Malformed {
                        path: shown(),
                        reason: "secret_key is not 64 hex characters".into(),
                    }
                })?;
                seed
            }
            (None, Some(sealing)) => {
                let Some(passphrase) = passphrase else {
                    return Err(KeyFileError::Locked { path: shown() });
                };
                sealing.open(passphrase, &file.address, &shown())?
            }
            _ => {
                return Err(KeyFileError::Malformed {
                    path: shown(),
                    reason: "it must hold either secret_key or encrypted".into(),
                })
            }
        };
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

/// The address a key file is for, without opening it (an encrypted one keeps it in clear). Of a
/// plain file, checked against its secret.
pub fn key_file_address(path: &Path) -> Result<Address, KeyFileError> {
    let file = read_key_file(path)?;
    if file.encrypted.is_some() {
        return Ok(file.address);
    }
    Ok(Keypair::load_with(path, None)?.address())
}

/// Argon2id's memory for a key file's passphrase, KiB (64 MiB: RFC 9106's second choice).
pub const KDF_MEMORY_KIB: u32 = 64 * 1024;
/// Argon2id's passes over that memory.
pub const KDF_ITERATIONS: u32 = 3;
/// The most memory a key file may ask of the machine reading it, KiB (1 GiB), and the most
/// passes: a crafted file cannot make loading a key take the machine.
const KDF_MAX_MEMORY_KIB: u32 = 1024 * 1024;
const KDF_MAX_ITERATIONS: u32 = 64;

/// The environment variables a key file's passphrase comes from (a file is better: an
/// environment is readable by the process's inspectors).
pub const PASSPHRASE_FILE_ENV: &str = "GRIDMESH_KEY_PASSPHRASE_FILE";
pub const PASSPHRASE_ENV: &str = "GRIDMESH_KEY_PASSPHRASE";

/// A key file's passphrase from the environment: the first line of the file
/// [`PASSPHRASE_FILE_ENV`] names, else [`PASSPHRASE_ENV`]; `None` when neither is set.
pub fn passphrase_from_env() -> Result<Option<String>, KeyFileError> {
    if let Some(file) = std::env::var_os(PASSPHRASE_FILE_ENV) {
        let text = std::fs::read_to_string(&file).map_err(|source| KeyFileError::Io {
            path: format!("{} ({PASSPHRASE_FILE_ENV})", Path::new(&file).display()),
            source,
        })?;
        return Ok(Some(text.lines().next().unwrap_or("").to_string()));
    }
    Ok(std::env::var(PASSPHRASE_ENV).ok())
}

fn read_key_file(path: &Path) -> Result<KeyFile, KeyFileError> {
    let shown = || path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
        path: shown(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| KeyFileError::Malformed {
        path: shown(),
        reason: e.to_string(),
    })
}

fn write_key_file(path: &Path, file: &KeyFile) -> Result<(), KeyFileError> {
    let json = serde_json::to_string_pretty(file).expect("key file serialises");
    write_private(path, json.as_bytes()).map_err(|source| KeyFileError::Io {
        path: path.display().to_string(),
        source,
    })
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

/// The on-disk form of a key: `{"address": "<64 hex>", "secret_key": "<64 hex>"}`, or with
/// `"encrypted": {...}` ([`Sealing`]) instead of `secret_key`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    address: Address,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encrypted: Option<Sealing>,
}

/// A secret key sealed under a passphrase: the KDF and its parameters, the cipher and its
/// nonce, and the sealed secret with its tag (hex).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sealing {
    kdf: String,
    memory_kib: u32,
    iterations: u32,
    lanes: u32,
    salt: String,
    cipher: String,
    nonce: String,
    secret_key: String,
}

impl Sealing {
    /// The cipher's key from `passphrase`, after checking the parameters are ours and bounded.
    fn key(
        &self,
        passphrase: &str,
        path: &str,
    ) -> Result<aws_lc_rs::aead::LessSafeKey, KeyFileError> {
        let bad = |reason: String| KeyFileError::Malformed {
            path: path.to_string(),
            reason,
        };
        if self.kdf != "argon2id" || self.cipher != "chacha20-poly1305" {
            return Err(bad(format!(
                "unknown encryption {} / {} (this version reads argon2id / chacha20-poly1305)",
                self.kdf, self.cipher
            )));
        }
        if !(8..=KDF_MAX_MEMORY_KIB).contains(&self.memory_kib)
            || !(1..=KDF_MAX_ITERATIONS).contains(&self.iterations)
            || !(1..=16).contains(&self.lanes)
        {
            return Err(bad(format!(
                "argon2id parameters out of bounds: {} KiB (at most {KDF_MAX_MEMORY_KIB}), {} passes (at most {KDF_MAX_ITERATIONS}), {} lanes (at most 16)",
                self.memory_kib, self.iterations, self.lanes
            )));
        }
        let salt = hex::decode(&self.salt)
            .ok()
            .filter(|s| (8..=64).contains(&s.len()))
            .ok_or_else(|| bad("encrypted.salt is not 8 to 64 bytes of hex".into()))?;
        let params = argon2::Params::new(self.memory_kib, self.iterations, self.lanes, Some(32))
            .map_err(|e| bad(format!("argon2id parameters: {e}")))?;
        let mut key = [0u8; 32];
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password_into(passphrase.as_bytes(), &salt, &mut key)
            .map_err(|e| bad(format!("argon2id: {e}")))?;
        let unbound = aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::CHACHA20_POLY1305, &key)
            .expect("a 32-byte key is a ChaCha20-Poly1305 key");
        Ok(aws_lc_rs::aead::LessSafeKey::new(unbound))
    }

    /// The secret seed, opened with `passphrase`.
    fn open(
        &self,
        passphrase: &str,
        address: &Address,
        path: &str,
    ) -> Result<[u8; 32], KeyFileError> {
        let key = self.key(passphrase, path)?;
        let bad = |reason: &str| KeyFileError::Malformed {
            path: path.to_string(),
            reason: reason.to_string(),
        };
        let mut nonce = [0u8; 12];
        hex::decode_to_slice(&self.nonce, &mut nonce)
            .map_err(|_| bad("encrypted.nonce is not 12 bytes of hex"))?;
        let mut sealed =
            hex::decode(&self.secret_key).map_err(|_| bad("encrypted.secret_key is not hex"))?;
        let opened = key
            .open_in_place(
                aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce),
                aws_lc_rs::aead::Aad::from(address.0),
                &mut sealed,
            )
            .map_err(|_| KeyFileError::WrongPassphrase {
                path: path.to_string(),
            })?;
        opened
            .try_into()
            .map_err(|_| bad("encrypted.secret_key does not hold 32 bytes"))
    }
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
    #[error(
        "key file {path} is encrypted: give its passphrase in the file {PASSPHRASE_FILE_ENV} \
         names (or in {PASSPHRASE_ENV}), or type it when asked on a terminal"
    )]
    Locked { path: String },
    #[error("key file {path}: the passphrase is wrong (or the file was altered)")]
    WrongPassphrase { path: String },
}

/// Why a signature was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("sender {0} is not a valid ed25519 public key")]
    BadPublicKey(Address),
    #[error("signature does not verify for sender {0}")]
    Invalid(Address),
}

fn decompress(address: &Address) -> Result<VerifyingKey, SignatureError> {
    let key =
        VerifyingKey::from_bytes(&address.0).map_err(|_| SignatureError::BadPublicKey(*address))?;
    if key.is_weak() {
        return Err(SignatureError::BadPublicKey(*address));
    }
    Ok(key)
}

/// Most decompressed public keys kept (about 200 bytes each).
pub const KEY_CACHE_CAPACITY: usize = 131_072;

/// Decompressing a public key (a square root in the field) costs about a quarter of verifying a
/// signature in a batch, and the same households sign again and again. Valid keys are cached; the
/// cache is emptied when full (bounded memory, no bookkeeping on the hot path).
static KEY_CACHE: std::sync::Mutex<Option<std::collections::HashMap<Address, VerifyingKey>>> =
    std::sync::Mutex::new(None);

fn verifying_keys(addresses: &[Address]) -> Vec<Result<VerifyingKey, SignatureError>> {
    let mut out: Vec<Option<Result<VerifyingKey, SignatureError>>> = {
        let cache = KEY_CACHE.lock().unwrap_or_else(|e| e.into_inner());
        addresses
            .iter()
            .map(|a| cache.as_ref().and_then(|c| c.get(a)).map(|k| Ok(*k)))
            .collect()
    };
    let mut fresh = Vec::new();
    for (slot, a) in out.iter_mut().zip(addresses) {
        if slot.is_none() {
            let k = decompress(a);
            if let Ok(k) = &k {
                fresh.push((*a, *k));
            }
            *slot = Some(k);
        }
    }
    if !fresh.is_empty() {
        let mut cache = KEY_CACHE.lock().unwrap_or_else(|e| e.into_inner());
        let c = cache.get_or_insert_with(Default::default);
        if c.len() + fresh.len() > KEY_CACHE_CAPACITY {
            c.clear();
        }
        c.extend(fresh);
    }
    out.into_iter()
        .map(|k| k.expect("every slot filled"))
        .collect()
}

fn verifying_key(address: &Address) -> Result<VerifyingKey, SignatureError> {
    verifying_keys(std::slice::from_ref(address))
        .pop()
        .expect("one key")
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

/// Where batch verification runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parallelism {
    /// Split over one thread per core (the block path).
    AllCores,
    /// On the calling thread (for callers that run their own pool of verifiers).
    ThisThread,
}

/// Verifies many signatures with ed25519 batch verification.
///
/// Returns the index of the first invalid item (found by strict single verification after a
/// sub-batch failed), or `Ok(())` when all are valid.
pub fn verify_batch(
    items: &[SignedItem<'_>],
    parallelism: Parallelism,
) -> Result<(), (usize, SignatureError)> {
    if items.is_empty() {
        return Ok(());
    }
    let cores = match parallelism {
        // rayon's threads, kept for the process (a block verifies every few seconds).
        Parallelism::AllCores => rayon::current_num_threads(),
        Parallelism::ThisThread => 1,
    };
    let threads = cores
        .min(items.len() / MIN_PER_THREAD) // not worth a thread for a small batch
        .max(1);
    let chunk = items.len().div_ceil(threads);
    if threads == 1 {
        return verify_chunk(items, 0);
    }
    use rayon::prelude::*;
    let results: Vec<Result<(), (usize, SignatureError)>> = items
        .par_chunks(chunk)
        .enumerate()
        .map(|(i, c)| verify_chunk(c, i * chunk))
        .collect();
    // The first invalid item in the items' order.
    results
        .into_iter()
        .find_map(Result::err)
        .map_or(Ok(()), Err)
}

/// Signatures per batch-verification call: beyond a few hundred the per-signature cost stops falling
/// and the working set outgrows the cache.
const SUB_BATCH: usize = 256;

/// The fewest signatures worth a thread of their own. A batch of 48 costs about 15 % more a
/// signature than one of 140 (21.4 against 18.4 µs on the reference machine, one core), so a
/// block of a hundred device readings or more verifies on two cores in a little over half the
/// time it takes on one.
const MIN_PER_THREAD: usize = 48;

fn verify_chunk(items: &[SignedItem<'_>], offset: usize) -> Result<(), (usize, SignatureError)> {
    for (i, sub) in items.chunks(SUB_BATCH).enumerate() {
        verify_sub_batch(sub, offset + i * SUB_BATCH)?;
    }
    Ok(())
}

fn verify_sub_batch(
    items: &[SignedItem<'_>],
    offset: usize,
) -> Result<(), (usize, SignatureError)> {
    let signers: Vec<Address> = items.iter().map(|it| it.signer).collect();
    let mut keys = Vec::with_capacity(items.len());
    for (i, k) in verifying_keys(&signers).into_iter().enumerate() {
        keys.push(k.map_err(|e| (offset + i, e))?);
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
    fn an_encrypted_key_file_opens_only_with_its_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let key = Keypair::from_seed([9; 32]);
        let path = dir.path().join("k.key");
        key.save_encrypted(&path, "correct horse battery staple")
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        // The secret is nowhere in clear; the address is, for `keys show`.
        assert!(!text.contains(&hex::encode(key.secret_seed())), "{text}");
        assert!(text.contains(&key.address().to_string()));
        assert!(Keypair::is_encrypted_file(&path).unwrap());
        let opened = Keypair::load_with(&path, Some("correct horse battery staple")).unwrap();
        assert_eq!(opened.address(), key.address());
        assert_eq!(opened.secret_seed(), key.secret_seed());
        assert!(matches!(
            Keypair::load_with(&path, Some("correct horse battery stapler")),
            Err(KeyFileError::WrongPassphrase { .. })
        ));
        let locked = Keypair::load_with(&path, None).unwrap_err();
        assert!(matches!(locked, KeyFileError::Locked { .. }));
        assert!(locked.to_string().contains(PASSPHRASE_FILE_ENV), "{locked}");
        // Another address on the same sealed secret: the address is bound to it.
        let other = Keypair::from_seed([10; 32]).address().to_string();
        let moved = dir.path().join("moved.key");
        std::fs::write(&moved, text.replace(&key.address().to_string(), &other)).unwrap();
        assert!(matches!(
            Keypair::load_with(&moved, Some("correct horse battery staple")),
            Err(KeyFileError::WrongPassphrase { .. })
        ));
        // A file that asks for 4 GiB of memory is refused before any is taken.
        let greedy = dir.path().join("greedy.key");
        std::fs::write(
            &greedy,
            text.replace(
                &format!("\"memory_kib\": {KDF_MEMORY_KIB}"),
                "\"memory_kib\": 4194304",
            ),
        )
        .unwrap();
        let e = Keypair::load_with(&greedy, Some("x")).unwrap_err();
        assert!(e.to_string().contains("out of bounds"), "{e}");
        // A plain key still loads without a passphrase; a file with both forms does not.
        let plain = dir.path().join("plain.key");
        key.save(&plain).unwrap();
        assert!(!Keypair::is_encrypted_file(&plain).unwrap());
        assert_eq!(
            Keypair::load_with(&plain, None).unwrap().address(),
            key.address()
        );
        let both = dir.path().join("both.key");
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["secret_key"] = hex::encode(key.secret_seed()).into();
        std::fs::write(&both, v.to_string()).unwrap();
        assert!(Keypair::load_with(&both, Some("correct horse battery staple")).is_err());
        // Two encryptions of one key differ (fresh salt and nonce).
        let again = dir.path().join("again.key");
        key.save_encrypted(&again, "correct horse battery staple")
            .unwrap();
        assert_ne!(std::fs::read_to_string(&again).unwrap(), text);
    }

    /// AWS-LC signs the bytes ed25519-dalek does (deterministic ed25519), and they verify.
    #[test]
    fn signatures_are_ed25519_dalek_s_to_the_byte() {
        use ed25519_dalek::Signer;
        let mut seed = [0u8; 32];
        for i in 0..200u32 {
            seed[..4].copy_from_slice(&i.to_le_bytes());
            seed[31] = (i * 7) as u8;
            let k = Keypair::from_seed(seed);
            let message: Vec<u8> = (0..i % 300).map(|b| (b * 31 + i) as u8).collect();
            let ours = k.sign(&message);
            assert_eq!(ours, k.signing.sign(&message).to_bytes(), "key {i}");
            assert!(verify_one(&k.address(), &message, &ours).is_ok());
        }
    }

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
        let keys: Vec<Keypair> = (0..=255u8)
            .chain(0..44)
            .map(|i| Keypair::from_seed([i; 32]))
            .collect();
        let msgs: Vec<Vec<u8>> = (0..300u32).map(|i| i.to_le_bytes().to_vec()).collect();
        let mut items: Vec<SignedItem> = keys
            .iter()
            .zip(&msgs)
            .map(|(k, m)| SignedItem {
                signer: k.address(),
                message: m,
                signature: k.sign(m),
            })
            .collect();
        for p in [Parallelism::AllCores, Parallelism::ThisThread] {
            assert!(verify_batch(&items, p).is_ok());
        }
        items[137].signature[5] ^= 1;
        for p in [Parallelism::AllCores, Parallelism::ThisThread] {
            let (idx, _) = verify_batch(&items, p).unwrap_err();
            assert_eq!(idx, 137);
        }
    }
}
