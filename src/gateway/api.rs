//! The gateway's one typed API. The CLI, the Samba hook and the web
//! console all speak it: the control socket carries it as JSON lines
//! ([`super::control`]), the console calls it in process. Whatever drives
//! the gateway goes through [`GatewayApi::call`]; the daemon is the only
//! writer of the state behind it (user map, share list, cache budget).

use crate::gateway::session::SmbdProcess;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Bumped when a request or a response changes incompatibly.
pub const API_VERSION: u32 = 1;

/// A secret on the wire (a Samba password): never shown by `Debug`,
/// wiped from memory when dropped.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

pub use crate::gateway::usermap::UserCredentials;

/// Everything one can ask of the gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Is the daemon there? Answers [`Response::Pong`].
    Ping,
    /// Samba's `root preexec`: mount the user's home once it is usable.
    Connect {
        user: String,
        #[serde(default)]
        smbd: Option<SmbdProcess>,
    },
    /// Samba's `root postexec`: one session of the user ended.
    Disconnect {
        user: String,
        #[serde(default)]
        smbd: Option<SmbdProcess>,
    },
    /// The gateway at a glance: store, cache, homes, alerts.
    Overview,
    /// Mounted homes (and team shares) with their sessions and cache use.
    Homes,
    /// A page of users, searched by name.
    Users {
        #[serde(default)]
        query: UserQuery,
    },
    /// One user in detail.
    User {
        user: String,
    },
    UserAdd(UserAdd),
    UserSetDisabled {
        user: String,
        disabled: bool,
    },
    /// Long (a purge deletes every object): answered with a job.
    UserRemove {
        user: String,
        #[serde(default)]
        purge: bool,
    },
    /// New Samba password and/or new (verified) Keystone credentials.
    UserPasswd {
        user: String,
        #[serde(default)]
        password: Option<Secret>,
        #[serde(default)]
        credentials: Option<UserCredentials>,
    },
    /// Mount a user's home now (no Samba session needed).
    Mount {
        user: String,
    },
    /// Flush and unmount a user's home now.
    Unmount {
        user: String,
    },
    /// Upload everything of a home now: answered with a job.
    Flush {
        user: String,
    },
    /// Check a home's filesystem: answered with a job. The home must not
    /// be in use (it is unmounted for the check).
    Fsck {
        user: String,
        #[serde(default)]
        verify_data: bool,
    },
    /// `swiftgate stat` / `ctl` on a home the daemon mounted.
    HomeCommand {
        mountpoint: PathBuf,
        command: crate::fs::commands::MountCommand,
    },
    Shares,
    ShareAdd(ShareSpec),
    /// Change a share's comment, members, read-only members.
    ShareUpdate(ShareSpec),
    /// Long when purging: answered with a job.
    ShareRemove {
        name: String,
        #[serde(default)]
        purge: bool,
    },
    /// The global cache budget and each home's share of it.
    Cache,
    /// Change the global budget online (bytes).
    CacheSetBudget {
        size: u64,
        #[serde(default)]
        dirty_limit: Option<u64>,
    },
    /// Drop clean (already stored) cached blocks: of one home, or all.
    CacheEvict {
        #[serde(default)]
        user: Option<String>,
    },
    /// Recent events, newest first: of one user (or share), or all.
    Events {
        #[serde(default)]
        user: Option<String>,
        #[serde(default = "default_event_limit")]
        limit: usize,
    },
    Jobs,
    Job {
        id: u64,
    },
    /// Counters for `/metrics`.
    Metrics,
    /// Back up the gateway state (disaster recovery) now.
    StateBackup,
    /// The state backups: where, when last, the last error.
    StateStatus,
    /// A home's or share's snapshots (mounting a home if needed).
    Snapshots {
        target: FsTarget,
    },
    /// Take a snapshot now.
    SnapshotCreate {
        target: FsTarget,
    },
    /// Drop a snapshot (by its `@GMT-...` name or id).
    SnapshotDelete {
        target: FsTarget,
        name: String,
    },
    /// Copy a file or folder back from a snapshot over the live one
    /// (`path` from the home's or share's root; newer files are kept).
    SnapshotRestore {
        target: FsTarget,
        name: String,
        path: String,
    },
    /// Set (or with an empty quota, lift) the quota of a home or a team
    /// share. Mounted ones get it at once.
    QuotaSet {
        target: FsTarget,
        quota: Quota,
    },
    /// Delete the expired entries of the recycle bins now (of one mounted
    /// home or share, or of every mounted one): answered with a job.
    RecyclePurge {
        #[serde(default)]
        target: Option<FsTarget>,
    },
    /// Empty the recycle bin of a home (mounted for it if needed) or a
    /// share: answered with a job.
    RecycleEmpty {
        target: FsTarget,
    },
    /// How long a home's recycle bin keeps deleted files (None: as
    /// `[recycle] keep_days`; 0: until emptied).
    UserSetRecycle {
        user: String,
        #[serde(default)]
        keep_days: Option<u32>,
    },
}

/// Which filesystem: a user's home or a team share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsTarget {
    User(String),
    Share(String),
}

impl std::fmt::Display for FsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsTarget::User(u) => write!(f, "the home of {u}"),
            FsTarget::Share(s) => write!(f, "share {s}"),
        }
    }
}

pub use crate::meta::snapshots::{SnapshotCost, SnapshotInfo};

/// Snapshots of one filesystem, oldest first, and what they cost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotList {
    pub snapshots: Vec<SnapshotInfo>,
    pub cost: SnapshotCost,
}

pub use crate::fs::quota::Quota;

/// Use at or above this share of a quota raises a warning.
pub const QUOTA_WARN_FILL: f64 = 0.9;

fn default_event_limit() -> usize {
    100
}

impl Request {
    /// Whether the request changes state (the console asks for a CSRF
    /// token and writes the audit log for these).
    pub fn is_change(&self) -> bool {
        !matches!(
            self,
            Request::Ping
                | Request::Overview
                | Request::Homes
                | Request::Users { .. }
                | Request::User { .. }
                | Request::HomeCommand { .. }
                | Request::Shares
                | Request::Cache
                | Request::Events { .. }
                | Request::Jobs
                | Request::Job { .. }
                | Request::Metrics
                | Request::StateStatus
                | Request::Snapshots { .. }
        )
    }

    /// The op's name, as on the wire (for logs and the audit trail).
    pub fn op(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("op").and_then(|o| o.as_str().map(String::from)))
            .unwrap_or_default()
    }
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum Response {
    Pong {
        version: String,
        api: u32,
    },
    Connected {
        ms: u64,
    },
    /// Done; what happened, in words.
    Done {
        message: String,
    },
    Overview(Box<Overview>),
    Homes(Vec<HomeStatus>),
    Users(UserPage),
    User(Box<UserDetail>),
    Shares(Vec<ShareStatus>),
    Cache(CacheOverview),
    Events(Vec<Event>),
    Jobs(Vec<JobInfo>),
    Job(JobInfo),
    /// The answer of a [`Request::HomeCommand`] (what a standalone mount's
    /// socket answers to the same command).
    Value(serde_json::Value),
    Metrics(Box<MetricsSnapshot>),
    StateStatus(BackupStatus),
    Snapshots(SnapshotList),
    Snapshot(SnapshotInfo),
}

pub use crate::gateway::recovery::BackupStatus;

/// What went wrong, typed so that a form can show it next to its field
/// and HTTP can pick a status.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    /// The request field at fault (`user`, `password`, `name`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed or a value is not acceptable.
    Invalid,
    NotFound,
    /// Exists already, or in a state that forbids it (in use, removed).
    Conflict,
    /// The object store, Keystone or Samba failed or cannot be reached.
    Unavailable,
    /// The daemon is not running (only a client can say this).
    NotRunning,
    /// Not allowed (only root controls the gateway).
    Denied,
    Internal,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
            field: None,
        }
    }
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            kind: ErrorKind::Invalid,
            message: message.into(),
            field: Some(field.into()),
        }
    }
    pub fn at(mut self, field: &str) -> ApiError {
        self.field = Some(field.into());
        self
    }
    fn unexpected(what: &str, r: Response) -> ApiError {
        ApiError::new(
            ErrorKind::Internal,
            format!("unexpected answer to {what}: {}", kind_of(&r)),
        )
    }
}

fn kind_of(r: &Response) -> String {
    serde_json::to_value(r)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str().map(String::from)))
        .unwrap_or_default()
}

/// One transport of the API: in process (the daemon, the console, the CLI
/// holding the state lock) or the control socket.
pub trait GatewayApi: Send + Sync {
    fn call(&self, req: Request) -> Result<Response, ApiError>;
}

macro_rules! typed {
    ($(#[$m:meta])* $name:ident ( $($arg:ident : $t:ty),* ) -> $out:ty = $req:expr, $pat:pat => $val:expr) => {
        $(#[$m])*
        fn $name(&self $(, $arg: $t)*) -> Result<$out, ApiError> {
            match self.call($req)? {
                $pat => Ok($val),
                other => Err(ApiError::unexpected(stringify!($name), other)),
            }
        }
    };
}

/// Typed calls: what callers use, so nobody matches on [`Response`].
pub trait GatewayApiExt: GatewayApi {
    typed!(ping() -> String = Request::Ping, Response::Pong { version, .. } => version);
    typed!(overview() -> Overview = Request::Overview, Response::Overview(o) => *o);
    typed!(homes() -> Vec<HomeStatus> = Request::Homes, Response::Homes(h) => h);
    typed!(users(query: UserQuery) -> UserPage = Request::Users { query }, Response::Users(p) => p);
    typed!(user(user: &str) -> UserDetail = Request::User { user: user.into() }, Response::User(u) => *u);
    typed!(shares() -> Vec<ShareStatus> = Request::Shares, Response::Shares(s) => s);
    typed!(cache() -> CacheOverview = Request::Cache, Response::Cache(c) => c);
    typed!(events(user: Option<&str>, limit: usize) -> Vec<Event> =
        Request::Events { user: user.map(String::from), limit }, Response::Events(e) => e);
    typed!(jobs() -> Vec<JobInfo> = Request::Jobs, Response::Jobs(j) => j);
    typed!(job(id: u64) -> JobInfo = Request::Job { id }, Response::Job(j) => j);
    typed!(metrics() -> MetricsSnapshot = Request::Metrics, Response::Metrics(m) => *m);
    typed!(state_status() -> BackupStatus = Request::StateStatus, Response::StateStatus(s) => s);
    typed!(snapshots(target: FsTarget) -> SnapshotList =
        Request::Snapshots { target }, Response::Snapshots(s) => s);
    typed!(snapshot_create(target: FsTarget) -> SnapshotInfo =
        Request::SnapshotCreate { target }, Response::Snapshot(s) => s);
    typed!(snapshot_delete(target: FsTarget, name: &str) -> SnapshotInfo =
        Request::SnapshotDelete { target, name: name.into() }, Response::Snapshot(s) => s);

    /// A request answered with [`Response::Done`]: its message.
    fn done(&self, req: Request) -> Result<String, ApiError> {
        match self.call(req)? {
            Response::Done { message } => Ok(message),
            other => Err(ApiError::unexpected("request", other)),
        }
    }

    /// A request answered with [`Response::Job`]: the job started.
    fn start_job(&self, req: Request) -> Result<JobInfo, ApiError> {
        match self.call(req)? {
            Response::Job(j) => Ok(j),
            other => Err(ApiError::unexpected("request", other)),
        }
    }
}

impl<T: GatewayApi + ?Sized> GatewayApiExt for T {}

impl<T: GatewayApi + ?Sized> GatewayApi for std::sync::Arc<T> {
    fn call(&self, req: Request) -> Result<Response, ApiError> {
        (**self).call(req)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserQuery {
    /// Part of the name (case-insensitive); empty: everyone.
    #[serde(default)]
    pub search: String,
    #[serde(default)]
    pub offset: usize,
    /// At most [`UserQuery::MAX_LIMIT`]; 0 means the default (50).
    #[serde(default)]
    pub limit: usize,
}

impl UserQuery {
    pub const MAX_LIMIT: usize = 500;
    pub fn limit(&self) -> usize {
        match self.limit {
            0 => 50,
            n => n.min(Self::MAX_LIMIT),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserAdd {
    pub user: String,
    pub password: Secret,
    /// The user's own Keystone identity (per-user mode); checked against
    /// Keystone before anything is saved.
    #[serde(default)]
    pub credentials: Option<UserCredentials>,
    /// Take over an existing Unix account swiftgate did not create.
    #[serde(default)]
    pub adopt: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserState {
    Active,
    Disabled,
    Removed,
}

/// What a filesystem holds, as last measured (live for a mounted home,
/// else from its last mount).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    pub files: u64,
    /// File sizes.
    pub logical_bytes: u64,
    /// Stored block bytes, each reference counted (before dedup).
    pub referenced_bytes: u64,
    /// Distinct block bytes (after dedup, before compression).
    pub unique_bytes: u64,
    /// Encoded bytes in the store (after compression and encryption).
    pub stored_bytes: u64,
    /// When measured (Unix seconds).
    pub at_unix: u64,
}

impl Usage {
    pub fn dedup_ratio(&self) -> Option<f64> {
        (self.unique_bytes > 0).then(|| self.referenced_bytes as f64 / self.unique_bytes as f64)
    }
    pub fn compression_ratio(&self) -> Option<f64> {
        (self.stored_bytes > 0).then(|| self.unique_bytes as f64 / self.stored_bytes as f64)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserSummary {
    pub name: String,
    pub uid: u32,
    pub state: UserState,
    pub mounted: bool,
    /// Open SMB sessions.
    pub sessions: usize,
    #[serde(default)]
    pub usage: Option<Usage>,
    /// Seconds since the home's metadata last reached the store (while
    /// mounted).
    #[serde(default)]
    pub metadata_age_secs: Option<u64>,
    /// The home's quota (use is in `usage`: logical_bytes, files).
    #[serde(default)]
    pub quota: Quota,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserPage {
    /// Users matching the search (all pages).
    pub total: usize,
    pub offset: usize,
    pub users: Vec<UserSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserDetail {
    pub summary: UserSummary,
    pub gid: u32,
    pub store: String,
    pub mountpoint: PathBuf,
    pub encrypted: bool,
    /// The Keystone identity the home is reached with: a name, never a
    /// secret; None for the gateway's service identity.
    #[serde(default)]
    pub keystone_user: Option<String>,
    /// That identity's project (name or id).
    #[serde(default)]
    pub keystone_project: Option<String>,
    pub created_unix: u64,
    #[serde(default)]
    pub home: Option<HomeStatus>,
    pub events: Vec<Event>,
    pub jobs: Vec<JobInfo>,
    /// The home's recycle bin.
    #[serde(default)]
    pub recycle: Option<RecycleInfo>,
}

/// A recycle bin: its setting and what it holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecycleInfo {
    /// Deleted files go to the bin (else a delete is final).
    pub enabled: bool,
    /// Days a deleted file is kept; 0: until the bin is emptied.
    pub keep_days: u32,
    /// The folder at the share's root (`#recycle`).
    pub folder: String,
    /// Files in the bin and their bytes; None while not mounted.
    #[serde(default)]
    pub files: Option<u64>,
    #[serde(default)]
    pub bytes: Option<u64>,
    /// Why the bin could not be measured.
    #[serde(default)]
    pub error: Option<String>,
    /// The home's or share's own retention (None: the config's).
    #[serde(default)]
    pub own_keep_days: Option<u32>,
}

/// A mounted home or team share.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HomeStatus {
    /// The user (or `share:NAME` for a team share).
    pub user: String,
    pub mountpoint: PathBuf,
    pub store: String,
    pub connections: usize,
    /// The smbd processes of those sessions (where known).
    pub smbd_pids: Vec<u32>,
    pub idle_secs: Option<u64>,
    pub mounted_secs: u64,
    pub cache: crate::cache::CacheStats,
    /// Seconds since the metadata last reached the store.
    #[serde(default)]
    pub metadata_age_secs: Option<u64>,
    #[serde(default)]
    pub metadata_generation: u64,
    #[serde(default)]
    pub quota: Quota,
    /// What counts against the quota, live (only with a quota).
    #[serde(default)]
    pub quota_use: Option<crate::meta::Usage>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShareSpec {
    /// `\\gateway\NAME`.
    pub name: String,
    #[serde(default)]
    pub comment: String,
    /// The Unix group whose members may use the share (`valid users =
    /// @group`); default `share-NAME`, created if missing.
    #[serde(default)]
    pub group: Option<String>,
    /// When given, the group's members are set to exactly these users.
    #[serde(default)]
    pub members: Option<Vec<String>>,
    /// Members who may only read.
    #[serde(default)]
    pub read_only: Vec<String>,
    /// The recycle bin of this share: None follows `[recycle] enabled`
    /// (off there turns it off everywhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recycle: Option<bool>,
    /// Days deleted files are kept: None follows `[recycle] keep_days`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recycle_keep_days: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShareStatus {
    pub spec: ShareSpec,
    /// The group in force (the spec's, or the default).
    pub group: String,
    /// The group's current members.
    pub members: Vec<String>,
    pub store: String,
    pub mountpoint: PathBuf,
    pub mounted: bool,
    #[serde(default)]
    pub usage: Option<Usage>,
    #[serde(default)]
    pub quota: Quota,
    /// The smb.conf section the gateway generated for it.
    pub smb_conf: String,
    /// testparm's verdict on the whole configuration (None: not run).
    #[serde(default)]
    pub testparm: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    /// The share's recycle bin.
    #[serde(default)]
    pub recycle: Option<RecycleInfo>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DiskInfo {
    pub path: PathBuf,
    pub total_bytes: u64,
    pub free_bytes: u64,
}

/// One mounted filesystem's part of the cache budget.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HomeCache {
    pub user: String,
    pub stats: crate::cache::CacheStats,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheOverview {
    /// The global budget.
    pub size: u64,
    pub dirty_limit: u64,
    /// Sums over the mounted homes.
    pub used_bytes: u64,
    pub dirty_bytes: u64,
    pub clean_bytes: u64,
    pub uploading_bytes: u64,
    pub upload_queue: u64,
    pub disk: DiskInfo,
    pub homes: Vec<HomeCache>,
}

/// The object store as the daemon last saw it (probed in the background).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StoreHealth {
    /// The store probed (the service identity's, or a home's).
    pub url: String,
    /// None: not probed yet.
    pub reachable: Option<bool>,
    pub latency_ms: Option<u64>,
    pub checked_secs_ago: Option<u64>,
    pub error: Option<String>,
    /// How the gateway authenticates: "keystone v3", "tempauth", "none" ...
    pub auth: String,
    /// Seconds left on the current token (None: no token or unknown).
    pub token_expires_in_secs: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertLevel {
    Warning,
    Critical,
}

/// A problem, by code: the console words it in the reader's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertCode {
    StoreUnreachable,
    TokenExpiring,
    DirtyNearLimit,
    MetadataNotShipped,
    CacheDiskNearlyFull,
    MountFailed,
    UploadErrors,
    /// A home or share uses 90 % of its quota or more.
    QuotaNearlyFull,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Alert {
    pub level: AlertLevel,
    pub code: AlertCode,
    /// The user or share concerned.
    #[serde(default)]
    pub subject: Option<String>,
    /// Figures or the underlying error, untranslated.
    #[serde(default)]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Overview {
    pub version: String,
    pub uptime_secs: u64,
    pub store: StoreHealth,
    pub cache: CacheOverview,
    pub users_total: usize,
    pub homes_mounted: usize,
    pub sessions: usize,
    pub metadata_interval_secs: u64,
    pub homes: Vec<HomeStatus>,
    pub alerts: Vec<Alert>,
    /// Bytes moved to and from the store since the daemon started (for
    /// throughput charts: the console takes differences).
    pub uploaded_bytes: u64,
    pub downloaded_bytes: u64,
    /// Reads served from the cache vs. fetched from the store.
    pub cache_hits: u64,
    pub cache_misses: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventLevel {
    Info,
    Warning,
    Error,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub at_unix: u64,
    pub level: EventLevel,
    /// The user or share concerned.
    #[serde(default)]
    pub subject: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobInfo {
    pub id: u64,
    /// fsck, flush, remove-user, remove-share.
    pub kind: String,
    /// The user or share it works on.
    pub subject: String,
    pub state: JobState,
    pub started_unix: u64,
    #[serde(default)]
    pub finished_unix: Option<u64>,
    /// What it is doing now ("uploading", "checking inodes").
    #[serde(default)]
    pub phase: String,
    pub done: u64,
    /// 0: unknown.
    pub total: u64,
    /// The outcome in words (a success's summary or the error).
    #[serde(default)]
    pub message: Option<String>,
}

/// Requests to the store, by kind and outcome.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StoreOpStats {
    /// get, put, delete, list, head.
    pub op: String,
    pub ok: u64,
    pub errors: u64,
    /// Payload bytes moved.
    pub bytes: u64,
    /// Cumulative latency histogram: counts of requests at or under each
    /// bound of [`MetricsSnapshot::latency_bounds_secs`], then +Inf.
    pub latency_buckets: Vec<u64>,
    pub latency_sum_secs: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    pub latency_bounds_secs: Vec<f64>,
    pub store_ops: Vec<StoreOpStats>,
    pub cache_size: u64,
    pub cache_dirty_limit: u64,
    pub cache_used_bytes: u64,
    pub cache_dirty_bytes: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub homes_mounted: u64,
    pub sessions: u64,
    /// Seconds since each mounted home's metadata reached the store.
    pub metadata_age_secs: Vec<(String, u64)>,
    /// Errors counted by the daemon (failed mounts, uploads, requests).
    pub errors: u64,
    pub users_total: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_hide_secrets() {
        let r = Request::UserAdd(UserAdd {
            user: "alice".into(),
            password: Secret::new("hunter2"),
            credentials: None,
            adopt: false,
        });
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""op":"user_add""#), "{text}");
        let back: Request = serde_json::from_str(&text).unwrap();
        assert!(matches!(&back, Request::UserAdd(a) if a.password.expose() == "hunter2"));
        assert!(!format!("{back:?}").contains("hunter2"));
        assert!(r.is_change());
        assert!(!Request::Overview.is_change());
        assert_eq!(r.op(), "user_add");
        // Old hook lines still parse.
        let old: Request = serde_json::from_str(r#"{"op":"connect","user":"bob"}"#).unwrap();
        assert!(matches!(old, Request::Connect { user, smbd: None } if user == "bob"));
    }

    #[test]
    fn typed_calls_reject_the_wrong_answer() {
        struct Wrong;
        impl GatewayApi for Wrong {
            fn call(&self, _: Request) -> Result<Response, ApiError> {
                Ok(Response::Done {
                    message: "x".into(),
                })
            }
        }
        let e = Wrong.overview().unwrap_err();
        assert_eq!(e.kind, ErrorKind::Internal);
        assert!(e.message.contains("done"), "{e}");
        assert_eq!(Wrong.done(Request::Ping).unwrap(), "x");
    }
}
