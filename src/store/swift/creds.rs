//! Where Swift credentials come from, in this order: command-line flags,
//! OpenStack's `OS_*` variables (what an openrc file sets), `clouds.yaml`
//! (`--os-cloud`/`OS_CLOUD`, with `secure.yaml`), and the swift CLI's
//! tempauth `ST_AUTH`/`ST_USER`/`ST_KEY`. Each field takes the first source
//! that sets it, so an openrc and a clouds.yaml entry can complement each
//! other the way they do for the `openstack` CLI.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A secret string: never printed by `Debug`, wiped on drop.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// Values given on the command line or in the gateway's `[store.swift]`
/// (the names of clouds.yaml's `auth` block). Secrets come as file paths,
/// so they never show up in `ps` or in a config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwiftFlags {
    pub cloud: Option<String>,
    pub auth_url: Option<String>,
    pub auth_type: Option<String>,
    pub identity_api_version: Option<String>,
    pub username: Option<String>,
    pub user_id: Option<String>,
    pub password_file: Option<PathBuf>,
    /// In-memory secrets (from the gateway's encrypted user map).
    #[serde(skip)]
    pub password: Option<Secret>,
    #[serde(skip)]
    pub application_credential_secret: Option<Secret>,
    pub project_name: Option<String>,
    pub project_id: Option<String>,
    pub user_domain_name: Option<String>,
    pub user_domain_id: Option<String>,
    pub project_domain_name: Option<String>,
    pub project_domain_id: Option<String>,
    pub region_name: Option<String>,
    pub interface: Option<String>,
    pub application_credential_id: Option<String>,
    pub application_credential_name: Option<String>,
    pub application_credential_secret_file: Option<PathBuf>,
    pub storage_url: Option<String>,
    pub auth_token_file: Option<PathBuf>,
    pub cacert: Option<PathBuf>,
    /// Parallel requests to Swift (default 16).
    pub connections: Option<usize>,
    /// For S3QL-style URLs: talk plain http to the derived auth URL.
    #[serde(default)]
    pub no_ssl: bool,
}

/// Resolved settings: every field from the first source that has it.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub auth_url: Option<String>,
    pub auth_type: Option<String>,
    pub identity_api_version: Option<String>,
    pub username: Option<String>,
    pub user_id: Option<String>,
    pub password: Option<Secret>,
    pub project_name: Option<String>,
    pub project_id: Option<String>,
    pub user_domain_name: Option<String>,
    pub user_domain_id: Option<String>,
    pub project_domain_name: Option<String>,
    pub project_domain_id: Option<String>,
    pub region_name: Option<String>,
    pub interface: Option<String>,
    pub application_credential_id: Option<String>,
    pub application_credential_name: Option<String>,
    pub application_credential_secret: Option<Secret>,
    pub storage_url: Option<String>,
    pub auth_token: Option<Secret>,
    pub cacert: Option<PathBuf>,
    /// Which sources contributed, for messages ("flags, OS_* variables").
    pub sources: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CredsError {
    #[error("cannot read {what} from {path}: {cause}")]
    File {
        what: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: not a valid clouds.yaml: {message}")]
    BadYaml { path: PathBuf, message: String },
    #[error("cloud {cloud:?} is not in any clouds.yaml ({searched}); clouds found: {found}")]
    NoSuchCloud {
        cloud: String,
        searched: String,
        found: String,
    },
}

/// Every credential field of `Settings`, for merging and emptiness checks.
macro_rules! for_fields {
    ($m:ident, $($args:tt)*) => {
        $m!($($args)*, auth_url, auth_type, identity_api_version, username, user_id,
            password, project_name, project_id, user_domain_name, user_domain_id,
            project_domain_name, project_domain_id, region_name, interface,
            application_credential_id, application_credential_name,
            application_credential_secret, storage_url, auth_token, cacert)
    };
}

macro_rules! fill {
    ($dst:expr, $src:expr, $changed:ident, $($f:ident),*) => {
        $( if $dst.$f.is_none() && $src.$f.is_some() {
            $dst.$f = $src.$f.clone();
            $changed = true;
        } )*
    };
}

macro_rules! any_set {
    ($s:expr, $any:ident, $($f:ident),*) => {
        $( $any |= $s.$f.is_some(); )*
    };
}

impl Settings {
    /// Fill every unset field from `other`; returns whether it added any.
    fn fill_from(&mut self, other: &Settings) -> bool {
        let mut changed = false;
        for_fields!(fill, self, other, changed);
        changed
    }

    fn is_empty(&self) -> bool {
        let mut any = false;
        for_fields!(any_set, self, any);
        !any
    }
}

fn nonempty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

fn read_secret_file(what: &'static str, path: &Path) -> Result<Secret, CredsError> {
    let s = std::fs::read_to_string(path).map_err(|source| CredsError::File {
        what,
        path: path.to_path_buf(),
        cause: source,
    })?;
    Ok(Secret::new(s.lines().next().unwrap_or("").to_string()))
}

fn from_flags(f: &SwiftFlags) -> Result<Settings, CredsError> {
    Ok(Settings {
        auth_url: f.auth_url.clone(),
        auth_type: f.auth_type.clone(),
        identity_api_version: f.identity_api_version.clone(),
        username: f.username.clone(),
        user_id: f.user_id.clone(),
        password: match (&f.password, &f.password_file) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(p)) => Some(read_secret_file("the password", p)?),
            (None, None) => None,
        },
        project_name: f.project_name.clone(),
        project_id: f.project_id.clone(),
        user_domain_name: f.user_domain_name.clone(),
        user_domain_id: f.user_domain_id.clone(),
        project_domain_name: f.project_domain_name.clone(),
        project_domain_id: f.project_domain_id.clone(),
        region_name: f.region_name.clone(),
        interface: f.interface.clone(),
        application_credential_id: f.application_credential_id.clone(),
        application_credential_name: f.application_credential_name.clone(),
        application_credential_secret: match (
            &f.application_credential_secret,
            &f.application_credential_secret_file,
        ) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(p)) => Some(read_secret_file("the application credential secret", p)?),
            (None, None) => None,
        },
        storage_url: f.storage_url.clone(),
        auth_token: match &f.auth_token_file {
            Some(p) => Some(read_secret_file("the auth token", p)?),
            None => None,
        },
        cacert: f.cacert.clone(),
        sources: Vec::new(),
    })
}

/// `OS_*` as the `openstack` and `swift` clients read them.
pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Settings {
    let v = |k: &str| nonempty(get(k));
    let either = |a: &str, b: &str| v(a).or_else(|| v(b));
    Settings {
        auth_url: v("OS_AUTH_URL"),
        auth_type: v("OS_AUTH_TYPE"),
        identity_api_version: v("OS_IDENTITY_API_VERSION"),
        username: v("OS_USERNAME"),
        user_id: v("OS_USER_ID"),
        password: v("OS_PASSWORD").map(Secret::new),
        // v2.0 openrc files say TENANT; they mean the same thing.
        project_name: either("OS_PROJECT_NAME", "OS_TENANT_NAME"),
        project_id: either("OS_PROJECT_ID", "OS_TENANT_ID"),
        user_domain_name: v("OS_USER_DOMAIN_NAME"),
        user_domain_id: v("OS_USER_DOMAIN_ID"),
        project_domain_name: v("OS_PROJECT_DOMAIN_NAME"),
        project_domain_id: v("OS_PROJECT_DOMAIN_ID"),
        region_name: v("OS_REGION_NAME"),
        interface: either("OS_INTERFACE", "OS_ENDPOINT_TYPE"),
        application_credential_id: v("OS_APPLICATION_CREDENTIAL_ID"),
        application_credential_name: v("OS_APPLICATION_CREDENTIAL_NAME"),
        application_credential_secret: v("OS_APPLICATION_CREDENTIAL_SECRET").map(Secret::new),
        storage_url: v("OS_STORAGE_URL"),
        auth_token: v("OS_AUTH_TOKEN").map(Secret::new),
        cacert: v("OS_CACERT").map(PathBuf::from),
        sources: Vec::new(),
    }
}

/// The swift CLI's tempauth variables (auth version 1). `ST_USER`/`ST_KEY`
/// alone serve S3QL-style URLs, which carry the auth host themselves.
fn from_st_env(get: &dyn Fn(&str) -> Option<String>) -> Settings {
    let v = |k: &str| nonempty(get(k));
    let auth_url = v("ST_AUTH");
    Settings {
        auth_type: auth_url.as_ref().map(|_| "v1password".to_string()),
        auth_url,
        username: v("ST_USER"),
        password: v("ST_KEY").map(Secret::new),
        ..Settings::default()
    }
}

#[derive(Debug, Default, Deserialize)]
struct CloudsFile {
    #[serde(default)]
    clouds: BTreeMap<String, serde_yaml_ng::Value>,
}

/// Where openstacksdk looks for clouds.yaml / secure.yaml.
fn config_dirs(get: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from(".")];
    if let Some(x) = nonempty(get("XDG_CONFIG_HOME")) {
        dirs.push(PathBuf::from(x).join("openstack"));
    } else if let Some(h) = nonempty(get("HOME")) {
        dirs.push(PathBuf::from(h).join(".config/openstack"));
    }
    dirs.push(PathBuf::from("/etc/openstack"));
    dirs
}

fn candidate_files(
    get: &dyn Fn(&str) -> Option<String>,
    override_var: &str,
    names: &[&str],
) -> Vec<PathBuf> {
    if let Some(p) = nonempty(get(override_var)) {
        return vec![PathBuf::from(p)];
    }
    let mut out = Vec::new();
    for d in config_dirs(get) {
        for n in names {
            out.push(d.join(n));
        }
    }
    out
}

fn load_clouds(path: &Path) -> Result<Option<CloudsFile>, CredsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CredsError::File {
                what: "clouds configuration",
                path: path.to_path_buf(),
                cause: source,
            })
        }
    };
    serde_yaml_ng::from_str(&text)
        .map(Some)
        .map_err(|e| CredsError::BadYaml {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// Deep merge: `over` wins, maps merge recursively (secure.yaml on top).
fn merge_yaml(base: &mut serde_yaml_ng::Value, over: &serde_yaml_ng::Value) {
    use serde_yaml_ng::Value;
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(bv) => merge_yaml(bv, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn yaml_str(v: &serde_yaml_ng::Value, key: &str) -> Option<String> {
    match v.get(key)? {
        serde_yaml_ng::Value::String(s) => nonempty(Some(s.clone())),
        serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The named cloud from clouds.yaml (+ secure.yaml), as settings.
pub fn from_clouds(
    cloud: &str,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, CredsError> {
    let files = candidate_files(get, "OS_CLIENT_CONFIG_FILE", &["clouds.yaml", "clouds.yml"]);
    let mut found_names = Vec::new();
    let mut entry = None;
    for f in &files {
        if let Some(cf) = load_clouds(f)? {
            found_names.extend(cf.clouds.keys().cloned());
            if let Some(e) = cf.clouds.get(cloud) {
                entry = Some((f.clone(), e.clone()));
                break;
            }
        }
    }
    let Some((path, mut entry)) = entry else {
        return Err(CredsError::NoSuchCloud {
            cloud: cloud.to_string(),
            searched: files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            found: if found_names.is_empty() {
                "none".into()
            } else {
                found_names.join(", ")
            },
        });
    };
    for f in candidate_files(get, "OS_CLIENT_SECURE_FILE", &["secure.yaml", "secure.yml"]) {
        if let Some(sf) = load_clouds(&f)? {
            if let Some(sec) = sf.clouds.get(cloud) {
                merge_yaml(&mut entry, sec);
                break;
            }
        }
    }
    tracing::debug!(cloud, path = %path.display(), "using clouds.yaml entry");
    let auth = entry.get("auth").cloned().unwrap_or_default();
    let a = |k: &str| yaml_str(&auth, k);
    let domain_name = a("domain_name");
    let domain_id = a("domain_id");
    let region = yaml_str(&entry, "region_name").or_else(|| {
        // `regions: [a, b]`: only unambiguous when there is one.
        match entry.get("regions") {
            Some(serde_yaml_ng::Value::Sequence(s)) if s.len() == 1 => match &s[0] {
                serde_yaml_ng::Value::String(r) => Some(r.clone()),
                m => yaml_str(m, "name"),
            },
            _ => None,
        }
    });
    Ok(Settings {
        auth_url: a("auth_url"),
        auth_type: yaml_str(&entry, "auth_type"),
        identity_api_version: yaml_str(&entry, "identity_api_version"),
        username: a("username"),
        user_id: a("user_id"),
        password: a("password").map(Secret::new),
        project_name: a("project_name").or_else(|| a("tenant_name")),
        project_id: a("project_id").or_else(|| a("tenant_id")),
        user_domain_name: a("user_domain_name").or_else(|| domain_name.clone()),
        user_domain_id: a("user_domain_id").or_else(|| domain_id.clone()),
        project_domain_name: a("project_domain_name").or(domain_name),
        project_domain_id: a("project_domain_id").or(domain_id),
        region_name: region,
        interface: yaml_str(&entry, "interface"),
        application_credential_id: a("application_credential_id"),
        application_credential_name: a("application_credential_name"),
        application_credential_secret: a("application_credential_secret").map(Secret::new),
        storage_url: None,
        auth_token: a("token").map(Secret::new),
        cacert: yaml_str(&entry, "cacert").map(PathBuf::from),
        sources: Vec::new(),
    })
}

/// Gather settings from all sources in precedence order.
pub fn resolve(
    flags: &SwiftFlags,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, CredsError> {
    let mut s = Settings::default();
    let f = from_flags(flags)?;
    if !f.is_empty() {
        s.fill_from(&f);
        s.sources.push("command-line flags".into());
    }
    let env = from_env(get);
    if !env.is_empty() && s.fill_from(&env) {
        s.sources.push("OS_* variables".into());
    }
    let cloud = flags.cloud.clone().or_else(|| nonempty(get("OS_CLOUD")));
    if let Some(c) = cloud {
        let cs = from_clouds(&c, get)?;
        if s.fill_from(&cs) {
            s.sources.push(format!("clouds.yaml cloud {c:?}"));
        }
    }
    // Tempauth only when nothing above named an auth URL: ST_* and OS_*
    // describe different identities and must not be mixed.
    if s.auth_url.is_none() {
        let st = from_st_env(get);
        if !st.is_empty() && s.fill_from(&st) {
            s.sources.push("ST_* variables".into());
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| m.get(k).cloned()
    }

    #[test]
    fn flags_override_env_and_env_overrides_clouds() {
        let dir = tempfile::tempdir().unwrap();
        let clouds = dir.path().join("clouds.yaml");
        std::fs::write(
            &clouds,
            "clouds:\n  c1:\n    region_name: r-yaml\n    auth:\n      auth_url: http://yaml/v3\n      username: yamluser\n      project_name: yamlproj\n      domain_name: D\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("secure.yaml"),
            "clouds:\n  c1:\n    auth:\n      password: s3cret\n",
        )
        .unwrap();
        let clouds_s = clouds.to_string_lossy().to_string();
        let secure_s = dir.path().join("secure.yaml").to_string_lossy().to_string();
        let get = env(&[
            ("OS_CLOUD", "c1"),
            ("OS_CLIENT_CONFIG_FILE", &clouds_s),
            ("OS_CLIENT_SECURE_FILE", &secure_s),
            ("OS_USERNAME", "envuser"),
            ("OS_TENANT_NAME", "envtenant"),
            ("OS_REGION_NAME", ""),
        ]);
        let flags = SwiftFlags {
            username: Some("flaguser".into()),
            ..Default::default()
        };
        let s = resolve(&flags, &get).unwrap();
        assert_eq!(s.username.as_deref(), Some("flaguser"));
        assert_eq!(s.project_name.as_deref(), Some("envtenant"));
        assert_eq!(s.auth_url.as_deref(), Some("http://yaml/v3"));
        assert_eq!(s.region_name.as_deref(), Some("r-yaml"));
        assert_eq!(s.user_domain_name.as_deref(), Some("D"));
        assert_eq!(s.password.as_ref().map(|p| p.expose()), Some("s3cret"));
        assert!(!format!("{s:?}").contains("s3cret"));
        assert_eq!(s.sources.len(), 3, "{:?}", s.sources);
    }

    #[test]
    fn unknown_cloud_lists_the_known_ones() {
        let dir = tempfile::tempdir().unwrap();
        let clouds = dir.path().join("clouds.yaml");
        std::fs::write(&clouds, "clouds:\n  a: {}\n  b: {}\n").unwrap();
        let cs = clouds.to_string_lossy().to_string();
        let get = env(&[("OS_CLOUD", "zzz"), ("OS_CLIENT_CONFIG_FILE", &cs)]);
        let e = resolve(&SwiftFlags::default(), &get)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"zzz\"") && e.contains("a, b"), "{e}");
    }

    #[test]
    fn tempauth_only_without_an_os_auth_url() {
        let get = env(&[
            ("ST_AUTH", "http://h:8080/auth/v1.0"),
            ("ST_USER", "test:tester"),
            ("ST_KEY", "testing"),
        ]);
        let s = resolve(&SwiftFlags::default(), &get).unwrap();
        assert_eq!(s.auth_type.as_deref(), Some("v1password"));
        assert_eq!(s.username.as_deref(), Some("test:tester"));
        let get = env(&[
            ("ST_AUTH", "http://h:8080/auth/v1.0"),
            ("ST_USER", "test:tester"),
            ("OS_AUTH_URL", "http://k:5000/v3"),
        ]);
        let s = resolve(&SwiftFlags::default(), &get).unwrap();
        assert_eq!(s.auth_url.as_deref(), Some("http://k:5000/v3"));
        assert_eq!(s.auth_type, None);
    }
}
