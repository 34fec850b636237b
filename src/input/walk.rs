//! Walking a directory: recursive, sorted, hidden entries skipped, symlink loops survived.

use std::path::{Path, PathBuf};

use walkdir::WalkDir;

/// One thing found under a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkEntry {
    /// A regular file (or a symlink to one).
    File(PathBuf),
    /// A symlink to one of its own ancestor directories. It is not descended into (that would
    /// never end) and is not a document: the caller warns and moves on.
    Loop(PathBuf),
    /// Something that could not be visited (unreadable folder, broken symlink, …).
    Failed { path: PathBuf, message: String },
}

/// Everything under `root`, depth first, each folder's entries sorted by file name, hidden
/// files and folders (names starting with `.`) skipped — except `root` itself. Symlinks are
/// followed; a symlink back to an ancestor is reported as [`WalkEntry::Loop`] once and not
/// followed. Errors do not end the walk.
pub fn walk_dir(root: &Path) -> impl Iterator<Item = WalkEntry> {
    WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !is_hidden(e.file_name()))
        .filter_map(|entry| match entry {
            Ok(e) if e.file_type().is_file() => Some(WalkEntry::File(e.into_path())),
            // Folders are descended into; sockets, fifos and devices are not documents.
            Ok(_) => None,
            Err(err) => {
                let path = err.path().map(Path::to_path_buf).unwrap_or_default();
                // `filter_entry` lets errors through: a hidden broken link stays hidden.
                if err.depth() > 0 && path.file_name().is_some_and(is_hidden) {
                    return None;
                }
                if err.loop_ancestor().is_some() {
                    return Some(WalkEntry::Loop(path));
                }
                let message = match err.io_error() {
                    Some(io) => format!("cannot read {}: {io}", path.display()),
                    None => err.to_string(),
                };
                Some(WalkEntry::Failed { path, message })
            }
        })
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().starts_with(b".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn names(root: &Path) -> Vec<String> {
        walk_dir(root)
            .map(|e| match e {
                WalkEntry::File(p) => format!("file {}", rel(root, &p)),
                WalkEntry::Loop(p) => format!("loop {}", rel(root, &p)),
                WalkEntry::Failed { path, .. } => format!("failed {}", rel(root, &path)),
            })
            .collect()
    }

    fn rel(root: &Path, p: &Path) -> String {
        p.strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn walks_sorted_and_skips_hidden() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir_all(root.join("b/c")).expect("mkdir");
        fs::create_dir_all(root.join(".git")).expect("mkdir");
        for f in [
            "z.txt",
            "a.txt",
            "b/c/d.txt",
            "b/a.md",
            ".env",
            ".git/config",
        ] {
            fs::write(root.join(f), "x").expect("write");
        }
        assert_eq!(
            names(root),
            ["file a.txt", "file b/a.md", "file b/c/d.txt", "file z.txt"]
        );
    }

    #[cfg(unix)]
    #[test]
    fn symlink_loops_are_reported_once_and_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir_all(root.join("sub")).expect("mkdir");
        fs::write(root.join("sub/doc.txt"), "x").expect("write");
        std::os::unix::fs::symlink("..", root.join("sub/up")).expect("symlink");
        std::os::unix::fs::symlink("nowhere.txt", root.join("broken.txt")).expect("symlink");
        assert_eq!(
            names(root),
            ["failed broken.txt", "file sub/doc.txt", "loop sub/up"]
        );
    }

    #[test]
    fn a_hidden_root_is_still_walked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join(".hidden");
        fs::create_dir_all(&root).expect("mkdir");
        fs::write(root.join("a.txt"), "x").expect("write");
        assert_eq!(names(&root), ["file a.txt"]);
    }
}
