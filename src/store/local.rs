//! A store in a local directory: one file per object, written atomically
//! (temp file, fsync, rename) so a crash never leaves a torn object.

use super::{ListPage, ObjectInfo, ObjectStore, RangeSink, Result, StoreError};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    tmp_seq: AtomicU64,
}

impl LocalStore {
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let url = format!("local://{}", root.display());
        let io = |source| StoreError::Io {
            store: url.clone(),
            key: String::new(),
            cause: source,
        };
        // Objects are encrypted unless --plain, but names, sizes and a
        // plain filesystem's bytes are nobody else's business.
        crate::secure::new_dir(&root).map_err(io)?;
        for sub in [".tmp", "data", "meta"] {
            crate::secure::private_dir(&root.join(sub)).map_err(io)?;
        }
        for f in ["params", "lease"] {
            crate::secure::private_file(&root.join(f)).map_err(io)?;
        }
        Ok(LocalStore {
            root,
            tmp_seq: AtomicU64::new(0),
        })
    }

    fn err(&self, key: &str, source: io::Error) -> StoreError {
        if source.kind() == io::ErrorKind::NotFound {
            StoreError::NotFound {
                store: self.url(),
                key: key.to_string(),
            }
        } else {
            StoreError::Io {
                store: self.url(),
                key: key.to_string(),
                cause: source,
            }
        }
    }

    /// Keys may contain '/', mapped to subdirectories; anything that could
    /// escape the root is rejected.
    fn path(&self, key: &str) -> Result<PathBuf> {
        let ok = !key.is_empty()
            && !key.starts_with('/')
            && key
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".." && c != ".tmp");
        if !ok || key.contains('\0') {
            return Err(StoreError::Other(format!("invalid object key {key:?}")));
        }
        Ok(self.root.join(key))
    }

    fn write_tmp(&self, key: &str, len: u64, body: &mut dyn Read) -> Result<PathBuf> {
        let tmp = self.root.join(".tmp").join(format!(
            "{}.{}",
            std::process::id(),
            self.tmp_seq.fetch_add(1, Ordering::Relaxed)
        ));
        let res = (|| -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            let n = io::copy(&mut body.take(len), &mut f)?;
            if n != len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("body ended after {n} of {len} bytes"),
                ));
            }
            f.sync_all()
        })();
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(self.err(key, e));
        }
        Ok(tmp)
    }

    /// The rename is only durable once the directory entry is on disk.
    fn sync_parent(&self, key: &str, p: &Path) -> Result<()> {
        match p.parent() {
            Some(parent) => fsync_dir(parent).map_err(|e| self.err(key, e)),
            None => Ok(()),
        }
    }

    fn ensure_parent(&self, key: &str, p: &Path) -> Result<()> {
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).map_err(|e| self.err(key, e))?;
        }
        Ok(())
    }
}

impl ObjectStore for LocalStore {
    fn remove_container(&self) -> Result<()> {
        // Empty directories only, deepest first: a file left inside (not
        // ours to delete) keeps its directory and the root.
        fn prune(d: &Path) {
            if let Ok(rd) = fs::read_dir(d) {
                for e in rd.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        prune(&e.path());
                    }
                }
            }
            let _ = fs::remove_dir(d);
        }
        prune(&self.root);
        Ok(())
    }

    fn url(&self) -> String {
        format!("local://{}", self.root.display())
    }

    fn put_stream(&self, key: &str, len: u64, body: &mut dyn Read) -> Result<()> {
        let dst = self.path(key)?;
        self.ensure_parent(key, &dst)?;
        let tmp = self.write_tmp(key, len, body)?;
        fs::rename(&tmp, &dst).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            self.err(key, e)
        })?;
        self.sync_parent(key, &dst)
    }

    fn create_stream(&self, key: &str, len: u64, body: &mut dyn Read) -> Result<()> {
        let dst = self.path(key)?;
        self.ensure_parent(key, &dst)?;
        let tmp = self.write_tmp(key, len, body)?;
        // link(2) fails with EEXIST atomically: the local If-None-Match.
        let res = fs::hard_link(&tmp, &dst);
        let _ = fs::remove_file(&tmp);
        match res {
            Ok(()) => self.sync_parent(key, &dst),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(StoreError::AlreadyExists {
                store: self.url(),
                key: key.to_string(),
            }),
            Err(e) => Err(self.err(key, e)),
        }
    }

    fn get_max(&self, key: &str, max: u64) -> Result<Vec<u8>> {
        let mut f = File::open(self.path(key)?).map_err(|e| self.err(key, e))?;
        let len = f.metadata().map_err(|e| self.err(key, e))?.len();
        super::read_bounded(
            &mut f,
            len,
            max,
            || StoreError::TooLarge {
                store: self.url(),
                key: key.to_string(),
                max,
            },
            |e| self.err(key, e),
        )
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut f = File::open(self.path(key)?).map_err(|e| self.err(key, e))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| self.err(key, e))?;
        let mut buf = Vec::with_capacity(len as usize);
        f.take(len)
            .read_to_end(&mut buf)
            .map_err(|e| self.err(key, e))?;
        Ok(buf)
    }

    fn get_ranges(
        &self,
        key: &str,
        offset: u64,
        lens: &[u64],
        each: RangeSink<'_>,
    ) -> Result<usize> {
        let mut f = File::open(self.path(key)?).map_err(|e| self.err(key, e))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| self.err(key, e))?;
        let total: u64 = lens.iter().sum();
        super::read_ranges(
            &mut f,
            lens,
            each,
            |e| self.err(key, e),
            |_| StoreError::Other(format!("range {offset}+{total} is past the end of {key}")),
        )
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        match fs::metadata(self.path(key)?) {
            Ok(m) if m.is_file() => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: m.len(),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(key, e)),
        }
    }

    fn delete(&self, key: &str) -> Result<()> {
        match fs::remove_file(self.path(key)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err(key, e)),
        }
    }

    fn list(&self, prefix: &str, marker: Option<&str>, limit: usize) -> Result<ListPage> {
        // Walk only the directory the prefix points into.
        let (dir_part, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.path(dir_part)?
        };
        let mut keys = Vec::new();
        let mut stack = vec![(start, dir_part.to_string())];
        while let Some((dir, kprefix)) = stack.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.err(&kprefix, e)),
            };
            for ent in rd {
                let ent = ent.map_err(|e| self.err(&kprefix, e))?;
                let name = ent.file_name().to_string_lossy().into_owned();
                if kprefix.is_empty() && name == ".tmp" {
                    continue;
                }
                let key = if kprefix.is_empty() {
                    name
                } else {
                    format!("{kprefix}/{name}")
                };
                let ft = ent.file_type().map_err(|e| self.err(&key, e))?;
                if ft.is_dir() {
                    if key.starts_with(prefix) || prefix.starts_with(&format!("{key}/")) {
                        stack.push((ent.path(), key));
                    }
                } else if key.starts_with(prefix) && marker.is_none_or(|m| key.as_str() > m) {
                    let size = ent.metadata().map(|m| m.len()).unwrap_or(0);
                    keys.push(ObjectInfo { key, size });
                }
            }
        }
        keys.sort_by(|a, b| a.key.cmp(&b.key));
        let next_marker = if keys.len() > limit {
            keys.truncate(limit);
            keys.last().map(|k| k.key.clone())
        } else {
            None
        };
        Ok(ListPage {
            objects: keys,
            next_marker,
        })
    }
}

pub fn fsync_dir(path: &Path) -> io::Result<()> {
    OpenOptions::new().read(true).open(path)?.sync_all()
}
