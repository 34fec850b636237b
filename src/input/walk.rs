//! Walking a directory: recursive, sorted, hidden entries skipped, symlink loops survived.

use std::path::{Path, PathBuf};

use walkdir::WalkDir;

/// Files under `root` in sorted order, hidden files and folders skipped. Entries that cannot
/// be visited are returned as errors (path, message) rather than ending the walk.
pub fn walk_dir(root: &Path) -> impl Iterator<Item = Result<PathBuf, (PathBuf, String)>> {
    WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !is_hidden(e.file_name()))
        .filter_map(|entry| match entry {
            Ok(e) if e.file_type().is_file() => Some(Ok(e.into_path())),
            Ok(_) => None,
            Err(err) => {
                let path = err.path().map(Path::to_path_buf).unwrap_or_default();
                Some(Err((path, err.to_string())))
            }
        })
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_some_and(|n| n.starts_with('.'))
}
