//! The configuration documents kept next to the event log, in
//! `<data_dir>/config/`:
//!
//! - `current.json`: the last-known-good document (the one running, once
//!   it proved healthy), written atomically: a temp file, fsync, rename,
//!   fsync of the directory. A crash leaves the old file or the new one.
//! - `pending.json`: the document being applied, written before anything
//!   is stopped and removed when the apply ends either way. Found at start,
//!   it means the daemon died during an apply: the last-known-good runs and
//!   the pending version is reported as rolled back.
//! - `history/<version>-<hash>.json`: the last N applied documents, for the
//!   web page and manual rollback.

use std::io::Write;
use std::path::{Path, PathBuf};

use outpost_config::document::Document;

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    keep: usize,
}

impl Store {
    pub fn new(data_dir: &Path, keep: usize) -> Store {
        Store {
            dir: data_dir.join("config"),
            keep: keep.max(1),
        }
    }

    pub fn current_path(&self) -> PathBuf {
        self.dir.join("current.json")
    }

    fn pending_path(&self) -> PathBuf {
        self.dir.join("pending.json")
    }

    fn history_dir(&self) -> PathBuf {
        self.dir.join("history")
    }

    /// The last-known-good document, if one is kept and readable.
    pub fn current(&self) -> Option<Document> {
        read(&self.current_path())
    }

    /// A document whose apply did not finish (the daemon died during it).
    pub fn pending(&self) -> Option<Document> {
        read(&self.pending_path())
    }

    /// Marks `doc` as being applied.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn begin(&self, doc: &Document) -> std::io::Result<()> {
        write_atomic(&self.pending_path(), doc.to_json().as_bytes())
    }

    /// The apply is over (kept or rolled back).
    pub fn end(&self) {
        let _gone = std::fs::remove_file(self.pending_path());
    }

    /// `doc` is the new last-known-good; it joins the history, which keeps
    /// the newest `keep`.
    ///
    /// # Errors
    /// When the files cannot be written.
    pub fn commit(&self, doc: &Document) -> std::io::Result<()> {
        let json = doc.to_json();
        write_atomic(&self.current_path(), json.as_bytes())?;
        let hist = self.history_dir();
        std::fs::create_dir_all(&hist)?;
        let short = doc
            .hash
            .strip_prefix("sha256:")
            .unwrap_or(&doc.hash)
            .get(..12)
            .unwrap_or_default()
            .to_string();
        write_atomic(
            &hist.join(format!("{:012}-{short}.json", doc.version)),
            json.as_bytes(),
        )?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(&hist)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        while files.len() > self.keep {
            let old = files.remove(0);
            let _gone = std::fs::remove_file(old);
        }
        Ok(())
    }

    /// The kept documents, newest first.
    pub fn history(&self) -> Vec<Document> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.history_dir())
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files.iter().rev().filter_map(|p| read(p)).collect()
    }
}

fn read(path: &Path) -> Option<Document> {
    let bytes = std::fs::read(path).ok()?;
    match Document::from_json(&bytes) {
        Ok(d) if d.verify(None).is_ok() => Some(d),
        Ok(_) | Err(_) => {
            tracing::warn!(path = %path.display(), "A kept configuration document is unreadable or damaged; ignored.");
            None
        }
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new
/// one: a temp file in the same directory, fsync, rename, fsync the directory.
///
/// # Errors
/// When any step fails (the old file is then untouched).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn commit_keeps_the_newest_and_pending_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::new(dir.path(), 3);
        assert!(s.current().is_none());
        for v in 1..=5 {
            let d = Document::new(v, format!("# v{v}\n"));
            s.begin(&d).unwrap();
            assert_eq!(s.pending().unwrap().version, v);
            s.commit(&d).unwrap();
            s.end();
            assert!(s.pending().is_none());
        }
        assert_eq!(s.current().unwrap().version, 5);
        let h: Vec<u64> = s.history().iter().map(|d| d.version).collect();
        assert_eq!(h, [5, 4, 3]);
        // A damaged file is not taken for a document.
        std::fs::write(
            s.current_path(),
            b"{\"version\":9,\"hash\":\"sha256:00\",\"body\":\"\"}",
        )
        .unwrap();
        assert!(s.current().is_none());
    }
}
