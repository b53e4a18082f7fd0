//! The state directory: atomic save (temp file, fsync, rename, fsync of the directory) and a
//! load that never stops the daemon over a bad file (moved aside, start empty).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{STATE_FILE, StateError, StoredMapping, parse_file, render_to, validate};

/// How many moved-aside corrupt files (`mappings.json.corrupt-<unix secs>`) are kept; older
/// ones are deleted when a new one is made.
pub const MAX_CORRUPT_COPIES: usize = 3;

/// Name of the temp file [`StateDir::save`] writes before renaming it over [`STATE_FILE`].
/// One left behind by a crash is removed by the next load or save.
const TEMP_FILE: &str = ".mappings.json.tmp";

/// Prefix of a moved-aside corrupt file.
const CORRUPT_PREFIX: &str = "mappings.json.corrupt-";

/// File mode of the state file: the nonces in it authorize PCP renewals and deletes.
const FILE_MODE: u32 = 0o600;

/// Mode of the state directory when [`StateDir`] creates it.
const DIR_MODE: u32 = 0o700;

/// What [`StateDir::load`] found.
#[derive(Debug)]
pub struct Loaded {
    /// The mappings of a good file, sorted by key; empty when there was no file or a bad one.
    pub mappings: Vec<StoredMapping>,
    /// A bad file's new name (where it was moved aside) and why it was rejected.
    pub discarded: Option<(PathBuf, StateError)>,
}

/// The `--state-dir` of the daemon, holding [`STATE_FILE`].
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// A state directory at `dir`; nothing is touched until [`load`](Self::load) or
    /// [`save`](Self::save), which create it (mode 0700) if missing.
    pub fn new(dir: PathBuf) -> StateDir {
        StateDir { dir }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Full path of the state file.
    pub fn file(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Loads the mappings: a missing file means none. A file that does not parse (or cannot be
    /// read) is renamed to `mappings.json.corrupt-<unix secs>` (at most [`MAX_CORRUPT_COPIES`]
    /// such files are kept), logged, and reported in [`Loaded::discarded`]; the daemon then
    /// starts empty. A temp file left by a crashed save is removed. `Err` only when the
    /// directory itself is unusable: it cannot be created or written, or the bad file cannot
    /// be moved aside.
    pub fn load(&self) -> Result<Loaded, StateError> {
        self.load_at(SystemTime::now())
    }

    /// [`load`](Self::load) with the clock passed in (it names the corrupt copy).
    pub fn load_at(&self, now: SystemTime) -> Result<Loaded, StateError> {
        self.create_dir()?;
        // Removes a crashed save's leftover, and proves the directory is writable before the
        // daemon relies on it for its first save.
        self.fresh_temp_file()?;
        remove_if_present(&self.dir.join(TEMP_FILE))?;
        let path = self.file();
        let error = match fs::read(&path) {
            Ok(bytes) => match parse_file(&path, &bytes) {
                Ok(mappings) => {
                    tracing::info!(file = %path.display(), mappings = mappings.len(), "state loaded");
                    return Ok(Loaded {
                        mappings,
                        discarded: None,
                    });
                }
                Err(e) => e,
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Loaded {
                    mappings: Vec::new(),
                    discarded: None,
                });
            }
            Err(source) => StateError::Io {
                path: path.clone(),
                source,
            },
        };
        let aside = self.move_aside(&path, now)?;
        tracing::warn!(
            file = %path.display(),
            moved_to = %aside.display(),
            error = %error,
            "state file rejected; moved aside, starting with no mappings"
        );
        self.prune_corrupt_copies();
        Ok(Loaded {
            mappings: Vec::new(),
            discarded: Some((aside, error)),
        })
    }

    /// Writes all mappings atomically: checks them with [`validate`] (so nothing is written
    /// that [`load`](Self::load) would reject), writes a temp file (mode 0600) in the same
    /// directory, fsyncs it, renames it over [`STATE_FILE`] and fsyncs the directory. After a
    /// crash at any point the file holds either the old or the new set. On error the old file
    /// is untouched and no temp file is left, when the OS allows removing it.
    pub fn save(&self, mappings: &[StoredMapping]) -> Result<(), StateError> {
        validate(mappings)?;
        self.create_dir()?;
        let tmp = self.dir.join(TEMP_FILE);
        let written = self.fresh_temp_file().and_then(|f| {
            render_to(mappings, std::io::BufWriter::with_capacity(16 * 1024, &f))
                .and_then(|()| f.sync_all())
                .map_err(|source| StateError::Io {
                    path: tmp.clone(),
                    source,
                })
        });
        let renamed = written.and_then(|()| {
            fs::rename(&tmp, self.file()).map_err(|source| StateError::Io {
                path: self.file(),
                source,
            })
        });
        if let Err(e) = renamed {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.sync_dir()?;
        tracing::debug!(file = %self.file().display(), mappings = mappings.len(), "state saved");
        Ok(())
    }

    /// Creates the directory (mode 0700) if it does not exist.
    fn create_dir(&self) -> Result<(), StateError> {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&self.dir)
            .map_err(|source| StateError::Io {
                path: self.dir.clone(),
                source,
            })
    }

    /// Opens a new, empty temp file with mode 0600, replacing a leftover one. Created new
    /// rather than truncated, so a leftover's looser mode never carries over.
    fn fresh_temp_file(&self) -> Result<File, StateError> {
        let tmp = self.dir.join(TEMP_FILE);
        remove_if_present(&tmp)?;
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .map_err(|source| StateError::Io { path: tmp, source })
    }

    /// Makes renames in the directory durable.
    fn sync_dir(&self) -> Result<(), StateError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| StateError::Io {
                path: self.dir.clone(),
                source,
            })
    }

    /// Renames a rejected file to `mappings.json.corrupt-<unix secs>`, adding `-1`, `-2`, …
    /// when that name is taken, and returns the new path.
    fn move_aside(&self, path: &Path, now: SystemTime) -> Result<PathBuf, StateError> {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut aside = self.dir.join(format!("{CORRUPT_PREFIX}{secs}"));
        let mut n = 0u32;
        while fs::symlink_metadata(&aside).is_ok() {
            n += 1;
            aside = self.dir.join(format!("{CORRUPT_PREFIX}{secs}-{n}"));
        }
        fs::rename(path, &aside).map_err(|source| StateError::Io {
            path: path.to_owned(),
            source,
        })?;
        self.sync_dir()?;
        Ok(aside)
    }

    /// Deletes all but the newest [`MAX_CORRUPT_COPIES`] corrupt copies (by the time in their
    /// name). Files with the prefix but another suffix are not ours and are left alone.
    /// Failures are logged only: they do not stop the daemon.
    fn prune_corrupt_copies(&self) {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot list state dir");
                return;
            }
        };
        let mut copies: Vec<((u64, u32), PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name();
                let order = corrupt_copy_order(name.to_str()?)?;
                Some((order, entry.path()))
            })
            .collect();
        copies.sort_unstable_by_key(|c| std::cmp::Reverse(c.0));
        for (_, old) in copies.iter().skip(MAX_CORRUPT_COPIES) {
            if let Err(e) = fs::remove_file(old) {
                tracing::warn!(file = %old.display(), error = %e, "cannot delete old corrupt state file");
            }
        }
    }
}

/// `(unix secs, n)` of a name `mappings.json.corrupt-<secs>` or `…-<secs>-<n>`; `None` for
/// any other name.
fn corrupt_copy_order(name: &str) -> Option<(u64, u32)> {
    let rest = name.strip_prefix(CORRUPT_PREFIX)?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match rest.split_once('-') {
        None if digits(rest) => Some((rest.parse().ok()?, 0)),
        Some((secs, n)) if digits(secs) && digits(n) => Some((secs.parse().ok()?, n.parse().ok()?)),
        _ => None,
    }
}

/// Removes a file; a missing one is fine.
fn remove_if_present(path: &Path) -> Result<(), StateError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StateError::Io {
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}
