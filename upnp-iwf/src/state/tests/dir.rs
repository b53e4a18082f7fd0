//! Unit tests of [`StateDir`]: restart, atomic save, file mode, crash leftovers, bad files
//! moved aside (RFC 6970 §5.3: mappings are persisted; design §3: never a crash loop).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{VALID, valid_mappings};
use crate::state::*;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("upnp-iwf-state-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        TempDir(dir)
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .expect("list dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

const T0: u64 = 1_767_225_600;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn saved_mappings_are_loaded_after_a_restart() {
    let tmp = TempDir::new("restart");
    StateDir::new(tmp.0.clone())
        .save(&valid_mappings())
        .expect("save");
    // A new StateDir stands for the restarted daemon.
    let loaded = StateDir::new(tmp.0.clone()).load().expect("load");
    assert_eq!(loaded.mappings, valid_mappings());
    assert!(loaded.discarded.is_none());
    assert_eq!(
        fs::read_to_string(tmp.0.join(STATE_FILE)).expect("read"),
        VALID
    );
}

#[test]
fn missing_file_loads_empty_and_the_dir_is_created_private() {
    let tmp = TempDir::new("missing");
    let dir = StateDir::new(tmp.0.join("sub"));
    let loaded = dir.load().expect("load");
    assert!(loaded.mappings.is_empty() && loaded.discarded.is_none());
    assert_eq!(mode(dir.dir()), 0o700);
    assert!(tmp.names().contains(&"sub".to_owned()));
    assert!(
        fs::read_dir(dir.dir()).expect("list").next().is_none(),
        "load writes nothing"
    );
}

#[test]
fn save_is_atomic_and_leaves_no_temp_file() {
    let tmp = TempDir::new("atomic");
    let dir = StateDir::new(tmp.0.clone());
    dir.save(&valid_mappings()).expect("first save");
    dir.save(&valid_mappings()[..1])
        .expect("second save (a delete)");
    assert_eq!(tmp.names(), [STATE_FILE]);
    assert_eq!(dir.load().expect("load").mappings, valid_mappings()[..1]);
}

#[test]
fn state_file_is_mode_0600_even_over_a_looser_leftover_temp_file() {
    let tmp = TempDir::new("mode");
    let dir = StateDir::new(tmp.0.clone());
    dir.save(&[]).expect("save");
    let leftover = tmp.0.join(".mappings.json.tmp");
    fs::write(&leftover, b"junk").expect("leftover");
    fs::set_permissions(&leftover, fs::Permissions::from_mode(0o644)).expect("chmod");
    dir.save(&valid_mappings()).expect("save over leftover");
    assert_eq!(mode(&tmp.0.join(STATE_FILE)), 0o600);
    assert_eq!(tmp.names(), [STATE_FILE]);
}

#[test]
fn temp_file_left_by_a_crash_is_removed_on_load_and_the_old_state_kept() {
    let tmp = TempDir::new("crash");
    let dir = StateDir::new(tmp.0.clone());
    dir.save(&valid_mappings()).expect("save");
    // A crash mid-save: half a new file in the temp file, the old file untouched.
    fs::write(tmp.0.join(".mappings.json.tmp"), &VALID.as_bytes()[..100]).expect("crash");
    let loaded = dir.load().expect("load");
    assert_eq!(loaded.mappings, valid_mappings());
    assert!(loaded.discarded.is_none());
    assert_eq!(tmp.names(), [STATE_FILE]);
}

#[test]
fn save_refuses_mappings_that_load_would_reject_and_keeps_the_old_file() {
    let tmp = TempDir::new("refuse");
    let dir = StateDir::new(tmp.0.clone());
    dir.save(&valid_mappings()).expect("save");
    let mut dup = valid_mappings();
    dup.push(dup[0].clone());
    assert!(matches!(
        dir.save(&dup),
        Err(StateError::Invalid { index: 2, .. })
    ));
    assert_eq!(dir.load().expect("load").mappings, valid_mappings());
    assert_eq!(tmp.names(), [STATE_FILE]);
}

#[test]
fn truncated_file_is_moved_aside_and_daemon_starts_empty() {
    let tmp = TempDir::new("truncated");
    let dir = StateDir::new(tmp.0.clone());
    let truncated = &VALID.as_bytes()[..VALID.len() / 2];
    fs::create_dir_all(&tmp.0).expect("mkdir");
    fs::write(tmp.0.join(STATE_FILE), truncated).expect("write");
    let loaded = dir.load_at(at(T0)).expect("load");
    assert!(loaded.mappings.is_empty());
    let (aside, error) = loaded.discarded.expect("reported");
    assert_eq!(aside, tmp.0.join(format!("mappings.json.corrupt-{T0}")));
    assert!(matches!(&error, StateError::Parse { path, .. } if *path == tmp.0.join(STATE_FILE)));
    assert!(error.to_string().contains("EOF"), "{error}");
    assert_eq!(fs::read(&aside).expect("kept for the operator"), truncated);
    assert_eq!(tmp.names(), [format!("mappings.json.corrupt-{T0}")]);
    // The next start is clean, and saving works again.
    let again = dir.load_at(at(T0 + 1)).expect("second load");
    assert!(again.mappings.is_empty() && again.discarded.is_none());
    dir.save(&valid_mappings()).expect("save");
    assert_eq!(dir.load().expect("load").mappings, valid_mappings());
}

#[test]
fn at_most_3_corrupt_copies_are_kept() {
    let tmp = TempDir::new("copies");
    let dir = StateDir::new(tmp.0.clone());
    fs::create_dir_all(&tmp.0).expect("mkdir");
    fs::write(tmp.0.join("mappings.json.corrupt-notes"), b"operator's").expect("write");
    // Five bad files, the last two in the same second.
    for (i, secs) in [T0, T0 + 10, T0 + 20, T0 + 30, T0 + 30]
        .into_iter()
        .enumerate()
    {
        fs::write(tmp.0.join(STATE_FILE), format!("bad {i}")).expect("write");
        let loaded = dir.load_at(at(secs)).expect("load");
        assert!(loaded.mappings.is_empty() && loaded.discarded.is_some());
    }
    assert_eq!(
        tmp.names(),
        [
            format!("mappings.json.corrupt-{}", T0 + 20),
            format!("mappings.json.corrupt-{}", T0 + 30),
            format!("mappings.json.corrupt-{}-1", T0 + 30),
            "mappings.json.corrupt-notes".to_owned(),
        ]
    );
    let newest = tmp.0.join(format!("mappings.json.corrupt-{}-1", T0 + 30));
    assert_eq!(fs::read(newest).expect("newest"), b"bad 4");
}

#[test]
fn version_2_file_is_moved_aside_not_overwritten() {
    let tmp = TempDir::new("version");
    let dir = StateDir::new(tmp.0.clone());
    fs::create_dir_all(&tmp.0).expect("mkdir");
    fs::write(
        tmp.0.join(STATE_FILE),
        VALID.replacen("\"version\": 1", "\"version\": 2", 1),
    )
    .expect("write");
    let (_, error) = dir
        .load_at(at(T0))
        .expect("load")
        .discarded
        .expect("reported");
    assert!(matches!(error, StateError::Version { found: 2, .. }));
}

#[test]
fn unreadable_state_file_is_moved_aside() {
    let tmp = TempDir::new("unreadable");
    fs::create_dir_all(tmp.0.join(STATE_FILE)).expect("a directory where the file should be");
    let loaded = StateDir::new(tmp.0.clone()).load_at(at(T0)).expect("load");
    let (aside, error) = loaded.discarded.expect("reported");
    assert!(matches!(error, StateError::Io { .. }), "{error}");
    assert!(aside.is_dir());
    assert!(loaded.mappings.is_empty());
}

#[test]
fn unusable_dir_is_an_error() {
    let tmp = TempDir::new("unusable");
    fs::create_dir_all(&tmp.0).expect("mkdir");
    let file = tmp.0.join("not-a-dir");
    fs::write(&file, b"").expect("write");
    let dir = StateDir::new(file.clone());
    match dir.load() {
        Err(StateError::Io { path, .. }) => assert_eq!(path, file),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert!(matches!(dir.save(&[]), Err(StateError::Io { .. })));
}
