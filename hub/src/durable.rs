//! Files and directories that survive a power cut.
//!
//! After a power cut a file system may keep a file's name but not its bytes (written, never
//! fsynced), or drop a name created, renamed or removed since its directory was last
//! fsynced. So every file the hub makes is written beside its place, fsynced, renamed over
//! it, and its directory fsynced; every directory it makes has its parent fsynced; every
//! removal has its directory fsynced; and files that only mean something together (a CA's
//! key and certificate) are made in a directory of their own that appears whole or not at
//! all. The database's own files are SQLite's business (it fsyncs its journal's directory).
//!
//! Every function returns once what it did is on disk, or with the error that stopped it:
//! none is ignored, since a hub that goes on after a failed fsync may later start without
//! what it told someone it had.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Fsyncs a directory, making the names created, renamed or removed in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory `path` is in (`.` for a bare name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `path` with `suffix` appended to its file name.
pub fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Creates `path` anew with `bytes` and `mode`, fsynced, never reusing what is there.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = opts.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Replaces `path` with a file holding `bytes` (permissions `mode` from its creation on):
/// after a power cut it holds the old bytes or the new ones, never a mixture or nothing.
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = beside(path, ".tmp");
    // A leftover from a cut mid-write may have other permissions: never reuse it.
    remove_if_there(&tmp)?;
    write_new(&tmp, bytes, mode)?;
    fs::rename(&tmp, path)?;
    sync_dir(parent(path))
}

/// Creates `path` with `bytes` unless something is there already (then
/// [`io::ErrorKind::AlreadyExists`]): it appears whole, or not at all.
pub fn create(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = beside(path, ".tmp");
    remove_if_there(&tmp)?;
    write_new(&tmp, bytes, mode)?;
    // A hard link, unlike a rename, refuses to replace. File systems without links (FAT
    // on a USB stick) get a rename onto a name just seen free.
    match fs::hard_link(&tmp, path) {
        Ok(()) => fs::remove_file(&tmp)?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Err(_) if !path.exists() => fs::rename(&tmp, path)?,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    }
    sync_dir(parent(path))
}

/// Removes the file `path` if it is there; durable once this returns.
pub fn remove(path: &Path) -> io::Result<()> {
    if remove_if_there(path)? {
        sync_dir(parent(path))?;
    }
    Ok(())
}

/// Removes `path`; whether it was there.
fn remove_if_there(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates `dir` and any missing parents, each new one with `mode`, each one's parent
/// fsynced after it appears.
pub fn create_dir_all(dir: &Path, mode: u32) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let above = parent(dir);
    if above != dir {
        create_dir_all(above, mode)?;
    }
    match dir_builder(mode).create(dir) {
        Ok(()) => {}
        // Made meanwhile by someone else: theirs to make durable, but no harm in doing it.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(e),
    }
    sync_dir(above)
}

/// A builder of one directory with permissions `mode` (on Unix).
fn dir_builder(mode: u32) -> fs::DirBuilder {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    builder
}

/// Makes the directory `dir` (which must not exist, or be empty) holding `files` (name,
/// bytes, mode): after a power cut it is there with all of them, or not there at all.
/// They are written in `dir.new`, fsynced with it, and the whole renamed into place.
pub fn create_set(dir: &Path, files: &[(&str, &[u8], u32)], mode: u32) -> io::Result<()> {
    let staging = beside(dir, ".new");
    match fs::remove_dir_all(&staging) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let above = parent(dir);
    create_dir_all(above, mode)?;
    dir_builder(mode).create(&staging)?;
    for (name, bytes, mode) in files {
        write_new(&staging.join(name), bytes, *mode)?;
    }
    sync_dir(&staging)?;
    // rename(2) replaces an empty directory, and refuses one with anything in it.
    fs::rename(&staging, dir)?;
    sync_dir(above)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replaces_whole_and_leaves_nothing_beside() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("key");
        write(&path, b"one", 0o600)?;
        // A leftover from an interrupted write is not reused.
        fs::write(beside(&path, ".tmp"), b"half")?;
        write(&path, b"two", 0o600)?;
        assert_eq!(fs::read(&path)?, b"two");
        let names: Vec<_> = fs::read_dir(dir.path())?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
        assert_eq!(names, ["key"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        }
        Ok(())
    }

    #[test]
    fn create_never_replaces() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("hub.key");
        create(&path, b"first", 0o600)?;
        let again = create(&path, b"second", 0o600);
        assert_eq!(again.map_err(|e| e.kind()), Err(io::ErrorKind::AlreadyExists));
        assert_eq!(fs::read(&path)?, b"first");
        assert!(!beside(&path, ".tmp").exists());
        Ok(())
    }

    #[test]
    fn a_set_appears_whole_and_refuses_a_directory_in_use() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let dir = root.path().join("a/b/tls");
        create_set(&dir, &[("ca.key", b"k", 0o600), ("ca.pem", b"c", 0o644)], 0o700)?;
        assert_eq!(fs::read(dir.join("ca.key"))?, b"k");
        assert_eq!(fs::read(dir.join("ca.pem"))?, b"c");
        assert!(!beside(&dir, ".new").exists());
        // An empty directory is replaced; one with something in it is not.
        let empty = root.path().join("empty");
        fs::create_dir(&empty)?;
        create_set(&empty, &[("x", b"x", 0o600)], 0o700)?;
        assert!(empty.join("x").exists());
        assert!(create_set(&dir, &[("ca.key", b"other", 0o600)], 0o700).is_err());
        assert_eq!(fs::read(dir.join("ca.key"))?, b"k");
        Ok(())
    }

    #[test]
    fn directories_are_made_with_their_mode_and_removal_is_quiet_when_done() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let dir = root.path().join("x/y/data");
        create_dir_all(&dir, 0o700)?;
        create_dir_all(&dir, 0o700)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&dir)?.permissions().mode() & 0o777, 0o700);
        }
        let file = dir.join("setup-code");
        write(&file, b"abc", 0o600)?;
        remove(&file)?;
        remove(&file)?;
        assert!(!file.exists());
        Ok(())
    }
}
