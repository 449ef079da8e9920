//! The VENs a node's operator registered: who may take an OpenADR token, and which connection's
//! envelope each one may see. Kept in `DATA_DIR/openadr-vens.json`, written by
//! `gridmesh openadr ven add|remove` and read again by the running node when the file changes.
//! Client secrets are kept only as their BLAKE3 hash; the secret is printed once, at `add`.
//!
//! A home's VEN may come with its meter's device key (`--device-key`, a meter registered on the
//! ledger with its own key at the VEN's connection): the node then keeps the key in
//! `DATA_DIR/openadr-device-keys/` and signs the VEN's usage reports as that meter's readings
//! ([`super::readings`]).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The registry's file in a node's data directory.
pub const VENS_FILE: &str = "openadr-vens.json";
/// Most VENs one node serves.
pub const MAX_VENS: usize = 10_000;
/// Longest VEN name.
pub const MAX_NAME_CHARS: usize = 128;
/// Where the device keys of VENs are kept, in the data directory.
pub const DEVICE_KEYS_DIR: &str = "openadr-device-keys";

#[derive(Debug, thiserror::Error)]
pub enum VenError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0} is not a VEN registry: {1}")]
    Corrupt(PathBuf, serde_json::Error),
    #[error("a VEN named {0:?} is already registered (remove it first)")]
    Exists(String),
    #[error("no VEN named or with the id {0:?}")]
    Unknown(String),
    #[error("a VEN name is 1 to {MAX_NAME_CHARS} characters of letters, digits, '-', '_', '.' or ' ': {0:?}")]
    BadName(String),
    #[error("a connection is a market area such as street-1/home-4 (1 to 128 characters, no spaces): {0:?}")]
    BadConnection(String),
    #[error("the registry holds {MAX_VENS} VENs already")]
    Full,
    #[error("a VEN's device is its connection's meter: give --connection with --device-key")]
    DeviceWithoutConnection,
    #[error("the device key {0}: {1}")]
    DeviceKey(PathBuf, String),
}

/// One registered VEN.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ven {
    /// Its object id in the VTN (`ven-` and 16 hex digits).
    pub id: String,
    pub name: String,
    /// The connection (market area) whose envelope it may see, if any.
    pub connection: Option<String>,
    pub client_id: String,
    /// BLAKE3 of the client secret, hex.
    pub secret_blake3: String,
    pub created_ms: u64,
    /// The address of its meter's device key, kept by the node: its usage reports become that
    /// meter's readings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

impl Ven {
    /// Whether `secret` is this VEN's client secret (compared as hashes, in constant time).
    pub fn secret_matches(&self, secret: &str) -> bool {
        let Ok(want) = hex::decode(&self.secret_blake3) else {
            return false;
        };
        let Ok(want) = <[u8; 32]>::try_from(want.as_slice()) else {
            return false;
        };
        blake3::Hash::from(want) == blake3::hash(secret.as_bytes())
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    vens: Vec<Ven>,
}

/// A new VEN's credentials, shown once.
#[derive(Clone, Debug, Serialize)]
pub struct Credentials {
    pub id: String,
    pub name: String,
    pub connection: Option<String>,
    pub client_id: String,
    pub client_secret: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The registry file of data directory `dir`.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(VENS_FILE)
}

/// The VENs in `file` (none if it does not exist).
pub fn load(file: &Path) -> Result<Vec<Ven>, VenError> {
    match std::fs::read_to_string(file) {
        Ok(text) => serde_json::from_str::<File>(&text)
            .map(|f| f.vens)
            .map_err(|e| VenError::Corrupt(file.to_path_buf(), e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(VenError::Io(file.to_path_buf(), e)),
    }
}

fn save(file: &Path, vens: Vec<Ven>) -> Result<(), VenError> {
    let io = |e| VenError::Io(file.to_path_buf(), e);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = file.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(&File { vens }).expect("a registry serialises");
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, file).map_err(io)
}

fn check_name(name: &str) -> Result<(), VenError> {
    let ok = !name.trim().is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '));
    if ok {
        Ok(())
    } else {
        Err(VenError::BadName(name.to_string()))
    }
}

/// The key file of `ven`'s device, beside the registry `file`.
pub fn device_key_path(file: &Path, ven_id: &str) -> PathBuf {
    file.parent()
        .unwrap_or(Path::new("."))
        .join(DEVICE_KEYS_DIR)
        .join(format!("{ven_id}.key"))
}

/// Registers a VEN named `name` (for `connection`'s envelope, if given, and with that
/// connection's meter `device`, if given) in `file`, and returns its credentials: the only time
/// its secret is known.
pub fn add(
    file: &Path,
    name: &str,
    connection: Option<&str>,
    device: Option<&gridmesh_ledger::Keypair>,
) -> Result<Credentials, VenError> {
    check_name(name)?;
    if let Some(c) = connection {
        if c.is_empty() || c.len() > 128 || c.chars().any(char::is_whitespace) {
            return Err(VenError::BadConnection(c.to_string()));
        }
    }
    if device.is_some() && connection.is_none() {
        return Err(VenError::DeviceWithoutConnection);
    }
    let mut vens = load(file)?;
    if vens.iter().any(|v| v.name == name) {
        return Err(VenError::Exists(name.to_string()));
    }
    if vens.len() >= MAX_VENS {
        return Err(VenError::Full);
    }
    let id = format!("ven-{}", hex::encode(rand::random::<[u8; 8]>()));
    let client_id = format!("gm-{}", hex::encode(rand::random::<[u8; 12]>()));
    let client_secret = hex::encode(rand::random::<[u8; 32]>());
    if let Some(key) = device {
        let path = device_key_path(file, &id);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| VenError::Io(dir.to_path_buf(), e))?;
        }
        key.save(&path)
            .map_err(|e| VenError::DeviceKey(path.clone(), e.to_string()))?;
    }
    vens.push(Ven {
        id: id.clone(),
        name: name.to_string(),
        connection: connection.map(str::to_string),
        client_id: client_id.clone(),
        secret_blake3: blake3::hash(client_secret.as_bytes()).to_hex().to_string(),
        created_ms: now_ms(),
        device: device.map(|k| k.address().to_string()),
    });
    save(file, vens)?;
    Ok(Credentials {
        id,
        name: name.to_string(),
        connection: connection.map(str::to_string),
        client_id,
        client_secret,
        device: device.map(|k| k.address().to_string()),
    })
}

/// Removes the VEN named or with the id `which`; its tokens stop working at once.
pub fn remove(file: &Path, which: &str) -> Result<Ven, VenError> {
    let mut vens = load(file)?;
    let at = vens
        .iter()
        .position(|v| v.name == which || v.id == which)
        .ok_or_else(|| VenError::Unknown(which.to_string()))?;
    let gone = vens.remove(at);
    save(file, vens)?;
    if gone.device.is_some() {
        let key = device_key_path(file, &gone.id);
        std::fs::remove_file(&key).map_err(|e| VenError::Io(key, e))?;
    }
    Ok(gone)
}

/// What identifies a version of the file: its modification time and length.
type Stamp = Option<(SystemTime, u64)>;

/// The registry as the running node reads it: loaded again whenever the file changes.
pub struct Registry {
    file: PathBuf,
    /// The file's (modification time, length) when last read, and its VENs.
    pub(super) cached: std::sync::Mutex<(Stamp, Vec<Ven>)>,
}

impl Registry {
    pub fn new(file: PathBuf) -> Registry {
        Registry {
            file,
            cached: std::sync::Mutex::new((None, Vec::new())),
        }
    }

    /// `f` of the VENs now, read again first if the file changed (a file that cannot be read
    /// keeps the last good list, and says why).
    fn with_vens<T>(&self, f: impl FnOnce(&[Ven]) -> T) -> T {
        let modified = std::fs::metadata(&self.file)
            .and_then(|m| Ok((m.modified()?, m.len())))
            .ok();
        let mut c = self.cached.lock().expect("registry lock");
        if modified != c.0 {
            match load(&self.file) {
                Ok(v) => *c = (modified, v),
                Err(e) => tracing::warn!("OpenADR VENs not reloaded: {e}"),
            }
        }
        f(&c.1)
    }

    /// The registry's file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The VENs now.
    pub fn vens(&self) -> Vec<Ven> {
        self.with_vens(<[Ven]>::to_vec)
    }

    /// The VEN with client id `client_id`, if its `secret` is right.
    pub fn authenticate(&self, client_id: &str, secret: &str) -> Option<Ven> {
        self.with_vens(|v| {
            v.iter()
                .find(|v| v.client_id == client_id && v.secret_matches(secret))
                .cloned()
        })
    }

    /// The VEN with object id `id`, if it is still registered.
    pub fn by_id(&self, id: &str) -> Option<Ven> {
        self.with_vens(|v| v.iter().find(|v| v.id == id).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ven_is_added_authenticated_by_its_secret_only_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let file = path_in(dir.path());
        let reg = Registry::new(file.clone());
        assert!(reg.vens().is_empty());
        let c = add(&file, "home 4", Some("street-1/home-4"), None).unwrap();
        assert!(c.id.starts_with("ven-") && c.client_secret.len() == 64);
        let stored = std::fs::read_to_string(&file).unwrap();
        assert!(!stored.contains(&c.client_secret), "the secret is not kept");
        assert_eq!(
            reg.authenticate(&c.client_id, &c.client_secret)
                .unwrap()
                .connection
                .as_deref(),
            Some("street-1/home-4")
        );
        assert!(reg.authenticate(&c.client_id, "wrong").is_none());
        assert!(reg.authenticate("gm-nobody", &c.client_secret).is_none());
        assert!(matches!(
            add(&file, "home 4", None, None),
            Err(VenError::Exists(_))
        ));
        assert!(matches!(
            add(&file, "", None, None),
            Err(VenError::BadName(_))
        ));
        assert!(matches!(
            add(&file, "x", Some("street 1"), None),
            Err(VenError::BadConnection(_))
        ));
        let other = add(&file, "aggregator", None, None).unwrap();
        // A meter's key: kept for the node, removed with its VEN; never without a connection.
        let meter = gridmesh_ledger::Keypair::generate();
        assert!(matches!(
            add(&file, "meter only", None, Some(&meter)),
            Err(VenError::DeviceWithoutConnection)
        ));
        let metered = add(&file, "home 5", Some("street-1/home-5"), Some(&meter)).unwrap();
        let key_file = device_key_path(&file, &metered.id);
        assert_eq!(
            gridmesh_ledger::Keypair::load(&key_file).unwrap().address(),
            meter.address()
        );
        assert_eq!(metered.device, Some(meter.address().to_string()));
        remove(&file, "home 5").unwrap();
        assert!(!key_file.exists());
        assert_eq!(remove(&file, "home 4").unwrap().id, c.id);
        // Seen by the running node at once (a second write may share the first's mtime on
        // coarse clocks: the test forces a reload).
        reg.cached.lock().unwrap().0 = None;
        assert!(reg.authenticate(&c.client_id, &c.client_secret).is_none());
        assert!(reg.by_id(&other.id).is_some());
        assert!(matches!(remove(&file, "home 4"), Err(VenError::Unknown(_))));
        std::fs::write(&file, "{not json").unwrap();
        assert!(matches!(load(&file), Err(VenError::Corrupt(..))));
    }
}
