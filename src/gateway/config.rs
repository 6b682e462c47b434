//! The gateway's configuration file (TOML). Unknown keys and bad values are
//! refused at start with the file, the line and what was expected.

use crate::store::swift::SwiftFlags;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The commented default the Debian package installs as the config
/// (`provisioning/gateway.toml`): no gateway's own, so `setup` and a
/// restore may replace it (an edited copy is the admin's and is kept).
pub const PACKAGED_DEFAULT: &str = include_str!("../../provisioning/gateway.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    parse_size(&s).map_err(serde::de::Error::custom)
}

fn de_size_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de_size(d).map(Some)
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "{s:?} is not a duration like \"30s\" or \"15m\": {e}"
        ))
    })
}

/// "4M", "10G", "512K", plain bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = t[i..].to_ascii_uppercase();
            let m: u64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => return Err(format!("{s:?} is not a size like \"4M\" or \"10G\"")),
            };
            (&t[..i], m)
        }
        None => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a size like \"4M\" or \"10G\""))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UserMapMode {
    /// Each user has their own Keystone identity, kept in the user map.
    PerUser,
    /// One gateway identity ([swift] below); containers from a template.
    Service,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// Where each user's filesystem lives; `{user}` is replaced by the
    /// Samba user name: `swift://home-{user}` or `local:///srv/homes/{user}`.
    #[serde(default = "default_store_template")]
    pub url: String,
    /// Swift credentials as in clouds.yaml's `auth` block; any field left
    /// out comes from the daemon's `OS_*` environment.
    #[serde(default)]
    pub swift: SwiftFlags,
}

fn default_store_template() -> String {
    "local:///var/lib/swiftgate/homes/{user}".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountsSection {
    /// Each user's home is mounted at `<root>/<user>`.
    #[serde(default = "default_mount_root")]
    pub root: PathBuf,
    /// Homes nobody is connected to are flushed and unmounted after this.
    #[serde(default = "default_idle", deserialize_with = "de_duration")]
    pub idle_unmount: Duration,
}

fn default_mount_root() -> PathBuf {
    "/srv/swiftgate/home".into()
}
fn default_idle() -> Duration {
    Duration::from_secs(900)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    #[serde(default = "default_cache_dir")]
    pub dir: PathBuf,
    /// One budget shared by every mounted home.
    #[serde(default = "default_cache_size", deserialize_with = "de_size")]
    pub size: u64,
    /// Given in the file, or None: then the default, scaled to `size`.
    #[serde(default, rename = "dirty_limit", deserialize_with = "de_size_opt")]
    dirty_limit_set: Option<u64>,
    /// The limit in force (set by `GatewayConfig::parse`).
    #[serde(skip)]
    pub dirty_limit: u64,
    #[serde(default = "default_workers")]
    pub upload_workers: usize,
}

/// Where the cache lives and how large it may grow unless told (setup
/// fits a smaller size to a small disk).
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/swiftgate";
pub const DEFAULT_CACHE_SIZE: u64 = 20 << 30;

fn default_cache_dir() -> PathBuf {
    DEFAULT_CACHE_DIR.into()
}
fn default_cache_size() -> u64 {
    DEFAULT_CACHE_SIZE
}
/// A default dirty limit follows a small cache down (half of it): only an
/// explicit one larger than the cache is an error.
pub fn default_dirty_limit(default: u64, cache_size: u64) -> u64 {
    default.min(cache_size / 2)
}
fn default_workers() -> usize {
    8
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsSection {
    /// local: fsync = on the cache disk; remote: fsync = in the store.
    #[serde(default = "default_durability")]
    pub durability: String,
    #[serde(default = "default_meta_interval", deserialize_with = "de_duration")]
    pub metadata_interval: Duration,
    #[serde(default = "default_block", deserialize_with = "de_size")]
    pub block_size: u64,
    /// Encrypt each home with its own random passphrase (kept, encrypted,
    /// in the user map).
    #[serde(default = "default_true")]
    pub encrypt: bool,
}

fn default_durability() -> String {
    "local".into()
}
fn default_meta_interval() -> Duration {
    // Shipped by change: a short interval costs what changed, not the
    // database's size.
    Duration::from_secs(10)
}
fn default_block() -> u64 {
    4 << 20
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersSection {
    #[serde(default = "default_mode")]
    pub mode: UserMapMode,
    /// The user map (secrets inside are AES-256-GCM encrypted).
    #[serde(default = "default_user_db")]
    pub db: PathBuf,
    /// The key for those secrets: 32 random bytes, root-only.
    #[serde(default = "default_key_file")]
    pub key_file: PathBuf,
    /// The group every account `user add` creates belongs to. An existing
    /// account outside it (or below `uid_min`) is someone else's: `user
    /// add` refuses it unless told `--adopt`.
    #[serde(default = "default_group")]
    pub group: String,
    /// Accounts swiftgate creates get a uid from here up.
    #[serde(default = "default_uid_min")]
    pub uid_min: u32,
}

fn default_mode() -> UserMapMode {
    UserMapMode::Service
}
fn default_user_db() -> PathBuf {
    "/etc/swiftgate/users.json".into()
}
fn default_key_file() -> PathBuf {
    "/etc/swiftgate/secret.key".into()
}
fn default_group() -> String {
    "swiftgate".into()
}
fn default_uid_min() -> u32 {
    1000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSection {
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
}

fn default_socket() -> PathBuf {
    "/run/swiftgate/gateway.sock".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SambaSection {
    /// The smb.conf whose passdb holds the users (`smbpasswd -c`).
    #[serde(default = "default_smb_conf")]
    pub config: PathBuf,
    /// The share users map: \\gateway\<share>.
    #[serde(default = "default_share")]
    pub share: String,
}

fn default_smb_conf() -> PathBuf {
    "/etc/samba/smb.conf".into()
}
fn default_share() -> String {
    "home".into()
}

/// Who may scrape `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MetricsAccess {
    /// Clients on loopback, or with an API token.
    Loopback,
    /// Only with an API token (`swiftgate token create`).
    Token,
    /// Anyone who reaches the port.
    Open,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSection {
    /// Run the web console inside `swiftgate serve`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Loopback only by default: reach it through an SSH tunnel.
    #[serde(default = "default_console_listen")]
    pub listen: String,
    /// PEM certificate chain and key: HTTPS when both are set.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Only members of this Unix group may log in.
    #[serde(default = "default_admin_group")]
    pub admin_group: String,
    /// The PAM service (a file in /etc/pam.d).
    #[serde(default = "default_pam_service")]
    pub pam_service: String,
    /// A session unused this long is logged out.
    #[serde(default = "default_session_idle", deserialize_with = "de_duration")]
    pub session_idle: Duration,
    #[serde(default = "default_metrics_access")]
    pub metrics: MetricsAccess,
    /// Every admin action, one JSON line each.
    #[serde(default = "default_audit_log")]
    pub audit_log: PathBuf,
    /// API tokens (hashes only).
    #[serde(default = "default_tokens_file")]
    pub tokens_file: PathBuf,
}

fn default_console_listen() -> String {
    "127.0.0.1:8443".into()
}
fn default_admin_group() -> String {
    "swiftgate-admin".into()
}
fn default_pam_service() -> String {
    "swiftgate".into()
}
fn default_session_idle() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_metrics_access() -> MetricsAccess {
    MetricsAccess::Loopback
}
fn default_audit_log() -> PathBuf {
    "/var/log/swiftgate/audit.log".into()
}
fn default_tokens_file() -> PathBuf {
    "/etc/swiftgate/api-tokens.json".into()
}
fn default_console() -> ConsoleSection {
    empty()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharesSection {
    /// Where each team share's filesystem lives; `{share}` is replaced by
    /// its name. Default: next to the homes (`swift://share-{share}`, or a
    /// `shares/{share}` directory beside a local homes directory).
    #[serde(default)]
    pub url: Option<String>,
    /// Each team share is mounted at `<root>/<name>`.
    #[serde(default = "default_shares_root")]
    pub root: PathBuf,
    /// The share list (written by the daemon only). Default: `shares.json`
    /// next to the user map.
    #[serde(default)]
    pub list: Option<PathBuf>,
    /// The smb.conf fragment with the team shares' sections, `include`d by
    /// the main smb.conf. Default: `swiftgate-shares.conf` next to it.
    #[serde(default)]
    pub smb_conf: Option<PathBuf>,
}

/// Disaster recovery: the gateway's state, encrypted with the recovery
/// key, as one object in the store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoverySection {
    /// Where the state object goes. Default: next to the homes
    /// (`swift://swiftgate-state`, or a `state` directory beside a local
    /// homes directory).
    #[serde(default)]
    pub url: Option<String>,
    /// The recovery key (`swiftgate recovery init`), root-only.
    #[serde(default = "default_recovery_key")]
    pub key_file: PathBuf,
    /// A backup at least this often, changed or not.
    #[serde(
        default = "default_recovery_interval",
        deserialize_with = "de_duration"
    )]
    pub interval: Duration,
    /// How often the daemon looks for a change of the state to back up.
    #[serde(default = "default_recovery_check", deserialize_with = "de_duration")]
    pub check_interval: Duration,
}

fn default_recovery_key() -> PathBuf {
    "/etc/swiftgate/recovery.key".into()
}
fn default_recovery_interval() -> Duration {
    Duration::from_secs(3600)
}
fn default_recovery_check() -> Duration {
    Duration::from_secs(15)
}
fn default_recovery() -> RecoverySection {
    empty()
}
fn default_snapshots() -> SnapshotsSection {
    empty()
}

/// Scheduled snapshots of every mounted home and share (Previous
/// Versions): how many of the newest hourly, daily and weekly ones to keep.
/// One is taken each period (the shortest kept) while something changed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotsSection {
    #[serde(default = "default_hourly")]
    pub hourly: u32,
    #[serde(default = "default_daily")]
    pub daily: u32,
    #[serde(default = "default_weekly")]
    pub weekly: u32,
    /// How often the daemon looks whether a snapshot is due.
    #[serde(default = "default_snapshot_check", deserialize_with = "de_duration")]
    pub check_interval: Duration,
    /// Per user: `[snapshots.user.alice]` with any of the counts.
    #[serde(default)]
    pub user: std::collections::BTreeMap<String, RetentionOverride>,
    /// Per team share: `[snapshots.share.finance]`.
    #[serde(default)]
    pub share: std::collections::BTreeMap<String, RetentionOverride>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetentionOverride {
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
}

fn default_hourly() -> u32 {
    24
}
fn default_daily() -> u32 {
    14
}
fn default_weekly() -> u32 {
    8
}
fn default_snapshot_check() -> Duration {
    Duration::from_secs(60)
}

/// The recycle bin of homes and team shares (Samba's `vfs_recycle`):
/// deleted files move to `#recycle` at the share's root, and the daemon
/// deletes what has been there longer than `keep_days`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecycleSection {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Days a deleted file stays in `#recycle`; 0 keeps it until emptied.
    #[serde(default = "default_keep_days")]
    pub keep_days: u32,
    /// How often the daemon purges expired entries of mounted filesystems.
    #[serde(default = "default_purge_interval", deserialize_with = "de_duration")]
    pub purge_interval: Duration,
    /// Deleted for real, never recycled (Samba wildcards, space-separated):
    /// temporary files Office and editors make by the hundred.
    #[serde(default = "default_recycle_exclude")]
    pub exclude: String,
    /// Files inside these folders are deleted for real.
    #[serde(default = "default_recycle_exclude_dir")]
    pub exclude_dir: String,
}

/// A hundred years: more is a typo.
pub const MAX_KEEP_DAYS: u32 = 36_500;

fn default_keep_days() -> u32 {
    30
}
fn default_purge_interval() -> Duration {
    Duration::from_secs(3600)
}
fn default_recycle_exclude() -> String {
    "*.tmp ~$* .~lock.*#".into()
}
fn default_recycle_exclude_dir() -> String {
    "tmp temp".into()
}
fn default_recycle() -> RecycleSection {
    empty()
}

fn default_shares_root() -> PathBuf {
    "/srv/swiftgate/shares".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub store: StoreSection,
    #[serde(default = "default_mounts")]
    pub mounts: MountsSection,
    #[serde(default = "default_cache")]
    pub cache: CacheSection,
    #[serde(default = "default_fs")]
    pub fs: FsSection,
    #[serde(default = "default_users")]
    pub users: UsersSection,
    #[serde(default = "default_control")]
    pub control: ControlSection,
    #[serde(default = "default_samba")]
    pub samba: SambaSection,
    #[serde(default = "default_console")]
    pub console: ConsoleSection,
    #[serde(default = "default_shares")]
    pub shares: SharesSection,
    #[serde(default = "default_recovery")]
    pub recovery: RecoverySection,
    #[serde(default = "default_snapshots")]
    pub snapshots: SnapshotsSection,
    #[serde(default = "default_recycle")]
    pub recycle: RecycleSection,
}

fn empty<T: for<'de> Deserialize<'de>>() -> T {
    toml::from_str("").expect("every field has a default")
}
fn default_mounts() -> MountsSection {
    empty()
}
fn default_cache() -> CacheSection {
    empty()
}
fn default_fs() -> FsSection {
    empty()
}
fn default_users() -> UsersSection {
    empty()
}
fn default_control() -> ControlSection {
    empty()
}
fn default_samba() -> SambaSection {
    empty()
}
fn default_shares() -> SharesSection {
    empty()
}

impl GatewayConfig {
    pub fn load(path: &Path) -> Result<GatewayConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            cause: source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<GatewayConfig, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let mut cfg: GatewayConfig = toml::from_str(text).map_err(|e| {
            // toml reports a byte span; turn it into a line number.
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            match line {
                Some(l) => invalid(format!("line {l}: {}", e.message())),
                None => invalid(e.message().to_string()),
            }
        })?;
        if !cfg.store.url.contains("{user}") {
            return Err(invalid(format!(
                "[store] url {:?} must contain {{user}}: each user gets a filesystem of their own",
                cfg.store.url
            )));
        }
        if !(cfg.store.url.starts_with("swift://") || cfg.store.url.starts_with("local:///")) {
            return Err(invalid(format!(
                "[store] url {:?}: expected swift://CONTAINER-{{user}} or local:///path/{{user}}",
                cfg.store.url
            )));
        }
        if cfg.fs.durability.parse::<crate::fs::Durability>().is_err() {
            return Err(invalid(format!(
                "[fs] durability {:?}: expected \"local\" or \"remote\"",
                cfg.fs.durability
            )));
        }
        if !cfg.mounts.root.is_absolute() || !cfg.cache.dir.is_absolute() {
            return Err(invalid(
                "[mounts] root and [cache] dir must be absolute paths".into(),
            ));
        }
        if cfg.users.uid_min == 0 {
            return Err(invalid(
                "[users] uid_min must be above 0: uid 0 is root".into(),
            ));
        }
        if super::usermap::check_name(&cfg.users.group).is_err() {
            return Err(invalid(format!(
                "[users] group {:?} is not a valid group name",
                cfg.users.group
            )));
        }
        if cfg.console.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(format!(
                "[console] listen {:?} is not an address like \"127.0.0.1:8443\"",
                cfg.console.listen
            )));
        }
        if cfg.console.tls_cert.is_some() != cfg.console.tls_key.is_some() {
            return Err(invalid(
                "[console] tls_cert and tls_key go together: give both for HTTPS, or neither"
                    .into(),
            ));
        }
        if let Some(u) = &cfg.shares.url {
            if !u.contains("{share}") || !(u.starts_with("swift://") || u.starts_with("local:///"))
            {
                return Err(invalid(format!(
                    "[shares] url {u:?}: expected swift://CONTAINER-{{share}} or local:///path/{{share}}"
                )));
            }
        }
        if !cfg.shares.root.is_absolute() {
            return Err(invalid("[shares] root must be an absolute path".into()));
        }
        for (key, v) in [
            ("exclude", &cfg.recycle.exclude),
            ("exclude_dir", &cfg.recycle.exclude_dir),
        ] {
            // One smb.conf line: a newline would start another parameter.
            if v.chars().any(|c| c.is_control()) || v.trim_end().ends_with('\\') {
                return Err(invalid(format!(
                    "[recycle] {key} {v:?}: one line of patterns separated by spaces"
                )));
            }
        }
        if cfg.recycle.keep_days > MAX_KEEP_DAYS {
            return Err(invalid(format!(
                "[recycle] keep_days {} is more than a hundred years (0 keeps deleted files until the bin is emptied)",
                cfg.recycle.keep_days
            )));
        }
        if cfg.recycle.purge_interval < Duration::from_secs(1) {
            return Err(invalid(
                "[recycle] purge_interval must be at least \"1s\"".into(),
            ));
        }
        cfg.cache.dirty_limit = match cfg.cache.dirty_limit_set {
            Some(d) if d > cfg.cache.size => {
                return Err(invalid("[cache] dirty_limit must not exceed size".into()))
            }
            Some(d) => d,
            None => default_dirty_limit(4 << 30, cfg.cache.size),
        };
        Ok(cfg)
    }

    /// The store URL of `user`'s home.
    pub fn store_url(&self, user: &str) -> String {
        self.store.url.replace("{user}", user)
    }

    pub fn mountpoint(&self, user: &str) -> PathBuf {
        self.mounts.root.join(user)
    }

    /// The store URL of team share `name`.
    pub fn share_url(&self, name: &str) -> String {
        let t = match &self.shares.url {
            Some(u) => u.clone(),
            None => default_share_template(&self.store.url),
        };
        t.replace("{share}", name)
    }

    pub fn share_mountpoint(&self, name: &str) -> PathBuf {
        self.shares.root.join(name)
    }

    pub fn share_list_path(&self) -> PathBuf {
        self.shares.list.clone().unwrap_or_else(|| {
            self.users
                .db
                .parent()
                .unwrap_or(Path::new("/etc/swiftgate"))
                .join("shares.json")
        })
    }

    /// The store of the gateway state's backup.
    pub fn recovery_url(&self) -> String {
        match &self.recovery.url {
            Some(u) => u.clone(),
            None => default_recovery_url(&self.store.url),
        }
    }

    pub fn share_smb_conf(&self) -> PathBuf {
        self.shares.smb_conf.clone().unwrap_or_else(|| {
            self.samba
                .config
                .parent()
                .unwrap_or(Path::new("/etc/samba"))
                .join("swiftgate-shares.conf")
        })
    }
}

/// The state next to the homes: `swift://swiftgate-state`, or for
/// `local:///base/homes/{user}` the directory `local:///base/state`.
fn default_recovery_url(homes: &str) -> String {
    if let Some(path) = homes.strip_prefix("local://") {
        if let Some(dir) = path.strip_suffix("/{user}") {
            if let Some(base) = Path::new(dir).parent() {
                return format!("local://{}/state", base.display());
            }
        }
        return homes.replace("{user}", "+swiftgate-state");
    }
    "swift://swiftgate-state".into()
}

/// Team shares next to the homes: `swift://share-{share}`, or for
/// `local:///base/homes/{user}` the directory `local:///base/shares/{share}`.
fn default_share_template(homes: &str) -> String {
    if let Some(path) = homes.strip_prefix("local://") {
        if let Some(dir) = path.strip_suffix("/{user}") {
            if let Some(base) = Path::new(dir).parent() {
                return format!("local://{}/shares/{{share}}", base.display());
            }
        }
        // '+' is never in a user name: no home can collide with it.
        return homes.replace("{user}", "+share-{share}");
    }
    "swift://share-{share}".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_a_minimal_file() {
        let c = GatewayConfig::parse(
            "[store]\nurl = \"swift://home-{user}\"\n",
            Path::new("g.toml"),
        )
        .unwrap();
        assert_eq!(c.store_url("alice"), "swift://home-alice");
        assert_eq!(
            c.mountpoint("alice"),
            PathBuf::from("/srv/swiftgate/home/alice")
        );
        assert_eq!(c.users.mode, UserMapMode::Service);
        assert_eq!(c.cache.size, 20 << 30);
        assert_eq!(c.cache.dirty_limit, 4 << 30);
        assert_eq!(c.share_url("team"), "swift://share-team");
        assert_eq!(
            c.share_mountpoint("team"),
            PathBuf::from("/srv/swiftgate/shares/team")
        );
        assert_eq!(
            c.share_list_path(),
            PathBuf::from("/etc/swiftgate/shares.json")
        );
        assert_eq!(
            c.share_smb_conf(),
            PathBuf::from("/etc/samba/swiftgate-shares.conf")
        );
        let c = GatewayConfig::parse(
            "[store]\nurl = \"local:///var/lib/sg/homes/{user}\"\n",
            Path::new("g.toml"),
        )
        .unwrap();
        assert_eq!(c.share_url("team"), "local:///var/lib/sg/shares/team");
        let e = GatewayConfig::parse(
            "[store]\nurl = \"swift://h-{user}\"\n[shares]\nurl = \"swift://x\"\n",
            Path::new("g.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("{share}"), "{e}");
    }

    #[test]
    fn the_default_dirty_limit_follows_a_small_cache() {
        let parse = |cache: &str| {
            GatewayConfig::parse(
                &format!("[store]\nurl = \"local:///x/{{user}}\"\n[cache]\n{cache}\n"),
                Path::new("g.toml"),
            )
        };
        assert_eq!(parse("size = \"2G\"").unwrap().cache.dirty_limit, 1 << 30);
        assert_eq!(parse("size = \"100G\"").unwrap().cache.dirty_limit, 4 << 30);
        let c = parse("size = \"2G\"\ndirty_limit = \"2G\"").unwrap();
        assert_eq!(c.cache.dirty_limit, 2 << 30);
        let e = parse("size = \"2G\"\ndirty_limit = \"3G\"").unwrap_err();
        assert!(e.to_string().contains("dirty_limit must not exceed"), "{e}");
    }

    #[test]
    fn errors_name_the_line_and_the_expectation() {
        let text = "[store]\nurl = \"swift://home-{user}\"\n\n[cache]\nsize = \"lots\"\n";
        let e = GatewayConfig::parse(text, Path::new("/etc/g.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/etc/g.toml") && e.contains("line 5") && e.contains("\"4M\""),
            "{e}"
        );
        let text = "[store]\nurl = \"swift://home-{user}\"\n[mounts]\nidle = \"5m\"\n";
        let e = GatewayConfig::parse(text, Path::new("g.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 4")
                && e.contains("unknown field `idle`")
                && e.contains("idle_unmount"),
            "{e}"
        );
        let text = "[store]\nurl = \"swift://home\"\n";
        let e = GatewayConfig::parse(text, Path::new("g.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("{user}"), "{e}");
        let text = "[store]\nurl = \"local:///x/{user}\"\n[users]\nmode = \"everyone\"\n";
        let e = GatewayConfig::parse(text, Path::new("g.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 4") && e.contains("per-user") && e.contains("service"),
            "{e}"
        );
    }

    #[test]
    fn the_state_backup_goes_next_to_the_homes() {
        let c = |t: &str| GatewayConfig::parse(t, Path::new("g.toml")).unwrap();
        assert_eq!(
            c("[store]\nurl = \"swift://home-{user}\"\n").recovery_url(),
            "swift://swiftgate-state"
        );
        assert_eq!(
            c("[store]\nurl = \"local:///srv/sg/homes/{user}\"\n").recovery_url(),
            "local:///srv/sg/state"
        );
        let x = c("[store]\nurl = \"swift://h-{user}\"\n[recovery]\nurl = \"local:///x\"\ninterval = \"2h\"\n");
        assert_eq!(x.recovery_url(), "local:///x");
        assert_eq!(x.recovery.interval, Duration::from_secs(7200));
        assert!(GatewayConfig::parse(
            "[store]\nurl = \"swift://h-{user}\"\n[recovery]\nkey = \"x\"\n",
            Path::new("g.toml")
        )
        .is_err());
    }

    #[test]
    fn the_recycle_bin_is_on_by_default_and_checked() {
        let parse = |extra: &str| {
            GatewayConfig::parse(
                &format!("[store]\nurl = \"local:///x/{{user}}\"\n{extra}"),
                Path::new("g.toml"),
            )
        };
        let c = parse("").unwrap();
        assert!(c.recycle.enabled);
        assert_eq!(c.recycle.keep_days, 30);
        assert_eq!(c.recycle.purge_interval, Duration::from_secs(3600));
        assert!(c.recycle.exclude.contains("~$*"));
        let c = parse("[recycle]\nenabled = false\nkeep_days = 0\n").unwrap();
        assert!(!c.recycle.enabled && c.recycle.keep_days == 0);
        for (bad, says) in [
            ("keep_days = 99999", "hundred years"),
            ("keep_days = -1", "line"),
            ("purge_interval = \"0s\"", "at least"),
            ("exclude = \"*.tmp\\nvfs objects = x\"", "one line"),
            ("exclude_dir = \"tmp \\\\\"", "one line"),
            ("keep = 3", "unknown field"),
        ] {
            let e = parse(&format!("[recycle]\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    /// The commented config the package installs: it parses as shipped,
    /// still parses with every commented-out key switched on (no typo
    /// hides in a comment), and names every key there is.
    #[test]
    fn the_shipped_config_parses_and_names_every_key() {
        let text = include_str!("../../provisioning/gateway.toml");
        GatewayConfig::parse(text, Path::new("gateway.toml")).unwrap();
        // Switch on `# key = value` lines whose key the section lacks.
        let mut on = String::new();
        let mut set: Vec<String> = Vec::new();
        for line in text.lines() {
            let t = line.trim();
            if t.starts_with('[') {
                set.clear();
            }
            let keyed = |l: &str| {
                l.split_once('=')
                    .map(|(k, _)| k.trim().to_string())
                    .filter(|k| {
                        !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    })
            };
            if let Some(k) = keyed(t) {
                set.push(k);
                on.push_str(line);
            } else if let Some(k) = t.strip_prefix("# ").and_then(keyed) {
                if !set.contains(&k) && k != "url" && k != "cloud" && k != "storage_url" {
                    set.push(k);
                    on.push_str(&t[2..]);
                }
            } else {
                on.push_str(line);
            }
            on.push('\n');
        }
        let c = GatewayConfig::parse(&on, Path::new("all-on.toml")).unwrap();
        assert!(c.console.tls_cert.is_some() && c.shares.list.is_some());
        for key in [
            "url",
            "auth_url",
            "username",
            "password_file",
            "project_name",
            "user_domain_name",
            "project_domain_name",
            "region_name",
            "interface",
            "application_credential_id",
            "application_credential_secret_file",
            "auth_token_file",
            "cacert",
            "connections",
            "root",
            "idle_unmount",
            "dir",
            "size",
            "dirty_limit",
            "upload_workers",
            "durability",
            "metadata_interval",
            "block_size",
            "encrypt",
            "mode",
            "db",
            "key_file",
            "group",
            "uid_min",
            "socket",
            "config",
            "share",
            "enabled",
            "listen",
            "tls_cert",
            "tls_key",
            "admin_group",
            "pam_service",
            "session_idle",
            "metrics",
            "audit_log",
            "tokens_file",
            "list",
            "smb_conf",
            "interval",
            "check_interval",
            "keep_days",
            "purge_interval",
            "exclude",
            "exclude_dir",
        ] {
            assert!(
                text.lines()
                    .any(|l| l.trim_start_matches("# ").starts_with(&format!("{key} ="))),
                "provisioning/gateway.toml does not mention {key}"
            );
        }
    }
}
