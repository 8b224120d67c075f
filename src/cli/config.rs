//! Layered configuration (figment): built-in defaults < TOML file < `MLCP_*` environment <
//! command-line flags, resolved into the contract structs [`ServerOptions`] and
//! [`AgentOptions`] and the client settings [`ClientConfig`].
//!
//! The file has one table per role (`[server]`, `[agent]`, `[client]`); the environment uses
//! one prefix per role (`MLCP_SERVER_`, `MLCP_AGENT_`, `MLCP_CLIENT_`) followed by the key in
//! upper case, e.g. `MLCP_SERVER_NODE_ID=2`. Lists (`peers`, `servers`, `labels`) may be
//! written as one comma-separated string everywhere, or as TOML arrays/tables in the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::fmt;

use figment::error::{Actual, Kind};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Metadata, Provider};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::args::{AgentArgs, ClientArgs, OutputFormat, ServerArgs};
use crate::agent::AgentOptions;
use crate::controller::ServerOptions;

/// Config file read when `--config` is not given, if it exists in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "mlcp.toml";
/// gRPC address of a controller when nothing else is configured.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:50051";
/// HTTP address of a controller when nothing else is configured.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// Longest long-poll a server grants (docs/architecture.md#api), in milliseconds.
pub const POLL_TIMEOUT_MS_MAX: u64 = 30_000;

/// Why the configuration could not be resolved; each variant names the key and the value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--config FILE` named a file that does not exist.
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    /// The file or environment had a value of the wrong type, or the file was not TOML. The
    /// message names the key as the user wrote it: `server.node_id in mlcp.toml`, or
    /// `MLCP_SERVER_NODE_ID (server.node_id)` for the environment.
    #[error("configuration: {0}")]
    Invalid(String),
    /// An address key did not parse as `HOST:PORT` with a numeric IP.
    #[error("{key}: {value:?} is not an IP:PORT socket address")]
    BadAddress {
        /// Config key, e.g. `server.listen`.
        key: &'static str,
        /// The value given.
        value: String,
    },
    /// One entry of `server.peers` was not `ID=HOST:PORT` with a positive integer id and a
    /// numeric port.
    #[error("server.peers: entry {entry:?} is not ID=HOST:PORT: {why}")]
    BadPeer {
        /// The offending entry.
        entry: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// An entry of a controller list (`--server`, `--servers`, `client.servers`,
    /// `agent.servers`) was not `HOST:PORT` with a port in 1..=65535.
    #[error("{origin}: entry {entry:?} is not HOST:PORT with a port in 1..=65535")]
    BadServer {
        /// Where the list came from: the flag, the variable or the key in the file.
        origin: String,
        /// The offending entry.
        entry: String,
    },
    /// `server.peers` had an empty entry (`a,,b` or a trailing comma).
    #[error("server.peers: empty entry at position {0} (a doubled or trailing comma?)")]
    EmptyPeer(usize),
    /// Two entries of `server.peers` used the same id.
    #[error("server.peers: id {0} appears twice")]
    DuplicatePeer(u64),
    /// Two entries of `server.peers` used the same address.
    #[error("server.peers: address {address:?} of id {id} is already the address of id {first}")]
    DuplicatePeerAddress {
        /// The address as written in the second entry.
        address: String,
        /// The id of the second entry.
        id: u64,
        /// The id that had the address first.
        first: u64,
    },
    /// `server.peers` lists other members but not this node.
    #[error("server.peers does not list this node's id {0}")]
    SelfNotInPeers(u64),
    /// A key that must be positive was 0.
    #[error("{0} must be greater than 0")]
    Zero(&'static str),
    /// A label was not `KEY=VALUE` with a non-empty key.
    #[error("label {0:?} is not KEY=VALUE")]
    BadLabel(String),
    /// A list that must not be empty was empty.
    #[error("{0} is empty")]
    Empty(&'static str),
    /// The config file has a top-level key or table other than `[server]`, `[agent]` and
    /// `[client]` (a typo such as `[serverr]` would otherwise be ignored).
    #[error("{file}: unknown {what} {name:?}; the tables are [server], [agent] and [client]")]
    UnknownTable {
        /// The config file.
        file: String,
        /// "table" or "top-level key".
        what: &'static str,
        /// The name as written.
        name: String,
    },
    /// A table of the config file has a key that no setting reads (a typo such as
    /// `nodeid` would otherwise be ignored).
    #[error("{file}: unknown key {key:?} in [{table}]; valid keys: {valid}")]
    UnknownKey {
        /// The config file.
        file: String,
        /// The table, e.g. `server`.
        table: &'static str,
        /// The key as written.
        key: String,
        /// The keys the table has, comma-separated.
        valid: String,
    },
    /// `server`, `agent` or `client` in the config file is a value, not a table.
    #[error("{file}: {table} must be a table ([{table}]), not a single value")]
    NotATable {
        /// The config file.
        file: String,
        /// The table's name.
        table: &'static str,
    },
    /// The long-poll wait exceeded the server's cap.
    #[error("agent.poll_timeout_ms {0} is over the maximum of {max}", max = POLL_TIMEOUT_MS_MAX)]
    PollTooLong(u64),
}

/// A list written either as `"a,b,c"` or as a TOML array. Deserialized by hand (not as an
/// untagged enum) so that a value of the wrong shape says what was expected, not "data did
/// not match any variant of untagged enum ListValue".
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
enum ListValue {
    Text(String),
    Items(Vec<String>),
}

impl<'de> Deserialize<'de> for ListValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Shape;
        impl<'de> Visitor<'de> for Shape {
            type Value = ListValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of HOST:PORT strings or a comma-separated string")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ListValue, E> {
                Ok(ListValue::Text(text.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ListValue, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(ListValue::Items(items))
            }
        }
        deserializer.deserialize_any(Shape)
    }
}

impl ListValue {
    fn items(&self) -> Vec<String> {
        match self {
            ListValue::Text(text) => split_list(text),
            ListValue::Items(items) => items.iter().map(|s| s.trim().to_owned()).collect(),
        }
    }
}

/// A map written either as `"k=v,k2=v2"` or as a TOML table (deserialized by hand, as
/// [`ListValue`]).
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
enum MapValue {
    Text(String),
    Table(BTreeMap<String, String>),
}

impl<'de> Deserialize<'de> for MapValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Shape;
        impl<'de> Visitor<'de> for Shape {
            type Value = MapValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of KEY = \"VALUE\" or a comma-separated KEY=VALUE string")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<MapValue, E> {
                Ok(MapValue::Text(text.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MapValue, A::Error> {
                let mut table = BTreeMap::new();
                while let Some((key, value)) = map.next_entry::<String, String>()? {
                    table.insert(key, value);
                }
                Ok(MapValue::Table(table))
            }
        }
        deserializer.deserialize_any(Shape)
    }
}

impl MapValue {
    fn entries(&self) -> Vec<String> {
        match self {
            MapValue::Text(text) => split_list(text),
            MapValue::Table(table) => table.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        }
    }

    /// Like [`MapValue::entries`] but keeps empty entries (`"a,,b"` has three), for lists
    /// where one is a mistake to report rather than skip. A blank string has none.
    fn entries_with_empty(&self) -> Vec<String> {
        match self {
            MapValue::Text(text) if text.trim().is_empty() => Vec::new(),
            MapValue::Text(text) => text.split(',').map(|s| s.trim().to_owned()).collect(),
            MapValue::Table(_) => self.entries(),
        }
    }
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A string that the environment may have typed as a number (`MLCP_AGENT_NODE_ID=7`) or a
/// boolean (deserialized by hand, as [`ListValue`]).
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
enum Lenient {
    Text(String),
    Int(i64),
    Float(f64),
}

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Shape;
        impl Visitor<'_> for Shape {
            type Value = Lenient;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Lenient, E> {
                Ok(Lenient::Text(text.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Lenient, E> {
                Ok(Lenient::Int(n))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Lenient, E> {
                Ok(i64::try_from(n).map_or_else(|_| Lenient::Text(n.to_string()), Lenient::Int))
            }
            fn visit_f64<E: de::Error>(self, x: f64) -> Result<Lenient, E> {
                Ok(Lenient::Float(x))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Lenient, E> {
                Ok(Lenient::Text(b.to_string()))
            }
        }
        deserializer.deserialize_any(Shape)
    }
}

impl Lenient {
    fn into_string(self) -> String {
        match self {
            Lenient::Text(s) => s,
            Lenient::Int(i) => i.to_string(),
            Lenient::Float(f) => f.to_string(),
        }
    }
}

/// The keys of the `[server]` table: the fields of [`ServerFile`].
const SERVER_KEYS: &[&str] = &[
    "node_id",
    "listen",
    "peers",
    "data_dir",
    "http_listen",
    "cluster_name",
    "tick_ms",
    "node_stale_after_ms",
    "snapshot_every_entries",
];
/// The keys of the `[agent]` table: the fields of [`AgentFile`].
const AGENT_KEYS: &[&str] = &[
    "node_id",
    "servers",
    "address",
    "cloud_provider",
    "region",
    "slots",
    "labels",
    "poll_timeout_ms",
    "shutdown_grace_ms",
];
/// The keys of the `[client]` table: the fields of [`ClientFile`].
const CLIENT_KEYS: &[&str] = &["servers", "output", "timeout_ms"];
/// The tables of a config file and their keys.
const TABLES: [(&str, &[&str]); 3] = [
    ("server", SERVER_KEYS),
    ("agent", AGENT_KEYS),
    ("client", CLIENT_KEYS),
];

/// The `[server]` table.
#[derive(Debug, Deserialize, Serialize)]
struct ServerFile {
    node_id: u64,
    listen: Lenient,
    peers: Option<MapValue>,
    data_dir: PathBuf,
    http_listen: Lenient,
    cluster_name: Lenient,
    tick_ms: u64,
    node_stale_after_ms: u64,
    snapshot_every_entries: u64,
}

impl Default for ServerFile {
    /// The controller's embedded defaults ([`ServerOptions::default`]).
    fn default() -> Self {
        let d = ServerOptions::default();
        ServerFile {
            node_id: d.node_id,
            listen: Lenient::Text(d.listen.to_string()),
            peers: None,
            data_dir: d.data_dir,
            http_listen: Lenient::Text(
                d.http_listen
                    .map_or_else(|| "off".into(), |a| a.to_string()),
            ),
            cluster_name: Lenient::Text(d.cluster_name),
            tick_ms: duration_ms(d.tick),
            node_stale_after_ms: duration_ms(d.node_stale_after),
            snapshot_every_entries: d.snapshot_every_entries,
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The `[agent]` table.
#[derive(Debug, Deserialize, Serialize)]
struct AgentFile {
    node_id: Option<Lenient>,
    servers: ListValue,
    address: Option<Lenient>,
    cloud_provider: Lenient,
    region: Lenient,
    slots: u32,
    labels: Option<MapValue>,
    poll_timeout_ms: u64,
    shutdown_grace_ms: u64,
}

impl Default for AgentFile {
    /// The agent's defaults ([`AgentOptions::default`]) except the node id, which defaults
    /// to the host name.
    fn default() -> Self {
        let d = AgentOptions::default();
        AgentFile {
            node_id: None,
            servers: ListValue::Items(d.servers),
            address: None,
            cloud_provider: Lenient::Text(d.cloud_provider),
            region: Lenient::Text(d.region),
            slots: d.slots,
            labels: None,
            poll_timeout_ms: duration_ms(d.poll_timeout),
            shutdown_grace_ms: duration_ms(d.shutdown_grace),
        }
    }
}

/// The `[client]` table.
#[derive(Debug, Deserialize, Serialize)]
struct ClientFile {
    servers: ListValue,
    output: OutputFormat,
    timeout_ms: u64,
}

impl Default for ClientFile {
    fn default() -> Self {
        ClientFile {
            servers: ListValue::Text(DEFAULT_GRPC_ADDR.into()),
            output: OutputFormat::Table,
            timeout_ms: 10_000,
        }
    }
}

/// Resolved settings of a client command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Controller addresses as given (`host:port` or `http://host:port`), in the order tried.
    pub servers: Vec<String>,
    /// How to print answers.
    pub output: OutputFormat,
    /// Per-request timeout (also the connect timeout per address).
    pub timeout: Duration,
}

/// The config file read: `explicit` (from `--config`) must exist; otherwise
/// [`DEFAULT_CONFIG_FILE`] when present in the working directory.
fn config_path(explicit: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
    match explicit {
        Some(path) if !path.is_file() => Err(ConfigError::MissingFile(path.to_owned())),
        Some(path) => Ok(Some(path.to_owned())),
        None => Ok(Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.is_file())),
    }
}

/// The config file layer (see [`config_path`]).
fn file_layer(explicit: Option<&Path>) -> Result<Figment, ConfigError> {
    Ok(match config_path(explicit)? {
        Some(path) => {
            check_keys(&path)?;
            Figment::new().merge(Toml::file_exact(path))
        }
        None => Figment::new(),
    })
}

/// Refuses a config file with a table or key that nothing reads: a misspelt key would
/// otherwise leave its setting at the default without a word. The whole file is checked,
/// whichever role reads it. Tables whose keys are free (`[server.peers]`, `[agent.labels]`)
/// are not looked into. A file that is not TOML is left to the extraction to report.
fn check_keys(path: &Path) -> Result<(), ConfigError> {
    let Ok(data) = Toml::file_exact(path).data() else {
        return Ok(());
    };
    let file = path.display().to_string();
    for (name, value) in data.values().flat_map(|dict| dict.iter()) {
        let Some(&(table, keys)) = TABLES.iter().find(|(table, _)| table == name) else {
            return Err(ConfigError::UnknownTable {
                file,
                what: if value.as_dict().is_some() {
                    "table"
                } else {
                    "top-level key"
                },
                name: name.clone(),
            });
        };
        let Some(dict) = value.as_dict() else {
            return Err(ConfigError::NotATable { file, table });
        };
        if let Some(key) = dict.keys().find(|key| !keys.contains(&key.as_str())) {
            return Err(ConfigError::UnknownKey {
                file,
                table,
                key: key.clone(),
                valid: keys.join(", "),
            });
        }
    }
    Ok(())
}

/// Defaults < file `[section]` < `MLCP_<SECTION>_*` < flags, extracted as `T`.
fn layered<T: for<'de> Deserialize<'de>>(
    section: &'static str,
    defaults: impl Serialize,
    file: Option<&Path>,
    flags: impl Serialize,
) -> Result<T, ConfigError> {
    let prefix = format!("MLCP_{}_", section.to_ascii_uppercase());
    let env = Env::prefixed(&prefix).map(move |key| format!("{section}.{key}").into());
    let env_metadata = env.metadata();
    let figment = Figment::new()
        .merge(Serialized::default(section, defaults))
        .merge(file_layer(file)?)
        .merge(env)
        .merge(Serialized::default(section, flags));
    // Extracting the focused table (not `extract_inner`, which appends the section to the
    // end of an error's path) leaves each error's path relative to the section.
    figment
        .focus(section)
        .extract::<T>()
        .map_err(|e| ConfigError::Invalid(describe(e, section, &prefix, &env_metadata)))
}

/// A figment error with each key named as the user wrote it. figment's own message names
/// the key by its profile and path (`"default.node_id.server"` for a file value,
/// `"NODE_ID.SERVER"` for the environment); this says `server.node_id in mlcp.toml` or
/// `MLCP_SERVER_NODE_ID (server.node_id)`.
fn describe(error: figment::Error, section: &str, env_prefix: &str, env: &Metadata) -> String {
    error
        .into_iter()
        .map(|e| {
            let source = e.metadata.as_ref().and_then(|md| md.source.as_ref());
            let from_env = e.metadata.as_ref() == Some(env);
            let key = (!e.path.is_empty()).then(|| format!("{section}.{}", e.path.join(".")));
            let place = match (key, from_env, source) {
                (Some(key), true, _) => {
                    format!(
                        "{env_prefix}{} ({key})",
                        e.path.join("_").to_ascii_uppercase()
                    )
                }
                (Some(key), false, Some(source)) => format!("{key} in {source}"),
                (Some(key), false, None) => key,
                (None, _, Some(source)) => source.to_string(),
                (None, _, None) => section.to_owned(),
            };
            format!("{place}: {}", describe_kind(&e.kind))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What went wrong with one value, in the words of the file rather than of serde:
/// "expected a non-negative whole number, got string \"two\"", "unknown value \"xml\";
/// expected one of: table, json" (figment's own says "unknown variant: found `xml`, expected
/// `one of `table`, `json``").
fn describe_kind(kind: &Kind) -> String {
    match kind {
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => format!(
            "expected {}, got {}",
            describe_expected(expected),
            describe_actual(actual)
        ),
        Kind::UnknownVariant(found, expected) => {
            format!(
                "unknown value {found:?}; expected one of: {}",
                expected.join(", ")
            )
        }
        other => other.to_string(),
    }
}

/// serde's name of an expected type, for people ("u32" is "a non-negative whole number").
fn describe_expected(expected: &str) -> &str {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a non-negative whole number",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" | "bool" => "true or false",
        other => other,
    }
}

/// The value that was found, as TOML would call it.
fn describe_actual(actual: &Actual) -> String {
    match actual {
        Actual::Bool(b) => format!("boolean {b}"),
        Actual::Unsigned(n) => format!("integer {n}"),
        Actual::Signed(n) => format!("integer {n}"),
        Actual::Float(x) => format!("number {x}"),
        Actual::Char(c) => format!("string {:?}", c.to_string()),
        Actual::Str(text) => format!("string {text:?}"),
        Actual::Seq => "a list".to_owned(),
        Actual::Map => "a table".to_owned(),
        other => other.to_string(),
    }
}

fn socket_addr(key: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.trim().parse().map_err(|_| ConfigError::BadAddress {
        key,
        value: value.to_owned(),
    })
}

/// Parses `ID=HOST:PORT` entries into the voter map of [`ServerOptions::peers`]. Refuses an
/// empty entry, an id that is not a positive integer, an address without a numeric port in
/// 1..=65535, and a repeated id or address: each is a typo that would otherwise surface only
/// later, as a member that cannot be reached or a quorum counted wrong.
pub fn parse_peers(entries: &[String]) -> Result<BTreeMap<u64, String>, ConfigError> {
    let mut peers = BTreeMap::new();
    let mut ids_by_address: BTreeMap<String, u64> = BTreeMap::new();
    for (position, entry) in entries.iter().enumerate() {
        if entry.trim().is_empty() {
            return Err(ConfigError::EmptyPeer(position + 1));
        }
        let bad = |why| ConfigError::BadPeer {
            entry: entry.clone(),
            why,
        };
        let (id, addr) = entry
            .split_once('=')
            .ok_or_else(|| bad("no '=' between ID and address"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| bad("the ID is not a positive integer"))?;
        if id == 0 {
            return Err(bad("the ID must be positive (0 means none)"));
        }
        let addr = addr.trim();
        let authority = peer_authority(addr)
            .ok_or_else(|| bad("the address is not HOST:PORT with a port in 1..=65535"))?;
        if peers.insert(id, addr.to_owned()).is_some() {
            return Err(ConfigError::DuplicatePeer(id));
        }
        if let Some(first) = ids_by_address.insert(authority, id) {
            return Err(ConfigError::DuplicatePeerAddress {
                address: addr.to_owned(),
                id,
                first,
            });
        }
    }
    Ok(peers)
}

pub use crate::client::peer_authority;

/// Refuses a controller list with an entry that is not `HOST:PORT` (optionally after
/// `http://` or `https://`) with a port in 1..=65535, naming `origin` and the entry:
/// `--server 127.0.0.1:99999` would otherwise surface as "connection refused".
pub fn check_servers(
    servers: &[String],
    origin: impl FnOnce() -> String,
) -> Result<(), ConfigError> {
    match servers.iter().find(|s| peer_authority(s).is_none()) {
        Some(entry) => Err(ConfigError::BadServer {
            origin: origin(),
            entry: entry.clone(),
        }),
        None => Ok(()),
    }
}

/// Where the value of `section.key` came from, as the user would look for it: `flag` when
/// it was given, else its `MLCP_*` variable when set, else the key in the config file.
fn origin(flag: &str, flag_given: bool, section: &str, key: &str, file: Option<&Path>) -> String {
    if flag_given {
        return flag.to_owned();
    }
    let var = format!(
        "MLCP_{}_{}",
        section.to_ascii_uppercase(),
        key.to_ascii_uppercase()
    );
    if std::env::var_os(&var).is_some() {
        return format!("{var} ({section}.{key})");
    }
    match config_path(file) {
        Ok(Some(path)) => format!("{section}.{key} in {}", path.display()),
        _ => format!("{section}.{key}"),
    }
}

/// Parses `KEY=VALUE` labels; later entries win.
pub fn parse_labels(entries: &[String]) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut labels = BTreeMap::new();
    for entry in entries {
        match entry.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                labels.insert(k.trim().to_owned(), v.trim().to_owned());
            }
            _ => return Err(ConfigError::BadLabel(entry.clone())),
        }
    }
    Ok(labels)
}

/// Resolves `mlcp server`'s options.
pub fn server_options(
    file: Option<&Path>,
    flags: &ServerArgs,
) -> Result<ServerOptions, ConfigError> {
    let raw: ServerFile = layered("server", ServerFile::default(), file, flags)?;
    if raw.node_id == 0 {
        return Err(ConfigError::Zero("server.node_id"));
    }
    if raw.tick_ms == 0 {
        return Err(ConfigError::Zero("server.tick_ms"));
    }
    if raw.snapshot_every_entries == 0 {
        return Err(ConfigError::Zero("server.snapshot_every_entries"));
    }
    let listen = socket_addr("server.listen", &raw.listen.into_string())?;
    let peers = parse_peers(
        &raw.peers
            .map(|p| p.entries_with_empty())
            .unwrap_or_default(),
    )?;
    if !peers.is_empty() && !peers.contains_key(&raw.node_id) {
        return Err(ConfigError::SelfNotInPeers(raw.node_id));
    }
    let http = raw.http_listen.into_string();
    let http_listen = match http.trim() {
        "" | "off" | "none" => None,
        other => Some(socket_addr("server.http_listen", other)?),
    };
    Ok(ServerOptions {
        node_id: raw.node_id,
        listen,
        peers,
        data_dir: raw.data_dir,
        http_listen,
        cluster_name: raw.cluster_name.into_string(),
        tick: Duration::from_millis(raw.tick_ms),
        node_stale_after: Duration::from_millis(raw.node_stale_after_ms),
        snapshot_every_entries: raw.snapshot_every_entries,
    })
}

/// Resolves `mlcp agent`'s options; `--label` flags are added to the configured labels.
pub fn agent_options(file: Option<&Path>, flags: &AgentArgs) -> Result<AgentOptions, ConfigError> {
    let raw: AgentFile = layered("agent", AgentFile::default(), file, flags)?;
    let node_id = match raw.node_id.map(Lenient::into_string) {
        Some(id) if !id.trim().is_empty() => id.trim().to_owned(),
        _ => sysinfo::System::host_name().unwrap_or_else(|| "agent".into()),
    };
    let servers = raw.servers.items();
    if servers.is_empty() {
        return Err(ConfigError::Empty("agent.servers"));
    }
    check_servers(&servers, || {
        origin(
            "--servers",
            flags.servers.is_some(),
            "agent",
            "servers",
            file,
        )
    })?;
    if raw.slots == 0 {
        return Err(ConfigError::Zero("agent.slots"));
    }
    if raw.poll_timeout_ms > POLL_TIMEOUT_MS_MAX {
        return Err(ConfigError::PollTooLong(raw.poll_timeout_ms));
    }
    let mut labels = parse_labels(&raw.labels.map(|l| l.entries()).unwrap_or_default())?;
    labels.extend(parse_labels(&flags.labels)?);
    Ok(AgentOptions {
        address: raw
            .address
            .map(Lenient::into_string)
            .unwrap_or_else(|| node_id.clone()),
        node_id,
        servers,
        cloud_provider: raw.cloud_provider.into_string(),
        region: raw.region.into_string(),
        slots: raw.slots,
        labels,
        poll_timeout: Duration::from_millis(raw.poll_timeout_ms),
        shutdown_grace: Duration::from_millis(raw.shutdown_grace_ms),
    })
}

/// Resolves a client command's settings.
pub fn client_config(file: Option<&Path>, flags: &ClientArgs) -> Result<ClientConfig, ConfigError> {
    let raw: ClientFile = layered("client", ClientFile::default(), file, flags)?;
    let servers = raw.servers.items();
    if servers.is_empty() {
        return Err(ConfigError::Empty("client.servers"));
    }
    check_servers(&servers, || {
        origin(
            "--server",
            flags.servers.is_some(),
            "client",
            "servers",
            file,
        )
    })?;
    if raw.timeout_ms == 0 {
        return Err(ConfigError::Zero("client.timeout_ms"));
    }
    Ok(ClientConfig {
        servers,
        output: raw.output,
        timeout: Duration::from_millis(raw.timeout_ms),
    })
}

#[cfg(test)]
// `Jail::expect_with` fixes the closure's error type to figment's (large) error.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    fn jail_err(e: ConfigError) -> figment::Error {
        figment::Error::from(e.to_string())
    }

    #[test]
    fn no_flags_is_a_single_member_cluster_on_the_default_port() {
        Jail::expect_with(|_jail| {
            let opts = server_options(None, &ServerArgs::default()).map_err(jail_err)?;
            assert_eq!(opts.node_id, 1);
            assert_eq!(opts.listen, DEFAULT_GRPC_ADDR.parse().unwrap());
            assert!(opts.peers.is_empty());
            assert_eq!(opts.data_dir, PathBuf::from("./mlcp-data"));
            assert_eq!(opts.http_listen, Some(DEFAULT_HTTP_ADDR.parse().unwrap()));
            Ok(())
        });
    }

    #[test]
    fn flags_beat_environment_which_beats_the_file() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "mlcp.toml",
                r#"
                [server]
                node_id = 3
                listen = "127.0.0.1:7003"
                peers = "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003"
                cluster_name = "from-file"
                [agent.labels]
                gpu = "a100"
                "#,
            )?;
            jail.set_env("MLCP_SERVER_CLUSTER_NAME", "from-env");
            jail.set_env("MLCP_SERVER_LISTEN", "127.0.0.1:7300");
            let flags = ServerArgs {
                listen: Some("127.0.0.1:9999".into()),
                ..ServerArgs::default()
            };
            let opts = server_options(None, &flags).map_err(jail_err)?;
            assert_eq!(opts.node_id, 3, "file value kept");
            assert_eq!(opts.cluster_name, "from-env", "env beats file");
            assert_eq!(
                opts.listen,
                "127.0.0.1:9999".parse().unwrap(),
                "flag beats env"
            );
            assert_eq!(opts.peers.len(), 3);
            assert_eq!(opts.peers[&2], "127.0.0.1:7002");

            jail.set_env("MLCP_AGENT_NODE_ID", "7");
            let agent_flags = AgentArgs {
                labels: vec!["pool=train".into()],
                ..AgentArgs::default()
            };
            let agent = agent_options(None, &agent_flags).map_err(jail_err)?;
            assert_eq!(
                agent.node_id, "7",
                "a numeric env value is still a string id"
            );
            assert_eq!(agent.labels.get("gpu").map(String::as_str), Some("a100"));
            assert_eq!(agent.labels.get("pool").map(String::as_str), Some("train"));
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_the_key() {
        Jail::expect_with(|jail| {
            let flags = ServerArgs {
                peers: Some("1=a:1,x=b:2".into()),
                ..ServerArgs::default()
            };
            let err = server_options(None, &flags).unwrap_err().to_string();
            assert!(
                err.contains("server.peers") && err.contains("x=b:2"),
                "{err}"
            );

            let flags = ServerArgs {
                node_id: Some(4),
                peers: Some("1=a:1,2=b:2".into()),
                ..ServerArgs::default()
            };
            let err = server_options(None, &flags).unwrap_err().to_string();
            assert!(err.contains("id 4"), "{err}");

            jail.set_env("MLCP_SERVER_LISTEN", "not-an-address");
            let err = server_options(None, &ServerArgs::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("server.listen"), "{err}");

            let err = server_options(Some(Path::new("missing.toml")), &ServerArgs::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("missing.toml"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn peers_refuse_empty_entries_bad_ports_zero_ids_and_duplicates() {
        Jail::expect_with(|jail| {
            let cases = [
                ("1=a:1,,2=b:2", "empty entry"),
                ("1=a:1,2=b:2,", "empty entry"),
                ("1=a:1,2=b:x", "\"2=b:x\""),
                ("1=a:1,2=b", "\"2=b\""),
                ("1=a:1,2=b:70000", "\"2=b:70000\""),
                ("1=a:1,2=:5", "\"2=:5\""),
                ("0=a:1,1=b:2", "\"0=a:1\""),
                ("1=a:1,1=b:2", "id 1"),
                ("1=a:1,2=a:1", "a:1"),
                ("1=a:1,2=http://A:1", "http://A:1"),
            ];
            for (peers, needle) in cases {
                let flags = ServerArgs {
                    peers: Some(peers.into()),
                    ..ServerArgs::default()
                };
                let err = match server_options(None, &flags) {
                    Ok(opts) => panic!("{peers:?} accepted as {:?}", opts.peers),
                    Err(e) => e.to_string(),
                };
                assert!(
                    err.contains("server.peers") && err.contains(needle),
                    "{peers:?}: {err:?} does not name server.peers and {needle:?}"
                );
            }
            // The same checks hold for a TOML table.
            jail.create_file("mlcp.toml", "[server.peers]\n1 = \"a:1\"\n2 = \"b:port\"\n")?;
            let err = server_options(None, &ServerArgs::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("\"2=b:port\""), "{err}");

            // Well-formed lists still pass: host names, IPv6, a scheme, spaces after commas.
            let flags = ServerArgs {
                peers: Some("1=a.example:50051, 2=[::1]:50052,3=http://c:50053".into()),
                ..ServerArgs::default()
            };
            let opts = server_options(None, &flags).map_err(jail_err)?;
            assert_eq!(opts.peers.len(), 3);
            assert_eq!(opts.peers[&2], "[::1]:50052");
            Ok(())
        });
    }

    #[test]
    fn a_value_of_the_wrong_type_names_the_key_as_the_user_wrote_it() {
        Jail::expect_with(|jail| {
            jail.create_file("mlcp.toml", "[server]\nnode_id = \"two\"\n")?;
            let err = server_options(None, &ServerArgs::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("server.node_id") && err.contains("mlcp.toml"),
                "names the TOML key and the file: {err}"
            );
            assert!(!err.contains("default."), "no figment profile: {err}");

            jail.create_file("mlcp.toml", "[agent]\nslots = -1\n")?;
            let err = agent_options(None, &AgentArgs::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("agent.slots"), "{err}");

            jail.create_file("mlcp.toml", "")?;
            jail.set_env("MLCP_SERVER_TICK_MS", "fast");
            let err = server_options(None, &ServerArgs::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("MLCP_SERVER_TICK_MS") && err.contains("server.tick_ms"),
                "names the variable and its key: {err}"
            );
            assert!(!err.contains("TICK_MS.SERVER"), "{err}");

            jail.set_env("MLCP_SERVER_TICK_MS", "50");
            jail.set_env("MLCP_CLIENT_TIMEOUT_MS", "soon");
            let err = client_config(None, &ClientArgs::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("MLCP_CLIENT_TIMEOUT_MS"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn client_servers_accept_a_string_or_an_array() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "mlcp.toml",
                "[client]\nservers = [\"a:1\", \"b:2\"]\noutput = \"json\"\n",
            )?;
            let cfg = client_config(None, &ClientArgs::default()).map_err(jail_err)?;
            assert_eq!(cfg.servers, vec!["a:1", "b:2"]);
            assert_eq!(cfg.output, OutputFormat::Json);
            let flags = ClientArgs {
                servers: Some("c:3, d:4".into()),
                ..ClientArgs::default()
            };
            let cfg = client_config(None, &flags).map_err(jail_err)?;
            assert_eq!(cfg.servers, vec!["c:3", "d:4"]);
            Ok(())
        });
    }

    #[test]
    fn an_unknown_key_or_table_in_the_file_is_refused_by_name() {
        Jail::expect_with(|jail| {
            let cases = [
                ("[server]\nnodeid = 3\n", "nodeid", "node_id"),
                ("[serverr]\nnode_id = 3\n", "serverr", "server"),
                ("node_id = 3\n", "node_id", "server"),
                ("[agent]\nslot = 3\n", "slot", "slots"),
                ("[client]\nserver = \"a:1\"\n", "server", "servers"),
            ];
            for (text, key, valid) in cases {
                jail.create_file("mlcp.toml", text)?;
                let err = match server_options(None, &ServerArgs::default()) {
                    Ok(opts) => panic!("{text:?} accepted: {opts:?}"),
                    Err(e) => e.to_string(),
                };
                assert!(
                    err.contains(&format!("{key:?}"))
                        && err.contains("mlcp.toml")
                        && err.contains(valid),
                    "{text:?}: {err}"
                );
                // The whole file is checked, whichever role reads it.
                assert!(
                    client_config(None, &ClientArgs::default()).is_err(),
                    "{text:?}"
                );
            }
            jail.create_file("mlcp.toml", "server = 3\n")?;
            let err = server_options(None, &ServerArgs::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("server must be a table"), "{err}");

            // Tables of free-form keys stay free-form.
            jail.create_file(
                "mlcp.toml",
                "[server.peers]\n1 = \"127.0.0.1:1\"\n[agent.labels]\nanything = \"x\"\n",
            )?;
            server_options(None, &ServerArgs::default()).map_err(jail_err)?;
            agent_options(None, &AgentArgs::default()).map_err(jail_err)?;
            Ok(())
        });
    }

    #[test]
    fn every_key_of_a_table_is_known() {
        // The keys the file check allows are exactly the fields of each table.
        let keys = |value: serde_json::Value| -> Vec<String> {
            let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        };
        let sorted = |list: &[&str]| {
            let mut list: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
            list.sort();
            list
        };
        let json = |v: serde_json::Result<serde_json::Value>| v.unwrap();
        let server = json(serde_json::to_value(ServerFile::default()));
        let agent = json(serde_json::to_value(AgentFile::default()));
        let client = json(serde_json::to_value(ClientFile::default()));
        assert_eq!(keys(server), sorted(SERVER_KEYS));
        assert_eq!(keys(agent), sorted(AGENT_KEYS));
        assert_eq!(keys(client), sorted(CLIENT_KEYS));
    }

    #[test]
    fn a_value_of_the_wrong_shape_reads_like_the_file() {
        Jail::expect_with(|jail| {
            type Resolve = fn() -> Result<(), ConfigError>;
            let cases: [(&str, Resolve, &[&str]); 5] = [
                (
                    "[client]\nservers = 7\n",
                    || client_config(None, &ClientArgs::default()).map(drop),
                    &[
                        "client.servers",
                        "mlcp.toml",
                        "HOST:PORT",
                        "comma-separated",
                        "integer 7",
                    ],
                ),
                (
                    "[agent.labels]\ngpu = 5\n",
                    || agent_options(None, &AgentArgs::default()).map(drop),
                    &["agent.labels.gpu", "expected a string", "integer 5"],
                ),
                (
                    "[client]\noutput = \"xml\"\n",
                    || client_config(None, &ClientArgs::default()).map(drop),
                    &["client.output", "\"xml\"", "table", "json"],
                ),
                (
                    "[server]\npeers = 3\n",
                    || server_options(None, &ServerArgs::default()).map(drop),
                    &["server.peers", "comma-separated", "integer 3"],
                ),
                (
                    "[server]\ncluster_name = [1]\n",
                    || server_options(None, &ServerArgs::default()).map(drop),
                    &["server.cluster_name", "expected a string", "a list"],
                ),
            ];
            for (text, resolve, needles) in cases {
                jail.create_file("mlcp.toml", text)?;
                let err = resolve().unwrap_err().to_string();
                for needle in needles {
                    assert!(err.contains(needle), "{text:?}: {err:?} lacks {needle:?}");
                }
                for internal in ["untagged", "ListValue", "MapValue", "Lenient", "`"] {
                    assert!(!err.contains(internal), "{text:?}: {err:?}");
                }
            }
            Ok(())
        });
    }

    #[test]
    fn server_addresses_are_host_port_with_a_real_port() {
        Jail::expect_with(|jail| {
            let flags = ClientArgs {
                servers: Some("127.0.0.1:50051,127.0.0.1:99999".into()),
                ..ClientArgs::default()
            };
            let err = client_config(None, &flags).unwrap_err().to_string();
            assert!(
                err.contains("--server") && err.contains("\"127.0.0.1:99999\""),
                "{err}"
            );
            for bad in ["a:0", "a", "a:", ":1", "a:port"] {
                let flags = ClientArgs {
                    servers: Some(bad.into()),
                    ..ClientArgs::default()
                };
                let err = client_config(None, &flags).unwrap_err().to_string();
                assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
            }

            let flags = AgentArgs {
                servers: Some("a:1,b:65536".into()),
                ..AgentArgs::default()
            };
            let err = agent_options(None, &flags).unwrap_err().to_string();
            assert!(
                err.contains("--servers") && err.contains("\"b:65536\""),
                "{err}"
            );

            jail.set_env("MLCP_CLIENT_SERVERS", "c:70000");
            let err = client_config(None, &ClientArgs::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("MLCP_CLIENT_SERVERS") && err.contains("c:70000"),
                "{err}"
            );
            jail.clear_env();

            jail.create_file("mlcp.toml", "[client]\nservers = [\"d:1\", \"e\"]\n")?;
            let err = client_config(None, &ClientArgs::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("client.servers")
                    && err.contains("mlcp.toml")
                    && err.contains("\"e\""),
                "{err}"
            );

            // Host names, IPv6 and a scheme pass.
            let flags = ClientArgs {
                servers: Some("a.example:1,[::1]:2,http://c:3".into()),
                ..ClientArgs::default()
            };
            client_config(None, &flags).map_err(jail_err)?;
            Ok(())
        });
    }
}
